//! Upsampling maps to the input resolution.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Bilinear resize of `[N, h, w]` maps to `[N, height, width]` with half-pixel centres
/// (`align_corners = false`), the mapping of OpenCV's `cv2.resize` that pytorch-grad-cam uses.
pub fn resize_bilinear(maps: Tensor<3>, height: usize, width: usize) -> Tensor<3> {
    let [batch, h, w] = maps.dims();
    if (h, w) == (height, width) {
        return maps;
    }
    let options = InterpolateOptions {
        mode: InterpolateMode::Bilinear,
        align_corners: false,
        output_size: Some([height, width]),
        scale_factor: None,
    };
    interpolate(maps.reshape([batch, 1, h, w]), options).reshape([batch, height, width])
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    #[test]
    fn upsampling_uses_half_pixel_centres_and_clamps_at_the_border() {
        // [[0, 1], [2, 3]] → 4×4. With half-pixel centres the source coordinate of output
        // column j is (j + 0.5)/2 − 0.5 = [−0.25, 0.25, 0.75, 1.25], clamped to [0, 1]:
        // column weights [0, 0.25, 0.75, 1]; rows the same with step 2.
        let map = Tensor::<1>::from_data([0.0f32, 1.0, 2.0, 3.0], &Device::flex()).reshape([1, 2, 2]);
        let resized = resize_bilinear(map, 4, 4).try_into_vec_as::<f32>().unwrap();
        let weights = [0.0f32, 0.25, 0.75, 1.0];
        for (row, wy) in weights.iter().enumerate() {
            for (col, wx) in weights.iter().enumerate() {
                let expected = 2.0 * wy + wx;
                let got = resized[row * 4 + col];
                assert!((got - expected).abs() < 1e-6, "({row}, {col}): {got} vs {expected}");
            }
        }
    }

    #[test]
    fn downsampling_by_an_integer_factor_averages_pixel_pairs() {
        // 1×4 → 1×2: source x = (j + 0.5)·2 − 0.5 = [0.5, 2.5] → means of neighbours.
        let map = Tensor::<1>::from_data([0.0f32, 2.0, 4.0, 8.0], &Device::flex()).reshape([1, 1, 4]);
        let resized = resize_bilinear(map, 1, 2).try_into_vec_as::<f32>().unwrap();
        assert_eq!(resized, [1.0, 6.0]);
    }
}
