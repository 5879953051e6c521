//! The interface between a model and the explainer.

use burn::tensor::Tensor;

use crate::error::{CamError, Result};
use crate::layout::Layout;

/// A tappable layer as a model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The name the layer's tap is addressed by (for ONNX models, the node name).
    pub name: String,
    /// Another name the layer answers to (for ONNX models, the output tensor name).
    pub output: Option<String>,
    /// The operation that produces the layer's output (`Conv`, `Clip`, …).
    pub op_type: String,
    /// The output shape, `None` for dimensions only known at run time (the batch); empty when
    /// unknown.
    pub shape: Vec<Option<usize>>,
    /// Where the output's channels are, `None` when the model cannot tell (the explanation
    /// then asks for [`Explainer::layout`](crate::Explainer::layout)).
    pub layout: Option<Layout>,
}

impl LayerInfo {
    /// Whether `name` addresses this layer (by its name or its output name).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.output.as_deref() == Some(name)
    }
}

/// The layer explained when none is chosen: the last layer that still has a spatial extent
/// (global pooling outputs are 1×1), or the last layer when none has.
pub fn default_layer(layers: &[LayerInfo]) -> Option<String> {
    let is_global = |l: &LayerInfo| {
        let one_by_one = match l.layout {
            Some(Layout::ChannelsLast) => matches!(l.shape.as_slice(), [_, Some(1), Some(1), _]),
            _ => matches!(l.shape.as_slice(), [_, _, Some(1), Some(1)]),
        };
        l.op_type.starts_with("Global") || one_by_one
    };
    layers
        .iter()
        .rev()
        .find(|l| !is_global(l))
        .or(layers.last())
        .map(|l| l.name.clone())
}

/// Checks that `input` is `[N, C, H, W]` with the static dimensions in `chw` (`None` = any).
pub fn check_input_chw(input: &Tensor<4>, chw: &[Option<usize>]) -> Result<()> {
    let dims = input.dims();
    let matches = chw
        .iter()
        .zip(&dims[1..])
        .all(|(expected, got)| expected.is_none_or(|e| e == *got));
    if matches {
        return Ok(());
    }
    let expected: Vec<Option<usize>> = std::iter::once(None).chain(chw.iter().copied()).collect();
    Err(CamError::InputShape {
        expected: describe_dims(&expected),
        got: dims.to_vec(),
    })
}

/// A shape with unknown dimensions, for messages and listings: `[N, 3, ?, ?]` (an unknown first
/// dimension is the batch).
pub fn describe_dims(dims: &[Option<usize>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) => d.to_string(),
            None if i == 0 => "N".into(),
            None => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// A model the explainer can run: a forward pass over an image batch whose layers carry taps.
///
/// Closures `Fn(Tensor<4>) -> O` implement it, so a native Burn module needs no impl:
/// `explainer.explain(&|x| model.forward(x), input, &target)`. Models that know their layers
/// (generated ONNX models) implement it to get name checking, suggestions and a default layer.
pub trait CamModel {
    /// What the forward pass returns (`Tensor<2>` logits for a classifier).
    type Output;

    /// The forward pass. Taps inside it are armed by the explainer.
    ///
    /// Fallible because models interpreted at run time can meet inputs their graph cannot take
    /// (a reshape that does not fit, say); compiled models always return `Ok`.
    fn forward(&self, input: Tensor<4>) -> Result<Self::Output>;

    /// The tappable layers in graph order, if the model knows them.
    fn layers(&self) -> Vec<LayerInfo> {
        Vec::new()
    }

    /// The layer explained when none is chosen.
    fn default_layer(&self) -> Option<String> {
        None
    }

    /// Rejects inputs the model cannot take, with a readable reason.
    fn check_input(&self, _input: &Tensor<4>) -> Result<()> {
        Ok(())
    }
}

/// A model output as the explanation returns it: cut from the autodiff graph the explanation's
/// backward pass consumed, so that it can be used afterwards (in a loss, say) without reaching
/// into that graph. Implemented for tensors, and tuples and vectors of them.
pub trait DetachedOutput {
    /// The same values with a fresh autodiff lineage (no-op without autodiff).
    fn detached(self) -> Self;
}

impl<const D: usize> DetachedOutput for Tensor<D> {
    fn detached(self) -> Self {
        self.detach()
    }
}

impl<A: DetachedOutput, B: DetachedOutput> DetachedOutput for (A, B) {
    fn detached(self) -> Self {
        (self.0.detached(), self.1.detached())
    }
}

impl<A: DetachedOutput, B: DetachedOutput, C: DetachedOutput> DetachedOutput for (A, B, C) {
    fn detached(self) -> Self {
        (self.0.detached(), self.1.detached(), self.2.detached())
    }
}

impl<T: DetachedOutput> DetachedOutput for Vec<T> {
    fn detached(self) -> Self {
        self.into_iter().map(DetachedOutput::detached).collect()
    }
}

impl<F, O> CamModel for F
where
    F: Fn(Tensor<4>) -> O,
{
    type Output = O;

    fn forward(&self, input: Tensor<4>) -> Result<O> {
        Ok(self(input))
    }
}
