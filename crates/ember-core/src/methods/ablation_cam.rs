use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use super::{CamMethod, MethodOutput, Perturbation, measured_weights_map};

/// AblationCAM: each channel is weighted by the relative drop of the class score when that
/// channel is ablated.
///
/// `w_k = (y^c − y^c_k) / y^c`, with `y^c_k` the score with channel `k` of the layer set to the
/// ablation value; map `= Σ_k w_k A^k`. The ablation value is 0 when the layer's smallest
/// activation is 0 (after a ReLU), as in pytorch-grad-cam 1.5.7; otherwise its smallest
/// activation minus 10⁷ (pytorch-grad-cam lowers that value by a further 10⁷ for every copy of
/// a batch, an artefact of its in-place loop that Ember does not repeat).
///
/// Only the part of the network after the layer runs on the ablated copies: the part before it
/// runs once per batch of copies on the one image (pytorch-grad-cam re-runs the whole network on
/// every copy).
///
/// Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
/// Gradient-free Localization", WACV 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct AblationCam;

/// Below the smallest activation, for layers that can be negative.
const ABLATION_OFFSET: f32 = 1e7;

impl CamMethod for AblationCam {
    fn name(&self) -> &'static str {
        "ablationcam"
    }

    fn uses_gradients(&self) -> bool {
        false
    }

    fn perturbation(&self) -> Option<&dyn Perturbation> {
        Some(self)
    }

    fn compute(&self, activations: Tensor<4>, weights: Tensor<4>) -> MethodOutput {
        measured_weights_map(activations, weights)
    }
}

impl Perturbation for AblationCam {
    fn copies(&self, activations: &Tensor<4>) -> usize {
        activations.dims()[1]
    }

    fn altered(&self, activations: &Tensor<4>, _input: &Tensor<4>, range: Range<usize>) -> Tensor<4> {
        let [_, channels, height, width] = activations.dims();
        let copies = range.len();
        // 0 where the smallest activation is 0, that minimum − 10⁷ otherwise; on the device.
        let smallest = activations.clone().min().reshape([1, 1, 1, 1]);
        let value = smallest.clone() - smallest.not_equal_elem(0.0).float() * ABLATION_OFFSET;
        // Copy i ablates channel range.start + i.
        let mut mask = vec![0.0f32; copies * channels];
        for (copy, channel) in range.enumerate() {
            mask[copy * channels + channel] = 1.0;
        }
        let device = activations.device();
        let mask = Tensor::<1>::from_data(TensorData::new(mask, [copies * channels]), &device)
            .reshape([copies, channels, 1, 1]);
        let copies_of = activations.clone().expand([copies, channels, height, width]);
        copies_of * (mask.clone().neg() + 1.0) + mask * value
    }

    fn weights(&self, original: Tensor<1>, scores: Tensor<1>) -> Tensor<2> {
        let channels = scores.dims()[0];
        ((original.clone() - scores) / original).reshape([1, channels])
    }
}
