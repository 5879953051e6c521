//! What the tests of the `ember` binary share: running it, scratch folders, checks of its
//! output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn path(relative: &str) -> String {
    root().join(relative).to_str().unwrap().to_owned()
}

/// Runs `ember`; `explain` on flex unless a device is chosen (with `--features wgpu` the default
/// is wgpu; backend parity is tested elsewhere).
pub fn ember(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command.args(args);
    if args.first() == Some(&"explain") && !args.contains(&"--device") {
        command.args(["--device", "flex"]);
    }
    command.output().expect("ember runs")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ember failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Non-zero exit, one line on stderr starting with `error:`, no panic.
pub fn assert_clean_error(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "more than one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
}

pub fn mobilenet_path() -> String {
    path("models/mobilenet_v2.onnx")
}

pub fn read_npy(path: &Path) -> (Vec<f32>, Vec<u64>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (npy.into_vec::<f32>().unwrap(), shape)
}
