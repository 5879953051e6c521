//! A second real pretrained network, loaded at run time: EfficientNet-Lite0 with Google's ImageNet
//! weights (`models/efficientnet_lite0.onnx`, from `xtask/reference/export_efficientnet_lite.py`).
//! Its export is as found in the wild: TensorFlow's "same" padding as `Pad` nodes whose pads are
//! computed in the graph (`ConstantOfShape → Concat → Reshape → Slice → Transpose → Cast`).
//!
//! Tolerances as in the zoo: logits ≤ 1e-4 relative to the largest, maps (in [0, 1]) ≤ 1e-4.

use burn::tensor::{Device, Tensor, TensorData};
use ember_core::{CamModel, ClassTarget, Explainer, GradCam};
use ember_runtime::OnnxModel;

mod common;
use common::{max_abs_diff, npz_arrays, relative, root};

#[test]
fn efficientnet_lite0_matches_pytorch_and_pytorch_grad_cam_on_a_photo() {
    let device = Device::flex();
    let model = OnnxModel::load(root().join("models/efficientnet_lite0.onnx"), &device).unwrap();
    assert_eq!(model.default_layer().as_deref(), Some("/head_act/Clip"));
    let fixture = npz_arrays(&root().join("tests/fixtures/efficientnet_lite0_chelsea.npz"));
    let (input, shape) = &fixture["input"];
    let input = Tensor::<4>::from_data(TensorData::new(input.clone(), shape.clone()), &device);

    let logits = CamModel::forward(&model, input.clone()).unwrap();
    let logits = logits.inner().try_into_vec_as::<f32>().unwrap();
    let logits_diff = relative(&logits, &fixture["logits"].0);
    let top = logits
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    println!("logits: {logits_diff:.1e} relative to PyTorch's; top class {}", top.0);
    assert!(
        logits_diff <= 1e-4,
        "logits differ from PyTorch's by {logits_diff} (relative)"
    );
    // A cat: 282 "tiger cat" (285 "Egyptian cat" within 0.4 %).
    assert!((281..=285).contains(&top.0), "top class {}", top.0);

    for (layer, key) in [
        ("/blocks.10/Add", "grad_cam_block10"),
        ("/head_act/Clip", "grad_cam_head"),
    ] {
        let explanation = Explainer::new(GradCam)
            .layer(layer)
            .explain(&model, input.clone(), &ClassTarget::TopClass)
            .unwrap();
        let (reference, reference_shape) = &fixture[key];
        assert_eq!(&explanation.maps.dims().to_vec(), reference_shape);
        let map = explanation.maps.inner().into_data().try_to_vec::<f32>().unwrap();
        let peak = reference.iter().fold(0.0f32, |a, &v| a.max(v));
        assert!(peak > 0.5, "{layer}: the reference map is degenerate");
        let diff = max_abs_diff(&map, reference);
        println!("Grad-CAM at {layer}: {diff:.1e} from pytorch-grad-cam");
        assert!(
            diff <= 1e-4,
            "Grad-CAM at {layer} differs from pytorch-grad-cam's by {diff}"
        );
    }
}
