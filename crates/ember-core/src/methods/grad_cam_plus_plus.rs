use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, spatial_sum, weighted_channel_sum};

/// Numerical guard of the denominator, as in pytorch-grad-cam 1.5.7.
const EPSILON: f32 = 1e-6;

/// Grad-CAM++: positive gradients weighted by higher-order coefficients.
///
/// With `g = ∂y^c/∂A^k_ij`: `a_ij = g² / (2g² + Σ_{i,j} A^k_ij · g³ + ε)` (0 where g = 0),
/// `α_k = Σ_{i,j} a_ij · max(g, 0)`, map `= Σ_k α_k A^k`, ε = 1e-6. As in pytorch-grad-cam, the
/// exponential of the score is not taken, which gives these closed forms for the raw score.
///
/// Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-Based Visual Explanations for Deep
/// Convolutional Networks", WACV 2018.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradCamPlusPlus;

impl CamMethod for GradCamPlusPlus {
    fn name(&self) -> &'static str {
        "gradcam++"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        let [batch, channels, _, _] = activations.dims();
        let squared = gradients.clone().square();
        let cubed = squared.clone() * gradients.clone();
        let channel_totals = spatial_sum(activations.clone()).reshape([batch, channels, 1, 1]);
        let denominator = squared.clone().mul_scalar(2.0) + cubed * channel_totals;
        let alpha = (squared / denominator.add_scalar(EPSILON)).mask_fill(gradients.clone().equal_elem(0.0), 0.0);
        let weights = spatial_sum(alpha * gradients.clamp_min(0.0));
        weighted_channel_sum(weights, activations)
    }
}
