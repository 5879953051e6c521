//! The bundled MobileNetV2: PyTorch parity, taps at every layer and localisation on real photos.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use ember_cam::models::{imagenet_classes, mobilenet_v2};
use ember_cam::vision::{Preprocess, load_rgb};
use ember_cam::{CamError, CamModel, ClassTarget, Explainer, GradCam, Method, burn, maps_to_host};
use image::RgbImage;

fn device() -> Device {
    Device::flex()
}

fn model() -> mobilenet_v2::Model {
    mobilenet_v2::Model::from_embedded(&device())
}

/// An array of the fixture written by `xtask/reference/export_mobilenet.py`.
fn fixture(name: &str) -> (Vec<f32>, Vec<usize>) {
    let file = std::fs::File::open("tests/fixtures/mobilenet_chelsea.npz").expect("fixture present");
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).expect("valid npz");
    let array = npz.by_name(name).expect("readable npz").expect("array present");
    let shape = array.shape().iter().map(|&d| d as usize).collect();
    (array.into_vec::<f32>().expect("float32 array"), shape)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().try_into_vec_as::<f32>().unwrap()
}

fn chelsea_input() -> Tensor<4> {
    let (values, shape) = fixture("input");
    Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        &device(),
    )
}

#[test]
fn logits_match_pytorch_on_the_committed_photo() {
    let logits = to_vec(model().forward(chelsea_input()));
    let (expected, _) = fixture("logits");
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    println!("worst logit difference {worst:.2e} (largest logit {scale:.2})");
    assert!(
        worst <= 1e-4 * scale,
        "logits differ from PyTorch by {worst} (relative {})",
        worst / scale
    );
}

#[test]
fn the_cat_is_recognised_and_explained_at_the_default_layer() {
    let model = model();
    let explanation = Explainer::new(GradCam)
        .explain(&model, chelsea_input(), &ClassTarget::TopClass)
        .unwrap();
    let class = explanation.classes.unwrap().try_into_vec_as::<i64>().unwrap()[0] as usize;
    assert!(
        (281..=285).contains(&class),
        "top-1 is {class} ({})",
        imagenet_classes()[class]
    );
    assert_eq!(explanation.layers[0].layer, "/features/features.18/features.18.2/Clip");
    assert_eq!(explanation.layers[0].raw.dims(), [1, 7, 7]);
    assert_eq!(explanation.maps.dims(), [1, 224, 224]);
}

#[test]
fn every_listed_layer_can_be_tapped_in_one_pass() {
    let model = model();
    let all = model.layers();
    assert_eq!(all.len(), 98, "52 Conv, 35 Clip, 10 Add and the global pool");
    // The global pool is 1×1: its map would be blank, and asking for it is an error.
    let pooled = Explainer::new(GradCam)
        .layer("/GlobalAveragePool")
        .explain(&model, chelsea_input(), &ClassTarget::Class(285))
        .unwrap_err();
    assert!(matches!(pooled, CamError::NoSpatialExtent(_)), "{pooled:?}");
    let layers: Vec<_> = all.into_iter().filter(|l| l.name != "/GlobalAveragePool").collect();
    let explainer = layers.iter().fold(Explainer::new(GradCam), |explainer, layer| {
        explainer.layer(layer.name.clone())
    });
    let explanation = explainer
        .explain(&model, chelsea_input(), &ClassTarget::Class(285))
        .unwrap();
    assert_eq!(explanation.layers.len(), layers.len());
    for (info, layer) in layers.iter().zip(&explanation.layers) {
        assert_eq!(info.name, layer.layer);
        let [_, height, width] = layer.raw.dims();
        let expected: Vec<Option<usize>> = vec![None, None, Some(height), Some(width)];
        if info.shape.len() == 4 && info.shape[2].is_some() {
            assert_eq!(info.shape[2..], expected[2..], "shape of {}", info.name);
        }
        let map = to_vec(layer.map.clone());
        assert!(
            map.iter().all(|v| v.is_finite() && (0.0..=1.0 + 1e-6).contains(v)),
            "{}",
            info.name
        );
    }
    // Layers are also addressed by their output tensor name.
    let by_output = Explainer::new(GradCam)
        .layer(layers[3].output.clone().unwrap())
        .explain(&model, chelsea_input(), &ClassTarget::Class(285))
        .unwrap();
    assert_eq!(by_output.layers[0].layer, layers[3].name);
}

#[test]
fn an_unknown_layer_names_the_closest_ones() {
    let error = Explainer::new(GradCam)
        .layer("/features/features.18/features.18.2/Clipp")
        .explain(&model(), chelsea_input(), &ClassTarget::TopClass)
        .unwrap_err();
    match error {
        CamError::UnknownLayer { closest, .. } => assert_eq!(closest[0], "/features/features.18/features.18.2/Clip"),
        other => panic!("expected UnknownLayer, got {other}"),
    }
}

#[test]
fn a_wrong_input_size_and_a_class_out_of_range_are_errors() {
    let model = model();
    let small = Tensor::<4>::zeros([1, 3, 100, 100], &device());
    let error = Explainer::new(GradCam)
        .explain(&model, small, &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(
        error,
        CamError::InputShape {
            expected: "[N, 3, 224, 224]".into(),
            got: vec![1, 3, 100, 100]
        }
    );
    let error = Explainer::new(GradCam)
        .explain(&model, chelsea_input(), &ClassTarget::Class(1000))
        .unwrap_err();
    assert_eq!(
        error,
        CamError::ClassOutOfRange {
            class: 1000,
            num_classes: 1000
        }
    );
}

#[test]
fn preprocessing_matches_torchvision_within_one_level() {
    let photo = load_rgb(Path::new("examples/images/chelsea.png")).unwrap();
    let preprocess = Preprocess::imagenet();
    let (input, _) = preprocess.apply(&photo, &device()).unwrap();
    let ours = to_vec(input);
    let (theirs, _) = fixture("input");
    let plane = 224 * 224;
    let worst = ours
        .iter()
        .zip(&theirs)
        .enumerate()
        .map(|(i, (a, b))| (a - b).abs() * preprocess.std[i / plane])
        .fold(0.0, f32::max);
    println!("worst pre-processing difference: {:.2} / 255", worst * 255.0);
    assert!(
        worst <= 1.0 / 255.0 + 1e-6,
        "pre-processing differs by {} levels",
        worst * 255.0
    );
}

/// Shorter side to `size`, centre crop `size × size`.
fn tile(path: &str, size: u32) -> RgbImage {
    let photo = load_rgb(Path::new(path)).unwrap();
    let preprocess = Preprocess {
        resize_shorter: Some(size),
        center_crop: Some([size, size]),
        ..Preprocess::imagenet()
    };
    preprocess.geometry(&photo).unwrap()
}

#[test]
fn in_a_mosaic_each_photo_s_class_peaks_inside_its_own_cell() {
    let model = model();
    let photos = [
        "examples/images/chelsea.png",
        "examples/images/coffee.png",
        "examples/images/rocket.jpg",
        "examples/images/chelsea.png",
    ];
    // Top-left cat, top-right coffee, bottom-left rocket; the 4th cell is left grey.
    let mut mosaic = RgbImage::from_pixel(224, 224, image::Rgb([124, 116, 104]));
    for (cell, path) in photos.iter().enumerate().take(3) {
        let (x, y) = ((cell % 2) as i64 * 112, (cell / 2) as i64 * 112);
        image::imageops::overlay(&mut mosaic, &tile(path, 112), x, y);
    }
    let preprocess = Preprocess::imagenet();
    let input = preprocess.normalise(&mosaic, &device()).unwrap();
    let classes = imagenet_classes();
    for (cell, path) in photos.iter().enumerate().take(3) {
        // The class the model gives the photo on its own.
        let (alone, _) = preprocess
            .apply(&load_rgb(Path::new(path)).unwrap(), &device())
            .unwrap();
        let logits = to_vec(model.forward(alone));
        let class = (0..1000).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
        for method in [Method::GradCam, Method::HiResCam] {
            let explanation = Explainer::from(method)
                .explain(&model, input.clone(), &ClassTarget::Class(class))
                .unwrap();
            let map = maps_to_host(&explanation.maps).unwrap();
            let peak = (0..map.len()).max_by(|&a, &b| map[a].total_cmp(&map[b])).unwrap();
            let (row, col) = (peak / 224, peak % 224);
            let peak_cell = (row / 112) * 2 + col / 112;
            assert_eq!(
                peak_cell, cell,
                "{method}: `{}` ({class}) from {path} peaks at ({row}, {col}), cell {peak_cell}",
                classes[class]
            );
        }
    }
}

/// A generated model whose parameters live on an autodiff device (a model in training) is
/// explained through its validation copy: the same map as on the plain device, and an output
/// that is detached from the explanation's consumed graph.
#[test]
fn a_model_in_training_gives_the_same_map_and_a_usable_output() {
    use burn::module::Module;
    let plain = model();
    let training = plain.clone().to_device(&device().autodiff()).train();
    let photo = load_rgb(Path::new("examples/images/chelsea.png")).unwrap();
    let (input, _) = Preprocess::imagenet().apply(&photo, &device()).unwrap();
    for layer in [
        "/features/features.18/features.18.2/Clip",
        "/features/features.4/conv/conv.2/Conv",
    ] {
        let explainer = Explainer::new(GradCam).layer(layer);
        let a = explainer
            .explain(&plain, input.clone(), &ClassTarget::TopClass)
            .unwrap();
        let b = explainer
            .explain(&training, input.clone().autodiff(), &ClassTarget::TopClass)
            .unwrap();
        let (ma, mb) = (maps_to_host(&a.maps).unwrap(), maps_to_host(&b.maps).unwrap());
        let worst = ma.iter().zip(&mb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{layer}: maps differ by {worst}");
        assert!(
            !b.output.is_tracked(),
            "{layer}: the output belongs to a consumed graph"
        );
    }
    // The model still trains afterwards.
    let loss = training.forward(input.autodiff()).sum();
    assert!(loss.is_tracked());
    let _gradients = loss.backward();
}
