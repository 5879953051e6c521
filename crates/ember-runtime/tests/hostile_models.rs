//! The library meets the hostile corpus (`tests/fixtures/hostile/`, `cargo xtask hostile`):
//! `OnnxModel::load` and `Explainer::explain` return typed errors for every hostile model, in
//! process, without panicking or allocating past the memory budget.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use ember_core::{ClassTarget, Explainer, GradCam};
use ember_runtime::OnnxModel;
use serde_json::Value;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile")
}

/// Loads the model and explains a 16×16 grey image with it.
fn explain(model: &str) -> Result<(), String> {
    let device = Device::flex();
    let model = OnnxModel::load(corpus().join(model), &device).map_err(|e| e.to_string())?;
    let input = Tensor::<4>::full([1, 3, 16, 16], 0.5, &device);
    Explainer::new(GradCam)
        .explain(&model, input, &ClassTarget::TopClass)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn every_hostile_model_is_an_error_and_every_valid_one_explains() {
    // Well below this machine's memory: a size that escaped the checks would abort the test.
    ember_core::set_memory_budget(1 << 30);
    let text = std::fs::read_to_string(corpus().join("cases.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    // The cases whose only input is a corpus model at its own 16×16 size.
    fn plain(args: &[Value]) -> Option<&str> {
        let args: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
        match args.as_slice() {
            [
                "explain",
                "--device",
                "flex",
                "--model",
                model,
                "--image",
                "{dir}/photo.png",
                "--out",
                _,
                "--out-dir",
                _,
            ] => model.strip_prefix("{dir}/").filter(|m| m.ends_with(".onnx")),
            _ => None,
        }
    }
    let mut checked = 0;
    for case in &cases {
        let Some(model) = plain(case["args"].as_array().unwrap()) else {
            continue;
        };
        let result = explain(model);
        let expected_ok = case["exit"].as_i64() == Some(0);
        assert_eq!(result.is_ok(), expected_ok, "{}: {result:?}", case["name"]);
        let message = case["message"].as_str().unwrap();
        // A model whose fixed input is not 16×16 refuses this input by its shape (the CLI's
        // pre-processing, which asks for the model's size, is what the corpus case checks).
        if let Err(error) = &result
            && !error.starts_with("the input has shape")
        {
            assert!(
                error.contains(message),
                "{}: expected `{message}` in {error}",
                case["name"]
            );
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} model cases");
}

/// A Resize that onnx-ir refuses (antialiased, so Ember's own kernel runs it) with scales read
/// at run time: a downscale by 1/1500 (an antialiasing kernel of 3000 taps per output), one to
/// nothing, a zero, a negative and a NaN scale, and an upscale past the memory budget are
/// errors, not panics, hangs or allocations; a sane scale runs.
#[test]
fn resize_scales_from_a_tensor_are_checked() {
    use ember_runtime::{HostTensor, OnnxGraph};
    use onnx_ir::{AttributeProto, AttributeType, Message, ModelProto, NodeProto, TypeProto, ValueInfoProto};

    ember_core::set_memory_budget(1 << 30);
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.opset_import.push(Default::default());
    model.opset_import[0].version = 18;
    let graph = model.graph.mut_or_insert_default();
    let declare = |name: &str, elem_type: i32, rank: usize| {
        let mut info = ValueInfoProto::new();
        info.name = name.into();
        let mut ty = TypeProto::new();
        let tensor = ty.mut_tensor_type();
        tensor.elem_type = elem_type;
        for axis in 0..rank {
            tensor.shape.mut_or_insert_default().dim.push(Default::default());
            tensor.shape.mut_or_insert_default().dim[axis].set_dim_param(format!("{name}{axis}"));
        }
        info.type_ = Some(ty).into();
        info
    };
    graph.input.push(declare("x", 1, 4));
    graph.input.push(declare("scales", 1, 1));
    graph.output.push(declare("y", 1, 4));
    let mut resize = NodeProto::new();
    resize.name = "resize".into();
    resize.op_type = "Resize".into();
    resize.input = vec!["x".into(), String::new(), "scales".into()];
    resize.output = vec!["y".into()];
    for (name, value) in [("antialias", 1), ("mode", 0)] {
        let mut attribute = AttributeProto::new();
        attribute.name = name.into();
        if name == "mode" {
            attribute.type_ = AttributeType::STRING.into();
            attribute.s = b"linear".to_vec().into();
        } else {
            attribute.type_ = AttributeType::INT.into();
            attribute.i = value;
        }
        resize.attribute.push(attribute);
    }
    graph.node.push(resize);
    let path = std::env::temp_dir().join(format!("ember-resize-scales-{}.onnx", std::process::id()));
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();

    let device = Device::flex();
    let graph = OnnxGraph::load(&path, &device).unwrap();
    let run = |scale: f32| {
        let x = HostTensor::Float {
            values: vec![0.5; 2048],
            shape: vec![1, 1, 1, 2048],
        };
        let scales = HostTensor::Float {
            values: vec![1.0, 1.0, 1.0, scale],
            shape: vec![4],
        };
        graph.run(vec![x, scales], &device).map_err(|e| e.to_string())
    };
    let outputs = run(0.5).unwrap();
    assert_eq!(outputs[0].shape(), [1, 1, 1, 1024]);
    for (scale, expected) in [
        (1.0 / 1500.0, "taps per output"),
        (1e-30, "empty shape"),
        (0.0, "not a positive number"),
        (-2.0, "not a positive number"),
        (f32::NAN, "not a positive number"),
        (1e6, "memory budget"),
        (1e9, "along an axis"),
    ] {
        let error = run(scale).unwrap_err();
        assert!(error.contains(expected), "scale {scale}: {error}");
    }
    std::fs::remove_file(path).ok();
}
