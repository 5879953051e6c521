//! One ONNX file, one answer: a model imported at build time (`ember-onnx`'s `TappedModelGen`,
//! see `build.rs`) and the same file loaded at run time (`ember-runtime`) give the same scores
//! and maps. The file is the zoo's PaddlePaddle-style classifier, whose graph ends in a Softmax:
//! both explain its logits by default, and both its probabilities on request. The generated
//! code is compiled here as in a user's crate, through `ember_cam` only.

use burn::tensor::{Device, Tensor, TensorData};
use ember_cam::{
    ClassTarget, Explainer, FinalActivation, Method, ScoreSource, Vocabulary, burn, maps_to_host, to_host,
};
use ember_runtime::OnnxModel;

// The generated API is larger than these tests use.
#[allow(dead_code)]
mod logits {
    include!(concat!(env!("OUT_DIR"), "/test-models/logits/paddle_style.rs"));
}

#[allow(dead_code)]
mod output {
    include!(concat!(env!("OUT_DIR"), "/test-models/output/paddle_style.rs"));
}

#[allow(dead_code)]
mod nhwc {
    include!(concat!(env!("OUT_DIR"), "/test-models/nhwc/tf_style_nhwc.rs"));
}

const FILE: &str = "tests/fixtures/zoo/paddle_style.onnx";

fn input(device: &Device) -> Tensor<4> {
    let (values, shape) = zoo_array("paddle_style", "input");
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// An array of a zoo fixture: values and shape.
fn zoo_array(model: &str, key: &str) -> (Vec<f32>, Vec<usize>) {
    let file = std::fs::File::open(format!("tests/fixtures/zoo/{model}.npz")).unwrap();
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    let array = npz.by_name(key).unwrap().unwrap();
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    (array.into_vec::<f32>().unwrap(), shape)
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every method on both models: the scores and maps, worst differences.
fn compare(built: &impl ember_cam::CamModel<Output = Tensor<2>>, loaded: &OnnxModel, device: &Device) -> (f32, f32) {
    let (mut scores, mut maps) = (0.0f32, 0.0f32);
    for &method in Method::ALL {
        let explainer = Explainer::from(method);
        let a = explainer.explain(built, input(device), &ClassTarget::TopClass).unwrap();
        let b = explainer
            .explain(loaded, input(device), &ClassTarget::TopClass)
            .unwrap();
        scores = scores.max(worst(&to_host(&a.output).unwrap(), &to_host(&b.output).unwrap()));
        maps = maps.max(worst(&maps_to_host(&a.maps).unwrap(), &maps_to_host(&b.maps).unwrap()));
    }
    (scores, maps)
}

#[test]
fn a_softmax_ended_model_explains_its_logits_however_it_is_loaded() {
    let device = Device::flex();
    assert_eq!(logits::FINAL_ACTIVATION, Some(FinalActivation::Softmax));
    let built = logits::Model::from_embedded(&device);
    let loaded = OnnxModel::load(FILE, &device).unwrap();
    assert_eq!(loaded.final_activation(), Some(FinalActivation::Softmax));
    let (scores, maps) = compare(&built, &loaded, &device);
    println!("build time vs run time, logits: scores {scores:.1e}, maps {maps:.1e}");
    assert!(
        scores <= 1e-5 && maps <= 1e-5,
        "scores differ by {scores}, maps by {maps}"
    );

    // The scores are logits: the graph's own output is their softmax.
    let probabilities = to_host(&output::Model::from_embedded(&device).forward(input(&device))).unwrap();
    let logits = to_host(&ember_cam::CamModel::forward(&built, input(&device)).unwrap()).unwrap();
    let classes = logits.len() / input(&device).dims()[0];
    let softmax: Vec<f32> = logits
        .chunks(classes)
        .flat_map(|row| {
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - top).exp()).sum();
            row.iter().map(move |v| (v - top).exp() / sum).collect::<Vec<_>>()
        })
        .collect();
    assert!(
        worst(&softmax, &probabilities) <= 1e-6,
        "the output is not the logits' softmax"
    );
}

#[test]
fn on_request_both_explain_the_output() {
    let device = Device::flex();
    let built = output::Model::from_embedded(&device);
    let loaded = OnnxModel::load(FILE, &device).unwrap().with_scores(ScoreSource::Output);
    let (scores, maps) = compare(&built, &loaded, &device);
    println!("build time vs run time, output: scores {scores:.1e}, maps {maps:.1e}");
    assert!(
        scores <= 1e-5 && maps <= 1e-5,
        "scores differ by {scores}, maps by {maps}"
    );
    // And explaining probabilities is a different answer from explaining logits.
    let logits = logits::Model::from_embedded(&device);
    let a = Explainer::from(Method::GradCam)
        .explain(&logits, input(&device), &ClassTarget::TopClass)
        .unwrap();
    let b = Explainer::from(Method::GradCam)
        .explain(&built, input(&device), &ClassTarget::TopClass)
        .unwrap();
    let apart = worst(&maps_to_host(&a.maps).unwrap(), &maps_to_host(&b.maps).unwrap());
    println!("logits vs probabilities, Grad-CAM: maps {apart:.3} apart");
    assert!(apart > 1e-3, "the score source made no difference ({apart})");
}

/// The run-time executor on an autodiff device: weights are uploaded as constants (never
/// requiring gradients), so the map is the plain device's and the output is detached.
#[test]
fn the_executor_on_an_autodiff_device_gives_the_same_map() {
    let device = Device::flex();
    let plain = OnnxModel::load(FILE, &device).unwrap();
    let autodiff = OnnxModel::load(FILE, &device.clone().autodiff()).unwrap();
    let explainer = Explainer::from(Method::GradCam);
    let a = explainer
        .explain(&plain, input(&device), &ClassTarget::TopClass)
        .unwrap();
    let b = explainer
        .explain(&autodiff, input(&device).autodiff(), &ClassTarget::TopClass)
        .unwrap();
    let worst = worst(&maps_to_host(&a.maps).unwrap(), &maps_to_host(&b.maps).unwrap());
    assert!(worst <= 1e-6, "maps differ by {worst}");
    assert!(!b.output.is_tracked());
}

/// Guided Backpropagation guides the ReLUs of the generated code (burn-onnx's ReLU becomes
/// `ember_cam::relu`) as the executor guides its `Relu` nodes: the same input gradients
/// (≤ 1e-5 relative to the largest). A model whose ReLUs were not guided would be refused.
#[test]
fn guided_backprop_is_the_same_at_build_time_and_run_time() {
    let device = Device::flex();
    let built = logits::Model::from_embedded(&device);
    let loaded = OnnxModel::load(FILE, &device).unwrap();
    let a = ember_cam::guided_backprop(&built, input(&device), &ClassTarget::TopClass).unwrap();
    let b = ember_cam::guided_backprop(&loaded, input(&device), &ClassTarget::TopClass).unwrap();
    let (a, b) = (to_host(&a).unwrap(), to_host(&b).unwrap());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "a zero gradient");
    let relative = worst(&a, &b) / scale;
    println!("guided backpropagation, build time vs run time: {relative:.2e} relative");
    assert!(relative <= 1e-5, "{relative:.2e}");
}

/// MobileNetV2's activations are ReLU6 (ONNX `Clip`), which Guided Backpropagation does not
/// guide (nor do pytorch-grad-cam and captum): a clear error, not an unguided gradient.
#[test]
fn guided_backprop_without_relus_is_an_error() {
    let device = Device::flex();
    let model = ember_cam::models::mobilenet_v2::Model::from_embedded(&device);
    let input = Tensor::<4>::zeros([1, 3, 224, 224], &device);
    let error = ember_cam::guided_backprop(&model, input, &ClassTarget::TopClass).unwrap_err();
    assert!(matches!(error, ember_cam::CamError::NoGuidedRelu), "{error}");
    assert!(error.to_string().contains("ReLU6"), "{error}");
}

/// A channels-last (tf2onnx-style) model: both take [N, C, H, W] images and hand the graph
/// [N, H, W, C]; both know its layers' layouts; both give pytorch-grad-cam's map (on the
/// NCHW-wrapped model with the permuting `reshape_transform`) and agree with each other.
#[test]
fn a_channels_last_model_gives_one_answer_however_it_is_loaded() {
    let device = Device::flex();
    let file = "tests/fixtures/zoo/tf_style_nhwc.onnx";
    let built = nhwc::Model::from_embedded(&device);
    let loaded = OnnxModel::load(file, &device).unwrap().with_scores(ScoreSource::Output);
    assert_eq!(
        ember_cam::CamModel::layers(&built),
        ember_cam::CamModel::layers(&loaded)
    );
    assert_eq!(nhwc::INPUT_CHW, &loaded.input_shape()[1..]);
    assert_eq!(loaded.input_layout(), Some(ember_cam::Layout::ChannelsLast));

    let (values, shape) = zoo_array("tf_style_nhwc", "input");
    let input = loaded.to_nchw(Tensor::from_data(TensorData::new(values, shape), &device));
    let layer = "/acts.2/Relu";
    let explainer = Explainer::from(Method::GradCam).layer(layer);
    // pytorch-grad-cam explains the softmax output; both models below explain its logits.
    let a = explainer
        .explain(&loaded, input.clone(), &ClassTarget::TopClass)
        .unwrap();
    let (reference, _) = zoo_array("tf_style_nhwc", "grad_cam");
    let vs_reference = worst(&maps_to_host(&a.maps).unwrap(), &reference);
    let logits_built = explainer
        .explain(&built, input.clone(), &ClassTarget::TopClass)
        .unwrap();
    let logits_loaded = explainer
        .explain(&OnnxModel::load(file, &device).unwrap(), input, &ClassTarget::TopClass)
        .unwrap();
    let apart = worst(
        &maps_to_host(&logits_built.maps).unwrap(),
        &maps_to_host(&logits_loaded.maps).unwrap(),
    );
    println!(
        "channels-last model: run time vs pytorch-grad-cam {vs_reference:.1e}, build time vs run time {apart:.1e}"
    );
    assert!(vs_reference <= 1e-4, "{vs_reference}");
    assert!(apart <= 1e-5, "{apart}");
}
