//! Turning arguments into devices, sizes, pre-processing and inputs.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use ember_core::limits::read_regular_file;
use ember_core::{CamError, Explainer, Layout, Method, Region, RegionTarget, TokenGrid, describe_dims, parse_class};
use ember_vision::{Preprocess, load_rgb, read_npy};

use crate::Failure;
use crate::cli::{InputArgs, PreprocessKind};

/// The checks of the input arguments that need no file: usage errors.
pub fn check_arguments(args: &InputArgs) -> Result<(), Failure> {
    if args.batch_size == 0 {
        return Err(Failure::usage("--batch-size must be at least 1"));
    }
    if args.perturbation_batch_size == Some(0) {
        return Err(Failure::usage("--perturbation-batch-size must be at least 1"));
    }
    for (values, name) in [(&args.mean, "--mean"), (&args.std, "--std")] {
        if let Some(values) = values {
            three(values, name)?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Failure::usage(format!(
                    "{name} values must be finite numbers, got {bad}"
                )));
            }
        }
    }
    if args.std.as_ref().is_some_and(|std| std.contains(&0.0)) {
        return Err(Failure::usage("--std values must not be zero"));
    }
    if let Some(text) = &args.token_grid {
        token_grid(text, args.skip_tokens)?;
    }
    if let Some(text) = &args.region {
        region(text)?;
    }
    Ok(())
}

/// An overlay path whose extension names an image format Ember writes, and not a folder.
pub fn check_picture_path(path: &Path, flag: &str) -> Result<(), Failure> {
    if path.is_dir() {
        return Err(Failure::usage(format!(
            "{flag} {} is a folder; name a .png or .jpg file",
            path.display()
        )));
    }
    match image::ImageFormat::from_path(path) {
        Ok(format) if format.writing_enabled() => Ok(()),
        _ => Err(Failure::usage(format!(
            "{flag} {} must name a .png or .jpg file",
            path.display()
        ))),
    }
}

/// The explainer of `method` at `layers` with the input arguments' settings (layout,
/// perturbation batch); arguments already checked by [`check_arguments`].
pub fn explainer(args: &InputArgs, method: Method, layers: &[String]) -> Explainer {
    let mut explainer = Explainer::from(method);
    if let Some(copies) = args.perturbation_batch_size {
        explainer = explainer.perturbation_batch(copies);
    }
    if let Some(layout) = args.layout {
        explainer = explainer.layout(layout.into());
    }
    if let Some(Ok(grid)) = args
        .token_grid
        .as_deref()
        .map(|text| token_grid(text, args.skip_tokens))
    {
        explainer = explainer.layout(Layout::Tokens(grid));
    }
    for layer in layers {
        explainer = explainer.layer(layer.clone());
    }
    explainer
}

/// `--region X0,Y0,X1,Y1`: a non-empty box of output pixels (ends exclusive).
pub fn region(text: &str) -> Result<Region, Failure> {
    let usage = || {
        Failure::usage(format!(
            "--region `{text}` is not X0,Y0,X1,Y1 with integers, X0 < X1 and Y0 < Y1 (output pixels, ends exclusive)"
        ))
    };
    let values: Vec<usize> = text
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| usage())?;
    let &[x0, y0, x1, y1] = values.as_slice() else {
        return Err(usage());
    };
    if x0 >= x1 || y0 >= y1 {
        return Err(usage());
    }
    Ok(Region::Box { x0, y0, x1, y1 })
}

/// `--mask FILE.png`: each pixel's grey level in [0, 1] (black 0, white 1), `[height, width]`,
/// times `--region`'s box when there is one.
pub fn mask(path: &Path, within: Option<&Region>) -> Result<Region, Failure> {
    let picture = load_rgb(path).map_err(|e| Failure::Input(e.to_string()))?;
    let size = [picture.height() as usize, picture.width() as usize];
    let grey = image::DynamicImage::ImageRgb8(picture).into_luma8();
    let mut weights: Vec<f32> = grey.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
    if let Some(within) = within {
        let inside = RegionTarget {
            channel: 0,
            region: within.clone(),
        }
        .weights(size)
        .map_err(|e| Failure::Input(format!("--region against --mask {}: {e}", path.display())))?;
        for (weight, inside) in weights.iter_mut().zip(inside) {
            *weight *= inside;
        }
    }
    if weights.iter().all(|&w| w == 0.0) {
        return Err(Failure::Input(format!(
            "the mask {} selects no pixel{} (every weight is 0: black)",
            path.display(),
            if within.is_some() { " inside --region" } else { "" }
        )));
    }
    Ok(Region::Mask { weights, size })
}

/// `--token-grid HxW` with `--skip-tokens K`.
fn token_grid(text: &str, skip: Option<usize>) -> Result<TokenGrid, Failure> {
    let [height, width] = parse_size(text).map_err(|_| {
        Failure::usage(format!(
            "--token-grid `{text}` is not ROWSxCOLUMNS with positive integers (e.g. 14x14)"
        ))
    })?;
    Ok(TokenGrid {
        skip: skip.unwrap_or(0),
        height: height as usize,
        width: width as usize,
    })
}

/// The `[height, width]` images are brought to: the model's static size, or `--size`.
pub fn input_size(model_shape: &[Option<usize>], requested: Option<[u32; 2]>) -> Result<[u32; 2], String> {
    let channels = model_shape.get(1).copied().flatten();
    if let Some(c) = channels.filter(|&c| c != 3) {
        return Err(format!(
            "the model takes {c}-channel inputs, not RGB images: pass a pre-processed tensor with --input-npy"
        ));
    }
    let fixed = |d: Option<&Option<usize>>| d.copied().flatten();
    match (fixed(model_shape.get(2)), fixed(model_shape.get(3)), requested) {
        (Some(h), Some(w), None) => match (u32::try_from(h), u32::try_from(w)) {
            (Ok(h), Ok(w)) => Ok([h, w]),
            _ => Err(format!("the model's input size {h}x{w} is larger than any image")),
        },
        (Some(h), Some(w), Some(r)) if [r[0] as usize, r[1] as usize] == [h, w] => Ok(r),
        (Some(h), Some(w), Some([rh, rw])) => Err(format!(
            "--size {rh}x{rw} does not match the model's fixed input size {h}x{w}"
        )),
        (_, _, Some(r)) => Ok(r),
        _ => Err(format!(
            "the model's input size is dynamic ({}): choose one with --size (e.g. --size 224)",
            describe_dims(model_shape)
        )),
    }
}

/// `224` or `224x320` (height × width), each side a positive 32-bit number.
pub fn parse_size(text: &str) -> Result<[u32; 2], Failure> {
    let parse = |s: &str| {
        s.trim().parse::<u32>().ok().filter(|&v| v > 0).ok_or_else(|| {
            Failure::usage(format!(
                "--size `{text}` is not N or HxW with integers from 1 to {}",
                u32::MAX
            ))
        })
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => {
            let n = parse(text)?;
            Ok([n, n])
        }
    }
}

/// The pre-processing chosen on the command line for images of `[height, width]` (arguments
/// already checked by [`check_arguments`]).
pub fn preprocess(args: &InputArgs, [h, w]: [u32; 2]) -> Result<Preprocess, Failure> {
    let mut recipe = match args.preprocess {
        PreprocessKind::Imagenet => {
            // torchvision's Resize(256) + CenterCrop(224), scaled to the input size; for a crop
            // that is not square, the resize covers both of its sides.
            let scale = |side: u32| (side as f64 * 256.0 / 224.0).round().min(u32::MAX as f64) as u32;
            Preprocess {
                resize_shorter: None,
                resize_to_cover: Some([scale(h), scale(w)]),
                center_crop: Some([h, w]),
                ..Preprocess::imagenet()
            }
        }
        PreprocessKind::Resize => Preprocess {
            resize_shorter: None,
            resize_exact: Some([h, w]),
            center_crop: None,
            ..Preprocess::imagenet()
        },
        PreprocessKind::None => Preprocess::scale_only(h, w),
    };
    overrides(args, &mut recipe)?;
    Ok(recipe)
}

/// The longest pre-processing config read.
const CONFIG_LIMIT: u64 = 1 << 20;

/// The recipe of `--preprocess-config` (JSON), with the command line's overrides.
pub fn preprocess_config(args: &InputArgs, path: &Path) -> Result<Preprocess, Failure> {
    let bytes = read_regular_file(path, "pre-processing config", CONFIG_LIMIT)?;
    let mut recipe: Preprocess = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Input(format!("{} is not a pre-processing config: {e}", path.display())))?;
    if recipe.std.contains(&0.0) || recipe.mean.iter().chain(&recipe.std).any(|v| !v.is_finite()) {
        return Err(Failure::Input(format!(
            "{}: mean and std must be finite and std non-zero",
            path.display()
        )));
    }
    overrides(args, &mut recipe)?;
    Ok(recipe)
}

/// --mean, --std, --channel-order, --value-range and --resize-filter over a recipe.
fn overrides(args: &InputArgs, recipe: &mut Preprocess) -> Result<(), Failure> {
    if let Some(mean) = &args.mean {
        recipe.mean = three(mean, "--mean")?;
    }
    if let Some(std) = &args.std {
        recipe.std = three(std, "--std")?;
    }
    if let Some(order) = args.channel_order {
        recipe.channel_order = order;
    }
    if let Some(range) = args.value_range {
        recipe.value_range = range;
    }
    if let Some(filter) = args.resize_filter {
        recipe.filter = filter;
    }
    Ok(())
}

/// R,G,B from three values, or one value for every channel (TensorFlow and PaddlePaddle recipes
/// such as `(pixel − 127) / 128`).
fn three(values: &[f32], name: &str) -> Result<[f32; 3], Failure> {
    match values {
        &[all] => Ok([all; 3]),
        _ => values.try_into().map_err(|_| {
            Failure::usage(format!(
                "{name} takes three values (R,G,B) or one for every channel, got {}",
                values.len()
            ))
        }),
    }
}

/// The images named on the command line, folders expanded (sorted, PNG and JPEG only).
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if found.is_empty() {
                return Err(format!("{} holds no PNG or JPEG image", path.display()));
            }
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(format!("cannot read image {}: no such file", path.display()));
        }
    }
    Ok(files)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// A pre-processed `[N, C, H, W]` (or `[C, H, W]`) float tensor from a `.npy` file.
pub fn tensor_from_npy(path: &Path, device: &Device) -> Result<Tensor<4>, String> {
    let (values, shape) = read_npy(path).map_err(|e| e.to_string())?;
    let shape: [usize; 4] = match shape.as_slice() {
        [n, c, h, w] => [*n, *c, *h, *w],
        [c, h, w] => [1, *c, *h, *w],
        other => {
            return Err(format!(
                "{} has shape {other:?}; expected [N, C, H, W] or [C, H, W]",
                path.display()
            ));
        }
    };
    if shape.contains(&0) {
        return Err(format!("{} is empty (shape {shape:?})", path.display()));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("{} contains a non-finite value ({bad})", path.display()));
    }
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// The longest labels file read: ImageNet-21k's names take 0.5 MiB.
const LABELS_LIMIT: u64 = 64 << 20;

/// Class names, one per line (UTF-8 text).
pub fn labels(path: Option<&Path>) -> Result<Vec<String>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bytes = read_regular_file(path, "labels", LABELS_LIMIT).map_err(|e| e.to_string())?;
    let text =
        String::from_utf8(bytes).map_err(|e| format!("cannot read labels {}: not UTF-8 text ({e})", path.display()))?;
    Ok(text.lines().map(|l| l.trim().to_owned()).collect())
}

/// A class given as an index or a label.
pub fn class_index(text: &str, labels: &[String]) -> Result<usize, String> {
    parse_class(text, labels).map_err(|error| match error {
        CamError::ClassNameWithoutLabels(_) => {
            format!("--class `{text}` is not an index; pass --labels to choose classes by name")
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_std_take_three_values_or_one_for_every_channel() {
        assert_eq!(three(&[0.1, 0.2, 0.3], "--mean").unwrap(), [0.1, 0.2, 0.3]);
        assert_eq!(three(&[127.0], "--mean").unwrap(), [127.0; 3]);
        for wrong in [&[0.5, 0.5][..], &[], &[1.0, 2.0, 3.0, 4.0]] {
            assert!(three(wrong, "--std").is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn sizes_come_from_the_model_or_the_flag() {
        let fixed = [None, Some(3), Some(224), Some(224)];
        let dynamic = [None, Some(3), None, None];
        let size = |text: &str| Some(parse_size(text).unwrap());
        assert_eq!(input_size(&fixed, None).unwrap(), [224, 224]);
        assert_eq!(input_size(&fixed, size("224")).unwrap(), [224, 224]);
        assert!(input_size(&fixed, size("256")).unwrap_err().contains("does not match"));
        assert!(input_size(&dynamic, None).unwrap_err().contains("--size"));
        assert_eq!(input_size(&dynamic, size("96x128")).unwrap(), [96, 128]);
        for bad in ["0", "16x", "4294967296", "-3", "x"] {
            assert!(matches!(parse_size(bad), Err(Failure::Usage(_))), "{bad}");
        }
        assert!(
            input_size(&[None, Some(1), Some(28), Some(28)], None)
                .unwrap_err()
                .contains("--input-npy")
        );
    }

    #[test]
    fn classes_by_index_or_label() {
        let labels = vec!["cat".to_owned(), "dog".to_owned()];
        assert_eq!(class_index("1", &labels).unwrap(), 1);
        assert_eq!(class_index("Dog", &labels).unwrap(), 1);
        assert!(class_index("dgo", &labels).unwrap_err().contains("dog"));
        assert!(class_index("dog", &[]).unwrap_err().contains("--labels"));
    }
}
