//! ROAD: RemOve And Debias — the most (or least) relevant pixels are removed by noisy linear
//! imputation, and the score compared with the image's own.
//!
//! Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML
//! 2022; as pytorch-grad-cam 1.5.7's `ROADMostRelevantFirst(Average)`,
//! `ROADLeastRelevantFirst(Average)` and `ROADCombined`. For a percentile `p`, most relevant
//! first keeps the pixels whose map value is below the map's `p`-th percentile (NumPy's linear
//! interpolation) and imputes the others; least relevant first does the same with `1 − map`. An
//! imputed pixel is the weighted mean of its 8 neighbours (1/6 along the axes, 1/12 on the
//! diagonals, renormalised at the border), known or imputed: one sparse linear system per image
//! and percentile (a `sprs` matrix), factorised once (`sprs-ldl`'s LDLᵀ in a nested-dissection
//! order of the pixels) and solved for each channel; then Gaussian noise (σ = 0.01) is added.
//! Each value
//! is `y^c(imputed) − y^c(X)`, averaged over the percentiles; combined is
//! `(least-relevant-first − most-relevant-first) / 2`.
//!
//! pytorch-grad-cam draws the noise from PyTorch's unseeded generator; Ember's comes from a
//! seeded one (`Road::seed`), so a run is repeatable: with `noise = 0` both are the same
//! deterministic imputation (up to the solvers' precision).

use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use sprs::{PermOwnedI, SymmetryCheck, TriMat};
use sprs_ldl::LdlNumeric;

use super::{Copies, check_maps, scores_with_original};
use crate::error::{CamError, Result};
use crate::model::CamModel;
use crate::read::to_host;
use crate::target::Target;

/// ROAD's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Road {
    /// The percentiles of the map at which pixels are removed (pytorch-grad-cam: 10, 20, …, 90).
    pub percentiles: Vec<f32>,
    /// The imputation.
    pub imputer: NoisyLinearImputer,
    /// Perturbed copies run at once (default: on flex one at a time on every worker thread,
    /// elsewhere as many as 64 MiB hold; see `copy_scores`).
    pub batch: Option<usize>,
}

impl Default for Road {
    fn default() -> Self {
        Self {
            percentiles: (1..=9).map(|p| 10.0 * p as f32).collect(),
            imputer: NoisyLinearImputer::default(),
            batch: None,
        }
    }
}

/// ROAD's noisy linear imputation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisyLinearImputer {
    /// The standard deviation of the noise added to imputed values (0.01; 0 for none).
    pub noise: f32,
    /// The noise generator's seed.
    pub seed: u64,
}

impl Default for NoisyLinearImputer {
    fn default() -> Self {
        Self { noise: 0.01, seed: 0 }
    }
}

/// ROAD's values per image.
#[derive(Debug, Clone, PartialEq)]
pub struct RoadScores {
    /// Most relevant first: the mean over the percentiles of `y^c(imputed) − y^c(X)`.
    pub most_relevant_first: Vec<f32>,
    /// Least relevant first, the same.
    pub least_relevant_first: Vec<f32>,
    /// `(least − most) / 2`.
    pub combined: Vec<f32>,
}

/// The 8 neighbours and their weights.
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

impl Road {
    /// ROAD of every image of `input` `[N, C, H, W]` with its map (`maps` `[N, H, W]`), for the
    /// classes the target resolves on the unperturbed input.
    pub fn evaluate<M, T>(&self, model: &M, input: &Tensor<4>, maps: &Tensor<3>, target: &T) -> Result<RoadScores>
    where
        M: CamModel + Sync + ?Sized,
        T: Target<M::Output> + Sync + ?Sized,
    {
        if self.percentiles.is_empty() || self.percentiles.iter().any(|p| !(0.0..=100.0).contains(p)) {
            return Err(CamError::MetricInput(format!(
                "ROAD's percentiles must be between 0 and 100, and at least one: {:?}",
                self.percentiles
            )));
        }
        check_maps(input, maps)?;
        let [batch, channels, height, width] = input.dims();
        let positions = height * width;
        let map_values = to_host(maps)?;
        let images = to_host(input)?;
        let device = input.device().inner();
        let mut scores = RoadScores {
            most_relevant_first: Vec::with_capacity(batch),
            least_relevant_first: Vec::with_capacity(batch),
            combined: Vec::with_capacity(batch),
        };
        for image in 0..batch {
            let map = &map_values[image * positions..(image + 1) * positions];
            let reversed: Vec<f32> = map.iter().map(|v| 1.0 - v).collect();
            let pixels = &images[image * channels * positions..(image + 1) * channels * positions];
            // Every (order, percentile) is its own sparse solve: they run in parallel, and their
            // seeds do not depend on which runs first.
            let rankings = [map, reversed.as_slice()];
            let jobs: Vec<(usize, usize)> = (0..2)
                .flat_map(|order| (0..self.percentiles.len()).map(move |index| (order, index)))
                .collect();
            let imputed: Vec<Result<Vec<f32>>> = jobs
                .par_iter()
                .map(|&(order, index)| {
                    let ranking = rankings[order];
                    let threshold = percentile_of(ranking, self.percentiles[index]);
                    let keep: Vec<bool> = ranking.iter().map(|&v| v < threshold).collect();
                    // A seed per image, order and percentile: any subset of a run repeats it.
                    let seed = self
                        .imputer
                        .seed
                        .wrapping_add((image as u64) << 32)
                        .wrapping_add((order * self.percentiles.len() + index) as u64);
                    self.imputer.impute(pixels, &keep, [channels, height, width], seed)
                })
                .collect();
            let mut copies = Vec::with_capacity(2 * self.percentiles.len() * channels * positions);
            for values in imputed {
                copies.extend(values?);
            }
            let dims = [channels, height, width];
            let make = Copies::from_host(&copies, dims, &device);
            let copies = Copies {
                count: 2 * self.percentiles.len(),
                dims,
                device: device.clone(),
                make: &make,
            };
            let x = input.clone().inner().narrow(0, image, 1);
            let (original, after) = scores_with_original(model, target, &x, &copies, self.batch)?;
            let mean_change = |part: &[f32]| part.iter().map(|s| s - original).sum::<f32>() / part.len() as f32;
            let (most, least) = after.split_at(self.percentiles.len());
            let (most, least) = (mean_change(most), mean_change(least));
            scores.most_relevant_first.push(most);
            scores.least_relevant_first.push(least);
            scores.combined.push((least - most) / 2.0);
        }
        Ok(scores)
    }
}

impl NoisyLinearImputer {
    /// `pixels` `[C, H, W]` with the pixels where `keep` is false imputed.
    pub fn impute(
        &self,
        pixels: &[f32],
        keep: &[bool],
        [channels, height, width]: [usize; 3],
        seed: u64,
    ) -> Result<Vec<f32>> {
        let positions = height * width;
        let unknown: Vec<usize> = (0..positions).filter(|&p| !keep[p]).collect();
        if unknown.is_empty() {
            return Ok(pixels.to_vec());
        }
        let mut variable = vec![usize::MAX; positions];
        for (index, &position) in unknown.iter().enumerate() {
            variable[position] = index;
        }
        let equations = unknown.len();
        let mut system = TriMat::<f64>::with_capacity((equations, equations), 9 * equations);
        let mut rhs = vec![0.0f64; equations * channels];
        for (row, &position) in unknown.iter().enumerate() {
            let (y, x) = ((position / width) as isize, (position % width) as isize);
            let mut weights = 1.0f64;
            for ((dy, dx), weight) in NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                    weights -= weight;
                    continue;
                }
                let neighbour = ny as usize * width + nx as usize;
                if keep[neighbour] {
                    for channel in 0..channels {
                        rhs[channel * equations + row] -= weight * f64::from(pixels[channel * positions + neighbour]);
                    }
                } else {
                    system.add_triplet(row, variable[neighbour], weight);
                }
            }
            system.add_triplet(row, row, -weights);
        }
        // −A is symmetric positive definite wherever an unknown pixel reaches a known one; with
        // no known pixel at all, the right-hand sides are zero, the system singular and
        // consistent, and the least-norm solution (pytorch-grad-cam's solver's answer) is zero.
        let mut imputed = pixels.to_vec();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let anything_known = keep.iter().any(|&k| k);
        let factor = if anything_known {
            let negated = system.to_csr::<usize>().map(|v| -v);
            let order = PermOwnedI::new(nested_dissection(&unknown, width));
            Some(
                LdlNumeric::new_perm(negated.view(), order, SymmetryCheck::DontCheckSymmetry)
                    .map_err(|e| CamError::MetricInput(format!("ROAD's imputation of {equations} pixels: {e}")))?,
            )
        } else {
            None
        };
        for channel in 0..channels {
            let negated_b: Vec<f64> = rhs[channel * equations..(channel + 1) * equations]
                .iter()
                .map(|v| -v)
                .collect();
            let values = match &factor {
                Some(factor) => factor.solve(&negated_b),
                None => vec![0.0; equations],
            };
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(CamError::MetricInput(format!(
                    "ROAD's imputation of {equations} pixels gave {bad}"
                )));
            }
            for (row, &position) in unknown.iter().enumerate() {
                let noise: f64 = StandardNormal.sample(&mut rng);
                imputed[channel * positions + position] = (values[row] + f64::from(self.noise) * noise) as f32;
            }
        }
        Ok(imputed)
    }
}

/// An elimination order of the unknown pixels (variable `i` at position `unknown[i]`, that is
/// `y·width + x`) by nested dissection: a region is cut by the row or column through the middle of its
/// longer side, each half is ordered the same way, then the cut's pixels come last. Under the
/// 8-neighbour stencil a one-pixel line separates the halves, so the Cholesky factor of an
/// `n`-pixel region holds O(n log n) entries (a band order: O(n^1.5)), and factorising takes
/// O(n^1.5) operations.
fn nested_dissection(unknown: &[usize], width: usize) -> Vec<usize> {
    /// Regions this small are ordered as they are.
    const LEAF: usize = 32;
    fn dissect(points: &mut [(usize, usize, usize)], order: &mut Vec<usize>) {
        if points.len() <= LEAF {
            order.extend(points.iter().map(|&(_, _, variable)| variable));
            return;
        }
        let (mut y_range, mut x_range) = ((usize::MAX, 0), (usize::MAX, 0));
        for &(y, x, _) in points.iter() {
            y_range = (y_range.0.min(y), y_range.1.max(y));
            x_range = (x_range.0.min(x), x_range.1.max(x));
        }
        let along_y = y_range.1 - y_range.0 >= x_range.1 - x_range.0;
        let coordinate = move |&(y, x, _): &(usize, usize, usize)| if along_y { y } else { x };
        let middle = if along_y {
            (y_range.0 + y_range.1) / 2
        } else {
            (x_range.0 + x_range.1) / 2
        };
        // Below the cut, above it, on it.
        points.sort_unstable_by_key(|p| match coordinate(p).cmp(&middle) {
            std::cmp::Ordering::Less => 0u8,
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Equal => 2,
        });
        let below = points.iter().filter(|p| coordinate(p) < middle).count();
        let above = points.iter().filter(|p| coordinate(p) > middle).count();
        let (lower, rest) = points.split_at_mut(below);
        let (upper, cut) = rest.split_at_mut(above);
        dissect(lower, order);
        dissect(upper, order);
        order.extend(cut.iter().map(|&(_, _, variable)| variable));
    }
    let mut points: Vec<(usize, usize, usize)> = unknown
        .iter()
        .enumerate()
        .map(|(variable, &position)| (position / width, position % width, variable))
        .collect();
    let mut order = Vec::with_capacity(unknown.len());
    dissect(&mut points, &mut order);
    order
}

/// NumPy's `percentile` with linear interpolation.
fn percentile_of(values: &[f32], percentile: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = f64::from(percentile) / 100.0 * (sorted.len() - 1) as f64;
    let (low, fraction) = (rank.floor() as usize, rank - rank.floor());
    let high = (low + 1).min(sorted.len() - 1);
    (f64::from(sorted[low]) + fraction * (f64::from(sorted[high]) - f64::from(sorted[low]))) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_linearly_as_numpy() {
        let values = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile_of(&values, 0.0), 1.0);
        assert_eq!(percentile_of(&values, 100.0), 4.0);
        assert!((percentile_of(&values, 50.0) - 2.5).abs() < 1e-6);
        assert!((percentile_of(&values, 10.0) - 1.3).abs() < 1e-6);
    }

    /// A linear ramp is the mean of its neighbours inside the image: the imputation of an inner
    /// hole recovers it exactly (without noise).
    #[test]
    fn linear_imputation_recovers_a_ramp() {
        let (height, width) = (9, 11);
        let pixels: Vec<f32> = (0..height * width)
            .map(|p| 0.5 * (p / width) as f32 + 0.25 * (p % width) as f32)
            .collect();
        let keep: Vec<bool> = (0..height * width)
            .map(|p| {
                let (y, x) = (p / width, p % width);
                !(3..6).contains(&y) || !(4..8).contains(&x)
            })
            .collect();
        let imputer = NoisyLinearImputer { noise: 0.0, seed: 0 };
        let imputed = imputer.impute(&pixels, &keep, [1, height, width], 0).unwrap();
        for (p, (a, b)) in imputed.iter().zip(&pixels).enumerate() {
            assert!((a - b).abs() < 1e-5, "pixel {p}: {a} vs {b}");
        }
        // Scattered holes (a third of a 40×50 image, connected every which way): each imputed
        // pixel is the weighted mean of its neighbours, known or imputed, in every channel.
        {
            let (height, width, channels) = (40, 50, 2);
            let mut state = 7u64;
            let mut next = || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as f32 / (1u64 << 31) as f32
            };
            let pixels: Vec<f32> = (0..channels * height * width).map(|_| next()).collect();
            let keep: Vec<bool> = (0..height * width).map(|_| next() > 0.33).collect();
            let imputed = imputer.impute(&pixels, &keep, [channels, height, width], 0).unwrap();
            let mut worst = 0.0f64;
            for channel in 0..channels {
                let at =
                    |y: isize, x: isize| f64::from(imputed[channel * height * width + y as usize * width + x as usize]);
                for p in (0..height * width).filter(|&p| !keep[p]) {
                    let (y, x) = ((p / width) as isize, (p % width) as isize);
                    let (mut sum, mut total) = (0.0, 0.0);
                    for ((dy, dx), weight) in NEIGHBOURS {
                        let (ny, nx) = (y + dy, x + dx);
                        if ny >= 0 && nx >= 0 && ny < height as isize && nx < width as isize {
                            sum += weight * at(ny, nx);
                            total += weight;
                        }
                    }
                    worst = worst.max((at(y, x) - sum / total).abs());
                }
            }
            assert!(worst < 1e-5, "{worst}");
        }
        let noisy = NoisyLinearImputer { noise: 0.01, seed: 3 };
        let first = noisy.impute(&pixels, &keep, [1, height, width], 5).unwrap();
        assert_eq!(first, noisy.impute(&pixels, &keep, [1, height, width], 5).unwrap());
        assert_ne!(first, imputed);
    }
}
