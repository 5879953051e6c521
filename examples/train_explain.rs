//! Train a small CNN on Fashion-MNIST with burn-train's `Learner` and explain a fixed set of test
//! images after every epoch: one sheet per epoch and an `index.html` across epochs.
//!
//! ```text
//! apt-get install dataset-fashion-mnist        # the data, in /usr/share/datasets/fashion-mnist
//! cargo run --release --example train_explain --features train -- --epochs 3 --train-limit 6000 --out-dir fashion
//! ```
//!
//! `--training-loop hand-written` trains the same model with a hand-written loop instead and
//! explains it there, its parameters still on the autodiff device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::train::checkpoint::FileCheckpointer;
use burn::train::logger::FileMetricLogger;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep};
use clap::{Parser, ValueEnum};
use ember_cam::train::{
    ExplainingCheckpointer, ExplanationFacts, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FashionMnist, ImageClassifier,
    LabelledImages, SilentRenderer, Stage, TrainingExplanations,
};
use ember_cam::vocabulary::value_parser;
use ember_cam::{DEFAULT_DEVICE, Explainer, LayerTap, Method, burn, open_device};
use image::{Rgb, RgbImage};

#[derive(Parser, Debug)]
#[command(about = "Train a CNN on Fashion-MNIST and explain test images after every epoch")]
struct Args {
    /// Epochs to train.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Train on the first K training images (Fashion-MNIST has 60 000).
    #[arg(long, default_value_t = 6000)]
    train_limit: usize,
    /// Measure test accuracy on the first K test images (of 10 000).
    #[arg(long, default_value_t = 10_000)]
    test_limit: usize,
    /// Where to write the sheets (epoch-001.png, …) and index.html.
    #[arg(long, default_value = "train-explanations")]
    out_dir: PathBuf,
    /// The folder with Fashion-MNIST's four IDX files.
    #[arg(long, default_value = FASHION_MNIST_DIR)]
    data: PathBuf,
    /// Test images to explain, by index; default: the first of each class.
    #[arg(long, value_delimiter = ',')]
    validation: Vec<usize>,
    /// CAM methods, one sheet column each.
    #[arg(long, value_delimiter = ',', default_value = "gradcam,layercam", value_parser = value_parser::<Method>())]
    method: Vec<Method>,
    /// The tapped layer to explain: block2 (14×14) or block3 (7×7).
    #[arg(long, default_value = "block2")]
    layer: String,
    /// burn-train's Learner, or a hand-written loop.
    #[arg(long, value_enum, default_value_t = TrainingLoop::Learner)]
    training_loop: TrainingLoop,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Backend: flex (CPU), ndarray, wgpu.
    #[arg(long, default_value = DEFAULT_DEVICE)]
    device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TrainingLoop {
    /// burn-train's `SupervisedTraining` with an explaining checkpointer.
    Learner,
    /// A plain loop over batches with Adam.
    HandWritten,
}

/// conv → relu → pool → conv → relu → tap `block2` (14×14) → pool → conv → relu → tap `block3`
/// (7×7) → linear.
#[derive(Module, Debug)]
struct FashionCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    pool: MaxPool2d,
    block2: LayerTap,
    block3: LayerTap,
    head: Linear,
}

impl FashionCnn {
    fn new(device: &Device) -> Self {
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Self {
            conv1: conv(1, 16),
            conv2: conv(16, 32),
            conv3: conv(32, 64),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            block2: LayerTap::new("block2"),
            block3: LayerTap::new("block3"),
            head: LinearConfig::new(64 * 7 * 7, FASHION_MNIST_CLASSES.len()).init(device),
        }
    }

    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images)));
        let x = self.block2.forward(relu(self.conv2.forward(x)));
        let x = self.block3.forward(relu(self.conv3.forward(self.pool.forward(x))));
        self.head.forward(x.flatten::<2>(1, 3))
    }

    fn classification(&self, batch: FashionBatch) -> ClassificationOutput {
        let output = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }
}

impl ImageClassifier for FashionCnn {
    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl TrainStep for FashionCnn {
    type Input = FashionBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: FashionBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for FashionCnn {
    type Input = FashionBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: FashionBatch) -> ClassificationOutput {
        self.classification(batch)
    }
}

/// Fashion-MNIST's pixel mean and standard deviation (of the training split, in [0, 1]).
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

#[derive(Debug, Clone)]
struct FashionItem {
    pixels: Vec<u8>,
    label: u8,
}

#[derive(Debug, Clone)]
struct FashionBatch {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
}

#[derive(Debug, Clone, Default)]
struct FashionBatcher;

impl Batcher<FashionItem, FashionBatch> for FashionBatcher {
    fn batch(&self, items: Vec<FashionItem>, device: &Device) -> FashionBatch {
        let pixels: Vec<u8> = items.iter().flat_map(|item| item.pixels.iter().copied()).collect();
        let labels: Vec<i64> = items.iter().map(|item| i64::from(item.label)).collect();
        FashionBatch {
            images: normalised(&pixels, items.len(), device),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

/// `[count, 1, 28, 28]` network inputs from raw pixels.
fn normalised(pixels: &[u8], count: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = pixels.iter().map(|&p| (f32::from(p) / 255.0 - MEAN) / STD).collect();
    Tensor::from_data(TensorData::new(values, [count, 1, 28, 28]), device)
}

fn items(split: &LabelledImages) -> Vec<FashionItem> {
    (0..split.labels.len())
        .map(|i| FashionItem {
            pixels: split.images.image(i).to_vec(),
            label: split.labels[i],
        })
        .collect()
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.epochs == 0 {
        return Err("--epochs must be at least 1".into());
    }
    if args.train_limit == 0 || args.test_limit == 0 || args.batch_size == 0 {
        return Err("--train-limit, --test-limit and --batch-size must be at least 1".into());
    }
    if same_folder(&args.out_dir, &args.data) {
        return Err(format!(
            "--out-dir {} is the data folder; choose another folder for the sheets",
            args.out_dir.display()
        ));
    }
    let device = open_device(&args.device).map_err(|e| e.to_string())?.device;
    let data = FashionMnist::load(&args.data).map_err(|e| e.to_string())?;
    let validation = if args.validation.is_empty() {
        (0..FASHION_MNIST_CLASSES.len())
            .filter_map(|class| data.test.labels.iter().position(|&l| usize::from(l) == class))
            .collect()
    } else {
        args.validation.clone()
    };
    if let Some(&bad) = validation.iter().find(|&&i| i >= data.test.labels.len()) {
        return Err(format!(
            "--validation index {bad} is out of range: the test split has {} images (0–{})",
            data.test.labels.len(),
            data.test.labels.len() - 1
        ));
    }
    if !["block2", "block3"].contains(&args.layer.as_str()) {
        return Err(format!(
            "unknown --layer {}; the model's taps are block2 and block3",
            args.layer
        ));
    }
    let train = data.train.clone().truncated(args.train_limit);
    let test = data.test.clone().truncated(args.test_limit);
    let explanations = Arc::new(explanations(&args, &data.test, &validation)?);
    println!(
        "training on {} images, testing on {}, explaining {} test images with {} into {}",
        train.labels.len(),
        test.labels.len(),
        validation.len(),
        args.method.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
        args.out_dir.display()
    );

    device.seed(args.seed);
    let started = Instant::now();
    let epoch_seconds = match args.training_loop {
        TrainingLoop::Learner => train_with_learner(&args, &device, &train, &test, explanations.clone())?,
        TrainingLoop::HandWritten => train_by_hand(&args, &device, &train, &test, &explanations)?,
    };
    let records = explanations.records();
    let explaining: f64 = records.iter().map(|r| r.seconds).sum();
    let training: f64 = epoch_seconds.iter().sum();
    for (record, seconds) in records.iter().zip(&epoch_seconds) {
        println!(
            "{}: epoch {seconds:.2} s, explaining {:.3} s ({:.2} % of the epoch), {} of {} explained images right",
            record.stage,
            record.seconds,
            100.0 * record.seconds / seconds,
            record.correct,
            record.predictions.len()
        );
    }
    println!(
        "explaining cost {explaining:.3} s of {training:.2} s of training ({:.2} %); {:.1} s in all",
        100.0 * explaining / training,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", args.out_dir.join("index.html").display());
    Ok(())
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn explanations(args: &Args, test: &LabelledImages, validation: &[usize]) -> Result<TrainingExplanations, String> {
    let pixels: Vec<u8> = validation
        .iter()
        .flat_map(|&i| test.images.image(i).iter().copied())
        .collect();
    let pictures = validation
        .iter()
        .map(|&i| {
            let image = test.images.image(i);
            RgbImage::from_fn(28, 28, |x, y| {
                let value = image[(y * 28 + x) as usize];
                Rgb([value; 3])
            })
        })
        .collect();
    let labels = validation.iter().map(|&i| usize::from(test.labels[i])).collect();
    let inputs = normalised(&pixels, validation.len(), &Device::flex());
    let classes = FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
    let mut explanations =
        TrainingExplanations::new(&args.out_dir, classes, inputs, pictures, labels).map_err(|e| e.to_string())?;
    for &method in &args.method {
        explanations = explanations.column(
            format!("{method} {}", args.layer),
            Explainer::from(method).layer(args.layer.as_str()),
        );
    }
    Ok(explanations)
}

/// burn-train's Learner; the checkpointer explains each epoch, the metric logger prints the
/// test accuracy. Returns each epoch's wall time.
fn train_with_learner(
    args: &Args,
    device: &Device,
    train: &LabelledImages,
    test: &LabelledImages,
    explanations: Arc<TrainingExplanations>,
) -> Result<Vec<f64>, String> {
    let loader = |split: &LabelledImages| {
        DataLoaderBuilder::new(FashionBatcher)
            .batch_size(args.batch_size)
            .shuffle(args.seed)
            .build(InMemDataset::new(items(split)))
    };
    let artifacts = args.out_dir.join("burn-train");
    let checkpoints = artifacts.join("checkpoint");
    let model = FashionCnn::new(&device.clone().autodiff());
    let template = model.valid();
    let epoch_ends = Arc::new(Mutex::new(vec![Instant::now()]));
    let facts = ExplanationFacts::new(explanations.clone()).on_epoch({
        let epoch_ends = epoch_ends.clone();
        move |epoch, metrics| {
            epoch_ends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Instant::now());
            if let Some((_, accuracy)) = metrics.iter().find(|(name, _)| name == "Accuracy") {
                // burn-train's accuracy is a percentage.
                println!("epoch {epoch}: test accuracy: {:.4}", accuracy / 100.0);
            }
        }
    });
    let training = SupervisedTraining::new(&artifacts, loader(train), loader(test))
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        // burn-train's own metric files, which a logger given here would otherwise replace.
        .with_metric_logger(FileMetricLogger::new(&artifacts))
        .with_metric_logger(facts)
        .renderer(Box::new(SilentRenderer))
        .with_custom_checkpointers(
            ExplainingCheckpointer::new(FileCheckpointer::new(&checkpoints, "model"), template, explanations),
            FileCheckpointer::new(&checkpoints, "optim"),
            FileCheckpointer::new(&checkpoints, "scheduler"),
        )
        .num_epochs(args.epochs);
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), args.learning_rate));
    drop(result);
    let ends = epoch_ends.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if ends.len() != args.epochs + 1 {
        return Err(format!(
            "training stopped after {} of {} epochs (see {})",
            ends.len() - 1,
            args.epochs,
            artifacts.join("experiment.log").display()
        ));
    }
    Ok(ends.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect())
}

/// A hand-written loop: Adam over shuffled batches, the test accuracy and the explanations after
/// each epoch, with the model still on the autodiff device.
fn train_by_hand(
    args: &Args,
    device: &Device,
    train: &LabelledImages,
    test: &LabelledImages,
    explanations: &TrainingExplanations,
) -> Result<Vec<f64>, String> {
    let autodiff = device.clone().autodiff();
    let mut model = FashionCnn::new(&autodiff);
    let mut optimizer = AdamConfig::new().init();
    let train_loader = DataLoaderBuilder::new(FashionBatcher)
        .batch_size(args.batch_size)
        .shuffle(args.seed)
        .build(InMemDataset::new(items(train)));
    let train_loader = train_loader.to_device(&autodiff);
    let mut epoch_seconds = Vec::with_capacity(args.epochs);
    for epoch in 1..=args.epochs {
        let started = Instant::now();
        for batch in train_loader.iter() {
            let batch = batch.map_err(|e| format!("reading a training batch: {e}"))?;
            let output = model.classification(batch);
            let gradients = GradientsParams::from_grads(output.loss.backward(), &model);
            model = optimizer.step(args.learning_rate, model, gradients);
        }
        let accuracy = accuracy(&model.valid(), test, args.batch_size, device);
        println!("epoch {epoch}: test accuracy: {accuracy:.4}");
        let stage = Stage::Epoch(epoch);
        explanations
            .record_fact(stage, "test accuracy", format!("{accuracy:.4}"))
            .map_err(|e| e.to_string())?;
        let trained = started.elapsed().as_secs_f64();
        // The model as it trains, on the autodiff device: the explanation leaves it untouched.
        let record = explanations.explain(stage, &model).map_err(|e| e.to_string())?;
        epoch_seconds.push(trained + record.seconds);
    }
    Ok(epoch_seconds)
}

fn accuracy(model: &FashionCnn, test: &LabelledImages, batch_size: usize, device: &Device) -> f64 {
    let mut correct = 0usize;
    let count = test.labels.len();
    let pixels_per_image = test.images.height * test.images.width;
    for start in (0..count).step_by(batch_size) {
        let end = (start + batch_size).min(count);
        let pixels = &test.images.pixels[start * pixels_per_image..end * pixels_per_image];
        let predicted = model.forward(normalised(pixels, end - start, device)).argmax(1);
        let predicted = predicted.try_into_vec_as::<i64>().unwrap_or_default();
        correct += predicted
            .iter()
            .zip(&test.labels[start..end])
            .filter(|(p, l)| **p == i64::from(**l))
            .count();
    }
    correct as f64 / count as f64
}
