//! Running the examples as a user does, shared by the example tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

/// `target/<profile>/examples/<name>`, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The error case: non-zero exit, exactly one line on stderr starting with `error:`, no panic.
pub fn assert_clean_error(output: &Output, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "more than one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "unexpected message: {stderr}"
    );
    stderr
}

/// The success case: the standard output, or a failure showing both streams.
pub fn assert_success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
