//! `ember explain` (one input, or many in batches: overlays or comparison sheets, maps,
//! summary.json, report.html, shards and resumption) and `ember layers`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor};
use ember_core::{
    Adapter, CamModel, Explainer, Explanation, Layout, Method, Rectifier, describe_dims, maps_to_host, to_host,
};
use ember_runtime::{FinalActivation, LoadOptions, OnnxModel, ScoreSource};
use ember_vision::{
    Colormap, Sheet, Written, check_outputs, gradient_image, heatmap, overlay, save_picture, write_npy,
};
use image::RgbImage;
use image::imageops::{self, FilterType};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::Failure;
use crate::cli::{ExplainArgs, LayersArgs, OverlayOn, ScoreKind};
use crate::input;
use crate::jobs::{self, shown_path};
use crate::session::{self, Decoded, Decoder, Loaded, RunTarget, Shown, Source};

/// How often a batch run rewrites its summary, so that an interrupted run can be resumed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// The longest side of the input thumbnails in report.html.
const THUMBNAIL_SIDE: u32 = 320;

/// `ember layers`: the tappable layers of a model.
pub fn layers(args: &LayersArgs) -> Result<(), Failure> {
    let options = LoadOptions {
        input_layout: args.input_layout,
        output: args.output.clone(),
    };
    let model = OnnxModel::load_with(&args.model, &options, &Device::flex())?;
    let default = model.default_layer().unwrap_or_default();
    let input = match model.input_layout() {
        Some(Layout::ChannelsLast) => format!("{} (channels last)", describe_dims(model.graph_input_shape())),
        Some(_) => describe_dims(model.graph_input_shape()),
        None => format!(
            "{} (channels first or last? say with --input-layout)",
            describe_dims(model.graph_input_shape())
        ),
    };
    println!(
        "{}: input {input}, {} tappable layers{}",
        args.model.display(),
        model.layers().len(),
        match model.final_activation() {
            Some(activation) => format!(", output is a {} (explained through its logits)", activation.name()),
            None => String::new(),
        }
    );
    let others: Vec<&String> = model
        .graph_outputs()
        .iter()
        .filter(|name| name.as_str() != model.output_name())
        .collect();
    println!(
        "output `{}` {}{}{}",
        model.output_name(),
        describe_dims(model.output_shape()),
        if model.has_dense_output() {
            ": dense, explained as a --channel summed over --region / --mask"
        } else {
            ": class scores"
        },
        if others.is_empty() {
            String::new()
        } else {
            format!(
                " (other outputs, chosen with --output: {})",
                others.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )
        }
    );
    if let Some(names) = model.class_names() {
        println!(
            "{} class names in the model's metadata ({}, …)",
            names.len(),
            names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "{:<56} {:<20} {:<18} {:<10} output",
        "layer (ONNX node)", "operator", "shape", "layout"
    );
    for layer in model.layers() {
        let shape = describe_dims(&layer.shape);
        let marker = if layer.name == default { "  (default)" } else { "" };
        // Undecided layers are explained once --layout says where their channels are.
        let layout = layer.layout.map_or_else(|| "--layout?".to_owned(), |l| l.to_string());
        println!(
            "{:<56} {:<20} {:<18} {:<10} {}{marker}",
            layer.name,
            layer.op_type,
            shape,
            layout,
            layer.output.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// One explanation asked for: a method with a rectifier at a set of layers (aggregated; empty:
/// the model's default layer).
#[derive(Debug, Clone)]
struct Variant {
    method: Method,
    rectifier: Rectifier,
    layers: Vec<String>,
}

impl Variant {
    /// `_gradcam_relu` (and `_<layer>` when layers are compared), for file names.
    fn suffix(&self, with_layers: bool) -> String {
        let mut suffix = format!("_{}_{}", self.method, self.rectifier);
        if with_layers {
            for layer in &self.layers {
                suffix.push('_');
                suffix.extend(layer.chars().map(|c| {
                    if c.is_ascii_alphanumeric() || "-.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                }));
            }
        }
        suffix
    }
}

/// A sheet row: one method at one set of layers, explained once and rectified each way.
struct Row {
    method: Method,
    layers: Vec<String>,
    explainer: Explainer,
}

/// Every (method, layers) row in the order of the arguments.
fn rows(args: &ExplainArgs) -> Vec<Row> {
    let layer_sets: Vec<Vec<String>> = if args.compare_layers.is_empty() {
        vec![args.input.layer.clone()]
    } else {
        args.compare_layers.iter().map(|l| vec![l.clone()]).collect()
    };
    let mut rows = Vec::new();
    for &method in &args.variants.methods {
        for layers in &layer_sets {
            let explainer = input::explainer(&args.input, method, layers)
                .eigen_smooth(args.eigen_smooth)
                .aug_smooth(args.aug_smooth);
            rows.push(Row {
                method,
                layers: layers.clone(),
                explainer,
            });
        }
    }
    // Guided Backpropagation does not depend on the method: the first row computes it.
    if let Some(first) = rows.first_mut() {
        let guided = args.save_guided_backprop.is_some() || args.save_guided_gradcam.is_some();
        first.explainer = first.explainer.clone().guided_backprop(guided);
    }
    rows
}

/// Every variant: rows × rectifiers, rectifiers fastest.
fn variants(args: &ExplainArgs, rows: &[Row]) -> Vec<Variant> {
    rows.iter()
        .flat_map(|row| {
            args.variants.rectifiers.iter().map(|&rectifier| Variant {
                method: row.method,
                rectifier,
                layers: row.layers.clone(),
            })
        })
        .collect()
}

/// Where one input's files go.
struct Outputs {
    /// The overlay, or the comparison sheet when there are several variants.
    picture: PathBuf,
    /// The map of each variant as .npy, when asked for.
    maps: Vec<PathBuf>,
    /// Guided Backpropagation's files, when asked for.
    guided_backprop: Option<GradientFiles>,
    /// Guided Grad-CAM's files, when asked for.
    guided_grad_cam: Option<GradientFiles>,
    /// The input's thumbnail for report.html.
    thumbnail: Option<PathBuf>,
}

impl Outputs {
    /// Every file, for the collision checks and for `--resume`.
    fn written(&self) -> Vec<Written> {
        let mut written = vec![Written::new("--out", &self.picture)];
        written.extend(self.maps.iter().map(|m| Written::new("--save-npy", m)));
        let flags = ["--save-guided-backprop", "--save-guided-gradcam"];
        for (files, flag) in [&self.guided_backprop, &self.guided_grad_cam].into_iter().zip(flags) {
            if let Some(files) = files {
                written.push(Written::new(flag, &files.npy));
                written.push(Written::new(flag, &files.png));
            }
        }
        written.extend(self.thumbnail.iter().map(|t| Written::new("--report", t)));
        written
    }
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
    // A value listed twice would write two maps to one file.
    let methods: Vec<String> = args.variants.methods.iter().map(Method::to_string).collect();
    let rectifiers: Vec<String> = args.variants.rectifiers.iter().map(Rectifier::to_string).collect();
    for (flag, values) in [
        ("--method", &methods),
        ("--rectifier", &rectifiers),
        ("--compare-layers", &args.compare_layers),
    ] {
        if let Some(twice) = values
            .iter()
            .enumerate()
            .find_map(|(k, v)| values[..k].contains(v).then_some(v))
        {
            return Err(Failure::usage(format!("{flag} lists {twice} twice")));
        }
    }
    let rows = rows(&args);
    let variants = variants(&args, &rows);
    if variants.len() > 1 && args.save_guided_gradcam.is_some() {
        return Err(Failure::usage(format!(
            "--save-guided-gradcam multiplies one map with Guided Backpropagation, but {} maps are asked for \
             (--method × --rectifier × --compare-layers); give one of each",
            variants.len()
        )));
    }
    let mut listed = session::list(&args.input)?;
    let sources = std::mem::take(&mut listed.sources);
    // A folder is a batch job even when it holds one image: its output goes to --out-dir.
    let one_file = sources.len() == 1 && !args.input.image.iter().any(|p| p.is_dir());
    if one_file {
        for (flag, set) in [
            ("--report", args.report),
            ("--shard", args.shard.is_some()),
            ("--resume", args.resume),
        ] {
            if set {
                return Err(Failure::usage(format!(
                    "{flag} is for runs over several images or a folder; this run explains one"
                )));
            }
        }
    }
    let plan = if one_file {
        single_plan(&args, &variants)?
    } else {
        many_plan(&args, &variants, &sources)?
    };
    check_outputs(&listed.read, &plan.written, &plan.folders).map_err(|e| Failure::usage(e.to_string()))?;

    let Loaded {
        model,
        labels,
        target,
        decoder,
    } = listed.load(&args.input, true)?;
    // What the reported probabilities are, given the scores the explanation returns.
    let probabilities = match (model.final_activation(), model.score_source()) {
        (Some(FinalActivation::Softmax | FinalActivation::Sigmoid), ScoreSource::Output) => Probabilities::Scores,
        (Some(FinalActivation::Sigmoid), ScoreSource::Logits) => Probabilities::Sigmoid,
        _ => Probabilities::Softmax,
    };
    let run = Run {
        args: &args,
        model: &model,
        rows,
        variants,
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

/// One input: the overlay (or sheet) at --out, the maps at --save-npy (default: --out as
/// .npy; one per variant), the summary where --summary says.
fn single_plan(args: &ExplainArgs, variants: &[Variant]) -> Result<Plan, Failure> {
    input::check_picture_path(&args.out, "--out")?;
    let [backprop, grad_cam] = gradient_outputs(args).map(|(_, suffix, flag)| {
        flag.as_ref().map(|path| GradientFiles {
            npy: path.clone().unwrap_or_else(|| beside(&args.out, suffix, "npy")),
            png: beside(&args.out, suffix, "png"),
        })
    });
    let maps = match (&args.save_npy, variants) {
        (None, _) => Vec::new(),
        (Some(Some(path)), [_]) => vec![path.clone()],
        (Some(None), [_]) => vec![args.out.with_extension("npy")],
        (Some(Some(path)), _) => {
            return Err(Failure::usage(format!(
                "--save-npy {} names one file, but {} maps are asked for (--method × --rectifier × \
                 --compare-layers); give --save-npy without a file name to get one <out>_<method>_<rectifier>.npy \
                 each",
                path.display(),
                variants.len()
            )));
        }
        (Some(None), _) => {
            let with_layers = !args.compare_layers.is_empty();
            variants
                .iter()
                .map(|v| beside(&args.out, &v.suffix(with_layers), "npy"))
                .collect()
        }
    };
    let outputs = Outputs {
        picture: args.out.clone(),
        maps,
        guided_backprop: backprop,
        guided_grad_cam: grad_cam,
        thumbnail: None,
    };
    let mut written = outputs.written();
    written.extend(args.summary.iter().map(|s| Written::new("--summary", s)));
    Ok(Plan {
        outputs: vec![outputs],
        summary: args.summary.clone(),
        written,
        folders: Vec::new(),
    })
}

/// Several inputs: `<stem>.png` in --out-dir, `<stem>.npy` (or one
/// `<stem>_<method>_<rectifier>.npy` per variant) in the --save-npy folder (default --out-dir),
/// the summary in --out-dir unless --summary says otherwise. Stems keep the file names' bytes
/// (non-UTF-8 ones included) and are made unique over all inputs, shards or not.
fn many_plan(args: &ExplainArgs, variants: &[Variant], sources: &[Source]) -> Result<Plan, Failure> {
    let out_dir = &args.out_dir;
    let map_dir = match &args.save_npy {
        Some(Some(dir)) => Some(dir.clone()),
        Some(None) => Some(out_dir.clone()),
        None => None,
    };
    let with_layers = !args.compare_layers.is_empty();
    let map_suffixes: Vec<String> = match variants {
        [_] => vec![String::new()],
        _ => variants.iter().map(|v| v.suffix(with_layers)).collect(),
    };
    let mut taken = HashSet::new();
    let outputs: Vec<Outputs> = sources
        .iter()
        .map(|source| {
            let stem = unique_stem(source.name(), &mut taken);
            let with = |suffix: &str, extension: &str| {
                let mut name = stem.clone();
                name.push(format!("{suffix}.{extension}"));
                name
            };
            let [backprop, grad_cam] = gradient_outputs(args).map(|(_, suffix, flag)| {
                flag.as_ref().map(|dir| GradientFiles {
                    npy: dir.as_ref().unwrap_or(out_dir).join(with(suffix, "npy")),
                    png: out_dir.join(with(suffix, "png")),
                })
            });
            let photo = matches!(source, Source::Image(_));
            Outputs {
                picture: out_dir.join(with("", "png")),
                maps: map_dir
                    .iter()
                    .flat_map(|dir| map_suffixes.iter().map(|suffix| dir.join(with(suffix, "npy"))))
                    .collect(),
                guided_backprop: backprop,
                guided_grad_cam: grad_cam,
                thumbnail: (args.report && photo).then(|| out_dir.join(with("_input", "jpg"))),
            }
        })
        .collect();
    let summary = args.summary.clone().unwrap_or_else(|| {
        out_dir.join(match args.shard {
            Some(shard) => format!("summary-{}-of-{}.json", shard.index, shard.count),
            None => "summary.json".into(),
        })
    });
    let mut written: Vec<Written> = outputs.iter().flat_map(Outputs::written).collect();
    for written in &mut written {
        if written.flag == "--out" {
            written.flag = "--out-dir";
        }
    }
    written.push(Written::new("--summary", &summary));
    if args.report {
        written.push(Written::new("--report", jobs::report_path(&summary)));
    }
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
    rows: Vec<Row>,
    variants: Vec<Variant>,
    target: RunTarget,
    labels: Vec<String>,
    colormap: Colormap,
    probabilities: Probabilities,
    decoder: Decoder,
    /// The wgpu adapter, reported with the results.
    adapter: Option<Adapter>,
}

/// What is reported of one explained image.
struct Report {
    /// The explained class, or the channel of a dense output.
    class: usize,
    score: f32,
    /// The class's probability (none for dense outputs).
    probability: Option<f32>,
    /// The most probable classes (none for dense outputs).
    top5: Vec<(usize, f32)>,
    /// The final map of each variant, `size`, row-major.
    maps: Vec<Vec<f32>>,
    /// The peak (x, y, value) of each variant's map.
    peaks: Vec<(usize, usize, f32)>,
    size: [usize; 2],
    /// The layers each variant explained (resolved names).
    layers: Vec<Vec<String>>,
    /// Guided Backpropagation and Guided Grad-CAM `[C, H, W]` and C, when asked for.
    guided: Option<(Vec<f32>, Vec<f32>, usize)>,
}

impl Run<'_> {
    /// Every variant's explanation of a batch, in variant order.
    fn explain(&self, input: Tensor<4>) -> Result<Vec<Explanation<Tensor<2>>>, String> {
        let mut explanations = Vec::with_capacity(self.variants.len());
        let rectifiers = &self.args.variants.rectifiers;
        for row in &self.rows {
            let each = match &self.target {
                RunTarget::Class(target) => {
                    row.explainer
                        .explain_each_rectifier(self.model, input.clone(), target, rectifiers)
                }
                RunTarget::Region { target, .. } => {
                    let dense = self.model.dense().ok_or("the model's output is not dense")?;
                    row.explainer
                        .explain_each_rectifier(&dense, input.clone(), target, rectifiers)
                        .map(|each| each.into_iter().map(region_scores).collect())
                }
            }
            .map_err(|e| e.to_string())?;
            explanations.extend(each);
        }
        Ok(explanations)
    }

    /// One input: overlay (or sheet) to --out, maps to --save-npy, a short report on stdout.
    fn single(&self, source: Source, outputs: Outputs) -> Result<(), Failure> {
        let item = self
            .decoder
            .load(source)
            .map_err(|(_, message)| Failure::Input(message))?;
        let started = Instant::now();
        let explanations = self.explain(item.tensor.clone()).map_err(Failure::Input)?;
        let seconds = started.elapsed().as_secs_f64();
        let report = self.reports(&explanations)?.remove(0)?;
        let item = item.into_pictures();
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
        let how = match &self.variants[..] {
            [variant] => format!(
                "with {} ({}) at {}",
                variant.method,
                variant.rectifier,
                report.layers[0].join(" + ")
            ),
            several => format!("{} ways", several.len()),
        };
        println!(
            "explained {} (score {:.4}) {how} in {:.2} s",
            self.explained(report.class),
            report.score,
            seconds
        );
        let what = if self.variants.len() > 1 {
            "comparison sheet"
        } else {
            "overlay"
        };
        println!("{what} written to {}", outputs.picture.display());
        for map in &outputs.maps {
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
            let entry = self.entry(0, &item.source, &report, &outputs, seconds);
            self.write_summary(summary, 1, vec![entry], seconds)?;
            println!("summary written to {}", summary.display());
        }
        Ok(())
    }

    /// Several inputs: batches with a progress bar, one overlay (or sheet) each, the summary
    /// (rewritten every few seconds, so that `--resume` can pick up an interrupted run), and
    /// report.html. Every input of the run's slice gets a row in the summary, with its error if
    /// it failed, and the summary is written whatever failed before it.
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
        let inputs = work.len();
        // This run's slice, each input with its index among all inputs.
        let mut work: Vec<(usize, Source, Outputs)> = work
            .into_iter()
            .enumerate()
            .filter(|(index, _)| self.args.shard.is_none_or(|s| index % s.count == s.index))
            .map(|(index, (source, outputs))| (index, source, outputs))
            .collect();
        let total = work.len();
        // Rows of an earlier run with the same settings whose files are all present.
        let mut entries: BTreeMap<usize, Value> = BTreeMap::new();
        if self.args.resume {
            let names: Vec<(usize, String, Vec<PathBuf>)> = work
                .iter()
                .map(|(index, source, outputs)| {
                    let files = outputs.written().into_iter().map(|w| w.path).collect();
                    (*index, shown_path(source.name()), files)
                })
                .collect();
            entries = jobs::resumable(&summary, &self.settings(), &names)?;
            work.retain(|(index, _, _)| !entries.contains_key(index));
            println!(
                "resuming: {} of {total} inputs were done by an earlier run ({})",
                entries.len(),
                summary.display()
            );
        }
        let progress = ProgressBar::new(work.len() as u64);
        progress.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} (eta {eta})  {msg}")
                .map_err(|e| e.to_string())?,
        );
        let started = Instant::now();
        // Three stages at once: a thread reads and pre-processes the next batch, this thread
        // explains the current one on the device, a thread draws and writes the previous one.
        // The channels hold one batch each, which bounds the memory in flight.
        let batch_size = self.model.fixed_batch().unwrap_or(self.args.input.batch_size);
        let host = self.decoder.host();
        let (decoded_send, decoded) =
            mpsc::sync_channel::<Vec<(usize, Result<Decoded, (PathBuf, String)>, Outputs)>>(1);
        let (explained_send, explained) = mpsc::sync_channel::<Explained>(1);
        let (written_send, written) = mpsc::channel::<(usize, Value)>();
        std::thread::scope(|scope| -> Result<(), Failure> {
            scope.spawn(move || {
                let mut pending = work.into_iter().peekable();
                while pending.peek().is_some() {
                    let chunk: Vec<_> = pending
                        .by_ref()
                        .take(batch_size)
                        .map(|(index, source, outputs)| (index, host.decode(source), outputs))
                        .collect();
                    if decoded_send.send(chunk).is_err() {
                        return;
                    }
                }
            });
            let writer_progress = progress.clone();
            scope.spawn(move || {
                for batch in explained {
                    for (index, item, outputs, report) in batch.images {
                        writer_progress.set_message(shown_path(&item.source));
                        let entry = report
                            .and_then(|report| {
                                self.write(&item, &report, &outputs)?;
                                Ok(self.entry(index, &item.source, &report, &outputs, batch.seconds))
                            })
                            .unwrap_or_else(|message| failed_row(&item.source, &message, index));
                        writer_progress.inc(1);
                        if written_send.send((index, entry)).is_err() {
                            return;
                        }
                    }
                }
            });
            let mut checkpoint = Instant::now();
            for chunk in decoded {
                let mut batch = Vec::with_capacity(chunk.len());
                for (index, decoded, outputs) in chunk {
                    match decoded.and_then(|decoded| self.decoder.finish(decoded)) {
                        Ok(item) => batch.push((index, item, outputs)),
                        Err((source, message)) => {
                            progress.inc(1);
                            entries.insert(index, failed_row(&source, &message, index));
                        }
                    }
                }
                entries.extend(written.try_iter());
                if checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    let so_far = entries.values().cloned().collect();
                    self.write_summary(&summary, inputs, so_far, started.elapsed().as_secs_f64())?;
                    checkpoint = Instant::now();
                }
                if batch.is_empty() {
                    continue;
                }
                let batch_started = Instant::now();
                let input = Tensor::cat(batch.iter().map(|(_, item, _)| item.tensor.clone()).collect(), 0);
                let result = self.explain(input).and_then(|explanations| self.reports(&explanations));
                let seconds = batch_started.elapsed().as_secs_f64() / batch.len() as f64;
                let images = match result {
                    Ok(reports) => batch
                        .into_iter()
                        .zip(reports)
                        .map(|((index, item, outputs), report)| (index, item.into_pictures(), outputs, report))
                        .collect(),
                    Err(message) => batch
                        .into_iter()
                        .map(|(index, item, outputs)| (index, item.into_pictures(), outputs, Err(message.clone())))
                        .collect(),
                };
                if explained_send.send(Explained { images, seconds }).is_err() {
                    break;
                }
            }
            drop(explained_send);
            Ok(())
        })?;
        entries.extend(written.try_iter());
        progress.finish_and_clear();
        let elapsed = started.elapsed().as_secs_f64();
        let failures = entries.values().filter(|e| e.get("error").is_some()).count();
        let entries: Vec<Value> = entries.into_values().collect();
        self.write_summary(&summary, inputs, entries, elapsed)?;
        let slice = match self.args.shard {
            Some(shard) => format!(" (slice {}/{} of {inputs})", shard.index, shard.count),
            None => String::new(),
        };
        println!(
            "explained {} of {total} inputs{slice} in {elapsed:.2} s on {}; {} in {}, summary in {}",
            total - failures,
            self.device_label(),
            if self.variants.len() > 1 {
                "comparison sheets"
            } else {
                "overlays"
            },
            out_dir.display(),
            summary.display()
        );
        if self.args.report {
            let report = jobs::write_report(&summary)?;
            println!("report written to {}", report.display());
        }
        self.software_note();
        if failures > 0 {
            return Err(Failure::Input(format!(
                "{failures} of {total} inputs failed; see {}",
                summary.display()
            )));
        }
        Ok(())
    }

    /// Class, scores and maps of every image of a batch's explanations (one per variant), read
    /// back to the host: one report per image, or why it cannot be reported (scores or maps not
    /// finite).
    fn reports(&self, explanations: &[Explanation<Tensor<2>>]) -> Result<Vec<Result<Report, String>>, String> {
        let read = |t: Tensor<2>| to_host(&t).map_err(|e| e.to_string());
        let first = explanations.first().ok_or("no explanation was asked for")?;
        let [batch, classes] = first.output.dims();
        if classes == 0 {
            return Err("the model outputs no class scores".into());
        }
        let scores = read(first.output.clone())?;
        let probabilities = match self.probabilities {
            Probabilities::Scores => scores.clone(),
            Probabilities::Softmax => read(softmax(first.output.clone().inner(), 1))?,
            Probabilities::Sigmoid => read(sigmoid(first.output.clone().inner()))?,
        };
        let region_channel = match &self.target {
            RunTarget::Region { target, .. } => Some(target.channel),
            RunTarget::Class(_) => None,
        };
        let explained: Vec<usize> = match &first.classes {
            _ if region_channel.is_some() => vec![region_channel.unwrap_or_default(); batch],
            Some(c) => c
                .clone()
                .try_into_vec_as::<i64>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(|c| c as usize)
                .collect(),
            None => vec![0; batch],
        };
        let [_, height, width] = first.maps.dims();
        let plane = height * width;
        let maps = explanations
            .iter()
            .map(|e| maps_to_host(&e.maps).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let layers: Vec<Vec<String>> = explanations
            .iter()
            .map(|e| e.layers.iter().map(|l| l.layer.clone()).collect())
            .collect();
        let guided = match (&first.guided_backprop, first.guided_grad_cam()) {
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
                // NaN or infinite numbers are never reported as results.
                if let Some(bad) = row_scores.iter().chain(row).find(|v| !v.is_finite()) {
                    let what = if region_channel.is_some() {
                        "region's score is"
                    } else {
                        "class scores are"
                    };
                    return Err(format!(
                        "the model's {what} not finite ({bad}); check the input and the model"
                    ));
                }
                let image_maps: Vec<Vec<f32>> = maps.iter().map(|m| m[i * plane..(i + 1) * plane].to_vec()).collect();
                if let Some(bad) = image_maps.iter().flatten().find(|v| !v.is_finite()) {
                    return Err(format!("the map is not finite ({bad}); check the input and the model"));
                }
                let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(if region_channel.is_some() { 0 } else { 5 });
                let peaks = image_maps
                    .iter()
                    .map(|map| {
                        let (index, value) =
                            map.iter()
                                .copied()
                                .enumerate()
                                .fold(
                                    (0, f32::NEG_INFINITY),
                                    |best, (k, v)| if v > best.1 { (k, v) } else { best },
                                );
                        (index % width, index / width, value)
                    })
                    .collect();
                let class = explained[i];
                let guided = guided.as_ref().map(|(channels, backprop, grad_cam)| {
                    let per_image = channels * plane;
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
                // A dense output's explanation carries one score per image: its region's sum.
                let column = if region_channel.is_some() { 0 } else { class };
                Ok(Report {
                    class,
                    score: row_scores[column],
                    probability: region_channel.is_none().then(|| row[column]),
                    top5: ranked,
                    maps: image_maps,
                    peaks,
                    size: [height, width],
                    layers: layers.clone(),
                    guided,
                })
            })
            .collect())
    }

    /// One variant's map drawn for people: over the original photo, the network's view, or on
    /// its own for tensors.
    fn picture(
        &self,
        item: &Shown,
        rectifier: Rectifier,
        map: &[f32],
        [height, width]: [usize; 2],
    ) -> Result<RgbImage, String> {
        let display = rectifier.display_values(map);
        match (&item.picture, self.args.overlay_on) {
            (Some(picture), OverlayOn::Original) => picture.placement.overlay(
                &picture.photo,
                &display,
                height,
                width,
                &self.colormap,
                self.args.image_weight,
            ),
            (Some(picture), OverlayOn::Input) => {
                overlay(&picture.shown, &display, &self.colormap, self.args.image_weight)
            }
            (None, _) => heatmap(&display, height as u32, width as u32, &self.colormap),
        }
        .map_err(|e| e.to_string())
    }

    fn write(&self, item: &Shown, report: &Report, outputs: &Outputs) -> Result<(), String> {
        let [height, width] = report.size;
        let pictures = self
            .variants
            .iter()
            .zip(&report.maps)
            .map(|(variant, map)| self.picture(item, variant.rectifier, map, report.size))
            .collect::<Result<Vec<_>, _>>()?;
        let picture = if pictures.len() == 1 {
            pictures.into_iter().next().expect("one picture")
        } else {
            self.sheet(item, report, pictures)?
        };
        save_picture(&picture, &outputs.picture).map_err(|e| e.to_string())?;
        for (path, map) in outputs.maps.iter().zip(&report.maps) {
            write_npy(path, map, &[height as u64, width as u64]).map_err(|e| e.to_string())?;
        }
        if let Some((backprop, grad_cam, channels)) = &report.guided {
            for (files, values) in [
                (&outputs.guided_backprop, backprop),
                (&outputs.guided_grad_cam, grad_cam),
            ] {
                let Some(files) = files else { continue };
                let shape = [*channels as u64, height as u64, width as u64];
                write_npy(&files.npy, values, &shape).map_err(|e| e.to_string())?;
                let picture =
                    gradient_image(values, *channels, height as u32, width as u32).map_err(|e| e.to_string())?;
                save_picture(&picture, &files.png).map_err(|e| e.to_string())?;
            }
        }
        if let (Some(path), Some(picture)) = (&outputs.thumbnail, &item.picture) {
            let (w, h) = picture.photo.dimensions();
            let scale = (f64::from(THUMBNAIL_SIDE) / f64::from(w.max(h))).min(1.0);
            let side = |s: u32| ((f64::from(s) * scale).round() as u32).max(1);
            let thumbnail = imageops::resize(&picture.photo, side(w), side(h), FilterType::Triangle);
            save_picture(&thumbnail, path).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The comparison sheet of one image: a row per method (and compared layer), a column per
    /// rectifier, the class and score in the header.
    fn sheet(&self, item: &Shown, report: &Report, pictures: Vec<RgbImage>) -> Result<RgbImage, String> {
        let name = item.source.file_name().unwrap_or_else(|| item.source.as_os_str());
        let probability = report
            .probability
            .map_or_else(String::new, |p| format!(", p {:.1}%", 100.0 * p));
        let title = format!(
            "{}: {} (score {:.3}{probability})",
            shown_path(Path::new(name)),
            self.explained(report.class),
            report.score,
        );
        let columns = self.args.variants.rectifiers.iter().map(|r| r.to_string()).collect();
        let mut sheet = Sheet::new(title, columns);
        let mut pictures = pictures.into_iter();
        for (index, row) in self.rows.iter().enumerate() {
            let cells: Vec<RgbImage> = pictures.by_ref().take(self.args.variants.rectifiers.len()).collect();
            let label = if self.args.compare_layers.is_empty() {
                row.method.to_string()
            } else {
                let resolved = &report.layers[index * self.args.variants.rectifiers.len()];
                format!("{} · {}", row.method, resolved.join(" + "))
            };
            sheet.row(label, cells).map_err(|e| e.to_string())?;
        }
        sheet.render().map_err(|e| e.to_string())
    }

    fn entry(&self, index: usize, source: &Path, report: &Report, outputs: &Outputs, seconds: f64) -> Value {
        let label = |class: usize| self.labels.get(class).cloned();
        let peak = |(x, y, value): (usize, usize, f32)| json!({ "x": x, "y": y, "value": value });
        let variants: Vec<Value> = self
            .variants
            .iter()
            .enumerate()
            .map(|(k, variant)| {
                json!({
                    "method": variant.method,
                    "rectifier": variant.rectifier,
                    "layers": report.layers[k],
                    "peak": peak(report.peaks[k]),
                    "map": outputs.maps.get(k).map(|m| shown_path(m)),
                })
            })
            .collect();
        json!({
            "input_index": index,
            "image": shown_path(source),
            "class": report.class,
            "label": label(report.class),
            "score": report.score,
            "probability": report.probability,
            "target": match &self.target {
                RunTarget::Class(_) => Value::Null,
                RunTarget::Region { described, .. } => json!(described),
            },
            "top5": report.top5.iter().map(|&(class, p)| json!({
                "class": class, "label": label(class), "probability": p,
            })).collect::<Vec<_>>(),
            "peak": peak(report.peaks[0]),
            "map_size": report.size,
            "layers": report.layers[0],
            "overlay": shown_path(&outputs.picture),
            "map": outputs.maps.first().map(|m| shown_path(m)),
            "variants": variants,
            "guided_backprop": outputs.guided_backprop.as_ref().map(GradientFiles::shown),
            "guided_gradcam": outputs.guided_grad_cam.as_ref().map(GradientFiles::shown),
            "thumbnail": outputs.thumbnail.as_deref().map(shown_path),
            "seconds": seconds,
        })
    }

    /// What must be the same for two runs' results to belong together (`--resume`,
    /// `merge-summaries`).
    fn settings(&self) -> Value {
        let args = self.args;
        json!({
            "model": shown_path(&args.input.model),
            "methods": args.variants.methods,
            "rectifiers": args.variants.rectifiers,
            "layers": args.input.layer,
            "compare_layers": args.compare_layers,
            "class": args.input.class,
            "output": self.model.output_name(),
            "channel": args.input.channel,
            "region": args.input.region,
            "mask": args.input.mask.as_deref().map(shown_path),
            "score": match args.input.score { ScoreKind::Logits => "logits", ScoreKind::Output => "output" },
            "preprocess": self.decoder.recipe(),
            "eigen_smooth": args.eigen_smooth,
            "aug_smooth": args.aug_smooth,
            "overlay_on": match args.overlay_on { OverlayOn::Original => "original", OverlayOn::Input => "input" },
            "colormap": args.colormap.to_string(),
            "image_weight": args.image_weight,
            "save_npy": args.save_npy.is_some(),
            "report": args.report,
        })
    }

    fn write_summary(&self, path: &Path, inputs: usize, images: Vec<Value>, seconds: f64) -> Result<(), String> {
        let summary = json!({
            "settings": self.settings(),
            "device": self.args.input.device,
            "adapter": self.adapter.as_ref().map(|a| json!({
                "name": a.name, "graphics_api": a.graphics_api, "software": a.software,
            })),
            "batch_size": self.model.fixed_batch().unwrap_or(self.args.input.batch_size),
            "shard": self.args.shard.map(|s| json!({ "index": s.index, "count": s.count })),
            "inputs": inputs,
            "seconds": seconds,
            "images": images,
        });
        jobs::write_json(path, &summary)
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

    /// `class 281 tabby`, or for a dense output `channel 1 road of `seg` summed over x 0..8, y
    /// 0..4`.
    fn explained(&self, class: usize) -> String {
        match &self.target {
            RunTarget::Class(_) => format!("class {class} {}", self.label(class)),
            RunTarget::Region { described, .. } => described.clone(),
        }
    }
}

/// A dense output's explanation with its region scores `[N, 1]` as the output, as reported.
fn region_scores(explanation: Explanation<Tensor<4>>) -> Explanation<Tensor<2>> {
    let batch = explanation.scores.dims()[0];
    Explanation {
        output: explanation.scores.clone().reshape([batch, 1]),
        maps: explanation.maps,
        layers: explanation.layers,
        scores: explanation.scores,
        classes: explanation.classes,
        guided_backprop: explanation.guided_backprop,
    }
}

/// The row of an input that failed, with its index among all inputs.
fn failed_row(source: &Path, message: &str, index: usize) -> Value {
    json!({ "input_index": index, "image": shown_path(source), "error": message })
}

/// A batch explained, on its way to be drawn and written: each image's index, name and
/// pictures, files, and report (or why it has none), and the seconds per image.
struct Explained {
    images: Vec<(usize, Shown, Outputs, Result<Report, String>)>,
    seconds: f64,
}

impl GradientFiles {
    fn shown(&self) -> Value {
        json!({ "npy": shown_path(&self.npy), "png": shown_path(&self.png) })
    }
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
