//! Typed errors of the explanation pipeline.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::layout::Layout;

/// Everything that can go wrong while explaining a model.
///
/// None of these is a panic: user input (layer names, class indices, batches) is checked and
/// reported with enough context to fix the call.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CamError {
    /// The input batch holds no image.
    #[error("the input batch is empty: pass at least one image")]
    EmptyBatch,

    /// No layer was chosen and the model names no default layer.
    #[error("no layer to explain: choose one with `layer(..)` (the model declares no default layer)")]
    NoLayer,

    /// A requested layer name is not a tap of this model.
    #[error("unknown layer `{name}`{}", suggestion_text(.closest))]
    UnknownLayer {
        /// The name that was asked for.
        name: String,
        /// The known names closest to it, best first.
        closest: Vec<String>,
    },

    /// The layer exists but the forward pass never went through its tap.
    #[error("layer `{0}` was not reached during the forward pass (is its tap on the path to the output?)")]
    TapNotReached(String),

    /// The same tap fired twice in one forward pass, so its activation is ambiguous.
    #[error("layer `{0}` was reached more than once in one forward pass; give each use its own tap name")]
    TapReachedTwice(String),

    /// The tapped activation does not have the layout it was explained in.
    #[error(
        "layer `{layer}` has an activation of shape {shape:?} (rank {}), which is not {}; CAM methods \
         need a spatial activation: [batch, channels, height, width], [batch, height, width, channels] \
         (--layout nhwc) or transformer tokens [batch, tokens, channels] with a grid of patches",
        .shape.len(),
        describe_layout(.layout)
    )]
    NotSpatial {
        /// The tapped layer.
        layer: String,
        /// Shape of the activation that was seen.
        shape: Vec<usize>,
        /// The layout it was explained in.
        layout: Layout,
    },

    /// Neither the model's graph nor the layer's shape tells where the layer's channels are.
    #[error(
        "cannot tell where the channels of layer `{layer}` (shape {shape}) are: neither the graph nor the shape \
         decides between [N, C, H, W] and [N, H, W, C]; say which with --layout nchw|nhwc (library: \
         Explainer::layout)"
    )]
    LayoutUndecided {
        /// The layer.
        layer: String,
        /// Its static shape, as `describe_dims` writes it.
        shape: String,
    },

    /// The model's score does not depend on the tapped layer.
    #[error("the target score does not depend on layer `{0}`, so it has no gradient there")]
    LayerDoesNotAffectScore(String),

    /// A class index is outside the model's output.
    #[error("class {class} is out of range: the model has {num_classes} classes (0..={})", .num_classes.saturating_sub(1))]
    ClassOutOfRange {
        /// The class that was asked for.
        class: usize,
        /// The number of classes of the model output.
        num_classes: usize,
    },

    /// A per-sample list (targets, classes) does not match the batch size.
    #[error("{what} has {got} entries but the batch holds {batch} images")]
    BatchMismatch {
        /// What did not match.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The batch size.
        batch: usize,
    },

    /// The target score of an image is NaN or infinite.
    #[error("the target score of image {index} is not finite ({value}); check the input and the model")]
    NonFiniteScore {
        /// Index of the image in the batch.
        index: usize,
        /// The score seen.
        value: f32,
    },

    /// The input does not have the shape the model needs.
    #[error("the input has shape {got:?} but the model expects {expected}")]
    InputShape {
        /// What the model accepts, in words (`[N, 3, 224, 224]`).
        expected: String,
        /// The shape seen.
        got: Vec<usize>,
    },

    /// The model output is not what the target needs.
    #[error("the model output cannot be used as a target: {0}")]
    BadOutput(String),

    /// A dense target (channel, region, mask) does not fit the output.
    #[error("the target does not fit the output: {0}")]
    BadTarget(String),

    /// An explanation is already running on this thread (taps are armed per thread).
    #[error("an explanation is already running on this thread; explanations cannot be nested")]
    NestedExplanation,

    /// A faithfulness metric cannot be computed from what it was given.
    #[error("{0}")]
    MetricInput(String),

    /// The method cannot explain this layer.
    #[error("{method} cannot explain layer `{layer}`: {reason}")]
    LayerUnsuited {
        /// The method.
        method: &'static str,
        /// The layer.
        layer: String,
        /// Why.
        reason: String,
    },

    /// Guided Backpropagation found no ReLU to guide in the model's forward pass.
    #[error(
        "Guided Backpropagation needs ReLUs, and the model's forward pass went through none (ReLU6, Clip and other \
         activations are not guided, as in pytorch-grad-cam and captum; a native Burn model must apply its ReLUs \
         with ember_cam::relu or ember_cam::Relu)"
    )]
    NoGuidedRelu,

    /// The model's forward pass failed (run-time models report graph errors this way); the
    /// model's own error is the [`source`](std::error::Error::source).
    #[error("the model failed to run: {0}")]
    Model(#[source] ModelFailure),

    /// A class was named that is not among the class names.
    #[error("unknown class `{name}`{}", suggestion_text(.closest))]
    UnknownClass {
        /// The name that was asked for.
        name: String,
        /// The known class names closest to it, best first.
        closest: Vec<String>,
    },

    /// A class was given by name but the model has no class names.
    #[error("class `{0}` is not an index, and there are no class names to look it up (pass labels)")]
    ClassNameWithoutLabels(String),

    /// A tensor could not be read back from the device.
    #[error("could not read a tensor from the device: {0}")]
    Read(String),

    /// A method of activations alone met a layer whose channels do not vary over the image: its
    /// map would be blank (EigenCAM: no principal component).
    #[error(
        "layer `{layer}` gives image {image} a blank {method} map (its activations do not vary over the image: \
         no principal component to project on, or nothing to weight); choose another layer or a gradient method"
    )]
    DegenerateLayer {
        /// The layer.
        layer: String,
        /// The image of the batch.
        image: usize,
        /// The method.
        method: &'static str,
    },

    /// The layer's spatial size is 1×1 for this input: its map would be blank.
    #[error(
        "layer `{0}` is 1×1 for this input, so its class activation map would be blank; choose an earlier \
         layer, before global pooling or the last strided stage (or give a larger input)"
    )]
    NoSpatialExtent(String),
}

/// `[N, C, H, W]`, `[N, H, W, C]`, `tokens 14x14 after 1`, for messages.
fn describe_layout(layout: &Layout) -> String {
    match layout {
        Layout::ChannelsFirst => "[N, C, H, W]".into(),
        Layout::ChannelsLast => "[N, H, W, C]".into(),
        Layout::Tokens(grid) => format!(
            "[N, {} tokens, C] ({} leading and a {}x{} grid)",
            grid.skip + grid.height * grid.width,
            grid.skip,
            grid.height,
            grid.width
        ),
    }
}

impl CamError {
    /// A failure of the model's forward pass, keeping the model's error as the source.
    pub fn model(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        CamError::Model(ModelFailure(Arc::new(error)))
    }
}

/// The error a model's forward pass returned, shared so that [`CamError`] stays `Clone`.
///
/// Two failures are equal when their messages are.
#[derive(Clone)]
pub struct ModelFailure(Arc<dyn std::error::Error + Send + Sync>);

impl ModelFailure {
    /// The model's error, for downcasting to its concrete type.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for ModelFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for ModelFailure {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

fn suggestion_text(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}

/// Result alias of the crate.
pub type Result<T, E = CamError> = std::result::Result<T, E>;
