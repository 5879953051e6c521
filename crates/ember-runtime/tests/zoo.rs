//! The architecture zoo (`xtask/reference/make_zoo.py`): small seeded torchvision networks
//! exported to ONNX, run by the executor and compared with PyTorch and onnxruntime, and their
//! Grad-CAM compared with pytorch-grad-cam 1.5.7.
//!
//! Tolerances: logits ≤ 1e-4 relative to the largest reference magnitude (the bound);
//! Grad-CAM maps (in [0, 1]) ≤ 1e-4 absolute, as in the MobileNetV2 parity tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use ember_core::{CamModel, ClassTarget, Explainer, GradCam, Layout, Region, RegionTarget, SpatialLayout, Vocabulary};
use ember_runtime::{OnnxModel, ScoreSource};

const LOGITS_REL: f32 = 1e-4;
const MAP_ABS: f32 = 1e-4;

mod common;
use common::{max_abs_diff, npz_arrays, relative, root};

fn zoo_dir() -> PathBuf {
    root().join("tests/fixtures/zoo")
}

fn arrays(name: &str) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    npz_arrays(&zoo_dir().join(format!("{name}.npz")))
}

struct Case {
    name: String,
    layer: String,
    softmax_output: bool,
    dynamic_size: bool,
    input_layout: Layout,
    /// As `ember layers` shows it: `NCHW`, `NHWC`, `tokens 4x4 after 1`.
    layer_layout: String,
    /// The region target of a dense output.
    target: Option<RegionTarget>,
}

/// The maps of an explanation, whatever its model's output.
struct Explained {
    maps: burn::tensor::Tensor<3>,
}

fn region_target(entry: &serde_json::Value) -> Option<RegionTarget> {
    let target = entry.get("target").filter(|t| !t.is_null())?;
    let region: Vec<usize> = target["region"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    Some(RegionTarget {
        channel: target["channel"].as_u64().unwrap() as usize,
        region: Region::Box {
            x0: region[0],
            y0: region[1],
            x1: region[2],
            y1: region[3],
        },
    })
}

fn layout(name: &serde_json::Value) -> Layout {
    SpatialLayout::parse_name(name.as_str().unwrap()).unwrap().into()
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(zoo_dir().join("zoo.json")).unwrap();
    let table: serde_json::Value = serde_json::from_str(&text).unwrap();
    table
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, entry)| Case {
            name: name.clone(),
            layer: entry["layer"].as_str().unwrap().to_owned(),
            softmax_output: entry["softmax_output"].as_bool().unwrap(),
            dynamic_size: entry["dynamic_size"].as_bool().unwrap(),
            input_layout: layout(&entry["input_layout"]),
            layer_layout: entry["layer_layout"].as_str().unwrap().to_owned(),
            target: region_target(entry),
        })
        .collect()
}

#[test]
fn every_zoo_architecture_matches_pytorch_onnxruntime_and_pytorch_grad_cam() {
    let device = Device::flex();
    let cases = cases();
    assert_eq!(cases.len(), 25, "the zoo lists twenty-five models");
    assert!(
        cases
            .iter()
            .any(|c| c.target.is_some() && c.layer_layout.starts_with("tokens")),
        "the zoo has a dense output, and a token layer explained for one"
    );
    assert!(
        cases.iter().any(|c| c.input_layout == Layout::ChannelsLast)
            && cases.iter().filter(|c| c.layer_layout == "NHWC").count() >= 3
            && cases.iter().filter(|c| c.layer_layout.starts_with("tokens")).count() >= 3,
        "the zoo has channels-last inputs and layers, and token layers"
    );
    let mut report = Vec::new();
    for case in cases {
        let fixture = arrays(&case.name);
        // In the graph's own layout, as a user brings it (`--input-npy`).
        let (input, shape) = &fixture["input"];
        let input = Tensor::<4>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
        // pytorch-grad-cam explains the raw output: probabilities for a softmax model.
        let model = OnnxModel::load(zoo_dir().join(format!("{}.onnx", case.name)), &device)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            .with_scores(ScoreSource::Output);
        assert_eq!(model.final_activation().is_some(), case.softmax_output, "{}", case.name);
        assert_eq!(model.input_shape()[2].is_none(), case.dynamic_size, "{}", case.name);
        assert_eq!(model.input_layout(), Some(case.input_layout), "{}", case.name);
        let explained = model.layers().into_iter().find(|l| l.name == case.layer).unwrap();
        assert_eq!(
            explained.layout.map(|l| l.to_string()),
            Some(case.layer_layout.clone()),
            "{}",
            case.name
        );
        if case.layer_layout.starts_with("tokens") {
            // pytorch-grad-cam's advice for ViTs is the default: the last block's norm1.
            assert_eq!(model.default_layer(), Some(case.layer.clone()), "{}", case.name);
        }
        let input = model.to_nchw(input);
        let [_, _, height, width] = input.dims();

        let explainer = Explainer::new(GradCam).layer(case.layer.clone());
        // Classifiers by their top class; dense outputs (the segmenter) by pytorch-grad-cam's
        // SemanticSegmentationTarget: one channel summed over a box.
        let (output, explanation) = match &case.target {
            None => {
                let explanation = explainer.explain(&model, input, &ClassTarget::TopClass);
                let explanation = explanation.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                (
                    explanation.output.clone().inner().try_into_vec_as::<f32>().unwrap(),
                    explanation.maps,
                )
            }
            Some(target) => {
                let dense = model.dense().expect("a dense output");
                let explanation = explainer.explain(&dense, input, target);
                let explanation = explanation.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                (
                    explanation.output.clone().inner().try_into_vec_as::<f32>().unwrap(),
                    explanation.maps,
                )
            }
        };
        let vs_torch = relative(&output, &fixture["torch_logits"].0);
        let vs_ort = relative(&output, &fixture["ort_logits"].0);
        let explanation = Explained { maps: explanation };
        let (reference_map, map_shape) = &fixture["grad_cam"];
        let per_image = reference_map.len() / map_shape[0];
        let weakest_peak = reference_map
            .chunks(per_image)
            .map(|m| m.iter().fold(0.0f32, |a, &v| a.max(v)))
            .fold(f32::INFINITY, f32::min);
        assert!(weakest_peak > 0.5, "{}: the reference map is degenerate", case.name);
        assert_eq!(&explanation.maps.dims().to_vec(), map_shape, "{}", case.name);
        assert_eq!(
            explanation.maps.dims()[1..],
            [height, width],
            "{}: maps have the input's size",
            case.name
        );
        let map = explanation.maps.inner().into_data().try_to_vec::<f32>().unwrap();
        let map_diff = max_abs_diff(&map, reference_map);
        report.push(format!(
            "{:14} logits vs torch {vs_torch:.1e}, vs onnxruntime {vs_ort:.1e}; Grad-CAM at {} {map_diff:.1e}",
            case.name, case.layer
        ));
        assert!(
            vs_torch <= LOGITS_REL && vs_ort <= LOGITS_REL,
            "{}",
            report.last().unwrap()
        );
        assert!(map_diff <= MAP_ABS, "{}", report.last().unwrap());
    }
    println!("{}", report.join("\n"));
}

#[test]
fn a_softmax_output_is_explained_through_its_logits_by_default() {
    let device = Device::flex();
    let path = zoo_dir().join("paddle_style.onnx");
    let fixture = arrays("paddle_style");
    let (input, shape) = &fixture["input"];
    let input = Tensor::<4>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
    let model = OnnxModel::load(&path, &device).unwrap();
    let (logits, probabilities) = model.run(input.clone()).unwrap();
    let recomputed = burn::tensor::activation::softmax(logits.clone(), 1);
    let recomputed = recomputed.into_data().try_to_vec::<f32>().unwrap();
    let probabilities = probabilities.into_data().try_to_vec::<f32>().unwrap();
    assert!(max_abs_diff(&recomputed, &probabilities) < 1e-6);
    let logits = logits.into_data().try_to_vec::<f32>().unwrap();
    assert!(
        logits.iter().any(|v| *v < 0.0 || *v > 1.0),
        "the scores are logits, not probabilities"
    );
    // The dynamic input size takes another resolution.
    let larger = Tensor::<4>::ones([1, 3, 96, 80], &device);
    assert_eq!(CamModel::forward(&model, larger).unwrap().dims(), [1, 10]);
}

/// Every zoo model as a plain graph, without taps (what `ember run` executes), gives PyTorch's
/// outputs. Without taps onnx-ir's simplification fuses the transformers' decomposed attention
/// (`MatMul → Div → Add → Softmax → MatMul`) into `Attention` nodes, which the executor runs
/// (Swin's shifted windows add their masks there).
#[test]
fn every_zoo_model_runs_as_a_plain_graph() {
    let device = Device::flex();
    let mut report = Vec::new();
    for case in cases() {
        let fixture = arrays(&case.name);
        let (input, shape) = &fixture["input"];
        let graph = ember_runtime::OnnxGraph::load(zoo_dir().join(format!("{}.onnx", case.name)), &device)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let outputs = graph
            .run(
                vec![ember_runtime::HostTensor::Float {
                    values: input.clone(),
                    shape: shape.clone(),
                }],
                &device,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let ember_runtime::HostTensor::Float { values, .. } = &outputs[0] else {
            panic!("{}: integer output", case.name);
        };
        let vs_torch = relative(values, &fixture["torch_logits"].0);
        report.push(format!("{:14} as a plain graph: vs torch {vs_torch:.1e}", case.name));
        assert!(vs_torch <= LOGITS_REL, "{}", report.last().unwrap());
    }
    println!("{}", report.join("\n"));
}
