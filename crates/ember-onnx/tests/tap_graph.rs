//! The ONNX rewrite on the bundled MobileNetV2.

use std::path::Path;

use ember_onnx::{ImportError, TAP_DOMAIN, TAP_OP, tap_graph};

const MODEL: &str = "../../models/mobilenet_v2.onnx";

#[test]
fn every_spatial_output_of_mobilenet_is_tapped_by_its_onnx_names() {
    let tapped = tap_graph(Path::new(MODEL)).unwrap();
    let taps: Vec<_> = tapped
        .model
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == TAP_OP && n.domain == TAP_DOMAIN)
        .collect();
    assert_eq!(taps.len(), tapped.layers.len());
    // 52 Conv + 35 Clip + 10 Add + 1 GlobalAveragePool produce [N, C, H, W] outputs.
    let count = |op: &str| tapped.layers.iter().filter(|l| l.op_type == op).count();
    assert_eq!(
        (count("Conv"), count("Clip"), count("Add"), count("GlobalAveragePool")),
        (52, 35, 10, 1)
    );
    assert_eq!(
        tapped.layers.len(),
        98,
        "Constant, Flatten and Gemm outputs must not be tapped"
    );

    let last = tapped
        .layers
        .iter()
        .find(|l| l.name == "/features/features.18/features.18.2/Clip")
        .unwrap();
    assert_eq!(
        last.output.as_deref(),
        Some("/features/features.18/features.18.2/Clip_output_0")
    );
    assert_eq!(last.shape, vec![None, Some(1280), Some(7), Some(7)]);
    assert_eq!(tapped.output_rank, Some(2));
    assert_eq!(tapped.input_chw, vec![Some(3), Some(224), Some(224)]);
}

#[test]
fn files_that_are_not_onnx_are_clear_errors() {
    let missing = tap_graph(Path::new("no/such/model.onnx")).unwrap_err();
    assert!(matches!(missing, ImportError::Read { .. }), "{missing}");
    let not_onnx = tap_graph(Path::new("Cargo.toml")).unwrap_err();
    assert!(
        matches!(not_onnx, ImportError::Decode { .. } | ImportError::Parse { .. }),
        "{not_onnx}"
    );
}
