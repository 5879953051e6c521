//! Faithfulness metrics against their reference implementations (`cargo xtask metrics`,
//! `xtask/reference/make_metric_fixtures.py`): pytorch-grad-cam 1.5.7's DropInConfidence,
//! IncreaseInConfidence and ROAD, torch-cam 0.5.0's deletion and insertion, on the same stored
//! maps, with logits and with softmax probabilities as scores. Bounds: 1e-4 relative to the
//! largest reference value of a metric (absolute for the 0/1 indicator).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use ember_cam::metrics::{
    Baseline, DeletionInsertion, NoisyLinearImputer, Road, confidence_change, drop_in_confidence,
    increase_in_confidence,
};
use ember_cam::models::mobilenet_v2;
use ember_cam::{CamModel, ClassProbability, ClassTarget, Target, burn};

fn arrays(name: &str) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let file = std::fs::File::open(format!("tests/fixtures/{name}.npz")).unwrap();
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    let names: Vec<String> = npz.array_names().map(str::to_owned).collect();
    names
        .into_iter()
        .map(|key| {
            let array = npz.by_name(&key).unwrap().unwrap();
            let shape = array.shape().iter().map(|&d| d as usize).collect();
            (key, (array.into_vec::<f32>().unwrap(), shape))
        })
        .collect()
}

fn tensor<const D: usize>(arrays: &BTreeMap<String, (Vec<f32>, Vec<usize>)>, key: &str) -> Tensor<D> {
    let (values, shape) = arrays.get(key).unwrap_or_else(|| panic!("no `{key}`"));
    Tensor::from_data(TensorData::new(values.clone(), shape.clone()), &Device::flex())
}

/// The reference's small CNN with the GAP head (as in `reference_parity.rs`, without taps).
#[derive(Module, Debug)]
struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

impl SmallCnn {
    fn load() -> Self {
        let weights = arrays("small_cnn_gap_weights");
        let device = Device::flex();
        let conv = |name: &str, from: usize| {
            let mut conv = Conv2dConfig::new([from, 8], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(&device);
            conv.weight = Param::from_tensor(tensor::<4>(&weights, &format!("{name}.weight")));
            conv.bias = Some(Param::from_tensor(tensor::<1>(&weights, &format!("{name}.bias"))));
            conv
        };
        let mut fc = LinearConfig::new(8, 10).init(&device);
        fc.weight = Param::from_tensor(tensor::<2>(&weights, "fc.weight").transpose());
        fc.bias = Some(Param::from_tensor(tensor::<1>(&weights, "fc.bias")));
        Self {
            conv1: conv("conv1", 3),
            conv2: conv("conv2", 8),
            fc,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        use burn::tensor::activation::relu;
        let x = relu(self.conv2.forward(relu(self.conv1.forward(x))));
        self.fc.forward(x.mean_dims(&[2, 3]).flatten::<2>(1, 3))
    }
}

/// The worst difference of `ours` from `reference`, relative to the reference's largest value
/// (absolute when `absolute`); asserted ≤ 1e-4.
fn check(worst: &mut BTreeMap<String, f32>, what: &str, ours: &[f32], reference: &[f32], absolute: bool) {
    assert_eq!(ours.len(), reference.len(), "{what}: sizes");
    let scale = if absolute {
        1.0
    } else {
        reference
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE)
    };
    let error = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale;
    assert!(error <= 1e-4, "{what}: {ours:?} vs {reference:?} ({error:.2e})");
    let entry = worst.entry(what.rsplit('/').next().unwrap().to_owned()).or_insert(0.0);
    *entry = entry.max(error);
}

fn check_model<M: CamModel<Output = Tensor<2>> + Sync>(
    worst: &mut BTreeMap<String, f32>,
    model: &M,
    input: Tensor<4>,
    prefix: &str,
    with_road: bool,
) {
    let reference = arrays("reference_metrics");
    let maps = tensor::<3>(&reference, &format!("{prefix}/maps"));
    let get = |key: &str| reference.get(&format!("{prefix}/{key}")).unwrap().0.clone();
    let logits = ClassTarget::TopClass;
    let probabilities = ClassProbability(ClassTarget::TopClass);
    let targets: [(&str, &(dyn Target<Tensor<2>> + Sync)); 2] = [("logit", &logits), ("softmax", &probabilities)];
    for (score, target) in targets {
        let change = confidence_change(model, &input, &maps, target).unwrap();
        check(
            worst,
            &format!("{prefix}/{score}/drop_in_confidence"),
            &drop_in_confidence(&change),
            &get(&format!("{score}/drop_in_confidence")),
            false,
        );
        check(
            worst,
            &format!("{prefix}/{score}/increase_in_confidence"),
            &increase_in_confidence(&change),
            &get(&format!("{score}/increase_in_confidence")),
            true,
        );
        // Copies in batches of 7, and (flex's default) one at a time on worker threads.
        let baselines = [("zeros", Baseline::Zeros), ("mean", Baseline::Mean)];
        for ((name, baseline), batch) in baselines.into_iter().flat_map(|b| [(b, Some(7)), (b, None)]) {
            let metric = DeletionInsertion {
                steps: 20,
                baseline,
                batch,
            };
            let curves = metric.evaluate(model, &input, &maps, target).unwrap();
            check(
                worst,
                &format!("{prefix}/{score}/{name}/deletion"),
                &curves.deletion_auc,
                &get(&format!("{score}/deletion/{name}")),
                false,
            );
            check(
                worst,
                &format!("{prefix}/{score}/{name}/insertion"),
                &curves.insertion_auc,
                &get(&format!("{score}/insertion/{name}")),
                false,
            );
        }
        if with_road {
            let road = Road {
                imputer: NoisyLinearImputer { noise: 0.0, seed: 0 },
                ..Road::default()
            };
            let scores = road.evaluate(model, &input, &maps, target).unwrap();
            check(
                worst,
                &format!("{prefix}/{score}/road_morf"),
                &scores.most_relevant_first,
                &get(&format!("{score}/road_morf")),
                false,
            );
            check(
                worst,
                &format!("{prefix}/{score}/road_lerf"),
                &scores.least_relevant_first,
                &get(&format!("{score}/road_lerf")),
                false,
            );
            check(
                worst,
                &format!("{prefix}/{score}/road_combined"),
                &scores.combined,
                &get(&format!("{score}/road_combined")),
                false,
            );
        }
    }
}

#[test]
fn metrics_match_pytorch_grad_cam_and_torch_cam() {
    let mut worst = BTreeMap::new();
    let small = SmallCnn::load();
    let input = tensor::<4>(&arrays("reference_small_cnn_gap"), "input");
    check_model(&mut worst, &|x| small.forward(x), input, "small_cnn_gap", true);
    let mobilenet = mobilenet_v2::Model::from_embedded(&Device::flex());
    let input = tensor::<4>(&arrays("reference_mobilenet_7x7"), "input");
    check_model(&mut worst, &mobilenet, input, "mobilenet_7x7", false);
    println!("metrics vs pytorch-grad-cam / torch-cam, worst relative differences:");
    for (metric, error) in &worst {
        println!("  {metric:<24} {error:.2e}");
    }
}
