//! The same ONNX file two ways: imported at build time (the bundled MobileNetV2) and loaded at
//! run time by `ember-runtime`. Both must give the same logits and maps (≤ 1e-5).

use burn::tensor::{Device, Tensor, TensorData};
use ember_cam::models::mobilenet_v2;
use ember_cam::{CamModel, ClassTarget, Explainer, Method, Rectifier, burn, maps_to_host};
use ember_runtime::OnnxModel;

const AGREEMENT: f32 = 1e-5;

fn chelsea_input(device: &Device) -> Tensor<4> {
    let file = std::fs::File::open("tests/fixtures/mobilenet_chelsea.npz").expect("fixture present");
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).expect("valid npz");
    let array = npz.by_name("input").expect("readable npz").expect("input present");
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    let values = array.into_vec::<f32>().expect("float32");
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn run_time_and_build_time_models_agree_on_logits_layers_and_maps() {
    let device = Device::flex();
    let built = mobilenet_v2::Model::from_embedded(&device);
    let loaded = OnnxModel::load("models/mobilenet_v2.onnx", &device).expect("the bundled model loads");
    assert_eq!(
        loaded.layers(),
        built.layers(),
        "the same taps, names, operators and shapes"
    );
    assert_eq!(loaded.default_layer(), built.default_layer());

    let input = Tensor::cat(vec![chelsea_input(&device), chelsea_input(&device).flip([3])], 0);
    let built_logits = CamModel::forward(&built, input.clone()).unwrap();
    let loaded_logits = CamModel::forward(&loaded, input.clone()).unwrap();
    let host = |t: Tensor<2>| t.inner().try_into_vec_as::<f32>().unwrap();
    let logits_diff = worst(&host(built_logits), &host(loaded_logits));
    println!("logits: worst difference {logits_diff:.1e}");
    assert!(logits_diff <= AGREEMENT, "logits differ by {logits_diff}");

    let layers = [
        None,
        Some("/features/features.7/conv/conv.0/conv.0.2/Clip"),
        Some("/features/features.13/Add"),
    ];
    let methods = ["gradcam", "gradcam++", "layercam"];
    for layer in layers {
        for method in methods {
            let method: Method = method.parse().unwrap();
            let mut explainer = Explainer::from(method).rectifier(Rectifier::Signed);
            if let Some(layer) = layer {
                explainer = explainer.layer(layer);
            }
            let target = ClassTarget::Class(281);
            let a = explainer.explain(&built, input.clone(), &target).unwrap();
            let b = explainer.explain(&loaded, input.clone(), &target).unwrap();
            let diff = worst(&maps_to_host(&a.maps).unwrap(), &maps_to_host(&b.maps).unwrap());
            let raw_diff = worst(
                &a.layers[0].raw.clone().inner().try_into_vec_as::<f32>().unwrap(),
                &b.layers[0].raw.clone().inner().try_into_vec_as::<f32>().unwrap(),
            );
            println!("{method} at {}: maps {diff:.1e}, raw {raw_diff:.1e}", a.layers[0].layer);
            assert!(diff <= AGREEMENT, "{method} maps at {:?} differ by {diff}", layer);
            // Raw maps are unnormalised: compared relative to their largest magnitude.
            let raw_scale = a.layers[0]
                .raw
                .clone()
                .inner()
                .abs()
                .max()
                .into_scalar::<f32>()
                .max(f32::MIN_POSITIVE);
            assert!(
                raw_diff <= AGREEMENT * raw_scale,
                "{method} raw maps at {layer:?} differ by {raw_diff} (largest value {raw_scale})"
            );
        }
    }
}
