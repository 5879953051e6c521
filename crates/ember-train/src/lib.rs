//! Explanations inside Burn training projects.
//!
//! * [`TrainingExplanations`] — a fixed set of validation images explained at stages of a
//!   training run: one sheet per stage (images × explainers, true and predicted class) and an
//!   `index.html` that shows the maps change across stages. Call
//!   [`explain`](TrainingExplanations::explain) from a hand-written loop with the model as it is
//!   (parameters on an autodiff device are fine: the training state is left untouched);
//! * [`ExplainingCheckpointer`] — the same from a burn-train `Learner` run, through burn-train's
//!   own extension point (its model checkpointer);
//! * [`ExplanationFacts`] — the Learner's validation metrics beside the maps;
//! * [`FashionMnist`] and the IDX reader — a real data set from Debian's `dataset-fashion-mnist`.

mod checkpointer;
mod explanations;
mod facts;
pub mod idx;
mod renderer;

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Tensor;

pub use checkpointer::ExplainingCheckpointer;
pub use explanations::{Stage, StageRecord, TrainingExplanations};
pub use facts::{EpochCallback, ExplanationFacts};
pub use idx::{FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FashionMnist, IdxImages, LabelledImages};
pub use renderer::SilentRenderer;

/// A Burn image classifier: the module and its forward pass from an image batch
/// `[N, C, H, W]` to class scores `[N, classes]`. Place [`ember_core::LayerTap`]s in the forward
/// pass where maps may be taken.
pub trait ImageClassifier: Module {
    /// The class scores (logits) of `images`.
    fn classify(&self, images: Tensor<4>) -> Tensor<2>;
}

/// Why explaining during training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The explanations were set up with inconsistent images, labels or folders.
    #[error("{0}")]
    Setup(String),
    /// A data set file is missing.
    #[error("{path} is missing: {hint}")]
    MissingDataset {
        /// The file looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A data set's files disagree with each other.
    #[error("{0}")]
    Dataset(String),
    /// An IDX file is malformed.
    #[error("{path}: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An explanation failed.
    #[error("explaining {stage} with {column}: {source}")]
    Explain {
        /// The stage.
        stage: Stage,
        /// The column's label.
        column: String,
        /// The cause.
        source: ember_core::CamError,
    },
    /// A sheet could not be drawn or saved.
    #[error(transparent)]
    Vision(#[from] ember_vision::VisionError),
}
