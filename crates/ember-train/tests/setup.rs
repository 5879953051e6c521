//! Inconsistent set-ups are refused with a reason, before any training time is spent.

mod common;

use burn::prelude::*;
use common::*;
use ember_core::{Explainer, GradCam};
use ember_train::{Stage, TrainingExplanations};

fn setup(count: usize, pictures_: usize, labels: Vec<usize>, dir: &std::path::Path) -> String {
    let inputs = if count == 0 {
        Tensor::from_data(TensorData::new(Vec::<f32>::new(), [0, 1, SIZE, SIZE]), &Device::flex())
    } else {
        images(count, 1, &Device::flex()).0
    };
    TrainingExplanations::new(dir, class_names(), inputs, pictures(pictures_), labels)
        .unwrap_err()
        .to_string()
}

#[test]
fn inconsistent_images_labels_and_folders_are_refused() {
    let dir = scratch("setup");
    assert!(setup(0, 0, vec![], &dir).contains("no validation images"));
    assert!(setup(2, 1, vec![0, 1], &dir).contains("2 validation inputs, 1 pictures and 2 labels"));
    assert!(setup(2, 2, vec![0, 7], &dir).contains("true class 7"));
    let file = std::env::temp_dir().join(format!("ember-train-setup-file-{}", std::process::id()));
    std::fs::write(&file, b"a user's file").unwrap();
    assert!(setup(2, 2, vec![0, 1], &file).contains("is not a folder"));
    assert_eq!(std::fs::read(&file).unwrap(), b"a user's file", "the file was touched");
}

#[test]
fn a_stage_without_columns_or_with_a_wrong_layer_is_an_error() {
    let (inputs, _) = images(2, 1, &Device::flex());
    let model = SmallNet::new(&Device::flex());
    let bare =
        TrainingExplanations::new(scratch("bare"), class_names(), inputs.clone(), pictures(2), vec![0, 1]).unwrap();
    let message = bare.explain(Stage::Epoch(1), &model).unwrap_err().to_string();
    assert!(message.contains("no explainer to show"), "{message}");
    let wrong = TrainingExplanations::new(scratch("wrong"), class_names(), inputs, pictures(2), vec![0, 1])
        .unwrap()
        .column("gradcam", Explainer::new(GradCam).layer("nowhere"));
    let message = wrong.explain(Stage::Epoch(1), &model).unwrap_err().to_string();
    assert!(message.starts_with("explaining epoch 1 with gradcam:"), "{message}");
    assert!(wrong.records().is_empty());
}
