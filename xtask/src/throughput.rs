//! `cargo xtask throughput`: a folder of photos explained end to end (decoding, explaining,
//! overlays on the photos, summary) by `ember explain`, side by side with pytorch-grad-cam's
//! batch loop doing the same work (`xtask/reference/throughput_pytorch.py`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::imageops::{self, FilterType};
use serde_json::{Value, json};

use crate::root;
use crate::study::build_ember;

/// The bundled photos the folder is made from.
const SOURCES: [&str; 3] = ["chelsea.png", "coffee.png", "rocket.jpg"];

/// Writes `count` JPEG photos (quality 90) made from the bundled ones: rescaled so that the
/// longer side is 480 to 800 pixels, cropped to 90 % at varying offsets, every other one
/// mirrored. Deterministic: the same files on every run.
fn make_photos(dir: &Path, count: usize) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let images = root().join("examples/images");
    let sources = SOURCES
        .iter()
        .map(|name| {
            image::open(images.join(name))
                .map(|i| i.to_rgb8())
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for k in 0..count {
        let source = &sources[k % sources.len()];
        let longer = 480 + 80 * (k % 5) as u32;
        let (w, h) = source.dimensions();
        let scale = f64::from(longer) / f64::from(w.max(h));
        let (sw, sh) = ((f64::from(w) * scale) as u32, (f64::from(h) * scale) as u32);
        let resized = imageops::resize(source, sw, sh, FilterType::Triangle);
        let (cw, ch) = (sw * 9 / 10, sh * 9 / 10);
        let (x, y) = ((sw - cw) * (k % 3) as u32 / 2, (sh - ch) * ((k / 3) % 3) as u32 / 2);
        let mut photo = imageops::crop_imm(&resized, x, y, cw, ch).to_image();
        if k % 2 == 1 {
            imageops::flip_horizontal_in_place(&mut photo);
        }
        let path = dir.join(format!("photo-{k:03}.jpg"));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
            .encode_image(&photo)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `cargo xtask throughput`.
pub fn throughput(photos: usize, runs: usize, batch: usize, python: Option<PathBuf>) -> Result<(), String> {
    let root = root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let work = target.join("throughput");
    let folder = work.join("photos");
    make_photos(&folder, photos)?;
    let ember = build_ember(&root)?;
    let python = python.or_else(|| {
        let venv = root.join("target/reference-venv/bin/python");
        venv.exists().then_some(venv)
    });
    let batch_text = batch.to_string();
    let mut ember_seconds = Vec::new();
    let mut python_loop = Vec::new();
    let mut python_process = Vec::new();
    // Alternating runs, so that a slower stretch of the machine affects both sides alike.
    for run in 0..runs {
        let out = work.join(format!("ember-{run}"));
        let _ = std::fs::remove_dir_all(&out);
        let started = Instant::now();
        let output = Command::new(&ember)
            .args(["explain", "--device", "flex", "--model"])
            .arg(root.join("models/mobilenet_v2.onnx"))
            .arg("--image")
            .arg(&folder)
            .arg("--out-dir")
            .arg(&out)
            .args(["--batch-size", &batch_text])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", ember.display()))?;
        ember_seconds.push(started.elapsed().as_secs_f64());
        if !output.status.success() {
            return Err(format!("ember failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        if let Some(python) = &python {
            let out = work.join(format!("pytorch-{run}"));
            let _ = std::fs::remove_dir_all(&out);
            let started = Instant::now();
            let output = Command::new(python)
                .current_dir(root.join("xtask/reference"))
                .arg("throughput_pytorch.py")
                .arg(&folder)
                .arg(&out)
                .args(["--batch-size", &batch_text, "--threads", "2"])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
            python_process.push(started.elapsed().as_secs_f64());
            if !output.status.success() {
                return Err(format!(
                    "throughput_pytorch.py failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let row: Value = String::from_utf8_lossy(&output.stdout)
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
                .ok_or("throughput_pytorch.py printed no result")?;
            python_loop.push(row["seconds"].as_f64().ok_or("no seconds in the Python row")?);
        }
    }
    let per_second = |seconds: f64| photos as f64 / seconds;
    let ember_rate = per_second(median(ember_seconds));
    let mut rows = vec![json!({
        "tool": "ember explain (flex, whole command)", "photos": photos, "batch": batch,
        "images_per_second": ember_rate,
    })];
    println!("| tool | photos | batch | images/s | Ember ÷ this |");
    println!("|---|---|---|---|---|");
    println!(
        "| ember explain (flex, release; whole command: model load included) | {photos} | {batch} | {ember_rate:.1} | 1.00 |"
    );
    if python.is_some() {
        for (name, seconds) in [
            (
                "pytorch-grad-cam loop (torch, 2 threads; imports and model load excluded)",
                python_loop,
            ),
            ("pytorch-grad-cam whole process", python_process),
        ] {
            let rate = per_second(median(seconds));
            println!("| {name} | {photos} | {batch} | {rate:.1} | {:.2} |", ember_rate / rate);
            rows.push(json!({ "tool": name, "photos": photos, "batch": batch, "images_per_second": rate }));
        }
    } else {
        eprintln!("pytorch-grad-cam rows skipped: no --python and no target/reference-venv");
    }
    println!("{}", serde_json::to_string(&rows).map_err(|e| e.to_string())?);
    Ok(())
}
