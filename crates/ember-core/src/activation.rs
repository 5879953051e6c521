//! ReLU and clamp (ReLU6, ONNX `Clip`, hard sigmoid) with kernels of their own on flex, and GELU
//! with its exact gradient on every backend.
//!
//! Why: Burn 0.22's flex backend applies `relu` and `clamp` through a generic element-wise
//! closure that neither vectorises nor runs in parallel, and `clamp` on an autodiff tensor
//! becomes two comparisons, two `mask_fill`s and two more masked fills on the way back.
//! Measured on MobileNetV2 (perf, flex, 1 thread): ReLU6 was 23 % of a forward pass, and 28 %
//! of a Grad-CAM at `features[1]` — more than its depthwise convolutions. Here each is one pass
//! over contiguous memory, in place when the tensor is not shared, split over rayon's threads
//! when it is large; on autodiff each is one custom operation whose backward pass is one more.
//!
//! The values are Burn's exactly: `relu(x) = x` where `x > 0` or `x` is NaN, else 0;
//! `clamp(x, lo, hi) = min(max(x, lo), hi)` with NaN kept; the gradient of ReLU passes where the
//! output is positive or NaN (Burn's `relu_backward`), that of clamp where `lo ≤ x ≤ hi` or
//! `x` is NaN (Burn's `clamp_min`/`clamp_max` through `mask_fill`). Other backends (ndarray,
//! the CubeCL backend behind wgpu) run Burn's own operations, so every backend gives the same
//! numbers; tests compare them.
//!
//! GELU: Burn 0.22's default `gelu_backward`, which ndarray and the CubeCL backends use, is the
//! derivative of GELU's *tanh approximation*, while their forward pass is the exact
//! `x·Φ(x)` (erf); only flex overrides it with the exact derivative. The gradient through a ViT's
//! or ConvNeXt's MLP was off by up to ~1e-3 relative on those backends (the zoo's RMSNorm ViT:
//! Grad-CAM 3.1e-4 from pytorch-grad-cam on ndarray and wgpu, 1.0e-6 on flex). [`gelu`] keeps
//! Burn's forward and differentiates it exactly: `Φ(x) + x·φ(x)`.

use burn::backend::Autodiff;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::{
    AutodiffBackend, Backend, Dispatch, Flex, backend_extension, get_or_init_device_settings, tensor::FloatTensor,
};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// The backends with Ember's ReLU and clamp.
#[backend_extension(Flex: cfg(all()), NdArray: cfg(feature = "ndarray"), Cube: cfg(feature = "wgpu"), Autodiff)]
pub trait ActivationBackend: Backend {
    /// `relu(x)`.
    fn fast_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }

    /// The gradient through ReLU: `grad` where `output > 0` or is NaN, else 0.
    fn fast_relu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu_backward(output, grad)
    }

    /// `min(max(x, lo), hi)` (ONNX `Clip`: `hi` everywhere when `lo > hi`); an infinite bound is
    /// no bound.
    fn fast_clamp(x: FloatTensor<Self>, lo: f64, hi: f64) -> FloatTensor<Self> {
        clamp_by_steps::<Self>(x, lo, hi)
    }

    /// The gradient through `clamp(x, lo, hi)`: `grad` where `lo ≤ x ≤ hi` or `x` is NaN, else 0.
    fn fast_clamp_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, lo: f64, hi: f64) -> FloatTensor<Self> {
        clamp_backward_by_masks::<Self>(x, grad, lo, hi)
    }

    /// GELU, `x·Φ(x)` (Burn's `gelu`).
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// The exact gradient through GELU: `grad · (Φ(x) + x·φ(x))`.
    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_backward_by_steps::<Self>(x, grad)
    }
}

/// `grad · (Φ(x) + x·φ(x))` from Burn's operations: Φ(x) = (1 + erf(x/√2)) / 2, φ(x) =
/// e^(−x²/2) / √(2π).
fn gelu_backward_by_steps<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let cdf = B::float_mul_scalar(
        B::float_add_scalar(
            B::float_erf(B::float_mul_scalar(x.clone(), std::f64::consts::FRAC_1_SQRT_2.into())),
            1.0.into(),
        ),
        0.5.into(),
    );
    let square = B::float_mul(x.clone(), x.clone());
    let pdf = B::float_mul_scalar(
        B::float_exp(B::float_mul_scalar(square, (-0.5).into())),
        (1.0 / (2.0 * std::f64::consts::PI).sqrt()).into(),
    );
    B::float_mul(grad, B::float_add(cdf, B::float_mul(x, pdf)))
}

/// `min(max(x, lo), hi)` from Burn's operations, one bound at a time (Burn's `clamp` panics on
/// crossed bounds on some backends).
fn clamp_by_steps<B: Backend>(x: FloatTensor<B>, lo: f64, hi: f64) -> FloatTensor<B> {
    let x = if lo.is_infinite() && lo < 0.0 {
        x
    } else {
        B::float_clamp_min(x, lo.into())
    };
    if hi.is_infinite() && hi > 0.0 {
        x
    } else {
        B::float_clamp_max(x, hi.into())
    }
}

/// The gradient through `clamp(x, lo, hi)` from Burn's operations: `grad` with the positions where
/// `x < lo` or `x > hi` set to 0.
fn clamp_backward_by_masks<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, lo: f64, hi: f64) -> FloatTensor<B> {
    let bool_dtype = get_or_init_device_settings::<B>(&x.device()).bool_dtype;
    let below = B::float_lower_elem(x.clone(), lo.into(), bool_dtype);
    let above = B::float_greater_elem(x, hi.into(), bool_dtype);
    B::float_mask_fill(grad, B::bool_or(below, above), 0.0.into())
}

#[cfg(feature = "ndarray")]
impl ActivationBackend for burn::backend::NdArray {}

#[cfg(feature = "wgpu")]
impl ActivationBackend for burn::backend::Cube {}

/// Tensors below this many elements are not worth handing to other threads.
const PARALLEL_ELEMENTS: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK_ELEMENTS: usize = 1 << 14;

/// The contiguous `f32` values of a flex tensor, when it has them without a copy.
fn f32_values(tensor: &FlexTensor) -> Option<&[f32]> {
    if tensor.dtype() == DType::F32 {
        tensor.as_slice::<f32>()
    } else {
        None
    }
}

/// Whether a flex tensor's buffer is exactly its contiguous `f32` values and nobody else holds it,
/// so that it can be overwritten.
fn writable_in_place(tensor: &FlexTensor) -> bool {
    let elements = tensor.shape().num_elements();
    tensor.dtype() == DType::F32
        && tensor.is_unique()
        && tensor.is_contiguous()
        && tensor.layout().start_offset() == 0
        && tensor.bytes().len() == elements * size_of::<f32>()
}

/// `op` on every value of a contiguous `f32` flex tensor (in place when possible); other
/// tensors go to `burn`, Burn's own operation.
fn map_f32(
    mut tensor: FlexTensor,
    op: impl Fn(f32) -> f32 + Sync + Send,
    burn: impl FnOnce(FlexTensor) -> FlexTensor,
) -> FlexTensor {
    if writable_in_place(&tensor) {
        let values = tensor.try_storage_mut::<f32>().expect("checked unique");
        if values.len() >= PARALLEL_ELEMENTS {
            values
                .par_chunks_mut(CHUNK_ELEMENTS)
                .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = op(*v)));
        } else {
            values.iter_mut().for_each(|v| *v = op(*v));
        }
        return tensor;
    }
    let Some(values) = f32_values(&tensor) else {
        return burn(tensor);
    };
    let out = if values.len() >= PARALLEL_ELEMENTS {
        let mut out = Vec::new();
        values
            .par_iter()
            .with_min_len(CHUNK_ELEMENTS)
            .map(|&v| op(v))
            .collect_into_vec(&mut out);
        out
    } else {
        values.iter().map(|&v| op(v)).collect()
    };
    FlexTensor::from_data(TensorData::new(out, tensor.shape()))
}

/// `op(mask value, gradient)` for two contiguous `f32` flex tensors of one shape, written over
/// the gradient when nobody else holds it; other tensors go to `burn`, Burn's own operation.
fn zip_f32(
    mask: FlexTensor,
    mut grad: FlexTensor,
    op: impl Fn(f32, f32) -> f32 + Sync + Send,
    burn: impl FnOnce(FlexTensor, FlexTensor) -> FlexTensor,
) -> FlexTensor {
    let Some(by) = f32_values(&mask).filter(|_| mask.shape() == grad.shape()) else {
        return burn(mask, grad);
    };
    if writable_in_place(&grad) {
        let out = grad.try_storage_mut::<f32>().expect("checked unique");
        let zip = |(out, by): (&mut [f32], &[f32])| out.iter_mut().zip(by).for_each(|(g, &m)| *g = op(m, *g));
        if out.len() >= PARALLEL_ELEMENTS {
            out.par_chunks_mut(CHUNK_ELEMENTS)
                .zip(by.par_chunks(CHUNK_ELEMENTS))
                .for_each(zip);
        } else {
            zip((out, by));
        }
        return grad;
    }
    let Some(values) = f32_values(&grad) else {
        return burn(mask, grad);
    };
    let out = if values.len() >= PARALLEL_ELEMENTS {
        let mut out = Vec::new();
        by.par_iter()
            .zip(values)
            .with_min_len(CHUNK_ELEMENTS)
            .map(|(&m, &g)| op(m, g))
            .collect_into_vec(&mut out);
        out
    } else {
        by.iter().zip(values).map(|(&m, &g)| op(m, g)).collect()
    };
    FlexTensor::from_data(TensorData::new(out, grad.shape()))
}

fn relu_value(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

fn clamp_value(x: f32, lo: f32, hi: f32) -> f32 {
    // Compare-and-select in this order keeps NaN (both comparisons are false) and vectorises.
    let x = if x < lo { lo } else { x };
    if x > hi { hi } else { x }
}

impl ActivationBackend for Flex {
    fn fast_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        map_f32(x, relu_value, Self::relu)
    }

    fn fast_relu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        zip_f32(
            output,
            grad,
            |y, g| if y > 0.0 || y.is_nan() { g } else { 0.0 },
            Self::relu_backward,
        )
    }

    fn fast_clamp(x: FloatTensor<Self>, lo: f64, hi: f64) -> FloatTensor<Self> {
        if lo.is_nan() || hi.is_nan() {
            return clamp_by_steps::<Self>(x, lo, hi);
        }
        let (lo32, hi32) = (lo as f32, hi as f32);
        map_f32(x, |v| clamp_value(v, lo32, hi32), |x| clamp_by_steps::<Self>(x, lo, hi))
    }

    fn fast_clamp_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, lo: f64, hi: f64) -> FloatTensor<Self> {
        let (lo32, hi32) = (lo as f32, hi as f32);
        let pass = move |x: f32, g: f32| if x < lo32 || x > hi32 { 0.0 } else { g };
        zip_f32(x, grad, pass, |x, grad| {
            clamp_backward_by_masks::<Self>(x, grad, lo, hi)
        })
    }

    /// Flex's own `gelu_backward` is already the exact derivative (one pass).
    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
}

impl<B: Backend + ActivationBackend, C: CheckpointStrategy> ActivationBackend for Autodiff<B, C> {
    fn fast_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ReluOp;

        impl<B: Backend + ActivationBackend> Backward<B, 1> for ReluOp {
            /// The forward output.
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let output = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::fast_relu_backward(output, grad));
            }
        }

        match ReluOp.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::fast_relu(Self::inner(x));
                prep.finish(output.clone(), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_relu(Self::inner(x))),
        }
    }

    fn fast_clamp(x: FloatTensor<Self>, lo: f64, hi: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ClampOp {
            lo: f64,
            hi: f64,
        }

        impl<B: Backend + ActivationBackend> Backward<B, 1> for ClampOp {
            /// The forward input: at a bound, only the input says whether the gradient passes.
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let input = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::fast_clamp_backward(input, grad, self.lo, self.hi)
                });
            }
        }

        match (ClampOp { lo, hi }).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = Self::inner(x);
                prep.finish(input.clone(), B::fast_clamp(input, lo, hi))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_clamp(Self::inner(x), lo, hi)),
        }
    }

    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluOp;

        impl<B: Backend + ActivationBackend> Backward<B, 1> for GeluOp {
            /// The forward input.
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let input = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::exact_gelu_backward(input, grad));
            }
        }

        match GeluOp.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = Self::inner(x);
                prep.finish(input.clone(), B::exact_gelu(input))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::exact_gelu(Self::inner(x))),
        }
    }
}

/// Burn's ReLU, computed in one pass (see the module documentation). Models call
/// [`crate::relu`], which is this except during Guided Backpropagation.
pub fn fast_relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ActivationBackend>::fast_relu(x.into_dispatch()))
}

/// GELU, `x·Φ(x)` with `Φ` the normal CDF (Burn's `gelu` values), with its exact gradient on
/// every backend (see the module documentation).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ActivationBackend>::exact_gelu(x.into_dispatch()))
}

/// `x` clamped to `[lo, hi]` (an infinite bound is no bound): Burn's `clamp`, `clamp_min` or
/// `clamp_max`, computed in one pass (see the module documentation). ReLU6 is `clamp(x, 0, 6)`.
pub fn clamp<const D: usize>(x: Tensor<D>, lo: f64, hi: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ActivationBackend>::fast_clamp(x.into_dispatch(), lo, hi))
}
