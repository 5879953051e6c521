//! A small tapped CNN, synthetic labelled images and a training step, shared by the tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ember_core::LayerTap;
use ember_train::ImageClassifier;
use image::{Rgb, RgbImage};

pub const CLASSES: usize = 3;
pub const SIZE: usize = 12;

/// conv → relu → tap `features` → conv → relu → flatten → linear.
#[derive(Module, Debug)]
pub struct SmallNet {
    pub conv1: Conv2d,
    pub features: LayerTap,
    pub conv2: Conv2d,
    pub head: Linear,
}

impl SmallNet {
    pub fn new(device: &Device) -> Self {
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Self {
            conv1: conv(1, 8),
            features: LayerTap::new("features"),
            conv2: conv(8, 8),
            head: LinearConfig::new(8 * SIZE * SIZE, CLASSES).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.features.forward(relu(self.conv1.forward(images)));
        self.head.forward(relu(self.conv2.forward(x)).flatten::<2>(1, 3))
    }

    pub fn loss(&self, images: Tensor<4>, targets: Tensor<1, Int>) -> Tensor<1> {
        let output = self.forward(images);
        CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output, targets)
    }
}

impl ImageClassifier for SmallNet {
    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

/// `count` pseudo-random images `[count, 1, SIZE, SIZE]` in [-1, 1) and labels, the same for the
/// same `seed` whatever else runs (no global generator: tests run in parallel threads).
pub fn images(count: usize, seed: u64, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let values: Vec<f32> = (0..count * SIZE * SIZE)
        .map(|i| {
            let hash = (i as u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            (hash >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let images = Tensor::from_data(TensorData::new(values, [count, 1, SIZE, SIZE]), device);
    let labels: Vec<i64> = (0..count).map(|i| (i % CLASSES) as i64).collect();
    (images, Tensor::from_data(TensorData::new(labels, [count]), device))
}

/// Grey pictures of the inputs' size, for sheets.
pub fn pictures(count: usize) -> Vec<RgbImage> {
    (0..count)
        .map(|i| RgbImage::from_pixel(SIZE as u32, SIZE as u32, Rgb([(40 * i % 256) as u8; 3])))
        .collect()
}

pub fn class_names() -> Vec<String> {
    (0..CLASSES).map(|c| format!("class {c}")).collect()
}

/// One optimizer step on `images`.
pub fn step(model: SmallNet, optimizer: &mut ModuleOptimizer, images: Tensor<4>, targets: Tensor<1, Int>) -> SmallNet {
    let gradients = GradientsParams::from_grads(model.loss(images, targets).backward(), &model);
    optimizer.step(1e-2, model, gradients)
}

/// Every parameter's values, in module order.
pub fn parameters(model: &SmallNet) -> Vec<Vec<f32>> {
    let mut tensors: Vec<Tensor<1>> = vec![
        model.conv1.weight.val().flatten(0, 3),
        model.conv2.weight.val().flatten(0, 3),
        model.head.weight.val().flatten(0, 1),
    ];
    tensors.extend(
        [&model.conv1.bias, &model.conv2.bias, &model.head.bias]
            .into_iter()
            .flatten()
            .map(|b| b.val()),
    );
    tensors
        .into_iter()
        .map(|t| t.inner().try_into_vec_as::<f32>().expect("readable parameter"))
        .collect()
}

/// A fresh folder for one test's outputs.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
