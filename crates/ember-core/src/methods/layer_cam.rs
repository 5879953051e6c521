use burn::tensor::Tensor;

use super::{CamMethod, MethodOutput, channel_sum};

/// LayerCAM: every activation weighted by its own positive gradient.
///
/// map `= Σ_k max(∂y^c/∂A^k, 0) ⊙ A^k`.
///
/// Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
/// IEEE Transactions on Image Processing 30, 2021.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerCam;

impl CamMethod for LayerCam {
    fn name(&self) -> &'static str {
        "layercam"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        channel_sum(gradients.clamp_min(0.0) * activations)
    }
}
