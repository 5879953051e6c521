use std::ops::Range;

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::{CamMethod, MethodOutput, Perturbation, PerturbationSite, measured_weights_map};
use crate::resize::resize_bilinear_aligned;

/// ScoreCAM: each channel is weighted by the class score of the image masked by that channel.
///
/// `M^k = norm(up(A^k))`, the channel upsampled to the input size (bilinear, aligned corners)
/// and min-max normalised (`(x − min)/(max − min + 10⁻⁸)`); `s_k = y^c(X ⊙ M^k)`;
/// `w = softmax(s)` over the channels; map `= Σ_k w_k A^k`. As pytorch-grad-cam 1.5.7; no
/// gradients. The whole model runs on every masked copy, in batches.
///
/// Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
/// Networks", CVPR Workshops 2020.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreCam;

/// Keeps a constant channel's mask finite (pytorch-grad-cam's value).
const RANGE_EPSILON: f32 = 1e-8;

impl CamMethod for ScoreCam {
    fn name(&self) -> &'static str {
        "scorecam"
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

impl Perturbation for ScoreCam {
    fn site(&self) -> PerturbationSite {
        PerturbationSite::Input
    }

    fn copies(&self, activations: &Tensor<4>) -> usize {
        activations.dims()[1]
    }

    fn altered(&self, activations: &Tensor<4>, input: &Tensor<4>, range: Range<usize>) -> Tensor<4> {
        let [_, _, height, width] = activations.dims();
        let [_, _, input_height, input_width] = input.dims();
        let copies = range.len();
        let channels = activations
            .clone()
            .narrow(1, range.start, copies)
            .reshape([copies, height, width]);
        let upsampled = resize_bilinear_aligned(channels, input_height, input_width);
        let largest = upsampled.clone().max_dim(2).max_dim(1);
        let smallest = upsampled.clone().min_dim(2).min_dim(1);
        let masks = (upsampled - smallest.clone()) / (largest - smallest + RANGE_EPSILON);
        input.clone() * masks.reshape([copies, 1, input_height, input_width])
    }

    fn weights(&self, _original: Tensor<1>, scores: Tensor<1>) -> Tensor<2> {
        let channels = scores.dims()[0];
        softmax(scores.reshape([1, channels]), 1)
    }
}
