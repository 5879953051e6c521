//! Project tasks: `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use serde_json::Value;

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
    /// Regenerate the pytorch-grad-cam reference fixtures in tests/fixtures/ (needs Python and PyPI).
    Reference,
    /// Regenerate the architecture zoo of the run-time executor in tests/fixtures/zoo/ (needs
    /// Python and PyPI).
    Zoo,
    /// Regenerate the hostile-input corpus in tests/fixtures/hostile/ (needs Python and PyPI,
    /// only the pinned `onnx` and `numpy`).
    Hostile,
    /// Time explanations against forward passes, side by side with pytorch-grad-cam when
    /// `--python` points at a Python with torch and grad-cam (e.g. target/reference-venv/bin/python).
    Bench(BenchArgs),
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
    /// Also write the rows as a JSON list.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A Python with torch and grad-cam for the pytorch-grad-cam rows; found automatically in
    /// target/reference-venv when present.
    #[arg(long)]
    python: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::ExportMobilenet => run_python("export_mobilenet.py", None),
        Task::Reference => run_python("make_fixtures.py", None),
        Task::Zoo => run_python("make_zoo.py", None),
        Task::Hostile => run_python("make_hostile.py", Some(&["onnx", "numpy"])),
        Task::Bench(args) => bench(args),
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

/// Runs a script of `xtask/reference/` in a virtual environment with the pinned requirements
/// (all of them, or only the packages named in `only`, at their pinned versions).
fn run_python(script: &str, only: Option<&[&str]>) -> Result<(), String> {
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
            run(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(pinned))?
        }
    }
    run(Command::new(&python)
        .arg(root.join("xtask/reference").join(script))
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
    let (backends, batches, methods) = if args.quick {
        (vec!["flex".to_owned()], "1", "gradcam")
    } else {
        (args.backends.clone(), "1,8", "gradcam,hirescam,gradcam++")
    };
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
        ])
        .args(["--runs", &args.runs.to_string()]);
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

    println!("| model | batch | backend | method | forward ms | explain ms | explain / forward | peak heap MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            field(row, "model"),
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
