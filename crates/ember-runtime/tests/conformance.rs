//! The fast subset of ONNX's backend node tests (`tests/fixtures/conformance/`, written by
//! `cargo xtask conformance --write-subset` from the pinned PyPI `onnx`: models, inputs and
//! expected outputs as ONNX generated them): up to three cases per operator the executor lists,
//! each compared at the full run's tolerances (rtol 1e-4, atol 1e-5). The full run and every
//! failure are in docs/conformance.md.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ember_runtime::{HostTensor, OnnxGraph};

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/conformance")
}

/// A `.npy` file as the executor takes it: floats, or integers and booleans as `i64`.
fn read(path: &Path) -> HostTensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.order(), npyz::Order::C, "{}: not in C order", path.display());
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    match npy.dtype().descr().as_str() {
        "'<f4'" => HostTensor::Float {
            values: npy.into_vec::<f32>().unwrap(),
            shape,
        },
        "'<i8'" => HostTensor::Int {
            values: npy.into_vec::<i64>().unwrap(),
            shape,
        },
        "'<i4'" => HostTensor::Int {
            values: npy.into_vec::<i32>().unwrap().into_iter().map(i64::from).collect(),
            shape,
        },
        "'|b1'" => HostTensor::Int {
            values: npy.into_vec::<bool>().unwrap().into_iter().map(i64::from).collect(),
            shape,
        },
        other => panic!("{}: unexpected dtype {other}", path.display()),
    }
}

/// Why `got` is not `expected`, if it is not.
fn mismatch(got: &HostTensor, expected: &HostTensor) -> Option<String> {
    if got.shape() != expected.shape() {
        return Some(format!("shape {:?}, expected {:?}", got.shape(), expected.shape()));
    }
    let as_f64 = |t: &HostTensor| -> Vec<f64> {
        match t {
            HostTensor::Float { values, .. } => values.iter().map(|&v| f64::from(v)).collect(),
            HostTensor::Int { values, .. } => values.iter().map(|&v| v as f64).collect(),
        }
    };
    let (a, b) = (as_f64(got), as_f64(expected));
    let exact = matches!(expected, HostTensor::Int { .. });
    let wrong = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| {
            if exact {
                x != y
            } else if y.is_nan() {
                !x.is_nan()
            } else {
                !((*x - *y).abs() <= ATOL + RTOL * y.abs() || x == y)
            }
        })
        .count();
    (wrong > 0).then(|| format!("{wrong} of {} values differ", b.len()))
}

#[test]
fn onnx_backend_node_tests_of_every_listed_operator_pass() {
    let device = Device::flex();
    let text = std::fs::read_to_string(folder().join("cases.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = cases.as_array().unwrap();
    let operators: std::collections::BTreeSet<&str> = cases.iter().map(|c| c["operator"].as_str().unwrap()).collect();
    let listed = ember_runtime::supported_operators();
    // Every listed operator with a case of supported data types has cases here.
    assert!(
        operators.len() * 10 >= listed.len() * 9,
        "{} operators covered of {} listed",
        operators.len(),
        listed.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let dir = folder().join(name);
        let inputs = (0..case["inputs"].as_array().unwrap().len())
            .map(|k| read(&dir.join(format!("input_{k}.npy"))))
            .collect();
        let result = OnnxGraph::load(dir.join("model.onnx"), &device).and_then(|graph| graph.run(inputs, &device));
        match result {
            Err(error) => failures.push(format!("{name}: {error}")),
            Ok(outputs) => {
                for (k, got) in outputs.iter().enumerate() {
                    let expected = read(&dir.join(format!("expected_{k}.npy")));
                    if let Some(problem) = mismatch(got, &expected) {
                        failures.push(format!("{name}: output {k}: {problem}"));
                    }
                }
            }
        }
    }
    println!("{} cases of {} operators", cases.len(), operators.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
