//! Inputs are never outputs: every path a run would write is checked against every path it
//! reads, and against the other outputs, before anything is written. Outputs are written whole
//! or not at all.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::{ImageError, ImageFormat, RgbImage};

use crate::VisionError;

/// Why a set of outputs cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputConflict {
    /// An output is, or lies inside, a folder being read.
    #[error(
        "{flag} {} {relation} the input folder {}: Ember never writes among the images it reads; choose another {flag}",
        .path.display(), .folder.display()
    )]
    InInputFolder {
        /// The option that named the output.
        flag: &'static str,
        /// The output.
        path: PathBuf,
        /// `is` or `lies inside`.
        relation: &'static str,
        /// The folder read.
        folder: PathBuf,
    },
    /// An output is an input file (by path, symlink or hard link).
    #[error(
        "{flag} {} is the {what} {}: Ember never writes over its inputs; choose another {flag}",
        .path.display(), .input.display()
    )]
    OverInput {
        /// The option that named the output.
        flag: &'static str,
        /// The output.
        path: PathBuf,
        /// `input image`, `model`, …
        what: &'static str,
        /// The input.
        input: PathBuf,
    },
    /// Two outputs are one file.
    #[error("{who} are the same file {}; choose different paths", .path.display())]
    SameFile {
        /// `--out and --summary`, `two outputs of --out-dir`.
        who: String,
        /// The file.
        path: PathBuf,
    },
    /// An output exists as something other than what is written there.
    #[error("{flag} {} is {kind}; {expected}", .path.display())]
    WrongKind {
        /// The option that named the output.
        flag: &'static str,
        /// The output.
        path: PathBuf,
        /// `a FIFO`, `a folder`, …
        kind: &'static str,
        /// What is needed instead.
        expected: &'static str,
    },
}

/// What a run reads.
#[derive(Debug, Default)]
pub struct ReadPaths {
    /// Files, each with what it is (`model`, `input image`, `labels`, …).
    pub files: Vec<(&'static str, PathBuf)>,
    /// Folders whose images are read.
    pub folders: Vec<PathBuf>,
}

/// One file or folder a run writes, and the option that chose it.
#[derive(Debug, Clone)]
pub struct Written {
    /// `--out`, `--save-npy`, …
    pub flag: &'static str,
    /// The path.
    pub path: PathBuf,
}

impl Written {
    /// The output at `path`, chosen by `flag`.
    pub fn new(flag: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            flag,
            path: path.into(),
        }
    }
}

/// Refuses outputs that are an input file (by path, through symlinks or as a hard link), lie
/// inside an input folder, or are the same file as another output. `outputs` are files except
/// those listed in `folders_written` (written into, checked only against input folders).
pub fn check_outputs(read: &ReadPaths, outputs: &[Written], folders_written: &[Written]) -> Result<(), OutputConflict> {
    let mut inputs: HashMap<PathBuf, (&'static str, &Path)> = HashMap::new();
    let mut input_ids: HashMap<(u64, u64), (&'static str, &Path)> = HashMap::new();
    for (what, path) in &read.files {
        inputs.insert(resolve(path), (what, path));
        if let Some(id) = file_id(path) {
            input_ids.insert(id, (what, path));
        }
    }
    let folders: Vec<(PathBuf, &Path)> = read.folders.iter().map(|f| (resolve(f), f.as_path())).collect();
    for written in folders_written.iter().chain(outputs) {
        let resolved = resolve(&written.path);
        if let Some((folder, shown)) = folders.iter().find(|(folder, _)| resolved.starts_with(folder)) {
            return Err(OutputConflict::InInputFolder {
                flag: written.flag,
                path: written.path.clone(),
                relation: if &resolved == folder { "is" } else { "lies inside" },
                folder: shown.to_path_buf(),
            });
        }
    }
    // Writing to a FIFO would block until something reads it; to a device, go who knows where.
    for (written, folder) in outputs
        .iter()
        .map(|w| (w, false))
        .chain(folders_written.iter().map(|w| (w, true)))
    {
        if let Ok(metadata) = std::fs::metadata(&written.path)
            && (if folder {
                !metadata.is_dir()
            } else {
                !metadata.is_file()
            })
        {
            return Err(OutputConflict::WrongKind {
                flag: written.flag,
                path: written.path.clone(),
                kind: ember_core::limits::file_kind(&metadata.file_type()),
                expected: if folder {
                    "it must be a folder"
                } else {
                    "Ember writes regular files only"
                },
            });
        }
    }
    let mut taken: HashMap<PathBuf, &Written> = HashMap::new();
    let mut taken_ids: HashMap<(u64, u64), &Written> = HashMap::new();
    for written in outputs {
        let resolved = resolve(&written.path);
        let id = file_id(&written.path);
        let input = inputs.get(&resolved).or_else(|| id.and_then(|id| input_ids.get(&id)));
        if let Some((what, path)) = input {
            return Err(OutputConflict::OverInput {
                flag: written.flag,
                path: written.path.clone(),
                what,
                input: path.to_path_buf(),
            });
        }
        let earlier = taken.get(&resolved).or_else(|| id.and_then(|id| taken_ids.get(&id)));
        if let Some(earlier) = earlier {
            return Err(OutputConflict::SameFile {
                who: if earlier.flag == written.flag {
                    format!("two outputs of {}", written.flag)
                } else {
                    format!("{} and {}", earlier.flag, written.flag)
                },
                path: written.path.clone(),
            });
        }
        taken.insert(resolved, written);
        if let Some(id) = id {
            taken_ids.insert(id, written);
        }
    }
    Ok(())
}

/// The absolute path, `.` and `..` applied, with the part that exists resolved through
/// symlinks (outputs usually do not exist yet).
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    let mut existing = normal.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return missing.iter().rev().fold(real, |path, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => return normal,
        }
    }
}

/// Device and inode of an existing file: hard links share them.
#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &Path) -> Option<(u64, u64)> {
    None
}

/// Writes `path` whole or not at all: the bytes go to a temporary file beside it, which is then
/// renamed over `path`. An interrupted run never leaves a truncated output that a later
/// `--resume` would take for a finished one, and an existing file at `path` is replaced, never
/// written through (a hard link to it keeps its old content).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    // A short name (the output's own may already be near the file system's limit), unique in
    // this process and among processes.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let temporary = path.with_file_name(format!(
        ".ember-{}-{}.partial",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = File::create(&temporary).and_then(|file| {
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        writer.into_inner().map_err(|e| e.into_error())?.sync_data()
    });
    match written.and_then(|()| std::fs::rename(&temporary, path)) {
        Ok(()) => Ok(()),
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            Err(error)
        }
    }
}

/// Saves a picture atomically (see [`write_atomically`]) in the format its extension names
/// (PNG with fast compression, JPEG at quality 90).
pub fn save_picture(picture: &RgbImage, path: &Path) -> Result<(), VisionError> {
    let format = ImageFormat::from_path(path).map_err(|source| VisionError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut encoded = Ok(());
    let written = write_atomically(path, |writer| {
        encoded = match format {
            ImageFormat::Png => picture.write_with_encoder(PngEncoder::new_with_quality(
                writer,
                CompressionType::Fast,
                PngFilter::Adaptive,
            )),
            ImageFormat::Jpeg => picture.write_with_encoder(JpegEncoder::new_with_quality(writer, 90)),
            other => picture.write_to(writer, other),
        };
        match &encoded {
            Ok(()) => Ok(()),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        }
    });
    encoded.map_err(|source| VisionError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    written.map_err(|source| VisionError::Write {
        path: path.to_path_buf(),
        source: ImageError::IoError(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-paths-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn message(result: Result<(), OutputConflict>) -> String {
        result.expect_err("a conflict").to_string()
    }

    #[test]
    fn outputs_over_inputs_are_refused_by_path_link_or_folder() {
        let dir = folder("inputs");
        let photo = dir.join("photo.png");
        std::fs::write(&photo, b"png").unwrap();
        let read = ReadPaths {
            files: vec![("image", photo.clone())],
            folders: vec![],
        };
        // The same file by another spelling.
        let spelled = dir.join("sub/../photo.png");
        let text = message(check_outputs(&read, &[Written::new("--out", &spelled)], &[]));
        assert!(text.contains("is the image"), "{text}");
        // A hard link.
        let link = dir.join("link.png");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&photo, &link).unwrap();
        assert!(message(check_outputs(&read, &[Written::new("--out", &link)], &[])).contains("is the image"));
        // A symlink.
        #[cfg(unix)]
        {
            let symlink = dir.join("symlink.png");
            let _ = std::fs::remove_file(&symlink);
            std::os::unix::fs::symlink(&photo, &symlink).unwrap();
            assert!(message(check_outputs(&read, &[Written::new("--out", &symlink)], &[])).contains("is the image"));
        }
        // A folder being read, and anything inside it.
        let read = ReadPaths {
            files: vec![],
            folders: vec![dir.clone()],
        };
        let text = message(check_outputs(&read, &[], &[Written::new("--out-dir", &dir)]));
        assert!(text.contains("is the input folder"), "{text}");
        let text = message(check_outputs(
            &read,
            &[Written::new("--summary", dir.join("new/summary.json"))],
            &[],
        ));
        assert!(text.contains("lies inside the input folder"), "{text}");
        // Elsewhere is fine.
        let elsewhere = folder("outputs");
        assert!(check_outputs(&read, &[Written::new("--out", elsewhere.join("a.png"))], &[]).is_ok());
    }

    #[test]
    fn two_outputs_may_not_be_one_file() {
        let dir = folder("pairs");
        let outputs = [
            Written::new("--out", dir.join("a.png")),
            Written::new("--summary", dir.join("./a.png")),
        ];
        let text = message(check_outputs(&ReadPaths::default(), &outputs, &[]));
        assert!(text.contains("--out and --summary are the same file"), "{text}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_partial_one() {
        let dir = std::env::temp_dir().join(format!("ember-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.json");
        std::fs::write(&path, "old").unwrap();
        let failed = write_atomically(&path, |file| {
            std::io::Write::write_all(file, b"half")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no partial file is left");
        write_atomically(&path, |file| std::io::Write::write_all(file, b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}
