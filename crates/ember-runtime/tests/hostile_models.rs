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
