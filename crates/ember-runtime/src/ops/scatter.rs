//! ScatterND: `data` with the slices at integer index tuples replaced by (or combined with)
//! `updates` — Swin Transformer exports build their attention masks with it.

use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{Int, Tensor, TensorData};
use onnx_ir::Node;
use onnx_ir::node::scatter_nd::ScatterNDReduction;

use super::{Kernel, kernel, node, take, within_budget};
use crate::value::{Float, Ints, Value};

/// Where each index tuple's slice lies in `data` seen as `[rows, slice]`.
struct Scatter {
    /// The row of `data` (its first `k` axes flattened) each index tuple names.
    rows: Vec<usize>,
    /// Elements per slice: the product of `data`'s axes after the first `k`.
    slice: usize,
    /// Rows of `data`.
    row_count: usize,
}

impl Scatter {
    fn new(data: &[usize], indices: &Ints, updates: &[usize]) -> Result<Self, String> {
        let k = *indices
            .shape
            .last()
            .ok_or("ScatterND indices must have at least one axis")?;
        if k == 0 || k > data.len() {
            return Err(format!(
                "ScatterND index tuples of length {k} into data of rank {}",
                data.len()
            ));
        }
        let expected: Vec<usize> = indices.shape[..indices.shape.len() - 1]
            .iter()
            .chain(&data[k..])
            .copied()
            .collect();
        if updates != expected {
            return Err(format!(
                "ScatterND updates of shape {updates:?}, expected {expected:?} (indices {:?}, data {data:?})",
                indices.shape
            ));
        }
        let slice: usize = data[k..].iter().product();
        let row_count: usize = data[..k].iter().product();
        let rows = indices
            .values
            .chunks(k)
            .map(|tuple| {
                tuple.iter().zip(&data[..k]).try_fold(0usize, |row, (&index, &size)| {
                    // Negative indices count from the end.
                    let index = if index < 0 { index + size as i64 } else { index };
                    if index < 0 || index >= size as i64 {
                        return Err(format!("ScatterND index {tuple:?} is outside data of shape {data:?}"));
                    }
                    Ok(row * size + index as usize)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rows, slice, row_count })
    }
}

fn update_op(reduction: &ScatterNDReduction) -> IndexingUpdateOp {
    match reduction {
        ScatterNDReduction::None => IndexingUpdateOp::Assign,
        ScatterNDReduction::Add => IndexingUpdateOp::Add,
        ScatterNDReduction::Mul => IndexingUpdateOp::Mul,
        ScatterNDReduction::Max => IndexingUpdateOp::Max,
        ScatterNDReduction::Min => IndexingUpdateOp::Min,
    }
}

fn combine(reduction: &ScatterNDReduction, old: i64, new: i64) -> Result<i64, String> {
    match reduction {
        ScatterNDReduction::None => Some(new),
        ScatterNDReduction::Add => old.checked_add(new),
        ScatterNDReduction::Mul => old.checked_mul(new),
        ScatterNDReduction::Max => Some(old.max(new)),
        ScatterNDReduction::Min => Some(old.min(new)),
    }
    .ok_or_else(|| "ScatterND: integer overflow".to_owned())
}

pub fn scatter_nd(node: &Node) -> Result<Kernel, String> {
    let reduction = node!(node, ScatterND).config.reduction.clone();
    kernel(move |mut inputs, device| {
        let updates = take(&mut inputs, 2)?;
        let indices = take(&mut inputs, 1)?.into_ints()?;
        let data = take(&mut inputs, 0)?;
        let shape = data.shape();
        let scatter = Scatter::new(&shape, &indices, &updates.shape())?;
        within_budget(&shape)?;
        match data {
            Value::Ints(mut data) => {
                let updates = updates.into_ints()?;
                for (tuple, &row) in scatter.rows.iter().enumerate() {
                    let targets = &mut data.values[row * scatter.slice..(row + 1) * scatter.slice];
                    let sources = &updates.values[tuple * scatter.slice..(tuple + 1) * scatter.slice];
                    for (target, &source) in targets.iter_mut().zip(sources) {
                        *target = combine(&reduction, *target, source)?;
                    }
                }
                Ok(vec![Value::Ints(data)])
            }
            Value::Float(data) => {
                if scatter.rows.is_empty() {
                    return Ok(vec![Value::Float(data)]);
                }
                let updates = updates.into_float(device)?;
                let rows: Tensor<2> = data.tensor.reshape([scatter.row_count, scatter.slice]);
                let sources: Tensor<2> = updates.tensor.reshape([scatter.rows.len(), scatter.slice]);
                let positions: Vec<i64> = scatter.rows.iter().map(|&r| r as i64).collect();
                let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [scatter.rows.len()]), device);
                let scattered = rows.select_assign(0, positions, sources, update_op(&reduction));
                Ok(vec![Value::Float(Float::new(scattered).reshape(&shape)?)])
            }
        }
    })
}
