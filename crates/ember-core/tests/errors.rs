//! Every error of the pipeline is typed and readable; none panics.

mod common;

use burn::prelude::*;
use common::*;
use ember_core::{CamError, ClassTarget, Explainer, GradCam, LayerTap, Layout, ScoreFn, tap};

#[test]
fn an_unknown_layer_of_a_declaring_model_lists_the_closest_names() {
    let model = DeepNet::new(40);
    let error = Explainer::new(GradCam)
        .layer("blok2")
        .explain(&model, input(1, 50), &ClassTarget::TopClass)
        .unwrap_err();
    match &error {
        CamError::UnknownLayer { name, closest } => {
            assert_eq!(name, "blok2");
            assert_eq!(closest[0], "block2");
        }
        other => panic!("expected UnknownLayer, got {other:?}"),
    }
    assert!(error.to_string().contains("closest names: block2"));
}

#[test]
fn an_unknown_layer_of_a_native_model_lists_the_taps_seen() {
    let model = GapNet::new(41);
    let error = Explainer::new(GradCam)
        .layer("feature")
        .explain(&|x| model.forward(x), input(1, 51), &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(
        error,
        CamError::UnknownLayer {
            name: "feature".into(),
            closest: vec!["features".into()]
        }
    );
}

#[test]
fn a_declared_layer_that_the_forward_pass_skips_is_reported() {
    let model = DeepNet::new(42);
    let error = Explainer::new(GradCam)
        .layer("unused")
        .explain(&model, input(1, 52), &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(error, CamError::TapNotReached("unused".into()));
}

#[test]
fn a_layer_without_spatial_dimensions_is_rejected() {
    let model = GapNet::new(43);
    let pooled = LayerTap::new("pooled");
    let forward = |x: Tensor<4>| {
        let pooled = pooled.forward(model.features(x).mean_dims(&[2, 3]).flatten::<2>(1, 3));
        model.head.forward(pooled)
    };
    let error = Explainer::new(GradCam)
        .layer("pooled")
        .explain(&forward, input(2, 53), &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(
        error,
        CamError::NotSpatial {
            layer: "pooled".into(),
            shape: vec![2, CHANNELS],
            layout: Layout::ChannelsFirst,
        }
    );
    assert!(error.to_string().contains("rank 2"));
}

#[test]
fn a_class_out_of_range_is_rejected() {
    let model = DeepNet::new(44);
    let error = Explainer::new(GradCam)
        .explain(&model, input(1, 54), &ClassTarget::Class(CLASSES))
        .unwrap_err();
    assert_eq!(
        error,
        CamError::ClassOutOfRange {
            class: CLASSES,
            num_classes: CLASSES
        }
    );
    let error = Explainer::new(GradCam)
        .explain(&model, input(2, 54), &ClassTarget::PerImage(vec![0]))
        .unwrap_err();
    assert!(matches!(error, CamError::BatchMismatch { got: 1, batch: 2, .. }));
}

#[test]
fn a_non_finite_score_is_rejected() {
    let model = DeepNet::new(45);
    let x = input(2, 55);
    let poisoned = x.clone().slice_fill([1..2, 0..1, 0..1, 0..1], f32::NAN);
    let error = Explainer::new(GradCam)
        .explain(&model, poisoned, &ClassTarget::Class(0))
        .unwrap_err();
    assert!(
        matches!(error, CamError::NonFiniteScore { index: 1, .. }),
        "got {error:?}"
    );
}

#[test]
fn an_empty_batch_is_rejected() {
    let model = DeepNet::new(46);
    let empty = Tensor::<4>::zeros([0, 3, SIZE, SIZE], &device());
    let error = Explainer::new(GradCam)
        .explain(&model, empty, &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(error, CamError::EmptyBatch);
}

#[test]
fn a_score_that_ignores_the_layer_is_reported() {
    let model = GapNet::new(47);
    // The tap's output is dropped: the score cannot depend on it.
    let forward = |x: Tensor<4>| {
        let features = model.features(x);
        let _ignored = tap("features", features.clone());
        model.head.forward(features.mean_dims(&[2, 3]).flatten::<2>(1, 3))
    };
    let error = Explainer::new(GradCam)
        .layer("features")
        .explain(&forward, input(1, 57), &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(error, CamError::LayerDoesNotAffectScore("features".into()));
}

#[test]
fn a_tap_reached_twice_and_nested_explanations_are_rejected() {
    let model = GapNet::new(48);
    let twice = |x: Tensor<4>| {
        let features = model.features.forward(model.features(x));
        let features = model.features.forward(features);
        model.head.forward(features.mean_dims(&[2, 3]).flatten::<2>(1, 3))
    };
    let error = Explainer::new(GradCam)
        .layer("features")
        .explain(&twice, input(1, 58), &ClassTarget::TopClass)
        .unwrap_err();
    assert_eq!(error, CamError::TapReachedTwice("features".into()));

    let inner_result = std::cell::RefCell::new(None);
    let nested = |x: Tensor<4>| {
        let inner =
            Explainer::new(GradCam)
                .layer("features")
                .explain(&|x| model.forward(x), x.clone(), &ClassTarget::TopClass);
        *inner_result.borrow_mut() = Some(inner.map(|_| ()));
        model.forward(x)
    };
    Explainer::new(GradCam)
        .layer("features")
        .explain(&nested, input(1, 59), &ClassTarget::TopClass)
        .unwrap();
    assert_eq!(inner_result.into_inner(), Some(Err(CamError::NestedExplanation)));
}

#[test]
fn a_closure_target_of_the_wrong_length_is_rejected() {
    let model = GapNet::new(49);
    let wrong = ScoreFn(|logits: &Tensor<2>| logits.clone().narrow(0, 0, 1).narrow(1, 0, 1).reshape([1]));
    let error = Explainer::new(GradCam)
        .layer("features")
        .explain(&|x| model.forward(x), input(2, 60), &wrong)
        .unwrap_err();
    assert!(matches!(error, CamError::BatchMismatch { got: 1, batch: 2, .. }));
}

#[test]
fn a_layer_of_1x1_is_an_error_with_a_hint_not_a_blank_map() {
    let model = GapNet::new(3);
    let tiny = Values::new(4).normal([2, 3, 1, 1]);
    let error = Explainer::new(GradCam)
        .layer("features")
        .explain(&|x| model.forward(x), tiny, &ClassTarget::TopClass)
        .unwrap_err();
    assert!(
        matches!(&error, CamError::NoSpatialExtent(layer) if layer == "features"),
        "{error:?}"
    );
    assert!(error.to_string().contains("choose an earlier layer"), "{error}");
}

/// KPCA-CAM's kernel matrix grows with the square of the layer's positions: a 40×40 layer
/// (1600 positions) is refused with the reason and the layer's name, a 32×32 one explained.
#[test]
fn kpca_cam_refuses_layers_too_large_for_its_kernel_matrix() {
    let model = |x: Tensor<4>| {
        let features = tap("big", x);
        let [batch, ..] = features.dims();
        features.mean_dims(&[1, 2, 3]).reshape([batch, 1]) * 2.0
    };
    let explain = |size: usize| {
        let input = Tensor::<4>::random([1, 3, size, size], burn::tensor::Distribution::Default, &device());
        Explainer::from(ember_core::Method::KpcaCam)
            .layer("big")
            .explain(&model, input, &ClassTarget::Class(0))
    };
    let error = explain(40).unwrap_err();
    assert!(
        matches!(&error, CamError::LayerUnsuited { layer, method: "kpcacam", .. } if layer == "big"),
        "{error:?}"
    );
    assert!(error.to_string().contains("40×40 = 1600"), "{error}");
    let explanation = explain(32).unwrap();
    assert_eq!(explanation.maps.dims(), [1, 32, 32]);
}

/// GapNet, failing on images without a zero (the unperturbed image) or with one (the copies,
/// whose deleted pixels are the zero baseline).
struct FailingGapNet {
    net: GapNet,
    fail_unperturbed: bool,
}

impl ember_core::CamModel for FailingGapNet {
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> ember_core::Result<Tensor<2>> {
        let has_zero = to_vec(input.clone()).contains(&0.0);
        if has_zero != self.fail_unperturbed {
            return Err(CamError::MetricInput(format!("refused (zeros: {has_zero})")));
        }
        Ok(self.net.forward(input))
    }
}

#[test]
fn a_model_failing_during_deletion_is_an_error_not_a_hang() {
    // On worker threads the unperturbed image is a job of its own whose class the copies wait
    // for: its failure must release them (and theirs must not wait for it).
    let input = input(1, 70);
    let maps = Values::new(71).uniform([1, SIZE, SIZE], 1.0);
    for fail_unperturbed in [true, false] {
        let model = FailingGapNet {
            net: GapNet::new(72),
            fail_unperturbed,
        };
        for batch in [None, Some(7)] {
            let metric = ember_core::metrics::DeletionInsertion {
                batch,
                ..Default::default()
            };
            let error = metric
                .evaluate(&model, &input, &maps, &ClassTarget::TopClass)
                .unwrap_err();
            let expected = format!("refused (zeros: {})", !fail_unperturbed);
            assert!(error.to_string().contains(&expected), "{error}");
        }
    }
}
