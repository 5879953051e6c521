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

/// `explain` on flex with the corpus's tiny dynamic-size model at 16×16 and `extra` arguments
/// (which name the input and the output).
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

/// Asserts a clean failure with `exit` and `message`.
fn assert_refused(run: &Run, exit: i32, message: &str) {
    if let Some(problem) = run.problem(exit, message) {
        panic!("{problem}");
    }
}

fn photo() -> PathBuf {
    fixtures().join("photo.png")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

#[test]
#[cfg(unix)]
fn fifos_and_devices_are_refused_without_reading() {
    let dir = scratch("special");
    let out = dir.join("overlay.png");
    let fifo_model = dir.join("model.onnx");
    mkfifo(&fifo_model);
    // Nothing ever writes to these FIFOs: opening one to read would block until the timeout.
    for (flag, name) in [
        ("--image", "pipe.png"),
        ("--labels", "labels.txt"),
        ("--input-npy", "tensor.npy"),
    ] {
        let fifo = dir.join(name);
        mkfifo(&fifo);
        let photo = photo();
        let mut args = vec![flag, path(&fifo), "--out", path(&out)];
        if flag == "--labels" {
            args.extend(["--image", path(&photo)]);
        }
        assert_refused(&explain(&args), 1, "not a regular file (a FIFO)");
    }
    let image = photo();
    let args = [
        "explain",
        "--device",
        "flex",
        "--model",
        path(&fifo_model),
        "--image",
        path(&image),
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    assert_refused(&ember(&os(&args)), 1, "not a regular file (a FIFO)");
    // Outputs: a FIFO would block the write, a device is not a file.
    let summary_fifo = dir.join("summary.json");
    mkfifo(&summary_fifo);
    assert_refused(
        &explain(&[
            "--image",
            path(&photo()),
            "--out",
            path(&out),
            "--summary",
            path(&summary_fifo),
        ]),
        2,
        "--summary",
    );
    assert_refused(
        &explain(&[
            "--image",
            path(&photo()),
            "--out",
            path(&out),
            "--save-npy",
            "/dev/full",
        ]),
        2,
        "is a device; Ember writes regular files only",
    );
    let args = ["layers", "--model", "/dev/zero"].map(String::from);
    assert_refused(&ember(&os(&args)), 1, "not a regular file (a device)");
    assert_refused(
        &explain(&["--image", "/dev/zero", "--out", path(&out)]),
        1,
        "not a regular file (a device)",
    );
}

#[test]
#[cfg(unix)]
fn external_data_may_not_leave_the_model_s_folder_through_a_symlink() {
    let outside = scratch("outside");
    std::fs::write(outside.join("secret.bin"), [0u8; 64]).unwrap();
    let dir = scratch("symlinked-model");
    // The corpus's model with its Conv bias in `weights.bin`, a symlink out of the folder.
    let model = onnx_with_external_bias(&dir, "weights.bin");
    std::os::unix::fs::symlink(outside.join("secret.bin"), dir.join("weights.bin")).unwrap();
    let args = ["layers", "--model", path(&model)].map(String::from);
    assert_refused(
        &ember(&os(&args)),
        1,
        "resolves (through a symlink) outside the model's folder",
    );
    // A symlink inside the folder is followed.
    std::fs::remove_file(dir.join("weights.bin")).unwrap();
    std::fs::write(dir.join("real.bin"), [0u8; 64]).unwrap();
    std::os::unix::fs::symlink(dir.join("real.bin"), dir.join("weights.bin")).unwrap();
    let run = ember(&os(&args));
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
}

/// A copy of the corpus's tiny model in `dir` whose Conv bias is external data at `location`.
fn onnx_with_external_bias(dir: &Path, location: &str) -> PathBuf {
    use onnx_ir::{Message, ModelProto};
    let bytes = std::fs::read(fixtures().join("tiny.onnx")).unwrap();
    let mut model = ModelProto::parse_from_bytes(&bytes).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let bias = graph.initializer.iter_mut().find(|t| t.name == "conv_b").unwrap();
    bias.raw_data.clear();
    bias.float_data.clear();
    for (key, value) in [("location", location), ("offset", "0"), ("length", "16")] {
        bias.external_data.push(Default::default());
        let entry = bias.external_data.last_mut().unwrap();
        entry.key = key.into();
        entry.value = value.into();
    }
    bias.data_location = protobuf::EnumOrUnknown::from_i32(1); // EXTERNAL
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
    path
}

#[test]
fn outputs_never_overwrite_inputs() {
    let dir = scratch("inputs");
    let image = dir.join("cat.png");
    std::fs::copy(photo(), &image).unwrap();
    let original = std::fs::read(&image).unwrap();
    // --out is the input image, by the same path or another spelling.
    assert_refused(
        &explain(&["--image", path(&image), "--out", path(&image)]),
        2,
        "is the input image",
    );
    let spelled = dir.join(".").join("cat.png");
    assert_refused(
        &explain(&["--image", path(&image), "--out", path(&spelled)]),
        2,
        "is the input image",
    );
    // The map or the summary over the image.
    let out = scratch("inputs-out").join("overlay.png");
    assert_refused(
        &explain(&["--image", path(&image), "--out", path(&out), "--summary", path(&image)]),
        2,
        "--summary",
    );
    // A hard link to the image.
    let link = scratch("inputs-link").join("cat.png");
    std::fs::hard_link(&image, &link).unwrap();
    assert_refused(
        &explain(&["--image", path(&image), "--out", path(&link)]),
        2,
        "is the input image",
    );
    // --out-dir is the folder being read, or inside it.
    assert_refused(
        &explain(&["--image", path(&dir), "--out-dir", path(&dir)]),
        2,
        "is the input folder",
    );
    assert_refused(
        &explain(&["--image", path(&dir), "--out-dir", path(&dir.join("explained"))]),
        2,
        "lies inside the input folder",
    );
    // --save-npy over the tensor read.
    let tensor = dir.join("tensor.npy");
    std::fs::copy(fixtures().join("npy_valid.npy"), &tensor).unwrap();
    let tensor_original = std::fs::read(&tensor).unwrap();
    assert_refused(
        &explain(&[
            "--input-npy",
            path(&tensor),
            "--out-dir",
            path(&scratch("t-out")),
            "--save-npy",
            path(&dir),
        ]),
        2,
        "--save-npy",
    );
    // The labels.
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "a\nb\nc\n").unwrap();
    assert_refused(
        &explain(&[
            "--image",
            path(&image),
            "--out",
            path(&out),
            "--labels",
            path(&labels),
            "--summary",
            path(&labels),
        ]),
        2,
        "is the labels",
    );
    // `ember run --save-outputs` into the tensor's folder, where the graph's output `logits`
    // would be written over an input named logits.npy.
    let logits = dir.join("logits.npy");
    std::fs::copy(fixtures().join("npy_valid.npy"), &logits).unwrap();
    let model = fixtures().join("tiny.onnx");
    let input = format!("x={}", path(&logits));
    let run = ember(&os(&[
        "run".into(),
        "--device".into(),
        "flex".into(),
        "--model".into(),
        path(&model).into(),
        "--input".into(),
        input,
        "--save-outputs".into(),
        path(&dir).into(),
    ]));
    assert_refused(&run, 2, "--save-outputs");
    assert_eq!(
        std::fs::read(&logits).unwrap(),
        tensor_original,
        "the run's input was changed"
    );
    assert_eq!(std::fs::read(&image).unwrap(), original, "the image was changed");
    assert_eq!(
        std::fs::read(&tensor).unwrap(),
        tensor_original,
        "the tensor was changed"
    );
    assert_eq!(std::fs::read_to_string(&labels).unwrap(), "a\nb\nc\n");
}

#[test]
#[cfg(target_os = "linux")]
fn a_folder_run_keeps_every_finished_image_and_writes_the_summary() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("folder-run");
    std::fs::copy(photo(), dir.join("a-good.png")).unwrap();
    // A file name that is not UTF-8 (was a panic after the overlays, before summary.json).
    let odd = std::ffi::OsStr::from_bytes(b"b-caf\xe9.png");
    std::fs::copy(photo(), dir.join(odd)).unwrap();
    // A broken image, and one whose overlay's name is a dangling symlink into a folder that
    // does not exist: outputs are written beside and renamed, so the link is replaced, never
    // followed.
    std::fs::write(dir.join("c-broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    std::fs::copy(photo(), dir.join("d-linked.png")).unwrap();
    let out = scratch("folder-run-out");
    std::os::unix::fs::symlink("/nonexistent/folder/d.png", out.join("d-linked.png")).unwrap();
    let run = explain(&["--image", path(&dir), "--out-dir", path(&out), "--batch-size", "2"]);
    assert_refused(&run, 1, "1 of 4 inputs failed");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let images = summary["images"].as_array().unwrap();
    assert_eq!(images.len(), 4, "{summary:#}");
    let row = |images: &[Value], prefix: &str| {
        images
            .iter()
            .find(|i| {
                let name = i["image"].as_str().unwrap();
                Path::new(name)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .unwrap_or_else(|| panic!("no row for {prefix}: {summary:#}"))
            .clone()
    };
    assert!(row(images, "a-good")["class"].is_u64());
    assert!(row(images, "b-caf")["class"].is_u64());
    assert!(
        row(images, "c-broken")["error"]
            .as_str()
            .unwrap()
            .contains("cannot read image")
    );
    assert!(row(images, "d-linked")["class"].is_u64());
    let linked = std::fs::symlink_metadata(out.join("d-linked.png")).unwrap();
    assert!(linked.is_file() && !Path::new("/nonexistent").exists());
    assert!(out.join("a-good.png").is_file());
    // Writes that fail (a folder where nothing can be created, even by root) are rows with
    // their error, and the summary is still written.
    let failing = scratch("folder-run-failing");
    let run = explain(&[
        "--image",
        path(&dir),
        "--out-dir",
        path(&failing),
        "--save-npy",
        "/proc/self",
        "--batch-size",
        "2",
    ]);
    assert_refused(&run, 1, "4 of 4 inputs failed");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(failing.join("summary.json")).unwrap()).unwrap();
    let images = summary["images"].as_array().unwrap();
    assert!(
        row(images, "a-good")["error"]
            .as_str()
            .unwrap()
            .contains("cannot write /proc/self/a-good.npy")
    );
    assert!(
        row(images, "c-broken")["error"]
            .as_str()
            .unwrap()
            .contains("cannot read image")
    );
    // The overlay keeps the file name's bytes.
    assert!(out.join(std::ffi::OsStr::from_bytes(b"b-caf\xe9.png")).is_file());
}

#[test]
fn non_square_sizes_give_maps_of_that_size() {
    // `--size 224x448` gave a 224×384 map: the centre crop silently shrank to the resized image.
    let out = scratch("non-square");
    let map = out.join("map.npy");
    let model = fixtures().join("tiny.onnx");
    let overlay = out.join("overlay.png");
    let args = [
        "explain",
        "--device",
        "flex",
        "--model",
        path(&model),
        "--size",
        "24x48",
        "--image",
        path(&photo()),
        "--out",
        path(&overlay),
        "--save-npy",
        path(&map),
    ]
    .map(String::from);
    let run = ember(&os(&args));
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let bytes = std::fs::read(&map).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.shape(), &[24, 48]);
}

#[test]
fn usage_errors_exit_2_and_help_documents_the_statuses() {
    let run = ember(&os(&["explain".into(), "--no-such-flag".into()]));
    assert_refused(&run, 2, "unexpected argument");
    let help = ember(&os(&["--help".into()]));
    assert_eq!(help.code(), Some(0));
    let text = String::from_utf8_lossy(&help.output.stdout);
    for status in ["0  done", "1  an input", "2  invalid arguments", "3  internal failure"] {
        assert!(text.contains(status), "--help lacks `{status}`: {text}");
    }
    assert!(text.contains("--max-memory"), "{text}");
}

#[test]
fn a_reader_that_goes_away_is_not_an_internal_failure() {
    // `ember layers … | head -1`: stdout is closed before ember writes to it.
    let model = fixtures().join("tiny.onnx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["layers", "--model", path(&model)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ember starts");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("ember ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
