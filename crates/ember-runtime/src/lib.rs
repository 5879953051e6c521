//! Load any ONNX image classifier at run time and explain it with Ember.
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use ember_core::{ClassTarget, Explainer, GradCam};
//! use ember_runtime::OnnxModel;
//!
//! let device = Device::flex();
//! let model = OnnxModel::load("models/mobilenet_v2.onnx", &device)?;
//! let input = Tensor::<4>::zeros([1, 3, 224, 224], &device);
//! let explanation = Explainer::new(GradCam).explain(&model, input, &ClassTarget::TopClass)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How
//!
//! The file goes through the same tap rewrite as build-time import ([`ember_onnx::tap_graph`]):
//! a tap node carrying the original ONNX node name follows every `[N, C, H, W]` float output.
//! onnx-ir then parses the rewritten graph into typed nodes with their weights, and
//! [`OnnxModel`] interprets them over Burn tensors: weights are uploaded once as constants (they
//! never require gradients), and each tap node calls [`ember_core::tap`], so layers are
//! addressed exactly as in build-time models and only the part of the graph after the explained
//! layer is differentiated.
//!
//! Every node is compiled through one operator table when the model loads
//! ([`supported_operators`] lists it): an operator the executor does not implement, or a node
//! whose attributes it cannot take, is an error naming the operator and the node before
//! anything runs.

mod error;
mod graph;
mod model;
mod ops;
mod plan;
mod value;

pub use ember_core::{FinalActivation, ScoreSource};
pub use error::RuntimeError;
pub use graph::{GraphValue, HostTensor, OnnxGraph};
pub use model::{DenseOnnxModel, LoadOptions, OnnxModel};

/// The ONNX operators the executor implements, each once, in the order of its operator table
/// (the table every loaded node is compiled through).
pub fn supported_operators() -> Vec<&'static str> {
    ops::supported()
}
