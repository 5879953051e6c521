//! burn-train's Learner with the explaining checkpointer and the facts logger: every epoch gets a
//! sheet, the index lists the epochs with the Learner's validation metrics, and the checkpoints
//! are still written.

mod common;

use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::AdamConfig;
use burn::prelude::*;
use burn::train::checkpoint::FileCheckpointer;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep};
use common::*;
use ember_core::{Explainer, GradCam, LayerCam};
use ember_train::{ExplainingCheckpointer, ExplanationFacts, SilentRenderer, Stage, TrainingExplanations};

#[derive(Clone, Debug)]
struct Item {
    image: Vec<f32>,
    label: i64,
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor<4>,
    pub targets: Tensor<1, Int>,
}

#[derive(Clone, Debug)]
struct ItemBatcher;

impl Batcher<Item, Batch> for ItemBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let count = items.len();
        let values: Vec<f32> = items.iter().flat_map(|i| i.image.iter().copied()).collect();
        let labels: Vec<i64> = items.iter().map(|i| i.label).collect();
        Batch {
            images: Tensor::from_data(TensorData::new(values, [count, 1, SIZE, SIZE]), device),
            targets: Tensor::from_data(TensorData::new(labels, [count]), device),
        }
    }
}

impl SmallNet {
    fn classification(&self, batch: Batch) -> ClassificationOutput {
        let output = self.forward(batch.images);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }
}

impl TrainStep for SmallNet {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let item = self.classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for SmallNet {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classification(batch)
    }
}

/// Images whose class is where a bright square sits (left, middle, right): learnable in a few
/// epochs, and a map should find the square.
fn items(count: usize) -> Vec<Item> {
    (0..count)
        .map(|i| {
            let label = i % CLASSES;
            let mut image = vec![0.0f32; SIZE * SIZE];
            let column = 1 + label * 4;
            for y in 4..7 {
                for x in column..column + 3 {
                    image[y * SIZE + x] = 1.0 + (i % 5) as f32 * 0.1;
                }
            }
            Item {
                image,
                label: label as i64,
            }
        })
        .collect()
}

#[test]
fn a_learner_run_writes_a_sheet_per_epoch_and_an_index_with_its_metrics() {
    let out = scratch("learner");
    let device = Device::flex();
    let validation = items(CLASSES);
    let values: Vec<f32> = validation.iter().flat_map(|i| i.image.clone()).collect();
    let inputs = Tensor::<4>::from_data(TensorData::new(values, [CLASSES, 1, SIZE, SIZE]), &device);
    let labels = validation.iter().map(|i| i.label as usize).collect();
    let explanations = Arc::new(
        TrainingExplanations::new(out.join("sheets"), class_names(), inputs, pictures(CLASSES), labels)
            .unwrap()
            .column("gradcam", Explainer::new(GradCam).layer("features"))
            .column("layercam", Explainer::new(LayerCam).layer("features")),
    );
    let loader = |count| {
        DataLoaderBuilder::new(ItemBatcher)
            .batch_size(8)
            .shuffle(1)
            .build(InMemDataset::new(items(count)))
    };
    let epochs_seen = Arc::new(Mutex::new(Vec::new()));
    let facts = ExplanationFacts::new(explanations.clone()).on_epoch({
        let seen = epochs_seen.clone();
        move |epoch, metrics| seen.lock().unwrap().push((epoch, metrics.to_vec()))
    });
    device.seed(5);
    let model = SmallNet::new(&device.autodiff());
    let checkpoints = out.join("checkpoints");
    let training = SupervisedTraining::new(out.join("artifacts"), loader(48), loader(12))
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_metric_logger(facts)
        .renderer(Box::new(SilentRenderer))
        .with_custom_checkpointers(
            ExplainingCheckpointer::new(
                FileCheckpointer::new(&checkpoints, "model"),
                model.valid(),
                explanations.clone(),
            ),
            FileCheckpointer::new(&checkpoints, "optim"),
            FileCheckpointer::new(&checkpoints, "scheduler"),
        )
        .num_epochs(2);
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), 1e-2));
    drop(result);

    let records = explanations.records();
    let stages: Vec<Stage> = records.iter().map(|r| r.stage).collect();
    assert_eq!(stages, [Stage::Epoch(1), Stage::Epoch(2)]);
    for record in &records {
        let sheet = image::open(&record.sheet).unwrap().to_rgb8();
        assert!(
            sheet.width() > 3 * 112 && sheet.height() > CLASSES as u32 * 112,
            "{:?}",
            sheet.dimensions()
        );
        assert!(
            record.facts.iter().any(|(name, _)| name == "valid Accuracy"),
            "{:?}",
            record.facts
        );
    }
    let seen = epochs_seen.lock().unwrap();
    assert_eq!(seen.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [1, 2]);
    assert!(
        seen.iter()
            .all(|(_, m)| m.iter().any(|(n, v)| n == "Loss" && v.is_finite()))
    );

    let index = std::fs::read_to_string(out.join("sheets/index.html")).unwrap();
    for name in ["epoch-001.png", "epoch-002.png", "valid Accuracy", "valid Loss"] {
        assert!(index.contains(name), "index.html lacks {name}");
    }
    // The wrapped checkpointer still saved the model each epoch.
    let saved = std::fs::read_dir(&checkpoints).unwrap().count();
    assert!(saved >= 3, "{saved} checkpoint files");
}
