//! Decoding and pre-processing of images into network inputs.
//!
//! Every size here comes from a file or an argument: decoding is bounded by the memory budget
//! ([`ember_core::limits`]), and so is every resized copy and network input, before it is
//! allocated.

use std::io::BufReader;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use ember_core::limits::open_regular_file;
use ember_core::{checked_bytes, memory_budget};
use image::imageops::{self, FilterType};
use image::{ImageError, RgbImage};

use crate::VisionError;

/// Opens any image the `image` crate decodes and converts it to 8-bit RGB (grayscale, alpha and
/// 16-bit images included). Only regular files are read; decoding may allocate no more than
/// the memory budget.
pub fn load_rgb(path: &Path) -> Result<RgbImage, VisionError> {
    let budget = memory_budget();
    let read_error = |source| VisionError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (file, _) = open_regular_file(path, "image", budget)?;
    let mut reader = image::ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| read_error(ImageError::IoError(e)))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget);
    reader.limits(limits);
    let image = reader.decode().map_err(|source| match source {
        ImageError::Limits(_) => VisionError::Size(format!(
            "cannot read image {}: decoding it needs more than the memory budget of {} (see --max-memory)",
            path.display(),
            ember_core::limits::human_bytes(budget)
        )),
        source => read_error(source),
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(VisionError::Size(format!(
            "cannot read image {}: it is {}×{} pixels",
            path.display(),
            image.width(),
            image.height()
        )));
    }
    checked_bytes(
        &format!("the RGB copy of {}", path.display()),
        &[image.height(), image.width(), 3],
        1,
    )?;
    Ok(image.to_rgb8())
}

/// Resizes `image` to `width × height` (bilinear, antialiased) once the copy and the resampler's
/// float buffer are known to fit the memory budget.
fn resize(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, VisionError> {
    let (old_width, old_height) = image.dimensions();
    checked_bytes(
        &format!("resizing the {old_width}×{old_height} image to {width}×{height}"),
        &[height, old_width, 4],
        4,
    )?;
    checked_bytes(
        &format!("resizing the {old_width}×{old_height} image to {width}×{height}"),
        &[height, width, 3],
        1,
    )?;
    Ok(imageops::resize(image, width, height, FilterType::Triangle))
}

/// How an RGB image becomes a normalised `[1, 3, H, W]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Resize so that the shorter side has this length (bilinear, antialiased), keeping the
    /// aspect ratio.
    pub resize_shorter: Option<u32>,
    /// Resize, keeping the aspect ratio, to the smallest size that covers `[height, width]`:
    /// `resize_shorter` generalised to crops that are not square (for a square it is the same).
    pub resize_to_cover: Option<[u32; 2]>,
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
            resize_to_cover: None,
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
            resize_to_cover: None,
            resize_exact: Some([height, width]),
            center_crop: None,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// The resized and cropped image the network sees, before normalisation.
    pub fn geometry(&self, image: &RgbImage) -> Result<RgbImage, VisionError> {
        let mut image = image.clone();
        if let Some(shorter) = self.resize_shorter {
            let (w, h) = image.dimensions();
            // torchvision: the shorter side becomes `shorter`, the other int(shorter · long / short).
            let longer = |long: u32, short: u32| {
                u32::try_from(shorter as u64 * long as u64 / short.max(1) as u64).map_err(|_| {
                    VisionError::Size(format!(
                        "resizing the {w}×{h} image so that its shorter side is {shorter} makes the longer side \
                         larger than 4294967295 pixels"
                    ))
                })
            };
            let (new_w, new_h) = if w <= h {
                (shorter, longer(h, w)?)
            } else {
                (longer(w, h)?, shorter)
            };
            image = resize(&image, new_w, new_h)?;
        }
        if let Some([height, width]) = self.resize_to_cover {
            let (w, h) = image.dimensions();
            // The side whose ratio is larger sets the scale; the other is scaled with it
            // (rounded down as torchvision does) and never below its target.
            let scaled = |target: u32, along: u32, across: u32| {
                let length = (target as u64 * across as u64 / along.max(1) as u64).max(target as u64);
                u32::try_from(length).map_err(|_| {
                    VisionError::Size(format!(
                        "resizing the {w}×{h} image to cover {width}×{height} makes a side larger than 4294967295 pixels"
                    ))
                })
            };
            let (new_w, new_h) = if height as u64 * w as u64 >= width as u64 * h as u64 {
                (scaled(height, h, w)?, height)
            } else {
                (width, scaled(width, w, h)?)
            };
            image = resize(&image, new_w, new_h)?;
        }
        if let Some([height, width]) = self.resize_exact {
            image = resize(&image, width, height)?;
        }
        if let Some([height, width]) = self.center_crop {
            let (w, h) = image.dimensions();
            if width > w || height > h {
                return Err(VisionError::Size(format!(
                    "the resized image is {w}×{h}, smaller than the {width}×{height} crop"
                )));
            }
            // torchvision rounds the offsets: int(round((size − crop) / 2)).
            let left = ((w - width) as f64 / 2.0).round() as u32;
            let top = ((h - height) as f64 / 2.0).round() as u32;
            image = imageops::crop_imm(&image, left, top, width, height).to_image();
        }
        Ok(image)
    }

    /// Normalises an image that already has the network's geometry into `[1, 3, H, W]`.
    pub fn normalise(&self, image: &RgbImage, device: &Device) -> Result<Tensor<4>, VisionError> {
        let (width, height) = image.dimensions();
        checked_bytes("the network input", &[3, height, width], 4)?;
        let (width, height) = (width as usize, height as usize);
        let mut values = vec![0.0f32; 3 * height * width];
        for (x, y, pixel) in image.enumerate_pixels() {
            for channel in 0..3 {
                let value = pixel[channel] as f32 / 255.0;
                values[channel * height * width + y as usize * width + x as usize] =
                    (value - self.mean[channel]) / self.std[channel];
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(values, [1, 3, height, width]),
            device,
        ))
    }

    /// Geometry then normalisation: the network input and the image it shows.
    pub fn apply(&self, image: &RgbImage, device: &Device) -> Result<(Tensor<4>, RgbImage), VisionError> {
        let shown = self.geometry(image)?;
        Ok((self.normalise(&shown, device)?, shown))
    }
}
