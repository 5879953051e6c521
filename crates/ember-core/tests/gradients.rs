//! The taps' gradients, batching, multiple layers and the absence of leftover state.

mod common;

use std::cell::Cell;

use burn::prelude::*;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, Method, ScoreFn, Vocabulary, tap};

#[test]
fn tap_gradients_match_central_finite_differences() {
    let model = DeepNet::new(5);
    let x = input(1, 15);
    let class = 2;
    let explanation = Explainer::new(GradCam)
        .layer("block1")
        .keep_tensors(true)
        .explain(&model, x.clone(), &ClassTarget::Class(class))
        .unwrap();
    let gradients = to_vec(explanation.layers[0].gradients.clone().unwrap());
    let activations = model.stem(x);
    let dims = activations.dims();
    let base = to_vec(activations.clone());
    let score = |values: &[f32]| -> f64 {
        let a = Tensor::<1>::from_data(values, &device()).reshape(dims);
        let logits = to_vec(model.after_block1(a));
        logits[class] as f64
    };
    let step = 1e-2_f32;
    let scale = max_abs(&gradients);
    // Every 7th element covers all channels and positions without 256 forward passes.
    for index in (0..base.len()).step_by(7) {
        let mut plus = base.clone();
        plus[index] += step;
        let mut minus = base.clone();
        minus[index] -= step;
        let numeric = ((score(&plus) - score(&minus)) / (2.0 * step as f64)) as f32;
        let diff = (numeric - gradients[index]).abs();
        assert!(
            diff <= 2e-3 * scale,
            "element {index}: autodiff {} vs finite difference {numeric}",
            gradients[index]
        );
    }
}

#[test]
fn a_batch_gives_the_same_maps_as_one_image_at_a_time() {
    let model = DeepNet::new(6);
    let x = input(3, 16);
    let classes = vec![4, 0, 2];
    for &method in Method::ALL {
        let explainer = Explainer::from(method).layer("block1").layer("block2");
        let batched = explainer
            .explain(&model, x.clone(), &ClassTarget::PerImage(classes.clone()))
            .unwrap();
        let batched_maps = to_vec(batched.maps);
        let per_image = SIZE * SIZE;
        for (image, &class) in classes.iter().enumerate() {
            let single = explainer
                .explain(&model, x.clone().narrow(0, image, 1), &ClassTarget::Class(class))
                .unwrap();
            let single_map = to_vec(single.maps);
            let diff = max_abs_diff(&single_map, &batched_maps[image * per_image..(image + 1) * per_image]);
            assert!(diff <= 1e-5, "{method} image {image}: batch vs single differ by {diff}");
        }
    }
}

#[test]
fn several_layers_are_aggregated_like_pytorch_grad_cam() {
    let model = DeepNet::new(7);
    let x = input(2, 17);
    let explanation = Explainer::new(GradCam)
        .layer("block1")
        .layer("block2")
        .explain(&model, x, &ClassTarget::TopClass)
        .unwrap();
    assert_eq!(explanation.layers.len(), 2);
    // mean over layers of max(map, 0), then min–max per image.
    let a = to_vec(explanation.layers[0].map.clone());
    let b = to_vec(explanation.layers[1].map.clone());
    let per_image = SIZE * SIZE;
    let mut expected = Vec::new();
    for image in 0..2 {
        let mean: Vec<f32> = (0..per_image)
            .map(|i| (a[image * per_image + i].max(0.0) + b[image * per_image + i].max(0.0)) / 2.0)
            .collect();
        let min = mean.iter().copied().fold(f32::INFINITY, f32::min);
        let max = mean.iter().map(|v| v - min).fold(f32::NEG_INFINITY, f32::max);
        expected.extend(mean.iter().map(|v| (v - min) / (max + 1e-7)));
    }
    assert!(max_abs_diff(&to_vec(explanation.maps), &expected) <= 1e-6);
}

#[test]
fn only_the_network_after_the_tap_is_differentiated() {
    let model = DeepNet::new(8);
    let before_tap_was_autodiff = Cell::new(true);
    let after_tap_was_tracked = Cell::new(false);
    let forward = |x: Tensor<4>| {
        let stem = model.stem(x);
        before_tap_was_autodiff.set(stem.is_autodiff());
        let tapped = model.block1.forward(stem);
        after_tap_was_tracked.set(tapped.is_autodiff() && tapped.is_tracked());
        model.after_block1(tapped)
    };
    let explanation = Explainer::new(GradCam)
        .layer("block1")
        .explain(&forward, input(1, 18), &ClassTarget::TopClass)
        .unwrap();
    assert!(
        !before_tap_was_autodiff.get(),
        "layers before the tap must run without autodiff"
    );
    assert!(
        after_tap_was_tracked.get(),
        "the tapped activation must carry the autodiff graph onwards"
    );
    assert!(!explanation.maps.is_autodiff(), "maps are returned without autodiff");
}

#[test]
fn taps_are_identities_and_keep_no_state_between_calls() {
    let model = DeepNet::new(9);
    let x = input(1, 19);
    // Outside an explanation a tap returns its input untouched (and not on autodiff).
    let plain = tap("block1", x.clone());
    assert!(!plain.is_autodiff());
    assert_eq!(to_vec(plain), to_vec(x.clone()));

    // A failing call (class out of range) must not leave taps armed.
    let explainer = Explainer::new(GradCam).layer("block1");
    assert!(explainer.explain(&model, x.clone(), &ClassTarget::Class(99)).is_err());
    let after_error = model.forward(x.clone());
    assert!(
        !after_error.is_autodiff(),
        "a tap stayed armed after a failed explanation"
    );

    // And a following explanation gives the same map as a first one.
    let first = to_vec(
        explainer
            .explain(&model, x.clone(), &ClassTarget::TopClass)
            .unwrap()
            .maps,
    );
    let second = to_vec(explainer.explain(&model, x, &ClassTarget::TopClass).unwrap().maps);
    assert_eq!(first, second);
}

#[test]
fn the_default_layer_is_used_when_none_is_chosen() {
    let model = DeepNet::new(10);
    let explanation = Explainer::new(GradCam)
        .explain(&model, input(1, 20), &ClassTarget::TopClass)
        .unwrap();
    assert_eq!(explanation.layers[0].layer, "block2");
}

/// Guided Backpropagation in closed form: for `y = Σ w ⊙ relu(x)`, ∂y/∂x is `w` where `x > 0`,
/// and guided it is `max(w, 0)` there; 0 where `x ≤ 0`. A session that ended leaves the ReLU
/// plain, and a model applying Burn's own ReLU has nothing to guide.
#[test]
fn guided_backprop_lets_through_only_positive_gradients_where_the_input_was_positive() {
    let device = Device::flex();
    let values: Vec<f32> = (0..16)
        .map(|i| (i as f32 - 7.5) * if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let weights: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
    let x = Tensor::<1>::from_data(TensorData::new(values.clone(), [16]), &device).reshape([1, 1, 4, 4]);
    let w = Tensor::<1>::from_data(TensorData::new(weights.clone(), [16]), &device).reshape([1, 16]);
    let model = |x: Tensor<4>| (ember_core::relu(x).reshape([1, 16]) * w.clone()).sum_dim(1);
    let guided = ember_core::guided_backprop(&model, x.clone(), &ScoreFn(|y: &Tensor<2>| y.clone().reshape([1])))
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap();
    for i in 0..16 {
        let expected = if values[i] > 0.0 { weights[i].max(0.0) } else { 0.0 };
        assert_eq!(
            guided[i], expected,
            "element {i}: x = {}, w = {}",
            values[i], weights[i]
        );
    }
    assert!(
        weights.iter().zip(&values).any(|(w, v)| *w < 0.0 && *v > 0.0),
        "the case must hold a negative gradient to block"
    );
    // Outside the guided pass the ReLU is plain: its gradient keeps the negative weights.
    let probe = x.clone().inner().autodiff().require_grad();
    let grads = model(probe.clone()).sum().backward();
    let plain = probe.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
    for i in 0..16 {
        let expected = if values[i] > 0.0 { weights[i] } else { 0.0 };
        assert_eq!(plain[i], expected, "element {i}, plain ReLU");
    }
    let burn_relu = |x: Tensor<4>| (burn::tensor::activation::relu(x).reshape([1, 16]) * w.clone()).sum_dim(1);
    let error =
        ember_core::guided_backprop(&burn_relu, x, &ScoreFn(|y: &Tensor<2>| y.clone().reshape([1]))).unwrap_err();
    assert!(matches!(error, ember_core::CamError::NoGuidedRelu), "{error}");
}
