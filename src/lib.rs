#![doc = include_str!("../README.md")]

pub use ember_core::*;

/// Image decoding, pre-processing, colour maps and overlays.
pub use ember_vision as vision;

/// The run-time ONNX executor: load any ONNX classifier and explain it (the `runtime` feature).
#[cfg(feature = "runtime")]
pub use ember_runtime as runtime;

/// Explanations during training: per-epoch sheets from burn-train's Learner or a hand-written
/// loop (the `train` feature).
#[cfg(feature = "train")]
pub use ember_train as train;

/// Re-exported so users need no direct burn dependency: the code `ember-onnx` generates reaches
/// Burn through it.
pub use burn;

/// Re-exported for the code `ember-onnx` generates, which loads weights through it.
#[doc(hidden)]
pub use burn_store;

#[cfg(feature = "mobilenet")]
pub mod models;
