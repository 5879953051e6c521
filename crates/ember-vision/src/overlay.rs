//! Heat-map colouring and blending.

use std::fmt;
use std::str::FromStr;

use ember_core::{UnknownName, Vocabulary};
use image::{Rgb, RgbImage};

use crate::VisionError;

/// The colour maps by name: the one vocabulary that parsing, help and errors derive from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ColormapName {
    /// See [`Colormap::jet`].
    #[default]
    Jet,
    /// See [`Colormap::turbo`].
    Turbo,
    /// See [`Colormap::viridis`].
    Viridis,
}

impl Vocabulary for ColormapName {
    const KIND: &'static str = "colour map";
    const ALL: &'static [Self] = &[ColormapName::Jet, ColormapName::Turbo, ColormapName::Viridis];

    fn name(self) -> &'static str {
        match self {
            ColormapName::Jet => "jet",
            ColormapName::Turbo => "turbo",
            ColormapName::Viridis => "viridis",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ColormapName::Jet => "blue to red, as pytorch-grad-cam's overlays (OpenCV's COLORMAP_JET)",
            ColormapName::Turbo => "a perceptually smoother jet",
            ColormapName::Viridis => "perceptually uniform, readable in grey and by most colour-blind viewers",
        }
    }
}

impl fmt::Display for ColormapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColormapName {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_name(s)
    }
}

/// A colour map sampled at 256 levels.
#[derive(Debug, Clone)]
pub struct Colormap {
    table: Vec<[f32; 3]>,
}

impl Colormap {
    /// Jet, the map of pytorch-grad-cam's overlays (OpenCV's `COLORMAP_JET`): dark blue, blue,
    /// cyan, yellow, red, dark red at 0, ⅛, ⅜, ⅝, ⅞ and 1, linearly interpolated.
    pub fn jet() -> Self {
        let gradient: colorgrad::LinearGradient = colorgrad::GradientBuilder::new()
            .html_colors(&["#00007f", "#0000ff", "#00ffff", "#ffff00", "#ff0000", "#7f0000"])
            .domain(&[0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
            .build()
            .expect("valid jet anchors");
        Self::sample(&gradient)
    }

    /// Turbo (Google's perceptually smoother replacement for jet).
    pub fn turbo() -> Self {
        Self::sample(&colorgrad::preset::turbo())
    }

    /// Viridis (perceptually uniform, readable in grey and by most colour-blind viewers).
    pub fn viridis() -> Self {
        Self::sample(&colorgrad::preset::viridis())
    }

    /// The colour map called `name`.
    pub fn named(name: ColormapName) -> Self {
        match name {
            ColormapName::Jet => Self::jet(),
            ColormapName::Turbo => Self::turbo(),
            ColormapName::Viridis => Self::viridis(),
        }
    }

    fn sample(gradient: &dyn colorgrad::Gradient) -> Self {
        Self {
            table: gradient.colors(256).map(|c| [c.r, c.g, c.b]).collect(),
        }
    }

    /// The colour of `value` in [0, 1] (clamped), as RGB in [0, 1].
    pub fn color(&self, value: f32) -> [f32; 3] {
        let last = self.table.len() - 1;
        // Rounded to the nearest level (halves up; the value is not negative).
        let index = (value.clamp(0.0, 1.0) * last as f32 + 0.5) as usize;
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

/// A map in [0, 1] (`height × width`, row-major) coloured on its own, for inputs that are not
/// images (pre-processed tensors).
pub fn heatmap(map: &[f32], height: u32, width: u32, colormap: &Colormap) -> Result<RgbImage, VisionError> {
    if map.len() != (width * height) as usize {
        return Err(VisionError::Size(format!(
            "a map of {} values is not {width}×{height}",
            map.len()
        )));
    }
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let rgb = colormap.color(map[(y * width + x) as usize]);
        Rgb(rgb.map(|v| (255.0 * v).round().clamp(0.0, 255.0) as u8))
    }))
}

/// An input gradient (Guided Backpropagation, Guided Grad-CAM) `[C, H, W]` as a picture, as
/// pytorch-grad-cam's `deprocess_image` shows it: standardised over all its values, scaled by
/// 0.1 around mid-grey and clipped, `0.5 + 0.1·(x − mean)/(std + 10⁻⁵)`. Three channels are shown
/// as RGB in the network's channel order, one as grey.
pub fn gradient_image(chw: &[f32], channels: usize, height: u32, width: u32) -> Result<RgbImage, VisionError> {
    let plane = (width as usize) * (height as usize);
    if !matches!(channels, 1 | 3) || chw.len() != channels * plane || plane == 0 {
        return Err(VisionError::Size(format!(
            "a gradient of {} values is not [1 or 3, {height}, {width}] ({channels} channels)",
            chw.len()
        )));
    }
    let count = chw.len() as f64;
    let mean = chw.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let std = (chw.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / count).sqrt();
    let shown = |v: f32| {
        let value = 0.5 + 0.1 * (f64::from(v) - mean) / (std + 1e-5);
        (255.0 * value.clamp(0.0, 1.0)) as u8
    };
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let at = (y * width + x) as usize;
        let channel = |c: usize| shown(chw[(c % channels) * plane + at]);
        Rgb([channel(0), channel(1), channel(2)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_dark_blue_through_cyan_and_yellow_to_dark_red() {
        let jet = Colormap::jet();
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.02);
        assert!(close(jet.color(0.0), [0.0, 0.0, 0.498]));
        assert!(close(jet.color(0.375), [0.0, 1.0, 1.0]));
        assert!(close(jet.color(0.625), [1.0, 1.0, 0.0]));
        assert!(close(jet.color(1.0), [0.498, 0.0, 0.0]));
    }

    #[test]
    fn overlay_blends_like_show_cam_on_image_and_checks_sizes() {
        let image = RgbImage::from_pixel(2, 1, Rgb([255, 255, 255]));
        let blended = overlay(&image, &[0.0, 1.0], &Colormap::jet(), 0.5).unwrap();
        // White + dark blue: (0.5·[0, 0, 0.498] + 0.5·1) / 0.749 → blue channel brightest.
        assert_eq!(blended.get_pixel(0, 0)[2], 255);
        assert!(blended.get_pixel(0, 0)[0] < blended.get_pixel(0, 0)[2]);
        assert!(blended.get_pixel(1, 0)[0] > blended.get_pixel(1, 0)[2]);
        assert!(overlay(&image, &[0.5], &Colormap::jet(), 0.5).is_err());
    }
}
