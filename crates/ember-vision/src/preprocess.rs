//! Decoding and pre-processing of images into network inputs.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::VisionError;

/// Opens any image the `image` crate decodes and converts it to 8-bit RGB (grayscale, alpha and
/// 16-bit images included).
pub fn load_rgb(path: &Path) -> Result<RgbImage, VisionError> {
    let image = image::ImageReader::open(path)
        .map_err(|e| VisionError::Read {
            path: path.to_path_buf(),
            source: image::ImageError::IoError(e),
        })?
        .with_guessed_format()
        .map_err(|e| VisionError::Read {
            path: path.to_path_buf(),
            source: image::ImageError::IoError(e),
        })?
        .decode()
        .map_err(|source| VisionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(image.to_rgb8())
}

/// How an RGB image becomes a normalised `[1, 3, H, W]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Resize so that the shorter side has this length (bilinear, antialiased), keeping the
    /// aspect ratio.
    pub resize_shorter: Option<u32>,
    /// Resize to exactly `[height, width]` instead.
    pub resize_exact: Option<[u32; 2]>,
    /// Centre crop to `[height, width]`.
    pub center_crop: Option<[u32; 2]>,
    /// Per-channel mean subtracted from values in [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation dividing them.
    pub std: [f32; 3],
}

impl Preprocess {
    /// torchvision's ImageNet recipe: shorter side 256, centre crop 224, ImageNet mean and std.
    pub fn imagenet() -> Self {
        Self {
            resize_shorter: Some(256),
            resize_exact: None,
            center_crop: Some([224, 224]),
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Resize to `[height, width]` and scale to [0, 1], nothing else.
    pub fn scale_only(height: u32, width: u32) -> Self {
        Self {
            resize_shorter: None,
            resize_exact: Some([height, width]),
            center_crop: None,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// The resized and cropped image the network sees, before normalisation.
    pub fn geometry(&self, image: &RgbImage) -> RgbImage {
        let mut image = image.clone();
        if let Some(shorter) = self.resize_shorter {
            let (w, h) = image.dimensions();
            // torchvision: the shorter side becomes `shorter`, the other int(shorter · long / short).
            let (new_w, new_h) = if w <= h {
                (shorter, (shorter as u64 * h as u64 / w as u64) as u32)
            } else {
                ((shorter as u64 * w as u64 / h as u64) as u32, shorter)
            };
            image = imageops::resize(&image, new_w, new_h, FilterType::Triangle);
        }
        if let Some([height, width]) = self.resize_exact {
            image = imageops::resize(&image, width, height, FilterType::Triangle);
        }
        if let Some([height, width]) = self.center_crop {
            let (w, h) = image.dimensions();
            let (crop_w, crop_h) = (width.min(w), height.min(h));
            // torchvision rounds the offsets: int(round((size − crop) / 2)).
            let left = ((w - crop_w) as f64 / 2.0).round() as u32;
            let top = ((h - crop_h) as f64 / 2.0).round() as u32;
            image = imageops::crop_imm(&image, left, top, crop_w, crop_h).to_image();
        }
        image
    }

    /// Normalises an image that already has the network's geometry into `[1, 3, H, W]`.
    pub fn normalise(&self, image: &RgbImage, device: &Device) -> Tensor<4> {
        let (width, height) = image.dimensions();
        let (width, height) = (width as usize, height as usize);
        let mut values = vec![0.0f32; 3 * height * width];
        for (x, y, pixel) in image.enumerate_pixels() {
            for channel in 0..3 {
                let value = pixel[channel] as f32 / 255.0;
                values[channel * height * width + y as usize * width + x as usize] =
                    (value - self.mean[channel]) / self.std[channel];
            }
        }
        Tensor::from_data(TensorData::new(values, [1, 3, height, width]), device)
    }

    /// Geometry then normalisation: the network input and the image it shows.
    pub fn apply(&self, image: &RgbImage, device: &Device) -> (Tensor<4>, RgbImage) {
        let shown = self.geometry(image);
        (self.normalise(&shown, device), shown)
    }
}
