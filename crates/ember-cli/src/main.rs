//! `ember`: explain any ONNX image classifier with Grad-CAM and its family, on the CPU or a GPU.
//!
//! ```text
//! ember ops
//! ember layers  --model model.onnx
//! ember run     --model model.onnx --input input=x.npy --save-outputs outputs/
//! ember explain --model model.onnx --image photo.jpg --out overlay.png
//! ember explain --model model.onnx --image photos/ --out-dir explanations/
//! ember explain --model model.onnx --input-npy tensor.npy --save-npy map.npy
//! ember explain --model model.onnx --image cat.jpg --method gradcam,scorecam --rectifier relu,abs
//! ember explain --model model.onnx --image photos/ --report --shard 0/4 && ember merge-summaries …
//! ember evaluate --model model.onnx --image photos/ --method gradcam,scorecam --rectifier relu,abs
//! ```

mod batch;
mod cli;
mod evaluate;
mod input;
mod jobs;
mod run;
mod session;

use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc keeps freed memory for reuse. With the system allocator every large tensor buffer
/// was mapped and unmapped again (glibc's `mmap` threshold), and the page faults and TLB
/// shootdowns took a quarter of a folder run's time (perf: 100 photos, 6.9 s → 5.1 s when glibc
/// was told to keep its memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (mimalloc.h, the same index in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc hands freed memory back to the system after a delay (1 s in mimalloc 3), and the
/// next tensor of that size faults its pages in and has them zeroed again. An explanation frees
/// and reallocates the same sizes every pass, so the memory is kept until the command ends
/// (bench, MobileNetV2 at `features[1]`, batch 8: 23.6 k → 0.9 k page faults a run, Grad-CAM
/// 535–581 → 494–495 ms in alternating runs).
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's integer options; any value is valid for this one.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Why a command failed, which decides the exit status (documented in `ember --help`).
#[derive(Debug)]
pub enum Failure {
    /// An input (model, image, tensor, labels) could not be read or explained: exit 1.
    Input(String),
    /// The arguments are invalid or contradict each other: exit 2, as clap's own errors.
    Usage(String),
}

impl Failure {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }
}

/// Any library error is a failed input.
impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Input(error.to_string())
    }
}

/// Exit statuses.
const EXIT_INPUT: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTERNAL: u8 = 3;

/// The message of the last panic, for the one-line report (the default hook prints a backtrace
/// banner that is no use to a user).
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap's message (what is wrong, the possible values, a tip) on one line; the usage
            // block is left to `--help`.
            let rendered = error.render().to_string();
            let parts: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let message = parts.join("; ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {message} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown failure".into());
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        if let Ok(mut last) = PANIC_MESSAGE.lock() {
            *last = Some(message + &location.unwrap_or_default());
        }
    }));
    if let Some(bytes) = cli.max_memory {
        ember_core::set_memory_budget(bytes);
    }
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Explain(args) => batch::explain(*args),
        Command::Evaluate(args) => evaluate::evaluate(*args),
        Command::Layers(args) => batch::layers(&args),
        Command::MergeSummaries(args) => jobs::merge(&args),
        Command::Run(args) => run::run(&args),
        Command::Ops => {
            for name in ember_runtime::supported_operators() {
                println!("{name}");
            }
            Ok(())
        }
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::Input(message))) => {
            eprintln!("error: {}", one_line(&message));
            ExitCode::from(EXIT_INPUT)
        }
        Ok(Err(Failure::Usage(message))) => {
            eprintln!("error: {}", one_line(&message));
            ExitCode::from(EXIT_USAGE)
        }
        Err(_) => {
            let message = PANIC_MESSAGE.lock().ok().and_then(|m| m.clone()).unwrap_or_default();
            // The reader of stdout went away (`ember layers … | head -1`): nothing is left to
            // report to.
            if message.starts_with("failed printing to stdout") {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "error: internal failure, please report it with the command that caused it: {}",
                one_line(&message)
            );
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

/// Messages from libraries may hold line breaks; the report is one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// The option index is mimalloc's purge delay: nothing has set it in this test process, so
    /// it reads mimalloc's default (10 ms in mimalloc 2, 1000 ms in mimalloc 3, which the crate
    /// builds by default; no other option defaults to 1000 there).
    #[test]
    fn the_purge_delay_index_is_mimallocs() {
        // SAFETY: reads one of mimalloc's integer options.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            value == 10 || value == 1000,
            "option {MI_OPTION_PURGE_DELAY} reads {value}: not mimalloc's purge delay"
        );
        // In mimalloc.h (2 and 3) the purge delay comes right before the NUMA node count, which
        // the crate names.
        assert_eq!(MI_OPTION_PURGE_DELAY, libmimalloc_sys::mi_option_use_numa_nodes - 1);
    }
}
