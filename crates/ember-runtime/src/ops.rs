//! The operators: one ONNX node in, its outputs out.
//!
//! Semantics follow the ONNX operator specification; where Burn has a module function for an
//! operator (convolution, batch norm, pooling, linear) it is used, so run-time models compute
//! what burn-onnx's generated code computes.

use burn::tensor::activation;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode as BurnPadMode};
use burn::tensor::{Device, Int, Slice, Tensor, TensorData};
use onnx_ir::Node;
use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

use crate::value::{Float, Ints, MAX_RANK, Value};

/// A node's inputs at run time (`None` for an omitted optional input).
pub type Inputs = Vec<Option<Value>>;

/// Whether the executor implements `node` (checked for every node when a model loads).
pub fn supported(node: &Node) -> bool {
    use Node::*;
    matches!(
        node,
        Add(_)
            | Sub(_)
            | Mul(_)
            | Div(_)
            | Pow(_)
            | Neg(_)
            | Abs(_)
            | Sqrt(_)
            | Exp(_)
            | Log(_)
            | Erf(_)
            | Gelu(_)
            | Reciprocal(_)
            | Tanh(_)
            | Relu(_)
            | Sigmoid(_)
            | Softmax(_)
            | LogSoftmax(_)
            | LeakyRelu(_)
            | HardSigmoid(_)
            | HardSwish(_)
            | PRelu(_)
            | Clip(_)
            | Max(_)
            | Min(_)
            | Sum(_)
            | Mean(_)
            | Conv2d(_)
            | BatchNormalization(_)
            | LayerNormalization(_)
            | Lrn(_)
            | MaxPool2d(_)
            | AveragePool2d(_)
            | GlobalAveragePool(_)
            | GlobalMaxPool(_)
            | Linear(_)
            | Gemm(_)
            | MatMul(_)
            | ReduceMean(_)
            | ReduceSum(_)
            | ReduceMax(_)
            | ReduceMin(_)
            | Flatten(_)
            | Reshape(_)
            | Squeeze(_)
            | Unsqueeze(_)
            | Transpose(_)
            | Concat(_)
            | Split(_)
            | Slice(_)
            | Pad(_)
            | Shape(_)
            | Gather(_)
            | Cast(_)
            | Constant(_)
            | ConstantOfShape(_)
            | Identity(_)
            | Dropout(_)
    )
}

/// Runs one node. Taps (`Node::Custom`) are handled by the caller.
pub fn run(node: &Node, mut inputs: Inputs, device: &Device) -> Result<Vec<Value>, String> {
    let one = |v: Float| Ok(vec![Value::Float(v)]);
    match node {
        Node::Add(_) => broadcast(inputs, |a, b| a + b, |a, b| a.checked_add(b)),
        Node::Sub(_) => broadcast(inputs, |a, b| a - b, |a, b| a.checked_sub(b)),
        Node::Mul(_) => broadcast(inputs, |a, b| a * b, |a, b| a.checked_mul(b)),
        Node::Div(_) => broadcast(inputs, |a, b| a / b, |a, b| a.checked_div(b)),
        Node::Pow(_) => {
            let exponent = take(&mut inputs, 1)?.into_float(device)?;
            let base = float(&mut inputs, 0, device)?;
            one(binary_float(base, exponent, |a, b| a.powf(b))?)
        }
        Node::Max(_) => fold(inputs, device, |a, b| a.max_pair(b)),
        Node::Min(_) => fold(inputs, device, |a, b| a.min_pair(b)),
        Node::Sum(_) => fold(inputs, device, |a, b| a + b),
        Node::Mean(_) => {
            let count = inputs.len() as f32;
            let sum = fold(inputs, device, |a, b| a + b)?;
            map_first(sum, |t| t / count)
        }
        Node::Neg(_) => unary(inputs, device, |t| -t),
        Node::Abs(_) => unary(inputs, device, |t| t.abs()),
        Node::Sqrt(_) => unary(inputs, device, |t| t.sqrt()),
        Node::Exp(_) => unary(inputs, device, |t| t.exp()),
        Node::Log(_) => unary(inputs, device, |t| t.log()),
        Node::Erf(_) => unary(inputs, device, |t| t.erf()),
        Node::Reciprocal(_) => unary(inputs, device, |t| t.recip()),
        Node::Tanh(_) => unary(inputs, device, |t| t.tanh()),
        Node::Relu(_) => unary(inputs, device, activation::relu),
        Node::Gelu(n) => match n.config.approximate {
            onnx_ir::node::gelu::GeluApproximate::Exact => unary(inputs, device, activation::gelu),
            onnx_ir::node::gelu::GeluApproximate::Tanh => unary(inputs, device, activation::gelu_approximate),
        },
        Node::Sigmoid(_) => unary(inputs, device, activation::sigmoid),
        Node::LeakyRelu(n) => {
            let alpha = n.config.alpha;
            unary(inputs, device, move |t| activation::leaky_relu(t, alpha))
        }
        Node::HardSigmoid(n) => {
            let (alpha, beta) = (n.config.alpha, n.config.beta);
            unary(inputs, device, move |t| (t * alpha + beta).clamp(0.0, 1.0))
        }
        // HardSwish(x) = x · max(0, min(1, x/6 + 1/2)).
        Node::HardSwish(_) => unary(inputs, device, |t| t.clone() * (t / 6.0 + 0.5).clamp(0.0, 1.0)),
        Node::PRelu(_) => {
            let slope = float(&mut inputs, 1, device)?;
            let x = float(&mut inputs, 0, device)?;
            let negative = Float {
                tensor: x.tensor.clone().clamp_max(0.0),
                rank: x.rank,
            };
            let scaled = binary_float(negative, slope, |a, b| a * b)?;
            one(Float {
                tensor: x.tensor.clamp_min(0.0) + scaled.tensor,
                rank: scaled.rank.max(x.rank),
            })
        }
        Node::Clip(n) => {
            let bound =
                |bound: &Option<onnx_ir::node::clip::ClipInput>, inputs: &Inputs| -> Result<Option<f64>, String> {
                    match bound {
                        None => Ok(None),
                        Some(onnx_ir::node::clip::ClipInput::Static(v)) => Ok(Some(*v)),
                        Some(onnx_ir::node::clip::ClipInput::Runtime(r)) => match inputs.get(r.input_index) {
                            Some(Some(Value::Ints(i))) if i.values.len() == 1 => Ok(Some(i.values[0] as f64)),
                            Some(None) | None => Ok(None),
                            _ => Err("Clip bounds computed at run time are not supported".into()),
                        },
                    }
                };
            let (min, max) = (bound(&n.config.min, &inputs)?, bound(&n.config.max, &inputs)?);
            let x = float(&mut inputs, 0, device)?;
            let tensor = match (min, max) {
                (Some(lo), Some(hi)) => x.tensor.clamp(lo, hi),
                (Some(lo), None) => x.tensor.clamp_min(lo),
                (None, Some(hi)) => x.tensor.clamp_max(hi),
                (None, None) => x.tensor,
            };
            one(Float { tensor, rank: x.rank })
        }
        Node::Softmax(n) => along_axis(inputs, device, n.config.axis, activation::softmax),
        Node::LogSoftmax(n) => along_axis(inputs, device, n.config.axis, activation::log_softmax),
        Node::Conv2d(n) => {
            let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
            let weight = float(&mut inputs, 1, device)?.to_rank::<4>()?;
            let bias = optional_float(&mut inputs, 2, device)?
                .map(|b| b.to_rank::<1>())
                .transpose()?;
            let c = &n.config;
            let [_, channels, height, width] = x.dims();
            let [_, per_group, kh, kw] = weight.dims();
            if c.groups == 0 || per_group * c.groups != channels {
                return Err(format!(
                    "input has {channels} channels but the weights expect {per_group} × {} groups",
                    c.groups
                ));
            }
            let window = Window {
                auto_pad: &c.auto_pad,
                padding: &c.padding,
                kernel: [kh, kw],
                stride: c.stride,
                dilation: c.dilation,
            };
            let padding = window.padding([height, width])?;
            let options = ConvOptions::new_with_padding(c.stride, padding, c.dilation, c.groups);
            one(Float::new(conv2d(x, weight, bias, options)))
        }
        Node::BatchNormalization(n) => {
            let epsilon = match &n.config {
                onnx_ir::node::batch_norm::BatchNormConfig::Static(s) => s.epsilon,
                onnx_ir::node::batch_norm::BatchNormConfig::Runtime(r) => r.epsilon,
            };
            let x = float(&mut inputs, 0, device)?;
            let mut stats = Vec::with_capacity(4);
            for index in 1..5 {
                stats.push(float(&mut inputs, index, device)?.to_rank::<1>()?);
            }
            let channels = x.shape().get(1).copied().unwrap_or(0);
            if stats.iter().any(|s| s.dims() != [channels]) {
                return Err(format!("input {:?} does not match {channels} statistics", x.shape()));
            }
            let [gamma, beta, mean, var]: [Tensor<1>; 4] = stats.try_into().expect("four statistics");
            let out = match x.rank {
                2 => Float::new(batch_norm(x.to_rank::<2>()?, gamma, beta, mean, var, epsilon)),
                3 => Float::new(batch_norm(x.to_rank::<3>()?, gamma, beta, mean, var, epsilon)),
                4 => Float::new(batch_norm(x.to_rank::<4>()?, gamma, beta, mean, var, epsilon)),
                5 => Float::new(batch_norm(x.to_rank::<5>()?, gamma, beta, mean, var, epsilon)),
                rank => return Err(format!("batch norm of a rank-{rank} tensor")),
            };
            one(out)
        }
        // LayerNormalization (opset 17): normalise over the axes from `axis` on, then scale and
        // shift (both broadcast over those axes).
        Node::LayerNormalization(n) => {
            let x = float(&mut inputs, 0, device)?;
            let scale = float(&mut inputs, 1, device)?;
            let bias = optional_float(&mut inputs, 2, device)?;
            let first = normalise_axes(&[n.config.axis], x.rank)?[0];
            let axes: Vec<usize> = (first..x.rank).map(|a| x.axis(a)).collect();
            let mean = x.tensor.clone().mean_dims(&axes);
            let centred = x.tensor - mean;
            let variance = centred.clone().powf_scalar(2.0).mean_dims(&axes);
            let normalised = Float {
                tensor: centred / (variance + n.config.epsilon).sqrt(),
                rank: x.rank,
            };
            let scaled = binary_float(normalised, scale, |a, b| a * b)?;
            match bias {
                Some(bias) => one(binary_float(scaled, bias, |a, b| a + b)?),
                None => one(scaled),
            }
        }
        // LRN (AlexNet): x / (bias + alpha/size · Σ x²)^beta, the sum over `size` neighbouring
        // channels, floor((size−1)/2) before and ceil((size−1)/2) after each one.
        Node::Lrn(n) => {
            let c = &n.config;
            let size = usize::try_from(c.size)
                .ok()
                .filter(|&s| s > 0)
                .ok_or("LRN size must be positive")?;
            let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
            let channels = x.dims()[1];
            let (before, after) = ((size - 1) / 2, size / 2);
            let squares = x.clone().powf_scalar(2.0).pad(
                vec![(0, 0), (before, after), (0, 0), (0, 0)],
                BurnPadMode::Constant(0.0),
            );
            let window_sum = (0..size)
                .map(|offset| squares.clone().narrow(1, offset, channels))
                .reduce(|a, b| a + b)
                .expect("size > 0");
            let scale = (window_sum * (c.alpha / size as f32) + c.bias).powf_scalar(c.beta);
            one(Float::new(x / scale))
        }
        Node::MaxPool2d(n) => {
            let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
            let c = &n.config;
            let [_, _, height, width] = x.dims();
            let window = Window {
                auto_pad: &c.auto_pad,
                padding: &c.padding,
                kernel: c.kernel_size,
                stride: c.strides,
                dilation: c.dilation,
            };
            let padding = window.padding([height, width])?;
            let options = MaxPoolOptions::new(c.kernel_size)
                .with_stride(c.strides)
                .with_padding_pairs(padding)
                .with_dilation(c.dilation)
                .with_ceil_mode(c.ceil_mode);
            one(Float::new(max_pool2d(x, options)))
        }
        Node::AveragePool2d(n) => {
            let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
            let c = &n.config;
            if c.dilation != [1, 1] {
                return Err("dilated average pooling is not supported".into());
            }
            let [_, _, height, width] = x.dims();
            let window = Window {
                auto_pad: &c.auto_pad,
                padding: &c.padding,
                kernel: c.kernel_size,
                stride: c.strides,
                dilation: [1, 1],
            };
            let padding = window.padding([height, width])?;
            let options = AvgPoolOptions::new(c.kernel_size)
                .with_stride(c.strides)
                .with_padding_pairs(padding)
                .with_count_include_pad(c.count_include_pad)
                .with_ceil_mode(c.ceil_mode);
            one(Float::new(avg_pool2d(x, options)))
        }
        Node::GlobalAveragePool(_) => {
            let x = float(&mut inputs, 0, device)?;
            if x.rank == 4 {
                return one(Float::new(adaptive_avg_pool2d(x.to_rank::<4>()?, [1, 1])));
            }
            let axes: Vec<usize> = (2..x.rank).map(|a| x.axis(a)).collect();
            one(Float {
                tensor: x.tensor.mean_dims(&axes),
                rank: x.rank,
            })
        }
        Node::GlobalMaxPool(_) => {
            let x = float(&mut inputs, 0, device)?;
            let axes: Vec<usize> = (2..x.rank).map(|a| x.axis(a)).collect();
            let mut tensor = x.tensor;
            for axis in axes {
                tensor = tensor.max_dim(axis);
            }
            one(Float { tensor, rank: x.rank })
        }
        Node::Linear(n) => {
            let x = float(&mut inputs, 0, device)?;
            let weight = float(&mut inputs, 1, device)?.to_rank::<2>()?;
            let weight = if n.config.transpose_weight {
                weight.transpose()
            } else {
                weight
            };
            let bias = optional_float(&mut inputs, 2, device)?
                .map(|b| b.to_rank::<1>())
                .transpose()?;
            let [d_in, _] = weight.dims();
            if x.shape().last() != Some(&d_in) {
                return Err(format!("input {:?} does not fit weights of {d_in} inputs", x.shape()));
            }
            let out = match x.rank {
                2 => Float::new(burn::tensor::module::linear(x.to_rank::<2>()?, weight, bias)),
                3 => Float::new(burn::tensor::module::linear(x.to_rank::<3>()?, weight, bias)),
                4 => Float::new(burn::tensor::module::linear(x.to_rank::<4>()?, weight, bias)),
                rank => return Err(format!("linear layer on a rank-{rank} tensor")),
            };
            one(out)
        }
        Node::Gemm(n) => {
            let c = &n.config;
            let a = float(&mut inputs, 0, device)?.to_rank::<2>()?;
            let b = float(&mut inputs, 1, device)?.to_rank::<2>()?;
            let a = if c.trans_a != 0 { a.transpose() } else { a };
            let b = if c.trans_b != 0 { b.transpose() } else { b };
            let ([m, k], [k2, _]) = (a.dims(), b.dims());
            if k != k2 {
                return Err(format!("cannot multiply [{m}, {k}] by {:?}", b.dims()));
            }
            let mut y = Float::new(a.matmul(b) * c.alpha);
            if let Some(bias) = optional_float(&mut inputs, 2, device)? {
                let scaled = Float {
                    tensor: bias.tensor * c.beta,
                    rank: bias.rank,
                };
                y = binary_float(y, scaled, |a, b| a + b)?;
            }
            one(y)
        }
        Node::MatMul(_) => {
            let b = float(&mut inputs, 1, device)?;
            let a = float(&mut inputs, 0, device)?;
            if a.rank < 2 || b.rank < 2 {
                return Err("MatMul with a rank-1 operand is not supported".into());
            }
            let (sa, sb) = (a.shape(), b.shape());
            if sa[sa.len() - 1] != sb[sb.len() - 2] {
                return Err(format!("cannot multiply {sa:?} by {sb:?}"));
            }
            check_broadcast(&a.tensor.dims()[..MAX_RANK - 2], &b.tensor.dims()[..MAX_RANK - 2])?;
            one(Float {
                tensor: a.tensor.matmul(b.tensor),
                rank: a.rank.max(b.rank),
            })
        }
        Node::ReduceMean(n) => reduce(inputs, &n.config, device, |t, axis| t.mean_dim(axis)),
        Node::ReduceSum(n) => reduce(inputs, &n.config, device, |t, axis| t.sum_dim(axis)),
        Node::ReduceMax(n) => reduce(inputs, &n.config, device, |t, axis| t.max_dim(axis)),
        Node::ReduceMin(n) => reduce(inputs, &n.config, device, |t, axis| t.min_dim(axis)),
        Node::Flatten(n) => {
            let x = float(&mut inputs, 0, device)?;
            let shape = x.shape();
            let axis = n.config.axis.min(shape.len());
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis..].iter().product();
            one(x.reshape(&[outer, inner])?)
        }
        Node::Reshape(n) => {
            let target = match &n.config.shape {
                onnx_ir::node::reshape::ReshapeInput::Static(shape) => shape.clone(),
                onnx_ir::node::reshape::ReshapeInput::Runtime(r) => {
                    take(&mut inputs, r.input_index)?.into_ints()?.values
                }
            };
            let x = take(&mut inputs, 0)?;
            let shape = reshape_target(&x.shape(), &target)?;
            reshape_value(x, &shape)
        }
        Node::Squeeze(n) => {
            let axes = match &n.config.axes {
                None => None,
                Some(onnx_ir::node::squeeze::SqueezeInput::Static(axes)) => Some(axes.clone()),
                Some(onnx_ir::node::squeeze::SqueezeInput::Runtime(r)) => {
                    Some(take(&mut inputs, r.input_index)?.into_ints()?.values)
                }
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
        }
        Node::Unsqueeze(n) => {
            let axes = match &n.config {
                onnx_ir::node::unsqueeze::UnsqueezeConfig::Static(axes) => axes.clone(),
                onnx_ir::node::unsqueeze::UnsqueezeConfig::Runtime(r) => {
                    take(&mut inputs, r.input_index)?.into_ints()?.values
                }
            };
            let x = take(&mut inputs, 0)?;
            let shape = x.shape();
            let rank = shape.len() + axes.len();
            let axes = normalise_axes(&axes, rank)?;
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
        }
        Node::Transpose(n) => {
            let x = match take(&mut inputs, 0)? {
                Value::Ints(ints) => return transpose_ints(&ints, &n.config.perm).map(|i| vec![Value::Ints(i)]),
                Value::Float(x) => x,
            };
            let perm = normalise_axes(&n.config.perm, x.rank)?;
            if perm.len() != x.rank {
                return Err(format!("permutation {:?} for a rank-{} tensor", n.config.perm, x.rank));
            }
            let offset = MAX_RANK - x.rank;
            let mut axes: [usize; MAX_RANK] = std::array::from_fn(|i| i);
            for (i, p) in perm.iter().enumerate() {
                axes[offset + i] = offset + p;
            }
            one(Float {
                tensor: x.tensor.permute(axes),
                rank: x.rank,
            })
        }
        Node::Concat(n) => {
            let values: Vec<Value> = inputs.into_iter().flatten().collect();
            if values.iter().all(|v| matches!(v, Value::Ints(_))) {
                let mut out = Vec::new();
                for v in values {
                    let ints = v.into_ints()?;
                    if ints.shape.len() > 1 {
                        return Err("concatenation of integer matrices is not supported".into());
                    }
                    out.extend(ints.values);
                }
                return Ok(vec![Value::Ints(Ints::vector(out))]);
            }
            let floats: Vec<Float> = values
                .into_iter()
                .map(|v| v.into_float(device))
                .collect::<Result<_, _>>()?;
            let first = floats.first().ok_or("Concat without inputs")?.shape();
            let axis = n.config.axis;
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
        }
        Node::Split(n) => {
            let c = &n.config;
            let sizes_input = match &c.split_sizes {
                Some(onnx_ir::node::split::SplitSizesInput::Static(s)) => Some(s.clone()),
                Some(onnx_ir::node::split::SplitSizesInput::Runtime(r)) => {
                    Some(take(&mut inputs, r.input_index)?.into_ints()?.sizes()?)
                }
                None => None,
            };
            let x = float(&mut inputs, 0, device)?;
            let length = *x.shape().get(c.axis).ok_or("split axis out of range")?;
            let parts = node.outputs().len();
            let sizes = match (sizes_input, c.split_size) {
                (Some(sizes), _) if !sizes.is_empty() => sizes,
                (_, Some(size)) if size > 0 => {
                    let mut sizes = vec![size; length / size];
                    if length % size != 0 {
                        sizes.push(length % size);
                    }
                    sizes
                }
                _ => {
                    let parts = c.num_outputs.unwrap_or(parts).max(1);
                    let size = length.div_ceil(parts);
                    (0..parts).map(|i| size.min(length.saturating_sub(i * size))).collect()
                }
            };
            if sizes.iter().sum::<usize>() != length {
                return Err(format!("split sizes {sizes:?} do not add up to {length}"));
            }
            let axis = x.axis(c.axis);
            let mut start = 0;
            let mut outputs = Vec::with_capacity(sizes.len());
            for size in sizes {
                outputs.push(Value::Float(Float {
                    tensor: x.tensor.clone().narrow(axis, start, size),
                    rank: x.rank,
                }));
                start += size;
            }
            Ok(outputs)
        }
        Node::Slice(n) => {
            let c = &n.config;
            let mut resolve = |input: &onnx_ir::node::slice::SliceInput| -> Result<Vec<i64>, String> {
                match input {
                    onnx_ir::node::slice::SliceInput::Static(v) => Ok(v.clone()),
                    onnx_ir::node::slice::SliceInput::Runtime(r) => {
                        Ok(take(&mut inputs, r.input_index)?.into_ints()?.values)
                    }
                }
            };
            let starts = resolve(&c.starts)?;
            let ends = resolve(&c.ends)?;
            let axes = c.axes.as_ref().map(&mut resolve).transpose()?;
            let steps = c.steps.as_ref().map(&mut resolve).transpose()?;
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
            if let Value::Ints(ints) = &x {
                return slice_ints(ints, &starts, &ends, &axes, &steps).map(|i| vec![Value::Ints(i)]);
            }
            let mut ranges: Vec<(usize, usize, usize)> = shape.iter().map(|&d| (0, d, 1)).collect();
            for (i, &axis) in axes.iter().enumerate() {
                if steps[i] <= 0 {
                    return Err("Slice with zero or negative steps is not supported on float tensors".into());
                }
                let dim = shape[axis] as i64;
                let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
                let (start, end) = (clamp(starts[i]), clamp(ends[i]));
                ranges[axis] = (start, end.max(start), steps[i] as usize);
            }
            slice_value(x, &ranges)
        }
        Node::Pad(n) => {
            let c = &n.config;
            let pads = match &c.pads {
                onnx_ir::node::pad::PadInput::Static(pads) => pads.clone(),
                onnx_ir::node::pad::PadInput::Runtime { input, axes } => {
                    // ONNX order: all begins, then all ends, for `axes` (every axis by default).
                    let values = take(&mut inputs, input.input_index)?.into_ints()?.values;
                    let rank = inputs.first().and_then(|x| x.as_ref()).map_or(0, |x| x.shape().len());
                    let axes: Vec<usize> = match axes {
                        None => (0..values.len() / 2).collect(),
                        Some(onnx_ir::node::pad::AxesInput::Static(axes)) => axes.clone(),
                        Some(onnx_ir::node::pad::AxesInput::Runtime(r)) => {
                            normalise_axes(&take(&mut inputs, r.input_index)?.into_ints()?.values, rank)?
                        }
                    };
                    if values.len() != 2 * axes.len() || axes.iter().any(|&a| a >= rank) {
                        return Err(format!("pads {values:?} do not fit a rank-{rank} tensor"));
                    }
                    let mut pads = vec![(0usize, 0usize); rank];
                    for (i, &axis) in axes.iter().enumerate() {
                        let (begin, end) = (values[i], values[i + axes.len()]);
                        if begin < 0 || end < 0 {
                            return Err("negative padding (cropping) is not supported".into());
                        }
                        pads[axis] = (begin as usize, end as usize);
                    }
                    pads
                }
            };
            let value = match &c.constant_value {
                onnx_ir::node::pad::ConstantValueInput::Static(v) => *v,
                _ => return Err("a padding value computed at run time is not supported".into()),
            };
            let x = float(&mut inputs, 0, device)?;
            if pads.len() > x.rank {
                return Err(format!("{} padding pairs for a rank-{} tensor", pads.len(), x.rank));
            }
            let mode = match c.mode {
                onnx_ir::node::pad::PadMode::Constant => BurnPadMode::Constant(value),
                onnx_ir::node::pad::PadMode::Reflect => BurnPadMode::Reflect,
                onnx_ir::node::pad::PadMode::Edge => BurnPadMode::Edge,
            };
            one(Float {
                tensor: x.tensor.pad(pads, mode),
                rank: x.rank,
            })
        }
        Node::Shape(n) => {
            let x = take(&mut inputs, 0)?;
            let shape = x.shape();
            let end = n.config.end.min(shape.len());
            let start = n.config.start.min(end);
            Ok(vec![Value::Ints(Ints::vector(
                shape[start..end].iter().map(|&d| d as i64).collect(),
            ))])
        }
        Node::Gather(n) => {
            let indices = take(&mut inputs, 1)?.into_ints()?;
            let data = take(&mut inputs, 0)?;
            gather(data, &indices, n.config.axis, device)
        }
        Node::Cast(n) => {
            let x = take(&mut inputs, 0)?;
            if n.config.to.is_float() {
                Ok(vec![Value::Float(x.into_float(device)?)])
            } else {
                Ok(vec![Value::Ints(x.into_ints()?)])
            }
        }
        Node::ConstantOfShape(n) => {
            let shape = match &n.config.shape {
                onnx_ir::node::constant_of_shape::ConstantOfShapeShape::Static(shape) => shape.clone(),
                onnx_ir::node::constant_of_shape::ConstantOfShapeShape::Runtime(r) => {
                    take(&mut inputs, r.input_index)?.into_ints()?.values
                }
            };
            let shape = Ints::vector(shape).sizes()?;
            let count: usize = shape.iter().product();
            let value = n
                .config
                .value
                .clone()
                .unwrap_or_else(|| TensorData::new(vec![0.0f32], [1]));
            let filled = if value.dtype().is_float() {
                let v = value
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| format!("{e:?}"))?
                    .first()
                    .copied()
                    .unwrap_or(0.0);
                Value::from_data(TensorData::new(vec![v; count], shape.clone()), device)?
            } else {
                let v = Ints::from_data(value)?.values.first().copied().unwrap_or(0);
                Value::Ints(Ints {
                    values: vec![v; count],
                    shape,
                })
            };
            Ok(vec![filled])
        }
        Node::Identity(_) | Node::Dropout(_) => Ok(vec![take(&mut inputs, 0)?]),
        other => Err(format!("operator {} is not supported", other.node_type())),
    }
}

/// Removes input `index`, which must be present.
fn take(inputs: &mut Inputs, index: usize) -> Result<Value, String> {
    inputs
        .get_mut(index)
        .and_then(Option::take)
        .ok_or_else(|| format!("input {index} is missing"))
}

fn float(inputs: &mut Inputs, index: usize, device: &Device) -> Result<Float, String> {
    take(inputs, index)?.into_float(device)
}

fn optional_float(inputs: &mut Inputs, index: usize, device: &Device) -> Result<Option<Float>, String> {
    inputs
        .get_mut(index)
        .and_then(Option::take)
        .map(|v| v.into_float(device))
        .transpose()
}

fn unary(
    mut inputs: Inputs,
    device: &Device,
    f: impl Fn(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
) -> Result<Vec<Value>, String> {
    let x = float(&mut inputs, 0, device)?;
    Ok(vec![Value::Float(Float {
        tensor: f(x.tensor),
        rank: x.rank,
    })])
}

/// An operator along one logical axis (softmax), given the padded axis.
fn along_axis(
    mut inputs: Inputs,
    device: &Device,
    axis: usize,
    f: impl Fn(Tensor<MAX_RANK>, usize) -> Tensor<MAX_RANK>,
) -> Result<Vec<Value>, String> {
    let x = float(&mut inputs, 0, device)?;
    if axis >= x.rank {
        return Err(format!("axis {axis} out of range for a rank-{} tensor", x.rank));
    }
    let padded_axis = x.axis(axis);
    Ok(vec![Value::Float(Float {
        tensor: f(x.tensor, padded_axis),
        rank: x.rank,
    })])
}

fn map_first(mut values: Vec<Value>, f: impl Fn(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>) -> Result<Vec<Value>, String> {
    match values.pop() {
        Some(Value::Float(x)) => Ok(vec![Value::Float(Float {
            tensor: f(x.tensor),
            rank: x.rank,
        })]),
        _ => Err("expected a float result".into()),
    }
}

/// Checks NumPy broadcasting of two right-aligned shapes.
fn check_broadcast(a: &[usize], b: &[usize]) -> Result<(), String> {
    let fits = a.iter().zip(b).all(|(&x, &y)| x == y || x == 1 || y == 1);
    if fits {
        Ok(())
    } else {
        Err(format!("shapes {a:?} and {b:?} do not broadcast"))
    }
}

fn binary_float(
    a: Float,
    b: Float,
    f: impl Fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
) -> Result<Float, String> {
    check_broadcast(&a.shape_padded(), &b.shape_padded())
        .map_err(|_| format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape()))?;
    Ok(Float {
        rank: a.rank.max(b.rank),
        tensor: f(a.tensor, b.tensor),
    })
}

impl Float {
    fn shape_padded(&self) -> [usize; MAX_RANK] {
        self.tensor.dims()
    }
}

/// An element-wise binary operator with broadcasting; integers stay on the host.
fn broadcast(
    mut inputs: Inputs,
    f: impl Fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
    int: impl Fn(i64, i64) -> Option<i64>,
) -> Result<Vec<Value>, String> {
    let b = take(&mut inputs, 1)?;
    let a = take(&mut inputs, 0)?;
    match (a, b) {
        (Value::Ints(a), Value::Ints(b)) => {
            let values: Option<Vec<i64>> = if a.values.len() == b.values.len() {
                a.values.iter().zip(&b.values).map(|(&x, &y)| int(x, y)).collect()
            } else if b.values.len() == 1 {
                a.values.iter().map(|&x| int(x, b.values[0])).collect()
            } else if a.values.len() == 1 {
                b.values.iter().map(|&y| int(a.values[0], y)).collect()
            } else {
                return Err(format!(
                    "integer shapes {:?} and {:?} do not broadcast",
                    a.shape, b.shape
                ));
            };
            let shape = if a.shape.len() >= b.shape.len() {
                a.shape
            } else {
                b.shape
            };
            let values = values.ok_or("integer overflow or division by zero")?;
            Ok(vec![Value::Ints(Ints { values, shape })])
        }
        (a, b) => {
            let device = match (&a, &b) {
                (Value::Float(f), _) | (_, Value::Float(f)) => f.tensor.device(),
                _ => unreachable!("one operand is a float tensor"),
            };
            let result = binary_float(a.into_float(&device)?, b.into_float(&device)?, f)?;
            Ok(vec![Value::Float(result)])
        }
    }
}

/// A variadic element-wise operator (Max, Min, Sum).
fn fold(
    inputs: Inputs,
    device: &Device,
    f: impl Fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
) -> Result<Vec<Value>, String> {
    let mut acc: Option<Float> = None;
    for value in inputs.into_iter().flatten() {
        let value = value.into_float(device)?;
        acc = Some(match acc {
            None => value,
            Some(a) => binary_float(a, value, &f)?,
        });
    }
    Ok(vec![Value::Float(acc.ok_or("no inputs")?)])
}

fn reduce(
    mut inputs: Inputs,
    config: &onnx_ir::node::reduce::ReduceConfig,
    device: &Device,
    f: impl Fn(Tensor<MAX_RANK>, usize) -> Tensor<MAX_RANK>,
) -> Result<Vec<Value>, String> {
    let axes = match &config.axes {
        onnx_ir::node::reduce::ReduceAxes::Static(axes) => axes.clone(),
        onnx_ir::node::reduce::ReduceAxes::Runtime(r) => take(&mut inputs, r.input_index)?
            .into_ints()?
            .values
            .iter()
            .map(|&a| a as usize)
            .collect(),
    };
    let x = float(&mut inputs, 0, device)?;
    if axes.is_empty() && config.noop_with_empty_axes {
        return Ok(vec![Value::Float(x)]);
    }
    let axes: Vec<usize> = if axes.is_empty() { (0..x.rank).collect() } else { axes };
    if let Some(bad) = axes.iter().find(|&&a| a >= x.rank) {
        return Err(format!("axis {bad} out of range for a rank-{} tensor", x.rank));
    }
    let shape = x.shape();
    let mut tensor = x.tensor;
    for &axis in &axes {
        tensor = f(tensor, MAX_RANK - x.rank + axis);
    }
    let reduced = Float { tensor, rank: x.rank };
    if config.keepdims {
        return Ok(vec![Value::Float(reduced)]);
    }
    let kept: Vec<usize> = (0..shape.len())
        .filter(|a| !axes.contains(a))
        .map(|a| shape[a])
        .collect();
    Ok(vec![Value::Float(reduced.reshape(&kept)?)])
}

/// Resolves ONNX reshape targets: `0` copies the input dimension, `-1` takes the rest.
fn reshape_target(input: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
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
            d if d > 0 => shape.push(d as usize),
            _ => return Err(format!("invalid reshape target {target:?}")),
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        shape[i] = total / known;
    }
    Ok(shape)
}

fn reshape_value(x: Value, shape: &[usize]) -> Result<Vec<Value>, String> {
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

/// Normalises possibly negative axes of a rank-`rank` tensor.
fn normalise_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    axes.iter()
        .map(|&a| {
            let a2 = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a2)
                .ok()
                .filter(|&a2| a2 < rank)
                .ok_or_else(|| format!("axis {a} out of range for rank {rank}"))
        })
        .collect()
}

fn slice_value(x: Value, ranges: &[(usize, usize, usize)]) -> Result<Vec<Value>, String> {
    Ok(vec![match x {
        Value::Float(f) => {
            let offset = MAX_RANK - f.rank;
            let slices: [Slice; MAX_RANK] = std::array::from_fn(|i| {
                if i < offset {
                    Slice::new(0, None, 1)
                } else {
                    let (start, end, step) = ranges[i - offset];
                    Slice::new(start as isize, Some(end as isize), step as isize)
                }
            });
            Value::Float(Float {
                tensor: f.tensor.slice(slices),
                rank: f.rank,
            })
        }
        Value::Ints(_) => unreachable!("integer slices are taken by `slice_ints`"),
    }])
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

fn transpose_ints(ints: &Ints, perm: &[i64]) -> Result<Ints, String> {
    let rank = ints.shape.len();
    let perm = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        normalise_axes(perm, rank)?
    };
    if perm.len() != rank {
        return Err(format!("permutation {perm:?} for a rank-{rank} tensor"));
    }
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
fn slice_ints(ints: &Ints, starts: &[i64], ends: &[i64], axes: &[usize], steps: &[i64]) -> Result<Ints, String> {
    let rank = ints.shape.len();
    // Per axis: the source positions kept, in order.
    let mut kept: Vec<Vec<usize>> = ints.shape.iter().map(|&d| (0..d).collect()).collect();
    for (i, &axis) in axes.iter().enumerate() {
        let dim = ints.shape[axis] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let wrap = |v: i64| if v < 0 { v + dim } else { v };
        let positions: Vec<usize> = if step > 0 {
            let (start, end) = (wrap(starts[i]).clamp(0, dim), wrap(ends[i]).clamp(0, dim));
            (start..end).step_by(step as usize).map(|p| p as usize).collect()
        } else {
            let (start, end) = (wrap(starts[i]).clamp(-1, dim - 1), wrap(ends[i]).clamp(-1, dim - 1));
            let mut positions = Vec::new();
            let mut p = start;
            while p > end {
                positions.push(p as usize);
                p += step;
            }
            positions
        };
        kept[axis] = positions;
    }
    let shape: Vec<usize> = kept.iter().map(Vec::len).collect();
    let from = strides(&ints.shape);
    let values = indices(&shape)
        .map(|index| (0..rank).map(|a| kept[a][index[a]] * from[a]).sum::<usize>())
        .map(|flat| ints.values[flat])
        .collect();
    Ok(Ints { values, shape })
}

fn gather(data: Value, indices: &Ints, axis: usize, device: &Device) -> Result<Vec<Value>, String> {
    let shape = data.shape();
    let length = *shape.get(axis).ok_or("gather axis out of range")? as i64;
    let index: Vec<i64> = indices
        .values
        .iter()
        .map(|&i| if i < 0 { i + length } else { i })
        .collect();
    if let Some(bad) = index.iter().find(|&&i| i < 0 || i >= length) {
        return Err(format!("gather index {bad} out of range 0..{length}"));
    }
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend(&indices.shape);
    out_shape.extend(&shape[axis + 1..]);
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

/// A sliding window over two spatial axes (convolution or pooling).
struct Window<'a> {
    auto_pad: &'a AutoPad,
    padding: &'a PaddingConfig2d,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
}

impl Window<'_> {
    /// The (begin, end) padding per axis for an input of `size`, ONNX `auto_pad` resolved; an
    /// error where Burn would panic (zero strides, a window larger than the padded input).
    fn padding(&self, size: [usize; 2]) -> Result<[(usize, usize); 2], String> {
        if self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err("kernel sizes, strides and dilations must be positive".into());
        }
        let padding: [(usize, usize); 2] = std::array::from_fn(|axis| self.axis_padding(axis, size[axis]));
        for axis in 0..2 {
            let padded = size[axis] + padding[axis].0 + padding[axis].1;
            let span = (self.kernel[axis] - 1) * self.dilation[axis] + 1;
            if padded < span {
                return Err(format!(
                    "the input ({padded} with padding) is smaller than the window ({span}); is the image too small?"
                ));
            }
        }
        Ok(padding)
    }

    fn axis_padding(&self, axis: usize, input: usize) -> (usize, usize) {
        match self.auto_pad {
            AutoPad::NotSet => {
                let (top, left, bottom, right) = self.padding.as_tuple();
                if axis == 0 { (top, bottom) } else { (left, right) }
            }
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let stride = self.stride[axis];
                let output = input.div_ceil(stride);
                let span = (self.kernel[axis] - 1) * self.dilation[axis] + 1;
                let total = ((output.max(1) - 1) * stride + span).saturating_sub(input);
                let small = total / 2;
                if matches!(self.auto_pad, AutoPad::SameUpper) {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_copy_and_infer() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1]).unwrap(), vec![2, 12]);
        assert_eq!(reshape_target(&[2, 3, 4], &[-1, 4]).unwrap(), vec![6, 4]);
        assert!(reshape_target(&[2, 3, 4], &[5, -1]).is_err());
        assert!(reshape_target(&[2, 3, 4], &[-1, -1]).is_err());
    }

    #[test]
    fn same_padding_matches_onnx() {
        let none = PaddingConfig2d::Valid;
        let window = |auto_pad| Window {
            auto_pad,
            padding: &none,
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
        };
        // 7 wide, kernel 3, stride 2: output 4, total padding 2 → 1 each side; 6 wide: output 3,
        // total padding 1 → the extra pad at the end (upper) or the beginning (lower).
        assert_eq!(window(&AutoPad::SameUpper).padding([7, 6]).unwrap(), [(1, 1), (0, 1)]);
        assert_eq!(window(&AutoPad::SameLower).padding([7, 6]).unwrap(), [(1, 1), (1, 0)]);
        assert!(
            window(&AutoPad::Valid)
                .padding([2, 2])
                .unwrap_err()
                .contains("smaller than the window")
        );
    }

    #[test]
    fn integer_slices_and_transposes_follow_onnx() {
        // torch.onnx's F.pad export: reverse the pads pairwise with a step of -1.
        let pairs = Ints {
            values: vec![0, 0, 0, 0, 0, 1, 0, 1],
            shape: vec![4, 2],
        };
        let reversed = slice_ints(&pairs, &[-1], &[i64::MIN + 1], &[0], &[-1]).unwrap();
        assert_eq!(reversed.values, vec![0, 1, 0, 1, 0, 0, 0, 0]);
        let transposed = transpose_ints(&reversed, &[1, 0]).unwrap();
        assert_eq!(transposed.shape, vec![2, 4]);
        assert_eq!(transposed.values, vec![0, 0, 0, 0, 1, 1, 0, 0]);
        let middle = slice_ints(&Ints::vector(vec![1, 2, 3, 4]), &[1], &[-1], &[0], &[1]).unwrap();
        assert_eq!(middle.values, vec![2, 3]);
    }

    #[test]
    fn negative_axes_are_normalised() {
        assert_eq!(normalise_axes(&[-1, 0], 4).unwrap(), vec![3, 0]);
        assert!(normalise_axes(&[4], 4).is_err());
    }
}
