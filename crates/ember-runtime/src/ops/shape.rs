//! Reshaping, indexing and constants. Integer tensors (shapes, indices, axes) stay on the host,
//! as exporters' shape arithmetic (`Shape → Gather → Concat → Reshape`) expects.

use burn::tensor::ops::PadMode as BurnPadMode;
use burn::tensor::{Device, Int, Slice, Tensor, TensorData};
use onnx_ir::Node;
use onnx_ir::node::constant_of_shape::ConstantOfShapeShape;
use onnx_ir::node::expand::ExpandConfig;
use onnx_ir::node::pad::{AxesInput, ConstantValueInput, PadInput, PadMode};
use onnx_ir::node::range::RangeInput;
use onnx_ir::node::reshape::ReshapeInput;
use onnx_ir::node::slice::SliceInput;
use onnx_ir::node::split::SplitSizesInput;
use onnx_ir::node::squeeze::SqueezeInput;
use onnx_ir::node::tile::TileInput;
use onnx_ir::node::trilu::TriluDiagonal;
use onnx_ir::node::unsqueeze::UnsqueezeConfig;

use super::{
    Kernel, Outputs, broadcast_indices, check_axis, float, host_broadcast, kernel, node, normalise_axes, one, take,
    within_budget, within_budget_of,
};
use crate::value::{Float, Ints, MAX_RANK, Value, padded};

/// Flatten to `[∏ dims before axis, ∏ dims from axis]`.
pub fn flatten(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, Flatten).config.axis;
    if let Some(rank) = super::static_rank(node, 0)
        && axis > rank
    {
        return Err(format!("Flatten axis {axis} of a rank-{rank} input"));
    }
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        let shape = x.shape();
        if axis > shape.len() {
            return Err(format!("Flatten axis {axis} of a rank-{} tensor", shape.len()));
        }
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis..].iter().product();
        one(x.reshape(&[outer, inner])?)
    })
}

/// Reshape: `0` copies the input dimension, `-1` takes the rest.
pub fn reshape(node: &Node) -> Result<Kernel, String> {
    let target = node!(node, Reshape).config.shape.clone();
    kernel(move |mut inputs, _| {
        let target = match &target {
            ReshapeInput::Static(shape) => shape.clone(),
            ReshapeInput::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.values,
        };
        let x = take(&mut inputs, 0)?;
        let shape = reshape_target(&x.shape(), &target)?;
        reshape_value(x, &shape)
    })
}

/// Squeeze the listed axes (which must have size 1), or every axis of size 1.
pub fn squeeze(node: &Node) -> Result<Kernel, String> {
    let axes = node!(node, Squeeze).config.axes.clone();
    kernel(move |mut inputs, _| {
        let axes = match &axes {
            None => None,
            Some(SqueezeInput::Static(axes)) => Some(axes.clone()),
            Some(SqueezeInput::Runtime(r)) => Some(take(&mut inputs, r.input_index)?.into_ints()?.values),
        };
        let x = take(&mut inputs, 0)?;
        let shape = x.shape();
        let squeezed: Vec<usize> = match axes {
            None => shape.iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let axes = normalise_axes(&axes, shape.len())?;
                if let Some(&a) = axes.iter().find(|&&a| shape[a] != 1) {
                    return Err(format!("cannot squeeze axis {a} of size {} in {shape:?}", shape[a]));
                }
                (0..shape.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| shape[a])
                    .collect()
            }
        };
        reshape_value(x, &squeezed)
    })
}

/// Unsqueeze: insert axes of size 1 at the listed positions of the output.
pub fn unsqueeze(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Unsqueeze).config.clone();
    kernel(move |mut inputs, _| {
        let axes = match &config {
            UnsqueezeConfig::Static(axes) => axes.clone(),
            UnsqueezeConfig::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.values,
        };
        let x = take(&mut inputs, 0)?;
        let shape = x.shape();
        let rank = shape.len() + axes.len();
        let mut axes = normalise_axes(&axes, rank)?;
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("Unsqueeze axes {axes:?} repeat"));
        }
        let mut rest = shape.iter();
        let unsqueezed: Vec<usize> = (0..rank)
            .map(|a| {
                if axes.contains(&a) {
                    1
                } else {
                    *rest.next().unwrap_or(&1)
                }
            })
            .collect();
        reshape_value(x, &unsqueezed)
    })
}

/// Transpose by `perm` (reversed axes when empty).
pub fn transpose(node: &Node) -> Result<Kernel, String> {
    let perm = node!(node, Transpose).config.perm.clone();
    if let Some(rank) = super::static_rank(node, 0) {
        permutation(&perm, rank)?;
    }
    kernel(move |mut inputs, _| {
        let x = match take(&mut inputs, 0)? {
            Value::Ints(ints) => return Ok(vec![Value::Ints(transpose_ints(&ints, &perm)?)]),
            Value::Float(x) => x,
        };
        let perm = permutation(&perm, x.rank)?;
        let offset = MAX_RANK - x.rank;
        let mut axes: [usize; MAX_RANK] = std::array::from_fn(|i| i);
        for (i, p) in perm.iter().enumerate() {
            axes[offset + i] = offset + p;
        }
        one(Float {
            tensor: x.tensor.permute(axes),
            rank: x.rank,
        })
    })
}

/// Concat along `axis`: host integers (shape vectors) or float tensors.
pub fn concat(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, Concat).config.axis;
    check_axis(node, axis, "Concat")?;
    kernel(move |inputs, device| {
        let values: Vec<Value> = inputs.into_iter().flatten().collect();
        if values.iter().all(|v| matches!(v, Value::Ints(_))) {
            let ints: Vec<Ints> = values.into_iter().map(Value::into_ints).collect::<Result<_, _>>()?;
            return Ok(vec![Value::Ints(concat_ints(&ints, axis)?)]);
        }
        let floats: Vec<Float> = values
            .into_iter()
            .map(|v| v.into_float(device))
            .collect::<Result<_, _>>()?;
        let first = floats.first().ok_or("Concat without inputs")?.shape();
        if axis >= first.len() {
            return Err(format!(
                "Concat axis {axis} out of range for rank-{} tensors",
                first.len()
            ));
        }
        for f in &floats {
            let s = f.shape();
            let fits = s.len() == first.len() && (0..s.len()).all(|a| a == axis || s[a] == first[a]);
            if !fits {
                return Err(format!("cannot concatenate {first:?} and {s:?} along axis {axis}"));
            }
        }
        let rank = first.len();
        let tensors = floats.into_iter().map(|f| f.tensor).collect();
        one(Float {
            tensor: Tensor::cat(tensors, MAX_RANK - rank + axis),
            rank,
        })
    })
}

/// Host integers joined along `axis`: vectors (and scalars, as one value), or tensors of one
/// rank that agree on every other axis.
fn concat_ints(parts: &[Ints], axis: usize) -> Result<Ints, String> {
    if parts.iter().all(|p| p.shape.len() <= 1) {
        return Ok(Ints::vector(
            parts.iter().flat_map(|p| p.values.iter().copied()).collect(),
        ));
    }
    let first = &parts[0].shape;
    if axis >= first.len() {
        return Err(format!(
            "Concat axis {axis} out of range for integers of shape {first:?}"
        ));
    }
    for part in parts {
        let s = &part.shape;
        if s.len() != first.len() || (0..s.len()).any(|a| a != axis && s[a] != first[a]) {
            return Err(format!(
                "cannot concatenate integers of shape {first:?} and {s:?} along axis {axis}"
            ));
        }
    }
    let outer: usize = first[..axis].iter().product();
    let inner: usize = first[axis + 1..].iter().product();
    let mut values = Vec::with_capacity(parts.iter().map(|p| p.values.len()).sum());
    for o in 0..outer {
        for part in parts {
            let run = part.shape[axis] * inner;
            values.extend_from_slice(&part.values[o * run..(o + 1) * run]);
        }
    }
    let mut shape = first.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    Ok(Ints { values, shape })
}

/// Split along an axis into the sizes given, or into equal parts (the last one smaller).
pub fn split(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Split).config.clone();
    check_axis(node, config.axis, "Split")?;
    let parts = node.outputs().len();
    kernel(move |mut inputs, device| {
        let sizes_input = match &config.split_sizes {
            Some(SplitSizesInput::Static(s)) => Some(s.clone()),
            Some(SplitSizesInput::Runtime(r)) => Some(take(&mut inputs, r.input_index)?.into_ints()?.sizes()?),
            None => None,
        };
        let x = float(&mut inputs, 0, device)?;
        let length = *x.shape().get(config.axis).ok_or("split axis out of range")?;
        let sizes = match (sizes_input, config.split_size) {
            (Some(sizes), _) if !sizes.is_empty() => sizes,
            (_, Some(size)) if size > 0 => {
                let mut sizes = vec![size; length / size];
                if length % size != 0 {
                    sizes.push(length % size);
                }
                sizes
            }
            _ => {
                let parts = config.num_outputs.unwrap_or(parts).max(1);
                let size = length.div_ceil(parts);
                (0..parts).map(|i| size.min(length.saturating_sub(i * size))).collect()
            }
        };
        if sizes.iter().sum::<usize>() != length {
            return Err(format!("split sizes {sizes:?} do not add up to {length}"));
        }
        let axis = x.axis(config.axis);
        let mut start = 0;
        let mut outputs = Vec::with_capacity(sizes.len());
        for size in sizes {
            // Burn narrows to one element at least; an empty part is made empty.
            let tensor = if size == 0 {
                let mut dims = x.tensor.dims();
                dims[axis] = 0;
                Tensor::from_data(TensorData::new(Vec::<f32>::new(), dims), device)
            } else {
                x.tensor.clone().narrow(axis, start, size)
            };
            outputs.push(Value::Float(Float { tensor, rank: x.rank }));
            start += size;
        }
        Ok(outputs)
    })
}

/// Slice with starts, ends, axes and steps (static or inputs); negative steps on host integers.
pub fn slice(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Slice).config.clone();
    kernel(move |mut inputs, device| {
        let mut resolve = |input: &SliceInput| -> Result<Vec<i64>, String> {
            match input {
                SliceInput::Static(v) => Ok(v.clone()),
                SliceInput::Runtime(r) => Ok(take(&mut inputs, r.input_index)?.into_ints()?.values),
            }
        };
        let starts = resolve(&config.starts)?;
        let ends = resolve(&config.ends)?;
        let axes = config.axes.as_ref().map(&mut resolve).transpose()?;
        let steps = config.steps.as_ref().map(&mut resolve).transpose()?;
        let x = take(&mut inputs, 0)?;
        let shape = x.shape();
        let axes = match axes {
            Some(axes) => normalise_axes(&axes, shape.len())?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
            return Err("Slice starts, ends, axes and steps differ in length".into());
        }
        if axes.iter().any(|&a| a >= shape.len()) {
            return Err(format!("Slice axes {axes:?} for a rank-{} tensor", shape.len()));
        }
        if let Value::Ints(ints) = &x {
            return Ok(vec![Value::Ints(slice_ints(ints, &starts, &ends, &axes, &steps)?)]);
        }
        let mut ranges: Vec<(usize, usize, usize)> = shape.iter().map(|&d| (0, d, 1)).collect();
        // Axes walked backwards: the positions kept, gathered after the forward slices.
        let mut reversed: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, &axis) in axes.iter().enumerate() {
            if steps[i] < 0 {
                reversed.push((axis, kept_positions(shape[axis], starts[i], ends[i], steps[i])?));
                continue;
            }
            if steps[i] == 0 {
                return Err("Slice step 0".into());
            }
            let dim = shape[axis] as i64;
            let clamp = |v: i64| (if v < 0 { v.saturating_add(dim) } else { v }).clamp(0, dim) as usize;
            let (start, end) = (clamp(starts[i]), clamp(ends[i]));
            ranges[axis] = (start, end.max(start), steps[i] as usize);
        }
        let sliced = slice_value(x, &ranges)?;
        if reversed.is_empty() {
            return Ok(sliced);
        }
        let Some(Value::Float(mut x)) = sliced.into_iter().next() else {
            return Err("internal: a float Slice gave no float".into());
        };
        for (axis, positions) in reversed {
            let axis = x.axis(axis);
            x.tensor = if positions.is_empty() {
                let mut dims = x.tensor.dims();
                dims[axis] = 0;
                Tensor::from_data(TensorData::new(Vec::<f32>::new(), dims), device)
            } else {
                let count = positions.len();
                let positions: Vec<i64> = positions.into_iter().map(|p| p as i64).collect();
                let indices = Tensor::<1, Int>::from_data(TensorData::new(positions, [count]), device);
                x.tensor.select(axis, indices)
            };
        }
        one(x)
    })
}

/// The positions an ONNX Slice keeps along an axis of `dim` elements, in order (negative
/// steps walk backwards from `start`, which is clamped to the last element).
fn kept_positions(dim: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>, String> {
    let dim = dim as i64;
    let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    if step == 0 {
        return Err("Slice step 0".into());
    }
    Ok(if step > 0 {
        let (start, end) = (wrap(start).clamp(0, dim), wrap(end).clamp(0, dim));
        (start..end).step_by(step as usize).map(|p| p as usize).collect()
    } else {
        let (start, end) = (wrap(start).clamp(-1, dim - 1), wrap(end).clamp(-1, dim - 1));
        let mut positions = Vec::new();
        let mut p = start;
        while p > end {
            positions.push(p as usize);
            p = p.saturating_add(step);
        }
        positions
    })
}

/// Pad with a constant (static), reflection or edge values; pads static or an input.
pub fn pad(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Pad).config.clone();
    let value = match &config.constant_value {
        ConstantValueInput::Static(v) => *v,
        ConstantValueInput::Runtime(_) => return Err("a padding value computed at run time is not supported".into()),
    };
    let mode = match config.mode {
        PadMode::Constant => BurnPadMode::Constant(value),
        PadMode::Reflect => BurnPadMode::Reflect,
        PadMode::Edge => BurnPadMode::Edge,
    };
    kernel(move |mut inputs, device| {
        let pads = match &config.pads {
            PadInput::Static(pads) => pads.clone(),
            PadInput::Runtime { input, axes } => {
                // ONNX order: all begins, then all ends, for `axes` (every axis by default).
                let values = take(&mut inputs, input.input_index)?.into_ints()?.values;
                let rank = inputs.first().and_then(|x| x.as_ref()).map_or(0, |x| x.shape().len());
                let axes: Vec<usize> = match axes {
                    None => (0..values.len() / 2).collect(),
                    Some(AxesInput::Static(axes)) => axes.clone(),
                    Some(AxesInput::Runtime(r)) => {
                        normalise_axes(&take(&mut inputs, r.input_index)?.into_ints()?.values, rank)?
                    }
                };
                if values.len() != 2 * axes.len() || axes.iter().any(|&a| a >= rank) {
                    return Err(format!("pads {values:?} do not fit a rank-{rank} tensor"));
                }
                let mut pads = vec![(0usize, 0usize); rank];
                for (i, &axis) in axes.iter().enumerate() {
                    let (begin, end) = (values[i], values[i + axes.len()]);
                    let (Ok(begin), Ok(end)) = (usize::try_from(begin), usize::try_from(end)) else {
                        return Err("negative padding (cropping) is not supported".into());
                    };
                    pads[axis] = (begin, end);
                }
                pads
            }
        };
        let x = float(&mut inputs, 0, device)?;
        if pads.len() > x.rank {
            return Err(format!("{} padding pairs for a rank-{} tensor", pads.len(), x.rank));
        }
        let shape = x.shape();
        let offset = x.rank - pads.len();
        let padded: Option<Vec<usize>> = shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match axis.checked_sub(offset).map(|i| pads[i]) {
                Some((begin, end)) => d.checked_add(begin)?.checked_add(end),
                None => Some(d),
            })
            .collect();
        within_budget(&padded.ok_or_else(|| format!("padding {shape:?} by {pads:?} overflows"))?)?;
        one(Float {
            tensor: x.tensor.pad(pads, mode),
            rank: x.rank,
        })
    })
}

/// Shape (of dimensions `start..end`), as host integers.
pub fn shape(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Shape).config.clone();
    kernel(move |mut inputs, _| {
        let shape = take(&mut inputs, 0)?.shape();
        let end = config.end.min(shape.len());
        let start = config.start.min(end);
        let dims = shape[start..end].iter().map(|&d| d as i64).collect();
        Ok(vec![Value::Ints(Ints::vector(dims))])
    })
}

/// Gather along an axis (negative indices count from the end).
pub fn gather(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, Gather).config.axis;
    check_axis(node, axis, "Gather")?;
    kernel(move |mut inputs, device| {
        let indices = take(&mut inputs, 1)?.into_ints()?;
        let data = take(&mut inputs, 0)?;
        gather_values(data, &indices, axis, device)
    })
}

/// GatherElements: `out[…, i, …] = data[…, indices[…, i, …], …]` along `axis`; the output has
/// the indices' shape (of the data's rank, each size at most the data's off the axis).
pub fn gather_elements(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, GatherElements).config.axis;
    // Constant indices keep their shape here (onnx-ir's configuration flattens them).
    let fixed = match node.inputs().get(1).and_then(|a| a.value()) {
        Some(data) => Some(Ints::from_data(data)?),
        None => None,
    };
    kernel(move |mut inputs, device| {
        let indices = match &fixed {
            Some(indices) => indices.clone(),
            None => take(&mut inputs, 1)?.into_ints()?,
        };
        let data = take(&mut inputs, 0)?;
        let shape = data.shape();
        let rank = shape.len();
        if indices.shape.len() != rank || axis >= rank {
            return Err(format!(
                "indices of shape {:?} for data of shape {shape:?} along axis {axis}",
                indices.shape
            ));
        }
        if let Some(d) = (0..rank).find(|&d| d != axis && indices.shape[d] > shape[d]) {
            return Err(format!(
                "indices of shape {:?} exceed the data's {shape:?} on axis {d}",
                indices.shape
            ));
        }
        let index = in_range(&indices.values, shape[axis], "GatherElements")?;
        within_budget(&indices.shape)?;
        Ok(vec![match data {
            Value::Ints(ints) => {
                if indices.values.len() > 1 << 20 {
                    return Err(format!(
                        "an integer tensor of shape {:?} is too large for the host",
                        indices.shape
                    ));
                }
                let strides: Vec<usize> = (0..rank).map(|d| shape[d + 1..].iter().product()).collect();
                let values = self::indices(&indices.shape)
                    .zip(&index)
                    .map(|(position, &k)| {
                        let source: usize = (0..rank)
                            .map(|d| if d == axis { k as usize } else { position[d] } * strides[d])
                            .sum();
                        ints.values[source]
                    })
                    .collect();
                Value::Ints(Ints {
                    values,
                    shape: indices.shape.clone(),
                })
            }
            Value::Float(f) if indices.values.is_empty() => Value::Float(Float {
                tensor: Tensor::zeros(padded(&indices.shape)?, device),
                rank: f.rank,
            }),
            Value::Float(f) => {
                // Burn's gather takes indices of the data's shape off the axis.
                let mut tensor = f.tensor.clone();
                for d in (0..rank).filter(|&d| d != axis && indices.shape[d] < shape[d]) {
                    tensor = tensor.narrow(f.axis(d), 0, indices.shape[d]);
                }
                let selector =
                    Tensor::<MAX_RANK, Int>::from_data(TensorData::new(index, padded(&indices.shape)?), device);
                Value::Float(Float {
                    tensor: tensor.gather(f.axis(axis), selector),
                    rank: f.rank,
                })
            }
        }])
    })
}

/// Size: the number of elements, a scalar.
pub fn size(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, _| {
        let count: usize = take(&mut inputs, 0)?.shape().iter().product();
        let count = i64::try_from(count).map_err(|_| "Size overflows".to_owned())?;
        Ok(vec![Value::Ints(Ints {
            values: vec![count],
            shape: Vec::new(),
        })])
    })
}

/// Cast: to floats (uploaded) or integers (float tensors are not read back mid-graph).
pub fn cast(node: &Node) -> Result<Kernel, String> {
    cast_to(node!(node, Cast).config.to.is_float())
}

/// CastLike: Cast to the type of the second input.
pub fn cast_like(node: &Node) -> Result<Kernel, String> {
    cast_to(node!(node, CastLike).config.to.is_float())
}

fn cast_to(to_float: bool) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let x = take(&mut inputs, 0)?;
        Ok(vec![if to_float {
            Value::Float(x.into_float(device)?)
        } else {
            Value::Ints(x.into_ints()?)
        }])
    })
}

/// Constant: its value (the planner also hands constants to their consumers directly).
pub fn constant(node: &Node) -> Result<Kernel, String> {
    let data = node
        .inputs()
        .iter()
        .chain(node.outputs())
        .find_map(|arg| arg.value())
        .ok_or("a Constant without a value")?;
    kernel(move |_, device| Ok(vec![Value::from_data(data.clone(), device)?]))
}

/// ConstantOfShape: a tensor of the given shape filled with one value (0.0 by default).
pub fn constant_of_shape(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, ConstantOfShape).config.clone();
    let value = config
        .value
        .clone()
        .unwrap_or_else(|| TensorData::new(vec![0.0f32], [1]));
    let fill = if value.dtype().is_float() {
        let v = value
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?
            .first()
            .copied()
            .unwrap_or(0.0);
        Fill::Float(v)
    } else {
        Fill::Int(Ints::from_data(value)?.values.first().copied().unwrap_or(0))
    };
    kernel(move |mut inputs, device| {
        let shape = match &config.shape {
            ConstantOfShapeShape::Static(shape) => shape.clone(),
            ConstantOfShapeShape::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.values,
        };
        let shape = Ints::vector(shape).sizes()?;
        let element_bytes = if matches!(fill, Fill::Float(_)) { 4 } else { 8 };
        let bytes = within_budget_of(&shape, element_bytes)?;
        let count = (bytes / element_bytes) as usize;
        Ok(vec![match fill {
            Fill::Float(v) => Value::from_data(TensorData::new(vec![v; count], shape), device)?,
            Fill::Int(v) => Value::Ints(Ints {
                values: vec![v; count],
                shape,
            }),
        }])
    })
}

#[derive(Debug, Clone, Copy)]
enum Fill {
    Float(f32),
    Int(i64),
}

/// Identity and Dropout (inference: the input unchanged).
pub fn identity(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, _| Ok(vec![take(&mut inputs, 0)?]))
}

/// Dropout in inference (`training_mode` false, the default): the input unchanged, and the
/// optional mask all true. Training mode drops at random and is refused.
pub fn dropout(node: &Node) -> Result<Kernel, String> {
    let with_mask = node.outputs().len() > 1;
    let training = |value: Option<Value>| -> Result<bool, String> {
        match value {
            Some(Value::Ints(flag)) => Ok(flag.values.first().is_some_and(|&v| v != 0)),
            Some(Value::Float(_)) => Err("a float training_mode".into()),
            None => Ok(false),
        }
    };
    if let Some(flag) = node.inputs().get(2).and_then(|arg| arg.value())
        && training(Some(Value::Ints(Ints::from_data(flag)?)))?
    {
        return Err("Dropout in training mode (random) is not supported".into());
    }
    kernel(move |mut inputs, _| {
        if training(inputs.get_mut(2).and_then(Option::take))? {
            return Err("Dropout in training mode (random) is not supported".into());
        }
        let x = take(&mut inputs, 0)?;
        if !with_mask {
            return Ok(vec![x]);
        }
        let shape = x.shape();
        within_budget_of(&shape, 8)?;
        let mask = Ints {
            values: vec![1; shape.iter().product()],
            shape,
        };
        Ok(vec![x, Value::Ints(mask)])
    })
}

/// Resolves ONNX reshape targets: `0` copies the input dimension, `-1` takes the rest.
pub(super) fn reshape_target(input: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => shape.push(*input.get(i).ok_or("reshape copies a dimension the input lacks")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            d if d > 0 => shape.push(usize::try_from(d).map_err(|_| format!("invalid reshape target {target:?}"))?),
            _ => return Err(format!("invalid reshape target {target:?}")),
        }
    }
    let known = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("reshape target {target:?} overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        shape[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {input:?} ({total} elements) to {target:?}"));
    }
    Ok(shape)
}

fn reshape_value(x: Value, shape: &[usize]) -> Outputs {
    Ok(vec![match x {
        Value::Float(f) => Value::Float(f.reshape(shape)?),
        Value::Ints(i) => {
            if i.values.len() != shape.iter().product::<usize>() {
                return Err(format!("cannot reshape integers {:?} to {shape:?}", i.shape));
            }
            Value::Ints(Ints {
                values: i.values,
                shape: shape.to_vec(),
            })
        }
    }])
}

/// A full permutation of `rank` axes (reversed axes when `perm` is empty).
fn permutation(perm: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let perm = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        normalise_axes(perm, rank)?
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("{perm:?} is not a permutation of a rank-{rank} tensor's axes"));
    }
    Ok(perm)
}

fn slice_value(x: Value, ranges: &[(usize, usize, usize)]) -> Outputs {
    let Value::Float(f) = x else {
        return Err("integer slices are taken on the host".into());
    };
    let offset = MAX_RANK - f.rank;
    let slices: [Slice; MAX_RANK] = std::array::from_fn(|i| {
        if i < offset {
            Slice::new(0, None, 1)
        } else {
            let (start, end, step) = ranges[i - offset];
            Slice::new(start as isize, Some(end as isize), step as isize)
        }
    });
    one(Float {
        tensor: f.tensor.slice(slices),
        rank: f.rank,
    })
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    strides
}

/// Every multi-index of `shape` in row-major order.
fn indices(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let count: usize = shape.iter().product();
    (0..count).map(move |mut flat| {
        let mut index = vec![0; shape.len()];
        for a in (0..shape.len()).rev() {
            index[a] = flat % shape[a];
            flat /= shape[a];
        }
        index
    })
}

pub(super) fn transpose_ints(ints: &Ints, perm: &[i64]) -> Result<Ints, String> {
    let rank = ints.shape.len();
    let perm = permutation(perm, rank)?;
    let shape: Vec<usize> = perm.iter().map(|&p| ints.shape[p]).collect();
    let from = strides(&ints.shape);
    let values = indices(&shape)
        .map(|index| {
            let flat: usize = index.iter().zip(&perm).map(|(&i, &p)| i * from[p]).sum();
            ints.values[flat]
        })
        .collect();
    Ok(Ints { values, shape })
}

/// ONNX Slice on host integers, negative steps included (exporters reverse pads with them).
pub(super) fn slice_ints(
    ints: &Ints,
    starts: &[i64],
    ends: &[i64],
    axes: &[usize],
    steps: &[i64],
) -> Result<Ints, String> {
    let rank = ints.shape.len();
    // Per axis: the source positions kept, in order.
    let mut kept: Vec<Vec<usize>> = ints.shape.iter().map(|&d| (0..d).collect()).collect();
    for (i, &axis) in axes.iter().enumerate() {
        kept[axis] = kept_positions(ints.shape[axis], starts[i], ends[i], steps[i])?;
    }
    let shape: Vec<usize> = kept.iter().map(Vec::len).collect();
    let from = strides(&ints.shape);
    let values = indices(&shape)
        .map(|index| (0..rank).map(|a| kept[a][index[a]] * from[a]).sum::<usize>())
        .map(|flat| ints.values[flat])
        .collect();
    Ok(Ints { values, shape })
}

/// Indices into an axis of `length` elements, negative ones counted from the end, each checked.
fn in_range(indices: &[i64], length: usize, what: &str) -> Result<Vec<i64>, String> {
    let length = i64::try_from(length).map_err(|_| format!("{what}: axis too long"))?;
    indices
        .iter()
        .map(|&i| {
            let index = if i < 0 { i.saturating_add(length) } else { i };
            if (0..length).contains(&index) {
                Ok(index)
            } else {
                Err(format!("{what} index {i} out of range 0..{length}"))
            }
        })
        .collect()
}

fn gather_values(data: Value, indices: &Ints, axis: usize, device: &Device) -> Outputs {
    let shape = data.shape();
    let length = *shape.get(axis).ok_or("gather axis out of range")?;
    let index = in_range(&indices.values, length, "gather")?;
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend(&indices.shape);
    out_shape.extend(&shape[axis + 1..]);
    within_budget(&out_shape)?;
    Ok(vec![match data {
        Value::Ints(i) => {
            if i.shape.len() != 1 {
                return Err("gathering from integer matrices is not supported".into());
            }
            Value::Ints(Ints {
                values: index.iter().map(|&k| i.values[k as usize]).collect(),
                shape: out_shape,
            })
        }
        Value::Float(f) => {
            let selector = Tensor::<1, Int>::from_data(TensorData::new(index, [indices.values.len()]), device);
            let axis = f.axis(axis);
            let rank = f.rank;
            let selected = Float {
                tensor: f.tensor.select(axis, selector),
                rank,
            };
            Value::Float(selected.reshape(&out_shape)?)
        }
    }])
}

/// Expand: broadcast to a shape (NumPy rules in both directions: the output takes the larger
/// of each pair of sizes).
pub fn expand(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Expand).config.clone();
    kernel(move |mut inputs, _| {
        let target = match &config {
            ExpandConfig::Static(shape) => shape.clone(),
            ExpandConfig::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.values,
        };
        let target: Vec<usize> = target
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("Expand to a negative size in {target:?}")))
            .collect::<Result<_, _>>()?;
        let x = take(&mut inputs, 0)?;
        let shape = host_broadcast(&[&x.shape(), &target])?;
        match x {
            Value::Ints(ints) => {
                let from = broadcast_indices(&ints.shape, &shape);
                Ok(vec![Value::Ints(Ints {
                    values: from.iter().map(|&i| ints.values[i]).collect(),
                    shape,
                })])
            }
            Value::Float(x) => {
                let padded_shape = padded(&shape)?;
                within_budget(&padded_shape)?;
                Ok(vec![Value::Float(Float {
                    tensor: x.tensor.expand(padded_shape),
                    rank: shape.len(),
                })])
            }
        }
    })
}

/// Tile: repeat the tensor along every axis.
pub fn tile(node: &Node) -> Result<Kernel, String> {
    let repeats = node!(node, Tile).config.repeats.clone();
    kernel(move |mut inputs, _| {
        let repeats: Vec<usize> = match &repeats {
            TileInput::Static(r) => r.clone(),
            TileInput::Runtime(r) => take(&mut inputs, r.input_index)?.into_ints()?.sizes()?,
        };
        let x = take(&mut inputs, 0)?;
        let shape = x.shape();
        if repeats.len() != shape.len() {
            return Err(format!("{} repeats for a rank-{} tensor", repeats.len(), shape.len()));
        }
        let out: Vec<usize> = shape
            .iter()
            .zip(&repeats)
            .map(|(&d, &r)| d.checked_mul(r).ok_or("Tile overflows"))
            .collect::<Result<_, _>>()?;
        match x {
            Value::Ints(ints) => {
                if out.iter().product::<usize>() > 1 << 20 {
                    return Err(format!("an integer tensor of shape {out:?} is too large for the host"));
                }
                let values = indices(&out)
                    .map(|index| {
                        let source: usize = index
                            .iter()
                            .zip(&shape)
                            .zip(strides(&shape))
                            .map(|((&i, &d), s)| (i % d) * s)
                            .sum();
                        ints.values[source]
                    })
                    .collect();
                Ok(vec![Value::Ints(Ints { values, shape: out })])
            }
            Value::Float(x) => {
                within_budget(&out)?;
                let padded_repeats = padded(&repeats)?;
                Ok(vec![Value::Float(Float {
                    tensor: x.tensor.repeat(&padded_repeats),
                    rank: x.rank,
                })])
            }
        }
    })
}

/// Range: `start, start + delta, …` up to `limit` (excluded): integers on the host, floats on
/// the device.
pub fn range(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Range).config.clone();
    let float_range = node.outputs().first().is_some_and(|o| match &o.ty {
        onnx_ir::ArgType::Tensor(t) => t.dtype.is_float(),
        _ => false,
    });
    kernel(move |mut inputs, device| {
        let mut scalar = |input: &RangeInput| -> Result<f64, String> {
            match input {
                RangeInput::Static(v) => Ok(*v as f64),
                RangeInput::StaticFloat(v) => Ok(*v),
                RangeInput::Runtime(r) => match take(&mut inputs, r.input_index)? {
                    Value::Ints(i) if i.values.len() == 1 => Ok(i.values[0] as f64),
                    // A scalar computed on the device: read back (one number).
                    Value::Float(f) if f.shape().iter().product::<usize>() == 1 => f
                        .tensor
                        .into_data()
                        .convert::<f64>()
                        .try_to_vec::<f64>()
                        .map_err(|e| format!("{e:?}"))
                        .map(|v| v[0]),
                    other => Err(format!("Range takes scalars, got shape {:?}", other.shape())),
                },
            }
        };
        let (start, limit, delta) = (scalar(&config.start)?, scalar(&config.limit)?, scalar(&config.delta)?);
        if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
            return Err(format!("Range({start}, {limit}, {delta}) has no finite length"));
        }
        let count = ((limit - start) / delta).ceil().max(0.0);
        if count > (1u64 << 24) as f64 {
            return Err(format!(
                "Range({start}, {limit}, {delta}) has {count} elements, too many"
            ));
        }
        let count = count as usize;
        if float_range {
            within_budget(&[count])?;
            let values: Vec<f32> = (0..count).map(|k| (start + k as f64 * delta) as f32).collect();
            Ok(vec![Value::Float(Float::from_data(
                TensorData::new(values, [count]),
                device,
            )?)])
        } else {
            let (start, delta) = (start as i64, delta as i64);
            Ok(vec![Value::Ints(Ints::vector(
                (0..count as i64).map(|k| start + k * delta).collect(),
            ))])
        }
    })
}

/// Trilu: the upper (or lower) triangle of the last two axes from diagonal `k` on, zeros
/// elsewhere.
pub fn trilu(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Trilu).config.clone();
    kernel(move |mut inputs, device| {
        let diagonal = match &config.diagonal {
            TriluDiagonal::Static(k) => *k,
            TriluDiagonal::Runtime(r) => match inputs.get_mut(r.input_index).and_then(Option::take) {
                Some(value) => *value.into_ints()?.values.first().ok_or("Trilu without k")?,
                None => 0,
            },
        };
        let x = float(&mut inputs, 0, device)?;
        if x.rank < 2 {
            return Err(format!("Trilu of a rank-{} tensor", x.rank));
        }
        // Burn's triangles index past an empty matrix; an empty one has no triangle to keep.
        if x.shape().contains(&0) {
            return one(x);
        }
        let tensor = if config.upper {
            x.tensor.triu(diagonal)
        } else {
            x.tensor.tril(diagonal)
        };
        one(Float { tensor, rank: x.rank })
    })
}
