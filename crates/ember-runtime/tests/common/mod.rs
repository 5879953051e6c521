//! Fixture reading and comparisons shared by the integration tests of real and zoo models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository's root (fixtures and models live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every float32 array of an `.npz` fixture, by name: values and shape.
pub fn npz_arrays(path: &Path) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    let names: Vec<String> = npz.array_names().map(str::to_owned).collect();
    names
        .into_iter()
        .map(|key| {
            let array = npz.by_name(&key).unwrap().unwrap();
            let shape = array.shape().iter().map(|&d| d as usize).collect();
            (key, (array.into_vec::<f32>().unwrap(), shape))
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The largest difference relative to the reference's largest magnitude.
pub fn relative(ours: &[f32], reference: &[f32]) -> f32 {
    let scale = reference
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    max_abs_diff(ours, reference) / scale
}
