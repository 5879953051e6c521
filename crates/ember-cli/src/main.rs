//! `ember`: explain any ONNX image classifier with Grad-CAM and its family, on the CPU or a GPU.
//!
//! ```text
//! ember ops
//! ember layers  --model model.onnx
//! ember explain --model model.onnx --image photo.jpg --out overlay.png
//! ember explain --model model.onnx --image photos/ --out-dir explanations/
//! ember explain --model model.onnx --input-npy tensor.npy --save-npy map.npy
//! ```

mod batch;
mod cli;
mod input;

use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The message of the last panic, for the one-line report (the default hook prints a backtrace
/// banner that is no use to a user).
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    let cli = Cli::parse();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown failure".into());
        if let Ok(mut last) = PANIC_MESSAGE.lock() {
            *last = Some(message);
        }
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Explain(args) => batch::explain(*args),
        Command::Layers(args) => batch::layers(&args),
        Command::Ops => {
            for name in ember_runtime::supported_operators() {
                println!("{name}");
            }
            Ok(())
        }
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(_) => {
            let message = PANIC_MESSAGE.lock().ok().and_then(|m| m.clone()).unwrap_or_default();
            eprintln!("error: internal failure: {message}");
            ExitCode::from(2)
        }
    }
}
