use burn::tensor::Tensor;

use super::principal::principal_projection;
use super::{CamMethod, MethodOutput};

/// EigenCAM: the activations projected on their first principal component; no gradients, no
/// class (the map shows what the layer responds to most).
///
/// `map = (A − Ā) v₁`, with `A` the `h·w × K` matrix of the layer's channels and `v₁` its first
/// right singular vector (its sign fixed as pytorch-grad-cam's `get_2d_projection_with_sign_correction` does).
///
/// Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct EigenCam;

impl CamMethod for EigenCam {
    fn name(&self) -> &'static str {
        "eigencam"
    }

    fn uses_gradients(&self) -> bool {
        false
    }

    fn compute(&self, activations: Tensor<4>, _gradients: Tensor<4>) -> MethodOutput {
        MethodOutput {
            map: principal_projection(activations),
            channel_weights: None,
            terms: None,
        }
    }
}
