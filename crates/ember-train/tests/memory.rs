//! Memory does not grow over 100 explanations of a model in training (a kept autodiff graph or
//! capture would grow it by one activation or more per call). Alone in its binary: no other
//! test shares the process's memory.

mod common;

use burn::optim::AdamConfig;
use burn::prelude::*;
use common::*;
use ember_core::{ClassTarget, Explainer, GradCam};
use ember_train::{Stage, TrainingExplanations};

/// Resident memory in bytes (Linux: `/proc/self/statm`, in pages of 4 KiB).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm is readable on Linux");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// How much resident memory `calls` more runs of `call` add, after 20 warm-up runs.
fn growth(calls: usize, mut call: impl FnMut(usize)) -> u64 {
    for i in 0..20 {
        call(i);
    }
    let before = resident_bytes();
    for i in 0..calls {
        call(i);
    }
    resident_bytes().saturating_sub(before)
}

// 32 images: the tapped activation is 32×8×12×12×4 B = 144 KiB, so a graph or capture kept per
// call grows 100 calls by 14 MiB or more.
const LIMIT: u64 = 6 << 20;

#[test]
fn memory_is_stable_over_100_explanations_of_a_model_in_training() {
    let device = Device::flex().autodiff();
    let mut model = SmallNet::new(&device);
    let (inputs, _) = images(32, 3, &Device::flex());
    let labels = (0..32).map(|i| i % CLASSES).collect();
    let explanations =
        TrainingExplanations::new(scratch("memory"), class_names(), inputs.clone(), pictures(32), labels)
            .unwrap()
            .column("gradcam", Explainer::new(GradCam).layer("features"));

    // The training integration: the model in training, explained 100 times in a row.
    let grown = growth(100, |i| {
        explanations.explain(Stage::Step(i % 3), &model).unwrap();
    });
    assert!(
        grown < LIMIT,
        "TrainingExplanations: resident memory grew by {} KiB",
        grown >> 10
    );

    // The core explainer on the model in training, between optimizer steps as in a training
    // loop. (Without the steps, burn's autodiff keeps the graph of the layers before the tap,
    // built from tracked parameters, until the next backward through them: see the README.)
    let mut optimizer = AdamConfig::new().init();
    let (train_images, train_targets) = images(8, 4, &device);
    let explainer = Explainer::new(GradCam).layer("features");
    let grown = growth(100, |_| {
        model = step(
            model.clone(),
            &mut optimizer,
            train_images.clone(),
            train_targets.clone(),
        );
        explainer
            .explain(&|x| model.forward(x), inputs.clone().autodiff(), &ClassTarget::TopClass)
            .unwrap();
    });
    assert!(
        grown < LIMIT,
        "Explainer between steps: resident memory grew by {} KiB",
        grown >> 10
    );
}
