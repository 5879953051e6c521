use burn::tensor::{Tensor, TensorData};

use super::{CamMethod, MethodOutput, weighted_channel_sum};

/// RandomCAM: channel weights drawn uniformly from [−1, 1) — a baseline that knows nothing about
/// the model, for faithfulness metrics to beat (pytorch-grad-cam's `RandomCAM`).
///
/// `w_k ~ U(−1, 1)`, map `= Σ_k w_k A^k`. The weights come from a seeded generator on the host
/// (SplitMix64) and are the same for every image of a batch, so a seed gives an image the same
/// map on every backend, in every run and at any batch position; no gradients.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomCam {
    /// The generator's seed.
    pub seed: u64,
}

impl CamMethod for RandomCam {
    fn name(&self) -> &'static str {
        "randomcam"
    }

    fn uses_gradients(&self) -> bool {
        false
    }

    fn compute(&self, activations: Tensor<4>, _gradients: Tensor<4>) -> MethodOutput {
        let [batch, channels, _, _] = activations.dims();
        let mut state = self.seed;
        let weights: Vec<f32> = (0..channels)
            .map(|_| {
                // SplitMix64, then the top 24 bits as a float in [0, 1).
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let weights = Tensor::<1>::from_data(TensorData::new(weights, [channels]), &activations.device())
            .reshape([1, channels])
            .expand([batch, channels]);
        weighted_channel_sum(weights, activations)
    }
}
