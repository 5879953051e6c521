//! Explain the bundled ImageNet MobileNetV2 on a photo and write a heat-map overlay.
//!
//! ```text
//! cargo run --release --example explain                    # flex, the CPU backend
//! cargo run --release --example explain --features wgpu    # wgpu, the GPU backend
//! cargo run --release --example explain -- --image photo.jpg --class "tabby" --method gradcam++
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::activation::softmax;
use clap::Parser;
use ember_cam::models::{imagenet_classes, mobilenet_v2};
use ember_cam::vision::{
    Colormap, Preprocess, ReadPaths, Written, check_outputs, load_rgb, overlay, save_picture, write_npy,
};
use ember_cam::vocabulary::value_parser;
use ember_cam::{
    CamModel, ClassTarget, DEFAULT_DEVICE, Explainer, Method, Rectifier, burn, describe_dims, maps_to_host,
    open_device, parse_class,
};

#[derive(Parser, Debug)]
#[command(about = "Explain an ImageNet MobileNetV2 decision with a class activation map")]
struct Args {
    /// Photo to explain (any format the `image` crate reads).
    #[arg(long, default_value = "examples/images/chelsea.png")]
    image: PathBuf,
    /// Class to explain: an index (0–999) or an ImageNet class name; the top class by default.
    #[arg(long)]
    class: Option<String>,
    /// Layer to explain: an ONNX node or output name (see --list-layers); the last spatial layer
    /// by default.
    #[arg(long)]
    layer: Option<String>,
    /// CAM method.
    #[arg(long, default_value = "gradcam", value_parser = value_parser::<Method>())]
    method: Method,
    /// What to do with negative evidence.
    #[arg(long, default_value = "relu", value_parser = value_parser::<Rectifier>())]
    rectifier: Rectifier,
    /// Where to write the overlay PNG.
    #[arg(long, default_value = "explanation.png")]
    out: PathBuf,
    /// Draw the overlay on the network input (the 224×224 crop) instead of the whole photo.
    #[arg(long)]
    on_input: bool,
    /// Also write the final map (float32, 224×224) as a .npy file.
    #[arg(long)]
    save_npy: Option<PathBuf>,
    /// Backend: flex (CPU), ndarray (CPU), wgpu (GPU; or wgpu-vulkan, wgpu-gl, wgpu-metal,
    /// wgpu-dx12 to pin the graphics API); wgpu when built with --features wgpu.
    #[arg(long, default_value = DEFAULT_DEVICE)]
    device: String,
    /// A pre-processing recipe as JSON (`ember_vision::Preprocess`, as `ember explain
    /// --preprocess-config` reads it); default: torchvision's ImageNet recipe.
    #[arg(long, value_name = "FILE")]
    preprocess_config: Option<PathBuf>,
    /// List the tappable layers and exit.
    #[arg(long)]
    list_layers: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let opened = open_device(&args.device).map_err(|e| e.to_string())?;
    let device = opened.device;
    let device_label = match &opened.adapter {
        Some(adapter) => format!("{}: {adapter}", args.device),
        None => args.device.clone(),
    };
    let model = mobilenet_v2::Model::from_embedded(&device);
    if args.list_layers {
        for layer in model.layers() {
            let shape = describe_dims(&layer.shape);
            println!("{:<48} {:<18} {shape}", layer.name, layer.op_type);
        }
        return Ok(());
    }
    let classes = imagenet_classes();
    let target = match &args.class {
        Some(text) => ClassTarget::Class(parse_class(text, &classes).map_err(|e| e.to_string())?),
        None => ClassTarget::TopClass,
    };

    // Nothing is written over the photo, and the overlay and the map are two files.
    let read = ReadPaths {
        files: vec![("input image", args.image.clone())],
        folders: Vec::new(),
    };
    let mut outputs = vec![Written::new("--out", &args.out)];
    outputs.extend(args.save_npy.iter().map(|path| Written::new("--save-npy", path)));
    check_outputs(&read, &outputs, &[]).map_err(|e| e.to_string())?;

    let photo = load_rgb(&args.image).map_err(|e| e.to_string())?;
    let recipe: Preprocess = match &args.preprocess_config {
        Some(path) => {
            let bytes = ember_cam::limits::read_regular_file(path, "pre-processing config", 1 << 20)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a pre-processing config: {e}", path.display()))?
        }
        None => Preprocess::imagenet(),
    };
    let prepared = recipe.prepare(&photo).map_err(|e| e.to_string())?;
    let (input, shown, placement) = prepared.into_input(&device);
    let mut explainer = Explainer::from(args.method).rectifier(args.rectifier);
    if let Some(layer) = &args.layer {
        explainer = explainer.layer(layer.clone());
    }
    let explanation = explainer.explain(&model, input, &target).map_err(|e| e.to_string())?;

    let probabilities = softmax(explanation.output.clone().inner(), 1);
    let (top_p, top_i) = probabilities.topk_with_indices(5, 1);
    let top_p = top_p.try_into_vec_as::<f32>().map_err(|e| format!("{e:?}"))?;
    let top_i = top_i.try_into_vec_as::<i64>().map_err(|e| format!("{e:?}"))?;
    println!("top-5 on {} ({device_label}):", args.image.display());
    for (p, i) in top_p.iter().zip(&top_i) {
        println!("  {:>5.1}%  {:>3}  {}", 100.0 * p, i, classes[*i as usize]);
    }
    let class = explanation
        .classes
        .clone()
        .and_then(|c| c.try_into_vec_as::<i64>().ok())
        .map(|c| c[0] as usize)
        .unwrap_or_default();
    let layer = &explanation.layers[0].layer;
    println!(
        "explained `{}` ({class}) with {} ({}) at layer {layer}",
        classes[class], args.method, args.rectifier
    );

    let map = maps_to_host(&explanation.maps).map_err(|e| e.to_string())?;
    let display = args.rectifier.display_values(&map);
    let [_, h, w] = explanation.maps.dims();
    // The map goes back through the crop and resize onto the photo; what the network never saw
    // is dimmed.
    let blended = if args.on_input {
        overlay(&shown, &display, &Colormap::jet(), 0.5)
    } else {
        placement.overlay(&photo, &display, h, w, &Colormap::jet(), 0.5)
    }
    .map_err(|e| e.to_string())?;
    save_picture(&blended, &args.out).map_err(|e| e.to_string())?;
    println!(
        "overlay ({}×{}) written to {}",
        blended.width(),
        blended.height(),
        args.out.display()
    );
    if let Some(path) = &args.save_npy {
        write_npy(path, &map, &[h as u64, w as u64]).map_err(|e| e.to_string())?;
        println!("map written to {}", path.display());
    }
    if opened.adapter.is_some_and(|adapter| adapter.software) {
        println!("note: this wgpu adapter is a software rasteriser; --device flex is faster on this machine");
    }
    Ok(())
}
