//! Images in and out of Ember: decoding and ImageNet pre-processing into Burn tensors, colour
//! maps, overlays (on the network's view or placed back on the original photo), comparison
//! sheets with labels, `.npy` export of maps, and the check that outputs never overwrite inputs.

pub mod outputs;
mod overlay;
mod placement;
mod preprocess;
pub mod report;
mod sheet;

pub use outputs::{OutputConflict, ReadPaths, Written, check_outputs, save_picture, write_atomically};
pub use overlay::{Colormap, ColormapName, gradient_image, heatmap, overlay};
pub use placement::{CROPPED_BRIGHTNESS, Placement};
pub use preprocess::{ChannelOrder, Prepared, Preprocess, ResizeFilter, ValueRange, load_rgb};
pub use report::{Card, escape_html, relative_href, relative_to, report_html};
pub use sheet::{Sheet, TextStyle, draw_text, text_width};

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
    /// A `.npy` file could not be read as float32 or float64.
    #[error("cannot read {path}: {message}")]
    NpyRead {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The sizes of a map and an image differ, a map is empty, or an image cannot be resized.
    #[error("{0}")]
    Size(String),
    /// A size is above the memory budget or overflows.
    #[error(transparent)]
    Budget(#[from] ember_core::SizeError),
    /// The file is missing, not a regular file or too large.
    #[error(transparent)]
    File(#[from] ember_core::FileError),
}

/// Writes a float32 `.npy` array of the given shape (C order), atomically.
pub fn write_npy(path: &Path, values: &[f32], shape: &[u64]) -> Result<(), VisionError> {
    write_npy_of(path, values, shape)
}

/// Writes a `.npy` array of `T` of the given shape (C order), atomically.
fn write_npy_of<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    values: &[T],
    shape: &[u64],
) -> Result<(), VisionError> {
    let expected: u64 = shape.iter().product();
    if expected != values.len() as u64 {
        return Err(VisionError::Size(format!(
            "{} values cannot have shape {shape:?}",
            values.len()
        )));
    }
    write_atomically(path, |file| {
        let mut writer = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(shape)
            .writer(file)
            .begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()
    })
    .map_err(|source| VisionError::Npy {
        path: path.to_path_buf(),
        source,
    })
}

/// The values of a `.npy` array: floats, or integers and booleans.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyValues {
    /// float32 or float64 values, as `f32`.
    Float(Vec<f32>),
    /// int8/16/32/64, uint8/16/32 or bool values, as `i64`.
    Int(Vec<i64>),
}

/// Reads a float32 or float64 `.npy` array (C order): its values as `f32` and its shape.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<usize>), VisionError> {
    match read_npy_values(path)? {
        (NpyValues::Float(values), shape) => Ok((values, shape)),
        (NpyValues::Int(_), _) => Err(VisionError::NpyRead {
            path: path.to_path_buf(),
            message: "expected float32 or float64 values, found integers".into(),
        }),
    }
}

/// Reads a `.npy` array (C order) of floats, integers or booleans, and its shape. The header's
/// shape is untrusted: it must fit in the file before anything is allocated for it.
pub fn read_npy_values(path: &Path) -> Result<(NpyValues, Vec<usize>), VisionError> {
    let error = |message: String| VisionError::NpyRead {
        path: path.to_path_buf(),
        message,
    };
    let bytes = ember_core::limits::read_regular_file(path, "tensor", ember_core::memory_budget())?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| error(format!("not a .npy file ({e})")))?;
    if npy.order() != npyz::Order::C {
        return Err(error("the array is in Fortran order; save it in C order".into()));
    }
    let type_str = npy.dtype().descr();
    let item_bytes: u64 = match type_str.as_str() {
        "'<f4'" | "'<i4'" | "'<u4'" => 4,
        "'<f8'" | "'<i8'" => 8,
        "'<i2'" | "'<u2'" => 2,
        "'|i1'" | "'|u1'" | "'|b1'" => 1,
        other => {
            return Err(error(format!(
                "expected float32/64, int8/16/32/64, uint8/16/32 or bool values, found dtype {other}"
            )));
        }
    };
    let data_bytes =
        ember_core::checked_bytes("the array", npy.shape(), item_bytes).map_err(|e| error(e.to_string()))?;
    if data_bytes > bytes.len() as u64 {
        return Err(error(format!(
            "its header claims shape {:?} ({data_bytes} bytes of data) but the file has {} bytes",
            npy.shape(),
            bytes.len()
        )));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let read = |e: std::io::Error| error(e.to_string());
    let values = match type_str.as_str() {
        "'<f4'" => NpyValues::Float(npy.into_vec::<f32>().map_err(read)?),
        "'<f8'" => NpyValues::Float(
            npy.into_vec::<f64>()
                .map_err(read)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        "'<i8'" => NpyValues::Int(widened::<i64>(npy).map_err(read)?),
        "'<i4'" => NpyValues::Int(widened::<i32>(npy).map_err(read)?),
        "'<u4'" => NpyValues::Int(widened::<u32>(npy).map_err(read)?),
        "'<i2'" => NpyValues::Int(widened::<i16>(npy).map_err(read)?),
        "'<u2'" => NpyValues::Int(widened::<u16>(npy).map_err(read)?),
        "'|i1'" => NpyValues::Int(widened::<i8>(npy).map_err(read)?),
        "'|u1'" => NpyValues::Int(widened::<u8>(npy).map_err(read)?),
        _ => NpyValues::Int(widened::<bool>(npy).map_err(read)?),
    };
    Ok((values, shape))
}

/// Writes an int64 `.npy` array of the given shape (C order), atomically.
pub fn write_npy_i64(path: &Path, values: &[i64], shape: &[u64]) -> Result<(), VisionError> {
    write_npy_of(path, values, shape)
}

/// The values of an integer or boolean array as `i64`.
fn widened<T: npyz::Deserialize + Into<i64>>(npy: npyz::NpyFile<&[u8]>) -> std::io::Result<Vec<i64>> {
    Ok(npy.into_vec::<T>()?.into_iter().map(Into::into).collect())
}
