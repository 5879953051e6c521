//! The way back from the network input to the photo: where the pre-processing's resize and
//! crop put each input pixel, so that a map drawn at the input's size lands on the original.

use ember_core::checked_bytes;
use image::{Rgb, RgbImage};

use crate::{Colormap, VisionError};

/// How much of its brightness a pixel the network never saw (cropped away) keeps in an overlay.
pub const CROPPED_BRIGHTNESS: f32 = 0.35;

/// Where the network input sits in the original image: the image was resized to `scaled` and
/// the network saw the `crop` window of it. Sizes are `[height, width]`, the window is
/// `[top, left, height, width]` in the resized image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The original image's size.
    pub original: [u32; 2],
    /// The size after every resize of the pre-processing.
    pub scaled: [u32; 2],
    /// The window of the resized image that the network sees.
    pub crop: [u32; 4],
}

/// Bilinear sampling along one axis: for each output pixel, the two source pixels and the
/// weight of the second, or `None` where the output pixel lies outside the window.
struct Axis {
    taps: Vec<Option<(usize, usize, f32)>>,
}

impl Axis {
    /// Output pixel `i` of `original` pixels has its centre at `(i + ½)·scaled/original` in the
    /// resized image; the window starts at `start` and has `window` pixels, which a map of
    /// `length` pixels covers (half-pixel centres, clamped at the borders).
    fn new(original: u32, scaled: u32, start: u32, window: u32, length: usize) -> Self {
        let taps = (0..original)
            .map(|i| {
                let in_scaled = (f64::from(i) + 0.5) * f64::from(scaled) / f64::from(original);
                let in_window = in_scaled - f64::from(start);
                if !(0.0..f64::from(window)).contains(&in_window) {
                    return None;
                }
                let source = (in_window * length as f64 / f64::from(window) - 0.5).clamp(0.0, (length - 1) as f64);
                let low = source.floor() as usize;
                let high = (low + 1).min(length - 1);
                Some((low, high, (source - low as f64) as f32))
            })
            .collect();
        Self { taps }
    }
}

impl Placement {
    /// The whole image, as it is: for images that the network sees unchanged.
    pub fn identity(height: u32, width: u32) -> Self {
        Self {
            original: [height, width],
            scaled: [height, width],
            crop: [0, 0, height, width],
        }
    }

    /// Whether the network sees all of the original image (nothing is cropped away).
    pub fn covers_original(&self) -> bool {
        let [top, left, height, width] = self.crop;
        top == 0 && left == 0 && [height, width] == self.scaled
    }

    /// Draws `map` (`map_height × map_width` values in [0, 1], row-major, covering the network
    /// input) over `photo`, the original image: inside the window the network saw, the
    /// colour-mapped heat is blended as [`crate::overlay`] blends it (weight `image_weight` for
    /// the photo, rescaled so the brightest channel inside the window is 1); outside it, the
    /// photo is dimmed to [`CROPPED_BRIGHTNESS`] so that what the network never saw is visible as
    /// such.
    pub fn overlay(
        &self,
        photo: &RgbImage,
        map: &[f32],
        map_height: usize,
        map_width: usize,
        colormap: &Colormap,
        image_weight: f32,
    ) -> Result<RgbImage, VisionError> {
        let [height, width] = self.original;
        if photo.dimensions() != (width, height) {
            return Err(VisionError::Size(format!(
                "the photo is {}×{}, not the {width}×{height} image the placement was made for",
                photo.width(),
                photo.height()
            )));
        }
        if map_height == 0 || map_width == 0 || map.len() != map_height * map_width {
            return Err(VisionError::Size(format!(
                "a map of {} values is not {map_width}×{map_height}",
                map.len()
            )));
        }
        checked_bytes("the overlay on the original image", &[height, width, 3], 1)?;
        checked_bytes("the map on the original image", &[height, width], 4)?;
        let [top, left, window_height, window_width] = self.crop;
        let rows = Axis::new(height, self.scaled[0], top, window_height, map_height);
        let columns = Axis::new(width, self.scaled[1], left, window_width, map_width);
        // The map at the photo's resolution (NaN outside the window), a row at a time: the two
        // map rows blended once, then each pixel between two of its columns.
        let mut heat = vec![f32::NAN; (width as usize) * (height as usize)];
        let mut line = vec![0.0f32; map_width];
        for (y, taps) in rows.taps.iter().enumerate() {
            let Some((y0, y1, wy)) = *taps else { continue };
            let (upper, lower) = (&map[y0 * map_width..][..map_width], &map[y1 * map_width..][..map_width]);
            for ((value, a), b) in line.iter_mut().zip(upper).zip(lower) {
                *value = a + wy * (b - a);
            }
            let row = &mut heat[y * width as usize..][..width as usize];
            for (value, taps) in row.iter_mut().zip(&columns.taps) {
                if let Some((x0, x1, wx)) = *taps {
                    *value = line[x0] + wx * (line[x1] - line[x0]);
                }
            }
        }
        let blend = |pixel: &Rgb<u8>, value: f32| -> [f32; 3] {
            let colour = colormap.color(value);
            std::array::from_fn(|c| (1.0 - image_weight) * colour[c] + image_weight * f32::from(pixel[c]) / 255.0)
        };
        // The brightest blended channel inside the window, then the pixels.
        let mut peak = f32::MIN_POSITIVE;
        for (pixel, &value) in photo.pixels().zip(&heat) {
            if !value.is_nan() {
                peak = blend(pixel, value).into_iter().fold(peak, f32::max);
            }
        }
        let scale = 255.0 / peak;
        let mut drawn = RgbImage::new(width, height);
        for ((out, pixel), &value) in drawn.pixels_mut().zip(photo.pixels()).zip(&heat) {
            *out = if value.is_nan() {
                Rgb(pixel.0.map(|v| to_byte(f32::from(v) * CROPPED_BRIGHTNESS)))
            } else {
                Rgb(blend(pixel, value).map(|v| to_byte(v * scale)))
            };
        }
        Ok(drawn)
    }
}

/// A value in [0, 255] rounded to the nearest byte (halves up), clamped.
fn to_byte(value: f32) -> u8 {
    (value.clamp(0.0, 255.0) + 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_centre_crop_maps_back_to_the_middle_and_dims_the_rest() {
        // 8×4 → (resize ×1) → crop the middle 4×4: columns 2..6 are seen, 0, 1, 6, 7 are not.
        let placement = Placement {
            original: [4, 8],
            scaled: [4, 8],
            crop: [0, 2, 4, 4],
        };
        assert!(!placement.covers_original());
        let photo = RgbImage::from_pixel(8, 4, Rgb([200, 200, 200]));
        // Hot in the map's right half, cold in its left half.
        let map: Vec<f32> = (0..16).map(|i| if i % 4 >= 2 { 1.0 } else { 0.0 }).collect();
        let drawn = placement.overlay(&photo, &map, 4, 4, &Colormap::jet(), 0.5).unwrap();
        assert_eq!(drawn.dimensions(), (8, 4));
        assert_eq!(drawn.get_pixel(0, 1).0, [70, 70, 70]);
        assert_eq!(drawn.get_pixel(7, 1).0, [70, 70, 70]);
        // Column 2 is the map's column 0 (cold: blue above red), column 5 its column 3 (hot).
        assert!(drawn.get_pixel(2, 1)[2] > drawn.get_pixel(2, 1)[0]);
        assert!(drawn.get_pixel(5, 1)[0] > drawn.get_pixel(5, 1)[2]);
    }

    #[test]
    fn a_map_at_another_scale_is_sampled_with_half_pixel_centres() {
        // A 2×2 photo seen whole, a 1×2 map: left column 0, right column 1, at every row.
        let placement = Placement::identity(2, 2);
        assert!(placement.covers_original());
        let photo = RgbImage::from_pixel(2, 2, Rgb([0, 0, 0]));
        let drawn = placement
            .overlay(&photo, &[0.0, 1.0], 1, 2, &Colormap::jet(), 0.0)
            .unwrap();
        assert_eq!(drawn.get_pixel(0, 0), drawn.get_pixel(0, 1));
        assert!(drawn.get_pixel(0, 0)[2] > drawn.get_pixel(0, 0)[0]);
        assert!(drawn.get_pixel(1, 1)[0] > drawn.get_pixel(1, 1)[2]);
        assert!(placement.overlay(&photo, &[0.0], 1, 2, &Colormap::jet(), 0.5).is_err());
        let other = RgbImage::new(3, 2);
        assert!(
            placement
                .overlay(&other, &[0.0, 1.0], 1, 2, &Colormap::jet(), 0.5)
                .is_err()
        );
    }
}
