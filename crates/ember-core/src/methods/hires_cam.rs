use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, channel_sum};

/// HiResCAM: gradients multiply the activations element by element, without spatial averaging.
///
/// map `= Σ_k ∂y^c/∂A^k ⊙ A^k`. Unlike Grad-CAM it is guaranteed to show the locations the model
/// used (for a flatten → linear head, its sum over pixels is `y^c − b_c`).
///
/// Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
/// neural networks", arXiv:2011.08891, 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct HiResCam;

impl CamMethod for HiResCam {
    fn name(&self) -> &'static str {
        "hirescam"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        channel_sum(gradients * activations)
    }
}
