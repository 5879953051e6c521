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

    /// A node's configuration is invalid or outside what the executor supports.
    #[error("{path}: {node}: {message}")]
    InvalidNode {
        /// The model file.
        path: PathBuf,
        /// `Op (node `name`)`.
        node: String,
        /// What is wrong.
        message: String,
    },

    /// The graph's inputs or outputs are not those of an image classifier.
    #[error("{path}: {message}")]
    NotAClassifier {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// Neither the input's shape nor the graph tells whether the input is channels-first or
    /// channels-last.
    #[error(
        "{path}: cannot tell whether the input {shape} is [N, C, H, W] or [N, H, W, C]; say which with \
         --input-layout nchw|nhwc (library: OnnxModel::load_as)"
    )]
    InputLayoutUndecided {
        /// The model file.
        path: PathBuf,
        /// The input's static shape.
        shape: String,
    },

    /// A tensor given to a graph does not fit the input it is given for.
    #[error("{path}: {message}")]
    BadInput {
        /// The model file.
        path: PathBuf,
        /// What does not fit.
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
        ember_core::CamError::model(error)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use ember_core::{CamError, ModelFailure};

    use super::RuntimeError;

    #[test]
    fn a_model_failure_keeps_the_runtime_error_as_its_source() {
        let error: CamError = RuntimeError::Node {
            node: "reshape3".into(),
            op: "Reshape".into(),
            message: "cannot reshape".into(),
        }
        .into();
        assert_eq!(
            error.to_string(),
            "the model failed to run: node `reshape3` (Reshape): cannot reshape"
        );
        let failure = error
            .source()
            .and_then(|s| s.downcast_ref::<ModelFailure>())
            .expect("the source is the model's failure");
        let runtime = failure
            .get_ref()
            .downcast_ref::<RuntimeError>()
            .expect("which is the runtime's own error");
        assert!(matches!(runtime, RuntimeError::Node { op, .. } if op == "Reshape"));
    }
}
