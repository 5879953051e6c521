//! The two commands: explain inputs in batches, list layers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use ember_core::{CamModel, ClassTarget, Explainer, Explanation, describe_dims, device_named, maps_to_host, to_host};
use ember_runtime::{FinalSoftmax, OnnxModel, ScoreSource};
use ember_vision::{Colormap, Preprocess, heatmap, load_rgb, overlay, write_npy};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{ExplainArgs, LayersArgs, ScoreKind};
use crate::input;

/// `ember layers`: the tappable layers of a model.
pub fn layers(args: &LayersArgs) -> Result<(), String> {
    let model = OnnxModel::load(&args.model, &Device::flex()).map_err(|e| e.to_string())?;
    let default = model.default_layer().unwrap_or_default();
    println!(
        "{}: input {}, {} tappable layers{}",
        args.model.display(),
        describe_dims(model.input_shape()),
        model.layers().len(),
        match model.final_softmax() {
            Some(FinalSoftmax::Softmax) => ", output is a softmax (explained through its logits)",
            Some(FinalSoftmax::LogSoftmax) => ", output is a log-softmax (explained through its logits)",
            None => "",
        }
    );
    println!("{:<56} {:<20} {:<18} output", "layer (ONNX node)", "operator", "shape");
    for layer in model.layers() {
        let shape = describe_dims(&layer.shape);
        let marker = if layer.name == default { "  (default)" } else { "" };
        println!(
            "{:<56} {:<20} {:<18} {}{marker}",
            layer.name,
            layer.op_type,
            shape,
            layer.output.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// One input to explain: a name, the picture the network sees (for overlays) and its tensor.
struct Item {
    source: PathBuf,
    shown: Option<RgbImage>,
    tensor: Tensor<4>,
}

/// Where one explanation's files go.
struct Outputs {
    picture: PathBuf,
    map: Option<PathBuf>,
}

/// `ember explain`.
pub fn explain(args: ExplainArgs) -> Result<(), String> {
    let device = device_named(&args.device).map_err(|e| e.to_string())?;
    let scores = match args.score {
        ScoreKind::Logits => ScoreSource::Logits,
        ScoreKind::Output => ScoreSource::Output,
    };
    let model = OnnxModel::load(&args.model, &device)
        .map_err(|e| e.to_string())?
        .with_scores(scores);
    let labels = input::labels(args.labels.as_deref())?;
    let target = match &args.class {
        Some(text) => ClassTarget::Class(input::class_index(text, &labels)?),
        None => ClassTarget::TopClass,
    };
    let colormap = Colormap::named(args.colormap);
    if !(0.0..=1.0).contains(&args.image_weight) {
        return Err("--image-weight must lie in [0, 1]".into());
    }
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let mut explainer = Explainer::from(args.method).rectifier(args.rectifier);
    for layer in &args.layer {
        explainer = explainer.layer(layer.clone());
    }
    let probabilities_are_scores =
        args.score == ScoreKind::Output && model.final_softmax() == Some(FinalSoftmax::Softmax);
    // Inputs are decoded batch by batch, so a folder of any size needs one batch of memory.
    let (mut recipe, mut tensor) = (None, None);
    let sources: Vec<Source> = match &args.input_npy {
        Some(path) => {
            let loaded = input::tensor_from_npy(path, &device)?;
            let batch = loaded.dims()[0];
            tensor = Some(loaded);
            (0..batch)
                .map(|index| Source::Tensor {
                    name: if batch == 1 {
                        path.clone()
                    } else {
                        PathBuf::from(format!("{}[{index}]", path.display()))
                    },
                    index,
                })
                .collect()
        }
        None => {
            let files = input::image_files(&args.image)?;
            let size = input::input_size(model.input_shape(), args.size.as_deref())?;
            recipe = Some(input::preprocess(&args, size)?);
            files.into_iter().map(Source::Image).collect()
        }
    };
    let run = Run {
        args: &args,
        model: &model,
        explainer,
        target,
        labels,
        colormap,
        probabilities_are_scores,
        recipe,
        tensor,
        device,
    };
    // A folder is a batch job even when it holds one image: its output goes to --out-dir.
    let one_file = sources.len() == 1 && !args.image.iter().any(|p| p.is_dir());
    if one_file {
        run.single(sources.into_iter().next().expect("one input"))
    } else {
        run.many(sources)
    }
}

/// An input before decoding.
enum Source {
    /// A photo, decoded and pre-processed when its batch comes.
    Image(PathBuf),
    /// One image of the pre-processed tensor.
    Tensor { name: PathBuf, index: usize },
}

impl Source {
    fn name(&self) -> &Path {
        match self {
            Source::Image(file) => file,
            Source::Tensor { name, .. } => name,
        }
    }
}

struct Run<'a> {
    args: &'a ExplainArgs,
    model: &'a OnnxModel,
    explainer: Explainer,
    target: ClassTarget,
    labels: Vec<String>,
    colormap: Colormap,
    probabilities_are_scores: bool,
    /// How photos become tensors (`None` for pre-processed tensors).
    recipe: Option<Preprocess>,
    /// The pre-processed tensor of `--input-npy`.
    tensor: Option<Tensor<4>>,
    device: Device,
}

/// What is reported of one explained image.
struct Report {
    class: usize,
    score: f32,
    probability: f32,
    top5: Vec<(usize, f32)>,
    peak: (usize, usize, f32),
    map: Vec<f32>,
    size: [usize; 2],
}

impl Run<'_> {
    /// The decoded input, or why it cannot be read.
    fn load(&self, source: Source) -> Result<Item, (PathBuf, String)> {
        match (source, &self.recipe, &self.tensor) {
            (Source::Image(file), Some(recipe), _) => {
                let photo = load_rgb(&file).map_err(|e| (file.clone(), e.to_string()))?;
                let (tensor, shown) = recipe.apply(&photo, &self.device);
                Ok(Item {
                    source: file,
                    shown: Some(shown),
                    tensor,
                })
            }
            (Source::Tensor { name, index }, _, Some(tensor)) => Ok(Item {
                source: name,
                shown: None,
                tensor: tensor.clone().narrow(0, index, 1),
            }),
            (source, _, _) => Err((source.name().to_path_buf(), "no pre-processing for this input".into())),
        }
    }

    /// One input: overlay to --out, map to --save-npy, a short report on stdout.
    fn single(&self, source: Source) -> Result<(), String> {
        let item = self.load(source).map_err(|(_, message)| message)?;
        let started = Instant::now();
        let explanation = self
            .explainer
            .explain(self.model, item.tensor.clone(), &self.target)
            .map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        let report = self.reports(&explanation)?.remove(0);
        let outputs = Outputs {
            picture: self.args.out.clone(),
            map: self
                .args
                .save_npy
                .as_ref()
                .map(|path| path.clone().unwrap_or_else(|| self.args.out.with_extension("npy"))),
        };
        self.write(&item, &report, &outputs)?;

        println!(
            "{} on {} ({}):",
            self.args.model.display(),
            item.source.display(),
            self.args.device
        );
        for (class, p) in &report.top5 {
            println!("  {:>5.1}%  {:>4}  {}", 100.0 * p, class, self.label(*class));
        }
        println!(
            "explained class {} {} (score {:.4}) with {} ({}) at {} in {:.2} s",
            report.class,
            self.label(report.class),
            report.score,
            self.args.method,
            self.args.rectifier,
            layer_names(&explanation),
            seconds
        );
        println!("overlay written to {}", outputs.picture.display());
        if let Some(map) = &outputs.map {
            println!("map written to {}", map.display());
        }
        if let Some(summary) = &self.args.summary {
            let entry = self.entry(&item.source, &report, &outputs, seconds, &explanation);
            self.write_summary(summary, vec![entry], seconds)?;
            println!("summary written to {}", summary.display());
        }
        Ok(())
    }

    /// Several inputs: batches with a progress bar, one overlay each, summary.json.
    fn many(&self, sources: Vec<Source>) -> Result<(), String> {
        let out_dir = &self.args.out_dir;
        std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
        let total = sources.len();
        let progress = ProgressBar::new(total as u64);
        progress.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} (eta {eta})  {msg}")
                .map_err(|e| e.to_string())?,
        );
        // Maps go to the folder --save-npy names, or next to the overlays.
        let map_dir = match &self.args.save_npy {
            Some(Some(dir)) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                Some(dir.clone())
            }
            Some(None) => Some(out_dir.clone()),
            None => None,
        };
        let started = Instant::now();
        let mut entries = Vec::with_capacity(total);
        let mut failures = 0;
        let mut names = std::collections::HashSet::new();
        let mut pending = sources.into_iter().peekable();
        // A model exported with a fixed batch size takes batches of exactly that size.
        let batch_size = self.model.fixed_batch().unwrap_or(self.args.batch_size);
        while pending.peek().is_some() {
            let chunk: Vec<Source> = pending.by_ref().take(batch_size).collect();
            let mut batch = Vec::with_capacity(chunk.len());
            for source in chunk {
                progress.set_message(source.name().display().to_string());
                match self.load(source) {
                    Ok(item) => batch.push(item),
                    Err((source, message)) => {
                        failures += 1;
                        progress.inc(1);
                        entries.push(json!({ "image": source, "error": message }));
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let batch_started = Instant::now();
            let input = Tensor::cat(batch.iter().map(|i| i.tensor.clone()).collect(), 0);
            let result = self
                .explainer
                .explain(self.model, input, &self.target)
                .map_err(|e| e.to_string())
                .and_then(|explanation| {
                    let reports = self.reports(&explanation)?;
                    Ok((explanation, reports))
                });
            let seconds = batch_started.elapsed().as_secs_f64() / batch.len() as f64;
            match result {
                Ok((explanation, reports)) => {
                    for (item, report) in batch.iter().zip(&reports) {
                        let stem = unique_stem(&item.source, &mut names);
                        let outputs = Outputs {
                            picture: out_dir.join(format!("{stem}.png")),
                            map: map_dir.as_ref().map(|dir| dir.join(format!("{stem}.npy"))),
                        };
                        self.write(item, report, &outputs)?;
                        entries.push(self.entry(&item.source, report, &outputs, seconds, &explanation));
                    }
                }
                Err(message) => {
                    failures += batch.len();
                    for item in &batch {
                        entries.push(json!({ "image": item.source, "error": message }));
                    }
                }
            }
            progress.inc(batch.len() as u64);
        }
        progress.finish_and_clear();
        let elapsed = started.elapsed().as_secs_f64();
        let summary = self
            .args
            .summary
            .clone()
            .unwrap_or_else(|| out_dir.join("summary.json"));
        self.write_summary(&summary, entries, elapsed)?;
        println!(
            "explained {} of {total} inputs in {elapsed:.2} s; overlays in {}, summary in {}",
            total - failures,
            out_dir.display(),
            summary.display()
        );
        if failures > 0 {
            return Err(format!(
                "{failures} of {total} inputs failed; see {}",
                summary.display()
            ));
        }
        Ok(())
    }

    /// Class, scores and map of every image of an explanation, read back to the host.
    fn reports(&self, explanation: &Explanation<Tensor<2>>) -> Result<Vec<Report>, String> {
        let read = |t: Tensor<2>| to_host(&t).map_err(|e| e.to_string());
        let [batch, classes] = explanation.output.dims();
        let scores = read(explanation.output.clone())?;
        let probabilities = if self.probabilities_are_scores {
            scores.clone()
        } else {
            read(softmax(explanation.output.clone().inner(), 1))?
        };
        let explained: Vec<usize> = match &explanation.classes {
            Some(c) => c
                .clone()
                .try_into_vec_as::<i64>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(|c| c as usize)
                .collect(),
            None => vec![0; batch],
        };
        let [_, height, width] = explanation.maps.dims();
        let maps = maps_to_host(&explanation.maps).map_err(|e| e.to_string())?;
        Ok((0..batch)
            .map(|i| {
                let row = &probabilities[i * classes..(i + 1) * classes];
                let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(5);
                let map = maps[i * height * width..(i + 1) * height * width].to_vec();
                let (index, value) = map
                    .iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (k, v)| if v > best.1 { (k, v) } else { best },
                    );
                let class = explained[i];
                Report {
                    class,
                    score: scores[i * classes + class],
                    probability: row[class],
                    top5: ranked,
                    peak: (index % width, index / width, value),
                    map,
                    size: [height, width],
                }
            })
            .collect())
    }

    fn write(&self, item: &Item, report: &Report, outputs: &Outputs) -> Result<(), String> {
        let [height, width] = report.size;
        let display = self.args.rectifier.display_values(&report.map);
        let picture = match &item.shown {
            Some(shown) => overlay(shown, &display, &self.colormap, self.args.image_weight),
            None => heatmap(&display, height as u32, width as u32, &self.colormap),
        }
        .map_err(|e| e.to_string())?;
        picture
            .save(&outputs.picture)
            .map_err(|e| format!("cannot write {}: {e}", outputs.picture.display()))?;
        if let Some(path) = &outputs.map {
            write_npy(path, &report.map, &[height as u64, width as u64]).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn entry(
        &self,
        source: &Path,
        report: &Report,
        outputs: &Outputs,
        seconds: f64,
        explanation: &Explanation<Tensor<2>>,
    ) -> Value {
        let label = self.labels.get(report.class).cloned();
        json!({
            "image": source,
            "class": report.class,
            "label": label,
            "score": report.score,
            "probability": report.probability,
            "peak": { "x": report.peak.0, "y": report.peak.1, "value": report.peak.2 },
            "map_size": report.size,
            "layers": explanation.layers.iter().map(|l| l.layer.clone()).collect::<Vec<_>>(),
            "overlay": outputs.picture,
            "map": outputs.map,
            "seconds": seconds,
        })
    }

    fn write_summary(&self, path: &Path, images: Vec<Value>, seconds: f64) -> Result<(), String> {
        let summary = json!({
            "model": self.args.model,
            "device": self.args.device,
            "method": self.args.method,
            "rectifier": self.args.rectifier,
            "score": match self.args.score { ScoreKind::Logits => "logits", ScoreKind::Output => "output" },
            "batch_size": self.model.fixed_batch().unwrap_or(self.args.batch_size),
            "seconds": seconds,
            "images": images,
        });
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn label(&self, class: usize) -> String {
        self.labels.get(class).cloned().unwrap_or_default()
    }
}

fn layer_names(explanation: &Explanation<Tensor<2>>) -> String {
    let names: Vec<&str> = explanation.layers.iter().map(|l| l.layer.as_str()).collect();
    names.join(" + ")
}

/// The file stem of `source`, made unique among the outputs of this run.
fn unique_stem(source: &Path, taken: &mut std::collections::HashSet<String>) -> String {
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let mut candidate = stem.clone();
    let mut counter = 1;
    while !taken.insert(candidate.clone()) {
        counter += 1;
        candidate = format!("{stem}-{counter}");
    }
    candidate
}
