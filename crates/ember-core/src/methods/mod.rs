//! CAM methods: each turns (activations, gradients) of one layer into a map.
//!
//! A method sees `activations` and `gradients` of shape `[N, K, h, w]` (gradients already
//! negated for counterfactual explanations) and returns a signed map `[N, h, w]` at feature
//! resolution, plus the per-channel weights when the method has them. Rectifying, normalising
//! and upsampling are the pipeline's job, so a new method is one small file implementing
//! [`CamMethod`]. Formulas and epsilons follow pytorch-grad-cam 1.5.7.

mod ablation_cam;
mod eigen_cam;
mod eigen_grad_cam;
mod grad_cam;
mod grad_cam_elementwise;
mod grad_cam_plus_plus;
mod hires_cam;
mod kpca_cam;
mod layer_cam;
mod principal;

pub(crate) use principal::principal_projection;
mod random_cam;
mod score_cam;
mod xgrad_cam;

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use crate::vocabulary::{UnknownName, Vocabulary, write_name};

pub use ablation_cam::AblationCam;
pub use eigen_cam::EigenCam;
pub use eigen_grad_cam::EigenGradCam;
pub use grad_cam::GradCam;
pub use grad_cam_elementwise::GradCamElementWise;
pub use grad_cam_plus_plus::GradCamPlusPlus;
pub use hires_cam::HiResCam;
pub use kpca_cam::{Kernel, KpcaCam};
pub use layer_cam::LayerCam;
pub use random_cam::RandomCam;
pub use score_cam::ScoreCam;
pub use xgrad_cam::XGradCam;

/// What a method computes for one layer.
#[derive(Debug, Clone)]
pub struct MethodOutput {
    /// The signed, un-normalised map at feature resolution, `[N, h, w]`.
    pub map: Tensor<3>,
    /// The channel weights `α_k` `[N, K]`, for methods that weight whole channels.
    pub channel_weights: Option<Tensor<2>>,
    /// The per-channel terms `[N, K, h, w]` whose sum over channels is the map, for methods
    /// that sum channels: what eigen-smoothing projects instead of summing
    /// ([`crate::Explainer::eigen_smooth`]).
    pub terms: Option<Tensor<4>>,
}

/// A class-activation-map method.
pub trait CamMethod: fmt::Debug + Send + Sync {
    /// The method's name as pytorch-grad-cam and the command line spell it (`gradcam`).
    fn name(&self) -> &'static str;

    /// Whether the map needs the gradients. A method that needs only the activations (the
    /// factorisation family, EigenCAM) gets zeros, and the explanation skips the backward pass.
    fn uses_gradients(&self) -> bool {
        true
    }

    /// For the perturbation family (AblationCAM): how the layer's activations are altered and
    /// the model after the layer re-run on them. The explainer then passes the channel weights
    /// the re-runs measured, constant over space, where gradients would go.
    fn perturbation(&self) -> Option<&dyn Perturbation> {
        None
    }

    /// Refuses a layer of shape `[N, K, h, w]` the method cannot explain, with the reason
    /// (KPCA-CAM's kernel matrix grows with `(h·w)²`). Every layer is accepted by default.
    fn check_layer(&self, shape: [usize; 4]) -> Result<(), String> {
        let _ = shape;
        Ok(())
    }

    /// The map of one layer from its activations and gradients (or, for perturbation methods,
    /// the measured channel weights), both `[N, K, h, w]`.
    fn compute(&self, activations: Tensor<4>, gradients: Tensor<4>) -> MethodOutput;
}

/// Re-runs of the model on altered copies of one image — of its activations at the layer
/// ([`PerturbationSite::Layer`]) or of the image itself ([`PerturbationSite::Input`]) — whose
/// scores weight the channels.
pub trait Perturbation: fmt::Debug + Send + Sync {
    /// What the copies alter.
    fn site(&self) -> PerturbationSite {
        PerturbationSite::Layer
    }

    /// How many altered copies of one image (activations `[1, K, h, w]`) are scored.
    fn copies(&self, activations: &Tensor<4>) -> usize;

    /// Copies `range` of the altered activations `[range.len(), K, h, w]`, or of the altered
    /// input `[range.len(), C, H, W]` (from the image `input`, `[1, C, H, W]`).
    fn altered(&self, activations: &Tensor<4>, input: &Tensor<4>, range: std::ops::Range<usize>) -> Tensor<4>;

    /// The channel weights `[1, K]` from the unaltered score `[1]` and the copies' scores.
    fn weights(&self, original: Tensor<1>, scores: Tensor<1>) -> Tensor<2>;
}

/// Where a perturbation method alters its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbationSite {
    /// The layer's activations: the part of the model before the layer runs once per batch of
    /// copies on the one image, only the part after it on the copies (a tap substitutes them).
    Layer,
    /// The input image: the whole model runs on the copies.
    Input,
}

/// The map of a perturbation method from the channel weights its re-runs measured, which the
/// explainer passes constant over space where gradients would go.
pub(crate) fn measured_weights_map(activations: Tensor<4>, weights: Tensor<4>) -> MethodOutput {
    weighted_channel_sum(weights.mean_dims(&[2, 3]).flatten::<2>(1, 3), activations)
}

/// `Σ_k α_k · A^k`: the map of a channel-weighting method.
pub(crate) fn weighted_channel_sum(weights: Tensor<2>, activations: Tensor<4>) -> MethodOutput {
    let [batch, channels] = weights.dims();
    let terms = activations * weights.clone().reshape([batch, channels, 1, 1]);
    MethodOutput {
        map: terms.clone().sum_dim(1).squeeze_dim::<3>(1),
        channel_weights: Some(weights),
        terms: Some(terms),
    }
}

/// `Σ_k M^k`: the map of a method that weights every activation element.
pub(crate) fn channel_sum(elementwise: Tensor<4>) -> MethodOutput {
    MethodOutput {
        map: elementwise.clone().sum_dim(1).squeeze_dim::<3>(1),
        channel_weights: None,
        terms: Some(elementwise),
    }
}

/// `Σ_{i,j} x_ij` per channel: `[N, K, h, w]` → `[N, K]`.
///
/// Summed row by row, then over rows: a two-level sum whose rounding error grows with √(h·w)
/// instead of h·w. It matters for Grad-CAM++, whose denominator `2g² + ΣA·g³` can nearly cancel
/// and then amplifies any error of ΣA by orders of magnitude.
pub(crate) fn spatial_sum(x: Tensor<4>) -> Tensor<2> {
    x.sum_dim(3).sum_dim(2).flatten::<2>(1, 3)
}

/// The built-in methods by name, for configuration files and command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// [`GradCam`]
    GradCam,
    /// [`HiResCam`]
    HiResCam,
    /// [`GradCamElementWise`]
    GradCamElementWise,
    /// [`XGradCam`]
    XGradCam,
    /// [`GradCamPlusPlus`]
    GradCamPlusPlus,
    /// [`LayerCam`]
    LayerCam,
    /// [`EigenCam`]
    EigenCam,
    /// [`EigenGradCam`]
    EigenGradCam,
    /// [`KpcaCam`] (sigmoid kernel)
    KpcaCam,
    /// [`ScoreCam`]
    ScoreCam,
    /// [`AblationCam`]
    AblationCam,
    /// [`RandomCam`] (seed 0)
    RandomCam,
}

impl Vocabulary for Method {
    const KIND: &'static str = "method";
    const ALL: &'static [Self] = &[
        Method::GradCam,
        Method::HiResCam,
        Method::GradCamElementWise,
        Method::XGradCam,
        Method::GradCamPlusPlus,
        Method::LayerCam,
        Method::EigenCam,
        Method::EigenGradCam,
        Method::KpcaCam,
        Method::ScoreCam,
        Method::AblationCam,
        Method::RandomCam,
    ];

    fn name(self) -> &'static str {
        self.build().name()
    }

    fn description(self) -> &'static str {
        match self {
            Method::GradCam => "spatially averaged gradients weight the channels (Selvaraju et al. 2017)",
            Method::HiResCam => "gradients times activations, element by element, summed (Draelos & Carin 2020)",
            Method::GradCamElementWise => "ReLU of gradients times activations, summed over channels",
            Method::XGradCam => "activation-normalised gradient weights (Fu et al. 2020)",
            Method::GradCamPlusPlus => "higher-order weights of positive gradients (Chattopadhay et al. 2018)",
            Method::LayerCam => "positive gradients weight each activation (Jiang et al. 2021)",
            Method::EigenCam => {
                "first principal component of the activations; no gradients, no class (Muhammad & Yeasin 2020)"
            }
            Method::EigenGradCam => "first principal component of gradients times activations",
            Method::KpcaCam => {
                "first kernel principal component of the activations (sigmoid kernel); no gradients (Karmani et al. 2024)"
            }
            Method::ScoreCam => {
                "the score of the image masked by each upsampled channel weights it; no gradients (Wang et al. 2020)"
            }
            Method::AblationCam => {
                "the score's drop when each channel is ablated weights it; no gradients (Desai & Ramaswamy 2020)"
            }
            Method::RandomCam => "random channel weights in [-1, 1): a baseline for faithfulness metrics",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Method::GradCamPlusPlus => &["gradcampp"],
            _ => &[],
        }
    }
}

impl Method {
    /// The implementation of this method.
    pub fn build(self) -> Box<dyn CamMethod> {
        match self {
            Method::GradCam => Box::new(GradCam),
            Method::HiResCam => Box::new(HiResCam),
            Method::GradCamElementWise => Box::new(GradCamElementWise),
            Method::XGradCam => Box::new(XGradCam),
            Method::GradCamPlusPlus => Box::new(GradCamPlusPlus),
            Method::LayerCam => Box::new(LayerCam),
            Method::EigenCam => Box::new(EigenCam),
            Method::EigenGradCam => Box::new(EigenGradCam),
            Method::KpcaCam => Box::new(KpcaCam::default()),
            Method::ScoreCam => Box::new(ScoreCam),
            Method::AblationCam => Box::new(AblationCam),
            Method::RandomCam => Box::new(RandomCam::default()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(*self, f)
    }
}

impl FromStr for Method {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse_name(s)
    }
}
