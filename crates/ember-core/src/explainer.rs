//! The pipeline: forward with armed taps → target score → one backward → per-method map →
//! rectifier → normalise → upsample → layer aggregation.

use burn::tensor::{Int, Tensor};

use crate::error::{CamError, Result};
use crate::layout::Layout;
use crate::methods::{CamMethod, GradCam, Method, Perturbation, PerturbationSite, principal_projection};
use crate::model::{CamModel, DetachedOutput};
use crate::read::{classes_to_host, to_host};
use crate::rectifier::Rectifier;
use crate::resize::resize_bilinear;
use crate::tap::{Capture, Recording, TapSession};
use crate::target::{Target, TargetScores};

/// Unless set, perturbation methods re-run as many altered copies at once as fit in this many
/// bytes of activations (at least one): a whole layer at MobileNetV2's last block in five
/// batches, a few copies at a time where activations are large.
pub const PERTURBATION_BATCH_BYTES: usize = 64 << 20;

/// The augmentations of [`Explainer::aug_smooth`]: (mirrored, factor), in ttach's order.
const AUGMENTATIONS: &[(bool, f32)] = &[
    (false, 0.9),
    (false, 1.0),
    (false, 1.1),
    (true, 0.9),
    (true, 1.0),
    (true, 1.1),
];

/// What was computed for one tapped layer. Everything stays on the device.
#[derive(Debug, Clone)]
pub struct LayerMap {
    /// The layer's tap name.
    pub layer: String,
    /// The method's signed map before rectification, at feature resolution `[N, h, w]`.
    pub raw: Tensor<3>,
    /// The channel weights `[N, K]`, for channel-weighting methods.
    pub channel_weights: Option<Tensor<2>>,
    /// The rectified, normalised map upsampled to the input size `[N, H, W]`.
    pub map: Tensor<3>,
    /// The activations `[N, K, h, w]`, when [`Explainer::keep_tensors`] is set.
    pub activations: Option<Tensor<4>>,
    /// ∂score/∂activations `[N, K, h, w]` (not negated), when [`Explainer::keep_tensors`] is set
    /// and the method uses gradients; for perturbation methods, the measured channel weights
    /// broadcast to that shape.
    pub gradients: Option<Tensor<4>>,
}

/// The activations and gradients of one layer: what the taps capture, or what a caller brings
/// from elsewhere (another framework, a saved run) to [`Explainer::explain_tensors`].
#[derive(Debug, Clone)]
pub struct LayerTensors {
    /// The layer's name.
    pub layer: String,
    /// Activations `[N, K, h, w]`.
    pub activations: Tensor<4>,
    /// ∂score/∂activations `[N, K, h, w]`, not negated.
    pub gradients: Tensor<4>,
}

/// The result of one explanation call.
#[derive(Debug, Clone)]
pub struct Explanation<O> {
    /// The final maps `[N, H, W]` at the input resolution: in [0, 1], or in [-1, 1] for the
    /// signed rectifier. With several layers, their aggregation.
    pub maps: Tensor<3>,
    /// Every stage per layer, in the order the layers were requested.
    pub layers: Vec<LayerMap>,
    /// The explained score of each image `[N]`.
    pub scores: Tensor<1>,
    /// The explained class of each image `[N]`, for class targets.
    pub classes: Option<Tensor<1, Int>>,
    /// Guided Backpropagation's gradient of each image's score with respect to the input
    /// `[N, C, H, W]`, when [`Explainer::guided_backprop`] is set.
    pub guided_backprop: Option<Tensor<4>>,
    /// The model's output for the batch, detached from the graph the explanation's backward
    /// pass consumed (see [`DetachedOutput`]): safe to use in a loss afterwards. For a model
    /// whose graph ends in a softmax, these are the scores explained (the logits).
    pub output: O,
}

/// Explains model decisions with one CAM method.
///
/// ```
/// use ember_core::{Explainer, HiResCam, Rectifier};
/// let explainer = Explainer::new(HiResCam).layer("features").rectifier(Rectifier::Abs);
/// # let _ = explainer;
/// ```
#[derive(Debug, Clone)]
pub struct Explainer {
    /// Shared, so that an explainer can be copied with other settings.
    method: std::sync::Arc<dyn CamMethod>,
    layers: Vec<String>,
    layout: Option<Layout>,
    rectifier: Rectifier,
    keep_tensors: bool,
    perturbation_batch: Option<usize>,
    guided_backprop: bool,
    eigen_smooth: bool,
    aug_smooth: bool,
}

impl Default for Explainer {
    fn default() -> Self {
        Self::new(GradCam)
    }
}

impl From<Method> for Explainer {
    fn from(method: Method) -> Self {
        Self::boxed(method.build())
    }
}

impl Explainer {
    /// An explainer using `method`, the ReLU rectifier and the model's default layer.
    pub fn new(method: impl CamMethod + 'static) -> Self {
        Self::boxed(Box::new(method))
    }

    /// An explainer using a boxed method (see [`Method::build`]).
    pub fn boxed(method: Box<dyn CamMethod>) -> Self {
        Self {
            method: method.into(),
            layers: Vec::new(),
            layout: None,
            rectifier: Rectifier::default(),
            keep_tensors: false,
            perturbation_batch: None,
            guided_backprop: false,
            eigen_smooth: false,
            aug_smooth: false,
        }
    }

    /// Adds a layer to explain; with several, maps are aggregated as pytorch-grad-cam does.
    pub fn layer(mut self, name: impl Into<String>) -> Self {
        self.layers.push(name.into());
        self
    }

    /// The layout of every explained layer's activation, instead of the one the model declares
    /// ([`LayerInfo::layout`](crate::LayerInfo)); for models that declare none (closures),
    /// instead of [`Layout::ChannelsFirst`]. Transformer tokens: [`Layout::Tokens`].
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Sets the rectifier ([`Rectifier::Relu`] by default).
    pub fn rectifier(mut self, rectifier: Rectifier) -> Self {
        self.rectifier = rectifier;
        self
    }

    /// How many altered copies a perturbation method (AblationCAM) re-runs at once (at least
    /// 1; by default as many as [`PERTURBATION_BATCH_BYTES`] of activations hold): more is
    /// faster where the part after the layer is small, and takes that many times its memory.
    pub fn perturbation_batch(mut self, copies: usize) -> Self {
        self.perturbation_batch = Some(copies.max(1));
        self
    }

    /// Also runs Guided Backpropagation ([`guided_backprop`]) for the explained scores:
    /// [`Explanation::guided_backprop`] and [`Explanation::guided_grad_cam`].
    pub fn guided_backprop(mut self, guided: bool) -> Self {
        self.guided_backprop = guided;
        self
    }

    /// pytorch-grad-cam's `eigen_smooth`: the map is the first principal component of the
    /// method's per-channel terms (`α_k·A^k`, or the element-wise products) instead of their
    /// sum, with EigenCAM's deterministic sign; it removes noise the terms do not share. The
    /// factorisation methods (EigenCAM, EigenGradCAM, KPCA-CAM), which sum nothing, are
    /// unaffected, as in pytorch-grad-cam.
    pub fn eigen_smooth(mut self, smooth: bool) -> Self {
        self.eigen_smooth = smooth;
        self
    }

    /// pytorch-grad-cam's `aug_smooth`: the final maps are the mean over six augmentations of
    /// the input — mirrored or not, times 0.9, 1 or 1.1 — each map mirrored back. Costs six
    /// explanations. Every other field of the explanation is the unaugmented one's. The target
    /// scores each augmented input as it would any input: a class target with a fixed class
    /// explains that class throughout, `TopClass` each augmentation's own top class (as
    /// pytorch-grad-cam does).
    pub fn aug_smooth(mut self, smooth: bool) -> Self {
        self.aug_smooth = smooth;
        self
    }

    /// Also returns each layer's activations and gradients.
    pub fn keep_tensors(mut self, keep: bool) -> Self {
        self.keep_tensors = keep;
        self
    }

    /// The method in use.
    pub fn method(&self) -> &dyn CamMethod {
        self.method.as_ref()
    }

    /// Explains `target` for every image of `input` (`[N, C, H, W]`, on the model's device).
    pub fn explain<M, T>(&self, model: &M, input: Tensor<4>, target: &T) -> Result<Explanation<M::Output>>
    where
        M: CamModel + ?Sized,
        M::Output: DetachedOutput,
        T: Target<M::Output> + ?Sized,
    {
        let mut explanation = self.explain_once(model, input.clone(), target)?;
        if self.aug_smooth {
            // ttach's HorizontalFlip × Multiply([0.9, 1, 1.1]), as pytorch-grad-cam; the
            // unaugmented pass is the one above.
            let mut maps = Vec::with_capacity(AUGMENTATIONS.len());
            for &(mirrored, factor) in AUGMENTATIONS {
                if !mirrored && factor == 1.0 {
                    maps.push(explanation.maps.clone());
                    continue;
                }
                let augmented = input.clone() * factor;
                let augmented = if mirrored { augmented.flip([3]) } else { augmented };
                let map = self.explain_once(model, augmented, target)?.maps;
                maps.push(if mirrored { map.flip([2]) } else { map });
            }
            explanation.maps = Tensor::stack::<4>(maps, 0).mean_dim(0).squeeze_dim::<3>(0);
        }
        if self.guided_backprop {
            // The guided pass's forward values are the explanation's (a guided ReLU is a ReLU
            // on the way forward), so a class target resolves to the same classes.
            explanation.guided_backprop = Some(guided_backprop(model, input, target)?);
        }
        Ok(explanation)
    }

    fn explain_once<M, T>(&self, model: &M, input: Tensor<4>, target: &T) -> Result<Explanation<M::Output>>
    where
        M: CamModel + ?Sized,
        M::Output: DetachedOutput,
        T: Target<M::Output> + ?Sized,
    {
        let [batch, _, height, width] = input.dims();
        if batch == 0 {
            return Err(CamError::EmptyBatch);
        }
        model.check_input(&input)?;
        let layers = self.resolve_layers(model)?;

        let session = TapSession::arm(&layers, self.method.uses_gradients())?;
        let output = model.forward(input.clone());
        let recording = session.finish();
        let output = output?;
        let captures = captures_in_order(recording, &layers, model)?;
        let layouts: Vec<Layout> = layers.iter().map(|(_, layout)| *layout).collect();
        if let Some(flat) = captures.iter().find(|c| matches!(c.activation.dims(), [_, _, 1, 1])) {
            return Err(CamError::NoSpatialExtent(flat.name.clone()));
        }
        for capture in &captures {
            self.method
                .check_layer(capture.activation.dims())
                .map_err(|reason| CamError::LayerUnsuited {
                    method: self.method.name(),
                    layer: capture.name.clone(),
                    reason,
                })?;
        }

        let TargetScores { scores, classes } = target.scores(&output, batch)?;
        check_finite(&scores)?;
        // What each method family needs besides the activations: measured channel weights
        // (perturbation), nothing (factorisation), or the gradients of one backward pass.
        let layer_tensors = if let Some(perturbation) = self.method.perturbation() {
            let classes = classes.as_ref().map(classes_to_host).transpose()?;
            let originals = scores.clone().inner();
            let mut layer_tensors = Vec::with_capacity(captures.len());
            for (capture, layout) in captures.into_iter().zip(layouts) {
                let mut weights = Vec::with_capacity(batch);
                for image in 0..batch {
                    let activations = capture.activation.clone().narrow(0, image, 1);
                    let class = classes.as_ref().map(|c| c[image]);
                    let copies = self.rerun(
                        model,
                        target,
                        (&capture.name, layout),
                        &input,
                        image,
                        &activations,
                        class,
                        perturbation,
                    )?;
                    weights.push(perturbation.weights(originals.clone().narrow(0, image, 1), copies));
                }
                let [_, channels, h, w] = capture.activation.dims();
                let weights = Tensor::cat(weights, 0)
                    .reshape([batch, channels, 1, 1])
                    .expand([batch, channels, h, w]);
                layer_tensors.push(LayerTensors {
                    layer: capture.name,
                    activations: capture.activation,
                    gradients: weights,
                });
            }
            layer_tensors
        } else if !self.method.uses_gradients() {
            captures
                .into_iter()
                .map(|capture| LayerTensors {
                    layer: capture.name,
                    gradients: capture.activation.zeros_like(),
                    activations: capture.activation,
                })
                .collect()
        } else {
            let total = scores.clone().sum();
            if !total.is_tracked() {
                return Err(CamError::LayerDoesNotAffectScore(layers[0].0.clone()));
            }
            let mut gradients = total.backward();
            captures
                .into_iter()
                .map(
                    |Capture {
                         name,
                         activation,
                         probe,
                     }| {
                        let gradients = probe
                            .and_then(|probe| probe.grad_remove(&mut gradients))
                            .ok_or_else(|| CamError::LayerDoesNotAffectScore(name.clone()))?;
                        Ok(LayerTensors {
                            layer: name,
                            activations: activation,
                            gradients,
                        })
                    },
                )
                .collect::<Result<Vec<_>>>()?
        };
        let (layer_maps, maps) = self.explain_tensors(layer_tensors, height, width);
        if !self.method.uses_gradients() && self.method.perturbation().is_none() {
            // A layer constant over an image has no principal component: a blank map, refused.
            for layer in &layer_maps {
                let largest = to_host(&layer.raw.clone().abs().max_dim(2).max_dim(1).flatten::<1>(0, 2))?;
                if let Some(image) = largest.iter().position(|&v| v == 0.0) {
                    return Err(CamError::DegenerateLayer {
                        layer: layer.layer.clone(),
                        image,
                        method: self.method.name(),
                    });
                }
            }
        }
        Ok(Explanation {
            maps,
            layers: layer_maps,
            scores: scores.inner(),
            classes,
            guided_backprop: None,
            output: output.detached(),
        })
    }

    /// The target's scores `[copies]` of the perturbation's altered copies of one image, in
    /// batches (see [`Explainer::perturbation_batch`]). Copies of the activations at `layer`: the
    /// image runs through the model with the tap's output replaced by each batch of copies.
    /// Copies of the image: the model runs on each batch of them.
    #[allow(clippy::too_many_arguments)]
    fn rerun<M, T>(
        &self,
        model: &M,
        target: &T,
        (layer, layout): (&str, Layout),
        input: &Tensor<4>,
        image: usize,
        activations: &Tensor<4>,
        class: Option<usize>,
        perturbation: &dyn Perturbation,
    ) -> Result<Tensor<1>>
    where
        M: CamModel + ?Sized,
        T: Target<M::Output> + ?Sized,
    {
        let one = input.clone().narrow(0, image, 1);
        let site = perturbation.site();
        let copies = perturbation.copies(activations);
        let per_copy = match site {
            PerturbationSite::Layer => activations.shape().num_elements(),
            PerturbationSite::Input => one.shape().num_elements(),
        } * size_of::<f32>();
        let batch = self
            .perturbation_batch
            .unwrap_or_else(|| (PERTURBATION_BATCH_BYTES / per_copy.max(1)).max(1));
        let mut scores = Vec::with_capacity(copies.div_ceil(batch));
        for start in (0..copies).step_by(batch) {
            let range = start..(start + batch).min(copies);
            let count = range.len();
            let altered = perturbation.altered(activations, &one, range);
            let output = match site {
                PerturbationSite::Layer => {
                    let session = TapSession::substituting(layer, layout, altered)?;
                    let output = model.forward(one.clone());
                    let recording = session.finish();
                    let output = output?;
                    if let Some(problem) = recording.problem {
                        return Err(problem);
                    }
                    if !recording.substituted {
                        return Err(CamError::TapNotReached(layer.to_owned()));
                    }
                    output
                }
                PerturbationSite::Input => model.forward(altered)?,
            };
            scores.push(target.copy_scores(&output, count, class)?.inner());
        }
        Ok(Tensor::cat(scores, 0))
    }

    /// The pipeline after capture: each layer's map (method → rectifier → normalisation →
    /// upsampling to `height × width`) and their aggregation.
    pub fn explain_tensors(
        &self,
        layers: Vec<LayerTensors>,
        height: usize,
        width: usize,
    ) -> (Vec<LayerMap>, Tensor<3>) {
        let layer_maps: Vec<LayerMap> = layers
            .into_iter()
            .map(|l| self.layer_map(l.layer, l.activations, l.gradients, height, width))
            .collect();
        let maps = self.aggregate(&layer_maps);
        (layer_maps, maps)
    }

    /// One explanation per rectifier, in order, from one capture: the rectifier acts after the
    /// evidence (activations and gradients, or measured channel weights) is gathered, so every
    /// method runs the model once (perturbation methods: once their re-runs) and rectifies the
    /// same evidence each way. With `aug_smooth` (a mean over six inputs) each rectifier runs on
    /// its own. The explainer's own rectifier is not used.
    pub fn explain_each_rectifier<M, T>(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &T,
        rectifiers: &[Rectifier],
    ) -> Result<Vec<Explanation<M::Output>>>
    where
        M: CamModel + ?Sized,
        M::Output: DetachedOutput + Clone,
        T: Target<M::Output> + ?Sized,
    {
        let [_, _, height, width] = input.dims();
        let reuse = !self.aug_smooth && rectifiers.len() > 1;
        let mut explanations: Vec<Explanation<M::Output>> = Vec::with_capacity(rectifiers.len());
        for &rectifier in rectifiers {
            let explainer = Explainer {
                rectifier,
                keep_tensors: self.keep_tensors || reuse,
                ..self.clone()
            };
            let explanation = match explanations.first() {
                Some(first) if reuse => {
                    let tensors = first
                        .layers
                        .iter()
                        .filter_map(|l| {
                            let activations = l.activations.clone()?;
                            Some(LayerTensors {
                                layer: l.layer.clone(),
                                gradients: l.gradients.clone().unwrap_or_else(|| activations.zeros_like()),
                                activations,
                            })
                        })
                        .collect();
                    let (layers, maps) = explainer.explain_tensors(tensors, height, width);
                    Explanation {
                        maps,
                        layers,
                        scores: first.scores.clone(),
                        classes: first.classes.clone(),
                        guided_backprop: first.guided_backprop.clone(),
                        output: first.output.clone(),
                    }
                }
                _ => explainer.explain(model, input.clone(), target)?,
            };
            explanations.push(explanation);
        }
        if !self.keep_tensors {
            for layer in explanations.iter_mut().flat_map(|e| e.layers.iter_mut()) {
                layer.activations = None;
                layer.gradients = None;
            }
        }
        Ok(explanations)
    }

    /// Method → rectifier → per-image normalisation → upsampling, for one layer.
    fn layer_map(
        &self,
        layer: String,
        activations: Tensor<4>,
        gradients: Tensor<4>,
        height: usize,
        width: usize,
    ) -> LayerMap {
        let mut output = self
            .method
            .compute(activations.clone(), self.rectifier.prepare_gradients(gradients.clone()));
        if self.eigen_smooth
            && let Some(terms) = output.terms.take()
        {
            output.map = principal_projection(terms);
        }
        let normalised = self.rectifier.normalise(self.rectifier.rectify(output.map.clone()));
        let (activations, gradients) = if self.keep_tensors {
            let measured = self.method.uses_gradients() || self.method.perturbation().is_some();
            (Some(activations), measured.then_some(gradients))
        } else {
            (None, None)
        };
        LayerMap {
            layer,
            raw: output.map,
            channel_weights: output.channel_weights,
            map: resize_bilinear(normalised, height, width),
            activations,
            gradients,
        }
    }

    /// pytorch-grad-cam's layer aggregation, applied even to a single layer: clip negatives,
    /// average over layers, normalise again.
    fn aggregate(&self, layer_maps: &[LayerMap]) -> Tensor<3> {
        let stacked: Tensor<4> = Tensor::stack(layer_maps.iter().map(|l| l.map.clone()).collect(), 1);
        let stacked = if self.rectifier.is_signed() {
            stacked
        } else {
            stacked.clamp_min(0.0)
        };
        self.rectifier.normalise(stacked.mean_dim(1).squeeze_dim::<3>(1))
    }

    /// The requested layers (or the default one) by their tap names, each with its layout: the
    /// explainer's, the one the model declares, or channels first for models that declare no
    /// layers.
    fn resolve_layers<M: CamModel + ?Sized>(&self, model: &M) -> Result<Vec<(String, Layout)>> {
        let layers = if self.layers.is_empty() {
            vec![model.default_layer().ok_or(CamError::NoLayer)?]
        } else {
            self.layers.clone()
        };
        let known = model.layers();
        if known.is_empty() {
            let layout = self.layout.unwrap_or(Layout::ChannelsFirst);
            return Ok(layers.into_iter().map(|name| (name, layout)).collect());
        }
        layers
            .into_iter()
            .map(|name| match known.iter().find(|l| l.answers_to(&name)) {
                Some(layer) => match self.layout.or(layer.layout) {
                    Some(layout) => Ok((layer.name.clone(), layout)),
                    None => Err(CamError::LayoutUndecided {
                        layer: layer.name.clone(),
                        shape: crate::describe_dims(&layer.shape),
                    }),
                },
                None => {
                    let names: Vec<String> = known.iter().map(|l| l.name.clone()).collect();
                    Err(unknown_layer(&name, &names))
                }
            })
            .collect()
    }
}

/// Guided Backpropagation: the gradient of each image's target score with respect to the input
/// `[N, C, H, W]`, the model's ReLUs ([`crate::relu`]) letting through only positive gradients
/// where their input was positive — pytorch-grad-cam's `GuidedBackpropReLUModel`, for every image
/// of the batch. The whole model is differentiated (the gradient is the input's); its parameters
/// receive no gradients.
///
/// Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR 2015 workshop.
pub fn guided_backprop<M, T>(model: &M, input: Tensor<4>, target: &T) -> Result<Tensor<4>>
where
    M: CamModel + ?Sized,
    T: Target<M::Output> + ?Sized,
{
    let [batch, ..] = input.dims();
    if batch == 0 {
        return Err(CamError::EmptyBatch);
    }
    model.check_input(&input)?;
    let device = input.device().inner().autodiff();
    let input = input.inner().autodiff().to_device(&device).require_grad();
    let session = TapSession::guided()?;
    let output = model.forward(input.clone());
    let recording = session.finish();
    let output = output?;
    if let Some(problem) = recording.problem {
        return Err(problem);
    }
    if recording.guided_relus == 0 {
        return Err(CamError::NoGuidedRelu);
    }
    let TargetScores { scores, .. } = target.scores(&output, batch)?;
    check_finite(&scores)?;
    let gradients = scores.sum().backward();
    input
        .grad(&gradients)
        .ok_or_else(|| CamError::LayerDoesNotAffectScore("the input".into()))
}

/// Guided Grad-CAM (Selvaraju et al. 2017, section 3.2): Guided Backpropagation `[N, C, H, W]`
/// multiplied, channel by channel, by the final maps `[N, H, W]`.
pub fn guided_grad_cam(guided_backprop: Tensor<4>, maps: Tensor<3>) -> Tensor<4> {
    let [batch, _, height, width] = guided_backprop.dims();
    guided_backprop * maps.reshape([batch, 1, height, width])
}

impl<O> Explanation<O> {
    /// Guided Grad-CAM `[N, C, H, W]` from the maps and the Guided Backpropagation of an
    /// explanation run with [`Explainer::guided_backprop`].
    pub fn guided_grad_cam(&self) -> Option<Tensor<4>> {
        let guided = self.guided_backprop.clone()?;
        Some(guided_grad_cam(guided, self.maps.clone()))
    }
}

/// The captures of the requested layers in request order, or why one is missing.
fn captures_in_order<M: CamModel + ?Sized>(
    recording: Recording,
    layers: &[(String, Layout)],
    model: &M,
) -> Result<Vec<Capture>> {
    if let Some(problem) = recording.problem {
        return Err(problem);
    }
    let mut captures = recording.captures;
    layers
        .iter()
        .map(|(name, _)| {
            let position = captures.iter().position(|c| &c.name == name);
            match position {
                Some(index) => Ok(captures.swap_remove(index)),
                None if model.layers().is_empty() && !recording.seen.contains(name) => {
                    Err(unknown_layer(name, &recording.seen))
                }
                None => Err(CamError::TapNotReached(name.clone())),
            }
        })
        .collect()
}

fn unknown_layer(name: &str, known: &[String]) -> CamError {
    CamError::UnknownLayer {
        name: name.to_owned(),
        closest: closest_names(name, known, 3),
    }
}

/// The `count` names most similar to `name`: names containing it first, then those sharing
/// most of its parts (split at `/`, `.`, `_`, …, so ONNX paths compare by their components),
/// then by edit distance.
pub fn closest_names(name: &str, known: &[String], count: usize) -> Vec<String> {
    fn parts(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }
    let wanted = name.to_ascii_lowercase();
    let wanted_parts = parts(&wanted);
    let mut scored: Vec<(bool, f64, f64, &String)> = known
        .iter()
        .map(|candidate| {
            let lower = candidate.to_ascii_lowercase();
            let contains = lower.contains(&wanted);
            let mut candidate_parts = parts(&lower);
            let shared = wanted_parts
                .iter()
                .filter(|part| match candidate_parts.iter().position(|c| c == *part) {
                    Some(index) => {
                        candidate_parts.swap_remove(index);
                        true
                    }
                    None => false,
                })
                .count();
            let share = shared as f64 / wanted_parts.len().max(1) as f64;
            (
                contains,
                share,
                strsim::normalized_levenshtein(&wanted, &lower),
                candidate,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(b.2.total_cmp(&a.2)));
    let mut closest: Vec<String> = Vec::with_capacity(count);
    for (_, _, _, candidate) in scored {
        if !closest.contains(candidate) {
            closest.push(candidate.clone());
        }
        if closest.len() == count {
            break;
        }
    }
    closest
}

fn check_finite(scores: &Tensor<1>) -> Result<()> {
    let values = scores
        .clone()
        .inner()
        .try_into_vec_as::<f32>()
        .map_err(|e| CamError::Read(format!("{e:?}")))?;
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(CamError::NonFiniteScore {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}
