//! Reductions over axes: ReduceMean, ReduceSum, ReduceMax, ReduceMin.

use burn::tensor::Tensor;
use onnx_ir::Node;
use onnx_ir::node::reduce::{ReduceAxes, ReduceConfig};

use super::{Kernel, float, kernel, node, normalise_axes, one, take};
use crate::value::{Float, MAX_RANK};

type Reduction = fn(Tensor<MAX_RANK>, usize) -> Tensor<MAX_RANK>;

pub fn mean(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceMean).config.clone(), |t, axis| t.mean_dim(axis))
}

pub fn sum(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceSum).config.clone(), |t, axis| t.sum_dim(axis))
}

pub fn max(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceMax).config.clone(), |t, axis| t.max_dim(axis))
}

pub fn min(node: &Node) -> Result<Kernel, String> {
    reduce(node!(node, ReduceMin).config.clone(), |t, axis| t.min_dim(axis))
}

/// Reduces over the given axes (static, or an input that may hold negative axes); no axes
/// means every axis unless `noop_with_empty_axes`.
fn reduce(config: ReduceConfig, f: Reduction) -> Result<Kernel, String> {
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
        let mut tensor = x.tensor;
        for &axis in &axes {
            tensor = f(tensor, MAX_RANK - x.rank + axis);
        }
        let reduced = Float { tensor, rank: x.rank };
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
