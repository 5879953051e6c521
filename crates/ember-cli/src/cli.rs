//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ember_core::vocabulary::value_parser;
use ember_core::{DEFAULT_DEVICE, Method, Metric, Rectifier, SpatialLayout};
use ember_vision::{ChannelOrder, ColormapName, ResizeFilter, ValueRange};

/// Explain the decisions of any ONNX image classifier with class activation maps (Grad-CAM and
/// its family), on the CPU or a GPU.
#[derive(Parser, Debug)]
#[command(name = "ember", version, propagate_version = true, after_help = EXIT_STATUSES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The most memory any one tensor, image or buffer may take, e.g. 512MiB, 8GB. Sizes are
    /// read from untrusted files (shapes, pads, image headers) and checked against it before
    /// anything is allocated. Default: half of the machine's memory or of the address-space
    /// limit (`ulimit -v`), whichever is smaller.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_max_memory)]
    pub max_memory: Option<u64>,
}

/// The exit statuses, as `--help` shows them.
const EXIT_STATUSES: &str = "Exit status:
  0  done
  1  an input (model, image, tensor, labels) could not be read or explained; in a batch run,
     summary.json still lists every input, with the error of each one that failed
  2  invalid arguments (including an output that would overwrite an input)
  3  internal failure: a bug in Ember, please report it";

/// The device names of `ember_core::DEVICES`, each with its description in `--help`.
fn device_parser() -> clap::builder::PossibleValuesParser {
    ember_core::DEVICES
        .iter()
        .map(|(name, description)| clap::builder::PossibleValue::new(*name).help(*description))
        .collect::<Vec<_>>()
        .into()
}

fn parse_max_memory(text: &str) -> Result<u64, String> {
    ember_core::limits::parse_bytes(text)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain a classifier's decision on one image, a list of images, a folder, or a
    /// pre-processed tensor.
    Explain(Box<ExplainArgs>),
    /// Measure how faithful maps are: confidence change, deletion/insertion, ROAD, pointing game,
    /// for several methods and rectifiers.
    Evaluate(Box<EvaluateArgs>),
    /// List the layers that can be explained, with their operators and shapes.
    Layers(LayersArgs),
    /// Join the summaries of a sharded run (`explain --shard K/N`) into the summary of the whole.
    MergeSummaries(MergeArgs),
    /// List the ONNX operators the executor runs, one per line.
    Ops,
    /// Run any ONNX graph on tensors (.npy) and save its outputs: a plain forward pass, to
    /// compare Ember's executor with onnxruntime.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The ONNX model (any graph: inputs and outputs of any rank, float, integer or bool).
    #[arg(long)]
    pub model: PathBuf,

    /// An input as NAME=FILE.npy (float32/64, int8–64, uint8–32 or bool, C order); repeat for
    /// each input. A graph with one input also takes FILE.npy alone.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,

    /// Folder to write each output into, as <output name>.npy (float32, or int64 for integer
    /// and bool outputs; characters other than letters, digits, `.`, `_` and `-` become `_`).
    #[arg(long, value_name = "DIR")]
    pub save_outputs: Option<PathBuf>,

    /// Backend (see `ember explain --help`).
    #[arg(long, default_value = DEFAULT_DEVICE, value_parser = device_parser())]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct LayersArgs {
    /// The ONNX model.
    #[arg(long)]
    pub model: PathBuf,

    /// The layout of the model's input, for models whose input shape and graph do not tell.
    #[arg(long, value_parser = value_parser::<SpatialLayout>())]
    pub input_layout: Option<SpatialLayout>,

    /// The graph output to describe, for models with several (see `ember explain --output`).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
}

/// What every command that runs a model on inputs takes: the model, the inputs and how they are
/// pre-processed, the layers, the class, the device.
#[derive(Args, Debug)]
pub struct InputArgs {
    /// The ONNX model: one [N, C, H, W] image input (or [N, H, W, C]), an [N, classes] output
    /// (a classifier) or a dense [N, K, H, W] one (see --channel).
    #[arg(long)]
    pub model: PathBuf,

    /// Images to explain: files (PNG, JPEG) or folders of them. Several images, or a folder, run
    /// in batches and write one overlay each into --out-dir, plus summary.json.
    #[arg(long, num_args = 1.., required_unless_present = "input_npy", conflicts_with = "input_npy")]
    pub image: Vec<PathBuf>,

    /// A pre-processed float32 tensor in a .npy file, instead of images: for models with their
    /// own pre-processing. In the model's input layout: [N, C, H, W] (or [C, H, W]), or
    /// [N, H, W, C] (or [H, W, C]) for a channels-last model. Maps then have the tensor's size.
    #[arg(long)]
    pub input_npy: Option<PathBuf>,

    /// Layer to explain: an ONNX node name or output name (see `ember layers`). Repeat to
    /// aggregate several layers. Default: the last spatial layer.
    #[arg(long)]
    pub layer: Vec<String>,

    /// Where the explained layers' channels are, for layers `ember layers` shows as undecided
    /// (or to overrule what it shows).
    #[arg(long, value_parser = value_parser::<SpatialLayout>())]
    pub layout: Option<SpatialLayout>,

    /// The patch grid of the explained transformer token layers, as ROWSxCOLUMNS (e.g. 14x14),
    /// instead of the one `ember layers` shows (found from the token count and the input size).
    #[arg(long, value_name = "HxW", conflicts_with = "layout")]
    pub token_grid: Option<String>,

    /// Leading tokens that are not patches (class, distillation, register tokens), with
    /// --token-grid (default 0).
    #[arg(long, value_name = "K", requires = "token_grid")]
    pub skip_tokens: Option<usize>,

    /// The layout of the model's input, for models whose input shape and graph do not tell
    /// (`ember layers` says so). Images are always fed in the model's layout.
    #[arg(long, value_parser = value_parser::<SpatialLayout>())]
    pub input_layout: Option<SpatialLayout>,

    /// Class to explain: an index, or a name from --labels. Default: each image's top class.
    #[arg(long, allow_hyphen_values = true)]
    pub class: Option<String>,

    /// The graph output to explain, by its name in the file, for models with several outputs
    /// (`ember layers` lists them). Default: the first.
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,

    /// Dense outputs [N, K, H, W] (segmentation, saliency, text detection): the output channel
    /// explained, an index or a name from --labels; needed when the output has several. The
    /// score is this channel summed over --region and/or --mask (pytorch-grad-cam's
    /// SemanticSegmentationTarget).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "class")]
    pub channel: Option<String>,

    /// Dense outputs: the box of output pixels summed, X0,Y0,X1,Y1 (ends exclusive). Default:
    /// the whole output (or the --mask).
    #[arg(long, value_name = "X0,Y0,X1,Y1", conflicts_with = "class")]
    pub region: Option<String>,

    /// Dense outputs: a PNG of the output's size weighting each output pixel by its grey level
    /// (black 0, white 1: a black-and-white mask selects pixels). With --region, only its
    /// pixels inside the box count.
    #[arg(long, value_name = "FILE.png", conflicts_with = "class")]
    pub mask: Option<PathBuf>,

    /// Class names, one per line (index order), for --class names and the report. Default: the
    /// names in the model's metadata, when it has them.
    #[arg(long)]
    pub labels: Option<PathBuf>,

    /// Backend. Default: wgpu when built with the `wgpu` feature, flex otherwise. The adapter a
    /// wgpu device runs on is printed with the results.
    #[arg(long, default_value = DEFAULT_DEVICE, value_parser = device_parser())]
    pub device: String,

    /// Image pre-processing: imagenet (resize shorter side to size·256/224, centre crop, ImageNet
    /// mean/std), resize (resize to the input size, ImageNet mean/std), none (resize, values in
    /// [0, 1]).
    #[arg(long, value_enum, default_value = "imagenet")]
    pub preprocess: PreprocessKind,

    /// Per-channel mean to subtract (values in [0, 1], or 0–255 with --value-range byte),
    /// overriding the pre-processing's: R,G,B (or three separate values), or one value for every
    /// channel.
    #[arg(long, num_args = 1..=3, value_delimiter = ',', allow_negative_numbers = true)]
    pub mean: Option<Vec<f32>>,

    /// Per-channel standard deviation to divide by, overriding the pre-processing's: R,G,B (or
    /// three separate values), or one value for every channel.
    #[arg(long, num_args = 1..=3, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,

    /// Channel order of the network input, overriding the pre-processing's.
    #[arg(long, value_parser = value_parser::<ChannelOrder>())]
    pub channel_order: Option<ChannelOrder>,

    /// Range of pixel values before --mean and --std apply, overriding the pre-processing's.
    #[arg(long, value_parser = value_parser::<ValueRange>())]
    pub value_range: Option<ValueRange>,

    /// Filter of every resize, overriding the pre-processing's.
    #[arg(long, value_parser = value_parser::<ResizeFilter>())]
    pub resize_filter: Option<ResizeFilter>,

    /// A pre-processing recipe as JSON (ember_vision::Preprocess: resize_shorter,
    /// resize_to_cover, resize_exact, center_crop, filter, channel_order, value_range, mean,
    /// std; missing fields take torchvision's ImageNet values), instead of --preprocess. The
    /// options above still override it.
    #[arg(long, value_name = "FILE", conflicts_with = "preprocess")]
    pub preprocess_config: Option<PathBuf>,

    /// Input size `N` or `HxW`, required when the model's input size is dynamic.
    #[arg(long)]
    pub size: Option<String>,

    /// Images per batch when several are explained (a model exported with a fixed batch size
    /// takes batches of that size).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,

    /// Which output is the class score: logits (the input of a final softmax, as Grad-CAM
    /// prescribes) or output (the graph output as it is, e.g. probabilities).
    #[arg(long, value_enum, default_value = "logits")]
    pub score: ScoreKind,

    /// Altered copies re-run at once by perturbation methods (ablationcam: copies of the layer;
    /// scorecam: masked copies of the image): more is faster where the network re-run is small,
    /// and takes that many times its memory. Default: as many as 64 MiB of copies hold.
    #[arg(long)]
    pub perturbation_batch_size: Option<usize>,
}

/// The methods and rectifiers of a run: each method with each rectifier (`explain`: one
/// comparison sheet per image, a row per method and a column per rectifier, when there are
/// several; `evaluate`: every combination scored).
#[derive(Args, Debug)]
pub struct VariantArgs {
    /// CAM methods, comma-separated.
    #[arg(long = "method", value_delimiter = ',', default_value = "gradcam", value_parser = value_parser::<Method>())]
    pub methods: Vec<Method>,

    /// What to do with negative evidence: rectifiers, comma-separated (each method with each).
    #[arg(long = "rectifier", value_delimiter = ',', default_value = "relu", value_parser = value_parser::<Rectifier>())]
    pub rectifiers: Vec<Rectifier>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub variants: VariantArgs,

    /// Compare layers side by side: each of these layers (comma-separated) explained on its
    /// own, one sheet row per method and layer. (Repeating --layer aggregates layers into one
    /// map instead.)
    #[arg(long, value_delimiter = ',', conflicts_with = "layer")]
    pub compare_layers: Vec<String>,

    /// What overlays are drawn on: the original photo at its own size (the map placed back
    /// through the pre-processing's resize and crop; what the network never saw is dimmed), or
    /// the network input (the resized, cropped image). Maps in .npy stay at the network input's
    /// size either way.
    #[arg(long, value_enum, default_value = "original")]
    pub overlay_on: OverlayOn,

    /// The overlay PNG when one image file (or a one-image tensor) is explained.
    #[arg(long, default_value = "explanation.png")]
    pub out: PathBuf,

    /// The folder for overlays, maps and summary.json when several images, or a folder, are
    /// explained.
    #[arg(long, default_value = "explanations")]
    pub out_dir: PathBuf,

    /// Write the final map as float32 .npy. For a single input: to this file (default: --out
    /// with the extension .npy). For several: one <image>.npy each, in this folder (default:
    /// --out-dir).
    #[arg(long, num_args = 0..=1, value_name = "PATH")]
    pub save_npy: Option<Option<PathBuf>>,

    /// Also run Guided Backpropagation (∂score/∂input, the model's ReLUs letting through only
    /// positive gradients) and write it as float32 .npy [C, H, W] (raw values), plus a PNG for
    /// people next to the overlay (<overlay>_guided_backprop.png). PATH as for --save-npy
    /// (default: <overlay>_guided_backprop.npy, or one <image>_guided_backprop.npy each).
    #[arg(long, num_args = 0..=1, value_name = "PATH")]
    pub save_guided_backprop: Option<Option<PathBuf>>,

    /// Also write Guided Grad-CAM, Guided Backpropagation times the final map, as float32 .npy
    /// [C, H, W] and a PNG next to the overlay (<overlay>_guided_gradcam.png). PATH as for
    /// --save-npy (default: <overlay>_guided_gradcam.npy, or one <image>_guided_gradcam.npy each).
    #[arg(long, num_args = 0..=1, value_name = "PATH")]
    pub save_guided_gradcam: Option<Option<PathBuf>>,

    /// Where to write the JSON summary (class, score, peak, timing per image). Default:
    /// <out-dir>/summary.json for several images, none for one.
    #[arg(long)]
    pub summary: Option<PathBuf>,

    /// The map is the first principal component of the method's per-channel terms instead of
    /// their sum (pytorch-grad-cam's eigen_smooth; deterministic sign): less noise.
    #[arg(long)]
    pub eigen_smooth: bool,

    /// The map is the mean over six augmentations of the input (mirrored or not, times 0.9, 1 or
    /// 1.1; pytorch-grad-cam's aug_smooth): smoother, six times the work.
    #[arg(long)]
    pub aug_smooth: bool,

    /// Colour map of the overlays.
    #[arg(long, default_value = "jet", value_parser = value_parser::<ColormapName>())]
    pub colormap: ColormapName,

    /// Weight of the image in the overlay (0 = heat map only, 1 = image only).
    #[arg(long, default_value_t = 0.5)]
    pub image_weight: f32,

    /// Several images: also write report.html beside the summary (report-K-of-N.html for a
    /// slice): one card per image (input, overlay, top-5 classes, score, peak, time), sortable
    /// and filterable, with every picture it shows written next to it.
    #[arg(long)]
    pub report: bool,

    /// Several images: explain only slice K of N (0 ≤ K < N; input i belongs to slice i mod N of
    /// the sorted inputs), for spreading one job over N machines (Slurm array jobs, Kubernetes
    /// indexed jobs, GNU parallel). The summary defaults to summary-K-of-N.json; join the
    /// slices' summaries with `ember merge-summaries`.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Several images: keep the results of an earlier, interrupted run with the same settings
    /// (read from its summary) whose files are all present, and explain only the rest.
    #[arg(long)]
    pub resume: bool,
}

/// A slice of the inputs: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    let usage = || format!("{text:?} is not K/N with 0 ≤ K < N (e.g. 0/4 … 3/4)");
    let (index, count) = text.split_once('/').ok_or_else(usage)?;
    let index: usize = index.trim().parse().map_err(|_| usage())?;
    let count: usize = count.trim().parse().map_err(|_| usage())?;
    if count == 0 || index >= count {
        return Err(usage());
    }
    Ok(Shard { index, count })
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The summaries of the slices of one sharded run (`summary-K-of-N.json`), in any order.
    #[arg(required = true, num_args = 1..)]
    pub summaries: Vec<PathBuf>,

    /// The merged summary, as an unsharded run writes it.
    #[arg(long, default_value = "summary.json")]
    pub out: PathBuf,

    /// Also write report.html next to the merged summary.
    #[arg(long)]
    pub report: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayOn {
    /// The original photo, at its own size.
    Original,
    /// The network input (resized and cropped).
    Input,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub variants: VariantArgs,

    /// Metrics, comma-separated (pointing-game needs --boxes).
    #[arg(
        long = "metrics",
        value_delimiter = ',',
        default_value = "drop-in-confidence,increase-in-confidence,average-drop,deletion,insertion,road-combined",
        value_parser = value_parser::<Metric>()
    )]
    pub metrics: Vec<Metric>,

    /// What the metrics score: the class probability (softmax of the logits; Average Drop is
    /// defined on it) or the explained logit.
    #[arg(long, value_enum, default_value = "probability")]
    pub metric_score: MetricScore,

    /// Deletion/insertion: the most intervals a curve is sampled in.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,

    /// Deletion/insertion: what deleted pixels become.
    #[arg(long, value_enum, default_value = "zeros")]
    pub baseline: BaselineKind,

    /// ROAD: the seed of the imputation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Pointing game: a JSON object from image file names (or `<tensor>[i]`) to lists of boxes
    /// [x0, y0, x1, y1] in the network input's pixels (end exclusive).
    #[arg(long, value_name = "FILE")]
    pub boxes: Option<PathBuf>,

    /// Pointing game: how far outside a box the map's peak may lie, in pixels.
    #[arg(long, default_value_t = 15.0)]
    pub tolerance: f32,

    /// Write the rows {method, rectifier, layer, metric, mean, values} as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw the mean deletion and insertion curves of every method and rectifier (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricScore {
    /// The softmax probability of the explained class.
    Probability,
    /// The explained score (the logit, see --score).
    Logit,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineKind {
    /// Zeros (in a normalised input, the dataset's mean colour).
    Zeros,
    /// Each channel's mean over the image.
    Mean,
    /// The image blurred (Gaussian, σ = 5 pixels).
    Blur,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreprocessKind {
    /// torchvision's ImageNet recipe, scaled to the model's input size.
    Imagenet,
    /// Resize to the input size, ImageNet mean and std.
    Resize,
    /// Resize to the input size, values in [0, 1].
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreKind {
    /// Logits: a final Softmax/LogSoftmax is skipped.
    Logits,
    /// The graph output as it is.
    Output,
}
