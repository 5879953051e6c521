use burn::tensor::Tensor;

use super::principal::principal_projection;
use super::{CamMethod, MethodOutput};

/// EigenGradCAM: EigenCAM of the gradients times the activations, so the class matters.
///
/// `map = (G⊙A − mean) v₁` (pytorch-grad-cam's `EigenGradCAM`; the sign fixed as for EigenCAM).
///
/// After Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
/// IJCNN 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct EigenGradCam;

impl CamMethod for EigenGradCam {
    fn name(&self) -> &'static str {
        "eigengradcam"
    }

    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput {
        MethodOutput {
            map: principal_projection(gradients * activations),
            channel_weights: None,
            terms: None,
        }
    }
}
