//! Upsampling maps to the input resolution.

use burn::tensor::{Int, Tensor, TensorData};

/// Bilinear resize of `[N, h, w]` maps to `[N, height, width]` with half-pixel centres
/// (`align_corners = false`), the mapping of OpenCV's `cv2.resize` that pytorch-grad-cam uses.
///
/// The source rows and columns of every output pixel, clamped to the map, and their weights
/// are computed on the host; the device only gathers (`select`) and blends. Nothing reads
/// outside the map, so every backend and graphics adapter gives the same result: Burn's
/// `interpolate` leaves the border to the backend, and wgpu on OpenGL reads the samples past
/// the edge as zeros (up to 0.26 lower than flex along the border of a 7×7 → 224×224 map; see
/// `docs/wgpu-adapters.md`).
pub fn resize_bilinear(maps: Tensor<3>, height: usize, width: usize) -> Tensor<3> {
    resize(maps, height, width, Corners::HalfPixel)
}

/// Bilinear resize of `[N, h, w]` maps to `[N, height, width]` with the corner samples aligned
/// (`align_corners = true`): PyTorch's `UpsamplingBilinear2d`, which ScoreCAM's masks use.
pub fn resize_bilinear_aligned(maps: Tensor<3>, height: usize, width: usize) -> Tensor<3> {
    resize(maps, height, width, Corners::Aligned)
}

/// Where the output samples sit relative to the input's.
#[derive(Debug, Clone, Copy)]
enum Corners {
    /// Pixel centres at half-integer coordinates (`align_corners = false`, OpenCV).
    HalfPixel,
    /// The first and last samples of both coincide (`align_corners = true`).
    Aligned,
}

fn resize(maps: Tensor<3>, height: usize, width: usize, corners: Corners) -> Tensor<3> {
    let [_, h, w] = maps.dims();
    if (h, w) == (height, width) {
        return maps;
    }
    let device = maps.device();
    let rows = AxisTaps::new(h, height, corners);
    let columns = AxisTaps::new(w, width, corners);
    let index =
        |values: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(values.clone(), [values.len()]), &device);
    let weight = |values: Vec<f32>, shape: [usize; 3]| {
        Tensor::<1>::from_data(TensorData::new(values, [shape.iter().product::<usize>()]), &device).reshape(shape)
    };

    // OpenCV's order: along x within each source row, then along y.
    let left = maps.clone().select(2, index(columns.first));
    let right = maps.select(2, index(columns.second));
    let along_x =
        left * weight(columns.first_weight, [1, 1, width]) + right * weight(columns.second_weight, [1, 1, width]);
    let top = along_x.clone().select(1, index(rows.first));
    let bottom = along_x.select(1, index(rows.second));
    top * weight(rows.first_weight, [1, height, 1]) + bottom * weight(rows.second_weight, [1, height, 1])
}

/// Along one axis, for each output position: the two source positions and their weights.
struct AxisTaps {
    first: Vec<i64>,
    second: Vec<i64>,
    first_weight: Vec<f32>,
    second_weight: Vec<f32>,
}

impl AxisTaps {
    /// Output position `j` samples source coordinate `(j + 0.5)·input/output − 0.5`, clamped to
    /// `[0, input − 1]` (OpenCV: below 0 and at or past the last sample, the weight goes to the
    /// nearest one); with aligned corners `j·(input − 1)/(output − 1)`.
    fn new(input: usize, output: usize, corners: Corners) -> Self {
        let scale = input as f64 / output as f64;
        let aligned_scale = if output > 1 {
            (input as f64 - 1.0) / (output as f64 - 1.0)
        } else {
            0.0
        };
        let last = input.saturating_sub(1);
        let mut taps = Self {
            first: Vec::with_capacity(output),
            second: Vec::with_capacity(output),
            first_weight: Vec::with_capacity(output),
            second_weight: Vec::with_capacity(output),
        };
        for j in 0..output {
            let source = match corners {
                Corners::HalfPixel => ((j as f64 + 0.5) * scale - 0.5).max(0.0),
                Corners::Aligned => j as f64 * aligned_scale,
            };
            let floor = source.floor() as usize;
            let (first, fraction) = if floor >= last {
                (last, 0.0)
            } else {
                (floor, source - floor as f64)
            };
            taps.first.push(first as i64);
            taps.second.push((first + 1).min(last) as i64);
            taps.first_weight.push((1.0 - fraction) as f32);
            taps.second_weight.push(fraction as f32);
        }
        taps
    }
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
    fn aligned_corners_keep_the_first_and_last_samples() {
        // [0, 3] → 1×4 with aligned corners: source x = j·1/3 → [0, 1, 2, 3].
        let map = Tensor::<1>::from_data([0.0f32, 3.0], &Device::flex()).reshape([1, 1, 2]);
        let resized = resize_bilinear_aligned(map, 1, 4).try_into_vec_as::<f32>().unwrap();
        for (got, expected) in resized.iter().zip([0.0f32, 1.0, 2.0, 3.0]) {
            assert!((got - expected).abs() < 1e-6, "{resized:?}");
        }
    }

    #[test]
    fn one_row_or_column_is_repeated() {
        let map = Tensor::<1>::from_data([5.0f32], &Device::flex()).reshape([1, 1, 1]);
        let resized = resize_bilinear(map, 3, 2).try_into_vec_as::<f32>().unwrap();
        assert_eq!(resized, [5.0; 6]);
    }

    #[test]
    fn downsampling_by_an_integer_factor_averages_pixel_pairs() {
        // 1×4 → 1×2: source x = (j + 0.5)·2 − 0.5 = [0.5, 2.5] → means of neighbours.
        let map = Tensor::<1>::from_data([0.0f32, 2.0, 4.0, 8.0], &Device::flex()).reshape([1, 1, 4]);
        let resized = resize_bilinear(map, 1, 2).try_into_vec_as::<f32>().unwrap();
        assert_eq!(resized, [1.0, 6.0]);
    }
}
