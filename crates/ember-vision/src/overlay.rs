//! Heat-map colouring and blending.

use image::{Rgb, RgbImage};

use crate::VisionError;

/// A 256-entry colour map.
#[derive(Debug, Clone)]
pub struct Colormap {
    table: Vec<[f32; 3]>,
}

impl Colormap {
    /// Matplotlib's `jet`, the map pytorch-grad-cam's overlays use (through OpenCV).
    pub fn jet() -> Self {
        Self::named("jet").expect("colorcet ships jet")
    }

    /// Any colour map colorcet knows (`jet`, `turbo`, `viridis`, `inferno`, …).
    pub fn named(name: &str) -> Option<Self> {
        let map: colorcet::ColorMap = name.parse().ok()?;
        Some(Self {
            table: map.get_rgb_float::<f32>(),
        })
    }

    /// The colour of `value` in [0, 1] (clamped), as RGB in [0, 1].
    pub fn color(&self, value: f32) -> [f32; 3] {
        let last = self.table.len() - 1;
        let index = (value.clamp(0.0, 1.0) * last as f32).round() as usize;
        self.table[index]
    }
}

/// Blends a map in [0, 1] over an image, as pytorch-grad-cam's `show_cam_on_image`:
/// `(1 − w)·colour(map) + w·image`, rescaled so the brightest channel is 1.
///
/// `map` holds `height × width` values in row-major order, the image's size.
pub fn overlay(image: &RgbImage, map: &[f32], colormap: &Colormap, image_weight: f32) -> Result<RgbImage, VisionError> {
    let (width, height) = image.dimensions();
    if map.len() != (width * height) as usize {
        return Err(VisionError::Size(format!(
            "a map of {} values cannot cover a {width}×{height} image",
            map.len()
        )));
    }
    let blended: Vec<[f32; 3]> = image
        .pixels()
        .zip(map)
        .map(|(pixel, &value)| {
            let heat = colormap.color(value);
            std::array::from_fn(|c| (1.0 - image_weight) * heat[c] + image_weight * pixel[c] as f32 / 255.0)
        })
        .collect();
    let peak = blended.iter().flatten().fold(f32::MIN_POSITIVE, |m, &v| m.max(v));
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let rgb = blended[(y * width + x) as usize];
        Rgb(rgb.map(|v| (255.0 * v / peak).round().clamp(0.0, 255.0) as u8))
    }))
}
