use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, channel_sum};

/// Grad-CAM element-wise: HiResCAM with a ReLU on every product before the channel sum.
///
/// map `= Σ_k max(∂y^c/∂A^k ⊙ A^k, 0)`.
///
/// Gildenblat et al., pytorch-grad-cam (`GradCAMElementWise`), 2021; a HiResCAM variant
/// (Draelos & Carin, arXiv:2011.08891).
#[derive(Debug, Clone, Copy, Default)]
pub struct GradCamElementWise;

impl CamMethod for GradCamElementWise {
    fn name(&self) -> &'static str {
        "gradcam-elementwise"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        channel_sum((gradients * activations).clamp_min(0.0))
    }
}
