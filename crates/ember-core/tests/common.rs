//! Small Burn CNNs with known closed forms, shared by the engine tests.
#![allow(dead_code)]

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use ember_core::{CamModel, LayerInfo, LayerTap, Layout};

pub const CLASSES: usize = 5;
pub const CHANNELS: usize = 4;
pub const SIZE: usize = 8;

pub fn device() -> Device {
    Device::flex()
}

pub fn input(batch: usize, seed: u64) -> Tensor<4> {
    let device = device();
    device.seed(seed);
    Tensor::random([batch, 3, SIZE, SIZE], Distribution::Normal(0.0, 1.0), &device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().try_into_vec_as::<f32>().expect("readable tensor")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn conv(device: &Device, from: usize, to: usize) -> Conv2d {
    Conv2dConfig::new([from, to], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init(device)
}

/// conv → relu → tap `features` → global average pool → linear: the CAM architecture.
#[derive(Module, Debug)]
pub struct GapNet {
    pub conv: Conv2d,
    pub features: LayerTap,
    pub head: Linear,
}

impl GapNet {
    pub fn new(seed: u64) -> Self {
        let device = device();
        device.seed(seed);
        Self {
            conv: conv(&device, 3, CHANNELS),
            features: LayerTap::new("features"),
            head: LinearConfig::new(CHANNELS, CLASSES).init(&device),
        }
    }

    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        burn::tensor::activation::relu(self.conv.forward(x))
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let features = self.features.forward(self.features(x));
        self.head.forward(features.mean_dims(&[2, 3]).flatten::<2>(1, 3))
    }
}

/// conv → relu → tap `features` → flatten → linear: y_c = Σ w_c·A + b_c.
#[derive(Module, Debug)]
pub struct FlattenNet {
    pub conv: Conv2d,
    pub features: LayerTap,
    pub head: Linear,
}

impl FlattenNet {
    pub fn new(seed: u64) -> Self {
        let device = device();
        device.seed(seed);
        Self {
            conv: conv(&device, 3, CHANNELS),
            features: LayerTap::new("features"),
            head: LinearConfig::new(CHANNELS * SIZE * SIZE, CLASSES).init(&device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let features = self
            .features
            .forward(burn::tensor::activation::relu(self.conv.forward(x)));
        self.head.forward(features.flatten::<2>(1, 3))
    }
}

/// Two taps and a smooth (tanh) head, for finite differences and multi-layer aggregation.
#[derive(Module, Debug)]
pub struct DeepNet {
    pub conv1: Conv2d,
    pub block1: LayerTap,
    pub conv2: Conv2d,
    pub block2: LayerTap,
    pub head: Linear,
}

impl DeepNet {
    pub fn new(seed: u64) -> Self {
        let device = device();
        device.seed(seed);
        Self {
            conv1: conv(&device, 3, CHANNELS),
            block1: LayerTap::new("block1"),
            conv2: conv(&device, CHANNELS, CHANNELS),
            block2: LayerTap::new("block2"),
            head: LinearConfig::new(CHANNELS, CLASSES).init(&device),
        }
    }

    pub fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv1.forward(x).tanh()
    }

    /// Everything after `block1`, so scores can be evaluated at perturbed activations.
    pub fn after_block1(&self, block1: Tensor<4>) -> Tensor<2> {
        let block2 = self.block2.forward(self.conv2.forward(block1).tanh());
        self.head.forward(block2.mean_dims(&[2, 3]).flatten::<2>(1, 3))
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.after_block1(self.block1.forward(self.stem(x)))
    }
}

impl CamModel for DeepNet {
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> ember_core::Result<Tensor<2>> {
        Ok(DeepNet::forward(self, input))
    }

    fn layers(&self) -> Vec<LayerInfo> {
        ["block1", "block2", "unused"]
            .into_iter()
            .map(|name| LayerInfo {
                name: name.into(),
                output: None,
                op_type: "Tanh".into(),
                shape: Vec::new(),
                layout: Some(Layout::ChannelsFirst),
            })
            .collect()
    }

    fn default_layer(&self) -> Option<String> {
        Some("block2".into())
    }
}
