//! `cargo xtask sign-study`: the rectifier study of docs/sign-study.md.
//!
//! Mosaics of the bundled photos (examples/images: a cat, a cup of coffee, a rocket; CC0, from
//! scikit-image) with a known object per cell: for each photo and each of the 4 cells of a 2×2
//! grid at 224×224, a mosaic with that photo in that cell and the other two photos (one
//! mirrored) around it — 12 mosaics, the photo's cell as the pointing game's box. For each model
//! of [`MODELS`], each mosaic is explained for the class the model gives the photo alone, by every
//! listed method with every rectifier, at two layers, and scored by `ember evaluate` (deletion,
//! insertion, ROAD combined, pointing game). Rows go to target/sign-study/<model>/, the tables to
//! docs/sign-study-<model>-results.md, and a comparison sheet of each photo's first mosaic (four
//! methods × the four rectifiers, last layer) to docs/sign-study-<model>-<photo>.jpg.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use image::imageops::FilterType;
use image::{RgbImage, imageops};
use serde_json::Value;

use crate::root;

/// The photos of examples/images. Each is explained for the class the model gives it alone
/// (ImageNet has no rocket class: whatever the model sees there is the object explained).
const PHOTOS: [&str; 3] = ["chelsea.png", "coffee.png", "rocket.jpg"];
const CELL: u32 = 112;
const RECTIFIERS: &str = "relu,abs,signed,counterfactual";
const METRICS: &str = "deletion,insertion,road-combined,pointing-game";

/// A real pretrained ImageNet classifier of the study.
struct StudyModel {
    /// Its name in paths and on the command line.
    key: &'static str,
    /// Its name in the tables.
    name: &'static str,
    /// The ONNX file, relative to the repository.
    file: &'static str,
    /// Its pre-processing as `ember` options (the mosaics are already 224×224: resized only).
    preprocess: &'static [&'static str],
    /// The two layers explained: (name in the tables, ONNX node), the last layer first.
    layers: [(&'static str, &'static str); 2],
}

const MODELS: [StudyModel; 2] = [
    StudyModel {
        key: "mobilenet-v2",
        name: "MobileNetV2",
        file: "models/mobilenet_v2.onnx",
        preprocess: &[],
        layers: [
            ("last block (7×7)", "/features/features.18/features.18.2/Clip"),
            ("block 13 (14×14)", "/features/features.13/Add"),
        ],
    },
    StudyModel {
        key: "efficientnet-lite0",
        name: "EfficientNet-Lite0",
        file: "models/efficientnet_lite0.onnx",
        // TensorFlow's EfficientNet-Lite normalisation: (pixel − 127) / 128.
        preprocess: &["--value-range", "byte", "--mean", "127,127,127", "--std", "128,128,128"],
        layers: [("head (7×7)", "/head_act/Clip"), ("block 10 (14×14)", "/blocks.10/Add")],
    },
];

pub fn sign_study(
    models: &[String],
    methods: &str,
    steps: usize,
    photos: &[String],
    metric_score: &str,
    ember: Option<&Path>,
    tables_only: bool,
) -> Result<(), String> {
    if let Some(unknown) = models.iter().find(|k| !MODELS.iter().any(|m| m.key == k.as_str())) {
        let known: Vec<&str> = MODELS.iter().map(|m| m.key).collect();
        return Err(format!(
            "unknown model `{unknown}`; the study's models: {}",
            known.join(", ")
        ));
    }
    let root = root();
    let ember = match ember {
        Some(path) => path.to_path_buf(),
        None => build_ember(&root)?,
    };
    // None named: all of them.
    for model in MODELS
        .iter()
        .filter(|m| models.is_empty() || models.iter().any(|k| k == m.key))
    {
        let run = Run {
            methods,
            steps,
            photos,
            metric_score,
            tables_only,
        };
        study(&root, &ember, model, &run)?;
    }
    Ok(())
}

/// What a run of the study does, for every model.
struct Run<'a> {
    methods: &'a str,
    steps: usize,
    photos: &'a [String],
    metric_score: &'a str,
    /// Rebuild the tables from the rows a previous run left in target/sign-study/ (no `ember`
    /// run, no sheets).
    tables_only: bool,
}

/// The study of one model: its mosaics explained and scored, its tables and sheets written.
fn study(root: &Path, ember: &Path, model: &StudyModel, run: &Run) -> Result<(), String> {
    let Run {
        methods,
        photos,
        metric_score,
        tables_only,
        ..
    } = *run;
    // Probabilities (the default) keep the first run's file names.
    let suffix = if metric_score == "probability" {
        String::new()
    } else {
        format!("-{metric_score}")
    };
    let key = model.key;
    let out = root.join(format!("target/sign-study/{key}{suffix}"));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let cells: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|file| cell(&root.join("examples/images").join(file)))
        .collect::<Result<_, _>>()?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for (photo, file) in PHOTOS.iter().enumerate() {
        if !photos.iter().any(|p| file.starts_with(p.as_str())) {
            continue;
        }
        let class = photo_class(root, ember, model, file)?;
        let group = out.join(file.split('.').next().unwrap_or("photo"));
        let mosaics = group.join("mosaics");
        std::fs::create_dir_all(&mosaics).map_err(|e| format!("cannot create {}: {e}", mosaics.display()))?;
        let mut boxes = serde_json::Map::new();
        for position in 0..4u32 {
            let others: Vec<usize> = (0..PHOTOS.len()).filter(|&p| p != photo).collect();
            let mut mosaic = RgbImage::new(2 * CELL, 2 * CELL);
            for slot in 0..4u32 {
                let tile = if slot == position {
                    cells[photo].clone()
                } else {
                    // The other photos around it, the third slot mirrored.
                    let other = others[(slot as usize) % others.len()];
                    if (slot + 4 - position) % 4 == 3 {
                        imageops::flip_horizontal(&cells[other])
                    } else {
                        cells[other].clone()
                    }
                };
                imageops::replace(
                    &mut mosaic,
                    &tile,
                    i64::from(slot % 2 * CELL),
                    i64::from(slot / 2 * CELL),
                );
            }
            let path = mosaics.join(format!("cell{position}.png"));
            mosaic
                .save(&path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let (x, y) = (position % 2 * CELL, position / 2 * CELL);
            boxes.insert(
                path.to_string_lossy().into_owned(),
                serde_json::json!([[x, y, x + CELL, y + CELL]]),
            );
        }
        let boxes_file = group.join("boxes.json");
        std::fs::write(&boxes_file, Value::Object(boxes).to_string())
            .map_err(|e| format!("cannot write {}: {e}", boxes_file.display()))?;
        for (layer_name, layer) in model.layers {
            let json = rows_file(&group, layer);
            if !tables_only {
                evaluate(root, ember, model, run, class, &group, layer)?;
            }
            let text = std::fs::read_to_string(&json).map_err(|e| format!("{}: {e}", json.display()))?;
            let parsed: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
            for row in parsed.as_array().cloned().unwrap_or_default() {
                rows.push((layer_name.to_owned(), row));
            }
            // After every run, so that an interrupted study still leaves its tables so far.
            let report = tables(&rows, model, methods, metric_score);
            let path = root.join(format!("docs/sign-study-{key}-results{suffix}.md"));
            std::fs::write(&path, report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!(
                "{} on {file} at {layer_name}: tables written to {}",
                model.name,
                path.display()
            );
        }
        if suffix.is_empty() && !tables_only {
            sheet(root, ember, model, &mosaics.join("cell0.png"), class, file)?;
        }
    }
    Ok(())
}

/// Where the rows of one photo's mosaics at one layer are kept.
fn rows_file(group: &Path, layer: &str) -> std::path::PathBuf {
    group.join(format!("rows-{}.json", layer.replace('/', "_")))
}

/// `ember evaluate` on one photo's mosaics (`group/mosaics`, boxes in `group/boxes.json`) at one
/// layer, every method × rectifier, rows to [`rows_file`].
fn evaluate(
    root: &Path,
    ember: &Path,
    model: &StudyModel,
    run: &Run,
    class: usize,
    group: &Path,
    layer: &str,
) -> Result<(), String> {
    let status = Command::new(ember)
        .current_dir(root)
        .args(["evaluate", "--device", "flex", "--model", model.file])
        .arg("--image")
        .arg(group.join("mosaics"))
        .args(["--preprocess", "resize"])
        .args(model.preprocess)
        .args(["--class", &class.to_string()])
        .args(["--layer", layer, "--method", run.methods, "--rectifier", RECTIFIERS])
        .args(["--metrics", METRICS, "--steps", &run.steps.to_string()])
        .args(["--metric-score", run.metric_score])
        .arg("--boxes")
        .arg(group.join("boxes.json"))
        .arg("--json")
        .arg(rows_file(group, layer))
        .status();
    succeeded(status, || format!("ember evaluate on {} at {layer}", group.display()))
}

/// The methods shown side by side in the study's sheets (all four rectifiers each).
const SHEET_METHODS: &str = "gradcam,gradcam++,eigencam,ablationcam";

/// A comparison sheet of the photo's first mosaic at the model's last layer: a row per method of
/// [`SHEET_METHODS`], a column per rectifier, to docs/sign-study-<model>-<photo>.jpg.
fn sheet(root: &Path, ember: &Path, model: &StudyModel, mosaic: &Path, class: usize, file: &str) -> Result<(), String> {
    let name = file.split('.').next().unwrap_or("photo");
    let out = root.join(format!("docs/sign-study-{}-{name}.jpg", model.key));
    let status = Command::new(ember)
        .current_dir(root)
        .args(["explain", "--device", "flex", "--model", model.file])
        .arg("--image")
        .arg(mosaic)
        .args(["--preprocess", "resize"])
        .args(model.preprocess)
        .args(["--class", &class.to_string()])
        .args([
            "--layer",
            model.layers[0].1,
            "--method",
            SHEET_METHODS,
            "--rectifier",
            RECTIFIERS,
        ])
        .arg("--out")
        .arg(&out)
        .status();
    succeeded(status, || format!("ember explain on {}", mosaic.display()))?;
    println!("{} on {file}: maps side by side in {}", model.name, out.display());
    Ok(())
}

/// The model's top class for the photo alone (ImageNet's recipe: shorter side 256, centre crop
/// 224, with the model's normalisation).
fn photo_class(root: &Path, ember: &Path, model: &StudyModel, file: &str) -> Result<usize, String> {
    let output = Command::new(ember)
        .current_dir(root)
        .args(["explain", "--device", "flex", "--model", model.file, "--image"])
        .arg(root.join("examples/images").join(file))
        .args(model.preprocess)
        .arg("--out")
        .arg(root.join(format!("target/sign-study/{}-top-class.png", model.key)))
        .output()
        .map_err(|e| format!("cannot run ember: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("explained class "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no class in ember's report on {file}: {text}"))
}

/// `cargo build --release -p ember-cli`, and the binary it made.
pub fn build_ember(root: &Path) -> Result<std::path::PathBuf, String> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--release", "-p", "ember-cli", "--bin", "ember"])
        .status();
    succeeded(status, || "building ember".to_owned())?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    Ok(target.join("release").join("ember"))
}

/// Whether a command that was run succeeded, or what failed (`what`: the command, for the error).
fn succeeded(status: std::io::Result<std::process::ExitStatus>, what: impl Fn() -> String) -> Result<(), String> {
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{} failed ({status})", what())),
        Err(e) => Err(format!("{} could not be run: {e}", what())),
    }
}

/// A photo as one 112×112 cell: its centre square, resized.
fn cell(path: &Path) -> Result<RgbImage, String> {
    let photo = image::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .to_rgb8();
    let (w, h) = photo.dimensions();
    let side = w.min(h);
    let square = imageops::crop_imm(&photo, (w - side) / 2, (h - side) / 2, side, side).to_image();
    Ok(imageops::resize(&square, CELL, CELL, FilterType::Triangle))
}

/// Per layer and metric: methods × rectifiers, the mean over every mosaic, the best rectifier
/// of each method in bold.
fn tables(rows: &[(String, Value)], model: &StudyModel, methods: &str, metric_score: &str) -> String {
    // (layer, metric, method, rectifier) → values over every group.
    let mut values: BTreeMap<(String, String, String, String), Vec<f64>> = BTreeMap::new();
    let mut higher: BTreeMap<String, bool> = BTreeMap::new();
    for (layer, row) in rows {
        let key = (
            layer.clone(),
            row["metric"].as_str().unwrap_or("").to_owned(),
            row["method"].as_str().unwrap_or("").to_owned(),
            row["rectifier"].as_str().unwrap_or("").to_owned(),
        );
        higher.insert(key.1.clone(), row["higher_is_better"].as_bool().unwrap_or(true));
        let entry = values.entry(key).or_default();
        entry.extend(row["values"].as_array().into_iter().flatten().filter_map(Value::as_f64));
    }
    let rectifiers: Vec<&str> = RECTIFIERS.split(',').collect();
    let mut text = format!(
        "# Sign study: {}, results ({metric_score})\n\nGenerated by `cargo xtask sign-study --models {} \
         --metric-score {metric_score}` (see docs/sign-study.md for the set-up and the reading): deletion, insertion \
         and ROAD score the explained class's {metric_score}. Means over the mosaics; the best rectifier of each \
         method in **bold** (↑: higher is better, ↓: lower).\n",
        model.name, model.key
    );
    let mut wins: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for (layer, _) in model.layers {
        for metric in METRICS.split(',') {
            let up = higher.get(metric).copied().unwrap_or(true);
            text.push_str(&format!(
                "\n## {layer}: {metric} ({})\n\n| method | {} |\n|---|{}\n",
                if up { "↑" } else { "↓" },
                rectifiers.join(" | "),
                "---|".repeat(rectifiers.len())
            ));
            for method in methods.split(',') {
                let means: Vec<Option<f64>> = rectifiers
                    .iter()
                    .map(|r| {
                        let v =
                            values.get(&(layer.to_owned(), metric.to_owned(), method.to_owned(), (*r).to_owned()))?;
                        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                    })
                    .collect();
                let best = means.iter().flatten().copied().fold(None, |b: Option<f64>, v| match b {
                    Some(b) if (up && b >= v) || (!up && b <= v) => Some(b),
                    _ => Some(v),
                });
                let cells: Vec<String> = means
                    .iter()
                    .zip(&rectifiers)
                    .map(|(m, r)| match m {
                        Some(v) if Some(*v) == best => {
                            *wins
                                .entry((layer.to_owned(), metric.to_owned()))
                                .or_default()
                                .entry((*r).to_owned())
                                .or_default() += 1;
                            format!("**{v:.4}**")
                        }
                        Some(v) => format!("{v:.4}"),
                        None => "–".to_owned(),
                    })
                    .collect();
                text.push_str(&format!("| {method} | {} |\n", cells.join(" | ")));
            }
        }
    }
    text.push_str("\n## Wins per rectifier (methods where it is best or tied best)\n\n| layer | metric | ");
    text.push_str(&rectifiers.join(" | "));
    text.push_str(" |\n|---|---|");
    text.push_str(&"---|".repeat(rectifiers.len()));
    text.push('\n');
    for ((layer, metric), counts) in &wins {
        let cells: Vec<String> = rectifiers
            .iter()
            .map(|r| counts.get(*r).copied().unwrap_or(0).to_string())
            .collect();
        text.push_str(&format!("| {layer} | {metric} | {} |\n", cells.join(" | ")));
    }
    text
}
