use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, weighted_channel_sum};

/// Grad-CAM: channel weights are the spatially averaged gradients.
///
/// `α_k = 1/Z Σ_{i,j} ∂y^c/∂A^k_ij`, map `= Σ_k α_k A^k`.
///
/// Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
/// Localization", ICCV 2017.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradCam;

impl CamMethod for GradCam {
    fn name(&self) -> &'static str {
        "gradcam"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        let weights = gradients.mean_dims(&[2, 3]).flatten::<2>(1, 3);
        weighted_channel_sum(weights, activations)
    }
}
