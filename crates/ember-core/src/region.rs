//! Targets on dense outputs `[N, K, H, W]` (segmentation, saliency, text detection): the sum of
//! one channel over a region.

use burn::tensor::{Tensor, TensorData};

use crate::error::{CamError, Result};
use crate::target::{Target, TargetScores};

/// Where on the output a [`RegionTarget`] sums.
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    /// Every output pixel.
    Whole,
    /// The box of output pixels `x0 ≤ x < x1`, `y0 ≤ y < y1`.
    Box {
        /// First column.
        x0: usize,
        /// First row.
        y0: usize,
        /// Column after the last.
        x1: usize,
        /// Row after the last.
        y1: usize,
    },
    /// A weight per output pixel, row-major `[height, width]` (1 inside, 0 outside for a binary
    /// mask).
    Mask {
        /// The weights.
        weights: Vec<f32>,
        /// `[height, width]`, the output's.
        size: [usize; 2],
    },
}

/// Channel `channel` of a dense output summed over `region` (times a mask's weights):
/// pytorch-grad-cam's `SemanticSegmentationTarget`, for each image of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionTarget {
    /// The output channel (class) explained.
    pub channel: usize,
    /// Where it is summed.
    pub region: Region,
}

impl RegionTarget {
    /// The weights `[height, width]` of the region on an output of that size, or why it does
    /// not fit.
    pub fn weights(&self, [height, width]: [usize; 2]) -> Result<Vec<f32>> {
        match &self.region {
            Region::Whole => Ok(vec![1.0; height * width]),
            &Region::Box { x0, y0, x1, y1 } => {
                if x0 >= x1 || y0 >= y1 || x1 > width || y1 > height {
                    return Err(CamError::BadTarget(format!(
                        "the region x {x0}..{x1}, y {y0}..{y1} is empty or outside the {width}x{height} output"
                    )));
                }
                Ok((0..height)
                    .flat_map(|y| {
                        (0..width).map(move |x| f32::from(u8::from((y0..y1).contains(&y) && (x0..x1).contains(&x))))
                    })
                    .collect())
            }
            Region::Mask { weights, size } => {
                if *size != [height, width] || weights.len() != height * width {
                    return Err(CamError::BadTarget(format!(
                        "the mask is {}x{}, the output {width}x{height}",
                        size[1], size[0]
                    )));
                }
                if weights.iter().all(|&w| w == 0.0) {
                    return Err(CamError::BadTarget("the mask selects no output pixel".into()));
                }
                Ok(weights.clone())
            }
        }
    }
}

impl Target<Tensor<4>> for RegionTarget {
    fn scores(&self, output: &Tensor<4>, batch: usize) -> Result<TargetScores> {
        let [rows, channels, height, width] = output.dims();
        if rows != batch {
            return Err(CamError::BadOutput(format!(
                "expected [{batch}, channels, height, width], got {:?}",
                output.dims()
            )));
        }
        if self.channel >= channels {
            return Err(CamError::BadTarget(format!(
                "channel {} is out of range: the output has {channels} channels",
                self.channel
            )));
        }
        let weights = self.weights([height, width])?;
        let device = output.device();
        let weights = Tensor::<4>::from_data(TensorData::new(weights, [1, 1, height, width]), &device);
        let scores = (output.clone().narrow(1, self.channel, 1) * weights)
            .sum_dims(&[1, 2, 3])
            .reshape([batch]);
        Ok(TargetScores { scores, classes: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> Tensor<4> {
        // [2 images, 2 channels, 2 rows, 3 columns]: value = 100·image + 10·channel + 3·row + column.
        let values: Vec<f32> = (0..2)
            .flat_map(|n| (0..2).flat_map(move |k| (0..6).map(move |p| (100 * n + 10 * k + p) as f32)))
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 2, 2, 3]), &burn::tensor::Device::flex())
    }

    #[test]
    fn a_region_sums_one_channel_of_each_image() {
        let target = RegionTarget {
            channel: 1,
            region: Region::Box {
                x0: 1,
                y0: 0,
                x1: 3,
                y1: 2,
            },
        };
        let scores: Vec<f32> = target
            .scores(&output(), 2)
            .unwrap()
            .scores
            .into_data()
            .try_to_vec()
            .unwrap();
        // Columns 1 and 2 of both rows: (1 + 2 + 4 + 5) + 4·(100·n + 10).
        assert_eq!(scores, vec![52.0, 452.0]);
        let mask = RegionTarget {
            channel: 0,
            region: Region::Mask {
                weights: vec![0.0, 0.0, 0.0, 0.5, 0.0, 2.0],
                size: [2, 3],
            },
        };
        let scores: Vec<f32> = mask
            .scores(&output(), 2)
            .unwrap()
            .scores
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(scores, vec![0.5 * 3.0 + 2.0 * 5.0, 0.5 * 103.0 + 2.0 * 105.0]);
    }

    #[test]
    fn regions_and_masks_that_do_not_fit_are_errors() {
        let boxed = |x0, y0, x1, y1| RegionTarget {
            channel: 0,
            region: Region::Box { x0, y0, x1, y1 },
        };
        for target in [boxed(0, 0, 4, 1), boxed(2, 0, 2, 1), boxed(0, 1, 1, 3)] {
            let error = target.scores(&output(), 2).unwrap_err().to_string();
            assert!(error.contains("outside the 3x2 output"), "{error}");
        }
        let wrong_size = RegionTarget {
            channel: 0,
            region: Region::Mask {
                weights: vec![1.0; 4],
                size: [2, 2],
            },
        };
        assert!(
            wrong_size
                .scores(&output(), 2)
                .unwrap_err()
                .to_string()
                .contains("mask is 2x2")
        );
        let channel = RegionTarget {
            channel: 2,
            region: Region::Whole,
        };
        assert!(
            channel
                .scores(&output(), 2)
                .unwrap_err()
                .to_string()
                .contains("2 channels")
        );
    }
}
