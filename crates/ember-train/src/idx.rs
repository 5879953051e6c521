//! IDX files (the MNIST family's format), plain or gzip-compressed, and Fashion-MNIST as Debian's
//! `dataset-fashion-mnist` package installs it.
//!
//! IDX: two zero bytes, a type code (`0x08` = unsigned bytes), the number of dimensions, each
//! dimension as a big-endian `u32`, then the values. Every size is read from the file, so each is
//! checked (overflow, memory budget, the file's actual length) before anything is allocated.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ember_core::checked_bytes;
use flate2::read::GzDecoder;

use crate::TrainError;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Greyscale images of one size, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Rows of each image.
    pub height: usize,
    /// Columns of each image.
    pub width: usize,
    /// All pixels, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// How many images there are.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.height * self.width).max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.height * self.width;
        &self.pixels[index * size..(index + 1) * size]
    }
}

/// One split of a labelled image set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImages {
    /// The images.
    pub images: IdxImages,
    /// One class index per image.
    pub labels: Vec<u8>,
}

impl LabelledImages {
    /// The first `limit` images (all when fewer).
    pub fn truncated(mut self, limit: usize) -> Self {
        let keep = limit.min(self.labels.len());
        self.labels.truncate(keep);
        self.images
            .pixels
            .truncate(keep * self.images.height * self.images.width);
        self
    }
}

/// Fashion-MNIST: 60 000 training and 10 000 test images of 28×28, ten classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FashionMnist {
    /// The training split.
    pub train: LabelledImages,
    /// The test split.
    pub test: LabelledImages,
}

impl FashionMnist {
    /// Reads the four files (`train-images-idx3-ubyte.gz`, …) from `dir`; a missing folder or
    /// file is an error that says how to install the data.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, TrainError> {
        let dir = dir.as_ref();
        let split = |name: &str| -> Result<LabelledImages, TrainError> {
            let images = read_idx_images(&dataset_file(dir, &format!("{name}-images-idx3-ubyte.gz"))?)?;
            let labels = read_idx_labels(&dataset_file(dir, &format!("{name}-labels-idx1-ubyte.gz"))?)?;
            if labels.len() != images.len() {
                return Err(TrainError::Dataset(format!(
                    "{}: {} {name} images but {} labels",
                    dir.display(),
                    images.len(),
                    labels.len()
                )));
            }
            if let Some(&bad) = labels.iter().find(|&&l| usize::from(l) >= FASHION_MNIST_CLASSES.len()) {
                return Err(TrainError::Dataset(format!(
                    "{}: label {bad} in the {name} split; Fashion-MNIST has {} classes",
                    dir.display(),
                    FASHION_MNIST_CLASSES.len()
                )));
            }
            Ok(LabelledImages { images, labels })
        };
        Ok(Self {
            train: split("train")?,
            test: split("t10k")?,
        })
    }
}

fn dataset_file(dir: &Path, name: &str) -> Result<PathBuf, TrainError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TrainError::MissingDataset {
            path,
            hint: if dir == Path::new(FASHION_MNIST_DIR) {
                "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)".into()
            } else {
                format!(
                    "point to a folder with Fashion-MNIST's four IDX files, or install Debian's dataset-fashion-mnist package into {FASHION_MNIST_DIR}"
                )
            },
        })
    }
}

/// Reads an IDX file of unsigned-byte images `[count, rows, columns]` (gzip-compressed when the
/// name ends in `.gz`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, TrainError> {
    let (dims, pixels) = read_idx(path, 3)?;
    Ok(IdxImages {
        height: dims[1],
        width: dims[2],
        pixels,
    })
}

/// Reads an IDX file of unsigned-byte labels `[count]` (gzip-compressed when the name ends in
/// `.gz`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, TrainError> {
    Ok(read_idx(path, 1)?.1)
}

/// The dimensions and bytes of an unsigned-byte IDX file with `rank` dimensions.
fn read_idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>), TrainError> {
    let bad = |reason: String| TrainError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source: std::io::Error| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .map_err(|e| bad(format!("no IDX header ({e})")))?;
    if header[..2] != [0, 0] {
        return Err(bad("not an IDX file (it does not start with two zero bytes)".into()));
    }
    if header[2] != 0x08 {
        return Err(bad(format!(
            "values of type 0x{:02x}; only unsigned bytes (0x08) are read",
            header[2]
        )));
    }
    if usize::from(header[3]) != rank {
        return Err(bad(format!("{} dimensions where {rank} are expected", header[3])));
    }
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        let mut dim = [0u8; 4];
        reader
            .read_exact(&mut dim)
            .map_err(|e| bad(format!("the header ends early ({e})")))?;
        dims.push(u32::from_be_bytes(dim) as usize);
    }
    let bytes = checked_bytes("an IDX file's values", &dims, 1).map_err(|e| bad(e.to_string()))?;
    let bytes = usize::try_from(bytes).map_err(|_| bad("too large for this machine".into()))?;
    // Read at most one byte more than the header promises: a short file is caught here, a long
    // one below, and a lying header never makes us allocate more than the data holds.
    let mut values = Vec::new();
    reader
        .by_ref()
        .take(bytes as u64 + 1)
        .read_to_end(&mut values)
        .map_err(|e| bad(format!("unreadable values ({e})")))?;
    if values.len() < bytes {
        return Err(bad(format!(
            "the header promises {bytes} values, the file holds {}",
            values.len()
        )));
    }
    if values.len() > bytes {
        return Err(bad(format!("more values than the header's {bytes}")));
    }
    Ok((dims, values))
}
