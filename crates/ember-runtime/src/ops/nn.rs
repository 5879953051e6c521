//! Convolution, normalisation, pooling and matrix products.

use burn::tensor::module::{
    adaptive_avg_pool2d, avg_pool2d, batch_norm as batch_norm_fn, linear as linear_fn, max_pool2d,
};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, ConvTransposeOptions, MaxPoolOptions, PadMode};
use burn::tensor::{EinsumOperand, Tensor};
use onnx_ir::Node;
use onnx_ir::node::avg_pool2d::AvgPool2dConfig;
use onnx_ir::node::batch_norm::BatchNormConfig;
use onnx_ir::node::conv_transpose2d::ConvTranspose2dConfig;
use onnx_ir::node::conv2d::Conv2dConfig;
use onnx_ir::node::max_pool2d::MaxPool2dConfig;
use onnx_ir::node::padding::{AutoPad, PaddingConfig1d, PaddingConfig2d};

use super::{
    Kernel, binary_float, check_broadcast, float, kernel, node, normalise_axes, one, optional_float, within_budget,
};
use crate::value::{Float, MAX_RANK, Value};

/// Conv (2-D): groups, strides, dilations, explicit or `auto_pad` padding.
pub fn conv(node: &Node) -> Result<Kernel, String> {
    conv_with(node!(node, Conv2d).config.clone())
}

/// Conv (1-D): the 2-D kernel on `[N, C, 1, L]`.
pub fn conv1d(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Conv1d).config.clone();
    lifted(conv_with(Conv2dConfig {
        kernel_size: [1, config.kernel_size],
        stride: [1, config.stride],
        padding: padding_2d(&config.padding),
        dilation: [1, config.dilation],
        groups: config.groups,
        auto_pad: config.auto_pad,
    })?)
}

fn conv_with(config: Conv2dConfig) -> Result<Kernel, String> {
    if config.groups == 0 {
        return Err("Conv with 0 groups".into());
    }
    // The kernel size is the weights' (known when they arrive); strides and dilations are
    // checked now.
    let window = Window::checked(
        &config.auto_pad,
        &config.padding,
        [1, 1],
        config.stride,
        config.dilation,
    )?;
    kernel(move |mut inputs, device| {
        let (x, weight, bias) = convolution_operands(&mut inputs, device)?;
        let [_, channels, height, width] = x.dims();
        let [out_channels, per_group, kh, kw] = weight.dims();
        if per_group * config.groups != channels || !out_channels.is_multiple_of(config.groups) {
            return Err(format!(
                "input has {channels} channels but the weights expect {per_group} × {} groups",
                config.groups
            ));
        }
        if let Some(bias) = &bias
            && bias.dims() != [out_channels]
        {
            return Err(format!("{:?} biases for {out_channels} output channels", bias.dims()));
        }
        let window = Window {
            kernel: [kh, kw],
            ..window.clone()
        };
        let plan = window.plan([height, width], false)?;
        let [batch, ..] = x.dims();
        within_budget(&[batch, channels, plan.padded[0], plan.padded[1]])?;
        within_budget(&[batch, out_channels, plan.output[0], plan.output[1]])?;
        // Backends lower convolutions to a matrix product over unfolded windows.
        within_budget(&[batch, per_group * kh * kw, plan.output[0], plan.output[1]])?;
        let padding = plan.padding;
        let options = ConvOptions::new_with_padding(config.stride, padding, config.dilation, config.groups);
        one(Float::new(ember_core::conv2d(x, weight, bias, options)))
    })
}

/// ConvTranspose (2-D): groups, strides, dilations, output padding; explicit symmetric pads, or
/// pads derived from `output_shape` or `auto_pad` when they come out symmetric.
pub fn conv_transpose(node: &Node) -> Result<Kernel, String> {
    conv_transpose_with(node!(node, ConvTranspose2d).config.clone())
}

/// ConvTranspose (1-D): the 2-D kernel on `[N, C, 1, L]`.
pub fn conv_transpose1d(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, ConvTranspose1d).config.clone();
    lifted(conv_transpose_with(ConvTranspose2dConfig {
        kernel_size: [1, config.kernel_size],
        stride: [1, config.stride],
        dilation: [1, config.dilation],
        padding: [0, config.padding],
        padding_out: [0, config.padding_out],
        groups: config.groups,
        auto_pad: config.auto_pad,
        output_shape: config.output_shape.map(|length| [1, length]),
    })?)
}

fn conv_transpose_with(config: ConvTranspose2dConfig) -> Result<Kernel, String> {
    if config.groups == 0 || config.stride.contains(&0) || config.dilation.contains(&0) {
        return Err(format!(
            "ConvTranspose with groups {}, strides {:?}, dilations {:?}",
            config.groups, config.stride, config.dilation
        ));
    }
    kernel(move |mut inputs, device| {
        let (x, weight, bias) = convolution_operands(&mut inputs, device)?;
        let [_, channels, height, width] = x.dims();
        let [in_channels, per_group, kh, kw] = weight.dims();
        if in_channels != channels || !channels.is_multiple_of(config.groups) {
            return Err(format!(
                "input has {channels} channels but the weights expect {in_channels} in {} groups",
                config.groups
            ));
        }
        let out_channels = per_group * config.groups;
        if let Some(bias) = &bias
            && bias.dims() != [out_channels]
        {
            return Err(format!("{:?} biases for {out_channels} output channels", bias.dims()));
        }
        // Pads at the start and the end of each axis; Burn takes symmetric ones, so the
        // difference is cropped afterwards, and an output larger than the full one (a negative
        // total padding) is output padding.
        let mut pads = [[config.padding[0]; 2], [config.padding[1]; 2]];
        let mut padding_out = config.padding_out;
        let inputs_hw = [height, width];
        let kernel_hw = [kh, kw];
        let mut full = [0; 2];
        for axis in 0..2 {
            full[axis] = (inputs_hw[axis].saturating_sub(1))
                .checked_mul(config.stride[axis])
                .and_then(|v| v.checked_add((kernel_hw[axis] - 1) * config.dilation[axis] + 1))
                .and_then(|v| v.checked_add(config.padding_out[axis]))
                .ok_or("ConvTranspose output overflows")?;
            let wanted = match (&config.output_shape, &config.auto_pad) {
                (Some(shape), _) => Some(shape[axis]),
                (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(inputs_hw[axis] * config.stride[axis]),
                (None, AutoPad::Valid) => Some(full[axis]),
                (None, AutoPad::NotSet) => None,
            };
            let Some(wanted) = wanted else { continue };
            if wanted > full[axis] {
                padding_out[axis] += wanted - full[axis];
                full[axis] = wanted;
                pads[axis] = [0, 0];
                continue;
            }
            let total = full[axis] - wanted;
            let (small, large) = (total / 2, total - total / 2);
            // SAME_LOWER puts the larger half at the start, as ONNX says for output_shape.
            pads[axis] = if config.auto_pad == AutoPad::SameUpper {
                [small, large]
            } else {
                [large, small]
            };
        }
        let symmetric = [pads[0][0].min(pads[0][1]), pads[1][0].min(pads[1][1])];
        let out = [
            full[0].checked_sub(pads[0][0] + pads[0][1]),
            full[1].checked_sub(pads[1][0] + pads[1][1]),
        ];
        let [Some(out_h), Some(out_w)] = out else {
            return Err("ConvTranspose padding removes the whole output".into());
        };
        if out_h == 0 || out_w == 0 {
            return Err("ConvTranspose padding removes the whole output".into());
        }
        if padding_out[0] >= config.stride[0].max(config.dilation[0])
            || padding_out[1] >= config.stride[1].max(config.dilation[1])
        {
            return Err(format!(
                "ConvTranspose output padding {padding_out:?} must be below the stride or dilation"
            ));
        }
        let [n, ..] = x.dims();
        within_budget(&[n, out_channels, full[0], full[1]])?;
        let options = ConvTransposeOptions::new(config.stride, symmetric, padding_out, config.dilation, config.groups);
        let y = burn::tensor::module::conv_transpose2d(x, weight, bias, options);
        // What symmetric padding left: cropped from the side with more padding.
        let y = y
            .narrow(2, pads[0][0] - symmetric[0], out_h)
            .narrow(3, pads[1][0] - symmetric[1], out_w);
        one(Float::new(y))
    })
}

/// A 1-D padding as the 2-D one of `[N, C, 1, L]`.
fn padding_2d(padding: &PaddingConfig1d) -> PaddingConfig2d {
    match padding {
        PaddingConfig1d::Valid => PaddingConfig2d::Valid,
        PaddingConfig1d::Explicit(left, right) => PaddingConfig2d::Explicit(0, *left, 0, *right),
    }
}

/// A 2-D kernel run on 1-D data: every rank-3 float operand `[N, C, L]` (input and weights)
/// enters as `[N, C, 1, L]`, and rank-4 outputs leave without the unit axis.
fn lifted(inner: Kernel) -> Result<Kernel, String> {
    kernel(move |inputs, device| {
        let inputs = inputs
            .into_iter()
            .map(|value| match value {
                Some(Value::Float(f)) if f.rank == 3 => {
                    let [a, b, c]: [usize; 3] = f.shape().try_into().expect("rank 3");
                    Ok(Some(Value::Float(f.reshape(&[a, b, 1, c])?)))
                }
                other => Ok(other),
            })
            .collect::<Result<super::Inputs, String>>()?;
        inner(inputs, device)?
            .into_iter()
            .map(|value| match value {
                Value::Float(f) if f.rank == 4 => {
                    let [a, b, unit, c]: [usize; 4] = f.shape().try_into().expect("rank 4");
                    if unit != 1 {
                        return Err(format!("a 1-D window produced height {unit}"));
                    }
                    Ok(Value::Float(f.reshape(&[a, b, c])?))
                }
                other => Ok(other),
            })
            .collect()
    })
}

/// A convolution's input `[N, C, H, W]`, weights and optional biases.
fn convolution_operands(
    inputs: &mut super::Inputs,
    device: &burn::tensor::Device,
) -> Result<(Tensor<4>, Tensor<4>, Option<Tensor<1>>), String> {
    let x = float(inputs, 0, device)?.to_rank::<4>()?;
    let weight = float(inputs, 1, device)?.to_rank::<4>()?;
    let bias = optional_float(inputs, 2, device)?
        .map(|b| b.to_rank::<1>())
        .transpose()?;
    Ok((x, weight, bias))
}

/// BatchNormalization in inference mode, over rank 2 to 5.
pub fn batch_norm(node: &Node) -> Result<Kernel, String> {
    let epsilon = match &node!(node, BatchNormalization).config {
        BatchNormConfig::Static(s) => s.epsilon,
        BatchNormConfig::Runtime(r) => r.epsilon,
    };
    // onnx-ir 0.22 reads a missing `epsilon` as 0, where ONNX's default is 1e-5; an epsilon of
    // exactly 0 (a division by zero for a constant channel) is taken to be the default.
    let epsilon = if epsilon == 0.0 { 1e-5 } else { epsilon };
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        let mut stats = Vec::with_capacity(4);
        for index in 1..5 {
            stats.push(float(&mut inputs, index, device)?.to_rank::<1>()?);
        }
        let channels = x.shape().get(1).copied().unwrap_or(0);
        if stats.iter().any(|s| s.dims() != [channels]) {
            return Err(format!("input {:?} does not match {channels} statistics", x.shape()));
        }
        let [gamma, beta, mean, var]: [Tensor<1>; 4] = stats
            .try_into()
            .map_err(|_| "BatchNormalization needs four statistics".to_owned())?;
        one(match x.rank {
            2 => Float::new(batch_norm_fn(x.to_rank::<2>()?, gamma, beta, mean, var, epsilon)),
            3 => Float::new(batch_norm_fn(x.to_rank::<3>()?, gamma, beta, mean, var, epsilon)),
            4 => Float::new(batch_norm_fn(x.to_rank::<4>()?, gamma, beta, mean, var, epsilon)),
            5 => Float::new(batch_norm_fn(x.to_rank::<5>()?, gamma, beta, mean, var, epsilon)),
            rank => return Err(format!("batch norm of a rank-{rank} tensor")),
        })
    })
}

/// LayerNormalization (opset 17): normalise over the axes from `axis` on, then scale and shift
/// (both broadcast over those axes).
pub fn layer_norm(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, LayerNormalization).config.clone();
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        let scale = float(&mut inputs, 1, device)?;
        let bias = optional_float(&mut inputs, 2, device)?;
        let first = normalise_axes(&[config.axis], x.rank)?[0];
        let axes: Vec<usize> = (first..x.rank).map(|a| x.axis(a)).collect();
        let mean = x.tensor.clone().mean_dims(&axes);
        let centred = x.tensor - mean.clone();
        let variance = centred.clone().powf_scalar(2.0).mean_dims(&axes);
        let inverse_deviation = (variance + config.epsilon).sqrt().recip();
        let normalised = Float {
            tensor: centred * inverse_deviation.clone(),
            rank: x.rank,
        };
        let scaled = binary_float(normalised, scale, |a, b| a * b)?;
        let y = match bias {
            Some(bias) => binary_float(scaled, bias, |a, b| a + b)?,
            None => scaled,
        };
        // The optional outputs Mean and InvStdDev, over the normalised axes kept as size 1.
        Ok(vec![
            Value::Float(y),
            Value::Float(Float {
                tensor: mean,
                rank: x.rank,
            }),
            Value::Float(Float {
                tensor: inverse_deviation,
                rank: x.rank,
            }),
        ])
    })
}

/// LpNormalization: each slice along `axis` divided by its L1 or L2 norm; a slice of zeros stays
/// zeros (ONNX's expected outputs), where the plain quotient would be NaN.
pub fn lp_normalization(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, LpNormalization).config.clone();
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if config.axis >= x.rank {
            return Err(format!("axis {} of a rank-{} input", config.axis, x.rank));
        }
        let axis = x.axis(config.axis);
        let norm = match config.p {
            1 => x.tensor.clone().abs().sum_dim(axis),
            2 => x.tensor.clone().powf_scalar(2.0).sum_dim(axis).sqrt(),
            p => return Err(format!("p = {p}: LpNormalization takes 1 or 2")),
        };
        let zero = norm.clone().equal_elem(0.0);
        one(Float {
            tensor: x.tensor / norm.mask_fill(zero, 1.0),
            rank: x.rank,
        })
    })
}

/// RMSNormalization (opset 23): x / √(E[x²] + ε) · scale, the mean over the axes from `axis` to
/// the last (computed in float32, as the default `stash_type`).
pub fn rms_normalization_legalized(node: &onnx_ir::CustomNode) -> Result<Kernel, String> {
    let axis = node.attrs.get_i64("axis").unwrap_or(-1);
    let epsilon = node.attrs.get_f32("epsilon").unwrap_or(1e-5);
    if let Some(stash) = node.attrs.get_i64("stash_type")
        && stash != 1
    {
        return Err(format!(
            "RMSNormalization with stash_type {stash} (only float32, 1, is run)"
        ));
    }
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        let scale = float(&mut inputs, 1, device)?;
        let first = normalise_axes(&[axis], x.rank)?[0];
        let axes: Vec<usize> = (first..x.rank).map(|a| x.axis(a)).collect();
        let mean_square = x.tensor.clone().powf_scalar(2.0).mean_dims(&axes);
        let normalised = Float {
            tensor: x.tensor / (mean_square + f64::from(epsilon)).sqrt(),
            rank: x.rank,
        };
        one(binary_float(normalised, scale, |a, b| a * b)?)
    })
}

/// MeanVarianceNormalization (ONNX's function): (x − E[x]) / (√(E[x²] − E[x]²) + 1e-9), the
/// expectations over `axes`; a variance that rounding makes negative counts as 0 (not NaN).
pub fn mean_variance_normalization(node: &Node) -> Result<Kernel, String> {
    let axes = node!(node, MeanVarianceNormalization).config.axes.clone();
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if let Some(axis) = axes.iter().find(|&&a| a >= x.rank) {
            return Err(format!("axis {axis} of a rank-{} input", x.rank));
        }
        let physical: Vec<usize> = axes.iter().map(|&a| x.axis(a)).collect();
        let mean = x.tensor.clone().mean_dims(&physical);
        let mean_of_squares = x.tensor.clone().powf_scalar(2.0).mean_dims(&physical);
        let deviation = (mean_of_squares - mean.clone().powf_scalar(2.0)).clamp_min(0.0).sqrt();
        one(Float {
            tensor: (x.tensor - mean) / (deviation + 1e-9),
            rank: x.rank,
        })
    })
}

/// LRN (AlexNet): x / (bias + α/size · Σ x²)^β, the sum over `size` neighbouring channels,
/// ⌊(size−1)/2⌋ before and ⌈(size−1)/2⌉ after each one.
pub fn lrn(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Lrn).config.clone();
    let size = usize::try_from(config.size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("LRN size must be positive, got {}", config.size))?;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
        let channels = x.dims()[1];
        // A window reaching past every channel sums them all, whatever its size: clamping it
        // keeps the result and bounds the work (a size of 10⁹ would be 10⁹ slices).
        let reach = channels.saturating_sub(1);
        let (before, after) = (((size - 1) / 2).min(reach), (size / 2).min(reach));
        let squares = x
            .clone()
            .powf_scalar(2.0)
            .pad(vec![(0, 0), (before, after), (0, 0), (0, 0)], PadMode::Constant(0.0));
        let window_sum = (0..=before + after)
            .map(|offset| squares.clone().narrow(1, offset, channels))
            .reduce(|a, b| a + b)
            .ok_or("LRN size must be positive")?;
        let scale = (window_sum * (config.alpha / size as f32) + config.bias).powf_scalar(config.beta);
        one(Float::new(x / scale))
    })
}

pub fn max_pool(node: &Node) -> Result<Kernel, String> {
    max_pool_with(node!(node, MaxPool2d).config.clone())
}

/// MaxPool (1-D): the 2-D kernel on `[N, C, 1, L]`.
pub fn max_pool1d(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, MaxPool1d).config.clone();
    let mut lifted_config = MaxPool2dConfig::new(
        [1, config.kernel_size],
        [1, config.stride],
        padding_2d(&config.padding),
        [1, config.dilation],
        config.ceil_mode,
        config.auto_pad,
    );
    lifted_config.storage_order = config.storage_order;
    lifted(max_pool_with(lifted_config)?)
}

fn max_pool_with(config: MaxPool2dConfig) -> Result<Kernel, String> {
    let window = Window::checked(
        &config.auto_pad,
        &config.padding,
        config.kernel_size,
        config.strides,
        config.dilation,
    )?;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
        let padding = window.checked_padding(x.dims(), config.ceil_mode)?;
        let options = MaxPoolOptions::new(config.kernel_size)
            .with_stride(config.strides)
            .with_padding_pairs(padding)
            .with_dilation(config.dilation)
            .with_ceil_mode(config.ceil_mode);
        one(Float::new(max_pool2d(x, options)))
    })
}

pub fn average_pool(node: &Node) -> Result<Kernel, String> {
    average_pool_with(node!(node, AveragePool2d).config.clone())
}

/// AveragePool (1-D): the 2-D kernel on `[N, C, 1, L]`.
pub fn average_pool1d(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, AveragePool1d).config.clone();
    lifted(average_pool_with(AvgPool2dConfig {
        kernel_size: [1, config.kernel_size],
        strides: [1, config.stride],
        padding: padding_2d(&config.padding),
        count_include_pad: config.count_include_pad,
        dilation: [1, config.dilation],
        ceil_mode: config.ceil_mode,
        auto_pad: config.auto_pad,
    })?)
}

fn average_pool_with(config: AvgPool2dConfig) -> Result<Kernel, String> {
    if config.dilation != [1, 1] {
        return Err(format!(
            "dilated average pooling (dilations {:?}) is not supported",
            config.dilation
        ));
    }
    let window = Window::checked(
        &config.auto_pad,
        &config.padding,
        config.kernel_size,
        config.strides,
        [1, 1],
    )?;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
        let padding = window.checked_padding(x.dims(), config.ceil_mode)?;
        let options = AvgPoolOptions::new(config.kernel_size)
            .with_stride(config.strides)
            .with_padding_pairs(padding)
            .with_count_include_pad(config.count_include_pad)
            .with_ceil_mode(config.ceil_mode);
        one(Float::new(avg_pool2d(x, options)))
    })
}

/// The mean over every axis after the channels (kept, of size 1).
pub fn global_average_pool(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if x.rank < 3 {
            return Err(format!("global pooling of a rank-{} tensor", x.rank));
        }
        if x.rank == 4 {
            return one(Float::new(adaptive_avg_pool2d(x.to_rank::<4>()?, [1, 1])));
        }
        let axes: Vec<usize> = (2..x.rank).map(|a| x.axis(a)).collect();
        one(Float {
            tensor: x.tensor.mean_dims(&axes),
            rank: x.rank,
        })
    })
}

/// The maximum over every axis after the channels (kept, of size 1).
pub fn global_max_pool(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if x.rank < 3 {
            return Err(format!("global pooling of a rank-{} tensor", x.rank));
        }
        let mut tensor = x.tensor;
        for axis in (2..x.rank).map(|a| MAX_RANK - x.rank + a) {
            tensor = tensor.max_dim(axis);
        }
        one(Float { tensor, rank: x.rank })
    })
}

/// onnx-ir's form of a Gemm (or MatMul + Add) with constant weights: `x · Wᵀ + b`.
pub fn linear(node: &Node) -> Result<Kernel, String> {
    let transpose_weight = node!(node, Linear).config.transpose_weight;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        let weight = float(&mut inputs, 1, device)?;
        if weight.shape().contains(&0) {
            return Err(format!(
                "the weights have shape {:?}: the layer has no inputs or outputs",
                weight.shape()
            ));
        }
        let weight = weight.to_rank::<2>()?;
        let weight = if transpose_weight { weight.transpose() } else { weight };
        let bias = optional_float(&mut inputs, 2, device)?
            .map(|b| b.to_rank::<1>())
            .transpose()?;
        let [d_in, d_out] = weight.dims();
        if x.shape().last() != Some(&d_in) {
            return Err(format!("input {:?} does not fit weights of {d_in} inputs", x.shape()));
        }
        if let Some(bias) = &bias
            && bias.dims() != [d_out]
        {
            return Err(format!("{:?} biases for {d_out} outputs", bias.dims()));
        }
        let mut out = x.shape();
        *out.last_mut().expect("the input has a last axis") = d_out;
        within_budget(&out)?;
        one(match x.rank {
            2 => Float::new(linear_fn(x.to_rank::<2>()?, weight, bias)),
            3 => Float::new(linear_fn(x.to_rank::<3>()?, weight, bias)),
            4 => Float::new(linear_fn(x.to_rank::<4>()?, weight, bias)),
            rank => return Err(format!("linear layer on a rank-{rank} tensor")),
        })
    })
}

/// Gemm: `α · A' · B' + β · C`, A' and B' optionally transposed, C broadcast.
pub fn gemm(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Gemm).config.clone();
    kernel(move |mut inputs, device| {
        let a = float(&mut inputs, 0, device)?.to_rank::<2>()?;
        let b = float(&mut inputs, 1, device)?;
        if b.shape().contains(&0) {
            return Err(format!(
                "the weights have shape {:?}: the layer has no inputs or outputs",
                b.shape()
            ));
        }
        let b = b.to_rank::<2>()?;
        let a = if config.trans_a != 0 { a.transpose() } else { a };
        let b = if config.trans_b != 0 { b.transpose() } else { b };
        let ([m, k], [k2, _]) = (a.dims(), b.dims());
        if k != k2 {
            return Err(format!("cannot multiply [{m}, {k}] by {:?}", b.dims()));
        }
        within_budget(&[m, b.dims()[1]])?;
        let mut y = Float::new(a.matmul(b) * config.alpha);
        if let Some(bias) = optional_float(&mut inputs, 2, device)? {
            let scaled = Float {
                tensor: bias.tensor * config.beta,
                rank: bias.rank,
            };
            y = binary_float(y, scaled, |a, b| a + b)?;
        }
        one(y)
    })
}

/// MatMul of rank ≥ 2 operands, leading (batch) axes broadcast.
pub fn matmul(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let b = float(&mut inputs, 1, device)?;
        let a = float(&mut inputs, 0, device)?;
        if a.rank == 0 || b.rank == 0 {
            return Err("MatMul of a scalar".into());
        }
        // NumPy's vectors: a row before, a column after, removed from the product again.
        let (a_vector, b_vector) = (a.rank == 1, b.rank == 1);
        let a = if a_vector {
            let length = a.shape()[0];
            a.reshape(&[1, length])?
        } else {
            a
        };
        let b = if b_vector {
            let length = b.shape()[0];
            b.reshape(&[length, 1])?
        } else {
            b
        };
        let (sa, sb) = (a.shape(), b.shape());
        if sa[sa.len() - 1] != sb[sb.len() - 2] {
            return Err(format!("cannot multiply {sa:?} by {sb:?}"));
        }
        let (da, db) = (a.tensor.dims(), b.tensor.dims());
        check_broadcast(&da[..MAX_RANK - 2], &db[..MAX_RANK - 2])?;
        let mut out: Vec<usize> = da.iter().zip(&db).map(|(&x, &y)| x.max(y)).collect();
        out[MAX_RANK - 2] = da[MAX_RANK - 2];
        out[MAX_RANK - 1] = db[MAX_RANK - 1];
        within_budget(&out)?;
        let product = Float {
            rank: a.rank.max(b.rank),
            tensor: a.tensor.matmul(b.tensor),
        };
        if !a_vector && !b_vector {
            return one(product);
        }
        let mut shape = product.shape();
        if b_vector {
            shape.pop();
        }
        if a_vector {
            shape.remove(shape.len() - if b_vector { 1 } else { 2 });
        }
        one(product.reshape(&shape)?)
    })
}

/// A sliding window over two spatial axes (convolution or pooling).
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub auto_pad: AutoPad,
    pub padding: PaddingConfig2d,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
}

impl Window {
    /// A window from a node's configuration, checked (see [`Window::check`]).
    pub fn checked(
        auto_pad: &AutoPad,
        padding: &PaddingConfig2d,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<Self, String> {
        let window = Self {
            auto_pad: auto_pad.clone(),
            padding: padding.clone(),
            kernel,
            stride,
            dilation,
        };
        window.check()?;
        Ok(window)
    }

    /// The configuration alone: zero kernel sizes, strides and dilations are load-time errors.
    pub fn check(&self) -> Result<(), String> {
        let zero: Vec<String> = [
            ("kernel sizes", self.kernel),
            ("strides", self.stride),
            ("dilations", self.dilation),
        ]
        .iter()
        .filter(|(_, values)| values.contains(&0))
        .map(|(name, values)| format!("{name} {values:?}"))
        .collect();
        if zero.is_empty() {
            Ok(())
        } else {
            Err(format!("{} must be positive", zero.join(" and ")))
        }
    }

    /// The padding, padded size and output size for an input of `size`, ONNX `auto_pad`
    /// resolved, in checked arithmetic; an error where Burn would panic (a window larger than
    /// the padded input) or a size overflows.
    pub fn plan(&self, size: [usize; 2], ceil_mode: bool) -> Result<WindowPlan, String> {
        self.check()?;
        let overflow = || format!("the window {:?} with padding overflows", self.kernel);
        let mut plan = WindowPlan {
            padding: [(0, 0); 2],
            padded: [0; 2],
            output: [0; 2],
        };
        for (axis, &input) in size.iter().enumerate() {
            let span = (self.kernel[axis] - 1)
                .checked_mul(self.dilation[axis])
                .and_then(|s| s.checked_add(1))
                .ok_or_else(overflow)?;
            let (begin, end) = self.axis_padding(axis, input, span).ok_or_else(overflow)?;
            let padded = input
                .checked_add(begin)
                .and_then(|s| s.checked_add(end))
                .ok_or_else(overflow)?;
            if padded < span {
                return Err(format!(
                    "the input ({padded} with padding) is smaller than the window ({span}); is the image too small?"
                ));
            }
            let steps = if ceil_mode {
                (padded - span).div_ceil(self.stride[axis])
            } else {
                (padded - span) / self.stride[axis]
            };
            plan.padding[axis] = (begin, end);
            plan.padded[axis] = padded;
            plan.output[axis] = steps + 1;
        }
        Ok(plan)
    }

    /// The padding of a pooling window over `[N, C, H, W]`, its padded input and output
    /// checked against the memory budget.
    pub fn checked_padding(&self, [n, c, h, w]: [usize; 4], ceil_mode: bool) -> Result<[(usize, usize); 2], String> {
        let plan = self.plan([h, w], ceil_mode)?;
        within_budget(&[n, c, plan.padded[0], plan.padded[1]])?;
        within_budget(&[n, c, plan.output[0], plan.output[1]])?;
        Ok(plan.padding)
    }

    fn axis_padding(&self, axis: usize, input: usize, span: usize) -> Option<(usize, usize)> {
        Some(match self.auto_pad {
            AutoPad::NotSet => {
                let (top, left, bottom, right) = self.padding.as_tuple();
                if axis == 0 { (top, bottom) } else { (left, right) }
            }
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let stride = self.stride[axis];
                let output = input.div_ceil(stride);
                let total = (output.max(1) - 1)
                    .checked_mul(stride)?
                    .checked_add(span)?
                    .saturating_sub(input);
                let small = total / 2;
                if matches!(self.auto_pad, AutoPad::SameUpper) {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        })
    }
}

/// Where a window goes over one input size.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowPlan {
    /// (begin, end) padding per spatial axis.
    pub padding: [(usize, usize); 2],
    /// The padded input size.
    pub padded: [usize; 2],
    /// The output size.
    pub output: [usize; 2],
}

/// The input `[N, C, …]` (rank 3 at least), scales and biases of a normalisation.
fn normalisation_operands(
    inputs: &mut super::Inputs,
    device: &burn::tensor::Device,
    op: &str,
) -> Result<(Float, Tensor<1>, Tensor<1>), String> {
    let x = float(inputs, 0, device)?;
    let scale = float(inputs, 1, device)?.to_rank::<1>()?;
    let bias = float(inputs, 2, device)?.to_rank::<1>()?;
    if x.rank < 3 {
        return Err(format!("{op} of a rank-{} tensor", x.rank));
    }
    Ok((x, scale, bias))
}

/// InstanceNormalization: each channel of each image normalised over its spatial axes, then
/// scaled and shifted per channel.
pub fn instance_norm(node: &Node) -> Result<Kernel, String> {
    let epsilon = node!(node, InstanceNormalization).config.epsilon;
    kernel(move |mut inputs, device| {
        let (x, scale, bias) = normalisation_operands(&mut inputs, device, "InstanceNormalization")?;
        let channels = x.shape()[1];
        if scale.dims() != [channels] || bias.dims() != [channels] {
            return Err(format!(
                "input {:?} does not match {channels} scales and biases",
                x.shape()
            ));
        }
        let axes: Vec<usize> = (2..x.rank).map(|a| x.axis(a)).collect();
        let mut per_channel = [1; MAX_RANK];
        per_channel[x.axis(1)] = channels;
        let mean = x.tensor.clone().mean_dims(&axes);
        let centred = x.tensor - mean;
        let variance = centred.clone().powf_scalar(2.0).mean_dims(&axes);
        let normalised = centred / (variance + epsilon).sqrt();
        one(Float {
            tensor: normalised * scale.reshape(per_channel) + bias.reshape(per_channel),
            rank: x.rank,
        })
    })
}

/// Einsum through Burn's `Tensor::einsum` (left-to-right contractions, diagonals, ellipsis
/// broadcasting), with the equation parsed when the model loads and the operands' ranks checked
/// before it runs (Burn panics on a mismatch).
pub fn einsum(node: &Node) -> Result<Kernel, String> {
    let text = node!(node, Einsum).config.equation.clone();
    let equation = burn_einsum::parse(&text).map_err(|e| format!("Einsum equation `{text}`: {e}"))?;
    kernel(move |mut inputs, device| {
        let count = equation.inputs().len();
        if inputs.len() != count {
            return Err(format!("Einsum `{text}` takes {count} operands, got {}", inputs.len()));
        }
        let named = |labels: &[u8]| labels.iter().filter(|&&l| l != burn_einsum::ELLIPSIS).count();
        let mut ellipsis = 0;
        let mut operands = Vec::with_capacity(count);
        for (index, labels) in equation.inputs().iter().enumerate() {
            let x = float(&mut inputs, index, device)?;
            let fixed = named(labels);
            let fits = if labels.contains(&burn_einsum::ELLIPSIS) {
                ellipsis = ellipsis.max(x.rank.saturating_sub(fixed));
                x.rank >= fixed
            } else {
                x.rank == fixed
            };
            if !fits {
                return Err(format!(
                    "Einsum `{text}`: operand {index} has rank {}, its subscript {fixed} labels",
                    x.rank
                ));
            }
            operands.push(einsum_operand(x)?);
        }
        let output = equation.output();
        let rank = named(output)
            + if output.contains(&burn_einsum::ELLIPSIS) {
                ellipsis
            } else {
                0
            };
        macro_rules! contract {
            ($rank:literal) => {
                Float::new(Tensor::<$rank>::einsum(&text, operands))
            };
        }
        let result = match rank {
            // Burn's scalars are [1].
            0 => {
                let scalar = Tensor::<1>::einsum(&text, operands);
                Float {
                    tensor: scalar.reshape([1; MAX_RANK]),
                    rank: 0,
                }
            }
            1 => contract!(1),
            2 => contract!(2),
            3 => contract!(3),
            4 => contract!(4),
            5 => contract!(5),
            6 => contract!(6),
            _ => return Err(format!("Einsum `{text}` to rank {rank}")),
        };
        one(result)
    })
}

/// A float of any rank as an operand of `Tensor::einsum` (rank 0 as Burn's `[1]`).
fn einsum_operand(x: Float) -> Result<EinsumOperand, String> {
    Ok(match x.rank {
        0 | 1 => {
            let length = x.shape().iter().product::<usize>().max(1);
            x.tensor.reshape([length]).into()
        }
        2 => x.to_rank::<2>()?.into(),
        3 => x.to_rank::<3>()?.into(),
        4 => x.to_rank::<4>()?.into(),
        5 => x.to_rank::<5>()?.into(),
        _ => x.to_rank::<6>()?.into(),
    })
}

/// GroupNormalization: the channels of each image in `num_groups` groups, each group normalised
/// over its channels and positions, then scaled and shifted per channel (opset 21; opset 18's
/// per-group scale and bias, of `num_groups` values, are spread over each group's channels).
pub fn group_norm(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, GroupNormalization).config.clone();
    let (groups, epsilon) = (config.num_groups, config.epsilon);
    if groups == 0 {
        return Err("GroupNormalization with 0 groups".into());
    }
    kernel(move |mut inputs, device| {
        let (x, scale, bias) = normalisation_operands(&mut inputs, device, "GroupNormalization")?;
        let shape = x.shape();
        let (batch, channels) = (shape[0], shape[1]);
        if !channels.is_multiple_of(groups) {
            return Err(format!("{channels} channels in {groups} groups"));
        }
        let per_group = channels / groups;
        let spread = |values: Tensor<1>, what: &str| -> Result<Tensor<1>, String> {
            match values.dims()[0] {
                n if n == channels => Ok(values),
                n if n == groups => Ok(values.reshape([groups, 1]).repeat_dim(1, per_group).reshape([channels])),
                n => Err(format!("{n} {what} for {channels} channels in {groups} groups")),
            }
        };
        let (scale, bias) = (spread(scale, "scales")?, spread(bias, "biases")?);
        let rest: usize = shape[2..].iter().product();
        let grouped = x.tensor.reshape([batch, groups, per_group * rest]);
        let mean = grouped.clone().mean_dim(2);
        let centred = grouped - mean;
        let variance = centred.clone().powf_scalar(2.0).mean_dim(2);
        let normalised = (centred / (variance + epsilon).sqrt()).reshape([batch, channels, rest]);
        let output = normalised * scale.reshape([1, channels, 1]) + bias.reshape([1, channels, 1]);
        let mut padded_shape = [1; MAX_RANK];
        padded_shape[MAX_RANK - x.rank..].copy_from_slice(&shape);
        one(Float {
            tensor: output.reshape(padded_shape),
            rank: x.rank,
        })
    })
}

/// DepthToSpace: blocks of channels become `block × block` pixels (DCR or CRD order).
pub fn depth_to_space(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, DepthToSpace).config.clone();
    let block = config.block_size;
    if block == 0 {
        return Err("DepthToSpace with block size 0".into());
    }
    let column_first = config.mode == onnx_ir::node::depth_to_space::DepthToSpaceMode::Crd;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
        let [n, c, h, w] = x.dims();
        if !c.is_multiple_of(block * block) {
            return Err(format!("{c} channels are not a multiple of {block}²"));
        }
        let depth = c / (block * block);
        let grouped: Tensor<6> = if column_first {
            x.reshape([n, depth, block, block, h, w]).permute([0, 1, 4, 2, 5, 3])
        } else {
            x.reshape([n, block, block, depth, h, w]).permute([0, 3, 4, 1, 5, 2])
        };
        one(Float::new(grouped.reshape([n, depth, h * block, w * block])))
    })
}

/// SpaceToDepth: `block × block` pixels become channels, block-major (`DCR`, the only order
/// before opset 25 and what onnx-ir compiles).
pub fn space_to_depth(node: &Node) -> Result<Kernel, String> {
    space_to_depth_kernel(node!(node, SpaceToDepth).config.block_size, false)
}

/// SpaceToDepth with opset 25's `mode` (onnx-ir 0.22 ignores it; `ember_onnx::legalize` hands
/// the node over): `DCR` block-major, `CRD` channel-major.
pub fn space_to_depth_legalized(node: &onnx_ir::CustomNode) -> Result<Kernel, String> {
    let block = node
        .attrs
        .get_i64("blocksize")
        .ok_or("SpaceToDepth without blocksize")?;
    let block = usize::try_from(block).map_err(|_| format!("SpaceToDepth with block size {block}"))?;
    let channel_major = match node.attrs.get_string("mode").unwrap_or("DCR") {
        "DCR" => false,
        "CRD" => true,
        other => return Err(format!("unknown SpaceToDepth mode `{other}`")),
    };
    space_to_depth_kernel(block, channel_major)
}

fn space_to_depth_kernel(block: usize, channel_major: bool) -> Result<Kernel, String> {
    if block == 0 {
        return Err("SpaceToDepth with block size 0".into());
    }
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?.to_rank::<4>()?;
        let [n, c, h, w] = x.dims();
        if !h.is_multiple_of(block) || !w.is_multiple_of(block) {
            return Err(format!("{h}×{w} is not a multiple of the block {block}"));
        }
        let blocks: Tensor<6> = x.reshape([n, c, h / block, block, w / block, block]);
        let blocks = if channel_major {
            blocks.permute([0, 1, 3, 5, 2, 4])
        } else {
            blocks.permute([0, 3, 5, 1, 2, 4])
        };
        one(Float::new(blocks.reshape([n, c * block * block, h / block, w / block])))
    })
}
