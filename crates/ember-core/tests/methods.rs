//! Every method with every rectifier, and the formulas of the individual methods.

mod common;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use common::*;
use ember_core::methods::CamMethod;
use ember_core::{
    ClassTarget, Explainer, GradCamElementWise, GradCamPlusPlus, LayerCam, Method, Rectifier, ScoreFn, Vocabulary,
};

#[test]
fn every_method_with_every_rectifier_gives_normalised_finite_maps() {
    let model = DeepNet::new(21);
    let x = input(2, 31);
    for &method in Method::ALL {
        for &rectifier in Rectifier::ALL {
            let explanation = Explainer::from(method)
                .layer("block1")
                .rectifier(rectifier)
                .explain(&model, x.clone(), &ClassTarget::TopClass)
                .unwrap_or_else(|e| panic!("{method} with {rectifier}: {e}"));
            assert_eq!(explanation.maps.dims(), [2, SIZE, SIZE]);
            let maps = to_vec(explanation.maps);
            assert!(
                maps.iter().all(|v| v.is_finite()),
                "{method}/{rectifier}: non-finite map"
            );
            let (low, high) = if rectifier.is_signed() { (-1.0, 1.0) } else { (0.0, 1.0) };
            assert!(
                maps.iter().all(|&v| (low - 1e-6..=high + 1e-6).contains(&v)),
                "{method}/{rectifier}: map outside [{low}, {high}]"
            );
            let peak = maps.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(peak > 0.99, "{method}/{rectifier}: map not normalised (peak {peak})");
        }
    }
}

#[test]
fn one_capture_rectified_each_way_equals_one_run_per_rectifier() {
    // explain_each_rectifier reuses the evidence of one run (gradients, or the perturbation
    // methods' measured weights): every map and score must be the separate run's.
    let model = DeepNet::new(22);
    let x = input(2, 32);
    for &method in Method::ALL {
        let explainer = Explainer::from(method).layer("block1");
        let each = explainer
            .explain_each_rectifier(&model, x.clone(), &ClassTarget::TopClass, Rectifier::ALL)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(each.len(), Rectifier::ALL.len());
        for (explanation, &rectifier) in each.into_iter().zip(Rectifier::ALL) {
            let alone = explainer
                .clone()
                .rectifier(rectifier)
                .explain(&model, x.clone(), &ClassTarget::TopClass)
                .unwrap();
            let difference = max_abs_diff(&to_vec(explanation.maps), &to_vec(alone.maps));
            assert!(difference < 1e-6, "{method}/{rectifier}: maps differ by {difference}");
            assert_eq!(to_vec(explanation.scores), to_vec(alone.scores), "{method}/{rectifier}");
            assert!(
                explanation.layers[0].activations.is_none(),
                "tensors are dropped unless kept"
            );
        }
    }
}

/// What the pipeline's ReLU/abs and min–max normalisation do to a raw `[h, w]` map, by hand:
/// `(r − min r) / (max(r − min r) + 1e-7)` after rectifying.
fn normalised(raw: &[f32], rectify: impl Fn(f32) -> f32) -> Vec<f32> {
    let rectified: Vec<f32> = raw.iter().map(|&v| rectify(v)).collect();
    let low = rectified.iter().copied().fold(f32::INFINITY, f32::min);
    let high = rectified.iter().map(|v| v - low).fold(0.0f32, f32::max);
    rectified.iter().map(|v| (v - low) / (high + 1e-7)).collect()
}

#[test]
fn counterfactual_is_relu_of_the_negated_signed_map_for_linear_methods() {
    // For Grad-CAM and HiResCAM the map is linear in the gradients, so negating the gradients
    // negates the signed map: the counterfactual layer map = normalise(max(−raw, 0)).
    let model = DeepNet::new(22);
    let x = input(1, 32);
    for method in [Method::GradCam, Method::HiResCam] {
        let explain = |rectifier| {
            Explainer::from(method)
                .layer("block2")
                .rectifier(rectifier)
                .explain(&model, x.clone(), &ClassTarget::Class(1))
                .unwrap()
        };
        let signed_raw = to_vec(explain(Rectifier::Signed).layers[0].raw.clone());
        assert!(
            signed_raw.iter().any(|v| *v < 0.0) && signed_raw.iter().any(|v| *v > 0.0),
            "{method}: the test needs a map of both signs"
        );
        let counterfactual = to_vec(explain(Rectifier::Counterfactual).layers[0].map.clone());
        let expected = normalised(&signed_raw, |v| (-v).max(0.0));
        let worst = max_abs_diff(&counterfactual, &expected);
        assert!(worst <= 1e-5, "{method}: counterfactual map differs by {worst}");
    }
}

#[test]
fn abs_keeps_negative_evidence_that_relu_removes() {
    let model = DeepNet::new(23);
    let x = input(1, 33);
    let explain = |rectifier| {
        Explainer::from(Method::HiResCam)
            .layer("block2")
            .rectifier(rectifier)
            .explain(&model, x.clone(), &ClassTarget::Class(0))
            .unwrap()
    };
    let raw = to_vec(explain(Rectifier::Signed).layers[0].raw.clone());
    assert!(
        raw.iter().any(|v| *v < 0.0) && raw.iter().any(|v| *v > 0.0),
        "test needs a map of both signs"
    );
    let relu_map = to_vec(explain(Rectifier::Relu).layers[0].map.clone());
    let abs_map = to_vec(explain(Rectifier::Abs).layers[0].map.clone());
    assert!(max_abs_diff(&relu_map, &normalised(&raw, |v| v.max(0.0))) <= 1e-5);
    assert!(max_abs_diff(&abs_map, &normalised(&raw, f32::abs)) <= 1e-5);
    // Where the raw map is negative, ReLU shows nothing and abs shows the evidence.
    let strongest_negative = raw
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap();
    assert!(relu_map[strongest_negative] <= 1e-6);
    assert!(abs_map[strongest_negative] > 0.05);
    // A signed layer map is the raw map over its largest magnitude.
    let signed_map = to_vec(explain(Rectifier::Signed).layers[0].map.clone());
    let scale = raw.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-7;
    assert!(max_abs_diff(&signed_map, &raw.iter().map(|v| v / scale).collect::<Vec<_>>()) <= 1e-5);
}

fn tensor4(values: &[f32], dims: [usize; 4]) -> Tensor<4> {
    Tensor::<1>::from_data(values, &device()).reshape(dims)
}

#[test]
fn gradcam_plus_plus_follows_its_closed_form_on_hand_values() {
    // One image, one channel, 1×2 pixels: A = [1, 3], g = [2, −1].
    let activations = tensor4(&[1.0, 3.0], [1, 1, 1, 2]);
    let gradients = tensor4(&[2.0, -1.0], [1, 1, 1, 2]);
    let out = GradCamPlusPlus.compute(activations, gradients);
    let sum_a = 4.0f32;
    let a0 = 4.0 / (2.0 * 4.0 + sum_a * 8.0 + 1e-6);
    let alpha = a0 * 2.0; // the negative gradient contributes max(g, 0) = 0
    let weights = to_vec(out.channel_weights.unwrap());
    assert!((weights[0] - alpha).abs() < 1e-7);
    assert!(max_abs_diff(&to_vec(out.map), &[alpha, 3.0 * alpha]) < 1e-6);
}

#[test]
fn layercam_and_elementwise_follow_their_closed_forms_on_hand_values() {
    // Two channels, 1×2 pixels.
    let a = [1.0, 2.0, 3.0, -1.0];
    let g = [0.5, -2.0, -1.0, 4.0];
    let layer = LayerCam.compute(tensor4(&a, [1, 2, 1, 2]), tensor4(&g, [1, 2, 1, 2]));
    // Σ_k max(g, 0)·A: pixel 0: 0.5·1 + 0·3 = 0.5; pixel 1: 0·2 + 4·(−1) = −4.
    assert!(max_abs_diff(&to_vec(layer.map), &[0.5, -4.0]) < 1e-7);
    let elementwise = GradCamElementWise.compute(tensor4(&a, [1, 2, 1, 2]), tensor4(&g, [1, 2, 1, 2]));
    // Σ_k max(g·A, 0): pixel 0: 0.5 + 0 = 0.5; pixel 1: 0 + 0 = 0.
    assert!(max_abs_diff(&to_vec(elementwise.map), &[0.5, 0.0]) < 1e-7);
    assert!(layer.channel_weights.is_none());
}

#[test]
fn a_closure_target_explains_a_softmax_probability() {
    let model = GapNet::new(24);
    let x = input(2, 34);
    let class = 1;
    let probability = ScoreFn(|logits: &Tensor<2>| softmax(logits.clone(), 1).narrow(1, class, 1).reshape([2]));
    let explanation = Explainer::from(Method::GradCam)
        .layer("features")
        .explain(&|x| model.forward(x), x, &probability)
        .unwrap();
    let scores = to_vec(explanation.scores);
    let logits = to_vec(explanation.output);
    for image in 0..2 {
        let row = &logits[image * CLASSES..(image + 1) * CLASSES];
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((scores[image] - row[class].exp() / total).abs() < 1e-6);
    }
    assert!(explanation.classes.is_none());
}

#[test]
fn method_and_rectifier_names_round_trip() {
    for &method in Method::ALL {
        assert_eq!(method.name().parse::<Method>().unwrap(), method);
    }
    for &rectifier in Rectifier::ALL {
        assert_eq!(rectifier.name().parse::<Rectifier>().unwrap(), rectifier);
    }
    // Errors list every name, from the same table.
    let error = "gradcam+".parse::<Method>().unwrap_err().to_string();
    for &method in Method::ALL {
        assert!(error.contains(method.name()), "{error}");
    }
    let error = "relu6".parse::<Rectifier>().unwrap_err().to_string();
    assert_eq!(
        error,
        "unknown rectifier `relu6`; expected one of: relu, abs, signed, counterfactual"
    );
    // Aliases: the signed rectifier's old name, Grad-CAM++ without pluses.
    assert_eq!("none".parse::<Rectifier>().unwrap(), Rectifier::Signed);
    assert_eq!("GradCAMpp".parse::<Method>().unwrap(), Method::GradCamPlusPlus);
}

/// EigenCAM needs activations only: no backward pass (no gradients kept), and the map does not
/// depend on the class explained.
#[test]
fn eigencam_uses_no_gradients_and_no_class() {
    let model = DeepNet::new(31);
    let x = input(2, 32);
    let explain = |class: usize| {
        Explainer::from(ember_core::Method::EigenCam)
            .layer("block1")
            .keep_tensors(true)
            .explain(&model, x.clone(), &ClassTarget::Class(class))
            .unwrap()
    };
    let (a, b) = (explain(0), explain(3));
    assert!(a.layers[0].gradients.is_none());
    assert!(a.layers[0].activations.is_some());
    assert_eq!(to_vec(a.maps), to_vec(b.maps));
}

/// A layer that does not vary over the image has no principal component: an error, not a blank
/// map.
#[test]
fn eigencam_on_a_constant_layer_is_an_error() {
    let model = DeepNet::new(33);
    let constant = Tensor::<4>::zeros([1, 3, SIZE, SIZE], &device());
    let error = Explainer::from(ember_core::Method::EigenCam)
        .layer("block1")
        .explain(&model, constant, &ClassTarget::Class(0))
        .unwrap_err();
    assert!(
        matches!(&error, ember_core::CamError::DegenerateLayer { layer, image: 0, .. } if layer == "block1"),
        "{error:?}"
    );
}

/// AblationCAM on conv → ReLU → tap → global average pool → linear: ablating channel k (to 0,
/// the ReLU's minimum) removes exactly `w_kc · mean(A_k)` from the score `y_c`, so the weight is
/// that over `y_c` — in closed form, whatever the batch of re-run copies.
#[test]
fn ablationcam_weights_are_the_relative_score_drops() {
    let model = GapNet::new(41);
    let x = input(2, 42);
    let class = 1;
    let activations = model.features(x.clone());
    let scores = to_vec(model.forward(x.clone()).narrow(1, class, 1));
    let means = to_vec(activations.clone().mean_dims(&[2, 3]));
    let head = to_vec(model.head.weight.val());
    for batch in [1, 3, 64] {
        let explanation = Explainer::from(ember_core::Method::AblationCam)
            .layer("features")
            .perturbation_batch(batch)
            .explain(&|x| model.forward(x), x.clone(), &ClassTarget::Class(class))
            .unwrap();
        let weights = to_vec(explanation.layers[0].channel_weights.clone().unwrap());
        for image in 0..2 {
            for channel in 0..CHANNELS {
                let drop = head[channel * CLASSES + class] * means[image * CHANNELS + channel];
                let expected = drop / scores[image];
                let got = weights[image * CHANNELS + channel];
                assert!(
                    (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "batch {batch}, image {image}, channel {channel}: {got} vs {expected}"
                );
            }
        }
    }
}

/// RandomCAM: a seeded baseline — the same map every run, weights in [−1, 1), another seed
/// another map, no gradients.
#[test]
fn randomcam_is_a_seeded_baseline() {
    use ember_core::RandomCam;
    let model = DeepNet::new(51);
    let x = input(2, 52);
    let explain = |seed: u64| {
        Explainer::new(RandomCam { seed })
            .layer("block1")
            .keep_tensors(true)
            .explain(&model, x.clone(), &ClassTarget::TopClass)
            .unwrap()
    };
    let (a, b, c) = (explain(0), explain(0), explain(7));
    assert!(a.layers[0].gradients.is_none());
    let weights = to_vec(a.layers[0].channel_weights.clone().unwrap());
    assert!(weights.iter().all(|w| (-1.0..1.0).contains(w)), "{weights:?}");
    assert!(weights.iter().any(|&w| w < 0.0) && weights.iter().any(|&w| w > 0.0));
    assert_eq!(to_vec(a.maps.clone()), to_vec(b.maps));
    assert_ne!(to_vec(a.maps), to_vec(c.maps));
}

/// ScoreCAM on conv → ReLU → tap (at the input's resolution, so no upsampling) → GAP → linear:
/// each weight is the softmax over channels of the class score of the image multiplied by that
/// channel min-max normalised — computed here by hand on the host, whatever the batch of copies.
#[test]
fn scorecam_weights_are_the_softmax_of_masked_scores() {
    let model = GapNet::new(43);
    let x = input(2, 44);
    let class = 3;
    let activations = to_vec(model.features(x.clone()));
    let pixels = SIZE * SIZE;
    let image_values = to_vec(x.clone());
    let mut expected = Vec::new();
    for image in 0..2 {
        let mut scores = Vec::new();
        for channel in 0..CHANNELS {
            let start = (image * CHANNELS + channel) * pixels;
            let values = &activations[start..start + pixels];
            let (low, high) = values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let mask: Vec<f32> = values.iter().map(|v| (v - low) / (high - low + 1e-8)).collect();
            let masked: Vec<f32> = (0..3 * pixels)
                .map(|i| image_values[image * 3 * pixels + i] * mask[i % pixels])
                .collect();
            let masked =
                Tensor::<1>::from_data(TensorData::new(masked, [3 * pixels]), &device()).reshape([1, 3, SIZE, SIZE]);
            scores.push(to_vec(model.forward(masked))[class]);
        }
        let largest = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scores.iter().map(|s| (s - largest).exp()).collect();
        let total: f32 = exps.iter().sum();
        expected.extend(exps.iter().map(|e| e / total));
    }
    for batch in [1, 3, 64] {
        let explanation = Explainer::from(ember_core::Method::ScoreCam)
            .layer("features")
            .perturbation_batch(batch)
            .explain(&|x| model.forward(x), x.clone(), &ClassTarget::Class(class))
            .unwrap();
        let weights = to_vec(explanation.layers[0].channel_weights.clone().unwrap());
        for (index, (got, want)) in weights.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-5,
                "batch {batch}, weight {index}: {got} vs {want}"
            );
        }
        for image in 0..2 {
            let sum: f32 = weights[image * CHANNELS..(image + 1) * CHANNELS].iter().sum();
            assert!((sum - 1.0).abs() <= 1e-5, "weights of image {image} sum to {sum}");
        }
    }
}
