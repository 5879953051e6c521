//! Ember's CAM engine.
//!
//! * [`LayerTap`] / [`tap`] — the one place where activations and gradients are captured;
//! * [`Explainer`] — the pipeline, the same for every method;
//! * [`methods`] — one small file per CAM method;
//! * [`Rectifier`], [`Target`] and [`CamModel`] — what to show, what to explain, what to run;
//! * [`metrics`] — faithfulness metrics: confidence change, deletion/insertion, ROAD, pointing game;
//! * [`limits`] — the memory budget and checked sizes every crate applies to untrusted input.
//!
//! The engine is backend-agnostic: tensors stay on the device of the input batch, and only the
//! part of the network after the earliest armed tap is differentiated.

// NdArray is deprecated in Burn 0.22 and still one of Ember's backends (the extension names it).
#[allow(deprecated)]
mod activation;
// NdArray is deprecated in Burn 0.22 and still one of Ember's backends (the extension names it).
#[allow(deprecated)]
mod depthwise;
mod device;
mod error;
mod explainer;
// NdArray is deprecated in Burn 0.22 and still one of Ember's backends (the extension names it).
#[allow(deprecated)]
mod guided;
mod layout;
pub mod limits;
pub mod methods;
pub mod metrics;
mod model;
mod read;
mod rectifier;
mod region;
mod resize;
mod scores;
mod tap;
mod target;
pub mod vocabulary;

pub use activation::{ActivationBackend, clamp, fast_relu, gelu};
pub use depthwise::{DepthwiseConvBackend, conv2d, conv2d_layer};
pub use device::{
    Adapter, DEFAULT_DEVICE, DEVICES, DeviceError, OpenedDevice, device_named, device_names, open_device,
};
pub use error::{CamError, ModelFailure, Result};
pub use explainer::{
    Explainer, Explanation, LayerMap, LayerTensors, PERTURBATION_BATCH_BYTES, closest_names, guided_backprop,
    guided_grad_cam,
};
pub use guided::{GuidedReluBackend, Relu, relu};
pub use layout::{Layout, MAX_PATCH, MAX_SKIPPED_TOKENS, SpatialLayout, TokenGrid};
pub use limits::{FileError, SizeError, checked_bytes, memory_budget, set_memory_budget};
pub use methods::{
    AblationCam, CamMethod, EigenCam, EigenGradCam, GradCam, GradCamElementWise, GradCamPlusPlus, HiResCam, Kernel,
    KpcaCam, LayerCam, Method, MethodOutput, Perturbation, PerturbationSite, RandomCam, ScoreCam, XGradCam,
};
pub use metrics::Metric;
pub use model::{CamModel, DetachedOutput, LayerInfo, check_input_chw, default_layer, describe_dims};
pub use read::{ImageExplanation, Peak, maps_to_host, to_host};
pub use rectifier::Rectifier;
pub use region::{Region, RegionTarget};
pub use resize::{resize_bilinear, resize_bilinear_aligned};
pub use scores::{FinalActivation, ScoreSource, capture_scores, score_tap};
pub use tap::{LayerTap, network_input, recording, tap};
pub use target::{ClassProbability, ClassTarget, ScoreFn, Target, TargetScores, parse_class};
pub use vocabulary::{UnknownName, Vocabulary};
