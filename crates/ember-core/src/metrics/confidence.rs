//! The image multiplied by its map: how much of the score survives?
//!
//! pytorch-grad-cam 1.5.7's `CamMultImageConfidenceChange`: `Δ = y^c(X ⊙ M) − y^c(X)`, with the
//! map `M` broadcast over the channels of the (normalised) input; `DropInConfidence = max(−Δ, 0)`,
//! `IncreaseInConfidence = [Δ > 0]`. Grad-CAM++'s Average Drop is the relative drop
//! `max(0, y − o)/y` in percent, its Increase in Confidence the same indicator as
//! pytorch-grad-cam's (Chattopadhay et al., "Grad-CAM++", WACV 2018, section 5.1, defined on class
//! probabilities: use a softmax target).

use burn::tensor::Tensor;

use super::{Copies, check_maps, copy_scores, original_scores};
use crate::error::{CamError, Result};
use crate::model::CamModel;
use crate::target::Target;

/// Each image's score before and after multiplying it by its map.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfidenceChange {
    /// `y^c(X)` per image.
    pub original: Vec<f32>,
    /// `y^c(X ⊙ M)` per image.
    pub masked: Vec<f32>,
}

/// The scores of every image of `input` `[N, C, H, W]` before and after multiplying it by its map
/// (`maps` `[N, H, W]`), for the classes the target resolves on the unperturbed input.
pub fn confidence_change<M, T>(model: &M, input: &Tensor<4>, maps: &Tensor<3>, target: &T) -> Result<ConfidenceChange>
where
    M: CamModel + Sync + ?Sized,
    T: Target<M::Output> + Sync + ?Sized,
{
    check_maps(input, maps)?;
    let [batch, channels, height, width] = input.dims();
    let (original, classes) = original_scores(model, input, target)?;
    let masked_input = input.clone().inner() * maps.clone().inner().reshape([batch, 1, height, width]);
    let mut masked = Vec::with_capacity(batch);
    for (image, class) in classes.into_iter().enumerate() {
        let make = |_: std::ops::Range<usize>| Ok(masked_input.clone().narrow(0, image, 1));
        let copy = Copies {
            count: 1,
            dims: [channels, height, width],
            device: masked_input.device(),
            make: &make,
        };
        masked.extend(copy_scores(model, target, &copy, class, None)?);
    }
    Ok(ConfidenceChange { original, masked })
}

impl ConfidenceChange {
    /// `Δ = y^c(X ⊙ M) − y^c(X)` per image.
    pub fn differences(&self) -> Vec<f32> {
        self.masked.iter().zip(&self.original).map(|(m, o)| m - o).collect()
    }
}

/// pytorch-grad-cam's `DropInConfidence`: `max(−Δ, 0)` per image.
pub fn drop_in_confidence(change: &ConfidenceChange) -> Vec<f32> {
    change.differences().into_iter().map(|d| (-d).max(0.0)).collect()
}

/// pytorch-grad-cam's `IncreaseInConfidence` (and Grad-CAM++'s): `1` where `Δ > 0`, else `0`.
pub fn increase_in_confidence(change: &ConfidenceChange) -> Vec<f32> {
    change
        .differences()
        .into_iter()
        .map(|d| if d > 0.0 { 1.0 } else { 0.0 })
        .collect()
}

/// Grad-CAM++'s Average Drop per image, in percent: `100 · max(0, y − o)/y`. The score must be
/// positive (a probability): a logit can be negative, and the ratio then means nothing.
pub fn average_drop(change: &ConfidenceChange) -> Result<Vec<f32>> {
    change
        .original
        .iter()
        .zip(&change.masked)
        .enumerate()
        .map(|(image, (&y, &o))| {
            if y > 0.0 {
                Ok(100.0 * (y - o).max(0.0) / y)
            } else {
                Err(CamError::MetricInput(format!(
                    "Average Drop divides by the score, and image {image} scores {y}: score probabilities (a \
                     softmax target), not logits"
                )))
            }
        })
        .collect()
}
