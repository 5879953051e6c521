//! Layouts on native Burn models: a tap on channels-last or transformer-token activations gives
//! exactly the map of a tap on the same activations laid out `[N, C, H, W]`.

mod common;

use burn::prelude::*;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, LayerTap, Layout, Method, TokenGrid};

/// GapNet's features as tokens `[N, 1 + H·W, C]` after a learned class token, or channels-last
/// `[N, H, W, C]`, tapped there; the head averages the patches and adds the class token's
/// projection (so the class token matters to the score and the layout must skip it).
fn token_model(model: &GapNet, layout: Layout) -> impl Fn(Tensor<4>) -> Tensor<2> + '_ {
    let tap = LayerTap::new("tokens");
    move |x: Tensor<4>| {
        let features = model.features(x);
        let [n, c, h, w] = features.dims();
        let pooled = match layout {
            Layout::ChannelsLast => tap
                .forward(features.permute([0, 2, 3, 1]))
                .mean_dims(&[1, 2])
                .reshape([n, c]),
            _ => {
                let patches = features.reshape([n, c, h * w]).swap_dims(1, 2);
                let class_token = Tensor::<3>::ones([n, 1, c], &patches.device()) * 0.5;
                let tokens = tap.forward(Tensor::cat(vec![class_token, patches], 1));
                let class_token = tokens.clone().narrow(1, 0, 1).reshape([n, c]);
                tokens.narrow(1, 1, h * w).mean_dim(1).reshape([n, c]) + class_token
            }
        };
        model.head.forward(pooled)
    }
}

#[test]
fn token_and_channels_last_taps_give_the_channels_first_map() {
    let model = GapNet::new(61);
    let x = input(3, 62);
    let gap_net = |x: Tensor<4>| model.forward(x);
    let grid = Layout::Tokens(TokenGrid {
        skip: 1,
        height: SIZE,
        width: SIZE,
    });
    for method in [Method::GradCam, Method::HiResCam, Method::LayerCam] {
        let reference = Explainer::from(method)
            .layer("features")
            .explain(&gap_net, x.clone(), &ClassTarget::Class(2))
            .unwrap();
        // The signed map before rectification (the rectified one can be blank where every term
        // is negative), compared too. LayerCAM's drops negative gradients: blank where all of
        // class 2's head weights are, which the test's seeded weights are not.
        let raw = to_vec(reference.layers[0].raw.clone());
        assert!(max_abs(&raw) > 1e-6, "a zero map would test nothing");
        for layout in [grid, Layout::ChannelsLast] {
            let forward = token_model(&model, layout);
            let explanation = Explainer::from(method)
                .layer("tokens")
                .layout(layout)
                .explain(&forward, x.clone(), &ClassTarget::Class(2))
                .unwrap();
            let worst = max_abs_diff(&to_vec(explanation.maps), &to_vec(reference.maps.clone()));
            assert!(worst <= 1e-5, "{method} with {layout}: maps differ by {worst}");
            let signed = to_vec(explanation.layers[0].raw.clone());
            let worst = max_abs_diff(&signed, &raw) / max_abs(&raw);
            assert!(
                worst <= 1e-5,
                "{method} with {layout}: signed maps differ by {worst} (relative)"
            );
        }
    }
}

#[test]
fn a_token_count_that_is_not_the_grid_is_an_error() {
    let model = GapNet::new(63);
    let forward = token_model(
        &model,
        Layout::Tokens(TokenGrid {
            skip: 1,
            height: 1,
            width: 1,
        }),
    );
    let wrong = Layout::Tokens(TokenGrid {
        skip: 0,
        height: SIZE,
        width: SIZE,
    });
    let error = Explainer::new(GradCam)
        .layer("tokens")
        .layout(wrong)
        .explain(&forward, input(1, 64), &ClassTarget::TopClass)
        .unwrap_err();
    assert!(error.to_string().contains("which is not [N, 64 tokens, C]"), "{error}");
}
