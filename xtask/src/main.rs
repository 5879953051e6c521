//! Project tasks: `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use serde_json::Value;

mod study;
mod throughput;

#[derive(Parser)]
#[command(about = "Ember's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Re-export models/mobilenet_v2.onnx and its fixture with PyTorch (needs Python and PyPI).
    ExportMobilenet,
    /// Re-export models/efficientnet_lite0.onnx (the pretrained EfficientNet-Lite0) and its
    /// fixture with PyTorch and pytorch-grad-cam (needs Python and PyPI).
    ExportEfficientnetLite,
    /// Regenerate the pytorch-grad-cam reference fixtures in tests/fixtures/ (needs Python and PyPI).
    Reference,
    /// Regenerate the architecture zoo of the run-time executor in tests/fixtures/zoo/ (needs
    /// Python and PyPI).
    Zoo,
    /// Regenerate the hostile-input corpus in tests/fixtures/hostile/ (needs Python and PyPI,
    /// only the pinned `onnx`, `numpy` and their dependencies).
    Hostile,
    /// Regenerate tests/fixtures/reference_eigen.npz, pytorch-grad-cam's EigenCAM projections of
    /// the reference activations (needs Python and PyPI: numpy, scikit-learn, grad-cam; no torch).
    Eigen,
    /// Regenerate tests/fixtures/reference_ablation.npz, pytorch-grad-cam's AblationCAM runs
    /// (needs Python and PyPI: the full pinned requirements, torch included).
    Ablation,
    /// Regenerate tests/fixtures/reference_score.npz, pytorch-grad-cam's ScoreCAM runs (needs
    /// Python and PyPI: the full pinned requirements, torch included).
    Score,
    /// Regenerate tests/fixtures/reference_guided.npz, pytorch-grad-cam's Guided Backpropagation
    /// and Guided Grad-CAM (needs Python and PyPI: the full pinned requirements, torch included).
    Guided,
    /// Regenerate tests/fixtures/reference_smooth.npz, pytorch-grad-cam's eigen_smooth and
    /// aug_smooth runs (needs Python and PyPI: the full pinned requirements, torch included).
    Smooth,
    /// Regenerate tests/fixtures/reference_metrics.npz, pytorch-grad-cam's and torch-cam's
    /// faithfulness metrics (needs Python and PyPI: the full pinned requirements, torch included).
    Metrics,
    /// The rectifier study (docs/sign-study.md): MobileNetV2 and EfficientNet-Lite0 on mosaics of
    /// the bundled photos, every listed method × relu/abs/signed/counterfactual × two layers,
    /// scored by `ember evaluate`; tables to docs/sign-study-<model>-results.md.
    SignStudy(StudyArgs),
    /// Build the crate in tests/user-crate — outside the workspace, depending only on ember-cam
    /// (and ember-onnx in its build script) — importing an ONNX model at build time, run it, and
    /// check that its map equals `ember explain` on the same file (≤ 1e-4).
    UserCrate(UserCrateArgs),
    /// ONNX's backend node tests (from the pinned PyPI `onnx`) through `ember run`: the pass rate
    /// and every failure to docs/conformance.md; `--write-subset` also refreshes the fast subset
    /// in tests/fixtures/conformance/.
    Conformance(ConformanceArgs),
    /// Time explanations against forward passes, side by side with pytorch-grad-cam when
    /// `--python` points at a Python with torch and grad-cam (e.g. target/reference-venv/bin/python).
    Bench(BenchArgs),
    /// A folder of photos explained end to end (decoding, Grad-CAM, overlays on the photos,
    /// summary) by a release `ember explain` on flex, side by side with pytorch-grad-cam's batch
    /// loop doing the same work when `--python` (or target/reference-venv) has torch and grad-cam.
    Throughput(ThroughputArgs),
}

#[derive(clap::Args)]
struct ThroughputArgs {
    /// Photos in the folder (JPEGs made from the bundled ones, 432–720 pixels wide).
    #[arg(long, default_value_t = 100)]
    photos: usize,
    /// Alternating runs of each tool; the medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Images per batch, for both tools.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// A Python with torch and grad-cam (default: target/reference-venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Only flex, batch 1, Grad-CAM (under a minute after the build).
    #[arg(long)]
    quick: bool,
    /// Backends: flex, ndarray, wgpu (the last two are compiled in on demand).
    #[arg(long, value_delimiter = ',', default_value = "flex,ndarray,wgpu")]
    backends: Vec<String>,
    /// Timed runs per row, after 3 warm-up runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Methods (default: gradcam,hirescam,gradcam++; pytorch-grad-cam rows for those it has).
    #[arg(long)]
    methods: Option<String>,
    /// Batch sizes (default: 1,8).
    #[arg(long)]
    batches: Option<String>,
    /// Explained layers as MobileNetV2 block indices (`features[i]`), by default one per
    /// resolution: 1 (112×112), 3 (56×56), 6 (28×28), 13 (14×14), 18 (7×7, the last block);
    /// with `--quick`, 18.
    #[arg(long)]
    layers: Option<String>,
    /// Warm-up pairs before the timed runs (fewer for slow methods such as ScoreCAM).
    #[arg(long, default_value_t = 3)]
    warmups: usize,
    /// Faithfulness metrics timed against a forward pass too: deletion-insertion.
    #[arg(long)]
    metrics: Option<String>,
    /// Also write the rows as a JSON list.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A Python with torch and grad-cam for the pytorch-grad-cam rows; found automatically in
    /// target/reference-venv when present.
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(clap::Args)]
struct StudyArgs {
    /// The pretrained models studied, comma-separated (default: all of them): mobilenet-v2
    /// (models/mobilenet_v2.onnx), efficientnet-lite0 (models/efficientnet_lite0.onnx).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Methods (ScoreCAM is left out by default: 1280 forward passes per map at the last block).
    #[arg(
        long,
        default_value = "gradcam,hirescam,gradcam-elementwise,xgradcam,gradcam++,layercam,eigencam,eigengradcam,ablationcam,randomcam"
    )]
    methods: String,
    /// Deletion/insertion intervals.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The photos whose mosaics are explained (file-name prefixes).
    #[arg(long, value_delimiter = ',', default_value = "chelsea,coffee,rocket")]
    photos: Vec<String>,
    /// What the metrics score (`ember evaluate --metric-score`): `probability` (tables in
    /// docs/sign-study-<model>-results.md) or `logit` (docs/sign-study-<model>-results-logit.md).
    #[arg(long, default_value = "probability", value_parser = ["probability", "logit"])]
    metric_score: String,
    /// The `ember` binary to run (default: built with `cargo build --release -p ember-cli`).
    #[arg(long)]
    ember: Option<PathBuf>,
    /// Only rebuild the tables from the rows an earlier run left in target/sign-study/.
    #[arg(long)]
    tables_only: bool,
}

#[derive(clap::Args)]
struct ConformanceArgs {
    /// The `ember` binary to run (default: built with `cargo build --release -p ember-cli`).
    #[arg(long)]
    ember: Option<PathBuf>,
    /// Also rewrite tests/fixtures/conformance/ (up to three passing cases per operator).
    #[arg(long)]
    write_subset: bool,
}

#[derive(clap::Args)]
struct UserCrateArgs {
    /// The ONNX classifier to import (default: the zoo's softmax-ended PaddlePaddle-style model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The input tensor's height and width (`HxW` or `N`), for models with a dynamic size.
    #[arg(long, default_value = "64")]
    size: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::ExportMobilenet => run_python("export_mobilenet.py", None),
        Task::ExportEfficientnetLite => run_python("export_efficientnet_lite.py", None),
        Task::Reference => run_python("make_fixtures.py", None),
        Task::Zoo => run_python("make_zoo.py", None),
        Task::Hostile => run_python(
            "make_hostile.py",
            Some(&["onnx", "numpy", "protobuf", "typing_extensions", "ml_dtypes"]),
        ),
        Task::Ablation => run_python("make_ablation_fixtures.py", None),
        Task::Score => run_python("make_score_fixtures.py", None),
        Task::Guided => run_python("make_guided_fixtures.py", None),
        Task::Smooth => run_python("make_smooth_fixtures.py", None),
        Task::Metrics => run_python("make_metric_fixtures.py", None),
        Task::Eigen => run_python(
            "make_eigen_fixtures.py",
            Some(&[
                "numpy",
                "scikit-learn",
                "scipy",
                "joblib",
                "cloudpickle",
                "threadpoolctl",
                "grad-cam",
            ]),
        ),
        Task::SignStudy(args) => study::sign_study(
            &args.models,
            &args.methods,
            args.steps,
            &args.photos,
            &args.metric_score,
            args.ember.as_deref(),
            args.tables_only,
        ),
        Task::UserCrate(args) => user_crate(args),
        Task::Conformance(args) => conformance(args),
        Task::Bench(args) => bench(args),
        Task::Throughput(args) => throughput::throughput(args.photos, args.runs, args.batch, args.python),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `ember run` on ONNX's backend node tests (`xtask/reference/conformance.py`).
fn conformance(args: ConformanceArgs) -> Result<(), String> {
    let root = root();
    let ember = match args.ember {
        Some(path) => path,
        None => study::build_ember(&root)?,
    };
    let mut script_args = vec![ember.display().to_string()];
    if args.write_subset {
        script_args.push("--write-subset".into());
    }
    run_python_with(
        "conformance.py",
        Some(&["onnx", "numpy", "protobuf", "typing_extensions", "ml_dtypes"]),
        &script_args,
    )
}

/// Runs a script of `xtask/reference/` in a virtual environment with the pinned requirements
/// (all of them, or only the packages named in `only`, at their pinned versions).
fn run_python(script: &str, only: Option<&[&str]>) -> Result<(), String> {
    run_python_with(script, only, &[])
}

/// [`run_python`] with arguments for the script.
fn run_python_with(script: &str, only: Option<&[&str]>, args: &[String]) -> Result<(), String> {
    let root = root();
    let venv = root.join("target").join("reference-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = root.join("xtask/reference/requirements.txt");
    match only {
        None => run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(requirements))?,
        Some(names) => {
            let text = std::fs::read_to_string(&requirements)
                .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
            let pinned: Vec<&str> = text
                .lines()
                .filter(|line| names.iter().any(|name| line.split("==").next() == Some(*name)))
                .collect();
            if pinned.len() != names.len() {
                return Err(format!("{} does not pin all of {names:?}", requirements.display()));
            }
            // Exactly these packages, with their pinned dependencies listed too: grad-cam's
            // declared dependencies would pull torch.
            run(Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--no-deps"])
                .args(pinned))?
        }
    }
    run(Command::new(&python)
        .arg(root.join("xtask/reference").join(script))
        .args(args)
        .current_dir(&root))
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

/// Runs Ember's benchmark example (and pytorch-grad-cam's when Python allows) and prints one table.
fn bench(args: BenchArgs) -> Result<(), String> {
    let root = root();
    let layers = args
        .layers
        .clone()
        .unwrap_or_else(|| if args.quick { "18" } else { "1,3,6,13,18" }.to_owned());
    let (backends, batches, methods) = if args.quick {
        (vec!["flex".to_owned()], "1".to_owned(), "gradcam".to_owned())
    } else {
        (
            args.backends.clone(),
            args.batches.clone().unwrap_or_else(|| "1,8".to_owned()),
            args.methods
                .clone()
                .unwrap_or_else(|| "gradcam,hirescam,gradcam++".to_owned()),
        )
    };
    let (batches, methods) = (batches.as_str(), methods.as_str());
    let features: Vec<&str> = backends.iter().filter(|b| *b != "flex").map(String::as_str).collect();
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(&root)
        .args(["run", "--quiet", "--release", "--example", "bench"])
        .args(if features.is_empty() {
            vec![]
        } else {
            vec!["--features".to_owned(), features.join(",")]
        })
        .args([
            "--",
            "--backends",
            &backends.join(","),
            "--batches",
            batches,
            "--methods",
            methods,
            "--layers",
            &layers,
            "--warmups",
            &args.warmups.to_string(),
        ])
        .args(["--runs", &args.runs.to_string()]);
    if let Some(metrics) = &args.metrics {
        command.args(["--metrics", metrics]);
    }
    let mut rows = json_lines(&mut command)?;

    let python = args.python.clone().or_else(|| {
        let venv = root.join("target/reference-venv/bin/python");
        venv.exists().then_some(venv)
    });
    match python {
        Some(python) => {
            let mut command = Command::new(python);
            command.current_dir(root.join("xtask/reference")).args([
                "bench_pytorch.py",
                "--batches",
                batches,
                "--methods",
                methods,
                "--layers",
                &layers,
                "--warmups",
                &args.warmups.to_string(),
                "--runs",
                &args.runs.to_string(),
            ]);
            match json_lines(&mut command) {
                Ok(python_rows) => rows.extend(python_rows),
                Err(e) => eprintln!("pytorch-grad-cam rows skipped: {e}"),
            }
        }
        None => eprintln!("pytorch-grad-cam rows skipped: no --python and no target/reference-venv"),
    }

    println!(
        "| model | layer | batch | backend | method | forward ms | explain ms | explain / forward | peak heap MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            field(row, "model"),
            field(row, "layer"),
            field(row, "batch"),
            field(row, "backend"),
            field(row, "method"),
            field(row, "forward_ms"),
            field(row, "explain_ms"),
            field(row, "ratio"),
            field(row, "peak_heap_mib"),
        );
    }
    if let Some(path) = &args.json {
        let list = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(path, list + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The JSON objects a command prints on stdout, one per line.
fn json_lines(command: &mut Command) -> Result<Vec<Value>, String> {
    let output = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad benchmark row `{l}`: {e}")))
        .collect()
}

/// A field of a row for the table; `-` when absent.
fn field(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `cargo xtask user-crate`.
fn user_crate(args: UserCrateArgs) -> Result<(), String> {
    let root = root();
    let crate_dir = root.join("tests/user-crate");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let scratch = target.join("user-crate-check");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let model = args
        .model
        .unwrap_or_else(|| root.join("tests/fixtures/zoo/paddle_style.onnx"));
    let model = std::path::absolute(&model).map_err(|e| format!("{}: {e}", model.display()))?;
    let [height, width] = match args.size.split_once(['x', 'X']) {
        Some((h, w)) => [h, w],
        None => [args.size.as_str(), args.size.as_str()],
    }
    .map(|side| {
        side.trim()
            .parse::<usize>()
            .map_err(|_| format!("--size {} is not N or HxW", args.size))
    });
    let (height, width) = (height?, width?);

    // The same versions as the workspace: the user crate's lock file is the workspace's.
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock"))
        .map_err(|e| format!("cannot copy Cargo.lock: {e}"))?;
    let input = scratch.join("input.npy");
    let values: Vec<f32> = (0..3 * height * width).map(|i| ((i as f32) * 0.37).sin()).collect();
    write_f32_npy(&input, &values, &[1, 3, height, width])?;

    let user_map = scratch.join("user-crate.npy");
    run(Command::new(env!("CARGO"))
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("EMBER_USER_MODEL", &model)
        .args(["run", "--quiet", "--"])
        .arg(&input)
        .arg(&user_map))?;
    // `ember` as the workspace's tests build it.
    run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--quiet",
        "--workspace",
        "--features",
        "ndarray,wgpu,train",
    ]))?;
    let ember_map = scratch.join("ember.npy");
    run(Command::new(
        target
            .join("debug")
            .join(format!("ember{}", std::env::consts::EXE_SUFFIX)),
    )
    .args(["explain", "--device", "flex", "--model"])
    .arg(&model)
    .arg("--input-npy")
    .arg(&input)
    .arg("--out")
    .arg(scratch.join("ember.png"))
    .arg("--save-npy")
    .arg(&ember_map))?;
    let (ours, theirs) = (read_f32_npy(&user_map)?, read_f32_npy(&ember_map)?);
    if ours.len() != theirs.len() {
        return Err(format!("the maps have {} and {} values", ours.len(), theirs.len()));
    }
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "user crate (build-time import of {}) vs `ember explain`: {} map values, worst difference {worst:.1e}",
        model.display(),
        ours.len()
    );
    if worst > 1e-4 {
        return Err(format!(
            "the user crate's map differs from ember's by {worst} (bound 1e-4)"
        ));
    }
    Ok(())
}

/// A little-endian float32 `.npy` (version 1.0, C order).
fn write_f32_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<(), String> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for value in values {
        bytes.extend(value.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The values of a little-endian float32 `.npy` written by Ember.
fn read_f32_npy(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header = bytes
        .get(8..10)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| format!("{} is not a .npy file", path.display()))?;
    let data = bytes
        .get(10 + header..)
        .ok_or_else(|| format!("{} is truncated", path.display()))?;
    Ok(data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
