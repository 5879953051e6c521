//! The two commands: explain inputs in batches, list layers.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor};
use ember_core::{Adapter, CamModel, ClassTarget, Explainer, Explanation, describe_dims, maps_to_host, to_host};
use ember_runtime::{FinalActivation, OnnxModel, ScoreSource};
use ember_vision::{Colormap, Written, check_outputs, gradient_image, heatmap, overlay, write_npy};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::{ExplainArgs, LayersArgs, ScoreKind};
use crate::input;
use crate::session::{self, Decoder, Item, Loaded, Source};

/// `ember layers`: the tappable layers of a model.
pub fn layers(args: &LayersArgs) -> Result<(), Failure> {
    let model = OnnxModel::load(&args.model, &Device::flex())?;
    let default = model.default_layer().unwrap_or_default();
    println!(
        "{}: input {}, {} tappable layers{}",
        args.model.display(),
        describe_dims(model.input_shape()),
        model.layers().len(),
        match model.final_activation() {
            Some(activation) => format!(", output is a {} (explained through its logits)", activation.name()),
            None => String::new(),
        }
    );
    if let Some(names) = model.class_names() {
        println!(
            "{} class names in the model's metadata ({}, …)",
            names.len(),
            names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
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

/// Where one explanation's files go.
struct Outputs {
    picture: PathBuf,
    map: Option<PathBuf>,
    /// Guided Backpropagation's files, when asked for.
    guided_backprop: Option<GradientFiles>,
    /// Guided Grad-CAM's files, when asked for.
    guided_grad_cam: Option<GradientFiles>,
}

/// An input gradient's raw values and its picture.
struct GradientFiles {
    npy: PathBuf,
    png: PathBuf,
}

/// The two input-gradient outputs: flag, file-name suffix, and the flag's value.
fn gradient_outputs(args: &ExplainArgs) -> [(&'static str, &'static str, &Option<Option<PathBuf>>); 2] {
    [
        ("--save-guided-backprop", "_guided_backprop", &args.save_guided_backprop),
        ("--save-guided-gradcam", "_guided_gradcam", &args.save_guided_gradcam),
    ]
}

/// `dir/<stem><suffix>.<extension>` for the file `path`.
fn beside(path: &Path, suffix: &str, extension: &str) -> PathBuf {
    let mut name = path.file_stem().map_or_else(OsString::new, OsString::from);
    name.push(format!("{suffix}.{extension}"));
    path.with_file_name(name)
}

/// `ember explain`.
pub fn explain(args: ExplainArgs) -> Result<(), Failure> {
    // Arguments first (usage errors, exit 2), then what they name (failed inputs, exit 1).
    if !(0.0..=1.0).contains(&args.image_weight) {
        return Err(Failure::usage("--image-weight must lie in [0, 1]"));
    }
    let mut listed = session::list(&args.input)?;
    let sources = std::mem::take(&mut listed.sources);
    // A folder is a batch job even when it holds one image: its output goes to --out-dir.
    let one_file = sources.len() == 1 && !args.input.image.iter().any(|p| p.is_dir());
    let plan = if one_file {
        single_plan(&args)?
    } else {
        many_plan(&args, &sources)?
    };
    check_outputs(&listed.read, &plan.written, &plan.folders).map_err(|e| Failure::usage(e.to_string()))?;

    let Loaded {
        model,
        labels,
        target,
        decoder,
    } = listed.load(&args.input)?;
    let mut explainer = Explainer::from(args.method)
        .rectifier(args.rectifier)
        .eigen_smooth(args.eigen_smooth)
        .aug_smooth(args.aug_smooth)
        .guided_backprop(args.save_guided_backprop.is_some() || args.save_guided_gradcam.is_some());
    if let Some(copies) = args.input.perturbation_batch_size {
        explainer = explainer.perturbation_batch(copies);
    }
    for layer in &args.input.layer {
        explainer = explainer.layer(layer.clone());
    }
    // What the reported probabilities are, given the scores the explanation returns.
    let probabilities = match (model.final_activation(), model.score_source()) {
        (Some(FinalActivation::Softmax | FinalActivation::Sigmoid), ScoreSource::Output) => Probabilities::Scores,
        (Some(FinalActivation::Sigmoid), ScoreSource::Logits) => Probabilities::Sigmoid,
        _ => Probabilities::Softmax,
    };
    let run = Run {
        args: &args,
        model: &model,
        explainer,
        target,
        labels,
        colormap: Colormap::named(args.colormap),
        probabilities,
        decoder,
        adapter: listed.adapter,
    };
    if one_file {
        let outputs = plan.outputs.into_iter().next().expect("one plan for one input");
        run.single(sources.into_iter().next().expect("one input"), outputs)
    } else {
        run.many(sources.into_iter().zip(plan.outputs).collect(), plan.summary)
    }
}

/// Where a run writes: the files of each input, the summary, and everything as [`Written`]
/// for the collision checks.
struct Plan {
    outputs: Vec<Outputs>,
    summary: Option<PathBuf>,
    written: Vec<Written>,
    folders: Vec<Written>,
}

/// One input: the overlay at --out, the map at --save-npy (default: --out as .npy), the
/// summary where --summary says.
fn single_plan(args: &ExplainArgs) -> Result<Plan, Failure> {
    input::check_picture_path(&args.out, "--out")?;
    let [backprop, grad_cam] = gradient_outputs(args).map(|(_, suffix, flag)| {
        flag.as_ref().map(|path| GradientFiles {
            npy: path.clone().unwrap_or_else(|| beside(&args.out, suffix, "npy")),
            png: beside(&args.out, suffix, "png"),
        })
    });
    let outputs = Outputs {
        picture: args.out.clone(),
        map: args
            .save_npy
            .as_ref()
            .map(|path| path.clone().unwrap_or_else(|| args.out.with_extension("npy"))),
        guided_backprop: backprop,
        guided_grad_cam: grad_cam,
    };
    let mut written = vec![Written::new("--out", &outputs.picture)];
    written.extend(outputs.map.iter().map(|m| Written::new("--save-npy", m)));
    written.extend(gradient_written(&outputs));
    written.extend(args.summary.iter().map(|s| Written::new("--summary", s)));
    Ok(Plan {
        outputs: vec![outputs],
        summary: args.summary.clone(),
        written,
        folders: Vec::new(),
    })
}

/// The input-gradient files of `outputs`, for the collision checks.
fn gradient_written(outputs: &Outputs) -> Vec<Written> {
    let flags = ["--save-guided-backprop", "--save-guided-gradcam"];
    [&outputs.guided_backprop, &outputs.guided_grad_cam]
        .into_iter()
        .zip(flags)
        .filter_map(|(files, flag)| files.as_ref().map(|files| (files, flag)))
        .flat_map(|(files, flag)| [Written::new(flag, &files.npy), Written::new(flag, &files.png)])
        .collect()
}

/// Several inputs: `<stem>.png` in --out-dir, `<stem>.npy` in the --save-npy folder (default
/// --out-dir), summary.json in --out-dir unless --summary says otherwise. Stems keep the file
/// names' bytes (non-UTF-8 ones included) and are made unique.
fn many_plan(args: &ExplainArgs, sources: &[Source]) -> Result<Plan, Failure> {
    let out_dir = &args.out_dir;
    let map_dir = match &args.save_npy {
        Some(Some(dir)) => Some(dir.clone()),
        Some(None) => Some(out_dir.clone()),
        None => None,
    };
    let mut taken = HashSet::new();
    let outputs: Vec<Outputs> = sources
        .iter()
        .map(|source| {
            let stem = unique_stem(source.name(), &mut taken);
            let with = |extension: &str| {
                let mut name = stem.clone();
                name.push(extension);
                name
            };
            let [backprop, grad_cam] = gradient_outputs(args).map(|(_, suffix, flag)| {
                flag.as_ref().map(|dir| GradientFiles {
                    npy: dir.as_ref().unwrap_or(out_dir).join(with(&format!("{suffix}.npy"))),
                    png: out_dir.join(with(&format!("{suffix}.png"))),
                })
            });
            Outputs {
                picture: out_dir.join(with(".png")),
                map: map_dir.as_ref().map(|dir| dir.join(with(".npy"))),
                guided_backprop: backprop,
                guided_grad_cam: grad_cam,
            }
        })
        .collect();
    let summary = args.summary.clone().unwrap_or_else(|| out_dir.join("summary.json"));
    let mut written: Vec<Written> = Vec::with_capacity(2 * outputs.len() + 1);
    for output in &outputs {
        written.push(Written::new("--out-dir", &output.picture));
        written.extend(output.map.iter().map(|m| Written::new("--save-npy", m)));
        written.extend(gradient_written(output));
    }
    written.push(Written::new("--summary", &summary));
    let mut folders = vec![Written::new("--out-dir", out_dir)];
    folders.extend(map_dir.iter().map(|d| Written::new("--save-npy", d)));
    for (flag, _, value) in gradient_outputs(args) {
        folders.extend(value.iter().flatten().map(|d| Written::new(flag, d)));
    }
    Ok(Plan {
        outputs,
        summary: Some(summary),
        written,
        folders,
    })
}

/// How the reported probabilities come from the explained scores.
#[derive(Debug, Clone, Copy)]
enum Probabilities {
    /// The scores are probabilities already (the output of a final softmax or sigmoid).
    Scores,
    /// A softmax over the classes (logits, log-probabilities).
    Softmax,
    /// A sigmoid (the logit of a one-logit binary head).
    Sigmoid,
}

struct Run<'a> {
    args: &'a ExplainArgs,
    model: &'a OnnxModel,
    explainer: Explainer,
    target: ClassTarget,
    labels: Vec<String>,
    colormap: Colormap,
    probabilities: Probabilities,
    decoder: Decoder,
    /// The wgpu adapter, reported with the results.
    adapter: Option<Adapter>,
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
    /// Guided Backpropagation and Guided Grad-CAM `[C, H, W]` and C, when asked for.
    guided: Option<(Vec<f32>, Vec<f32>, usize)>,
}

impl Run<'_> {
    /// One input: overlay to --out, map to --save-npy, a short report on stdout.
    fn single(&self, source: Source, outputs: Outputs) -> Result<(), Failure> {
        let item = self
            .decoder
            .load(source)
            .map_err(|(_, message)| Failure::Input(message))?;
        let started = Instant::now();
        let explanation = self.explainer.explain(self.model, item.tensor.clone(), &self.target)?;
        let seconds = started.elapsed().as_secs_f64();
        let report = self.reports(&explanation)?.remove(0)?;
        self.write(&item, &report, &outputs)?;

        println!(
            "{} on {} ({}):",
            self.args.input.model.display(),
            item.source.display(),
            self.device_label()
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
        for (what, files) in [
            ("Guided Backpropagation", &outputs.guided_backprop),
            ("Guided Grad-CAM", &outputs.guided_grad_cam),
        ] {
            if let Some(files) = files {
                println!("{what} written to {} and {}", files.npy.display(), files.png.display());
            }
        }
        self.software_note();
        if let Some(summary) = &self.args.summary {
            let entry = self.entry(&item.source, &report, &outputs, seconds, &explanation);
            self.write_summary(summary, vec![entry], seconds)?;
            println!("summary written to {}", summary.display());
        }
        Ok(())
    }

    /// Several inputs: batches with a progress bar, one overlay each, summary.json. Every input
    /// gets a row in the summary, with its error if it failed, and the summary is written
    /// whatever failed before it.
    fn many(&self, work: Vec<(Source, Outputs)>, summary: Option<PathBuf>) -> Result<(), Failure> {
        let summary = summary.expect("a batch run has a summary");
        let out_dir = &self.args.out_dir;
        std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
        let folders = [
            &self.args.save_npy,
            &self.args.save_guided_backprop,
            &self.args.save_guided_gradcam,
        ];
        for dir in folders.into_iter().flatten().flatten() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let total = work.len();
        let progress = ProgressBar::new(total as u64);
        progress.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} (eta {eta})  {msg}")
                .map_err(|e| e.to_string())?,
        );
        let started = Instant::now();
        let mut entries = Vec::with_capacity(total);
        let mut failures = 0;
        let failed = |source: &Path, message: &str| json!({ "image": shown_path(source), "error": message });
        let mut pending = work.into_iter().peekable();
        // A model exported with a fixed batch size takes batches of exactly that size.
        let batch_size = self.model.fixed_batch().unwrap_or(self.args.input.batch_size);
        while pending.peek().is_some() {
            let chunk: Vec<(Source, Outputs)> = pending.by_ref().take(batch_size).collect();
            let mut batch = Vec::with_capacity(chunk.len());
            for (source, outputs) in chunk {
                progress.set_message(shown_path(source.name()));
                match self.decoder.load(source) {
                    Ok(item) => batch.push((item, outputs)),
                    Err((source, message)) => {
                        failures += 1;
                        progress.inc(1);
                        entries.push(failed(&source, &message));
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let batch_started = Instant::now();
            let input = Tensor::cat(batch.iter().map(|(item, _)| item.tensor.clone()).collect(), 0);
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
                    for ((item, outputs), report) in batch.iter().zip(reports) {
                        let written = report.and_then(|report| {
                            self.write(item, &report, outputs)?;
                            Ok(self.entry(&item.source, &report, outputs, seconds, &explanation))
                        });
                        match written {
                            Ok(entry) => entries.push(entry),
                            Err(message) => {
                                failures += 1;
                                entries.push(failed(&item.source, &message));
                            }
                        }
                    }
                }
                Err(message) => {
                    failures += batch.len();
                    for (item, _) in &batch {
                        entries.push(failed(&item.source, &message));
                    }
                }
            }
            progress.inc(batch.len() as u64);
        }
        progress.finish_and_clear();
        let elapsed = started.elapsed().as_secs_f64();
        self.write_summary(&summary, entries, elapsed)?;
        println!(
            "explained {} of {total} inputs in {elapsed:.2} s on {}; overlays in {}, summary in {}",
            total - failures,
            self.device_label(),
            out_dir.display(),
            summary.display()
        );
        self.software_note();
        if failures > 0 {
            return Err(Failure::Input(format!(
                "{failures} of {total} inputs failed; see {}",
                summary.display()
            )));
        }
        Ok(())
    }

    /// Class, scores and map of every image of an explanation, read back to the host: one
    /// report per image, or why it cannot be reported (scores or map not finite).
    fn reports(&self, explanation: &Explanation<Tensor<2>>) -> Result<Vec<Result<Report, String>>, String> {
        let read = |t: Tensor<2>| to_host(&t).map_err(|e| e.to_string());
        let [batch, classes] = explanation.output.dims();
        if classes == 0 {
            return Err("the model outputs no class scores".into());
        }
        let scores = read(explanation.output.clone())?;
        let probabilities = match self.probabilities {
            Probabilities::Scores => scores.clone(),
            Probabilities::Softmax => read(softmax(explanation.output.clone().inner(), 1))?,
            Probabilities::Sigmoid => read(sigmoid(explanation.output.clone().inner()))?,
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
        let guided = match (&explanation.guided_backprop, explanation.guided_grad_cam()) {
            (Some(backprop), Some(grad_cam)) => Some((
                backprop.dims()[1],
                to_host(backprop).map_err(|e| e.to_string())?,
                to_host(&grad_cam).map_err(|e| e.to_string())?,
            )),
            _ => None,
        };
        Ok((0..batch)
            .map(|i| {
                let row_scores = &scores[i * classes..(i + 1) * classes];
                let row = &probabilities[i * classes..(i + 1) * classes];
                let map = maps[i * height * width..(i + 1) * height * width].to_vec();
                // NaN or infinite numbers are never reported as results.
                if let Some(bad) = row_scores.iter().chain(row).find(|v| !v.is_finite()) {
                    return Err(format!(
                        "the model's class scores are not finite ({bad}); check the input and the model"
                    ));
                }
                if let Some(bad) = map.iter().find(|v| !v.is_finite()) {
                    return Err(format!("the map is not finite ({bad}); check the input and the model"));
                }
                let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(5);
                let (index, value) = map
                    .iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |best, (k, v)| if v > best.1 { (k, v) } else { best },
                    );
                let class = explained[i];
                let guided = guided.as_ref().map(|(channels, backprop, grad_cam)| {
                    let per_image = channels * height * width;
                    let image = i * per_image..(i + 1) * per_image;
                    (backprop[image.clone()].to_vec(), grad_cam[image].to_vec(), *channels)
                });
                if let Some(bad) = guided
                    .iter()
                    .flat_map(|(b, g, _)| b.iter().chain(g))
                    .find(|v| !v.is_finite())
                {
                    return Err(format!(
                        "the input gradient is not finite ({bad}); check the input and the model"
                    ));
                }
                Ok(Report {
                    class,
                    score: row_scores[class],
                    probability: row[class],
                    top5: ranked,
                    peak: (index % width, index / width, value),
                    map,
                    size: [height, width],
                    guided,
                })
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
        if let Some((backprop, grad_cam, channels)) = &report.guided {
            for (files, values) in [
                (&outputs.guided_backprop, backprop),
                (&outputs.guided_grad_cam, grad_cam),
            ] {
                let Some(files) = files else { continue };
                let shape = [*channels as u64, height as u64, width as u64];
                write_npy(&files.npy, values, &shape).map_err(|e| e.to_string())?;
                gradient_image(values, *channels, height as u32, width as u32)
                    .map_err(|e| e.to_string())?
                    .save(&files.png)
                    .map_err(|e| format!("cannot write {}: {e}", files.png.display()))?;
            }
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
            "image": shown_path(source),
            "class": report.class,
            "label": label,
            "score": report.score,
            "probability": report.probability,
            "peak": { "x": report.peak.0, "y": report.peak.1, "value": report.peak.2 },
            "map_size": report.size,
            "layers": explanation.layers.iter().map(|l| l.layer.clone()).collect::<Vec<_>>(),
            "overlay": shown_path(&outputs.picture),
            "map": outputs.map.as_deref().map(shown_path),
            "guided_backprop": outputs.guided_backprop.as_ref().map(GradientFiles::shown),
            "guided_gradcam": outputs.guided_grad_cam.as_ref().map(GradientFiles::shown),
            "seconds": seconds,
        })
    }

    fn write_summary(&self, path: &Path, images: Vec<Value>, seconds: f64) -> Result<(), String> {
        let summary = json!({
            "model": shown_path(&self.args.input.model),
            "device": self.args.input.device,
            "adapter": self.adapter.as_ref().map(|a| json!({
                "name": a.name, "graphics_api": a.graphics_api, "software": a.software,
            })),
            "method": self.args.method,
            "rectifier": self.args.rectifier,
            "eigen_smooth": self.args.eigen_smooth,
            "aug_smooth": self.args.aug_smooth,
            "score": match self.args.input.score { ScoreKind::Logits => "logits", ScoreKind::Output => "output" },
            "batch_size": self.model.fixed_batch().unwrap_or(self.args.input.batch_size),
            "seconds": seconds,
            "images": images,
        });
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// `flex`, or `wgpu: NVIDIA H200 via Vulkan`.
    fn device_label(&self) -> String {
        match &self.adapter {
            Some(adapter) => format!("{}: {adapter}", self.args.input.device),
            None => self.args.input.device.clone(),
        }
    }

    /// On a software rasteriser the GPU backend runs on the CPU, slower than flex.
    fn software_note(&self) {
        if self.adapter.as_ref().is_some_and(|a| a.software) {
            println!("note: this wgpu adapter is a software rasteriser; --device flex is faster on this machine");
        }
    }

    fn label(&self, class: usize) -> String {
        self.labels.get(class).cloned().unwrap_or_default()
    }
}

impl GradientFiles {
    fn shown(&self) -> Value {
        json!({ "npy": shown_path(&self.npy), "png": shown_path(&self.png) })
    }
}

/// A path as text for the summary and messages (JSON strings are UTF-8: other bytes of a file
/// name are shown as U+FFFD).
fn shown_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn layer_names(explanation: &Explanation<Tensor<2>>) -> String {
    let names: Vec<&str> = explanation.layers.iter().map(|l| l.layer.as_str()).collect();
    names.join(" + ")
}

/// The file stem of `source`, with its bytes as they are, made unique among the outputs of this
/// run (`cat`, `cat-2`, …).
fn unique_stem(source: &Path, taken: &mut HashSet<OsString>) -> OsString {
    let stem = source
        .file_stem()
        .map_or_else(|| OsString::from("input"), OsString::from);
    let mut candidate = stem.clone();
    let mut counter = 1;
    while !taken.insert(candidate.clone()) {
        counter += 1;
        candidate = stem.clone();
        candidate.push(format!("-{counter}"));
    }
    candidate
}
