use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, spatial_sum, weighted_channel_sum};

/// Numerical guard of the normalising sum, as in pytorch-grad-cam 1.5.7.
const EPSILON: f32 = 1e-7;

/// XGrad-CAM: gradients weighted by the normalised activations.
///
/// `α_k = Σ_{i,j} (A^k_ij / (Σ_{i,j} A^k_ij + ε)) · ∂y^c/∂A^k_ij`, map `= Σ_k α_k A^k`, ε = 1e-7.
///
/// Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
/// BMVC 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct XGradCam;

impl CamMethod for XGradCam {
    fn name(&self) -> &'static str {
        "xgradcam"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        let [batch, channels, _, _] = activations.dims();
        let channel_totals = spatial_sum(activations.clone())
            .add_scalar(EPSILON)
            .reshape([batch, channels, 1, 1]);
        let weights = spatial_sum(gradients * activations.clone() / channel_totals);
        weighted_channel_sum(weights, activations)
    }
}
