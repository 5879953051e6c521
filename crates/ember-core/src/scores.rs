//! Which output of a model is explained: one rule for every way a model is loaded.
//!
//! Grad-CAM explains the class score *before* the softmax (Selvaraju et al., §3): the softmax
//! couples every class and flattens the gradient of confident predictions. Models exported for
//! deployment often end in one (PaddleClas, Keras, many ONNX zoos) or, for one-logit binary
//! heads, in a sigmoid. ONNX import (`ember-onnx`) finds such a final activation and marks its
//! input with a **score tap**; build-time models (through their generated `CamModel`) and the
//! run-time executor then explain that input by default ([`ScoreSource::Logits`]), or the graph
//! output as it is on request ([`ScoreSource::Output`]). So the same file gives the same map
//! however it is loaded.

use std::cell::RefCell;

use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softmax};

/// Which output the explanation's class scores come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreSource {
    /// The logits: when the graph ends in a Softmax, LogSoftmax, or a Sigmoid over one logit,
    /// the scores are that activation's input, as Grad-CAM prescribes.
    #[default]
    Logits,
    /// The graph output as it is, probabilities included.
    Output,
}

/// The activation a classifier's graph ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalActivation {
    /// The output is probabilities over the classes.
    Softmax,
    /// The output is log-probabilities.
    LogSoftmax,
    /// The output is the probability of one class (a binary head with one logit).
    Sigmoid,
}

impl FinalActivation {
    /// The probabilities the logits stand for (`[N, classes]`).
    pub fn probabilities(self, logits: Tensor<2>) -> Tensor<2> {
        match self {
            FinalActivation::Softmax | FinalActivation::LogSoftmax => softmax(logits, 1),
            FinalActivation::Sigmoid => sigmoid(logits),
        }
    }

    /// `softmax`, `log-softmax`, `sigmoid`.
    pub fn name(self) -> &'static str {
        match self {
            FinalActivation::Softmax => "softmax",
            FinalActivation::LogSoftmax => "log-softmax",
            FinalActivation::Sigmoid => "sigmoid",
        }
    }
}

thread_local! {
    /// While a [`capture_scores`] call runs on this thread: what the score tap saw.
    static CAPTURED: RefCell<Option<Option<Tensor<2>>>> = const { RefCell::new(None) };
}

/// The score tap: identity; records `logits` while [`capture_scores`] runs on this thread.
///
/// ONNX import places it on the input of a final softmax, log-softmax or one-logit sigmoid;
/// generated models call it there.
pub fn score_tap(logits: Tensor<2>) -> Tensor<2> {
    CAPTURED.with(|captured| {
        if let Some(slot) = captured.borrow_mut().as_mut() {
            *slot = Some(logits.clone());
        }
    });
    logits
}

/// Runs `forward` and returns its result with the tensor the score tap saw, if it ran.
pub fn capture_scores<T>(forward: impl FnOnce() -> T) -> (T, Option<Tensor<2>>) {
    /// Disarms the capture however `forward` ends (a panic included).
    struct Armed(Option<Option<Tensor<2>>>);
    impl Drop for Armed {
        fn drop(&mut self) {
            let _ = CAPTURED.try_with(|captured| *captured.borrow_mut() = self.0.take());
        }
    }
    // A capture inside a capture (a model calling another) keeps the outer one's state.
    let outer = CAPTURED.with(|captured| captured.borrow_mut().replace(None));
    let guard = Armed(outer);
    let output = forward();
    let logits = CAPTURED.with(|captured| captured.borrow_mut().as_mut().and_then(Option::take));
    drop(guard);
    (output, logits)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    #[test]
    fn the_score_tap_records_only_while_capturing() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[1.0f32, 2.0]], &device);
        // Outside a capture it is the identity and keeps nothing.
        let _ = score_tap(logits.clone());
        let (output, captured) = capture_scores(|| score_tap(logits.clone()) * 2.0);
        let captured = captured.expect("the tap ran").try_into_vec_as::<f32>().unwrap();
        assert_eq!(captured, [1.0, 2.0]);
        assert_eq!(output.try_into_vec_as::<f32>().unwrap(), [2.0, 4.0]);
        let (_, nothing) = capture_scores(|| logits.clone());
        assert!(nothing.is_none());
    }

    #[test]
    fn probabilities_follow_the_activation() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[0.0f32]], &device);
        let p = FinalActivation::Sigmoid.probabilities(logits.clone());
        assert_eq!(p.try_into_vec_as::<f32>().unwrap(), [0.5]);
        let p = FinalActivation::Softmax.probabilities(logits);
        assert_eq!(p.try_into_vec_as::<f32>().unwrap(), [1.0]);
    }
}
