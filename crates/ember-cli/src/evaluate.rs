//! `ember evaluate`: faithfulness metrics for several methods and rectifiers on the same inputs.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Tensor;
use ember_core::limits::read_regular_file;
use ember_core::metrics::{
    Baseline, DeletionInsertion, Metric, NoisyLinearImputer, PointingGame, Road, average_drop, confidence_change,
    drop_in_confidence, increase_in_confidence, pointing_game,
};
use ember_core::{ClassProbability, Method, Rectifier, Target, Vocabulary, to_host};
use ember_runtime::{FinalActivation, ScoreSource};
use ember_vision::{Written, check_outputs};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::{BaselineKind, EvaluateArgs, MetricScore};
use crate::session::{self, Loaded, RunTarget};

/// Boxes files are small; a larger one is refused before it is read.
const MAX_BOXES_BYTES: u64 = 64 << 20;

/// The values of one (method, rectifier, metric), image by image, and the explained layers.
struct Row {
    layers: Vec<String>,
    values: Vec<f32>,
}

/// Mean deletion and insertion curves of one (method, rectifier), summed over images.
struct CurveSums {
    fractions: Vec<f32>,
    deletion: Vec<f64>,
    insertion: Vec<f64>,
    images: usize,
}

pub fn evaluate(args: EvaluateArgs) -> Result<(), Failure> {
    let wants = |metric: Metric| args.metrics.contains(&metric);
    if args.steps == 0 && (wants(Metric::Deletion) || wants(Metric::Insertion)) {
        return Err(Failure::usage("--steps must be at least 1"));
    }
    if wants(Metric::PointingGame) && args.boxes.is_none() {
        return Err(Failure::usage("the pointing game needs --boxes FILE.json"));
    }
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err(Failure::usage("--tolerance must be a number of pixels ≥ 0"));
    }
    let mut listed = session::list(&args.input)?;
    if let Some(boxes) = &args.boxes {
        listed.read.files.push(("boxes", boxes.clone()));
    }
    let mut written = Vec::new();
    written.extend(args.json.iter().map(|p| Written::new("--json", p)));
    written.extend(args.chart.iter().map(|p| Written::new("--chart", p)));
    check_outputs(&listed.read, &written, &[]).map_err(|e| Failure::usage(e.to_string()))?;
    let sources = std::mem::take(&mut listed.sources);
    let boxes = match &args.boxes {
        Some(path) => Some(read_boxes(path, sources.iter().map(|s| s.name()))?),
        None => None,
    };
    let Loaded {
        model, target, decoder, ..
    } = listed.load(&args.input, false)?;
    let RunTarget::Class(target) = target else {
        return Err(Failure::Input("`ember evaluate` scores class outputs only".into()));
    };
    let probability = ClassProbability(target.clone());
    // Probabilities: a softmax of the logits, unless the model's output already is them.
    let scored: &(dyn Target<Tensor<2>> + Sync) = match (
        args.metric_score,
        model.final_activation(),
        model.score_source(),
    ) {
        (MetricScore::Logit, _, _) => &target,
        (_, Some(FinalActivation::Softmax | FinalActivation::Sigmoid), ScoreSource::Output) => &target,
        (_, Some(FinalActivation::Sigmoid), ScoreSource::Logits) => {
            return Err(Failure::usage(
                "this model ends in a sigmoid over one logit: score its probability with --score output, or the logit \
                 with --metric-score logit",
            ));
        }
        (MetricScore::Probability, _, _) => &probability,
    };
    let deletion = DeletionInsertion {
        steps: args.steps,
        baseline: match args.baseline {
            BaselineKind::Zeros => Baseline::Zeros,
            BaselineKind::Mean => Baseline::Mean,
            BaselineKind::Blur => Baseline::Blur,
        },
        batch: None,
    };
    let road = Road {
        imputer: NoisyLinearImputer {
            seed: args.seed,
            ..NoisyLinearImputer::default()
        },
        ..Road::default()
    };

    let combinations: Vec<(Method, Rectifier)> = args
        .variants
        .methods
        .iter()
        .flat_map(|&m| args.variants.rectifiers.iter().map(move |&r| (m, r)))
        .collect();
    let batch_size = model.fixed_batch().unwrap_or(args.input.batch_size);
    let batches = sources.len().div_ceil(batch_size);
    let progress = ProgressBar::new((batches * combinations.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} explanations  {elapsed} (eta {eta})  {msg}")
            .map_err(|e| e.to_string())?,
    );
    let mut rows: BTreeMap<(usize, Metric), Row> = BTreeMap::new();
    let mut curves: BTreeMap<usize, CurveSums> = BTreeMap::new();
    let mut pending = sources.into_iter().peekable();
    while pending.peek().is_some() {
        let mut items = Vec::with_capacity(batch_size);
        for source in pending.by_ref().take(batch_size) {
            items.push(
                decoder
                    .load(source)
                    .map_err(|(file, message)| Failure::Input(format!("{}: {message}", file.display())))?,
            );
        }
        let input = Tensor::cat(items.iter().map(|item| item.tensor.clone()).collect(), 0);
        let [_, _, height, width] = input.dims();
        for (index, &(method, rectifier)) in combinations.iter().enumerate() {
            progress.set_message(format!("{method} ({rectifier})"));
            let explainer = crate::input::explainer(&args.input, method, &args.input.layer).rectifier(rectifier);
            let explanation = explainer.explain(&model, input.clone(), &target)?;
            let layers: Vec<String> = explanation.layers.iter().map(|l| l.layer.clone()).collect();
            let maps = explanation.maps;
            let mut values: Vec<(Metric, Vec<f32>)> = Vec::new();
            let confidence = [
                Metric::DropInConfidence,
                Metric::IncreaseInConfidence,
                Metric::AverageDrop,
            ];
            if confidence.iter().any(|&m| wants(m)) {
                let change = confidence_change(&model, &input, &maps, scored)?;
                values.push((Metric::DropInConfidence, drop_in_confidence(&change)));
                values.push((Metric::IncreaseInConfidence, increase_in_confidence(&change)));
                if wants(Metric::AverageDrop) {
                    values.push((Metric::AverageDrop, average_drop(&change)?));
                }
            }
            if wants(Metric::Deletion) || wants(Metric::Insertion) {
                let result = deletion.evaluate(&model, &input, &maps, scored)?;
                let sums = curves.entry(index).or_insert_with(|| CurveSums {
                    fractions: result.fractions.clone(),
                    deletion: vec![0.0; result.fractions.len()],
                    insertion: vec![0.0; result.fractions.len()],
                    images: 0,
                });
                for (curve, sum) in [
                    (&result.deletion, &mut sums.deletion),
                    (&result.insertion, &mut sums.insertion),
                ] {
                    for image in curve {
                        for (total, value) in sum.iter_mut().zip(image) {
                            *total += f64::from(*value);
                        }
                    }
                }
                sums.images += result.deletion.len();
                values.push((Metric::Deletion, result.deletion_auc));
                values.push((Metric::Insertion, result.insertion_auc));
            }
            if [Metric::RoadMorf, Metric::RoadLerf, Metric::RoadCombined]
                .iter()
                .any(|&m| wants(m))
            {
                let result = road.evaluate(&model, &input, &maps, scored)?;
                values.push((Metric::RoadMorf, result.most_relevant_first));
                values.push((Metric::RoadLerf, result.least_relevant_first));
                values.push((Metric::RoadCombined, result.combined));
            }
            if let Some(boxes) = &boxes {
                let image_boxes: Vec<Vec<[f32; 4]>> = items
                    .iter()
                    .map(|item| {
                        boxes
                            .get(&item.source.to_string_lossy().into_owned())
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                let game = PointingGame {
                    tolerance: args.tolerance,
                };
                values.push((
                    Metric::PointingGame,
                    pointing_game(game, &to_host(&maps)?, [height, width], &image_boxes)?,
                ));
            }
            for (metric, image_values) in values.into_iter().filter(|(m, _)| wants(*m)) {
                let row = rows.entry((index, metric)).or_insert_with(|| Row {
                    layers: layers.clone(),
                    values: Vec::new(),
                });
                row.values.extend(image_values);
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();

    let mut table = Vec::new();
    println!(
        "{:<22} {:<15} {:<24} {:>10}  {:>6}",
        "method", "rectifier", "metric", "mean", "images"
    );
    for &metric in &args.metrics {
        for (index, &(method, rectifier)) in combinations.iter().enumerate() {
            let Some(row) = rows.get(&(index, metric)) else {
                continue;
            };
            let mean = row.values.iter().map(|&v| f64::from(v)).sum::<f64>() / row.values.len().max(1) as f64;
            println!(
                "{:<22} {:<15} {:<24} {:>10.4}  {:>6}",
                method.name(),
                rectifier.name(),
                format!("{metric} ({})", if metric.higher_is_better() { "↑" } else { "↓" }),
                mean,
                row.values.len()
            );
            table.push(json!({
                "method": method.name(),
                "rectifier": rectifier.name(),
                "layer": row.layers.join(" + "),
                "metric": metric.name(),
                "higher_is_better": metric.higher_is_better(),
                "mean": mean,
                "values": row.values,
            }));
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&Value::Array(table)).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("rows written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        if curves.is_empty() {
            return Err(Failure::usage(
                "--chart draws deletion and insertion curves: add them to --metrics",
            ));
        }
        let named: Vec<(String, &CurveSums)> = curves
            .iter()
            .map(|(&index, sums)| {
                let (method, rectifier) = combinations[index];
                (format!("{method} ({rectifier})"), sums)
            })
            .collect();
        draw_curves(path, &named).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        println!("curves drawn in {}", path.display());
    }
    Ok(())
}

/// The boxes of `--boxes`: `{ "<image>": [[x0, y0, x1, y1], …], … }`, one entry per input (by
/// the name the input is listed with), nothing else.
fn read_boxes<'a>(
    path: &Path,
    inputs: impl Iterator<Item = &'a Path>,
) -> Result<BTreeMap<String, Vec<[f32; 4]>>, Failure> {
    let bytes = read_regular_file(path, "boxes", MAX_BOXES_BYTES)?;
    let parsed: BTreeMap<String, Vec<[f32; 4]>> = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Input(format!(
            "{}: not a JSON object of image names to lists of [x0, y0, x1, y1] boxes: {e}",
            path.display()
        ))
    })?;
    let names: Vec<String> = inputs.map(|p| p.to_string_lossy().into_owned()).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !parsed.contains_key(*n)).collect();
    let unknown: Vec<&String> = parsed.keys().filter(|k| !names.contains(k)).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        return Err(Failure::Input(format!(
            "{}: the boxes do not match the inputs (no boxes for {missing:?}; boxes for no input: {unknown:?})",
            path.display()
        )));
    }
    for (name, boxes) in &parsed {
        if let Some(bad) = boxes
            .iter()
            .find(|b| b.iter().any(|v| !v.is_finite()) || b[0] >= b[2] || b[1] >= b[3])
        {
            return Err(Failure::Input(format!(
                "{}: box {bad:?} of {name} is empty or not finite (x0 < x1 and y0 < y1)",
                path.display()
            )));
        }
    }
    Ok(parsed)
}

/// The mean deletion (solid) and insertion (dashed) curves, one colour per method and rectifier.
fn draw_curves(path: &Path, curves: &[(String, &CurveSums)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves
        .iter()
        .flat_map(|(_, c)| {
            c.deletion
                .iter()
                .chain(&c.insertion)
                .map(move |v| v / c.images.max(1) as f64)
        })
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Deletion (solid) and insertion (dashed): mean score",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..top * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("fraction of pixels deleted / inserted, most relevant first")
        .y_desc("score")
        .draw()?;
    for (index, (name, sums)) in curves.iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        let points = |values: &[f64]| -> Vec<(f64, f64)> {
            sums.fractions
                .iter()
                .zip(values)
                .map(|(&x, &y)| (f64::from(x), y / sums.images.max(1) as f64))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(points(&sums.deletion), colour.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(DashedLineSeries::new(
            points(&sums.insertion),
            6,
            4,
            colour.stroke_width(2),
        ))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
