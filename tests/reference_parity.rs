//! Stage-by-stage parity with pytorch-grad-cam 1.5.7 (fixtures from `xtask/reference/make_fixtures.py`).
//!
//! Tolerances: final maps ≤ 1e-4 absolute; logits, activations, gradients, channel weights and
//! raw maps ≤ 1e-4 relative to the largest magnitude of the reference array (a per-array relative
//! error; element-wise relative errors are meaningless where values cross zero).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use ember_cam::models::mobilenet_v2;
use ember_cam::{CamModel, ClassTarget, Explainer, Kernel, KpcaCam, LayerMap, LayerTap, LayerTensors, Method, burn};

const FINAL_ABS: f32 = 1e-4;
const STAGE_REL: f32 = 1e-4;

/// The worst difference per stage over all cases of a test, printed at its end.
type Worst = BTreeMap<String, f32>;

struct Fixture {
    arrays: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
}

impl Fixture {
    fn open(name: &str) -> Self {
        let path = format!("tests/fixtures/{name}.npz");
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
        let names: Vec<String> = npz.array_names().map(str::to_owned).collect();
        let arrays = names
            .into_iter()
            .map(|key| {
                let array = npz.by_name(&key).unwrap().unwrap();
                let shape = array.shape().iter().map(|&d| d as usize).collect();
                (key, (array.into_vec::<f32>().unwrap(), shape))
            })
            .collect();
        Self { arrays }
    }

    fn get(&self, key: &str) -> &(Vec<f32>, Vec<usize>) {
        self.arrays.get(key).unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }

    fn has(&self, key: &str) -> bool {
        self.arrays.contains_key(key)
    }

    fn tensor<const D: usize>(&self, key: &str) -> Tensor<D> {
        let (values, shape) = self.get(key);
        Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &Device::flex())
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().try_into_vec_as::<f32>().unwrap()
}

/// Compares `ours` with the first `ours.len()` values of the reference (image 0 when `ours`
/// covers a single image) and records the worst difference of the stage.
fn compare(worst_table: &mut Worst, stage: &str, case: &str, ours: &[f32], reference: &[f32], relative: bool) {
    record(worst_table, stage, case, ours, reference, relative, true);
}

/// [`compare`], asserting the limit only when `assert` is set (recorded either way).
fn record(
    worst_table: &mut Worst,
    stage: &str,
    case: &str,
    ours: &[f32],
    reference: &[f32],
    relative: bool,
    assert: bool,
) {
    let reference = &reference[..ours.len()];
    let scale = if relative {
        reference
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE)
    } else {
        1.0
    };
    let worst = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale;
    let limit = if relative { STAGE_REL } else { FINAL_ABS };
    let entry = worst_table.entry(stage.to_owned()).or_insert(0.0);
    *entry = entry.max(worst);
    assert!(
        !assert || worst <= limit,
        "{case}: {stage} differs by {worst:.3e} (limit {limit:.0e})"
    );
}

fn print_worst(title: &str, table: &Worst) {
    println!("worst differences, {title}:");
    for (stage, worst) in table.iter() {
        println!("  {stage:<28} {worst:.2e}");
    }
}

/// Positions `(image, y·w + x)` where the 1×1 convolution `conv`, the first op after the layer,
/// has an output within 1e-5 of a ReLU6 kink (0 or 6) in Ember's own forward pass. There the
/// ReLU6 gradient is 0 or 1 depending on float rounding, so PyTorch and Burn may legitimately take
/// different sides, which changes ∂score/∂A at that position (the 1×1 convolution maps each
/// position to itself).
fn relu6_ties<M: CamModel<Output = Tensor<2>>>(model: &M, input: Tensor<4>, conv: &str) -> Vec<(usize, usize)> {
    let explanation = Explainer::from(Method::GradCam)
        .layer(conv)
        .keep_tensors(true)
        .explain(model, input, &ClassTarget::TopClass)
        .unwrap();
    let activations = explanation.layers[0].activations.clone().unwrap();
    let [_, channels, height, width] = activations.dims();
    let values = host(activations);
    let mut ties: Vec<(usize, usize)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.abs() < 1e-5 || (*v - 6.0).abs() < 1e-5)
        .map(|(i, _)| (i / (channels * height * width), i % (height * width)))
        .collect();
    ties.sort_unstable();
    ties.dedup();
    ties
}

/// A stage's label: `"{prefix}{stage}"`, with the layer index when several layers are explained.
fn stage_label(prefix: &str, stage: &str, layer: usize, layers: usize) -> String {
    if layers > 1 {
        format!("{prefix}{stage} (layer {layer})")
    } else {
        format!("{prefix}{stage}")
    }
}

/// Compares a layer's raw map and channel weights with the fixture's.
fn compare_layer_map(
    worst: &mut Worst,
    label: impl Fn(&str) -> String,
    case: &str,
    layer: &LayerMap,
    fixture: &Fixture,
    prefix: &str,
    index: usize,
) {
    record_layer_map(worst, label, case, layer, fixture, prefix, index, true);
}

/// [`compare_layer_map`], asserting only when `assert` is set.
#[allow(clippy::too_many_arguments)]
fn record_layer_map(
    worst: &mut Worst,
    label: impl Fn(&str) -> String,
    case: &str,
    layer: &LayerMap,
    fixture: &Fixture,
    prefix: &str,
    index: usize,
    assert: bool,
) {
    let raw = &fixture.get(&format!("{prefix}/raw{index}")).0;
    record(
        worst,
        &label("raw map (rel)"),
        case,
        &host(layer.raw.clone()),
        raw,
        true,
        assert,
    );
    let weights_key = format!("{prefix}/weights{index}");
    assert_eq!(
        layer.channel_weights.is_some(),
        fixture.has(&weights_key),
        "{case}: channel weights"
    );
    if let Some(weights) = &layer.channel_weights {
        record(
            worst,
            &label("channel weights (rel)"),
            case,
            &host(weights.clone()),
            &fixture.get(&weights_key).0,
            true,
            assert,
        );
    }
}

/// One reference fixture and how to explain it.
struct Case<'a> {
    fixture: &'a str,
    layers: &'a [&'a str],
    /// The methods the fixture holds (every one must be there).
    methods: &'a [Method],
    other_class: usize,
    /// The 1×1 convolution after layer 0 whose ReLU6 ties may flip gradients (see [`relu6_ties`]).
    tie_conv: Option<&'a str>,
}

/// Every listed method, both targets, the batch and image 0 alone, compared stage by stage;
/// returns the number of (method, target, batch) cases compared.
/// * Ember end to end (its own forward and backward): logits, activations, gradients, raw maps,
///   channel weights and final maps.
/// * Where a ReLU6 tie was found (see [`relu6_ties`]), Ember's gradients at the tied positions
///   only (every channel, layer 0) are replaced by the reference's, and Ember's pipeline runs
///   again on its own activations and the patched gradients: raw maps, weights and final maps
///   must then match at the same tolerances — so every difference left end to end is the ties'.
///   The unpatched end-to-end difference is reported.
/// * The CAM maths alone: the reference's own activations and gradients through Ember's
///   post-capture pipeline (`explain_tensors`) give its raw maps, weights and final maps.
fn check_all_cases<M: CamModel<Output = Tensor<2>>>(worst: &mut Worst, model: &M, case: Case<'_>) -> usize {
    let Case {
        fixture: name,
        layers,
        methods,
        other_class,
        tie_conv,
    } = case;
    let fixture = Fixture::open(name);
    let input: Tensor<4> = fixture.tensor("input");
    let logits = host(model.forward(input.clone()).unwrap());
    compare(worst, "logits (rel)", name, &logits, &fixture.get("logits").0, true);
    let ties = tie_conv
        .map(|conv| relu6_ties(model, input.clone(), conv))
        .unwrap_or_default();
    if !ties.is_empty() {
        println!("{name}: ReLU6 ties after layer 0 at (image, position) {ties:?}");
    }
    let mut compared = 0;
    for &method in methods {
        for (target_name, target) in [
            ("top", ClassTarget::TopClass),
            ("other", ClassTarget::Class(other_class)),
        ] {
            let prefix = format!("{method}/{target_name}");
            let reference_final = &fixture.get(&format!("{prefix}/final")).0;
            let explainer = layers
                .iter()
                .fold(Explainer::from(method).keep_tensors(true), |e, l| e.layer(*l));
            for (images, count) in [("batch", 2), ("single", 1)] {
                let case = format!("{name} {prefix} {images}");
                let explanation = explainer
                    .explain(model, input.clone().narrow(0, 0, count), &target)
                    .unwrap();
                let tied = ties.iter().any(|(image, _)| *image < count);
                let mut reference_tensors = Vec::new();
                let mut patched_tensors = Vec::new();
                let mut ember_gradient_tensors = Vec::new();
                for (i, layer) in explanation.layers.iter().enumerate() {
                    let stage = |s: &str| stage_label("", s, i, layers.len());
                    let (activations, shape) = fixture.get(&format!("{target_name}/activations{i}"));
                    let (gradients, _) = fixture.get(&format!("{target_name}/gradients{i}"));
                    let our_activations = host(layer.activations.clone().unwrap());
                    compare(
                        worst,
                        &stage("activations (rel)"),
                        &case,
                        &our_activations,
                        activations,
                        true,
                    );
                    let our_gradients = host(layer.gradients.clone().unwrap());
                    let mut ours = our_gradients.clone();
                    let mut theirs = gradients[..ours.len()].to_vec();
                    let mut patched = our_gradients.clone();
                    if i == 0 {
                        let [_, channels, height, width] = [shape[0], shape[1], shape[2], shape[3]];
                        for &(image, position) in ties.iter().filter(|(image, _)| *image < count) {
                            for channel in 0..channels {
                                let index = (image * channels + channel) * height * width + position;
                                let diff = (ours[index] - theirs[index]).abs();
                                let entry = worst.entry("gradients at ReLU6 ties (abs)".into()).or_insert(0.0);
                                *entry = entry.max(diff);
                                // Tied positions are compared through the patched pipeline below.
                                ours[index] = 0.0;
                                theirs[index] = 0.0;
                                patched[index] = gradients[index];
                            }
                        }
                    }
                    compare(worst, &stage("gradients (rel)"), &case, &ours, &theirs, true);
                    let to_tensor = |values: &[f32]| {
                        Tensor::<4>::from_data(
                            TensorData::new(values[..ours.len()].to_vec(), [count, shape[1], shape[2], shape[3]]),
                            &Device::flex(),
                        )
                    };
                    reference_tensors.push(LayerTensors {
                        layer: layer.layer.clone(),
                        activations: to_tensor(activations),
                        gradients: to_tensor(gradients),
                    });
                    patched_tensors.push(LayerTensors {
                        layer: layer.layer.clone(),
                        activations: to_tensor(&our_activations),
                        gradients: to_tensor(&patched),
                    });
                    ember_gradient_tensors.push(LayerTensors {
                        layer: layer.layer.clone(),
                        activations: to_tensor(activations),
                        gradients: to_tensor(&patched),
                    });
                    if !tied {
                        compare_layer_map(worst, stage, &case, layer, &fixture, &prefix, i);
                    }
                }
                let final_map = host(explanation.maps.clone());
                let [_, height, width] = explanation.maps.dims();
                if tied {
                    let diff = final_map
                        .iter()
                        .zip(reference_final)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    let entry = worst
                        .entry("final map with ties, unpatched (abs)".into())
                        .or_insert(0.0);
                    *entry = entry.max(diff);
                    // Ember's activations with its tie-patched gradients: end to end but for the
                    // ties. Methods that divide by per-channel activation sums amplify the
                    // activations' rounding there (see ACTIVATION_SUM_METHODS): recorded.
                    let mut substituted = |label: &str, tensors: Vec<LayerTensors>, assert: bool| {
                        let (maps, final_map) = explainer.explain_tensors(tensors, height, width);
                        for (i, layer) in maps.iter().enumerate() {
                            let stage = |s: &str| stage_label(&format!("{label} {method}: "), s, i, layers.len());
                            record_layer_map(worst, stage, &case, layer, &fixture, &prefix, i, assert);
                        }
                        let stage = format!("{label} {method}: final map (abs)");
                        record(worst, &stage, &case, &host(final_map), reference_final, false, assert);
                    };
                    substituted(
                        "tie-patched",
                        patched_tensors,
                        !ACTIVATION_SUM_METHODS.contains(&method),
                    );
                    // The reference's activations with Ember's tie-patched gradients: Ember's
                    // backward pass and the pipeline, without the activations' rounding (only
                    // Grad-CAM++, whose g³ terms amplify the gradients' rounding too, is recorded).
                    substituted(
                        "Ember's gradients",
                        ember_gradient_tensors,
                        method != Method::GradCamPlusPlus,
                    );
                } else {
                    compare(worst, "final map (abs)", &case, &final_map, reference_final, false);
                }

                // The CAM maths alone, from the reference's activations and gradients. Where the
                // weights divide by per-channel sums, the two sides' float32 sums (in different
                // orders) may differ within their rounding bound, amplified where the division
                // nearly cancels: the difference beyond that envelope is asserted.
                let (maths_layers, maths_final) = explainer.explain_tensors(reference_tensors, height, width);
                let mut final_allowance = 0.0f32;
                for (i, layer) in maths_layers.iter().enumerate() {
                    let stage = |s: &str| stage_label("CAM maths: ", s, i, layers.len());
                    let (activations, shape) = fixture.get(&format!("{target_name}/activations{i}"));
                    let (gradients, _) = fixture.get(&format!("{target_name}/gradients{i}"));
                    let dims = [count, shape[1], shape[2], shape[3]];
                    let Some(envelope) = sum_rounding_envelope(method, activations, gradients, dims) else {
                        compare_layer_map(worst, stage, &case, layer, &fixture, &prefix, i);
                        continue;
                    };
                    let raw = &fixture.get(&format!("{prefix}/raw{i}")).0;
                    let ours_raw = host(layer.raw.clone());
                    compare_within(worst, &stage("raw map (rel)"), &case, &ours_raw, raw, &envelope.raw);
                    let weights = layer.channel_weights.clone().expect("channel weights");
                    let reference_weights = &fixture.get(&format!("{prefix}/weights{i}")).0;
                    compare_within(
                        worst,
                        &stage("channel weights (rel)"),
                        &case,
                        &host(weights),
                        reference_weights,
                        &envelope.weights,
                    );
                    // The final map is normalised per image: its values move by at most twice
                    // the raw map's envelope over the raw map's largest value.
                    let plane = dims[2] * dims[3];
                    for (bound, values) in envelope.raw.chunks(plane).zip(raw.chunks(plane)) {
                        let largest = values.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
                        final_allowance =
                            final_allowance.max(2.0 * bound.iter().fold(0.0f32, |m, &b| m.max(b)) / largest);
                    }
                    let scale = raw.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
                    let widest = envelope.raw.iter().fold(0.0f32, |m, &b| m.max(b)) / scale;
                    let entry = worst.entry(stage("float32 sum-rounding envelope (rel)")).or_insert(0.0);
                    *entry = entry.max(widest);
                }
                let maths_final = host(maths_final);
                compare_within(
                    worst,
                    "CAM maths: final map (abs)",
                    &case,
                    &maths_final,
                    reference_final,
                    &vec![final_allowance; maths_final.len()],
                );
                compared += 1;
            }
        }
    }
    compared
}

/// How far float32 rounding of the per-channel activation sums `S` can move a method's channel
/// weights (per image and channel) and raw map (per position), absolute, to first order; `None`
/// for methods without such sums. Each side's float32 sum is as far from the exact one as the
/// orders float32 code sums in (see [`float32_sum_error`]), so the two within twice that; a weight
/// moves by `|∂w/∂S|` times it. Grad-CAM++'s denominator `2g² + g³·S + ε` can nearly cancel by itself: its
/// own rounding (a few operations of relative `u` on terms as large as `2g² + |g³·S| + ε`) is
/// added. In pytorch-grad-cam 1.5.7: XGrad-CAM `w = Σ g·A / (S + 1e-7)`, Grad-CAM++
/// `w = Σ relu(g)·g² / (2g² + g³·S + 1e-6)`.
fn sum_rounding_envelope(
    method: Method,
    activations: &[f32],
    gradients: &[f32],
    [images, channels, height, width]: [usize; 4],
) -> Option<Envelope> {
    if !ACTIVATION_SUM_METHODS.contains(&method) {
        return None;
    }
    let plane = height * width;
    let u = f64::from(f32::EPSILON) / 2.0;
    let mut envelope = Envelope {
        raw: vec![0.0; images * plane],
        weights: vec![0.0; images * channels],
    };
    for image in 0..images {
        for channel in 0..channels {
            let start = (image * channels + channel) * plane;
            let a: Vec<f64> = activations[start..start + plane]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let g: Vec<f64> = gradients[start..start + plane].iter().map(|&v| f64::from(v)).collect();
            let sum: f64 = a.iter().sum();
            let sum_moves = 2.0 * float32_sum_error(&activations[start..start + plane], sum);
            let weight_moves = if method == Method::XGradCam {
                let numerator: f64 = g.iter().zip(&a).map(|(g, a)| g * a).sum();
                let denominator = sum + 1e-7;
                numerator.abs() / (denominator * denominator) * sum_moves
            } else {
                g.iter()
                    .filter(|&&g| g > 0.0)
                    .map(|&g| {
                        let denominator = 2.0 * g * g + g.powi(3) * sum + 1e-6;
                        let through_sum = g.powi(5) / (denominator * denominator) * sum_moves;
                        let terms = 2.0 * g * g + (g.powi(3) * sum).abs() + 1e-6;
                        let own_rounding = g.powi(3) / (denominator * denominator) * 4.0 * u * terms;
                        through_sum + own_rounding
                    })
                    .sum()
            };
            envelope.weights[image * channels + channel] = weight_moves as f32;
            for (bound, a) in envelope.raw[image * plane..(image + 1) * plane].iter_mut().zip(&a) {
                *bound += (weight_moves * a.abs()) as f32;
            }
        }
    }
    Some(envelope)
}

/// The largest distance from `exact` of `values` summed in float32 in the orders such code uses:
/// one after another, in 8 interleaved lanes (SIMD kernels such as flex's) and pairwise in blocks
/// of 8 (numpy's); at least one rounding of the sum itself.
fn float32_sum_error(values: &[f32], exact: f64) -> f64 {
    fn pairwise(values: &[f32]) -> f32 {
        if values.len() <= 8 {
            values.iter().sum()
        } else {
            let (left, right) = values.split_at(values.len() / 2);
            pairwise(left) + pairwise(right)
        }
    }
    let sequential: f32 = values.iter().sum();
    let mut lanes = [0.0f32; 8];
    for (i, &v) in values.iter().enumerate() {
        lanes[i % 8] += v;
    }
    let interleaved: f32 = lanes.iter().sum();
    [sequential, interleaved, pairwise(values)]
        .iter()
        .map(|&s| (f64::from(s) - exact).abs())
        .fold(exact.abs() * f64::from(f32::EPSILON) / 2.0, f64::max)
}

/// See [`sum_rounding_envelope`].
struct Envelope {
    /// Per image and position of the raw map.
    raw: Vec<f32>,
    /// Per image and channel.
    weights: Vec<f32>,
}

/// [`compare`] for a stage whose every value float32 sum rounding can move by up to `allowance`
/// (absolute, per value; see [`sum_rounding_envelope`]): only the difference beyond it counts.
fn compare_within(
    worst_table: &mut Worst,
    stage: &str,
    case: &str,
    ours: &[f32],
    reference: &[f32],
    allowance: &[f32],
) {
    let relative = stage.ends_with("(rel)");
    let beyond: Vec<f32> = ours
        .iter()
        .zip(reference)
        .zip(allowance)
        .map(|((&a, &b), &allowed)| b + (a - b).signum() * ((a - b).abs() - allowed).max(0.0))
        .collect();
    compare(worst_table, stage, case, &beyond, reference, relative);
}

/// Methods whose channel weights divide by a per-channel sum that can nearly cancel (XGrad-CAM's
/// `ΣA`, Grad-CAM++'s `2g² + ΣA·g³`). At block 13 (an `Add`, activations of both signs) some do,
/// so rounding differences from PyTorch in the activations (≤ 2.7e-6 relative) and gradients
/// (≤ 7.7e-7) are amplified by orders of magnitude in the weights. Their end-to-end maps there
/// are recorded, not asserted; their maths is asserted on the reference's own tensors ("CAM
/// maths", beyond what the sums' own float32 rounding explains: [`sum_rounding_envelope`]; the
/// sums' order differs between machines' SIMD widths, and at block 13 one channel's weight moves
/// 2e-3 for a 1e-6 change of its sum) and end to end at 7×7, and their inputs (activations,
/// gradients) at every layer.
const ACTIVATION_SUM_METHODS: [Method; 2] = [Method::XGradCam, Method::GradCamPlusPlus];

/// The methods whose every stage `make_fixtures.py` records from pytorch-grad-cam's runs; the
/// factorisation methods have their own fixture (`reference_eigen.npz`, below).
const GRADIENT_METHODS: &[Method] = &[
    Method::GradCam,
    Method::HiResCam,
    Method::GradCamElementWise,
    Method::XGradCam,
    Method::GradCamPlusPlus,
    Method::LayerCam,
];

const LAST_BLOCK: &str = "/features/features.18/features.18.2/Clip";
const BLOCK_3: &str = "/features/features.3/Add";
const BLOCK_13: &str = "/features/features.13/Add";
/// The 1×1 expansion convolution right after block 13 (followed by a ReLU6).
const BLOCK_14_EXPAND: &str = "/features/features.14/conv/conv.0/conv.0.0/Conv";

#[test]
fn mobilenet_matches_pytorch_grad_cam() {
    let model = mobilenet_v2::Model::from_embedded(&Device::flex());
    let mut worst = Worst::new();
    let cases = [
        Case {
            fixture: "reference_mobilenet_7x7",
            layers: &[LAST_BLOCK],
            methods: GRADIENT_METHODS,
            other_class: 281,
            tie_conv: None,
        },
        Case {
            fixture: "reference_mobilenet_14x14",
            layers: &[BLOCK_13],
            methods: GRADIENT_METHODS,
            other_class: 281,
            tie_conv: Some(BLOCK_14_EXPAND),
        },
        Case {
            fixture: "reference_mobilenet_two_layers",
            layers: &[BLOCK_13, LAST_BLOCK],
            methods: &[Method::GradCam],
            other_class: 281,
            tie_conv: Some(BLOCK_14_EXPAND),
        },
    ];
    let compared: usize = cases
        .into_iter()
        .map(|case| check_all_cases(&mut worst, &model, case))
        .sum();
    print_worst("MobileNetV2 (flex)", &worst);
    // 6 methods × 2 targets × (batch, single) at 7×7 and at 14×14, Grad-CAM × 2 × 2 on two layers.
    assert_eq!(compared, 24 + 24 + 4, "cases compared");
    assert!(
        worst.contains_key("tie-patched gradcam: final map (abs)"),
        "the 14×14 fixtures are known to hold ReLU6 ties; none was found to check"
    );
}

/// The reference's SmallCnn, natively in Burn, with the fixture's weights.
#[derive(Module, Debug)]
struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    relu2: LayerTap,
    fc: Linear,
    #[module(skip)]
    gap: bool,
}

impl SmallCnn {
    fn load(head: &str) -> Self {
        let weights = Fixture::open(&format!("small_cnn_{head}_weights"));
        let device = Device::flex();
        let conv = |name: &str, from: usize| {
            let mut conv = Conv2dConfig::new([from, 8], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(&device);
            conv.weight = Param::from_tensor(weights.tensor::<4>(&format!("{name}.weight")));
            conv.bias = Some(Param::from_tensor(weights.tensor::<1>(&format!("{name}.bias"))));
            conv
        };
        let gap = head == "gap";
        let mut fc = LinearConfig::new(if gap { 8 } else { 8 * 16 * 16 }, 10).init(&device);
        // PyTorch stores Linear weights as [out, in], Burn as [in, out].
        fc.weight = Param::from_tensor(weights.tensor::<2>("fc.weight").transpose());
        fc.bias = Some(Param::from_tensor(weights.tensor::<1>("fc.bias")));
        Self {
            conv1: conv("conv1", 3),
            conv2: conv("conv2", 8),
            relu2: LayerTap::new("relu2"),
            fc,
            gap,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        // Ember's ReLU, which Guided Backpropagation guides.
        use ember_cam::relu;
        let x = self
            .relu2
            .forward(relu(self.conv2.forward(relu(self.conv1.forward(x)))));
        let x = if self.gap {
            x.mean_dims(&[2, 3]).flatten::<2>(1, 3)
        } else {
            x.flatten::<2>(1, 3)
        };
        self.fc.forward(x)
    }
}

#[test]
fn small_cnns_match_pytorch_grad_cam() {
    let mut worst = Worst::new();
    let mut compared = 0;
    for head in ["gap", "flatten"] {
        let model = SmallCnn::load(head);
        let fixture = format!("reference_small_cnn_{head}");
        let case = Case {
            fixture: &fixture,
            layers: &["relu2"],
            methods: GRADIENT_METHODS,
            other_class: 7,
            tie_conv: None,
        };
        compared += check_all_cases(&mut worst, &|x| model.forward(x), case);
    }
    print_worst("small CNNs (flex)", &worst);
    assert_eq!(compared, 2 * 24, "cases compared");
}

/// EigenCAM and EigenGradCAM against pytorch-grad-cam's `get_2d_projection_with_sign_correction`
/// on the activations and gradients pytorch-grad-cam recorded (`cargo xtask eigen`): the raw
/// projection, ≤ 1e-4 relative to its largest magnitude, sign included (where the projection's
/// most negative and most positive values are within 0.1 % of each other the sign rule is a
/// coin toss for any SVD, and either sign is accepted).
#[test]
fn eigen_methods_match_pytorch_grad_cam_s_projection() {
    let eigen = Fixture::open("reference_eigen");
    let mut compared = 0;
    let mut worst = 0.0f32;
    for source in [
        "reference_mobilenet_7x7",
        "reference_mobilenet_14x14",
        "reference_small_cnn_gap",
        "reference_small_cnn_flatten",
    ] {
        let fixture = Fixture::open(source);
        for target in ["top", "other"] {
            let activations = fixture.tensor::<4>(&format!("{target}/activations0"));
            let gradients = fixture.tensor::<4>(&format!("{target}/gradients0"));
            let [_, _, height, width] = activations.dims();
            for (method, explainer) in [
                ("eigencam", Explainer::from(Method::EigenCam)),
                ("eigengradcam", Explainer::from(Method::EigenGradCam)),
                ("kpcacam", Explainer::from(Method::KpcaCam)),
                (
                    "kpcacam-rbf",
                    Explainer::new(KpcaCam {
                        kernel: Kernel::Rbf,
                        gamma: None,
                    }),
                ),
            ] {
                let tensors = LayerTensors {
                    layer: "layer".into(),
                    activations: activations.clone(),
                    gradients: gradients.clone(),
                };
                let (layers, _) = explainer.explain_tensors(vec![tensors], height, width);
                let ours = host(layers[0].raw.clone());
                let (reference, _) = eigen.get(&format!("{source}/{method}/{target}/raw0"));
                let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let images = reference.len() / (height * width);
                for image in 0..images {
                    let range = image * height * width..(image + 1) * height * width;
                    let (ours, theirs) = (&ours[range.clone()], &reference[range]);
                    let high = theirs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let low = theirs.iter().copied().fold(f32::INFINITY, f32::min);
                    let tie = (high.abs() - low.abs()).abs() <= 1e-3 * high.abs().max(low.abs());
                    let difference = |sign: f32| {
                        ours.iter()
                            .zip(theirs)
                            .map(|(a, b)| (a - sign * b).abs())
                            .fold(0.0f32, f32::max)
                            / scale
                    };
                    let error = if tie {
                        difference(1.0).min(difference(-1.0))
                    } else {
                        difference(1.0)
                    };
                    worst = worst.max(error);
                    assert!(
                        error <= 1e-4,
                        "{source} {method} {target} image {image}: {error:.2e} relative"
                    );
                    compared += 1;
                }
            }
        }
    }
    println!("EigenCAM / EigenGradCAM / KPCA-CAM vs pytorch-grad-cam: worst {worst:.2e} relative ({compared} maps)");
    assert_eq!(compared, 4 * 2 * 4 * 2, "maps compared");
}

/// A perturbation method against pytorch-grad-cam's own runs in `fixture` (`<prefix>/<target>/
/// {weights,final}` for the top class and `other`): channel weights ≤ 1e-4 relative to the
/// largest, final maps ≤ 1e-4 absolute. Returns the worst of each.
fn perturbation_matches(
    method: Method,
    fixture: &Fixture,
    model: &dyn Fn(Tensor<4>) -> Tensor<2>,
    layer: &str,
    (prefix, input): (&str, &str),
    other: usize,
) -> (f32, f32) {
    let input = Fixture::open(input).tensor::<4>("input");
    let mut worst = (0.0f32, 0.0f32);
    for (name, target) in [("top", ClassTarget::TopClass), ("other", ClassTarget::Class(other))] {
        let explanation = Explainer::from(method)
            .layer(layer)
            .explain(&|x| model(x), input.clone(), &target)
            .unwrap();
        let weights = host(explanation.layers[0].channel_weights.clone().expect("channel weights"));
        let (reference, _) = fixture.get(&format!("{prefix}/{name}/weights"));
        assert_eq!(weights.len(), reference.len(), "{prefix} {name}: weights compared");
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let error = weights
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / scale;
        assert!(
            error <= 1e-4,
            "{method} {prefix} {name}: weights differ by {error:.2e} relative"
        );
        let (reference, _) = fixture.get(&format!("{prefix}/{name}/final"));
        let maps = host(explanation.maps);
        assert_eq!(maps.len(), reference.len(), "{prefix} {name}: maps compared");
        let map_error = maps
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            map_error <= 1e-4,
            "{method} {prefix} {name}: final maps differ by {map_error:.2e}"
        );
        worst = (worst.0.max(error), worst.1.max(map_error));
    }
    worst
}

/// The small CNNs at their last ReLU and MobileNetV2 at `mobilenet_layer` against `fixture`'s
/// pytorch-grad-cam runs of `method`, a batch of two images each.
fn perturbation_method_matches(method: Method, fixture: &str, mobilenet_layer: &str, mobilenet_prefix: &str) {
    let fixture = Fixture::open(fixture);
    let mut worst = (0.0f32, 0.0f32);
    let mut keep = |(weights, maps): (f32, f32)| worst = (worst.0.max(weights), worst.1.max(maps));
    for head in ["gap", "flatten"] {
        let model = SmallCnn::load(head);
        keep(perturbation_matches(
            method,
            &fixture,
            &|x| model.forward(x),
            "relu2",
            (&format!("small_cnn_{head}"), &format!("reference_small_cnn_{head}")),
            7,
        ));
    }
    let mobilenet = mobilenet_v2::Model::from_embedded(&Device::flex());
    keep(perturbation_matches(
        method,
        &fixture,
        &|x| CamModel::forward(&mobilenet, x).unwrap(),
        mobilenet_layer,
        // The same two photos as every MobileNetV2 fixture.
        (mobilenet_prefix, "reference_mobilenet_7x7"),
        281,
    ));
    println!(
        "{method} vs pytorch-grad-cam: weights {:.2e} relative, final maps {:.2e}",
        worst.0, worst.1
    );
}

/// AblationCAM against pytorch-grad-cam's own runs (`cargo xtask ablation`), MobileNetV2 at its
/// last block (1280 channels).
#[test]
fn ablation_cam_matches_pytorch_grad_cam() {
    perturbation_method_matches(Method::AblationCam, "reference_ablation", LAST_BLOCK, "mobilenet_7x7");
}

/// ScoreCAM against pytorch-grad-cam's own runs (`cargo xtask score`), MobileNetV2 at block 3
/// (24 channels at 56×56: every channel is a forward pass of the whole network).
#[test]
fn score_cam_matches_pytorch_grad_cam() {
    perturbation_method_matches(Method::ScoreCam, "reference_score", BLOCK_3, "mobilenet_block3");
}

/// Guided Backpropagation and Guided Grad-CAM against pytorch-grad-cam's `GuidedBackpropReLUModel`
/// (`cargo xtask guided`): the small CNNs natively in Burn, the zoo's ResNet and VGG loaded from
/// ONNX at run time; top class and another class, two images each. Both ≤ 1e-4 relative to the
/// largest value of the reference.
#[test]
fn guided_backprop_matches_pytorch_grad_cam() {
    let guided = Fixture::open("reference_guided");
    let mut worst = (0.0f32, 0.0f32);
    let mut compared = 0;
    let mut check = |model: &dyn Fn(Tensor<4>) -> Tensor<2>, layer: &str, input: Tensor<4>, prefix: &str, other| {
        for (name, target) in [("top", ClassTarget::TopClass), ("other", ClassTarget::Class(other))] {
            let explanation = Explainer::from(Method::GradCam)
                .layer(layer)
                .guided_backprop(true)
                .explain(&|x| model(x), input.clone(), &target)
                .unwrap();
            for (stage, ours) in [
                ("guided_backprop", explanation.guided_backprop.clone().unwrap()),
                ("guided_grad_cam", explanation.guided_grad_cam().unwrap()),
            ] {
                let ours = host(ours);
                let (reference, _) = guided.get(&format!("{prefix}/{name}/{stage}"));
                assert_eq!(ours.len(), reference.len(), "{prefix} {name} {stage}: sizes");
                let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "{prefix} {name} {stage}: the reference is zero");
                let error = ours
                    .iter()
                    .zip(reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
                    / scale;
                assert!(error <= 1e-4, "{prefix} {name} {stage}: {error:.2e} relative");
                if stage == "guided_backprop" {
                    worst.0 = worst.0.max(error);
                } else {
                    worst.1 = worst.1.max(error);
                }
                compared += 1;
            }
        }
    };
    for head in ["gap", "flatten"] {
        let model = SmallCnn::load(head);
        let input = Fixture::open(&format!("reference_small_cnn_{head}")).tensor::<4>("input");
        check(&|x| model.forward(x), "relu2", input, &format!("small_cnn_{head}"), 7);
    }
    let zoo = std::path::Path::new("tests/fixtures/zoo");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo.join("zoo.json")).unwrap()).unwrap();
    for name in ["resnet", "vgg"] {
        let model = ember_runtime::OnnxModel::load(zoo.join(format!("{name}.onnx")), &Device::flex()).unwrap();
        let input = Fixture::open(&format!("zoo/{name}")).tensor::<4>("input");
        let layer = table[name]["layer"].as_str().unwrap();
        check(
            &|x| CamModel::forward(&model, x).unwrap(),
            layer,
            input,
            &format!("zoo_{name}"),
            7,
        );
    }
    println!(
        "Guided Backpropagation vs pytorch-grad-cam: {:.2e} relative; Guided Grad-CAM {:.2e} ({compared} arrays)",
        worst.0, worst.1
    );
    assert_eq!(compared, 4 * 2 * 2, "arrays compared");
}

/// `eigen_smooth` and `aug_smooth` against pytorch-grad-cam's own runs (`cargo xtask smooth`):
/// the small CNNs and MobileNetV2 at its last block, two images, top class and another class.
/// Eigen-smoothed projections ≤ 1e-4 relative to the largest, with Ember's sign rule; final maps
/// ≤ 1e-4 where LAPACK gave pytorch-grad-cam the same sign (elsewhere its map is the inverse).
/// Augmentation-smoothed final maps ≤ 1e-4.
#[test]
fn eigen_and_aug_smoothing_match_pytorch_grad_cam() {
    let smooth = Fixture::open("reference_smooth");
    let (mut worst_raw, mut worst_final, mut worst_aug) = (0.0f32, 0.0f32, 0.0f32);
    let (mut finals, mut raws, mut augs) = (0, 0, 0);
    let mut check = |model: &dyn Fn(Tensor<4>) -> Tensor<2>, layer: &str, input: Tensor<4>, prefix: &str, other| {
        for (target_name, target) in [("top", ClassTarget::TopClass), ("other", ClassTarget::Class(other))] {
            for method in [Method::GradCam, Method::HiResCam, Method::LayerCam] {
                let key = format!("{prefix}/eigen/{method}/{target_name}");
                let explanation = Explainer::from(method)
                    .layer(layer)
                    .eigen_smooth(true)
                    .explain(&|x| model(x), input.clone(), &target)
                    .unwrap();
                let raw = host(explanation.layers[0].raw.clone());
                let (reference, _) = smooth.get(&format!("{key}/raw"));
                let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let error = raw
                    .iter()
                    .zip(reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max)
                    / scale;
                assert!(error <= 1e-4, "{key}: projection differs by {error:.2e} relative");
                worst_raw = worst_raw.max(error);
                raws += 1;
                let maps = host(explanation.maps);
                let (reference, _) = smooth.get(&format!("{key}/final"));
                let (agrees, _) = smooth.get(&format!("{key}/agrees"));
                let pixels = maps.len() / agrees.len();
                for (image, &agree) in agrees.iter().enumerate() {
                    if agree == 1.0 {
                        let range = image * pixels..(image + 1) * pixels;
                        let error = maps[range.clone()]
                            .iter()
                            .zip(&reference[range])
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f32::max);
                        assert!(error <= 1e-4, "{key} image {image}: final map differs by {error:.2e}");
                        worst_final = worst_final.max(error);
                        finals += 1;
                    }
                }
            }
            for method in [Method::GradCam, Method::GradCamPlusPlus] {
                let key = format!("{prefix}/aug/{method}/{target_name}");
                let maps = host(
                    Explainer::from(method)
                        .layer(layer)
                        .aug_smooth(true)
                        .explain(&|x| model(x), input.clone(), &target)
                        .unwrap()
                        .maps,
                );
                let (reference, _) = smooth.get(&format!("{key}/final"));
                assert_eq!(maps.len(), reference.len(), "{key}");
                let error = maps
                    .iter()
                    .zip(reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(error <= 1e-4, "{key}: final maps differ by {error:.2e}");
                worst_aug = worst_aug.max(error);
                augs += 1;
            }
        }
    };
    for head in ["gap", "flatten"] {
        let model = SmallCnn::load(head);
        let input = Fixture::open(&format!("reference_small_cnn_{head}")).tensor::<4>("input");
        check(&|x| model.forward(x), "relu2", input, &format!("small_cnn_{head}"), 7);
    }
    let mobilenet = mobilenet_v2::Model::from_embedded(&Device::flex());
    let input = Fixture::open("reference_mobilenet_7x7").tensor::<4>("input");
    check(
        &|x| CamModel::forward(&mobilenet, x).unwrap(),
        LAST_BLOCK,
        input,
        "mobilenet_7x7",
        281,
    );
    println!(
        "eigen_smooth vs pytorch-grad-cam: projections {worst_raw:.2e} relative ({raws}), final maps {worst_final:.2e} \
         ({finals} images with LAPACK's sign); aug_smooth final maps {worst_aug:.2e} ({augs})"
    );
    assert_eq!((raws, augs), (18, 12), "cases compared");
    assert!(finals >= 18, "too few final maps comparable: {finals}");
}
