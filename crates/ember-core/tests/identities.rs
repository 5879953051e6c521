//! Closed-form identities of CAM methods on architectures where they are known exactly.

mod common;

use burn::prelude::*;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, HiResCam, XGradCam};

/// The head's weight column of `class` as `[CHANNELS]` values (burn stores Linear as [in, out]).
fn head_weights(head: &burn::nn::Linear, class: usize) -> Vec<f32> {
    let weight = head.weight.val();
    let [inputs, _] = weight.dims();
    to_vec(weight.narrow(1, class, 1).reshape([inputs]))
}

#[test]
fn gradcam_on_a_gap_head_is_cam_divided_by_the_pixel_count() {
    let model = GapNet::new(1);
    let x = input(2, 11);
    let class = 3;
    let explanation = Explainer::new(GradCam)
        .layer("features")
        .keep_tensors(true)
        .explain(&|x| model.forward(x), x.clone(), &ClassTarget::Class(class))
        .unwrap();
    let layer = &explanation.layers[0];

    // CAM (Zhou et al. 2016): Σ_k w_ck A^k, from the head's weights.
    let weights = head_weights(&model.head, class);
    let features = model.features(x);
    let w = Tensor::<1>::from_data(weights.as_slice(), &device()).reshape([1, CHANNELS, 1, 1]);
    let cam = (features * w).sum_dim(1).reshape([2, SIZE, SIZE]);
    let pixels = (SIZE * SIZE) as f32;
    let expected = to_vec(cam.div_scalar(pixels));
    let raw = to_vec(layer.raw.clone());
    let diff = max_abs_diff(&raw, &expected);
    assert!(diff <= 1e-5 * max_abs(&expected), "Grad-CAM vs CAM/Z: worst {diff}");

    // The channel weights themselves are w_ck / Z for every image.
    let alphas = to_vec(layer.channel_weights.clone().unwrap());
    let expected_alphas: Vec<f32> = weights.iter().chain(&weights).map(|w| w / pixels).collect();
    assert!(max_abs_diff(&alphas, &expected_alphas) <= 1e-6);
}

#[test]
fn hirescam_and_xgradcam_equal_gradcam_on_a_gap_head() {
    let model = GapNet::new(2);
    let x = input(2, 12);
    let raw = |explainer: Explainer| {
        let e = explainer
            .layer("features")
            .explain(&|x| model.forward(x), x.clone(), &ClassTarget::TopClass)
            .unwrap();
        (to_vec(e.layers[0].raw.clone()), to_vec(e.maps))
    };
    let (grad_cam, grad_cam_final) = raw(Explainer::new(GradCam));
    let (hires_cam, hires_final) = raw(Explainer::new(HiResCam));
    let (xgrad_cam, _) = raw(Explainer::new(XGradCam));
    let scale = max_abs(&grad_cam);
    assert!(max_abs_diff(&grad_cam, &hires_cam) <= 1e-6 * scale);
    // XGrad-CAM's weights carry ΣA/(ΣA + 1e-7), equal to 1 up to float rounding here.
    assert!(max_abs_diff(&grad_cam, &xgrad_cam) <= 1e-5 * scale);
    assert!(max_abs_diff(&grad_cam_final, &hires_final) <= 1e-5);
}

#[test]
fn hirescam_summed_over_pixels_is_the_score_minus_the_bias_on_a_flatten_head() {
    let model = FlattenNet::new(3);
    let x = input(3, 13);
    let explanation = Explainer::new(HiResCam)
        .layer("features")
        .explain(&|x| model.forward(x), x, &ClassTarget::TopClass)
        .unwrap();
    let sums = to_vec(explanation.layers[0].raw.clone().sum_dims_squeeze::<1, usize>(&[1, 2]));
    let scores = to_vec(explanation.scores.clone());
    let classes: Vec<i64> = explanation.classes.clone().unwrap().try_into_vec_as::<i64>().unwrap();
    let bias = to_vec(model.head.bias.as_ref().unwrap().val());
    for image in 0..3 {
        let expected = scores[image] - bias[classes[image] as usize];
        let diff = (sums[image] - expected).abs();
        assert!(
            diff <= 1e-4 * expected.abs().max(1.0),
            "image {image}: Σ HiResCAM {} vs y−b {expected}",
            sums[image]
        );
    }
}

#[test]
fn the_top_class_is_the_argmax_of_the_output() {
    let model = GapNet::new(4);
    let x = input(4, 14);
    let explanation = Explainer::default()
        .layer("features")
        .explain(&|x| model.forward(x), x, &ClassTarget::TopClass)
        .unwrap();
    let logits = to_vec(explanation.output.clone());
    let classes = explanation.classes.unwrap().try_into_vec_as::<i64>().unwrap();
    let scores = to_vec(explanation.scores);
    for image in 0..4 {
        let row = &logits[image * CLASSES..(image + 1) * CLASSES];
        let best = (0..CLASSES).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(classes[image] as usize, best);
        assert_eq!(scores[image], row[best]);
    }
}
