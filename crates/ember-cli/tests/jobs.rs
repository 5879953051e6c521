//! What a person sees and how large jobs run: overlays on the original photo, comparison
//! sheets, report.html in a real browser, shards, merging, resuming.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn labels() -> String {
    path("models/imagenet_classes.txt")
}

fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A folder of five photos whose stems collide (`chelsea.png`, `chelsea.jpg`) and one whose
/// name needs escaping in a link (`cat #2.png`).
fn photo_folder(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let images = root().join("examples/images");
    for (from, to) in [
        ("chelsea.png", "chelsea.png"),
        ("chelsea.png", "chelsea.jpg"),
        ("chelsea.png", "cat #2.png"),
        ("coffee.png", "coffee.png"),
        ("rocket.jpg", "rocket.jpg"),
    ] {
        std::fs::copy(images.join(from), dir.join(to)).unwrap();
    }
    dir
}

/// The rows of a summary without their timings, for comparing runs.
fn rows_without_time(summary: &Value) -> Vec<Value> {
    summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut row = row.clone();
            row.as_object_mut().unwrap().remove("seconds");
            row
        })
        .collect()
}

#[test]
fn overlays_land_on_the_original_photo_with_the_cropped_border_dimmed() {
    let photo_path = path("examples/images/chelsea.png");
    let photo = image::open(&photo_path).unwrap().to_rgb8();
    let out = scratch("original.png");
    let summary_path = scratch("original.json");
    let run = |overlay_on: &str, out: &Path| {
        stdout(&ember(&[
            "explain",
            "--model",
            &mobilenet_path(),
            "--image",
            &photo_path,
            "--out",
            out.to_str().unwrap(),
            "--overlay-on",
            overlay_on,
            "--summary",
            summary_path.to_str().unwrap(),
        ]))
    };
    run("original", &out);
    let overlay = image::open(&out).unwrap().to_rgb8();
    assert_eq!(overlay.dimensions(), (451, 300), "the photo's own size");
    // ImageNet pre-processing: 451×300 → 384×256 → centre 224×224 crop at (80, 16) of the
    // resized image, i.e. columns 94..356 and rows 19..281 of the photo. Outside it the photo is
    // dimmed to 35 %; inside it carries heat.
    for (x, y) in [(0, 0), (50, 150), (450, 299), (200, 5), (200, 295)] {
        let expected = photo.get_pixel(x, y).0.map(|v| (f32::from(v) * 0.35).round() as u8);
        assert_eq!(overlay.get_pixel(x, y).0, expected, "({x}, {y}) is outside the crop");
    }
    let inside = (100..350)
        .flat_map(|x| (25..275).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let dimmed = photo.get_pixel(x, y).0.map(|v| (f32::from(v) * 0.35).round() as u8);
            overlay.get_pixel(x, y).0 != dimmed
        })
        .count();
    assert_eq!(inside, 250 * 250, "every pixel the network saw carries heat");
    // The map's peak (network input pixels) maps back to the cat's face: the lower middle of
    // the crop, where the nose is.
    let peak = &summary(&summary_path)["images"][0]["peak"];
    let (x, y) = (peak["x"].as_u64().unwrap(), peak["y"].as_u64().unwrap());
    let (photo_x, photo_y) = ((x as f64 + 80.5) * 451.0 / 384.0, (y as f64 + 16.5) * 300.0 / 256.0);
    assert!(
        (150.0..320.0).contains(&photo_x) && (150.0..280.0).contains(&photo_y),
        "peak at ({photo_x}, {photo_y}) in the photo"
    );
    // On the network input: 224×224, as pytorch-grad-cam draws it.
    let on_input = scratch("on-input.png");
    run("input", &on_input);
    assert_eq!(image::open(&on_input).unwrap().to_rgb8().dimensions(), (224, 224));
}

#[test]
fn several_methods_and_rectifiers_make_one_sheet_whose_maps_are_the_single_runs() {
    let photo = path("examples/images/coffee.png");
    let sheet = scratch("sheet.png");
    let text = stdout(&ember(&[
        "explain",
        "--model",
        &mobilenet_path(),
        "--image",
        &photo,
        "--labels",
        &labels(),
        "--out",
        sheet.to_str().unwrap(),
        "--method",
        "gradcam,hirescam",
        "--rectifier",
        "relu,abs,signed",
        "--save-npy",
    ]));
    assert!(
        text.contains("6 ways") && text.contains("comparison sheet written"),
        "{text}"
    );
    let picture = image::open(&sheet).unwrap().to_rgb8();
    // Three columns and two rows of 448×298 cells (the photo scaled down), with labels.
    assert!(
        picture.width() > 3 * 448 && picture.height() > 2 * 298,
        "{:?}",
        picture.dimensions()
    );
    for method in ["gradcam", "hirescam"] {
        for rectifier in ["relu", "abs", "signed"] {
            let name = format!("sheet_{method}_{rectifier}.npy");
            let (map, shape) = read_npy(&sheet.with_file_name(&name));
            assert_eq!(shape, vec![224, 224], "{name}");
            // The same map as a run with that method and rectifier alone.
            let alone = scratch(&format!("alone_{method}_{rectifier}.png"));
            stdout(&ember(&[
                "explain",
                "--model",
                &mobilenet_path(),
                "--image",
                &photo,
                "--out",
                alone.to_str().unwrap(),
                "--method",
                method,
                "--rectifier",
                rectifier,
                "--save-npy",
            ]));
            let (single, _) = read_npy(&alone.with_extension("npy"));
            let difference = map.iter().zip(&single).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(difference < 1e-6, "{name}: {difference}");
        }
    }
    // Layers compared side by side: one row per method and layer.
    let layers = scratch("layers.png");
    let text = stdout(&ember(&[
        "explain",
        "--model",
        &mobilenet_path(),
        "--image",
        &photo,
        "--out",
        layers.to_str().unwrap(),
        "--compare-layers",
        "/features/features.18/features.18.2/Clip,/features/features.14/conv/conv.2/Conv",
        "--save-npy",
    ]));
    assert!(text.contains("2 ways"), "{text}");
    assert!(
        layers
            .with_file_name("layers_gradcam_relu__features_features.14_conv_conv.2_Conv.npy")
            .exists()
    );
}

/// Chromium's headless shell, or a failure saying how to get it. `EMBER_SKIP_BROWSER=1` skips
/// the browser checks, and the test says so.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
        .next();
    if found.is_none() && std::env::var("EMBER_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: the browser checks of report.html (EMBER_SKIP_BROWSER=1)");
        return None;
    }
    Some(found.expect("chromium is needed to check report.html (Debian: apt install chromium; `.ci/run` installs it)"))
}

/// What a headless browser made of a page: the DOM after scripts ran, the console messages,
/// and a screenshot.
struct Rendered {
    dom: String,
    console: Vec<String>,
    screenshot: image::RgbImage,
}

fn render(browser: &Path, page: &Path, name: &str) -> Rendered {
    let profile = scratch(&format!("chromium-profile-{name}"));
    let shot = scratch(&format!("{name}.png"));
    let url = format!("file://{}", std::path::absolute(page).unwrap().display());
    let run = |extra: &[&str]| {
        let output = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output
    };
    let dumped = run(&["--dump-dom"]);
    let shot_arg = format!("--screenshot={}", shot.display());
    let shot_run = run(&[&shot_arg]);
    let console = [&dumped.stderr, &shot_run.stderr]
        .iter()
        .flat_map(|stderr| {
            String::from_utf8_lossy(stderr)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| line.contains(":CONSOLE"))
        .collect();
    Rendered {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
        screenshot: image::open(&shot).unwrap().to_rgb8(),
    }
}

/// The value of `data-<name>` on the page's body.
fn body_data(dom: &str, name: &str) -> Option<u64> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let key = format!("data-{name}=\"");
    let start = body.find(&key)? + key.len();
    body[start..].split('"').next()?.parse().ok()
}

#[test]
fn a_report_renders_in_a_real_browser_with_every_picture_loaded() {
    let Some(browser) = chromium() else { return };
    // The browser's console is checked below; first, that this browser reports console errors
    // on stderr at all (a check that could not fail would be no check).
    let canary = scratch("canary.html");
    std::fs::write(
        &canary,
        "<html><body><script>console.error('canary'); missing();</script></body></html>",
    )
    .unwrap();
    let rendered = render(&browser, &canary, "canary");
    let logged = |text: &str| rendered.console.iter().any(|line| line.contains(text));
    assert!(
        logged("\"canary\"") && logged("Uncaught ReferenceError"),
        "{:?}",
        rendered.console
    );

    let photos = photo_folder("report-photos");
    let out = scratch("report-out");
    stdout(&ember(&[
        "explain",
        "--model",
        &mobilenet_path(),
        "--image",
        photos.to_str().unwrap(),
        "--labels",
        &labels(),
        "--out-dir",
        out.to_str().unwrap(),
        "--batch-size",
        "2",
        "--report",
    ]));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let pictures = html.matches("<img ").count();
    assert_eq!(pictures, 10, "a thumbnail and an overlay per image");
    assert!(html.contains("cat%20%232.png") && html.contains("Egyptian cat"));
    let rendered = render(&browser, &page, "report");
    assert!(rendered.console.is_empty(), "console: {:?}", rendered.console);
    assert_eq!(body_data(&rendered.dom, "images"), Some(10), "the script ran");
    assert_eq!(body_data(&rendered.dom, "loaded"), Some(10), "every picture loaded");
    assert_eq!(body_data(&rendered.dom, "broken"), Some(0));
    assert!(rendered.dom.contains("5 of 5 images"), "the script counted the cards");
    // A screenshot of the page: the requested size, and the pictures' colours on it.
    assert_eq!(rendered.screenshot.dimensions(), (1280, 1600));
    let colours: std::collections::HashSet<[u8; 3]> = rendered.screenshot.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 5000,
        "{} colours: the pictures are not drawn",
        colours.len()
    );

    // A picture gone missing is seen as such by the browser and the page says so.
    std::fs::remove_file(out.join("coffee.png")).unwrap();
    let rendered = render(&browser, &page, "report-broken");
    assert_eq!(body_data(&rendered.dom, "loaded"), Some(9));
    assert_eq!(body_data(&rendered.dom, "broken"), Some(1));
    assert!(rendered.dom.contains("1 picture(s) could not be loaded"));
}

fn explain_folder(photos: &Path, out: &Path, extra: &[&str]) -> String {
    let model = mobilenet_path();
    let mut args = vec![
        "explain",
        "--model",
        &model,
        "--image",
        photos.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--batch-size",
        "2",
        "--save-npy",
    ];
    args.extend_from_slice(extra);
    stdout(&ember(&args))
}

#[test]
fn shards_merged_equal_an_unsharded_run() {
    let photos = photo_folder("shard-photos");
    let whole = scratch("shard-whole");
    explain_folder(&photos, &whole, &["--report"]);
    // Three slices into one folder (as machines sharing a file system would), in any order.
    let sliced = scratch("shard-sliced");
    for shard in ["2/3", "0/3", "1/3"] {
        let text = explain_folder(&photos, &sliced, &["--shard", shard, "--report"]);
        assert!(text.contains(&format!("(slice {shard} of 5)")), "{text}");
    }
    // Each slice's report is its own page.
    for k in 0..3 {
        let page = std::fs::read_to_string(sliced.join(format!("report-{k}-of-3.html"))).unwrap();
        let cards = page.matches("<article").count();
        assert_eq!(cards, if k == 2 { 1 } else { 2 }, "slice {k}");
    }
    let slice_summaries: Vec<String> = (0..3)
        .map(|k| {
            sliced
                .join(format!("summary-{k}-of-3.json"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let slice_sizes: Vec<usize> = slice_summaries
        .iter()
        .map(|s| summary(Path::new(s))["images"].as_array().unwrap().len())
        .collect();
    assert_eq!(slice_sizes, [2, 2, 1], "input i goes to slice i mod 3");
    // Missing a slice is an error.
    let merged = sliced.join("summary.json");
    let output = ember(&[
        "merge-summaries",
        &slice_summaries[0],
        &slice_summaries[2],
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_clean_error(&output, "slices 1/3 are missing");
    let mut args = vec!["merge-summaries"];
    args.extend(slice_summaries.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap(), "--report"]);
    let text = stdout(&ember(&args));
    assert!(text.contains("merged 3 slices (5 inputs)"), "{text}");
    assert!(sliced.join("report.html").exists());
    // The rows, file names and files of the unsharded run, but for where they are. Inputs meet
    // other neighbours in the slices' batches, which moves scores and maps by float rounding
    // (measured: ≤ 4e-7), so numbers agree to 1e-5 and pictures to one level in 255.
    let whole_rows = rows_without_time(&summary(&whole.join("summary.json")));
    let merged_rows = rows_without_time(&summary(&merged));
    assert_eq!(whole_rows.len(), 5);
    let relocated = |rows: &[Value], dir: &Path| {
        let text = serde_json::to_string(rows)
            .unwrap()
            .replace(dir.to_str().unwrap(), "<out>");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_same(
        &relocated(&whole_rows, &whole),
        &relocated(&merged_rows, &sliced),
        "images",
    );
    for name in ["chelsea.png", "chelsea-2.png", "cat #2.png", "coffee.png", "rocket.png"] {
        let (a, b) = (
            image::open(whole.join(name)).unwrap().to_rgb8(),
            image::open(sliced.join(name)).unwrap().to_rgb8(),
        );
        assert_eq!(a.dimensions(), b.dimensions(), "{name}");
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 1, "{name}: pixels differ by {worst}");
    }
    for name in ["chelsea.npy", "chelsea-2.npy", "cat #2.npy", "coffee.npy", "rocket.npy"] {
        let (a, b) = (read_npy(&whole.join(name)).0, read_npy(&sliced.join(name)).0);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(a.len() == b.len() && worst < 1e-5, "{name}: {worst}");
    }
}

/// Two JSON documents equal in structure, strings, integers and flags, and in their other
/// numbers to 1e-5.
fn assert_same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}");
            for (key, value) in x {
                assert_same(value, &y[key], &format!("{at}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (k, (p, q)) in x.iter().zip(y).enumerate() {
                assert_same(p, q, &format!("{at}[{k}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{at}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn resume_after_an_interrupted_run_does_only_the_missing_work() {
    let photos = photo_folder("resume-photos");
    let out = scratch("resume-out");
    explain_folder(&photos, &out, &[]);
    let summary_path = out.join("summary.json");
    let complete = summary(&summary_path);
    // As a run interrupted after its checkpoint of the first three inputs leaves it: three rows,
    // and the file of one of them lost.
    let mut interrupted = complete.clone();
    interrupted["images"].as_array_mut().unwrap().truncate(3);
    std::fs::write(&summary_path, serde_json::to_string(&interrupted).unwrap()).unwrap();
    let rows = complete["images"].as_array().unwrap();
    let overlay = |k: usize| PathBuf::from(rows[k]["overlay"].as_str().unwrap());
    std::fs::remove_file(PathBuf::from(rows[1]["map"].as_str().unwrap())).unwrap();
    for k in 3..5 {
        std::fs::remove_file(overlay(k)).unwrap();
    }
    let modified = |k: usize| std::fs::metadata(overlay(k)).unwrap().modified().unwrap();
    let before = [modified(0), modified(2)];
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = explain_folder(&photos, &out, &["--resume"]);
    assert!(text.contains("resuming: 2 of 5 inputs were done"), "{text}");
    assert_eq!([modified(0), modified(2)], before, "finished inputs are not redone");
    assert!(
        rows.iter()
            .all(|row| PathBuf::from(row["map"].as_str().unwrap()).exists())
    );
    // The resumed run's summary is the whole run's (redone inputs meet other batch neighbours:
    // numbers to 1e-5).
    assert_same(
        &Value::Array(rows_without_time(&summary(&summary_path))),
        &Value::Array(rows_without_time(&complete)),
        "images",
    );
    // Another run's settings are not resumed.
    let output = ember(&[
        "explain",
        "--model",
        &mobilenet_path(),
        "--image",
        photos.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--save-npy",
        "--method",
        "hirescam",
        "--resume",
    ]);
    assert_clean_error(&output, "methods: [\"gradcam\"] → [\"hirescam\"]");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn shards_and_sheets_refuse_what_they_cannot_do() {
    let photo = path("examples/images/chelsea.png");
    let photos = path("examples/images");
    let out_dir = scratch("refused");
    let out_dir = out_dir.to_str().unwrap();
    for (shard, message) in [
        ("3/2", "\"3/2\" is not K/N with 0 ≤ K < N"),
        ("0/0", "\"0/0\" is not K/N"),
        ("1", "\"1\" is not K/N"),
    ] {
        let output = ember(&[
            "explain",
            "--model",
            &mobilenet_path(),
            "--image",
            &photos,
            "--out-dir",
            out_dir,
            "--shard",
            shard,
        ]);
        assert_clean_error(&output, message);
        assert_eq!(output.status.code(), Some(2));
    }
    let npy = scratch("one.npy");
    let out = scratch("one.png");
    let model = mobilenet_path();
    for (extra, message) in [
        (
            vec!["--method", "gradcam,scorecam", "--save-npy", npy.to_str().unwrap()],
            "names one file, but 2 maps are asked for",
        ),
        (
            vec!["--rectifier", "relu,abs", "--save-guided-gradcam"],
            "--save-guided-gradcam multiplies one map",
        ),
        (vec!["--report"], "--report is for runs over several images"),
        (vec!["--shard", "0/2"], "--shard is for runs over several images"),
        (vec!["--layer", "a", "--compare-layers", "b"], "cannot be used with"),
        (
            vec!["--method", "gradcam,hirescam,gradcam"],
            "--method lists gradcam twice",
        ),
        (vec!["--rectifier", "abs,relu,abs"], "--rectifier lists abs twice"),
    ] {
        let mut args = vec![
            "explain",
            "--model",
            &model,
            "--image",
            &photo,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let output = ember(&args);
        assert_clean_error(&output, message);
        assert_eq!(output.status.code(), Some(2), "{message}");
    }
}
