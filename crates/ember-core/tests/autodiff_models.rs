//! Models whose parameters live on an autodiff device (a model in training): the explanation
//! is the plain model's, the prefix before the tap is not differentiated, and the returned
//! output is detached, safe to use in a loss afterwards.

mod common;

use burn::module::Module;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, maps_to_host, to_host};

/// A copy of `model` with its parameters on the autodiff device, requiring gradients.
fn in_training(model: &DeepNet) -> DeepNet {
    model.clone().to_device(&device().autodiff()).train()
}

#[test]
fn a_model_on_an_autodiff_device_gives_the_plain_model_s_map() {
    let plain = DeepNet::new(21);
    let training = in_training(&plain);
    let x = input(2, 22);
    for layer in ["block1", "block2"] {
        let explainer = Explainer::new(GradCam).layer(layer);
        let a = explainer.explain(&plain, x.clone(), &ClassTarget::TopClass).unwrap();
        let b = explainer
            .explain(&training, x.clone().autodiff(), &ClassTarget::TopClass)
            .unwrap();
        let worst = max_abs_diff(&maps_to_host(&a.maps).unwrap(), &maps_to_host(&b.maps).unwrap());
        assert!(worst <= 1e-6, "{layer}: maps differ by {worst}");
        let worst = max_abs_diff(&to_host(&a.output).unwrap(), &to_host(&b.output).unwrap());
        assert!(worst <= 1e-6, "{layer}: outputs differ by {worst}");
    }
}

#[test]
fn the_output_can_be_used_in_a_loss_after_the_explanation() {
    let model = in_training(&DeepNet::new(23));
    let explanation = Explainer::new(GradCam)
        .layer("block1")
        .explain(&model, input(2, 24).autodiff(), &ClassTarget::TopClass)
        .unwrap();
    // A fresh forward for training is unaffected, and the returned output is detached: using
    // it does not reach into the graph the explanation consumed.
    let training_output = model.forward(input(2, 24).autodiff());
    assert!(training_output.is_tracked(), "the model is not in training");
    let loss = training_output.sum() + explanation.output.clone().sum();
    let gradients = loss.backward();
    let weight = model.conv1.weight.val();
    assert!(
        weight.grad(&gradients).is_some(),
        "the training forward lost its gradients"
    );
    assert!(
        !explanation.output.is_tracked(),
        "the output still belongs to the explanation's graph"
    );
}
