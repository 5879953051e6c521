//! `cargo xtask sign-study`: the rectifier study of docs/sign-study.md.
//!
//! Mosaics of the bundled photos (examples/images: a cat, a cup of coffee, a rocket; CC0, from
//! scikit-image) with a known object per cell: for each photo and each of the 4 cells of a 2×2
//! grid at 224×224, a mosaic with that photo in that cell and the other two photos (one
//! mirrored) around it — 12 mosaics, the photo's cell as the pointing game's box. Each mosaic is
//! explained for the class MobileNetV2 gives the photo alone, by every listed method with every
//! rectifier, at two layers, and scored by `ember evaluate` (deletion, insertion, ROAD combined,
//! pointing game). Rows go to target/sign-study/, the tables to docs/sign-study-results.md, and
//! a comparison sheet of each photo's first mosaic (four methods × the four rectifiers, last
//! block) to docs/sign-study-<photo>.jpg.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use image::imageops::FilterType;
use image::{RgbImage, imageops};
use serde_json::Value;

use crate::root;

/// The photos, and the class MobileNetV2 gives each alone (its top class on the photo with the
/// ImageNet pre-processing: `ember explain --model models/mobilenet_v2.onnx --image …`).
const PHOTOS: [(&str, usize, &str); 3] = [
    ("chelsea.png", 285, "Egyptian cat"),
    ("coffee.png", 967, "espresso"),
    ("rocket.jpg", 0, ""),
];
const CELL: u32 = 112;
const LAYERS: [(&str, &str); 2] = [
    ("last block (7×7)", "/features/features.18/features.18.2/Clip"),
    ("block 13 (14×14)", "/features/features.13/Add"),
];
const RECTIFIERS: &str = "relu,abs,signed,counterfactual";
const METRICS: &str = "deletion,insertion,road-combined,pointing-game";

pub fn sign_study(
    methods: &str,
    steps: usize,
    photos: &[String],
    metric_score: &str,
    ember: Option<&Path>,
) -> Result<(), String> {
    let root = root();
    let ember = match ember {
        Some(path) => path.to_path_buf(),
        None => build_ember(&root)?,
    };
    // Probabilities (the default) keep the first run's file names.
    let suffix = if metric_score == "probability" {
        String::new()
    } else {
        format!("-{metric_score}")
    };
    let out = root.join(format!("target/sign-study{suffix}"));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let classes = photo_classes(&root, &ember, photos)?;
    let cells: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|(file, _, _)| cell(&root.join("examples/images").join(file)))
        .collect::<Result<_, _>>()?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for (photo, (file, _, _)) in PHOTOS.iter().enumerate() {
        if !photos.iter().any(|p| file.starts_with(p.as_str())) {
            continue;
        }
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
        for (layer_name, layer) in LAYERS {
            let json = group.join(format!("rows-{}.json", layer.replace('/', "_")));
            let status = Command::new(&ember)
                .current_dir(&root)
                .args(["evaluate", "--device", "flex", "--model", "models/mobilenet_v2.onnx"])
                .arg("--image")
                .arg(&mosaics)
                .args(["--preprocess", "resize", "--class", &classes[photo].to_string()])
                .args(["--layer", layer, "--method", methods, "--rectifier", RECTIFIERS])
                .args(["--metrics", METRICS, "--steps", &steps.to_string()])
                .args(["--metric-score", metric_score])
                .arg("--boxes")
                .arg(&boxes_file)
                .arg("--json")
                .arg(&json)
                .status();
            succeeded(status, || format!("ember evaluate on {} at {layer}", group.display()))?;
            let text = std::fs::read_to_string(&json).map_err(|e| format!("{}: {e}", json.display()))?;
            let parsed: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
            for row in parsed.as_array().cloned().unwrap_or_default() {
                rows.push((layer_name.to_owned(), row));
            }
            // After every run, so that an interrupted study still leaves its tables so far.
            let report = tables(&rows, methods, metric_score);
            let path = root.join(format!("docs/sign-study-results{suffix}.md"));
            std::fs::write(&path, report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!("{file} at {layer_name}: tables written to {}", path.display());
        }
        if suffix.is_empty() {
            sheet(&root, &ember, &mosaics.join("cell0.png"), classes[photo], file)?;
        }
    }
    Ok(())
}

/// The methods shown side by side in the study's sheets (all four rectifiers each).
const SHEET_METHODS: &str = "gradcam,gradcam++,eigencam,ablationcam";

/// A comparison sheet of the photo's first mosaic at the last block: a row per method of
/// [`SHEET_METHODS`], a column per rectifier, to docs/sign-study-<photo>.jpg.
fn sheet(root: &Path, ember: &Path, mosaic: &Path, class: usize, file: &str) -> Result<(), String> {
    let name = file.split('.').next().unwrap_or("photo");
    let out = root.join(format!("docs/sign-study-{name}.jpg"));
    let status = Command::new(ember)
        .current_dir(root)
        .args(["explain", "--device", "flex", "--model", "models/mobilenet_v2.onnx"])
        .arg("--image")
        .arg(mosaic)
        .args(["--preprocess", "resize", "--class", &class.to_string()])
        .args([
            "--layer",
            LAYERS[0].1,
            "--method",
            SHEET_METHODS,
            "--rectifier",
            RECTIFIERS,
        ])
        .arg("--out")
        .arg(&out)
        .status();
    succeeded(status, || format!("ember explain on {}", mosaic.display()))?;
    println!("{file}: maps side by side in {}", out.display());
    Ok(())
}

/// MobileNetV2's top class for each photo alone (the rocket's is looked up: ImageNet has no
/// rocket class, so whatever the model sees there is the object explained).
fn photo_classes(root: &Path, ember: &Path, photos: &[String]) -> Result<Vec<usize>, String> {
    PHOTOS
        .iter()
        .map(|(file, class, _)| {
            if *class != 0 || !photos.iter().any(|p| file.starts_with(p.as_str())) {
                return Ok(*class);
            }
            let output = Command::new(ember)
                .current_dir(root)
                .args([
                    "explain",
                    "--device",
                    "flex",
                    "--model",
                    "models/mobilenet_v2.onnx",
                    "--image",
                ])
                .arg(root.join("examples/images").join(file))
                .args(["--out", "target/sign-study/top-class.png"])
                .output()
                .map_err(|e| format!("cannot run ember: {e}"))?;
            let text = String::from_utf8_lossy(&output.stdout);
            text.lines()
                .find_map(|l| l.strip_prefix("explained class "))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| format!("no class in ember's report on {file}: {text}"))
        })
        .collect()
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
fn tables(rows: &[(String, Value)], methods: &str, metric_score: &str) -> String {
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
        "# Sign study: results ({metric_score})\n\nGenerated by `cargo xtask sign-study --metric-score \
         {metric_score}` (see docs/sign-study.md for the set-up and the reading): deletion, insertion and ROAD \
         score the explained class's {metric_score}. Means over the mosaics; the best rectifier of each method in \
         **bold** (↑: higher is better, ↓: lower).\n",
    );
    let mut wins: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for (layer, _) in LAYERS {
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
