//! `examples/explain.rs` as a user runs it: a photo in, an overlay out, one readable line on error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use examples_support::assert_clean_error;
use image::{DynamicImage, ImageBuffer, Luma, Rgba};

mod examples_support;

fn example() -> PathBuf {
    examples_support::example("explain")
}

/// Runs the example on flex unless `args` choose a device (with `--features wgpu` the example's
/// default is wgpu; these tests are about the example, backend parity is tested elsewhere).
fn run(args: &[&str]) -> Output {
    let device: &[&str] = if args.contains(&"--device") {
        &[]
    } else {
        &["--device", "flex"]
    };
    Command::new(example())
        .args(args)
        .args(device)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", example().display()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-example-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_default_run_explains_the_cat_and_writes_an_overlay() {
    let out = scratch("default.png");
    let npy = scratch("default.npy");
    let output = run(&["--out", out.to_str().unwrap(), "--save-npy", npy.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Egyptian cat"), "{stdout}");
    assert!(stdout.contains(&format!("overlay (451×300) written to {}", out.display())));
    // On the whole photo (451×300), with the heat on the cat's face: the reddest pixel lies
    // around the nose, in the lower middle of the 262×262 window the network saw.
    let overlay = image::open(&out).unwrap().to_rgb8();
    assert_eq!(overlay.dimensions(), (451, 300));
    let (x, y, _) = overlay
        .enumerate_pixels()
        .map(|(x, y, p)| (x, y, i32::from(p[0]) - i32::from(p[2])))
        .max_by_key(|&(_, _, redness)| redness)
        .unwrap();
    assert!(
        (150..330).contains(&x) && (150..285).contains(&y),
        "reddest at ({x}, {y})"
    );
    let on_input = scratch("on-input.png");
    let output = run(&["--out", on_input.to_str().unwrap(), "--on-input"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(image::open(&on_input).unwrap().to_rgb8().dimensions(), (224, 224));
    let npy_bytes = std::fs::read(&npy).unwrap();
    assert!(npy_bytes.starts_with(b"\x93NUMPY"));
    assert_eq!(
        npy_bytes.len() - 128,
        224 * 224 * 4,
        "float32 224×224 after a 128-byte header"
    );
}

#[test]
fn grayscale_alpha_and_16_bit_images_are_converted() {
    let photo = image::open("examples/images/chelsea.png").unwrap();
    let gray: ImageBuffer<Luma<u16>, Vec<u16>> = photo.to_luma16();
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = photo.to_rgba8();
    let cases = [
        ("gray16.png", DynamicImage::ImageLuma16(gray)),
        ("rgba.png", DynamicImage::ImageRgba8(rgba)),
        ("rgb16.png", DynamicImage::ImageRgb16(photo.to_rgb16())),
    ];
    for (name, image) in cases {
        let path = scratch(name);
        image.save(&path).unwrap();
        let out = scratch(&format!("{name}.overlay.png"));
        let output = run(&["--image", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(Path::new(&out).exists());
    }
}

#[test]
fn missing_and_corrupt_images_are_one_line_errors() {
    assert_clean_error(&run(&["--image", "no/such/photo.jpg"]), "no/such/photo.jpg");
    let corrupt = scratch("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    assert_clean_error(&run(&["--image", corrupt.to_str().unwrap()]), "cannot read image");
}

#[test]
fn the_photo_is_never_overwritten() {
    let photo = scratch("mine.png");
    std::fs::copy("examples/images/chelsea.png", &photo).unwrap();
    let original = std::fs::read(&photo).unwrap();
    let photo = photo.to_str().unwrap();
    assert_clean_error(&run(&["--image", photo, "--out", photo]), "is the input image");
    let out = scratch("twice.png");
    let out = out.to_str().unwrap();
    assert_clean_error(
        &run(&["--out", out, "--save-npy", out]),
        "--out and --save-npy are the same file",
    );
    assert_eq!(std::fs::read(photo).unwrap(), original);
}

#[test]
fn bad_layers_classes_and_devices_are_one_line_errors() {
    let message = assert_clean_error(&run(&["--layer", "/features/features.18/Clip"]), "unknown layer");
    assert!(message.contains("closest names: /features/features.18"), "{message}");
    assert_clean_error(&run(&["--class", "1000"]), "class 1000 is out of range");
    let message = assert_clean_error(&run(&["--class", "tabbby"]), "unknown class `tabbby`");
    assert!(message.contains("tabby"), "{message}");
    assert_clean_error(&run(&["--device", "tpu"]), "unknown device `tpu`");
}

#[test]
fn the_layers_can_be_listed() {
    let output = run(&["--list-layers"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 98);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("/features/features.18/features.18.2/Clip") && l.contains("[N, 1280, 7, 7]"))
    );
}
