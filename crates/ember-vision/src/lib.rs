//! Images in and out of Ember: decoding and ImageNet pre-processing into Burn tensors, colour
//! maps, overlays and `.npy` export of maps.

mod overlay;
mod preprocess;

pub use overlay::{Colormap, overlay};
pub use preprocess::{Preprocess, load_rgb};

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

/// Why an image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The image file could not be opened or decoded.
    #[error("cannot read image {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// The image could not be written.
    #[error("cannot write image {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
    /// A `.npy` file could not be written.
    #[error("cannot write {path}: {source}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The sizes of a map and an image differ, or a map is empty.
    #[error("{0}")]
    Size(String),
}

/// Writes a float32 `.npy` array of the given shape (C order).
pub fn write_npy(path: &Path, values: &[f32], shape: &[u64]) -> Result<(), VisionError> {
    let error = |source| VisionError::Npy {
        path: path.to_path_buf(),
        source,
    };
    let expected: u64 = shape.iter().product();
    if expected != values.len() as u64 {
        return Err(VisionError::Size(format!(
            "{} values cannot have shape {shape:?}",
            values.len()
        )));
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(error)?);
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()
        .map_err(error)?;
    writer.extend(values.iter().copied()).map_err(error)?;
    writer.finish().map_err(error)
}
