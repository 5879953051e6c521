//! `examples/train_explain.rs` as a user runs it: one epoch on 6000 Fashion-MNIST images from
//! Debian's `dataset-fashion-mnist` (installed by `.ci/run`; without it this test fails and says
//! so), sheets and index.html written; one readable line for each kind of bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

mod examples_support;

use examples_support::{assert_clean_error, assert_success, example};

fn run(args: &[&str]) -> Output {
    Command::new(example("train_explain"))
        .args(args)
        .args(["--device", "flex"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", example("train_explain").display()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-train-example-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn one_epoch_on_6000_images_reaches_70_percent_and_writes_the_sheets() {
    let data = std::path::Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    assert!(
        data.is_file(),
        "Fashion-MNIST is missing: install Debian's dataset-fashion-mnist (.ci/run does)"
    );
    let out = scratch("one-epoch");
    let output = run(&[
        "--epochs",
        "1",
        "--train-limit",
        "6000",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    let stdout = assert_success(&output);
    let accuracy: f64 = stdout
        .lines()
        .find_map(|line| line.split("test accuracy: ").nth(1))
        .unwrap_or_else(|| panic!("no test accuracy printed: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.70, "test accuracy {accuracy} after one epoch: {stdout}");
    let sheet = image::open(out.join("epoch-001.png")).unwrap().to_rgb8();
    // Ten test images (one per class) in rows, the image and two methods in columns.
    assert!(
        sheet.height() > 10 * 112 && sheet.width() > 3 * 112,
        "{:?}",
        sheet.dimensions()
    );
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        index.contains("epoch-001.png") && index.contains("valid Accuracy"),
        "{index}"
    );
    assert!(stdout.contains("% of the epoch"), "no cost reported: {stdout}");
}

#[test]
fn the_hand_written_loop_explains_the_model_in_training() {
    let out = scratch("hand-written");
    let output = run(&[
        "--epochs",
        "2",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--training-loop",
        "hand-written",
        "--validation",
        "0,1,2",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    let stdout = assert_success(&output);
    assert_eq!(stdout.matches("test accuracy: ").count(), 2, "{stdout}");
    for name in ["epoch-001.png", "epoch-002.png", "index.html"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("test accuracy"), "{index}");
}

#[test]
fn a_missing_dataset_says_how_to_install_it() {
    let output = run(&[
        "--data",
        "/nonexistent/fashion",
        "--out-dir",
        scratch("missing").to_str().unwrap(),
    ]);
    assert_clean_error(&output, "dataset-fashion-mnist");
}

#[test]
fn an_out_of_range_validation_index_is_refused() {
    let output = run(&[
        "--validation",
        "3,10000",
        "--out-dir",
        scratch("index").to_str().unwrap(),
    ]);
    assert_clean_error(
        &output,
        "--validation index 10000 is out of range: the test split has 10000 images",
    );
}

#[test]
fn zero_epochs_are_refused() {
    let output = run(&["--epochs", "0", "--out-dir", scratch("zero").to_str().unwrap()]);
    assert_clean_error(&output, "--epochs must be at least 1");
}

#[test]
fn the_data_folder_is_never_the_output_folder() {
    let output = run(&["--out-dir", "/usr/share/datasets/fashion-mnist"]);
    assert_clean_error(&output, "is the data folder");
}
