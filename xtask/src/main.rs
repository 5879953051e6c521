//! Project tasks: `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let script = match cli.task {
        Task::ExportMobilenet => "export_mobilenet.py",
        Task::Reference => "make_fixtures.py",
    };
    match run_python(script) {
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

/// Runs a script of `xtask/reference/` in a virtual environment with the pinned requirements.
fn run_python(script: &str) -> Result<(), String> {
    let root = root();
    let venv = root.join("target").join("reference-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = root.join("xtask/reference/requirements.txt");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(requirements))?;
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
