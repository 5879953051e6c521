//! The same explanations on every compiled backend: flex (always), ndarray and wgpu (with the
//! `ndarray` / `wgpu` features). Maps agree with flex within 1e-4 absolute, with the same top-5.
//!
//! The layer is MobileNetV2's last block (7×7): after it come only global pooling and a linear
//! layer, so no ReLU6 kink can turn a rounding difference between backends into a different
//! gradient (see `reference_parity.rs` for such ties at earlier layers).
//!
//! The run-time ONNX executor is checked on every backend too: each model of the architecture
//! zoo (`tests/fixtures/zoo/`) against its PyTorch logits (≤ 1e-4 relative) and
//! pytorch-grad-cam map (≤ 1e-4 absolute).
//!
//! wgpu runs three times: on the graphics API it prefers, and pinned to Vulkan and to OpenGL,
//! the two a machine without a GPU offers through Mesa (lavapipe, and llvmpipe through EGL).
//!
//! A backend that cannot start fails its test. To run the suite where one cannot (a machine
//! without Vulkan or EGL, say), opt out explicitly: `EMBER_SKIP_BACKENDS=wgpu-gl` (a comma list
//! of `ndarray`, `wgpu`, `wgpu-vulkan`, `wgpu-gl`) skips that comparison and says so; nothing is
//! skipped otherwise.

use burn::tensor::{Device, Tensor, TensorData};
use ember_cam::models::mobilenet_v2;
use ember_cam::{
    ClassTarget, Explainer, GradCam, LayerTensors, Method, Region, RegionTarget, Vocabulary, burn, maps_to_host,
};
use ember_runtime::{OnnxModel, ScoreSource};

const LAYER: &str = "/features/features.18/features.18.2/Clip";
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
const MAP_ABS: f32 = 1e-4;

fn input(device: &Device) -> Tensor<4> {
    let file = std::fs::File::open("tests/fixtures/reference_mobilenet_7x7.npz").unwrap();
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    let values = npz.by_name("input").unwrap().unwrap().into_vec::<f32>().unwrap();
    Tensor::from_data(TensorData::new(values, [2, 3, 224, 224]), device)
}

/// Per method, the final maps `[2, 224, 224]` on the host; and the top-5 classes per image.
struct Run {
    maps: Vec<(Method, Vec<f32>)>,
    top5: Vec<Vec<i64>>,
}

/// One forward and backward on `device`; every method from the captured tensors, on `device`.
fn run(device: &Device) -> Run {
    let model = mobilenet_v2::Model::from_embedded(device);
    let explanation = Explainer::new(GradCam)
        .layer(LAYER)
        .keep_tensors(true)
        .explain(&model, input(device), &ClassTarget::TopClass)
        .unwrap();
    let captured = &explanation.layers[0];
    let [_, height, width] = explanation.maps.dims();
    // Every method that works from the captured tensors; perturbation methods re-run the model
    // and are compared by `check_perturbation`.
    let maps = Method::ALL
        .iter()
        .filter(|method| method.build().perturbation().is_none())
        .map(|&method| {
            let tensors = LayerTensors {
                layer: LAYER.into(),
                activations: captured.activations.clone().unwrap(),
                gradients: captured.gradients.clone().unwrap(),
            };
            let (_, maps) = Explainer::from(method).explain_tensors(vec![tensors], height, width);
            (method, maps_to_host(&maps).unwrap())
        })
        .collect();
    let (_, indices) = explanation.output.clone().inner().topk_with_indices(5, 1);
    let indices = indices.try_into_vec_as::<i64>().unwrap();
    Run {
        maps,
        top5: indices.chunks(5).map(<[i64]>::to_vec).collect(),
    }
}

/// Every zoo model through the run-time executor on `device`, against the PyTorch fixtures.
fn check_zoo(backend: &str, device: &Device) {
    let zoo = std::path::Path::new("tests/fixtures/zoo");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo.join("zoo.json")).unwrap()).unwrap();
    for (name, entry) in table.as_object().unwrap() {
        let file = std::fs::File::open(zoo.join(format!("{name}.npz"))).unwrap();
        let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
        let mut array = |key: &str| {
            let array = npz.by_name(key).unwrap().unwrap();
            let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
            (array.into_vec::<f32>().unwrap(), shape)
        };
        let (values, shape) = array("input");
        let (torch_logits, _) = array("torch_logits");
        let (reference_map, _) = array("grad_cam");
        let input = Tensor::<4>::from_data(TensorData::new(values, shape), device);
        let model = OnnxModel::load(zoo.join(format!("{name}.onnx")), device)
            .unwrap()
            .with_scores(ScoreSource::Output);
        // The fixture is in the graph's layout; Ember explains [N, C, H, W].
        let input = model.to_nchw(input);
        let explainer = Explainer::new(GradCam).layer(entry["layer"].as_str().unwrap());
        // Classifiers by their top class; a dense output by its region target (zoo.json).
        let (output, maps) = match entry.get("target").filter(|t| !t.is_null()) {
            None => {
                let explanation = explainer.explain(&model, input, &ClassTarget::TopClass).unwrap();
                (
                    explanation.output.inner().try_into_vec_as::<f32>().unwrap(),
                    explanation.maps,
                )
            }
            Some(target) => {
                let corner = |k: usize| target["region"][k].as_u64().unwrap() as usize;
                let region = RegionTarget {
                    channel: target["channel"].as_u64().unwrap() as usize,
                    region: Region::Box {
                        x0: corner(0),
                        y0: corner(1),
                        x1: corner(2),
                        y1: corner(3),
                    },
                };
                let explanation = explainer.explain(&model.dense().unwrap(), input, &region).unwrap();
                (
                    explanation.output.inner().try_into_vec_as::<f32>().unwrap(),
                    explanation.maps,
                )
            }
        };
        let scale = torch_logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let logits = worst(&output, &torch_logits) / scale;
        let map = worst(&maps_to_host(&maps).unwrap(), &reference_map);
        println!("{backend}, run-time {name}: logits {logits:.1e} relative, Grad-CAM {map:.1e}");
        assert!(
            logits <= 1e-4,
            "{backend}: {name} logits differ from PyTorch by {logits} (relative)"
        );
        assert!(
            map <= 1e-4,
            "{backend}: {name} Grad-CAM differs from pytorch-grad-cam by {map}"
        );
    }
}

/// Guided Backpropagation (Ember's custom autodiff ReLU on this backend) of the zoo's ResNet and
/// VGG through the run-time executor, against pytorch-grad-cam's (`reference_guided.npz`):
/// ≤ 1e-4 relative to the largest value.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn check_guided(backend: &str, device: &Device) {
    let zoo = std::path::Path::new("tests/fixtures/zoo");
    let file = std::fs::File::open("tests/fixtures/reference_guided.npz").unwrap();
    let mut reference = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    for name in ["resnet", "vgg"] {
        let file = std::fs::File::open(zoo.join(format!("{name}.npz"))).unwrap();
        let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
        let array = npz.by_name("input").unwrap().unwrap();
        let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
        let input = Tensor::<4>::from_data(TensorData::new(array.into_vec::<f32>().unwrap(), shape), device);
        let model = OnnxModel::load(zoo.join(format!("{name}.onnx")), device).unwrap();
        let ours = ember_cam::guided_backprop(&model, input, &ClassTarget::TopClass).unwrap();
        let ours = ember_cam::to_host(&ours).unwrap();
        let expected: Vec<f32> = reference
            .by_name(&format!("zoo_{name}/top/guided_backprop"))
            .unwrap()
            .unwrap()
            .into_vec()
            .unwrap();
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / scale;
        println!("{backend}, run-time {name}: Guided Backpropagation {worst:.1e} relative to pytorch-grad-cam");
        assert!(
            worst <= 1e-4,
            "{backend}: {name} Guided Backpropagation differs from pytorch-grad-cam by {worst:.2e} (relative)"
        );
    }
}

/// Whether `backend` is listed in `EMBER_SKIP_BACKENDS` (an explicit opt-out, never a default).
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn opted_out(backend: &str) -> bool {
    std::env::var("EMBER_SKIP_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .any(|name| name.trim() == backend)
}

/// Starts `backend` and checks it against flex; a backend that cannot start fails.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn check_against_flex(backend: &str, make_device: impl FnOnce() -> Device) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    if opted_out(backend) {
        println!("SKIPPED: {backend} vs flex (EMBER_SKIP_BACKENDS={backend})");
        return;
    }
    let started = catch_unwind(AssertUnwindSafe(|| {
        let device = make_device();
        // A first operation forces the backend to find its adapter and compile.
        let probe = Tensor::<1>::from_data([1.0f32, 2.0], &device)
            .sum()
            .into_scalar::<f32>();
        assert_eq!(probe, 3.0);
        device
    }));
    let device = match started {
        Ok(device) => device,
        Err(cause) => {
            let reason = cause
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "the {backend} backend cannot start: {reason}\n(to run the other tests on this machine, opt out \
                 explicitly with EMBER_SKIP_BACKENDS={backend})"
            );
        }
    };
    check_resize(backend, &device);
    check_gelu(backend, &device);
    check_perturbation(backend, &device);
    check_guided(backend, &device);
    check_zoo(backend, &device);
    let reference = run(&Device::flex());
    let other = run(&device);
    assert_eq!(other.top5, reference.top5, "{backend}: top-5 classes differ from flex");
    for ((method, ours), (_, flex)) in other.maps.iter().zip(&reference.maps) {
        let worst = ours.iter().zip(flex).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("{backend} vs flex, {method}: worst map difference {worst:.2e}");
        assert!(worst <= MAP_ABS, "{backend}: {method} maps differ from flex by {worst}");
    }
}

#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn ndarray_agrees_with_flex() {
    check_against_flex("ndarray", Device::ndarray);
}

/// The upsampling of maps, border included, against flex: the place where wgpu on OpenGL read
/// outside the map (docs/wgpu-adapters.md).
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn check_resize(backend: &str, device: &Device) {
    let values: Vec<f32> = (0..2 * 7 * 7).map(|i| (i * 37 % 101) as f32 / 101.0).collect();
    let upsample = |device: &Device| {
        let maps = Tensor::<3>::from_data(TensorData::new(values.clone(), [2, 7, 7]), device);
        maps_to_host(&ember_cam::resize_bilinear(maps, 224, 224)).unwrap()
    };
    let (ours, flex) = (upsample(device), upsample(&Device::flex()));
    let worst = ours.iter().zip(&flex).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("{backend} vs flex, 7×7 → 224×224 upsampling: worst difference {worst:.2e}");
    assert!(
        worst <= MAP_ABS,
        "{backend}: upsampled maps differ from flex by {worst}"
    );
}

/// GELU's values and gradient against flex's, whose `gelu_backward` is the exact derivative
/// `Φ(x) + x·φ(x)`: Burn's default, which ndarray and CubeCL use, is the tanh approximation's
/// (off by up to ~1e-3), so this fails without `ember_cam::gelu`'s own gradient.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn check_gelu(backend: &str, device: &Device) {
    let points: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.15).collect();
    let value_and_gradient = |device: &Device| {
        let x = Tensor::<1>::from_floats(points.as_slice(), &device.clone().autodiff()).require_grad();
        let y = ember_cam::gelu(x.clone());
        let values = maps_to_host(&y.clone().inner().unsqueeze::<3>()).unwrap();
        let grads = y.sum().backward();
        let gradient = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        (values, gradient)
    };
    let (ours, flex) = (value_and_gradient(device), value_and_gradient(&Device::flex()));
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (values, gradient) = (worst(&ours.0, &flex.0), worst(&ours.1, &flex.1));
    println!("{backend} vs flex, GELU: values {values:.1e}, gradient {gradient:.1e}");
    assert!(values <= 1e-6, "{backend}: GELU values differ from flex by {values}");
    assert!(
        gradient <= 1e-6,
        "{backend}: GELU's gradient differs from flex's by {gradient}"
    );
}

/// The perturbation methods end to end on one image, against flex (maps ≤ 1e-4): AblationCAM
/// (re-runs of the model after the last block on ablated copies) and ScoreCAM (re-runs of the
/// whole model on the image masked by each of block 3's 24 channels).
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn check_perturbation(backend: &str, device: &Device) {
    for (method, layer) in [
        (Method::AblationCam, LAYER),
        (Method::ScoreCam, "/features/features.3/Add"),
    ] {
        let explain = |device: &Device| {
            let model = mobilenet_v2::Model::from_embedded(device);
            let explanation = Explainer::from(method)
                .layer(layer)
                .explain(&model, input(device).narrow(0, 0, 1), &ClassTarget::TopClass)
                .unwrap();
            maps_to_host(&explanation.maps).unwrap()
        };
        let (ours, flex) = (explain(device), explain(&Device::flex()));
        let worst = ours.iter().zip(&flex).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("{backend} vs flex, {method}: worst map difference {worst:.2e}");
        assert!(worst <= MAP_ABS, "{backend}: {method} maps differ from flex by {worst}");
    }
}

/// The wgpu device `name` (see `ember_cam::DEVICES`), its adapter printed.
#[cfg(feature = "wgpu")]
fn wgpu_device(name: &str) -> Device {
    let opened = ember_cam::open_device(name).unwrap_or_else(|e| panic!("{e}"));
    if let Some(adapter) = &opened.adapter {
        println!("{name}: {adapter}");
    }
    opened.device
}

/// wgpu on the graphics API it prefers (on a machine with a GPU, that GPU).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_agrees_with_flex() {
    check_against_flex("wgpu", || wgpu_device("wgpu"));
}

/// wgpu pinned to Vulkan (in CI: Mesa's lavapipe).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_on_vulkan_agrees_with_flex() {
    check_against_flex("wgpu-vulkan", || wgpu_device("wgpu-vulkan"));
}

/// wgpu pinned to OpenGL (in CI: Mesa's llvmpipe through EGL), the adapter wgpu falls back to
/// on a machine without Vulkan.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_on_opengl_agrees_with_flex() {
    check_against_flex("wgpu-gl", || wgpu_device("wgpu-gl"));
}

/// flex against the PyTorch fixtures, and against itself run to run (the reference the other
/// backends are compared with must be deterministic).
#[test]
fn flex_matches_pytorch_and_is_deterministic() {
    check_zoo("flex", &Device::flex());
    let first = run(&Device::flex());
    let second = run(&Device::flex());
    assert_eq!(first.top5, second.top5);
    for ((method, a), (_, b)) in first.maps.iter().zip(&second.maps) {
        assert_eq!(a, b, "{method}: flex gave different maps on the same input");
    }
}
