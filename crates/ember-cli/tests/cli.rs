//! The `ember` binary as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::Device;
use common::*;
use ember_cam::models::mobilenet_v2;
use ember_cam::vision::ColormapName;
use ember_cam::vision::{Preprocess, load_rgb, write_npy};
use ember_cam::{ClassTarget, Explainer, GradCam, Method, Rectifier, Vocabulary, burn, maps_to_host};
use onnx_ir::{Message, ModelProto};

#[test]
fn help_documents_every_option() {
    let top = stdout(&ember(&["--help"]));
    assert!(
        top.contains("explain") && top.contains("layers") && top.contains("merge-summaries"),
        "{top}"
    );
    let help = stdout(&ember(&["explain", "--help"]));
    for option in [
        "--model",
        "--image",
        "--input-npy",
        "--layer",
        "--class",
        "--labels",
        "--method",
        "--rectifier",
        "--out",
        "--out-dir",
        "--save-npy",
        "--summary",
        "--device",
        "--preprocess",
        "--mean",
        "--std",
        "--size",
        "--batch-size",
        "--score",
        "--colormap",
        "--image-weight",
        "--save-guided-backprop",
        "--save-guided-gradcam",
        "--perturbation-batch-size",
        "--eigen-smooth",
        "--aug-smooth",
        "--compare-layers",
        "--overlay-on",
        "--report",
        "--shard",
        "--resume",
        "--output",
        "--channel",
        "--region",
        "--mask",
    ] {
        assert!(help.contains(option), "`ember explain --help` lacks {option}");
    }
    // Every value of every vocabulary, with its description, from the library's own tables.
    fn listed<V: Vocabulary + std::fmt::Display>(help: &str) {
        for &value in V::ALL {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("- {}:", value.name())))
                .unwrap_or_else(|| panic!("`ember explain --help` lacks {} {value}:\n{help}", V::KIND));
            assert!(line.ends_with(value.description()), "{line}");
        }
    }
    listed::<Method>(&help);
    listed::<Rectifier>(&help);
    listed::<ColormapName>(&help);
    listed::<ember_cam::vision::ChannelOrder>(&help);
    listed::<ember_cam::vision::ValueRange>(&help);
    listed::<ember_cam::vision::ResizeFilter>(&help);
    assert!(stdout(&ember(&["layers", "--help"])).contains("--model"));
    // A name outside a vocabulary is refused with the list of valid ones.
    let refused = ember(&[
        "explain", "--model", "m.onnx", "--image", "x.png", "--method", "gradcam+",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    for &method in Method::ALL {
        assert!(stderr.contains(method.name()), "{stderr}");
    }
    // The old name of the signed rectifier still works.
    let old = ember(&[
        "explain",
        "--model",
        "/nonexistent.onnx",
        "--image",
        "x.png",
        "--rectifier",
        "none",
    ]);
    // Parsed: the run gets as far as the missing image (an input failure, exit 1).
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(
        stderr.contains("cannot read image x.png") && old.status.code() == Some(1),
        "`none` is still accepted: {stderr}"
    );
}

#[test]
fn the_map_is_the_build_time_example_s_map() {
    let out = scratch("chelsea.png");
    let npy = scratch("chelsea.npy");
    let output = explain(
        &path("models/mobilenet_v2.onnx"),
        &[
            "--labels",
            &path("models/imagenet_classes.txt"),
            "--out",
            out.to_str().unwrap(),
            "--save-npy",
            npy.to_str().unwrap(),
        ],
    );
    let text = stdout(&output);
    assert!(text.contains("Egyptian cat"), "{text}");
    // The overlay covers the photo (451×300); the map stays at the network input's size.
    assert_eq!(image::open(&out).unwrap().width(), 451);
    let (map, shape) = read_npy(&npy);
    assert_eq!(shape, vec![224, 224]);

    // What `cargo run --example explain` computes: the build-time model, same photo and recipe.
    let device = Device::flex();
    let model = mobilenet_v2::Model::from_embedded(&device);
    let photo = load_rgb(&root().join("examples/images/chelsea.png")).unwrap();
    let (input, _) = Preprocess::imagenet().apply(&photo, &device).unwrap();
    let explanation = Explainer::new(GradCam)
        .explain(&model, input, &ClassTarget::TopClass)
        .unwrap();
    let expected = maps_to_host(&explanation.maps).unwrap();
    let worst = map
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("ember vs the build-time example: worst map difference {worst:.1e}");
    assert!(worst <= 1e-5, "maps differ by {worst}");
}

#[test]
fn a_folder_is_explained_in_batches_with_a_summary() {
    let dir = scratch("batch");
    let maps = scratch("batch-maps");
    let output = explain(
        &path("models/mobilenet_v2.onnx"),
        &[
            "--image",
            &path("examples/images"),
            "--labels",
            &path("models/imagenet_classes.txt"),
            "--batch-size",
            "2",
            "--out-dir",
            dir.to_str().unwrap(),
            "--save-npy",
            maps.to_str().unwrap(),
            "--method",
            "gradcam++",
        ],
    );
    let text = stdout(&output);
    assert!(text.contains("explained 3 of 3"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let images = summary["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(summary["settings"]["methods"][0], "gradcam++");
    for entry in images {
        assert!(Path::new(entry["overlay"].as_str().unwrap()).exists(), "{entry}");
        // The maps are in the folder --save-npy named, one per image.
        let map_path = PathBuf::from(entry["map"].as_str().unwrap());
        assert_eq!(map_path.parent(), Some(maps.as_path()), "{entry}");
        let (map, shape) = read_npy(&map_path);
        assert_eq!(shape, vec![224, 224]);
        // The reported peak is the map's maximum, at (x, y) = (column, row).
        let (index, value) =
            map.iter().copied().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |best, (i, v)| if v > best.1 { (i, v) } else { best },
            );
        assert_eq!(entry["peak"]["x"].as_u64().unwrap() as usize, index % 224, "{entry}");
        assert_eq!(entry["peak"]["y"].as_u64().unwrap() as usize, index / 224, "{entry}");
        assert!((entry["peak"]["value"].as_f64().unwrap() as f32 - value).abs() <= 1e-6);
        assert!(
            (value - 1.0).abs() <= 1e-5,
            "maps are normalised to a peak of 1: {value}"
        );
        // The probability is the softmax of the scores at the explained class: top class here.
        let probability = entry["probability"].as_f64().unwrap();
        assert!(probability > 0.0 && probability <= 1.0, "{entry}");
    }
    let entry_of = |file: &str| {
        images
            .iter()
            .find(|e| e["image"].as_str().unwrap().ends_with(file))
            .unwrap()
            .clone()
    };
    assert_eq!(entry_of("chelsea.png")["label"], "Egyptian cat");

    // In a batch (coffee shares one with the cat) each image gets what it gets on its own.
    let alone = scratch("coffee-alone.npy");
    let output = explain(
        &path("models/mobilenet_v2.onnx"),
        &[
            "--image",
            &path("examples/images/coffee.png"),
            "--method",
            "gradcam++",
            "--save-npy",
            alone.to_str().unwrap(),
            "--summary",
            scratch("coffee-alone.json").to_str().unwrap(),
        ],
    );
    stdout(&output);
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch("coffee-alone.json")).unwrap()).unwrap();
    let coffee = entry_of("coffee.png");
    assert_eq!(single["images"][0]["class"], coffee["class"]);
    let (batched_map, _) = read_npy(Path::new(coffee["map"].as_str().unwrap()));
    let (alone_map, _) = read_npy(&alone);
    let worst = batched_map
        .iter()
        .zip(&alone_map)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "batched and single maps differ by {worst}");
}

#[test]
fn a_broken_image_in_a_folder_is_reported_and_the_others_explained() {
    let folder = scratch("mixed");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(root().join("examples/images/chelsea.png"), folder.join("a-cat.png")).unwrap();
    std::fs::write(folder.join("b-broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let out = scratch("mixed-out");
    let output = explain(
        &path("models/mobilenet_v2.onnx"),
        &["--image", folder.to_str().unwrap(), "--out-dir", out.to_str().unwrap()],
    );
    assert_clean_error(&output, "1 of 2 inputs failed");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let images = summary["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert!(
        images
            .iter()
            .any(|e| e["error"].as_str().is_some_and(|m| m.contains("b-broken.png")))
    );
    assert!(out.join("a-cat.png").exists());
}

#[test]
fn a_preprocessed_tensor_gives_maps_of_its_own_size() {
    // The zoo's dynamic-size model on the 2 × 3 × 64 × 64 input of its fixture.
    let input = zoo_array("paddle_style", "input");
    let tensor = scratch("tensor.npy");
    write_npy(&tensor, &input, &[2, 3, 64, 64]).unwrap();
    let dir = scratch("tensor-out");
    let paddle = path("tests/fixtures/zoo/paddle_style.onnx");
    let output = explain(
        &paddle,
        &[
            "--input-npy",
            tensor.to_str().unwrap(),
            "--out-dir",
            dir.to_str().unwrap(),
            // Without a folder, the maps go next to the overlays.
            "--save-npy",
        ],
    );
    let text = stdout(&output);
    assert!(text.contains("explained 2 of 2"), "{text}");
    let (map, shape) = read_npy(&dir.join("tensor.npy"));
    assert_eq!(shape, vec![64, 64]);
    assert!(map.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(dir.join("summary.json").exists());

    // One image of it ([C, H, W]), written as a plain heat map.
    write_npy(&tensor, &input[..3 * 64 * 64], &[3, 64, 64]).unwrap();
    let single = scratch("tensor-single.png");
    let output = explain(
        &paddle,
        &[
            "--input-npy",
            tensor.to_str().unwrap(),
            "--out",
            single.to_str().unwrap(),
        ],
    );
    stdout(&output);
    assert_eq!(image::open(&single).unwrap().width(), 64);
}

#[test]
fn layers_are_listed_with_operators_and_shapes() {
    let text = stdout(&ember(&["layers", "--model", &path("models/mobilenet_v2.onnx")]));
    assert!(text.contains("98 tappable layers"), "{text}");
    assert!(text.contains("/features/features.18/features.18.2/Clip"));
    assert!(text.contains("[N, 1280, 7, 7]"));
    assert!(text.contains("(default)"));
    // A layer also answers to its output tensor's name (the last column).
    let row = text
        .lines()
        .find(|l| l.starts_with("/features/features.17/conv/conv.2/Conv "))
        .unwrap();
    let output_name = row.split_whitespace().last().unwrap();
    let by_output = explain(&path("models/mobilenet_v2.onnx"), &["--layer", output_name]);
    assert!(stdout(&by_output).contains("at /features/features.17/conv/conv.2/Conv"));
    let softmax = stdout(&ember(&[
        "layers",
        "--model",
        &path("tests/fixtures/zoo/paddle_style.onnx"),
    ]));
    assert!(
        softmax.contains("[N, 3, ?, ?]") && softmax.contains("softmax"),
        "{softmax}"
    );
}

/// A copy of the zoo ResNet with one change to its graph.
fn edited_resnet(name: &str, edit: impl FnOnce(&mut ModelProto)) -> PathBuf {
    edited_zoo("resnet", name, edit)
}

/// `ember explain --model <model> <extra>`, on the cat photo unless `extra` names inputs, with
/// the overlay in the scratch folder unless `extra` places it.
fn explain(model: &str, extra: &[&str]) -> Output {
    let image = path("examples/images/chelsea.png");
    let out = scratch("overlay.png");
    let mut args = vec!["explain", "--model", model];
    args.extend_from_slice(extra);
    if !extra.contains(&"--input-npy") && !extra.contains(&"--image") {
        args.extend(["--image", image.as_str()]);
    }
    if !extra.contains(&"--out") {
        args.extend(["--out", out.to_str().unwrap()]);
    }
    ember(&args)
}

#[test]
fn corrupt_and_unsupported_models_are_one_line_errors() {
    assert_clean_error(&explain("/nonexistent/model.onnx", &[]), "cannot read ONNX model");
    let not_onnx = scratch("not-onnx.onnx");
    std::fs::write(&not_onnx, b"definitely not protobuf \xff\xfe").unwrap();
    assert_clean_error(&explain(not_onnx.to_str().unwrap(), &[]), "not a valid ONNX model");
    let truncated = scratch("truncated.onnx");
    let bytes = std::fs::read(root().join("tests/fixtures/zoo/resnet.onnx")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&explain(truncated.to_str().unwrap(), &[]), "not a valid ONNX model");

    // An operator the executor lacks, named with the node it is in.
    let unsupported = edited_resnet("unsupported.onnx", |m| {
        let graph = m.graph.as_mut().unwrap();
        let node = graph.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
        node.op_type = "Bernoulli".into();
    });
    assert_clean_error(
        &explain(unsupported.to_str().unwrap(), &[]),
        "unsupported ONNX operator Bernoulli (node `/stem/stem.2/Relu`)",
    );

    // An attribute the executor cannot take is a load-time error naming the file's node: here
    // the second convolution's strides set to 0 (`layers` runs nothing, so it is the load).
    let zero_strides = edited_resnet("zero-strides.onnx", |m| {
        let graph = m.graph.as_mut().unwrap();
        let conv = graph.node.iter_mut().filter(|n| n.op_type == "Conv").nth(1).unwrap();
        let strides = conv.attribute.iter_mut().find(|a| a.name == "strides").unwrap();
        strides.ints = vec![0, 0];
    });
    let second_conv = {
        let bytes = std::fs::read(root().join("tests/fixtures/zoo/resnet.onnx")).unwrap();
        let model = ModelProto::parse_from_bytes(&bytes).unwrap();
        let conv = model.graph.node.iter().filter(|n| n.op_type == "Conv").nth(1).unwrap();
        conv.name.clone()
    };
    let layers = ember(&["layers", "--model", zero_strides.to_str().unwrap()]);
    assert_clean_error(&layers, &format!("Conv (node `{second_conv}`)"));
    assert_clean_error(&layers, "strides [0, 0] must be positive");

    // Weights in an external-data file that is not there.
    let external = edited_resnet("external.onnx", |m| {
        let tensor = &mut m.graph.as_mut().unwrap().initializer[0];
        tensor.raw_data.clear();
        tensor.float_data.clear();
        tensor.external_data.push(Default::default());
        tensor.external_data[0].key = "location".into();
        tensor.external_data[0].value = "weights.bin".into();
        tensor.data_location = protobuf::EnumOrUnknown::from_i32(1); // EXTERNAL
    });
    assert_clean_error(&explain(external.to_str().unwrap(), &[]), "weights.bin");

    // An output that is not class scores: the graph cut after a convolution block.
    let features = edited_resnet("features.onnx", |m| {
        let graph = m.graph.as_mut().unwrap();
        let last = graph.node.iter().position(|n| n.name == "/layer3/relu_2/Relu").unwrap();
        let value = graph.node[last].output[0].clone();
        graph.node.truncate(last + 1);
        graph.output[0].name = value;
        graph.output[0]
            .type_
            .mut_or_insert_default()
            .mut_tensor_type()
            .shape
            .clear();
    });
    assert_clean_error(
        &explain(features.to_str().unwrap(), &[]),
        "the output `/layer3/relu_2/Relu_output_0` is a rank-4 F32 tensor [N, 32, ?, ?]: a dense output; choose the \
         channel to explain with --channel (0 … 31)",
    );
}

/// A copy of a zoo model with one change to its graph.
fn edited_zoo(zoo: &str, name: &str, edit: impl FnOnce(&mut ModelProto)) -> PathBuf {
    let bytes = std::fs::read(root().join(format!("tests/fixtures/zoo/{zoo}.onnx"))).unwrap();
    let mut model = ModelProto::parse_from_bytes(&bytes).unwrap();
    edit(&mut model);
    let path = scratch(name);
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
    path
}

/// The zoo's segmenter (`[N, 3, 64, 64]` logits per pixel) explained for channel 1 summed over a
/// box, as pytorch-grad-cam's `SemanticSegmentationTarget` with a box mask: the map equals its
/// map; a mask PNG of the box, or a white mask with the box, gives the same map; a final Sigmoid
/// is skipped for `--score logits` and kept for `--score output`; regions, masks and channels
/// that do not fit are one-line errors.
#[test]
fn dense_outputs_are_explained_for_a_channel_over_a_region() {
    let model = path("tests/fixtures/zoo/segmenter.onnx");
    let listing = stdout(&ember(&["layers", "--model", &model]));
    assert!(listing.contains("output `logits` [N, 3, 64, 64]: dense"), "{listing}");
    // The coarsest layer, the end of the encoder, is the default (not the output's Resize).
    let default = listing.lines().find(|l| l.ends_with("(default)")).unwrap();
    assert!(default.starts_with("/Relu_1 "), "{default}");

    let (input, reference) = (zoo_array("segmenter", "input"), zoo_array("segmenter", "grad_cam"));
    let tensor = scratch("segmenter-input.npy");
    write_npy(&tensor, &input[..3 * 64 * 64], &[1, 3, 64, 64]).unwrap();
    let map = |model: &str, name: &str, extra: &[&str]| {
        let out = scratch(&format!("{name}.png"));
        let mut args = vec![
            "--input-npy",
            tensor.to_str().unwrap(),
            "--layer",
            "/up/ConvTranspose",
            "--channel",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--save-npy",
        ];
        args.extend_from_slice(extra);
        let printed = stdout(&explain(model, &args));
        let (map, shape) = read_npy(&scratch(&format!("{name}.npy")));
        assert_eq!(shape, vec![64, 64]);
        (map, printed)
    };
    let (boxed, printed) = map(&model, "seg-box", &["--region", "16,8,48,40"]);
    assert!(
        printed.contains("explained channel 1 of `logits` summed over x 16..48, y 8..40"),
        "{printed}"
    );
    let worst = boxed
        .iter()
        .zip(&reference[..64 * 64])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("dense output, channel over a region, through the CLI vs pytorch-grad-cam: {worst:.1e}");
    assert!(worst <= 1e-4, "{worst}");

    // The same box as a mask, and a white mask cut by the box.
    let mask_of = |name: &str, inside: fn(u32, u32) -> bool| {
        let mask = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([if inside(x, y) { 255 } else { 0 }]));
        let file = scratch(name);
        mask.save(&file).unwrap();
        file
    };
    let box_mask = mask_of("seg-box-mask.png", |x, y| (16..48).contains(&x) && (8..40).contains(&y));
    let white = mask_of("seg-white-mask.png", |_, _| true);
    let (masked, printed) = map(&model, "seg-mask", &["--mask", box_mask.to_str().unwrap()]);
    assert!(printed.contains("summed over the mask"), "{printed}");
    assert!(masked == boxed, "the box's mask gives another map");
    let (cut, _) = map(
        &model,
        "seg-cut",
        &["--mask", white.to_str().unwrap(), "--region", "16,8,48,40"],
    );
    assert!(cut == boxed, "a white mask cut by the box gives another map");

    // A final Sigmoid: its input is explained unless --score output asks for the probabilities.
    let sigmoid = edited_zoo("segmenter", "segmenter-sigmoid.onnx", |m| {
        let graph = m.graph.as_mut().unwrap();
        let mut node = onnx_ir::NodeProto::new();
        node.name = "probabilities".into();
        node.op_type = "Sigmoid".into();
        node.input = vec!["logits".into()];
        node.output = vec!["probabilities".into()];
        graph.node.push(node);
        graph.output[0].name = "probabilities".into();
    });
    let sigmoid = sigmoid.to_str().unwrap();
    let listing = stdout(&ember(&["layers", "--model", sigmoid]));
    assert!(
        listing.contains("output is a sigmoid (explained through its logits)"),
        "{listing}"
    );
    let (logits, _) = map(sigmoid, "seg-logits", &["--region", "16,8,48,40"]);
    assert!(logits == boxed, "the logits under a final Sigmoid give another map");
    let (probabilities, _) = map(
        sigmoid,
        "seg-probabilities",
        &["--region", "16,8,48,40", "--score", "output"],
    );
    assert!(probabilities != boxed, "--score output explained the logits");

    let run = |extra: &[&str]| {
        let mut args = vec!["--input-npy", tensor.to_str().unwrap()];
        args.extend_from_slice(extra);
        explain(&model, &args)
    };
    assert_clean_error(
        &run(&[]),
        "a dense output; choose the channel to explain with --channel (0 … 2)",
    );
    assert_clean_error(
        &run(&["--channel", "3"]),
        "--channel 3 is out of range: the output `logits` is a rank-4 F32 tensor [N, 3, 64, 64] (3 channels)",
    );
    assert_clean_error(
        &run(&["--channel", "1", "--region", "0,0,65,8"]),
        "the region x 0..65, y 0..8 is empty or outside the 64x64 output",
    );
    assert_clean_error(&run(&["--channel", "1", "--region", "8,0,8,4"]), "is not X0,Y0,X1,Y1");
    assert_clean_error(&run(&["--channel", "1", "--region", "1,2,3"]), "is not X0,Y0,X1,Y1");
    let small = scratch("seg-small-mask.png");
    image::GrayImage::from_pixel(32, 32, image::Luma([255]))
        .save(&small)
        .unwrap();
    assert_clean_error(
        &run(&["--channel", "1", "--mask", small.to_str().unwrap()]),
        "the mask is 32x32, the output 64x64",
    );
    let black = scratch("seg-black-mask.png");
    image::GrayImage::new(64, 64).save(&black).unwrap();
    assert_clean_error(
        &run(&["--channel", "1", "--mask", black.to_str().unwrap()]),
        "selects no pixel",
    );
    assert_clean_error(
        &run(&[
            "--channel",
            "1",
            "--mask",
            box_mask.to_str().unwrap(),
            "--region",
            "0,0,8,8",
        ]),
        "selects no pixel inside --region",
    );
    assert_clean_error(&run(&["--class", "1"]), "--class chooses among class scores");
    assert_clean_error(&run(&["--class", "1", "--channel", "1"]), "cannot be used with");
    // Classifiers take no dense target; `evaluate` scores classes only.
    assert_clean_error(
        &explain(&path("tests/fixtures/zoo/resnet.onnx"), &["--channel", "1"]),
        "--channel is for dense [N, K, H, W] outputs; the output `logits` is a rank-2 F32 tensor [N, 10]",
    );
    assert_clean_error(
        &ember(&[
            "evaluate",
            "--model",
            &model,
            "--input-npy",
            tensor.to_str().unwrap(),
            "--channel",
            "1",
            "--device",
            "flex",
        ]),
        "a dense output; this command scores class outputs only",
    );
}

/// A graph with two outputs: the first (a feature map) is explained unless `--output` names
/// the other; the class scores chosen by name give the one-output model's map; an unknown name
/// lists the outputs.
#[test]
fn one_of_several_outputs_is_chosen_by_name() {
    let features = "/layer3/relu_2/Relu_output_0";
    let two = edited_zoo("resnet", "two-outputs.onnx", |m| {
        let graph = m.graph.as_mut().unwrap();
        let mut extra = graph.output[0].clone();
        extra.name = features.into();
        extra.type_.mut_or_insert_default().mut_tensor_type().shape.clear();
        graph.output.insert(0, extra);
    });
    let two = two.to_str().unwrap();
    let listing = stdout(&ember(&["layers", "--model", two]));
    assert!(
        listing.contains(&format!("output `{features}` [N, 32, ?, ?]: dense"))
            && listing.contains("--output: `logits`"),
        "{listing}"
    );
    let chosen = stdout(&ember(&["layers", "--model", two, "--output", "logits"]));
    assert!(chosen.contains("output `logits` [N, 10]: class scores"), "{chosen}");

    let map = |model: &str, name: &str, extra: &[&str]| {
        let out = scratch(&format!("{name}.png"));
        let mut args = vec!["--class", "3", "--out", out.to_str().unwrap(), "--save-npy"];
        args.extend_from_slice(extra);
        stdout(&explain(model, &args));
        read_npy(&scratch(&format!("{name}.npy"))).0
    };
    let single = map(&path("tests/fixtures/zoo/resnet.onnx"), "one-output", &[]);
    assert!(
        map(two, "chosen-output", &["--output", "logits"]) == single,
        "the chosen output gives another map"
    );
    // The feature map, explained as a dense output.
    let dense = stdout(&explain(two, &["--channel", "5", "--layer", "/layer2/relu_1/Relu"]));
    assert!(
        dense.contains(&format!("channel 5 of `{features}` summed over every pixel")),
        "{dense}"
    );
    assert_clean_error(
        &explain(two, &["--output", "probs"]),
        &format!("has no output `probs`; its outputs: {features}, logits"),
    );
}

#[test]
fn bad_arguments_and_inputs_are_one_line_errors() {
    // Dynamic input size without --size; with it, the run works.
    let dynamic = path("tests/fixtures/zoo/paddle_style.onnx");
    assert_clean_error(&explain(&dynamic, &[]), "--size");
    stdout(&explain(&dynamic, &["--size", "96x80"]));

    // torch.onnx.export's defaults fix the batch size (here 2, weights in resnet_dynamo.onnx.data):
    // one image is an error, two run as one batch whatever --batch-size says.
    let dynamo = path("tests/fixtures/zoo/resnet_dynamo.onnx");
    assert_clean_error(&explain(&dynamo, &[]), "this export fixes the batch size at 2");
    let pair = scratch("pair");
    std::fs::create_dir_all(&pair).unwrap();
    for photo in ["chelsea.png", "coffee.png"] {
        std::fs::copy(root().join("examples/images").join(photo), pair.join(photo)).unwrap();
    }
    // A folder with a single image is still a batch job (output in --out-dir).
    let single = scratch("single-folder");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(root().join("examples/images/chelsea.png"), single.join("cat.png")).unwrap();
    let single_out = scratch("single-folder-out");
    let text = stdout(&explain(
        &mobilenet_path(),
        &[
            "--image",
            single.to_str().unwrap(),
            "--out-dir",
            single_out.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("explained 1 of 1"), "{text}");
    assert!(single_out.join("cat.png").exists() && single_out.join("summary.json").exists());

    let pair_out = scratch("pair-out");
    let text = stdout(&explain(
        &dynamo,
        &[
            "--image",
            pair.to_str().unwrap(),
            "--batch-size",
            "1",
            "--out-dir",
            pair_out.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("explained 2 of 2"), "{text}");

    let mobilenet = path("models/mobilenet_v2.onnx");
    // --mean/--std take R,G,B as clap's help shows it, or three values.
    stdout(&explain(
        &mobilenet,
        &["--mean", "0.485,0.456,0.406", "--std", "0.229", "0.224", "0.225"],
    ));
    assert_clean_error(
        &explain(&mobilenet, &["--mean", "0.5,0.5"]),
        "--mean takes three values (R,G,B) or one",
    );
    assert_clean_error(&explain(&mobilenet, &["--size", "256"]), "does not match");
    assert_clean_error(
        &explain(&mobilenet, &["--layer", "/features/features.18/Clipp"]),
        "closest names",
    );
    assert_clean_error(&explain(&mobilenet, &["--class", "1000"]), "out of range");
    assert_clean_error(&explain(&mobilenet, &["--class", "tabby"]), "--labels");
    assert_clean_error(
        &explain(&mobilenet, &["--device", "tpu"]),
        "invalid value 'tpu' for '--device",
    );
    let tensor = scratch("wrong-size.npy");
    write_npy(&tensor, &vec![0.5; 3 * 100 * 100], &[3, 100, 100]).unwrap();
    assert_clean_error(
        &explain(&mobilenet, &["--input-npy", tensor.to_str().unwrap()]),
        "expects [N, 3, 224, 224]",
    );
    assert_clean_error(&explain(&mobilenet, &["--image", "/nonexistent.png"]), "no such file");
    let corrupt = scratch("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    assert_clean_error(
        &explain(&mobilenet, &["--image", corrupt.to_str().unwrap()]),
        "cannot read image",
    );
}

#[test]
fn ops_lists_the_executor_s_table_one_per_line() {
    let text = stdout(&ember(&["ops"]));
    let listed: Vec<&str> = text.lines().collect();
    assert_eq!(listed, ember_runtime::supported_operators());
    assert!(listed.contains(&"Conv") && listed.contains(&"Gemm"), "{text}");
    // Each operator once.
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), listed.len());
}

/// The adapter a wgpu device runs on, with the results, on OpenGL (the adapter the CI machine
/// and a machine without Vulkan have). Opted out, as backend parity, with
/// `EMBER_SKIP_BACKENDS=wgpu-gl`.
#[test]
fn the_wgpu_adapter_is_reported_with_the_results() {
    let skipped = std::env::var("EMBER_SKIP_BACKENDS").unwrap_or_default();
    if skipped.split(',').any(|name| name.trim() == "wgpu-gl") {
        println!("SKIPPED: the wgpu-gl adapter report (EMBER_SKIP_BACKENDS={skipped})");
        return;
    }
    let model = path("tests/fixtures/hostile/tiny.onnx");
    let run = explain(&model, &["--device", "wgpu-gl", "--size", "16"]);
    match ember_cam::open_device("wgpu-gl") {
        Err(ember_cam::DeviceError::NotBuiltIn(..)) => assert_clean_error(&run, "not built in"),
        Err(other) => panic!("wgpu-gl cannot start here: {other}"),
        Ok(opened) => {
            let adapter = opened.adapter.expect("a wgpu device has an adapter");
            let text = stdout(&run);
            assert!(text.contains(&format!("(wgpu-gl: {adapter}):")), "{text}");
            assert!(text.contains("via Gl"), "{text}");
            assert_eq!(
                text.contains("--device flex is faster on this machine"),
                adapter.software,
                "{text}"
            );
        }
    }
}

#[test]
fn class_names_come_from_the_model_s_metadata() {
    let names: Vec<String> = (0..10).map(|i| format!("class-{i}")).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let named = edited_resnet("named.onnx", |m| {
        m.metadata_props.push(Default::default());
        let entry = m.metadata_props.last_mut().unwrap();
        entry.key = "labels".into();
        entry.value = format!("[{}]", quoted.join(", "));
    });
    let named = named.to_str().unwrap();
    let text = stdout(&ember(&["layers", "--model", named]));
    assert!(
        text.contains("10 class names in the model's metadata (class-0, class-1, class-2, …)"),
        "{text}"
    );
    // A class chosen by its name, no --labels needed; the report names it.
    let text = stdout(&explain(named, &["--class", "class-3"]));
    assert!(text.contains("explained class 3 class-3"), "{text}");
    // --labels still wins.
    let labels = scratch("other-labels.txt");
    std::fs::write(&labels, (0..10).map(|i| format!("other-{i}\n")).collect::<String>()).unwrap();
    let text = stdout(&explain(named, &["--class", "3", "--labels", labels.to_str().unwrap()]));
    assert!(text.contains("explained class 3 other-3"), "{text}");
}

#[test]
fn pre_processing_is_a_typed_config_with_channel_order_range_and_filter() {
    let resnet = path("tests/fixtures/zoo/resnet.onnx");
    let map = |name: &str, extra: &[&str]| {
        let npy = scratch(&format!("{name}.npy"));
        let mut args = vec!["--save-npy", npy.to_str().unwrap()];
        args.extend_from_slice(extra);
        stdout(&explain(&resnet, &args));
        read_npy(&npy).0
    };
    let config = scratch("bgr.json");
    std::fs::write(
        &config,
        r#"{"resize_shorter": null, "resize_exact": [64, 64], "center_crop": null, "channel_order": "bgr"}"#,
    )
    .unwrap();
    let from_config = map("config", &["--preprocess-config", config.to_str().unwrap()]);
    let from_flags = map("flags", &["--preprocess", "resize", "--channel-order", "bgr"]);
    assert_eq!(from_config, from_flags, "the config and the flags differ");
    let rgb = map("rgb", &["--preprocess", "resize"]);
    let apart = rgb
        .iter()
        .zip(&from_flags)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(apart > 1e-3, "--channel-order bgr changed nothing ({apart})");
    let nearest = map("nearest", &["--preprocess", "resize", "--resize-filter", "nearest"]);
    assert_ne!(nearest, rgb, "--resize-filter nearest changed nothing");
    // Byte values with Caffe-like mean and std are one option away.
    map(
        "byte",
        &[
            "--preprocess",
            "resize",
            "--value-range",
            "byte",
            "--mean",
            "104,117,124",
            "--std",
            "58,58,58",
        ],
    );
    // A config with a typo is an error naming the field.
    std::fs::write(&config, r#"{"channel_ordr": "bgr"}"#).unwrap();
    assert_clean_error(
        &explain(&resnet, &["--preprocess-config", config.to_str().unwrap()]),
        "unknown field `channel_ordr`",
    );
}

/// The bundled pretrained EfficientNet-Lite0 with TensorFlow's pre-processing as models/README.md
/// gives it (one value for every channel): the cat is a cat (PyTorch: 282 "tiger cat"), and one
/// value means the same as three.
#[test]
fn efficientnet_lite0_is_explained_with_tensorflow_s_pre_processing() {
    let model = path("models/efficientnet_lite0.onnx");
    let run = |name: &str, extra: &[&str]| {
        let npy = scratch(&format!("lite0-{name}.npy"));
        let mut args = vec!["--value-range", "byte", "--save-npy", npy.to_str().unwrap()];
        args.extend_from_slice(extra);
        let text = stdout(&explain(&model, &args));
        (text, read_npy(&npy).0)
    };
    let (text, one_value) = run("one", &["--mean", "127", "--std", "128"]);
    assert!(text.contains("explained class 282"), "{text}");
    let (_, three_values) = run("three", &["--mean", "127,127,127", "--std", "128,128,128"]);
    assert_eq!(one_value, three_values);
}

/// The input batch `[2, 3, 64, 64]` of the zoo's ResNet fixture, flattened.
fn resnet_input() -> Vec<f32> {
    zoo_array("resnet", "input")
}

/// An array of a zoo model's fixture (`tests/fixtures/zoo/<model>.npz`), flattened.
fn zoo_array(model: &str, array: &str) -> Vec<f32> {
    let file = std::fs::File::open(root().join(format!("tests/fixtures/zoo/{model}.npz"))).unwrap();
    let mut npz = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).unwrap();
    npz.by_name(array).unwrap().unwrap().into_vec::<f32>().unwrap()
}

/// `--save-guided-backprop` / `--save-guided-gradcam`: [C, H, W] float32 files equal to the
/// library's Guided Backpropagation, Guided Grad-CAM equal to it times the map of `--save-npy`,
/// PNGs next to the overlay, the files in the summary; a model without ReLUs is one clear error.
#[test]
fn guided_backprop_and_guided_gradcam_are_written_as_npy_and_png() {
    let input = resnet_input();
    let tensor = scratch("guided-input.npy");
    write_npy(&tensor, &input[..3 * 64 * 64], &[1, 3, 64, 64]).unwrap();
    let out = scratch("guided.png");
    let resnet = path("tests/fixtures/zoo/resnet.onnx");
    let text = stdout(&explain(
        &resnet,
        &[
            "--input-npy",
            tensor.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--save-npy",
            "--save-guided-backprop",
            "--save-guided-gradcam",
        ],
    ));
    assert!(text.contains("Guided Backpropagation written to"), "{text}");
    let (map, _) = read_npy(&scratch("guided.npy"));
    let (backprop, shape) = read_npy(&scratch("guided_guided_backprop.npy"));
    let (grad_cam, gc_shape) = read_npy(&scratch("guided_guided_gradcam.npy"));
    assert_eq!(shape, vec![3, 64, 64]);
    assert_eq!(gc_shape, vec![3, 64, 64]);
    for png in ["guided_guided_backprop.png", "guided_guided_gradcam.png"] {
        let picture = image::open(scratch(png)).unwrap();
        assert_eq!((picture.width(), picture.height()), (64, 64), "{png}");
    }
    // The library on the same input.
    let device = Device::flex();
    let model = ember_runtime::OnnxModel::load(&resnet, &device).unwrap();
    let x =
        burn::tensor::Tensor::<1>::from_data(input[..3 * 64 * 64].to_vec().as_slice(), &device).reshape([1, 3, 64, 64]);
    let expected = ember_cam::to_host(&ember_cam::guided_backprop(&model, x, &ClassTarget::TopClass).unwrap()).unwrap();
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for (i, (ours, theirs)) in backprop.iter().zip(&expected).enumerate() {
        assert!(
            (ours - theirs).abs() <= 1e-6 * scale,
            "guided backprop [{i}]: {ours} vs {theirs}"
        );
        let product = theirs * map[i % (64 * 64)];
        assert!((grad_cam[i] - product).abs() <= 1e-6 * scale, "guided grad-cam [{i}]");
    }

    // MobileNetV2 has ReLU6 (Clip) only.
    let output = explain(
        &mobilenet_path(),
        &[
            "--image",
            &path("examples/images/chelsea.png"),
            "--out",
            scratch("guided-mobilenet.png").to_str().unwrap(),
            "--save-guided-backprop",
        ],
    );
    assert_clean_error(&output, "Guided Backpropagation needs ReLUs");
    assert!(
        !scratch("guided-mobilenet.png").exists(),
        "no overlay after a failed run"
    );
}

/// `--eigen-smooth` and `--aug-smooth` give the library's smoothed maps and are recorded in the
/// summary.
#[test]
fn eigen_and_aug_smoothing_are_the_library_s() {
    let input = resnet_input();
    let tensor = scratch("smooth-input.npy");
    write_npy(&tensor, &input[..3 * 64 * 64], &[1, 3, 64, 64]).unwrap();
    let resnet = path("tests/fixtures/zoo/resnet.onnx");
    let device = Device::flex();
    let model = ember_runtime::OnnxModel::load(&resnet, &device).unwrap();
    let x =
        burn::tensor::Tensor::<1>::from_data(input[..3 * 64 * 64].to_vec().as_slice(), &device).reshape([1, 3, 64, 64]);
    for (flag, explainer) in [
        ("--eigen-smooth", Explainer::new(GradCam).eigen_smooth(true)),
        ("--aug-smooth", Explainer::new(GradCam).aug_smooth(true)),
    ] {
        let out = scratch(&format!("smooth{flag}.png"));
        let summary = scratch(&format!("smooth{flag}.json"));
        stdout(&explain(
            &resnet,
            &[
                "--input-npy",
                tensor.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--save-npy",
                "--summary",
                summary.to_str().unwrap(),
                flag,
            ],
        ));
        let (map, _) = read_npy(&out.with_extension("npy"));
        let expected = maps_to_host(
            &explainer
                .explain(&model, x.clone(), &ClassTarget::TopClass)
                .unwrap()
                .maps,
        )
        .unwrap();
        let plain = maps_to_host(
            &Explainer::new(GradCam)
                .explain(&model, x.clone(), &ClassTarget::TopClass)
                .unwrap()
                .maps,
        )
        .unwrap();
        let worst = map
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{flag}: {worst}");
        let change = map
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(change > 1e-3, "{flag} changed nothing ({change})");
        let text = std::fs::read_to_string(&summary).unwrap();
        let key = flag.trim_start_matches("--").replace('-', "_");
        assert!(text.contains(&format!("\"{key}\": true")), "{text}");
    }
}

/// `ember evaluate`: every metric for two methods × two rectifiers on two images, the JSON rows
/// equal to the library's metrics on the same maps, the table, the SVG chart; bad inputs are one
/// clear error each.
#[test]
fn evaluate_reports_the_library_s_metrics_as_rows_table_and_chart() {
    let input = resnet_input();
    let tensor = scratch("evaluate-input.npy");
    write_npy(&tensor, &input, &[2, 3, 64, 64]).unwrap();
    let resnet = path("tests/fixtures/zoo/resnet.onnx");
    let name = |i: usize| format!("{}[{i}]", tensor.display());
    let boxes = scratch("evaluate-boxes.json");
    std::fs::write(
        &boxes,
        format!(
            "{{\"{}\": [[0, 0, 32, 32]], \"{}\": [[32, 32, 64, 64]]}}",
            name(0),
            name(1)
        ),
    )
    .unwrap();
    let json = scratch("evaluate-rows.json");
    let chart = scratch("evaluate-curves.svg");
    let metrics = "drop-in-confidence,increase-in-confidence,average-drop,deletion,insertion,road-morf,road-lerf,road-combined,pointing-game";
    let run = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
        command.args([
            "evaluate",
            "--device",
            "flex",
            "--model",
            &resnet,
            "--input-npy",
            tensor.to_str().unwrap(),
        ]);
        command.args(extra);
        command.output().unwrap()
    };
    let text = stdout(&run(&[
        "--method",
        "gradcam,hirescam",
        "--rectifier",
        "relu,abs",
        "--metrics",
        metrics,
        "--boxes",
        boxes.to_str().unwrap(),
        "--steps",
        "8",
        "--json",
        json.to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
    ]));
    assert!(text.contains("road-combined") && text.contains("hirescam"), "{text}");
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 9 * 2 * 2, "one row per metric, method and rectifier");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("gradcam (abs)"),
        "{}",
        &svg[..200.min(svg.len())]
    );

    // The library, on the same input and the same maps.
    let device = Device::flex();
    let model = ember_runtime::OnnxModel::load(&resnet, &device).unwrap();
    let x = burn::tensor::Tensor::<1>::from_data(input.as_slice(), &device).reshape([2, 3, 64, 64]);
    let maps = Explainer::new(GradCam)
        .rectifier(Rectifier::Abs)
        .explain(&model, x.clone(), &ClassTarget::TopClass)
        .unwrap()
        .maps;
    let target = ember_cam::ClassProbability(ClassTarget::TopClass);
    let curves = ember_cam::metrics::DeletionInsertion {
        steps: 8,
        ..Default::default()
    }
    .evaluate(&model, &x, &maps, &target)
    .unwrap();
    let change = ember_cam::metrics::confidence_change(&model, &x, &maps, &target).unwrap();
    let row = |metric: &str| {
        rows.iter()
            .find(|r| r["method"] == "gradcam" && r["rectifier"] == "abs" && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} row"))["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect::<Vec<f32>>()
    };
    for (metric, expected) in [
        ("deletion", curves.deletion_auc.clone()),
        ("insertion", curves.insertion_auc.clone()),
        ("drop-in-confidence", ember_cam::metrics::drop_in_confidence(&change)),
    ] {
        let got = row(metric);
        for (a, b) in got.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-6, "{metric}: {got:?} vs {expected:?}");
        }
    }
    assert!(row("pointing-game").iter().all(|v| *v == 0.0 || *v == 1.0));

    // Bad input: a step count of 0, an unknown metric, boxes that do not match the inputs, the
    // pointing game without boxes.
    assert_clean_error(
        &run(&["--metrics", "deletion", "--steps", "0"]),
        "--steps must be at least 1",
    );
    assert_clean_error(&run(&["--metrics", "deletion,faithfulness"]), "faithfulness");
    std::fs::write(
        &boxes,
        format!("{{\"{}\": [[0, 0, 32, 32]], \"cat.png\": [[0, 0, 1, 1]]}}", name(0)),
    )
    .unwrap();
    assert_clean_error(
        &run(&["--metrics", "pointing-game", "--boxes", boxes.to_str().unwrap()]),
        "the boxes do not match the inputs",
    );
    assert_clean_error(&run(&["--metrics", "pointing-game"]), "needs --boxes");
}

/// A channels-last (tf2onnx-style) model of the zoo: `ember layers` shows its input and layers as
/// they are, an NHWC `--input-npy` gives pytorch-grad-cam's map (on the NCHW-wrapped model with
/// the permuting `reshape_transform`) at the input's size, and a photo's overlay has the photo's
/// size.
#[test]
fn a_channels_last_model_is_explained_in_its_own_layout() {
    let model = path("tests/fixtures/zoo/tf_style_nhwc.onnx");
    let listing = stdout(&ember(&["layers", "--model", &model]));
    assert!(listing.contains("input [N, 64, 64, 3] (channels last)"), "{listing}");
    let relu = listing.lines().find(|l| l.starts_with("/acts.2/Relu")).unwrap();
    assert!(relu.contains("NHWC") && relu.contains("(default)"), "{relu}");
    let conv = listing.lines().find(|l| l.starts_with("/convs.2/Conv")).unwrap();
    assert!(conv.contains("NCHW"), "{conv}");

    let (input, reference) = (
        zoo_array("tf_style_nhwc", "input"),
        zoo_array("tf_style_nhwc", "grad_cam"),
    );
    let tensor = scratch("nhwc-input.npy");
    write_npy(&tensor, &input[..64 * 64 * 3], &[1, 64, 64, 3]).unwrap();
    let out = scratch("nhwc.png");
    // pytorch-grad-cam explains the model's output (a softmax).
    stdout(&explain(
        &model,
        &[
            "--input-npy",
            tensor.to_str().unwrap(),
            "--score",
            "output",
            "--out",
            out.to_str().unwrap(),
            "--save-npy",
        ],
    ));
    let (map, shape) = read_npy(&scratch("nhwc.npy"));
    assert_eq!(shape, vec![64, 64]);
    let worst = map
        .iter()
        .zip(&reference[..64 * 64])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("channels-last model through the CLI vs pytorch-grad-cam: {worst:.1e}");
    assert!(worst <= 1e-4, "{worst}");

    let photo = path("examples/images/chelsea.png");
    let overlay = scratch("nhwc-photo.png");
    stdout(&explain(
        &model,
        &["--image", &photo, "--out", overlay.to_str().unwrap()],
    ));
    let (shown, original) = (image::open(&overlay).unwrap(), image::open(&photo).unwrap());
    assert_eq!((shown.width(), shown.height()), (original.width(), original.height()));
}

/// Transformer token layers (the zoo's DINOv2-style ViT: a class token and four registers before
/// a 4×4 grid of patches): `ember layers` shows the grid and the default layer (the last block's
/// norm1), the map equals pytorch-grad-cam's (with its token-dropping `reshape_transform`), the
/// same grid given by hand gives the same map, and a grid that does not fit is a clear error.
#[test]
fn token_layers_are_explained_on_their_patch_grid() {
    let model = path("tests/fixtures/zoo/vit_registers.onnx");
    let listing = stdout(&ember(&["layers", "--model", &model]));
    let default = listing.lines().find(|l| l.ends_with("(default)")).unwrap();
    assert!(
        default.starts_with("node_layer_norm_2") && default.contains("tokens 4x4 after 5"),
        "{default}"
    );

    let (input, reference) = (
        zoo_array("vit_registers", "input"),
        zoo_array("vit_registers", "grad_cam"),
    );
    let tensor = scratch("vit-input.npy");
    write_npy(&tensor, &input, &[2, 3, 64, 64]).unwrap();
    let run = |folder: &str, extra: &[&str]| {
        let out = scratch(folder);
        let mut args = vec![
            "--input-npy",
            tensor.to_str().unwrap(),
            "--score",
            "output",
            "--out-dir",
            out.to_str().unwrap(),
            "--save-npy",
        ];
        args.extend_from_slice(extra);
        stdout(&explain(&model, &args));
        let (first, _) = read_npy(&out.join("vit-input.npy"));
        let (second, _) = read_npy(&out.join("vit-input-2.npy"));
        [first, second].concat()
    };
    let automatic = run("vit-auto", &[]);
    let worst = automatic
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("token layer through the CLI vs pytorch-grad-cam: {worst:.1e}");
    assert!(worst <= 1e-4, "{worst}");
    assert_eq!(
        run("vit-given", &["--token-grid", "4x4", "--skip-tokens", "5"]),
        automatic
    );

    let wrong = ember(&[
        "explain",
        "--model",
        &model,
        "--input-npy",
        tensor.to_str().unwrap(),
        "--out-dir",
        scratch("vit-wrong").to_str().unwrap(),
        "--token-grid",
        "4x4",
    ]);
    assert!(!wrong.status.success());
    let summary = std::fs::read_to_string(scratch("vit-wrong").join("summary.json")).unwrap();
    assert!(summary.contains("which is not [N, 16 tokens, C]"), "{summary}");
    assert_clean_error(
        &explain(&model, &["--input-npy", tensor.to_str().unwrap(), "--skip-tokens", "5"]),
        "--token-grid",
    );
}

/// A saliency ViT (the zoo's `vit_saliency`: class token, four registers, a linear head on the
/// patch tokens upsampled to `[N, 2, 64, 64]`) explained for channel 1 summed over a box: the
/// default layer is the last block's norm1 on its 4×4 token grid, not the head's upsampling, and
/// the maps equal pytorch-grad-cam's (`SemanticSegmentationTarget` with its token-dropping
/// `reshape_transform`).
#[test]
fn a_token_layer_is_explained_for_a_region_of_a_dense_output() {
    let model = path("tests/fixtures/zoo/vit_saliency.onnx");
    let listing = stdout(&ember(&["layers", "--model", &model]));
    assert!(listing.contains("output `logits` [2, 2, 64, 64]: dense"), "{listing}");
    let default = listing.lines().find(|l| l.ends_with("(default)")).unwrap();
    assert!(
        default.starts_with("node_layer_norm_2") && default.contains("tokens 4x4 after 5"),
        "{default}"
    );
    // The upsampling's own size, not its input's.
    let resize = listing.lines().find(|l| l.contains(" Resize ")).unwrap();
    assert!(resize.contains("[2, 2, 64, 64]"), "{resize}");

    let (input, reference) = (
        zoo_array("vit_saliency", "input"),
        zoo_array("vit_saliency", "grad_cam"),
    );
    let tensor = scratch("vit-saliency-input.npy");
    write_npy(&tensor, &input, &[2, 3, 64, 64]).unwrap();
    let out = scratch("vit-saliency");
    stdout(&explain(
        &model,
        &[
            "--input-npy",
            tensor.to_str().unwrap(),
            "--channel",
            "1",
            "--region",
            "8,24,40,56",
            "--out-dir",
            out.to_str().unwrap(),
            "--save-npy",
        ],
    ));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let target = r#""target": "channel 1 of `logits` summed over x 8..40, y 24..56""#;
    assert_eq!(summary.matches(target).count(), 2, "{summary}");
    let (first, _) = read_npy(&out.join("vit-saliency-input.npy"));
    let (second, _) = read_npy(&out.join("vit-saliency-input-2.npy"));
    let worst = [first, second]
        .concat()
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("token layer of a dense ViT, channel over a region, through the CLI vs pytorch-grad-cam: {worst:.1e}");
    assert!(worst <= 1e-4, "{worst}");
}
