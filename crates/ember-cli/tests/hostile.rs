//! Hostile input: every case is a one-line error with the documented exit status (or a correct
//! result), never an abort, a hang, a panic or a file written over an input.
//!
//! The corpus in `tests/fixtures/hostile/` comes from `xtask/reference/make_hostile.py`
//! (`cargo xtask hostile`); the cases that need the file system at run time (FIFOs, device
//! files, symlinks, hard links, non-UTF-8 names, outputs over inputs) are built here. Every run
//! is limited to 4 GiB of address space, so an allocation that escapes the memory budget
//! fails the test (the process aborts) instead of taking the machine down, and to 120 s, so a
//! hang fails it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The address-space limit of every run, in KiB.
const ADDRESS_SPACE_KIB: u64 = 4 * 1024 * 1024;
/// A run still going after this long is a hang.
const HANG: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/hostile")
}

/// A fresh, empty folder for one case.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("ember-hostile-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one run of `ember` did.
struct Run {
    output: Output,
    hung: bool,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Why this run is not a clean `exit` (with `message` in its one-line error), if it is not.
    fn problem(&self, exit: i32, message: &str) -> Option<String> {
        let stderr = self.stderr();
        if self.hung {
            return Some(format!("hung (killed after {} s)", HANG.as_secs()));
        }
        if self.code() != Some(exit) {
            return Some(format!(
                "exit {:?} (signal or abort if None), expected {exit}; stderr: {}",
                self.code(),
                stderr.trim_end()
            ));
        }
        if exit == 0 {
            return None;
        }
        let one_line = stderr.trim_end().lines().count() == 1 && stderr.starts_with("error: ");
        if !one_line || stderr.contains("internal failure") || stderr.contains("panicked") {
            return Some(format!("not a one-line error: {}", stderr.trim_end()));
        }
        if !stderr.contains(message) {
            return Some(format!("expected `{message}` in: {}", stderr.trim_end()));
        }
        None
    }
}

/// Runs `ember` with `args` under the address-space limit and the hang timeout.
fn ember(args: &[&std::ffi::OsStr]) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        // glibc reserves 64 MiB of address space per thread arena; a few are plenty here.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let started = Instant::now();
    let mut hung = false;
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > HANG {
            hung = true;
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    Run { output, hung }
}

fn os(args: &[String]) -> Vec<&std::ffi::OsStr> {
    args.iter().map(std::ffi::OsStr::new).collect()
}

/// `explain` on flex with the corpus's tiny dynamic-size model at 16×16 and `extra` arguments.
fn explain(extra: &[&str]) -> Run {
    let model = fixtures().join("tiny.onnx");
    let mut args: Vec<String> = ["explain", "--device", "flex", "--size", "16", "--model"]
        .map(String::from)
        .to_vec();
    args.push(model.to_str().unwrap().to_owned());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    ember(&os(&args))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_generated_corpus() {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json (cargo xtask hostile)");
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let dir = fixtures();
    let mut problems = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let out = scratch(name);
        let args: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("{dir}", path(&dir))
                    .replace("{out}", path(&out))
            })
            .collect();
        let exit = case["exit"].as_i64().unwrap() as i32;
        let run = ember(&os(&args));
        if let Some(problem) = run.problem(exit, case["message"].as_str().unwrap()) {
            problems.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases failed:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}
