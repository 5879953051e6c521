//! Reductions over axes: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
//! ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp; ArgMax and ArgMin.

use burn::tensor::{Tensor, TensorData};
use onnx_ir::Node;
use onnx_ir::node::cumsum::CumSumAxis;
use onnx_ir::node::reduce::{ReduceAxes, ReduceConfig};
use onnx_ir::node::topk::TopKInput;

use super::{Kernel, float, kernel, node, normalise_axes, one, take};
use crate::value::{Float, Ints, MAX_RANK, Value};

type Reduction = fn(Tensor<MAX_RANK>, usize) -> Tensor<MAX_RANK>;

pub fn mean(node: &Node) -> Result<Kernel, String> {
    reduce(
        node!(node, ReduceMean).config.clone(),
        |t, axis| t.mean_dim(axis),
        f32::NAN,
    )
}

pub fn sum(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceSum).config.clone(), |t, axis| t.sum_dim(axis), 0.0)
}

pub fn max(node: &Node) -> Result<Kernel, String> {
    reduce(
        node!(node, ReduceMax).config.clone(),
        |t, axis| t.max_dim(axis),
        f32::NEG_INFINITY,
    )
}

pub fn min(node: &Node) -> Result<Kernel, String> {
    reduce(
        node!(node, ReduceMin).config.clone(),
        |t, axis| t.min_dim(axis),
        f32::INFINITY,
    )
}

/// Reduces over the given axes (static, or an input that may hold negative axes); no axes
/// means every axis unless `noop_with_empty_axes`. Over an empty axis the result is `empty`
/// (the reduction's identity: 0 for a sum, −∞ for a maximum), as ONNX specifies.
fn reduce(config: ReduceConfig, f: Reduction, empty: f32) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let axes: Vec<i64> = match &config.axes {
            ReduceAxes::Static(axes) => axes
                .iter()
                .map(|&a| i64::try_from(a).map_err(|_| format!("axis {a} out of range")))
                .collect::<Result<_, _>>()?,
            ReduceAxes::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.values,
        };
        let x = float(&mut inputs, 0, device)?;
        if axes.is_empty() && config.noop_with_empty_axes {
            return one(x);
        }
        let mut axes = if axes.is_empty() {
            (0..x.rank).collect()
        } else {
            normalise_axes(&axes, x.rank)?
        };
        axes.sort_unstable();
        axes.dedup();
        let shape = x.shape();
        let reduced = if axes.iter().any(|&a| shape[a] == 0) {
            let kept: Vec<usize> = (0..shape.len())
                .map(|a| if axes.contains(&a) { 1 } else { shape[a] })
                .collect();
            let count = kept.iter().product::<usize>();
            Float::from_data(TensorData::new(vec![empty; count], kept), device)?
        } else {
            let mut tensor = x.tensor;
            for &axis in &axes {
                tensor = f(tensor, MAX_RANK - x.rank + axis);
            }
            Float { tensor, rank: x.rank }
        };
        if config.keepdims {
            return one(reduced);
        }
        let kept: Vec<usize> = (0..shape.len())
            .filter(|a| !axes.contains(a))
            .map(|a| shape[a])
            .collect();
        one(reduced.reshape(&kept)?)
    })
}

/// ReduceProd: the product over the axes.
pub fn prod(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceProd).config.clone(), |t, axis| t.prod_dim(axis), 1.0)
}

/// ReduceL1: Σ|x|.
pub fn l1(node: &Node) -> Result<Kernel, String> {
    reduce_mapped(node!(node, ReduceL1).config.clone(), |t| t.abs(), |t| t)
}

/// ReduceL2: √Σx².
pub fn l2(node: &Node) -> Result<Kernel, String> {
    reduce_mapped(node!(node, ReduceL2).config.clone(), |t| t.clone() * t, |t| t.sqrt())
}

/// ReduceSumSquare: Σx².
pub fn sum_square(node: &Node) -> Result<Kernel, String> {
    reduce_mapped(node!(node, ReduceSumSquare).config.clone(), |t| t.clone() * t, |t| t)
}

/// ReduceLogSum: ln Σx.
pub fn log_sum(node: &Node) -> Result<Kernel, String> {
    reduce_mapped(node!(node, ReduceLogSum).config.clone(), |t| t, |t| t.log())
}

/// ReduceLogSumExp: ln Σeˣ (through ln Σe^(x − c) + c with c the largest, which neither
/// overflows nor loses the small terms).
pub fn log_sum_exp(node: &Node) -> Result<Kernel, String> {
    reduce(
        node!(node, ReduceLogSumExp).config.clone(),
        |t, axis| {
            let largest = t.clone().max_dim(axis);
            let finite = largest.clone().mask_fill(largest.clone().is_inf(), 0.0);
            (t - finite.clone()).exp().sum_dim(axis).log() + finite
        },
        f32::NEG_INFINITY,
    )
}

/// A sum of `before(x)` over the axes, then `after`.
fn reduce_mapped(config: ReduceConfig, before: Map, after: Map) -> Result<Kernel, String> {
    let summed = reduce(config, |t, axis| t.sum_dim(axis), 0.0)?;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        inputs[0] = Some(Value::Float(Float {
            tensor: before(x.tensor),
            rank: x.rank,
        }));
        let mut outputs = summed(inputs, device)?;
        if let Some(Value::Float(f)) = outputs.first_mut() {
            f.tensor = after(f.tensor.clone());
        }
        Ok(outputs)
    })
}

type Map = fn(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>;

/// ArgMax: the index of the largest value along the axis (the first, or the last with
/// `select_last_index`), as integers on the device's side read back: indices are results.
pub fn arg_max(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, ArgMax).config.clone();
    arg_extreme(config.axis, config.keepdims, config.select_last_index, true)
}

/// ArgMin: as ArgMax, for the smallest value.
pub fn arg_min(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, ArgMin).config.clone();
    arg_extreme(config.axis, config.keepdims, config.select_last_index, false)
}

fn arg_extreme(axis: usize, keepdims: bool, last: bool, largest: bool) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if axis >= x.rank {
            return Err(format!("axis {axis} out of range for a rank-{} tensor", x.rank));
        }
        let shape = x.shape();
        let padded_axis = x.axis(axis);
        // The last extreme is the first one of the tensor flipped along the axis.
        let tensor = if last { x.tensor.flip([padded_axis]) } else { x.tensor };
        let index = if largest {
            tensor.argmax(padded_axis)
        } else {
            tensor.argmin(padded_axis)
        };
        let index = if last {
            index.neg() + (shape[axis] as i64 - 1)
        } else {
            index
        };
        let mut reduced = shape.clone();
        reduced[axis] = 1;
        if !keepdims {
            reduced.remove(axis);
        }
        // Indices are read back as host integers (they are what the graph computes, not
        // activations flowing on).
        let values = index
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| format!("{e:?}"))?;
        Ok(vec![Value::Ints(Ints { values, shape: reduced })])
    })
}

/// CumSum along an axis, inclusive or exclusive, forwards or in reverse.
pub fn cum_sum(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, CumSum).config.clone();
    kernel(move |mut inputs, device| {
        let axis = match &config.axis {
            CumSumAxis::Static(axis) => i64::try_from(*axis).map_err(|_| "axis out of range".to_owned())?,
            CumSumAxis::Runtime(r) => {
                let values = take(&mut inputs, r.input_index)?.into_ints()?.values;
                *values.first().ok_or("CumSum without an axis")?
            }
        };
        let x = float(&mut inputs, 0, device)?;
        let axis = x.axis(normalise_axes(&[axis], x.rank)?[0]);
        let tensor = if config.reverse {
            x.tensor.flip([axis])
        } else {
            x.tensor
        };
        let summed = tensor.clone().cumsum(axis);
        let summed = if config.exclusive { summed - tensor } else { summed };
        let summed = if config.reverse { summed.flip([axis]) } else { summed };
        one(Float {
            tensor: summed,
            rank: x.rank,
        })
    })
}

/// Hardmax: 1 at the first largest value along the axis, 0 elsewhere.
pub fn hardmax(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, Hardmax).config.axis;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if axis >= x.rank {
            return Err(format!("axis {axis} out of range for a rank-{} tensor", x.rank));
        }
        let padded_axis = x.axis(axis);
        let length = x.shape()[axis];
        let first = x.tensor.clone().argmax(padded_axis).float();
        let mut along = [1; MAX_RANK];
        along[padded_axis] = length;
        let positions = Tensor::<1, burn::tensor::Int>::arange(0..length as i64, device)
            .float()
            .reshape(along);
        let dims = x.tensor.dims();
        one(Float {
            tensor: positions.expand(dims).equal(first.expand(dims)).float(),
            rank: x.rank,
        })
    })
}

/// TopK: the `k` largest (or smallest) values along an axis and their indices, sorted, equal
/// values in index order (as ONNX asks). Computed on the host: detectors and classifiers' heads
/// take it over a few thousand scores at most.
pub fn top_k(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, TopK).config.clone();
    kernel(move |mut inputs, device| {
        let k = match &config.k {
            TopKInput::Static(k) => *k,
            TopKInput::Runtime(r) => {
                let k = take(&mut inputs, r.input_index)?.into_ints()?;
                match k.values.as_slice() {
                    [k] => usize::try_from(*k).map_err(|_| format!("TopK with k = {k}"))?,
                    other => return Err(format!("TopK with k = {other:?}")),
                }
            }
        };
        let x = take(&mut inputs, 0)?;
        let shape = x.shape();
        let axis = config.axis;
        let length = *shape
            .get(axis)
            .ok_or_else(|| format!("TopK axis {axis} of a rank-{} tensor", shape.len()))?;
        if k > length {
            return Err(format!("TopK of {k} values along an axis of {length}"));
        }
        let (values, integers): (Vec<f64>, bool) = match x {
            Value::Ints(ints) => (ints.values.iter().map(|&v| v as f64).collect(), true),
            Value::Float(f) => (
                f.tensor
                    .into_data()
                    .convert::<f64>()
                    .try_into_vec::<f64>()
                    .map_err(|e| format!("{e:?}"))?,
                false,
            ),
        };
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut out_shape = shape.clone();
        out_shape[axis] = k;
        let count = outer * k * inner;
        let (mut top, mut indices) = (vec![0.0; count], vec![0i64; count]);
        // NaN ranks above every number, as onnxruntime's.
        let order = |a: f64, b: f64| match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
        };
        let mut positions: Vec<usize> = Vec::with_capacity(length);
        for o in 0..outer {
            for i in 0..inner {
                let at = |p: usize| values[(o * length + p) * inner + i];
                positions.clear();
                positions.extend(0..length);
                positions.sort_by(|&a, &b| {
                    let by_value = order(at(a), at(b));
                    let by_value = if config.largest { by_value.reverse() } else { by_value };
                    by_value.then(a.cmp(&b))
                });
                for (rank, &p) in positions.iter().take(k).enumerate() {
                    let to = (o * k + rank) * inner + i;
                    top[to] = at(p);
                    indices[to] = p as i64;
                }
            }
        }
        let top = if integers {
            Value::Ints(Ints {
                values: top.iter().map(|&v| v as i64).collect(),
                shape: out_shape.clone(),
            })
        } else {
            let top: Vec<f32> = top.iter().map(|&v| v as f32).collect();
            Value::Float(Float::from_data(TensorData::new(top, out_shape.clone()), device)?)
        };
        Ok(vec![
            top,
            Value::Ints(Ints {
                values: indices,
                shape: out_shape,
            }),
        ])
    })
}
