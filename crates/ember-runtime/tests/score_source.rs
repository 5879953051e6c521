//! The score-source rule on a binary head: a graph ending in a Sigmoid over one logit is
//! explained through that logit (the sigmoid saturates, as a softmax does), and through its
//! probability on request. The model is the hostile corpus's `sigmoid_head.onnx`
//! (`cargo xtask hostile`).

use burn::tensor::{Device, Tensor};
use ember_core::{ClassTarget, Explainer, FinalActivation, GradCam, ScoreSource, to_host};
use ember_runtime::OnnxModel;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/hostile/sigmoid_head.onnx"
);

#[test]
fn a_one_logit_sigmoid_is_explained_through_its_logit() {
    let device = Device::flex();
    let input = Tensor::<4>::full([2, 3, 16, 16], 0.3, &device);
    let logits = OnnxModel::load(FILE, &device).unwrap();
    assert_eq!(logits.final_activation(), Some(FinalActivation::Sigmoid));
    let output = OnnxModel::load(FILE, &device).unwrap().with_scores(ScoreSource::Output);
    let (scores, probabilities) = logits.run(input.clone()).unwrap();
    let (scores, probabilities) = (to_host(&scores).unwrap(), to_host(&probabilities).unwrap());
    for (logit, p) in scores.iter().zip(&probabilities) {
        assert!(
            (1.0 / (1.0 + (-logit).exp()) - p).abs() < 1e-6,
            "{p} is not sigmoid({logit})"
        );
    }
    let explain = |model: &OnnxModel| {
        Explainer::new(GradCam)
            .explain(model, input.clone(), &ClassTarget::Class(0))
            .unwrap()
    };
    assert_eq!(to_host(&explain(&logits).scores).unwrap(), scores);
    assert_eq!(to_host(&explain(&output).scores).unwrap(), probabilities);
}
