//! Bounds on what untrusted numbers may ask for.
//!
//! Shapes, pads, kernel sizes, resize targets and byte lengths come from files a user did not
//! write. Every size Ember computes from them goes through [`checked_bytes`]: the arithmetic is
//! checked (an overflow is an error, not a wrap or a panic) and the result is compared with the
//! **memory budget** before anything is allocated, so a 4 KB model cannot ask for terabytes and
//! abort the process.
//!
//! The budget bounds each tensor or buffer Ember creates (the executor's node outputs, decoded
//! images, resized copies, network inputs, `.npy` arrays). It is process-wide, like a thread
//! pool: by default half of the smaller of the machine's memory and the process's address-space
//! limit (`ulimit -v`), [`set_memory_budget`] (`ember --max-memory`) changes it.
//!
//! Files are read through [`read_regular_file`] / [`open_regular_file`]: only regular files (no
//! FIFO that blocks forever, no `/dev/zero` that never ends, no folder), with their length
//! bounded before reading.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The budget when neither the machine's memory nor the address-space limit can be read.
const FALLBACK_BUDGET: u64 = 4 << 30;

/// The budget in bytes; 0 until set or first read.
static BUDGET: AtomicU64 = AtomicU64::new(0);

/// The memory budget in bytes: the most any one tensor or buffer built from untrusted sizes
/// may take.
pub fn memory_budget() -> u64 {
    match BUDGET.load(Ordering::Relaxed) {
        0 => {
            let budget = default_memory_budget();
            // A concurrent setter wins over the default.
            let _ = BUDGET.compare_exchange(0, budget, Ordering::Relaxed, Ordering::Relaxed);
            BUDGET.load(Ordering::Relaxed)
        }
        set => set,
    }
}

/// Sets the memory budget for this process (at least one byte).
pub fn set_memory_budget(bytes: u64) {
    BUDGET.store(bytes.max(1), Ordering::Relaxed);
}

/// Half of the smaller of the machine's memory (`MemTotal` in `/proc/meminfo`) and this
/// process's address-space limit (`Max address space` in `/proc/self/limits`); 4 GiB where
/// neither is known.
pub fn default_memory_budget() -> u64 {
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let address_space = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max address space"))?;
        // `Max address space  <soft>  <hard>  bytes`; "unlimited" parses as no limit.
        line["Max address space".len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    match (memory, address_space) {
        (Some(m), Some(a)) => m.min(a) / 2,
        (Some(one), None) | (None, Some(one)) => one / 2,
        (None, None) => FALLBACK_BUDGET,
    }
}

/// Why a size computed from untrusted numbers is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A dimension is negative or does not fit in 64 bits.
    #[error("{what}: a dimension is negative or does not fit in 64 bits")]
    BadDimension {
        /// What was to be created.
        what: String,
    },
    /// The byte length overflows 64 bits: above any budget.
    #[error(
        "{what} would need more than 16 EiB ({}), above the memory budget of {} (see --max-memory)",
        describe_shape(.shape), human_bytes(*.budget)
    )]
    Overflow {
        /// What was to be created.
        what: String,
        /// The requested shape.
        shape: Vec<u64>,
        /// The budget.
        budget: u64,
    },
    /// The size is above the memory budget.
    #[error(
        "{what} would need {} ({}), above the memory budget of {} (see --max-memory)",
        human_bytes(*.bytes), describe_shape(.shape), human_bytes(*.budget)
    )]
    OverBudget {
        /// What was to be created.
        what: String,
        /// The requested shape.
        shape: Vec<u64>,
        /// Its size in bytes.
        bytes: u64,
        /// The budget.
        budget: u64,
    },
}

/// The byte size of a `shape` of `element_bytes`-byte elements, checked for overflow and
/// against the memory budget; `what` names it in the error.
pub fn checked_bytes<T: Copy + TryInto<u64>>(what: &str, shape: &[T], element_bytes: u64) -> Result<u64, SizeError> {
    let dims: Option<Vec<u64>> = shape.iter().map(|&d| d.try_into().ok()).collect();
    let Some(dims) = dims else {
        return Err(SizeError::BadDimension { what: what.to_owned() });
    };
    let budget = memory_budget();
    let bytes = dims
        .iter()
        .try_fold(element_bytes, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| SizeError::Overflow {
            what: what.to_owned(),
            shape: dims.clone(),
            budget,
        })?;
    if bytes > budget {
        return Err(SizeError::OverBudget {
            what: what.to_owned(),
            shape: dims,
            bytes,
            budget,
        });
    }
    Ok(bytes)
}

/// `2.0 GiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `a 2.5 GB`, `1KiB`, `512M`, `4096`: a byte count with an optional binary or decimal unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512MiB, 8GB or 1073741824"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    let bytes = value * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

fn describe_shape(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be opened or read.
    #[error("cannot read {what} {}: {source}", .path.display())]
    Io {
        /// `image`, `ONNX model`, …
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is a folder, a FIFO, a socket or a device.
    #[error("cannot read {what} {}: not a regular file ({kind})", .path.display())]
    NotRegular {
        /// `image`, `ONNX model`, …
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// `a folder`, `a FIFO`, …
        kind: &'static str,
    },
    /// It is longer than the bound for its kind.
    #[error("cannot read {what} {}: {} is larger than the limit of {}", .path.display(), human_bytes(*.bytes), human_bytes(*.limit))]
    TooLarge {
        /// `image`, `ONNX model`, …
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its length.
        bytes: u64,
        /// The bound.
        limit: u64,
    },
}

/// Opens `path` (after symlinks) if it is a regular file of at most `limit` bytes: the file
/// and its length. Nothing is opened otherwise, so a FIFO cannot block.
pub fn open_regular_file(path: &Path, what: &'static str, limit: u64) -> Result<(File, u64), FileError> {
    let io = |source| FileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            what,
            path: path.to_path_buf(),
            kind: file_kind(&metadata.file_type()),
        });
    }
    if metadata.len() > limit {
        return Err(FileError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: metadata.len(),
            limit,
        });
    }
    let file = File::open(path).map_err(io)?;
    Ok((file, metadata.len()))
}

/// Reads `path` whole if it is a regular file of at most `limit` bytes (see
/// [`open_regular_file`]); a file that grows while being read is cut at `limit + 1` bytes and
/// refused.
pub fn read_regular_file(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, FileError> {
    let (file, length) = open_regular_file(path, what, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// `a FIFO`, `a device`, `a socket`, `a folder`: what a file that is not regular is.
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_for_overflow_and_budget() {
        assert_eq!(checked_bytes("t", &[2usize, 3, 4], 4), Ok(96));
        assert!(matches!(
            checked_bytes("t", &[1usize << 40, 1 << 40, 1 << 40], 4),
            Err(SizeError::Overflow { .. })
        ));
        assert!(matches!(
            checked_bytes("t", &[-1i64], 4),
            Err(SizeError::BadDimension { .. })
        ));
        let error = checked_bytes("the node `pad`", &[u64::MAX / 8], 4).unwrap_err();
        assert!(error.to_string().starts_with("the node `pad` would need"), "{error}");
        assert!(error.to_string().contains("memory budget"), "{error}");
    }

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1KiB"), Ok(1024));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = std::env::temp_dir();
        let error = read_regular_file(&dir, "labels", 10).unwrap_err();
        assert!(error.to_string().contains("not a regular file (a folder)"), "{error}");
        #[cfg(unix)]
        {
            let error = read_regular_file(Path::new("/dev/zero"), "model", 10).unwrap_err();
            assert!(error.to_string().contains("(a device)"), "{error}");
        }
        let file = dir.join(format!("ember-limits-{}.txt", std::process::id()));
        std::fs::write(&file, b"0123456789abcdef").unwrap();
        assert_eq!(read_regular_file(&file, "labels", 16).unwrap().len(), 16);
        let error = read_regular_file(&file, "labels", 15).unwrap_err();
        assert!(error.to_string().contains("larger than the limit"), "{error}");
        std::fs::remove_file(file).unwrap();
    }
}
