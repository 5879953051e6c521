//! Decoding and pre-processing of images into network inputs.
//!
//! Every size here comes from a file or an argument: decoding is bounded by the memory budget
//! ([`ember_core::limits`]), and so is every resized copy and network input, before it is
//! allocated.

use std::io::BufReader;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use ember_core::limits::open_regular_file;
use ember_core::{Vocabulary, checked_bytes, memory_budget};
use image::imageops::{self, FilterType};
use image::{ImageError, RgbImage};

use crate::{Placement, VisionError};

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

/// The order of the colour channels in the network input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision, Keras, most exports).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV, Caffe, PaddlePaddle's `BGR` models).
    Bgr,
}

/// The range pixel values are brought to before `mean` and `std` apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ValueRange {
    /// 0 to 1 (`pixel / 255`; torchvision, Keras).
    #[default]
    Unit,
    /// 0 to 255 (Caffe, many OpenCV pipelines; give `mean` and `std` in the same units).
    Byte,
}

/// The filter images are resized with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ResizeFilter {
    /// Bilinear, antialiased when shrinking (torchvision's `Resize` on PIL images).
    #[default]
    Bilinear,
    /// Nearest neighbour.
    Nearest,
    /// Bicubic (Catmull-Rom).
    Bicubic,
    /// Lanczos with a window of 3.
    Lanczos,
}

impl ResizeFilter {
    fn filter_type(self) -> FilterType {
        match self {
            ResizeFilter::Bilinear => FilterType::Triangle,
            ResizeFilter::Nearest => FilterType::Nearest,
            ResizeFilter::Bicubic => FilterType::CatmullRom,
            ResizeFilter::Lanczos => FilterType::Lanczos3,
        }
    }
}

impl Vocabulary for ChannelOrder {
    const KIND: &'static str = "channel order";
    const ALL: &'static [Self] = &[ChannelOrder::Rgb, ChannelOrder::Bgr];

    fn name(self) -> &'static str {
        match self {
            ChannelOrder::Rgb => "rgb",
            ChannelOrder::Bgr => "bgr",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ChannelOrder::Rgb => "red, green, blue (torchvision, Keras, most exports)",
            ChannelOrder::Bgr => "blue, green, red (OpenCV, Caffe, PaddlePaddle BGR models)",
        }
    }
}

impl Vocabulary for ValueRange {
    const KIND: &'static str = "value range";
    const ALL: &'static [Self] = &[ValueRange::Unit, ValueRange::Byte];

    fn name(self) -> &'static str {
        match self {
            ValueRange::Unit => "unit",
            ValueRange::Byte => "byte",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ValueRange::Unit => "pixels in [0, 1] before mean and std",
            ValueRange::Byte => "pixels in [0, 255] before mean and std (Caffe-style; mean and std in the same units)",
        }
    }
}

impl Vocabulary for ResizeFilter {
    const KIND: &'static str = "resize filter";
    const ALL: &'static [Self] = &[
        ResizeFilter::Bilinear,
        ResizeFilter::Nearest,
        ResizeFilter::Bicubic,
        ResizeFilter::Lanczos,
    ];

    fn name(self) -> &'static str {
        match self {
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::Nearest => "nearest",
            ResizeFilter::Bicubic => "bicubic",
            ResizeFilter::Lanczos => "lanczos",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ResizeFilter::Bilinear => "bilinear, antialiased when shrinking (torchvision's Resize on PIL images)",
            ResizeFilter::Nearest => "nearest neighbour",
            ResizeFilter::Bicubic => "bicubic (Catmull-Rom)",
            ResizeFilter::Lanczos => "Lanczos, window 3",
        }
    }
}

ember_core::vocabulary_serde!(ChannelOrder, ValueRange, ResizeFilter);

macro_rules! display_and_parse {
    ($($vocabulary:ty),*) => {$(
        impl std::fmt::Display for $vocabulary {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $vocabulary {
            type Err = ember_core::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_name(s)
            }
        }
    )*};
}

display_and_parse!(ChannelOrder, ValueRange, ResizeFilter);

/// Resizes `image` to `width × height` with `filter` once the copy and the resampler's float
/// buffer are known to fit the memory budget.
fn resize(image: &RgbImage, width: u32, height: u32, filter: ResizeFilter) -> Result<RgbImage, VisionError> {
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
    Ok(imageops::resize(image, width, height, filter.filter_type()))
}

/// How an RGB image becomes a normalised `[1, 3, H, W]` tensor: geometry (resize, crop),
/// channel order, value range, mean and std. A typed config: written and read with serde (JSON
/// in `ember explain --preprocess-config`), every field optional (`Preprocess::default()` is
/// torchvision's ImageNet recipe).
///
/// ```
/// let caffe: ember_vision::Preprocess = serde_json::from_str(
///     r#"{"channel_order": "bgr", "value_range": "byte", "mean": [103.94, 116.78, 123.68], "std": [58.8, 58.8, 58.8]}"#,
/// ).unwrap();
/// assert_eq!(caffe.center_crop, Some([224, 224]));
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Resize so that the shorter side has this length, keeping the aspect ratio.
    pub resize_shorter: Option<u32>,
    /// Resize, keeping the aspect ratio, to the smallest size that covers `[height, width]`:
    /// `resize_shorter` generalised to crops that are not square (for a square it is the same).
    pub resize_to_cover: Option<[u32; 2]>,
    /// Resize to exactly `[height, width]` instead.
    pub resize_exact: Option<[u32; 2]>,
    /// Centre crop to `[height, width]`.
    pub center_crop: Option<[u32; 2]>,
    /// The filter of every resize.
    pub filter: ResizeFilter,
    /// The order of the channels in the tensor (and of `mean` and `std`).
    pub channel_order: ChannelOrder,
    /// The range pixels are brought to before `mean` and `std` apply.
    pub value_range: ValueRange,
    /// Per-channel mean subtracted (in the tensor's channel order and the value range's units).
    pub mean: [f32; 3],
    /// Per-channel standard deviation dividing the values.
    pub std: [f32; 3],
}

/// A photo made ready for the network, on the host: see [`Preprocess::prepare`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The network input's values `[3, H, W]`, C order.
    pub values: Vec<f32>,
    /// The resized and cropped image the network sees.
    pub shown: RgbImage,
    /// Where `shown` sits in the original photo.
    pub placement: Placement,
}

impl Prepared {
    /// The network input `[1, 3, H, W]` on `device` (the values move there, uncopied), the
    /// image it shows, and where that sits in the photo.
    pub fn into_input(self, device: &Device) -> (Tensor<4>, RgbImage, Placement) {
        let (width, height) = self.shown.dimensions();
        let input = Tensor::from_data(
            TensorData::new(self.values, [1, 3, height as usize, width as usize]),
            device,
        );
        (input, self.shown, self.placement)
    }
}

impl Default for Preprocess {
    fn default() -> Self {
        Self::imagenet()
    }
}

impl Preprocess {
    /// torchvision's ImageNet recipe: shorter side 256, centre crop 224, ImageNet mean and std.
    pub fn imagenet() -> Self {
        Self {
            resize_shorter: Some(256),
            resize_to_cover: None,
            resize_exact: None,
            center_crop: Some([224, 224]),
            filter: ResizeFilter::Bilinear,
            channel_order: ChannelOrder::Rgb,
            value_range: ValueRange::Unit,
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
            filter: ResizeFilter::Bilinear,
            channel_order: ChannelOrder::Rgb,
            value_range: ValueRange::Unit,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// The sizes `(width, height)` the image is resized to, step by step, from `width × height`.
    fn resize_steps(&self, width: u32, height: u32) -> Result<Vec<(u32, u32)>, VisionError> {
        let (mut w, mut h) = (width, height);
        let mut steps = Vec::new();
        if let Some(shorter) = self.resize_shorter {
            // torchvision: the shorter side becomes `shorter`, the other int(shorter · long / short).
            let longer = |long: u32, short: u32| {
                u32::try_from(shorter as u64 * long as u64 / short.max(1) as u64).map_err(|_| {
                    VisionError::Size(format!(
                        "resizing the {w}×{h} image so that its shorter side is {shorter} makes the longer side \
                         larger than 4294967295 pixels"
                    ))
                })
            };
            (w, h) = if w <= h {
                (shorter, longer(h, w)?)
            } else {
                (longer(w, h)?, shorter)
            };
            steps.push((w, h));
        }
        if let Some([height, width]) = self.resize_to_cover {
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
            (w, h) = if height as u64 * w as u64 >= width as u64 * h as u64 {
                (scaled(height, h, w)?, height)
            } else {
                (width, scaled(width, w, h)?)
            };
            steps.push((w, h));
        }
        if let Some([height, width]) = self.resize_exact {
            (w, h) = (width, height);
            steps.push((w, h));
        }
        Ok(steps)
    }

    /// Where the network input of a `width × height` image sits in it: the size after every
    /// resize and the centre crop's window. Nothing is resized or allocated.
    pub fn placement(&self, width: u32, height: u32) -> Result<Placement, VisionError> {
        let (w, h) = self
            .resize_steps(width, height)?
            .last()
            .copied()
            .unwrap_or((width, height));
        let crop = match self.center_crop {
            Some([crop_height, crop_width]) => {
                if crop_width > w || crop_height > h {
                    return Err(VisionError::Size(format!(
                        "the resized image is {w}×{h}, smaller than the {crop_width}×{crop_height} crop"
                    )));
                }
                // torchvision rounds the offsets: int(round((size − crop) / 2)).
                let left = ((w - crop_width) as f64 / 2.0).round() as u32;
                let top = ((h - crop_height) as f64 / 2.0).round() as u32;
                [top, left, crop_height, crop_width]
            }
            None => [0, 0, h, w],
        };
        Ok(Placement {
            original: [height, width],
            scaled: [h, w],
            crop,
        })
    }

    /// The resized and cropped image the network sees, before normalisation.
    pub fn geometry(&self, image: &RgbImage) -> Result<RgbImage, VisionError> {
        let (width, height) = image.dimensions();
        let placement = self.placement(width, height)?;
        let mut image = image.clone();
        for (w, h) in self.resize_steps(width, height)? {
            image = resize(&image, w, h, self.filter)?;
        }
        if self.center_crop.is_some() {
            let [top, left, crop_height, crop_width] = placement.crop;
            image = imageops::crop_imm(&image, left, top, crop_width, crop_height).to_image();
        }
        Ok(image)
    }

    /// Normalises an image that already has the network's geometry into `[1, 3, H, W]`.
    pub fn normalise(&self, image: &RgbImage, device: &Device) -> Result<Tensor<4>, VisionError> {
        let (width, height) = image.dimensions();
        let values = self.normalised_values(image)?;
        Ok(Tensor::from_data(
            TensorData::new(values, [1, 3, height as usize, width as usize]),
            device,
        ))
    }

    /// The normalised values `[3, H, W]` (C order) of an image that has the network's geometry.
    fn normalised_values(&self, image: &RgbImage) -> Result<Vec<f32>, VisionError> {
        let (width, height) = image.dimensions();
        checked_bytes("the network input", &[3, height, width], 4)?;
        let (width, height) = (width as usize, height as usize);
        let scale = match self.value_range {
            ValueRange::Unit => 1.0 / 255.0,
            ValueRange::Byte => 1.0,
        };
        // The tensor's channel c holds this colour of the RGB image.
        let source: [usize; 3] = match self.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let mut values = vec![0.0f32; 3 * height * width];
        for (x, y, pixel) in image.enumerate_pixels() {
            for (channel, &colour) in source.iter().enumerate() {
                let value = pixel[colour] as f32 * scale;
                values[channel * height * width + y as usize * width + x as usize] =
                    (value - self.mean[channel]) / self.std[channel];
            }
        }
        Ok(values)
    }

    /// Geometry then normalisation: the network input and the image it shows.
    pub fn apply(&self, image: &RgbImage, device: &Device) -> Result<(Tensor<4>, RgbImage), VisionError> {
        let shown = self.geometry(image)?;
        Ok((self.normalise(&shown, device)?, shown))
    }

    /// [`Preprocess::apply`] without the device: the network input's values `[3, H, W]` (C
    /// order), the image it shows, and where that sits in `image`. For decoding on one thread
    /// and computing on another.
    pub fn prepare(&self, image: &RgbImage) -> Result<Prepared, VisionError> {
        let placement = self.placement(image.width(), image.height())?;
        let shown = self.geometry(image)?;
        let values = self.normalised_values(&shown)?;
        Ok(Prepared {
            values,
            shown,
            placement,
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use image::Rgb;

    use super::*;

    /// One pixel of (red 255, green 51, blue 0).
    fn pixel() -> RgbImage {
        RgbImage::from_pixel(1, 1, Rgb([255, 51, 0]))
    }

    fn values(recipe: &Preprocess) -> Vec<f32> {
        recipe
            .normalise(&pixel(), &Device::flex())
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap()
    }

    #[test]
    fn channel_order_and_value_range_as_configured() {
        let unit_rgb = values(&Preprocess::scale_only(1, 1));
        let expected = [1.0, 0.2, 0.0];
        assert!(
            unit_rgb.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6),
            "{unit_rgb:?}"
        );
        let byte_bgr = Preprocess {
            channel_order: ChannelOrder::Bgr,
            value_range: ValueRange::Byte,
            mean: [10.0, 1.0, 5.0],
            std: [2.0, 1.0, 5.0],
            ..Preprocess::scale_only(1, 1)
        };
        // Channel 0 is blue: (0 − 10)/2; 1 green: (51 − 1)/1; 2 red: (255 − 5)/5.
        assert_eq!(values(&byte_bgr), [-5.0, 50.0, 50.0]);
    }

    #[test]
    fn the_recipe_is_a_serde_config_with_defaults_and_names() {
        let recipe: Preprocess = serde_json::from_str(r#"{"channel_order": "bgr", "filter": "bicubic"}"#).unwrap();
        assert_eq!(recipe.channel_order, ChannelOrder::Bgr);
        assert_eq!(recipe.filter, ResizeFilter::Bicubic);
        assert_eq!(recipe.mean, Preprocess::imagenet().mean);
        let text = serde_json::to_string(&recipe).unwrap();
        assert_eq!(serde_json::from_str::<Preprocess>(&text).unwrap(), recipe);
        let error = serde_json::from_str::<Preprocess>(r#"{"channel_ordr": "bgr"}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field `channel_ordr`"), "{error}");
        let error = serde_json::from_str::<Preprocess>(r#"{"value_range": "bytes"}"#).unwrap_err();
        assert!(error.to_string().contains("unit, byte"), "{error}");
    }
}
