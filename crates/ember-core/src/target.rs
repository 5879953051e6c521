//! What to explain: the score whose gradient drives the map.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor};

use crate::error::{CamError, Result};
use crate::explainer::closest_names;

/// The per-image scores of a target, `[N]`, and the class each image was explained for when
/// the target is a class.
#[derive(Debug, Clone)]
pub struct TargetScores {
    /// One score per image; their sum is differentiated.
    pub scores: Tensor<1>,
    /// The class index per image, for class targets.
    pub classes: Option<Tensor<1, Int>>,
}

/// Turns a model output into one score per image.
///
/// Each image's score must depend only on that image (as for any model in inference mode), so
/// one backward pass of the summed scores gives every image its own gradients.
pub trait Target<O> {
    /// The scores `[N]` for an output of a batch of `batch` images.
    fn scores(&self, output: &O, batch: usize) -> Result<TargetScores>;

    /// The scores `[copies]` of altered copies of one image (perturbation methods re-run the
    /// model on them), whose class the unaltered pass resolved to `class` (for class targets):
    /// the copies are scored for that class, not for their own top class. By default, the
    /// target's scores of the copies' output.
    fn copy_scores(&self, output: &O, copies: usize, class: Option<usize>) -> Result<Tensor<1>> {
        let _ = class;
        Ok(self.scores(output, copies)?.scores)
    }
}

/// A class of a classifier's `[N, classes]` scores, as pytorch-grad-cam's
/// `ClassifierOutputTarget`: the logits, for ONNX models that end in a softmax or sigmoid too
/// (their `CamModel` returns the activation's input unless asked otherwise, see
/// [`crate::ScoreSource`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClassTarget {
    /// Each image's highest-scoring class.
    #[default]
    TopClass,
    /// The same class for every image.
    Class(usize),
    /// One class per image.
    PerImage(Vec<usize>),
}

impl Target<Tensor<2>> for ClassTarget {
    fn scores(&self, output: &Tensor<2>, batch: usize) -> Result<TargetScores> {
        let [rows, num_classes] = output.dims();
        if rows != batch {
            return Err(CamError::BadOutput(format!(
                "expected [{batch}, classes] scores, got [{rows}, {num_classes}]"
            )));
        }
        let device = output.device().inner();
        let classes: Tensor<2, Int> = match self {
            ClassTarget::TopClass => output.clone().inner().argmax(1),
            ClassTarget::Class(class) => {
                check_class(*class, num_classes)?;
                Tensor::<2, Int>::full([batch, 1], *class as i64, &device)
            }
            ClassTarget::PerImage(classes) => {
                if classes.len() != batch {
                    return Err(CamError::BatchMismatch {
                        what: "the list of classes",
                        got: classes.len(),
                        batch,
                    });
                }
                for &class in classes {
                    check_class(class, num_classes)?;
                }
                let indices: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
                Tensor::<1, Int>::from_data(indices.as_slice(), &device).reshape([batch, 1])
            }
        };
        let scores = output.clone().gather(1, classes.clone()).reshape([batch]);
        Ok(TargetScores {
            scores,
            classes: Some(classes.reshape([batch])),
        })
    }

    fn copy_scores(&self, output: &Tensor<2>, copies: usize, class: Option<usize>) -> Result<Tensor<1>> {
        match class {
            Some(class) => ClassTarget::Class(class).scores(output, copies).map(|s| s.scores),
            None => self.scores(output, copies).map(|s| s.scores),
        }
    }
}

/// A class's probability: the softmax over a classifier's `[N, classes]` scores, then the class
/// of [`ClassTarget`] (the same classes, as the softmax keeps the order) — pytorch-grad-cam's
/// `ClassifierOutputSoftmaxTarget`. Faithfulness metrics defined on probabilities (Average Drop)
/// use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassProbability(pub ClassTarget);

impl Target<Tensor<2>> for ClassProbability {
    fn scores(&self, output: &Tensor<2>, batch: usize) -> Result<TargetScores> {
        self.0.scores(&softmax(output.clone(), 1), batch)
    }

    fn copy_scores(&self, output: &Tensor<2>, copies: usize, class: Option<usize>) -> Result<Tensor<1>> {
        self.0.copy_scores(&softmax(output.clone(), 1), copies, class)
    }
}

/// A class given as text: an index, or a name among `labels` (case-insensitive).
///
/// ```
/// let labels = ["cat", "dog"];
/// assert_eq!(ember_core::parse_class("1", &labels), Ok(1));
/// assert_eq!(ember_core::parse_class("Dog", &labels), Ok(1));
/// assert!(ember_core::parse_class("dgo", &labels).unwrap_err().to_string().contains("dog"));
/// ```
pub fn parse_class<S: AsRef<str>>(text: &str, labels: &[S]) -> Result<usize> {
    if let Ok(index) = text.trim().parse::<usize>() {
        return Ok(index);
    }
    if labels.is_empty() {
        return Err(CamError::ClassNameWithoutLabels(text.to_owned()));
    }
    if let Some(index) = labels.iter().position(|l| l.as_ref().eq_ignore_ascii_case(text.trim())) {
        return Ok(index);
    }
    let names: Vec<String> = labels.iter().map(|l| l.as_ref().to_owned()).collect();
    Err(CamError::UnknownClass {
        name: text.to_owned(),
        closest: closest_names(text, &names, 3),
    })
}

fn check_class(class: usize, num_classes: usize) -> Result<()> {
    if class < num_classes {
        Ok(())
    } else {
        Err(CamError::ClassOutOfRange { class, num_classes })
    }
}

/// Any score computed by a closure: a softmax probability, a binary logit, the sum over a
/// region of a segmentation output, …
///
/// ```
/// use burn::tensor::{Tensor, activation::softmax};
/// use ember_core::ScoreFn;
///
/// // Explain the probability of class 3 instead of its logit.
/// let probability = ScoreFn(|logits: &Tensor<2>| {
///     let [batch, _] = logits.dims();
///     softmax(logits.clone(), 1).narrow(1, 3, 1).reshape([batch])
/// });
/// # let _ = probability;
/// ```
pub struct ScoreFn<F>(pub F);

impl<O, F> Target<O> for ScoreFn<F>
where
    F: Fn(&O) -> Tensor<1>,
{
    fn scores(&self, output: &O, batch: usize) -> Result<TargetScores> {
        let scores = (self.0)(output);
        let [len] = scores.dims();
        if len != batch {
            return Err(CamError::BatchMismatch {
                what: "the score closure's output",
                got: len,
                batch,
            });
        }
        Ok(TargetScores { scores, classes: None })
    }
}
