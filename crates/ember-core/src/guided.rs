//! Guided Backpropagation's ReLU: a ReLU on the forward pass whose backward pass lets through
//! only positive gradients, and only where the input was positive.
//!
//! `∂L/∂x = [x > 0] · max(∂L/∂y, 0)` (Springenberg et al., "Striving for Simplicity: The All
//! Convolutional Net", ICLR 2015 workshop) — pytorch-grad-cam's `GuidedBackpropReLU`. Burn has no
//! such op, so it is a custom autodiff operation through Burn's backend extensions: the forward
//! pass is every backend's own `relu`, the backward pass `relu_backward(y, relu(g))`, both
//! built from ops every backend has (flex, ndarray, and the CubeCL backend behind wgpu).
//!
//! Models call [`relu`] where they apply a ReLU: it is Burn's ReLU, except while a guided pass
//! runs on the current thread ([`crate::Explainer::guided_backprop`]). Run-time ONNX models do
//! this for every `Relu` node, build-time ONNX models for every generated ReLU; a native Burn
//! module calls `ember_cam::relu` (or holds an [`crate::Relu`]) where it would call Burn's.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::module::Module;
use burn::tensor::Tensor;

use crate::tap::guided_relu_requested;

/// The backends that have the guided ReLU.
#[backend_extension(Flex: cfg(all()), NdArray: cfg(feature = "ndarray"), Cube: cfg(feature = "wgpu"), Autodiff)]
pub trait GuidedReluBackend: Backend {
    /// Guided Backpropagation's ReLU; without autodiff, the ReLU.
    fn guided_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }
}

impl GuidedReluBackend for Flex {}

#[cfg(feature = "ndarray")]
impl GuidedReluBackend for burn::backend::NdArray {}

#[cfg(feature = "wgpu")]
impl GuidedReluBackend for burn::backend::Cube {}

impl<B: Backend + GuidedReluBackend, C: CheckpointStrategy> GuidedReluBackend for Autodiff<B, C> {
    fn guided_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GuidedRelu;

        impl<B: Backend> Backward<B, 1> for GuidedRelu {
            /// The forward output: positive exactly where the input was.
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let output = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::relu_backward(output, B::relu(grad))
                });
            }
        }

        let output = B::relu(Self::inner(x.clone()));
        match GuidedRelu.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(output.clone(), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// The ReLU of models that Ember explains: Burn's ReLU, or Guided Backpropagation's while a
/// guided pass runs on this thread (see the module documentation).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if guided_relu_requested() {
        Tensor::from_dispatch(<Dispatch as GuidedReluBackend>::guided_relu(x.into_dispatch()))
    } else {
        crate::activation::fast_relu(x)
    }
}

/// A ReLU module for native Burn models: [`relu`] in a `#[derive(Module)]` struct, in place of
/// `burn::nn::Relu`, so that Guided Backpropagation can see it.
#[derive(Module, Debug, Default)]
pub struct Relu;

impl Relu {
    /// A ReLU.
    pub fn new() -> Self {
        Self
    }

    /// [`relu`].
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        relu(x)
    }
}
