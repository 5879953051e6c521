//! Small Burn CNNs with known closed forms, shared by the engine tests.
#![allow(dead_code)]

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorData;
use ember_core::{CamModel, LayerInfo, LayerTap, Layout};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

pub const CLASSES: usize = 5;
pub const CHANNELS: usize = 4;
pub const SIZE: usize = 8;

pub fn device() -> Device {
    Device::flex()
}

/// Random values from a generator of the test's own: the device's generator is shared by the
/// tests that run in parallel, so seeding it does not make a test's values its own.
pub struct Values(Xoshiro256PlusPlus);

impl Values {
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Standard normal values.
    pub fn normal<const D: usize>(&mut self, shape: [usize; D]) -> Tensor<D> {
        let values = (0..shape.iter().product())
            .map(|_| StandardNormal.sample(&mut self.0))
            .collect::<Vec<f32>>();
        Tensor::from_data(TensorData::new(values, shape), &device())
    }

    /// Uniform in `[-bound, bound)`.
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Tensor<D> {
        let values = (0..shape.iter().product())
            .map(|_| self.0.random_range(-bound..bound))
            .collect::<Vec<f32>>();
        Tensor::from_data(TensorData::new(values, shape), &device())
    }

    /// A 3×3 "same" convolution, Kaiming-uniform as Burn initializes it.
    fn conv(&mut self, from: usize, to: usize) -> Conv2d {
        let mut conv = Conv2dConfig::new([from, to], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init(&device());
        let bound = 1.0 / ((from * 9) as f32).sqrt();
        conv.weight = Param::from_tensor(self.uniform([to, from, 3, 3], bound));
        conv.bias = Some(Param::from_tensor(self.uniform([to], bound)));
        conv
    }

    fn linear(&mut self, from: usize, to: usize) -> Linear {
        let mut linear = LinearConfig::new(from, to).init(&device());
        let bound = 1.0 / (from as f32).sqrt();
        linear.weight = Param::from_tensor(self.uniform([from, to], bound));
        linear.bias = Some(Param::from_tensor(self.uniform([to], bound)));
        linear
    }
}

pub fn input(batch: usize, seed: u64) -> Tensor<4> {
    Values::new(seed).normal([batch, 3, SIZE, SIZE])
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

/// conv → relu → tap `features` → global average pool → linear: the CAM architecture.
#[derive(Module, Debug)]
pub struct GapNet {
    pub conv: Conv2d,
    pub features: LayerTap,
    pub head: Linear,
}

impl GapNet {
    pub fn new(seed: u64) -> Self {
        let mut values = Values::new(seed);
        Self {
            conv: values.conv(3, CHANNELS),
            features: LayerTap::new("features"),
            head: values.linear(CHANNELS, CLASSES),
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
        let mut values = Values::new(seed);
        Self {
            conv: values.conv(3, CHANNELS),
            features: LayerTap::new("features"),
            head: values.linear(CHANNELS * SIZE * SIZE, CLASSES),
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
        let mut values = Values::new(seed);
        Self {
            conv1: values.conv(3, CHANNELS),
            block1: LayerTap::new("block1"),
            conv2: values.conv(CHANNELS, CHANNELS),
            block2: LayerTap::new("block2"),
            head: values.linear(CHANNELS, CLASSES),
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
