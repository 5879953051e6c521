//! Deletion and insertion: the score as the map's most relevant pixels are deleted (replaced by
//! a baseline) or inserted (into the baseline) first.
//!
//! torch-cam 0.5's `DeletionInsertionMetric` (Petsiuk et al., "RISE: Randomized Input Sampling
//! for Explanation of Black-box Models", BMVC 2018): positions are ranked by the map, highest
//! first (ties in position order); with `P` positions and `s = ⌈P / steps⌉`, the curves are
//! sampled after `0, s, 2s, …` and `P` positions, and each score is integrated against the
//! fraction of positions perturbed (trapezoids). Deletion starts from the image's own score and
//! ends at the all-baseline one; insertion the other way round. The mask is shared by the channels.

use burn::tensor::{Tensor, TensorData};

use super::{Copies, check_maps, scores_with_original};
use crate::error::{CamError, Result};
use crate::model::CamModel;
use crate::read::to_host;
use crate::target::Target;

/// What deleted pixels become, and what inserted pixels are inserted into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Baseline {
    /// Zeros (torch-cam's default): in a normalised input, the dataset's mean colour.
    #[default]
    Zeros,
    /// Each channel's mean over the image.
    Mean,
    /// The image blurred (Gaussian, σ = 5 pixels, 11 taps, edges repeated), as RISE's insertion.
    Blur,
}

/// Deletion and insertion curves (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionInsertion {
    /// The most intervals a curve is sampled in (torch-cam's default: 20).
    pub steps: usize,
    /// What deleted pixels become.
    pub baseline: Baseline,
    /// Perturbed copies run at once (default: on flex one at a time on every worker thread,
    /// elsewhere as many as 64 MiB hold; see `copy_scores`).
    pub batch: Option<usize>,
}

impl Default for DeletionInsertion {
    fn default() -> Self {
        Self {
            steps: 20,
            baseline: Baseline::Zeros,
            batch: None,
        }
    }
}

/// The curves of a batch of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// The fraction of positions perturbed at each sample of the curves.
    pub fractions: Vec<f32>,
    /// Per image, the score at each fraction, deleting the most relevant positions first.
    pub deletion: Vec<Vec<f32>>,
    /// Per image, the score at each fraction, inserting the most relevant positions first.
    pub insertion: Vec<Vec<f32>>,
    /// Per image, the area under the deletion curve.
    pub deletion_auc: Vec<f32>,
    /// Per image, the area under the insertion curve.
    pub insertion_auc: Vec<f32>,
}

/// Gaussian blur of the baseline: RISE's σ and kernel size.
const BLUR_SIGMA: f32 = 5.0;
const BLUR_RADIUS: usize = 5;

impl DeletionInsertion {
    /// The curves of every image of `input` `[N, C, H, W]` with its map (`maps` `[N, H, W]`),
    /// for the classes the target resolves on the unperturbed input.
    pub fn evaluate<M, T>(&self, model: &M, input: &Tensor<4>, maps: &Tensor<3>, target: &T) -> Result<Curves>
    where
        M: CamModel + Sync + ?Sized,
        T: Target<M::Output> + Sync + ?Sized,
    {
        if self.steps == 0 {
            return Err(CamError::MetricInput(
                "deletion and insertion need at least 1 step".into(),
            ));
        }
        check_maps(input, maps)?;
        let [batch, channels, height, width] = input.dims();
        let positions = height * width;
        let step = positions.div_ceil(self.steps);
        let counts: Vec<usize> = (0..positions).step_by(step).chain([positions]).collect();
        let fractions: Vec<f32> = counts.iter().map(|&c| c as f32 / positions as f32).collect();
        let map_values = to_host(maps)?;
        let device = input.device().inner();
        let mut curves = Curves {
            fractions: fractions.clone(),
            deletion: Vec::with_capacity(batch),
            insertion: Vec::with_capacity(batch),
            deletion_auc: Vec::with_capacity(batch),
            insertion_auc: Vec::with_capacity(batch),
        };
        for image in 0..batch {
            let ranks = ranks(&map_values[image * positions..(image + 1) * positions]);
            let x = input.clone().inner().narrow(0, image, 1);
            let (x_values, baseline_values) = (to_host(&x)?, to_host(&self.baseline(&x)?)?);
            // Copy 0: all baseline (deletion's last point, insertion's first); then, for every
            // interior point, the deleted and the inserted image.
            let interior = &counts[1..counts.len() - 1];
            let mut jobs: Vec<(bool, usize)> = vec![(false, positions)];
            jobs.extend(interior.iter().flat_map(|&count| [(false, count), (true, count)]));
            // A copy holds the image where `(rank < count) == inserting`, else the baseline.
            let make = |range: std::ops::Range<usize>| {
                let mut values = Vec::with_capacity(range.len() * channels * positions);
                for &(inserting, count) in &jobs[range.clone()] {
                    for (x_plane, baseline_plane) in x_values
                        .chunks_exact(positions)
                        .zip(baseline_values.chunks_exact(positions))
                    {
                        values.extend(ranks.iter().zip(x_plane.iter().zip(baseline_plane)).map(
                            |(&rank, (&image, &baseline))| {
                                if (rank < count) == inserting { image } else { baseline }
                            },
                        ));
                    }
                }
                Ok(
                    Tensor::<1>::from_data(TensorData::new(values, [range.len() * channels * positions]), &device)
                        .reshape([range.len(), channels, height, width]),
                )
            };
            let copies = Copies {
                count: jobs.len(),
                dims: [channels, height, width],
                device: device.clone(),
                make: &make,
            };
            let (original, scores) = scores_with_original(model, target, &x, &copies, self.batch)?;
            let points = counts.len();
            let mut deletion = vec![0.0f32; points];
            let mut insertion = vec![0.0f32; points];
            deletion[0] = original;
            insertion[points - 1] = original;
            deletion[points - 1] = scores[0];
            insertion[0] = scores[0];
            for (point, pair) in scores[1..].chunks(2).enumerate() {
                deletion[point + 1] = pair[0];
                insertion[point + 1] = pair[1];
            }
            curves.deletion_auc.push(trapezoid(&deletion, &fractions));
            curves.insertion_auc.push(trapezoid(&insertion, &fractions));
            curves.deletion.push(deletion);
            curves.insertion.push(insertion);
        }
        Ok(curves)
    }

    /// The baseline of one image `[1, C, H, W]`.
    fn baseline(&self, x: &Tensor<4>) -> Result<Tensor<4>> {
        let [_, channels, height, width] = x.dims();
        Ok(match self.baseline {
            Baseline::Zeros => x.zeros_like(),
            Baseline::Mean => x.clone().mean_dims(&[2, 3]).expand([1, channels, height, width]),
            Baseline::Blur => {
                let values = to_host(x)?;
                let blurred = blur(&values, channels, height, width);
                Tensor::<1>::from_data(TensorData::new(blurred, [values.len()]), &x.device())
                    .reshape([1, channels, height, width])
            }
        })
    }
}

/// Each position's rank by `map`, highest first; equal values keep their position order.
fn ranks(map: &[f32]) -> Vec<usize> {
    let order: Vec<usize> = match u32::try_from(map.len()) {
        // One integer per position, `[value, highest first | position]`, sorted as integers
        // (comparing through the map made a 224×224 image's preparation 3.2 ms, a sixth of a
        // forward pass; now 1.6 ms). The value's bits are flipped as `f32::total_cmp` does.
        Ok(_) => {
            let mut keyed: Vec<u64> = map
                .iter()
                .enumerate()
                .map(|(position, value)| {
                    let bits = value.to_bits();
                    let ascending = if bits >> 31 == 1 { !bits } else { bits | 1 << 31 };
                    (u64::from(!ascending) << 32) | position as u64
                })
                .collect();
            keyed.sort_unstable();
            keyed
                .into_iter()
                .map(|key| (key & u64::from(u32::MAX)) as usize)
                .collect()
        }
        Err(_) => {
            let mut order: Vec<usize> = (0..map.len()).collect();
            order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
            order
        }
    };
    let mut ranks = vec![0; map.len()];
    for (rank, position) in order.into_iter().enumerate() {
        ranks[position] = rank;
    }
    ranks
}

/// `∫ y dx` by trapezoids.
fn trapezoid(y: &[f32], x: &[f32]) -> f32 {
    y.windows(2)
        .zip(x.windows(2))
        .map(|(y, x)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

/// A separable Gaussian blur of `[C, H, W]` values, edges repeated.
fn blur(values: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
    let taps: Vec<f32> = (0..=2 * BLUR_RADIUS)
        .map(|i| {
            let d = i as f32 - BLUR_RADIUS as f32;
            (-d * d / (2.0 * BLUR_SIGMA * BLUR_SIGMA)).exp()
        })
        .collect();
    let total: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / total).collect();
    let along = |source: &[f32], horizontal: bool| {
        let mut out = vec![0.0f32; source.len()];
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let mut sum = 0.0;
                    for (i, tap) in taps.iter().enumerate() {
                        let offset = i as isize - BLUR_RADIUS as isize;
                        let (sy, sx) = if horizontal {
                            (y, (x as isize + offset).clamp(0, width as isize - 1) as usize)
                        } else {
                            ((y as isize + offset).clamp(0, height as isize - 1) as usize, x)
                        };
                        sum += tap * source[(c * height + sy) * width + sx];
                    }
                    out[(c * height + y) * width + x] = sum;
                }
            }
        }
        out
    };
    along(&along(values, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_put_the_highest_first_and_keep_ties_in_order() {
        assert_eq!(ranks(&[0.5, 1.0, 0.5, 0.0]), [1, 0, 2, 3]);
        // As `f32::total_cmp` orders them: NaN above +∞, −0 below +0, negatives reversed.
        let values = [
            -1.0,
            f32::NAN,
            0.0,
            -0.0,
            f32::INFINITY,
            -2.5,
            f32::NEG_INFINITY,
            3.0,
            -1.0,
        ];
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let mut expected = vec![0; values.len()];
        for (rank, position) in order.into_iter().enumerate() {
            expected[position] = rank;
        }
        assert_eq!(ranks(&values), expected);
        assert_eq!(expected, [5, 0, 3, 4, 1, 7, 8, 2, 6]);
    }

    #[test]
    fn the_trapezoid_rule_integrates_a_line_exactly() {
        let x = [0.0, 0.25, 0.5, 1.0];
        let y: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        assert!((trapezoid(&y, &x) - 2.0).abs() < 1e-6);
    }

    #[test]
    fn blurring_a_constant_image_leaves_it_constant() {
        let values = vec![3.0f32; 2 * 7 * 9];
        assert!(blur(&values, 2, 7, 9).iter().all(|v| (v - 3.0).abs() < 1e-5));
    }
}
