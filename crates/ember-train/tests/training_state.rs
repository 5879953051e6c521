//! A model explained in the middle of training: the next optimizer step is bit-identical with
//! and without the explanation, the explained copy carries no parameter that could receive a
//! gradient, and the map is the plain model's.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::prelude::*;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam, maps_to_host};
use ember_train::{ImageClassifier, Stage, TrainingExplanations};

fn explanations(name: &str) -> TrainingExplanations {
    let (inputs, _) = images(4, 99, &Device::flex());
    let labels = (0..4).map(|i| i % CLASSES).collect();
    TrainingExplanations::new(scratch(name), class_names(), inputs, pictures(4), labels)
        .unwrap()
        .column("gradcam", Explainer::new(GradCam).layer("features"))
}

/// Trains two steps from `start` on `batches`, with `between` run after the first. Everything
/// random is made before (tests share the device's generator across threads).
fn two_steps(start: &SmallNet, batches: &[(Tensor<4>, Tensor<1, Int>)], between: impl Fn(&SmallNet)) -> Vec<Vec<f32>> {
    let mut model = start.clone();
    let mut optimizer = AdamConfig::new().init();
    let (first, first_targets) = batches[0].clone();
    let (second, second_targets) = batches[1].clone();
    model = step(model, &mut optimizer, first, first_targets);
    between(&model);
    model = step(model, &mut optimizer, second, second_targets);
    parameters(&model)
}

#[test]
fn the_next_optimizer_step_is_bit_identical_with_an_explanation_in_between() {
    let explanations = explanations("bit-identical");
    let device = Device::flex().autodiff();
    let start = SmallNet::new(&device);
    let batches = [images(8, 1, &device), images(8, 2, &device)];
    let probe_images = images(4, 5, &Device::flex().autodiff()).0;
    let untouched = two_steps(&start, &batches, |_| {});
    let explained = two_steps(&start, &batches, |model| {
        assert!(
            model.conv1.weight.val().is_require_grad(),
            "the model is not in training"
        );
        explanations.explain(Stage::Step(1), model).unwrap();
        // The core explainer on the training model directly, too.
        Explainer::new(GradCam)
            .layer("features")
            .explain(&|x| model.forward(x), probe_images.clone(), &ClassTarget::TopClass)
            .unwrap();
    });
    assert_eq!(untouched.len(), explained.len());
    for (a, b) in untouched.iter().zip(&explained) {
        let a: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "a parameter differs after the next step");
    }
    // The runs moved the parameters: the comparison is not between two untrained models.
    assert_ne!(parameters(&start), untouched, "the optimizer steps changed nothing");
}

/// A classifier that counts forward passes run with parameters that require a gradient.
#[derive(Module, Debug)]
struct Watched {
    net: SmallNet,
}

static TRACKED_FORWARDS: AtomicUsize = AtomicUsize::new(0);
static FORWARDS: AtomicUsize = AtomicUsize::new(0);

impl ImageClassifier for Watched {
    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        FORWARDS.fetch_add(1, Ordering::SeqCst);
        let weights = [
            self.net.conv1.weight.val().is_require_grad(),
            self.net.conv2.weight.val().is_require_grad(),
            self.net.head.weight.val().is_require_grad(),
        ];
        if weights.iter().any(|&tracked| tracked) {
            TRACKED_FORWARDS.fetch_add(1, Ordering::SeqCst);
        }
        self.net.forward(images)
    }
}

#[test]
fn the_explained_model_has_no_parameter_that_could_receive_a_gradient() {
    let model = Watched {
        net: SmallNet::new(&Device::flex().autodiff()),
    };
    assert!(
        model.net.head.weight.val().is_require_grad(),
        "the model is not in training"
    );
    explanations("no-gradients").explain(Stage::Epoch(1), &model).unwrap();
    assert!(FORWARDS.load(Ordering::SeqCst) > 0, "the model was not run");
    assert_eq!(
        TRACKED_FORWARDS.load(Ordering::SeqCst),
        0,
        "the explanation ran the model with parameters that require gradients"
    );
    // And the model in training is left in training.
    assert!(
        model.net.head.weight.val().is_require_grad(),
        "the explanation changed the model's state"
    );
}

#[test]
fn a_model_in_training_gives_the_plain_model_s_map_and_sheet() {
    let training = SmallNet::new(&Device::flex().autodiff());
    let plain = training.valid();
    let (inputs, _) = images(4, 31, &Device::flex());
    let explainer = Explainer::new(GradCam).layer("features");
    let a = explainer
        .explain(&|x| plain.forward(x), inputs.clone(), &ClassTarget::TopClass)
        .unwrap();
    let b = explainer
        .explain(&|x| training.forward(x), inputs.autodiff(), &ClassTarget::TopClass)
        .unwrap();
    let (a, b) = (maps_to_host(&a.maps).unwrap(), maps_to_host(&b.maps).unwrap());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(a.iter().any(|&v| v > 0.0), "blank maps prove nothing");
    assert!(worst <= 1e-6, "maps differ by {worst}");

    let on_plain = explanations("plain-sheet").explain(Stage::Epoch(1), &plain).unwrap();
    let in_training = explanations("training-sheet")
        .explain(Stage::Epoch(1), &training)
        .unwrap();
    assert_eq!(on_plain.predictions, in_training.predictions);
    let (a, b) = (
        image::open(&on_plain.sheet).unwrap().to_rgb8(),
        image::open(&in_training.sheet).unwrap().to_rgb8(),
    );
    assert_eq!(a.dimensions(), b.dimensions());
    assert!(a == b, "the sheets differ");
}
