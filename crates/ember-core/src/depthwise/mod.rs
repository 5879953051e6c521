//! Depthwise convolution whose input gradient is a depthwise convolution too.
//!
//! Why: Burn 0.22 differentiates `conv2d` with respect to its input through `conv_transpose2d`,
//! which flex runs for grouped convolutions as a scalar loop; on MobileNetV2 that loop was 13 %
//! of a Grad-CAM at `features[1]` (perf, flex, 1 thread), for a seventh of the network's
//! arithmetic. A depthwise convolution (`groups == channels in == channels out`) has a cheaper
//! input gradient: `∂L/∂x[i] = Σ ∂L/∂y[o] · w[k]` over `o·s + k − p = i` — the output gradient
//! spread out by the stride (zeros between its values), framed by `k − 1 − p` zeros and
//! convolved with the kernels turned by 180°, a depthwise convolution. On flex both that and
//! the forward pass run Ember's depthwise kernel ([`forward`]: sums kept in registers, strided
//! rows split by column phase: 0.47× flex's time over MobileNetV2's depthwise layers in its
//! first version, and framing without zero fills then took those layers and the stem from 8.6
//! to 5.3 ms single-threaded); the kernel and bias gradients are Burn's own; other backends (ndarray, the CubeCL backend
//! behind wgpu) keep Burn's convolution and input gradient; tests compare the two.
//!
//! Pointwise convolutions (1×1, stride 1, no padding, one group) take the same custom op on
//! flex: their input gradient is `Wᵀ · ∂L/∂y` per image, one matrix product, where Burn's
//! transposed convolution scatters through a scalar loop. (Their forward pass as a matrix
//! product too was slower than flex's convolution, 28–30 against 24–25 ms for MobileNetV2 at
//! batch 1, and stays Burn's.)

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

mod forward;

/// The backends with Ember's depthwise convolution.
#[backend_extension(Flex: cfg(all()), NdArray: cfg(feature = "ndarray"), Cube: cfg(feature = "wgpu"), Autodiff)]
pub trait DepthwiseConvBackend: Backend {
    /// Burn's `conv2d(x, weight, bias, options)` (flex: Ember's kernel where it applies).
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options)
    }

    /// The gradient of `conv2d(x, weight, ·, options)` with respect to `x` (whose shape is all
    /// that is read of it).
    fn depthwise_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }
}

#[cfg(feature = "ndarray")]
impl DepthwiseConvBackend for burn::backend::NdArray {}

#[cfg(feature = "wgpu")]
impl DepthwiseConvBackend for burn::backend::Cube {}

impl DepthwiseConvBackend for Flex {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        forward::grouped_conv2d(&x, &weight, Some(&bias), &options)
            .unwrap_or_else(|| Self::conv2d(x, weight, Some(bias), options))
    }

    fn depthwise_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let dims = |t: &FlexTensor| -> [usize; 4] { t.shape().dims() };
        let (input, kernel, output) = (dims(&x), dims(&weight), dims(&grad));
        let [_, channels, height, width] = input;
        let [out_channels, per_group, kh, kw] = kernel;
        let fits = |k: usize, axis: usize| {
            let (begin, end) = options.padding[axis];
            begin < k && end < k
        };
        let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32 && grad.dtype() == DType::F32;
        if is_pointwise(kernel, &options) && f32s && output[..2] == [input[0], out_channels] {
            // `∂L/∂x = Wᵀ · ∂L/∂y` per image: one matrix product, where Burn's transposed
            // convolution scatters through a scalar loop.
            let [batch, _, rows, columns] = output;
            let transposed =
                Self::float_swap_dims(Self::float_reshape(weight, [1, out_channels, channels].into()), 1, 2);
            let grad = Self::float_reshape(grad, [batch, out_channels, rows * columns].into());
            let product = Self::float_matmul(transposed, grad);
            return Self::float_reshape(product, [batch, channels, height, width].into());
        }
        if !is_depthwise(channels, [out_channels, per_group], options.groups)
            || options.dilation != [1, 1]
            || !fits(kh, 0)
            || !fits(kw, 1)
            || x.dtype() != DType::F32
            || weight.dtype() != DType::F32
            || grad.dtype() != DType::F32
            || output[..2] != input[..2]
        {
            return Self::conv2d_x_backward(x, weight, grad, options);
        }
        let flipped = flipped_kernels(&weight);
        // The gradient's first value lands `k − 1 − padding` in, then one every `stride`.
        let lead = [kh - 1 - options.padding[0].0, kw - 1 - options.padding[1].0];
        let framed = [height + kh - 1, width + kw - 1];
        if options.stride == [1, 1] {
            let trail = |axis: usize| framed[axis] - lead[axis] - output[2 + axis];
            let padding = [(lead[0], trail(0)), (lead[1], trail(1))];
            let options = ConvOptions::new_with_padding([1, 1], padding, [1, 1], channels);
            return forward::grouped_conv2d(&grad, &flipped, None, &options)
                .unwrap_or_else(|| Self::conv2d(grad, flipped, None, options));
        }
        let spread = spread_out(&grad, output, framed, lead, options.stride);
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], channels);
        forward::grouped_conv2d(&spread, &flipped, None, &options)
            .unwrap_or_else(|| Self::conv2d(spread, flipped, None, options))
    }
}

/// Whether a convolution with kernels of shape `kernel` is pointwise: 1×1, stride 1, no
/// padding, one group (MobileNet's and ResNet's channel mixers).
fn is_pointwise(kernel: [usize; 4], options: &ConvOptions<2>) -> bool {
    kernel[2..] == [1, 1] && options.stride == [1, 1] && options.padding == [(0, 0), (0, 0)] && options.groups == 1
}

/// Whether a convolution of `channels` input channels with `[out channels, channels per group]`
/// kernels in `groups` groups is depthwise: one input and one output channel per group.
fn is_depthwise(channels: usize, [out_channels, per_group]: [usize; 2], groups: usize) -> bool {
    groups == channels && out_channels == channels && per_group == 1
}

/// Each `[1, kh, kw]` kernel turned by 180°.
fn flipped_kernels(weight: &FlexTensor) -> FlexTensor {
    let values = weight
        .to_contiguous()
        .into_data()
        .into_vec::<f32>()
        .expect("checked f32");
    let [channels, _, kh, kw]: [usize; 4] = weight.shape().dims();
    let size = kh * kw;
    let flipped: Vec<f32> = values
        .chunks(size)
        .flat_map(|kernel| kernel.iter().rev().copied())
        .collect();
    FlexTensor::from_data(TensorData::new(flipped, [channels, 1, kh, kw]))
}

/// The gradient `[n, c, oh, ow]` written into zeros `[n, c, framed]` at `lead + o · stride`.
fn spread_out(
    grad: &FlexTensor,
    [n, c, oh, ow]: [usize; 4],
    framed: [usize; 2],
    lead: [usize; 2],
    stride: [usize; 2],
) -> FlexTensor {
    let grad = grad.to_contiguous();
    let values = grad.as_slice::<f32>().expect("contiguous f32");
    let plane = framed[0] * framed[1];
    let mut out = vec![0.0f32; n * c * plane];
    out.par_chunks_mut(plane)
        .zip(values.par_chunks(oh * ow))
        .for_each(|(target, source)| {
            for (row, line) in source.chunks(ow).enumerate() {
                let start = (lead[0] + row * stride[0]) * framed[1] + lead[1];
                for (column, &value) in line.iter().enumerate() {
                    target[start + column * stride[1]] = value;
                }
            }
        });
    FlexTensor::from_data(TensorData::new(out, [n, c, framed[0], framed[1]]))
}

impl<B: Backend + DepthwiseConvBackend, C: CheckpointStrategy> DepthwiseConvBackend for Autodiff<B, C> {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DepthwiseConv;

        impl<B: Backend + DepthwiseConvBackend> Backward<B, 3> for DepthwiseConv {
            /// The input, the kernels, the biases and the options.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, bias, options) = ops.state;
                if let Some(node) = node_weight {
                    let weight_grad =
                        B::conv2d_weight_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
                    grads.register::<B>(node.id, weight_grad);
                }
                if let Some(node) = node_bias {
                    grads.register::<B>(node.id, B::conv2d_bias_backward(x.clone(), bias, grad.clone()));
                }
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, B::depthwise_conv2d_x_backward(x, weight, grad, options));
                }
            }
        }

        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (Self::inner(x), Self::inner(weight), Self::inner(bias));
        match DepthwiseConv.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::depthwise_conv2d(x.clone(), weight.clone(), bias.clone(), options.clone());
                prep.finish((x, weight, bias, options), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv2d(x, weight, bias, options)),
        }
    }
}

/// `conv2d(x, weight, bias, options)`: on flex, convolutions with few channels per group run
/// Ember's forward kernel and depthwise and pointwise ones are differentiated with respect to
/// `x` as the module documentation says; elsewhere, and for everything else, Burn's `conv2d`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    let [_, channels, ..] = x.dims();
    let [out_channels, per_group, ..] = weight.dims();
    let ember_gradient =
        is_depthwise(channels, [out_channels, per_group], options.groups) || is_pointwise(weight.dims(), &options);
    // Few channels per group (depthwise layers, a network's first layer) take Ember's forward
    // kernel on flex, with or without autodiff.
    let ember_forward = per_group <= forward::MAX_CHANNELS_PER_GROUP;
    if !(ember_forward || ember_gradient && x.is_autodiff()) {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([out_channels], &weight.device()));
    Tensor::from_dispatch(<Dispatch as DepthwiseConvBackend>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
    ))
}

/// A Burn `Conv2d` module applied through [`conv2d`]: its `forward`, with the depthwise input
/// gradient. Build-time ONNX models call it for every convolution.
pub fn conv2d_layer(layer: &burn::nn::conv::Conv2d, input: Tensor<4>) -> Tensor<4> {
    use burn::nn::PaddingConfig2d;
    let padding = match layer.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        // Burn computes "same" padding from the input size; its own forward pass does that.
        PaddingConfig2d::Same => return layer.forward(input),
    };
    let options = ConvOptions::new_with_padding(layer.stride, padding, layer.dilation, layer.groups);
    conv2d(
        input,
        layer.weight.val(),
        layer.bias.as_ref().map(|bias| bias.val()),
        options,
    )
}
