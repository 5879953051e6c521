//! Typed errors of loading and running an ONNX model.

use std::path::PathBuf;

use thiserror::Error;

/// Why an ONNX model cannot be loaded or run.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The file could not be read, decoded or tapped (missing file, not ONNX, bad external data).
    #[error(transparent)]
    Import(#[from] ember_onnx::ImportError),

    /// onnx-ir rejected the graph.
    #[error("onnx-ir cannot parse {path}: {message}")]
    Parse {
        /// The model file.
        path: PathBuf,
        /// onnx-ir's message.
        message: String,
    },

    /// The graph uses operators the executor does not implement.
    #[error("{path}: unsupported ONNX operator{} {}", if .ops.len() > 1 { "s" } else { "" }, .ops.join("; "))]
    UnsupportedOps {
        /// The model file.
        path: PathBuf,
        /// `Op (node `name`)` for each unsupported node, at most a few.
        ops: Vec<String>,
    },

    /// The graph's inputs or outputs are not those of an image classifier.
    #[error("{path}: {message}")]
    NotAClassifier {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A node failed while running.
    #[error("node `{node}` ({op}): {message}")]
    Node {
        /// The node (onnx-ir's name for it).
        node: String,
        /// Its operator.
        op: String,
        /// What went wrong.
        message: String,
    },
}

impl From<RuntimeError> for ember_core::CamError {
    fn from(error: RuntimeError) -> Self {
        ember_core::CamError::Model(error.to_string())
    }
}
