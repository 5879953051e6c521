//! Code generation: burn-onnx's `ModelGen` over the tapped graph (the `codegen` feature).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::{env, str::FromStr};

use burn_onnx::ext::{
    ArgType, Argument, CodegenContext, CustomNode, CustomOp, Node, NodeType, OpOverride, ProcessError, arg_to_ident,
};
use burn_onnx::{LoadStrategy, ModelGen};
use onnx_ir::Message;
use onnx_ir::node::clip::ClipInput;
use proc_macro2::TokenStream;
use quote::quote;

use ember_core::{Layout, ScoreSource, SpatialLayout};

use crate::{ImportError, SCORES_OP, TAP_ATTRIBUTE, TAP_DOMAIN, TAP_OP, TappedGraph, tap_graph_as};

/// `burn_onnx::ModelGen` with taps: use it from a build script.
///
/// ```no_run
/// // build.rs
/// ember_onnx::TappedModelGen::new("models/mobilenet_v2.onnx")
///     .out_dir("model/")
///     .run_from_script()
///     .expect("import mobilenet_v2.onnx");
/// ```
///
/// Then, in the crate: `include!(concat!(env!("OUT_DIR"), "/model/mobilenet_v2.rs"));` gives a
/// `Model` implementing `ember_cam::CamModel`, with `LAYERS` and `DEFAULT_LAYER`.
///
/// The generated code needs only `ember-cam` (it reaches Burn and burn-store through
/// `ember_cam::burn` and `ember_cam::burn_store`):
///
/// ```toml
/// [dependencies]
/// ember-cam = "0.1"
///
/// [build-dependencies]
/// ember-onnx = "0.1"
/// ```
///
/// When the graph ends in a Softmax, LogSoftmax or one-logit Sigmoid, the generated
/// `CamModel::forward` returns that activation's input (the logits), as the run-time executor
/// and `ember` do; [`TappedModelGen::scores`] keeps the output instead. `Model::forward` itself
/// is unchanged.
#[derive(Debug, Clone)]
pub struct TappedModelGen {
    input: PathBuf,
    out_dir: String,
    load_strategy: LoadStrategy,
    runtime_crate: String,
    scores: ScoreSource,
    input_layout: Option<SpatialLayout>,
}

impl TappedModelGen {
    /// Imports the ONNX model at `input`.
    pub fn new(input: impl AsRef<Path>) -> Self {
        Self {
            input: input.as_ref().to_path_buf(),
            out_dir: "model/".into(),
            load_strategy: LoadStrategy::Embedded,
            runtime_crate: "ember_cam".into(),
            scores: ScoreSource::Logits,
            input_layout: None,
        }
    }

    /// The input's layout, for a model whose input shape and graph do not tell (the import
    /// fails and asks for it). `CamModel::forward` always takes `[N, C, H, W]` and hands the
    /// graph its own layout.
    pub fn input_layout(mut self, layout: SpatialLayout) -> Self {
        self.input_layout = Some(layout);
        self
    }

    /// Which output `CamModel::forward` explains: the logits of a final activation (the
    /// default, as Grad-CAM prescribes and as the run-time executor does) or the graph output.
    pub fn scores(mut self, scores: ScoreSource) -> Self {
        self.scores = scores;
        self
    }

    /// Folder under `OUT_DIR` for the generated code (`model/` by default).
    pub fn out_dir(mut self, out_dir: impl Into<String>) -> Self {
        self.out_dir = out_dir.into();
        self
    }

    /// How the weights are loaded (embedded in the binary by default).
    pub fn load_strategy(mut self, strategy: LoadStrategy) -> Self {
        self.load_strategy = strategy;
        self
    }

    /// The crate the generated code calls (`ember_cam` by default; `crate` when the code is
    /// generated inside the crate that re-exports Ember's API).
    pub fn runtime_crate(mut self, path: impl Into<String>) -> Self {
        self.runtime_crate = path.into();
        self
    }

    /// Generates the model into `$OUT_DIR/<out_dir>/<stem>.rs`; returns the generated file.
    pub fn run_from_script(&self) -> Result<PathBuf, ImportError> {
        println!("cargo:rerun-if-changed={}", self.input.display());
        let out_dir = PathBuf::from(env::var("OUT_DIR").expect("run from a build script"));
        let tapped = tap_graph_as(&self.input, self.input_layout.map(Layout::from))?;
        if tapped.input_layout.is_none() && tapped.input_chw.len() == 3 {
            return Err(ImportError::Unsupported(format!(
                "cannot tell whether the input of {} is [N, C, H, W] or [N, H, W, C] (input [N, {}]): say which \
                 with TappedModelGen::input_layout",
                self.input.display(),
                tapped
                    .input_chw
                    .iter()
                    .map(|d| d.map_or("?".to_owned(), |d| d.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }

        let file_name = self
            .input
            .file_name()
            .ok_or_else(|| ImportError::Unsupported(format!("{} is not a file", self.input.display())))?;
        let staging = out_dir.join("ember-tapped");
        fs::create_dir_all(&staging).map_err(|source| ImportError::Write {
            path: staging.clone(),
            source,
        })?;
        let tapped_path = staging.join(file_name);
        let bytes = tapped
            .model
            .write_to_bytes()
            .map_err(|e| ImportError::Unsupported(format!("cannot encode the tapped graph: {e}")))?;
        fs::write(&tapped_path, bytes).map_err(|source| ImportError::Write {
            path: tapped_path.clone(),
            source,
        })?;

        ModelGen::new()
            .input(tapped_path.to_str().expect("UTF-8 OUT_DIR"))
            .out_dir(&self.out_dir)
            .development(false)
            .load_strategy(self.load_strategy)
            .register_custom_op(TapOp {
                runtime_crate: self.runtime_crate.clone(),
                op_type: TAP_OP,
            })
            .register_custom_op(TapOp {
                runtime_crate: self.runtime_crate.clone(),
                op_type: SCORES_OP,
            })
            .register_op_override(ClipOp {
                runtime_crate: self.runtime_crate.clone(),
            })
            .register_op_override(GeluOp {
                runtime_crate: self.runtime_crate.clone(),
            })
            .run_from_script();

        let generated = out_dir.join(&self.out_dir).join(file_name).with_extension("rs");
        let code = fs::read_to_string(&generated).map_err(|source| {
            ImportError::Read(ember_core::FileError::Io {
                what: "generated code",
                path: generated.clone(),
                source,
            })
        })?;
        let mut code = through_runtime_crate(&code, &api_path(&self.runtime_crate));
        code.push_str(&layer_table(&tapped, &self.runtime_crate, self.scores));
        fs::write(&generated, code).map_err(|source| ImportError::Write {
            path: generated.clone(),
            source,
        })?;
        Ok(generated)
    }
}

/// How burn-onnx's code applies a `Relu` node.
const BURN_RELU: &str = "burn::tensor::activation::relu(";

/// burn-onnx's code imports `burn` and `burn_store` as crates; they are reached through the
/// runtime crate instead (`::ember_cam::burn`, which also brings `burn` into scope for the
/// `#[derive(Module)]` expansions), so the user's crate needs no dependency on either.
/// The model's ReLUs become Ember's (which Guided Backpropagation can guide, and which run in
/// one pass on flex), and its `Conv2d` layers run through `conv2d_layer` (a depthwise
/// convolution's input gradient as a depthwise convolution).
fn through_runtime_crate(code: &str, runtime: &str) -> String {
    let conv_fields = conv2d_fields(code);
    let mut out = String::with_capacity(code.len() + 200);
    let mut header_done = false;
    for line in code.lines() {
        if !header_done && line.starts_with("use ") {
            let _ = writeln!(out, "#[allow(unused_imports)]\nuse {runtime}::burn;");
            header_done = true;
        }
        // In a binary crate, the loaders the user does not call would warn.
        if line.starts_with("impl ") {
            out.push_str("#[allow(dead_code)]\n");
        }
        let line = if let Some(rest) = line.strip_prefix("use burn::") {
            format!("use {runtime}::burn::{rest}")
        } else if let Some(rest) = line.strip_prefix("use burn_store::") {
            format!("use {runtime}::burn_store::{rest}")
        } else {
            let mut line = line.replace(BURN_RELU, &format!("{runtime}::relu("));
            for field in &conv_fields {
                line = line.replace(
                    &format!("self.{field}.forward("),
                    &format!("{runtime}::conv2d_layer(&self.{field}, "),
                );
            }
            line
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The fields of the generated `Model` that are Burn `Conv2d` layers (`conv2d3: Conv2d,`).
fn conv2d_fields(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| line.trim().strip_suffix(": Conv2d,"))
        .map(|field| field.trim_start_matches("pub ").to_owned())
        .filter(|field| !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// Code generation of ONNX `Clip`: Ember's one-pass `clamp` for float tensors (ReLU6 is a
/// `Clip`), Burn's `clamp` for integer tensors — bounds as burn-onnx reads them (constants,
/// or scalars computed in the graph).
struct ClipOp {
    runtime_crate: String,
}

impl ClipOp {
    /// One bound as a Rust expression of type `cast`, or `None` when absent.
    fn bound(
        bound: &Option<ClipInput>,
        inputs: &[Argument],
        cast: &TokenStream,
        ctx: &mut CodegenContext<'_, '_>,
    ) -> Result<Option<TokenStream>, ProcessError> {
        Ok(match bound {
            None => None,
            Some(ClipInput::Static(value)) => Some(quote! { #value }),
            Some(ClipInput::Runtime(input)) => {
                let argument = inputs.get(input.input_index).ok_or_else(|| {
                    ProcessError::Custom(format!("Clip bound `{}` is not among its inputs", input.name))
                })?;
                Some(match &argument.ty {
                    ArgType::ScalarNative(_) => {
                        let ident = arg_to_ident(argument);
                        quote! { (#ident as #cast) }
                    }
                    ArgType::ScalarTensor(_) => {
                        let tensor = ctx.arg(argument);
                        quote! { (#tensor).into_scalar::<#cast>() }
                    }
                    other => {
                        return Err(ProcessError::Custom(format!(
                            "Clip bound `{}` must be a scalar, not {other:?}",
                            input.name
                        )));
                    }
                })
            }
        })
    }
}

/// Code generation of ONNX `Gelu`: Ember's `gelu` (Burn's values, and the exact gradient on
/// every backend: Burn's ndarray and CubeCL backends differentiate the exact GELU as its tanh
/// approximation), Burn's `gelu_approximate` for `approximate = "tanh"` (plain tensor operations,
/// differentiated exactly).
struct GeluOp {
    runtime_crate: String,
}

impl OpOverride for GeluOp {
    fn target(&self) -> NodeType {
        NodeType::Gelu
    }

    fn forward(&self, node: &Node, ctx: &mut CodegenContext<'_, '_>) -> Result<TokenStream, ProcessError> {
        let Node::Gelu(gelu) = node else {
            return Err(ProcessError::Custom(format!("the Gelu override was given {node:?}")));
        };
        let (Some(input), Some(output)) = (gelu.inputs.first(), gelu.outputs.first()) else {
            return Err(ProcessError::Custom("Gelu without an input or an output".into()));
        };
        let x = ctx.arg(input);
        let y = arg_to_ident(output);
        Ok(match gelu.config.approximate {
            onnx_ir::node::gelu::GeluApproximate::Exact => {
                let runtime = TokenStream::from_str(&api_path(&self.runtime_crate))
                    .map_err(|e| ProcessError::Custom(format!("bad crate path `{}`: {e}", self.runtime_crate)))?;
                quote! { let #y = #runtime::gelu(#x); }
            }
            onnx_ir::node::gelu::GeluApproximate::Tanh => {
                quote! { let #y = burn::tensor::activation::gelu_approximate(#x); }
            }
        })
    }
}

impl OpOverride for ClipOp {
    fn target(&self) -> NodeType {
        NodeType::Clip
    }

    fn forward(&self, node: &Node, ctx: &mut CodegenContext<'_, '_>) -> Result<TokenStream, ProcessError> {
        let Node::Clip(clip) = node else {
            return Err(ProcessError::Custom(format!("the Clip override was given {node:?}")));
        };
        let (Some(input), Some(output)) = (clip.inputs.first(), clip.outputs.first()) else {
            return Err(ProcessError::Custom("Clip without an input or an output".into()));
        };
        let dtype = input.ty.elem_type();
        let float = dtype.is_float();
        let cast = if float {
            quote! { f64 }
        } else if dtype.is_uint() {
            quote! { u64 }
        } else {
            quote! { i64 }
        };
        let min = Self::bound(&clip.config.min, &clip.inputs, &cast, ctx)?;
        let max = Self::bound(&clip.config.max, &clip.inputs, &cast, ctx)?;
        let x = ctx.arg(input);
        let y = arg_to_ident(output);
        if float && matches!(input.ty, ArgType::Tensor(_)) {
            let runtime = TokenStream::from_str(&api_path(&self.runtime_crate))
                .map_err(|e| ProcessError::Custom(format!("bad crate path `{}`: {e}", self.runtime_crate)))?;
            let min = min.unwrap_or_else(|| quote! { f64::NEG_INFINITY });
            let max = max.unwrap_or_else(|| quote! { f64::INFINITY });
            return Ok(quote! { let #y = #runtime::clamp(#x, #min, #max); });
        }
        Ok(match (min, max) {
            (Some(min), Some(max)) => quote! { let #y = #x.clamp(#min, #max); },
            (Some(min), None) => quote! { let #y = #x.clamp_min(#min); },
            (None, Some(max)) => quote! { let #y = #x.clamp_max(#max); },
            (None, None) => quote! { let #y = #x; },
        })
    }
}

/// Code generation of the inserted tap nodes (`Tap`) and of the score tap (`Scores`).
struct TapOp {
    runtime_crate: String,
    op_type: &'static str,
}

impl CustomOp for TapOp {
    fn op_type(&self) -> &str {
        self.op_type
    }

    fn domain(&self) -> &str {
        TAP_DOMAIN
    }

    fn infer_output_types(&self, node: &CustomNode) -> Result<Vec<ArgType>, ProcessError> {
        Ok(vec![node.inputs[0].ty.clone()])
    }

    fn forward(&self, node: &CustomNode, ctx: &mut CodegenContext<'_, '_>) -> Result<TokenStream, ProcessError> {
        let runtime = TokenStream::from_str(&api_path(&self.runtime_crate))
            .map_err(|e| ProcessError::Custom(format!("bad crate path `{}`: {e}", self.runtime_crate)))?;
        if self.op_type == SCORES_OP {
            let input = ctx.arg(&node.inputs[0]);
            let output = arg_to_ident(&node.outputs[0]);
            return Ok(quote! { let #output = #runtime::score_tap(#input); });
        }
        let layer = node
            .attrs
            .get_string(TAP_ATTRIBUTE)
            .ok_or_else(|| ProcessError::Custom(format!("tap node {} has no layer name", node.name)))?
            .to_owned();
        let input = ctx.arg(&node.inputs[0]);
        let output = arg_to_ident(&node.outputs[0]);
        Ok(quote! { let #output = #runtime::tap(#layer, #input); })
    }
}

/// The path generated code reaches Ember's API by: `::ember_cam` for a crate name, `crate`
/// (or `crate::…`) for code generated inside the crate that provides the API itself.
fn api_path(runtime_crate: &str) -> String {
    if runtime_crate == "crate" || runtime_crate.starts_with("crate::") {
        runtime_crate.to_owned()
    } else {
        format!("::{runtime_crate}")
    }
}

/// The layer table and the `CamModel` implementation appended to the generated model.
fn layer_table(tapped: &TappedGraph, runtime: &str, scores: ScoreSource) -> String {
    let runtime = api_path(runtime);
    let default = tapped.default_layer.clone().unwrap_or_default();
    let mut code = String::new();
    let _ = writeln!(code, "\n// ---- Appended by ember-onnx: the model's taps. ----\n");
    let _ = writeln!(
        code,
        "/// The tappable layers in graph order: (node name, output name, op type, shape, layout)."
    );
    let _ = writeln!(code, "#[rustfmt::skip]\n#[allow(dead_code, clippy::type_complexity)]");
    let _ = writeln!(
        code,
        "pub const LAYERS: &[(&str, &str, &str, &[Option<usize>], Option<{runtime}::Layout>)] = &["
    );
    for layer in &tapped.layers {
        let _ = writeln!(
            code,
            "    ({:?}, {:?}, {:?}, &{:?}, {}),",
            layer.name,
            layer.output.as_deref().unwrap_or_default(),
            layer.op_type,
            layer.shape,
            layout_code(layer.layout, &runtime)
        );
    }
    let _ = writeln!(code, "];\n");
    let _ = writeln!(
        code,
        "/// The last spatial layer before global pooling: explained when none is chosen."
    );
    let _ = writeln!(
        code,
        "#[allow(dead_code)]\npub const DEFAULT_LAYER: &str = {default:?};\n"
    );
    let _ = writeln!(
        code,
        "/// The input's static [channels, height, width] (`None` where dynamic), whatever its layout."
    );
    let _ = writeln!(
        code,
        "#[allow(dead_code)]\npub const INPUT_CHW: &[Option<usize>] = &{:?};\n",
        tapped.input_chw
    );
    if tapped.output_rank == Some(2) {
        // The logits the score tap records, or the output as it is.
        let forward = match (tapped.final_activation, scores) {
            (Some(_), ScoreSource::Logits) => format!(
                "let (output, logits) = {runtime}::capture_scores(|| Model::forward(&model, input));\n        \
                 Ok(logits.unwrap_or(output))"
            ),
            _ => "Ok(Model::forward(&model, input))".to_owned(),
        };
        // Parameters without autodiff, whatever device they live on (a model in training): the
        // explanation never differentiates them and costs what it costs on a plain device. The
        // input keeps its autodiff only for Guided Backpropagation (`network_input`).
        // Ember's inputs are [N, C, H, W]; a channels-last graph gets its own layout.
        let permute = match tapped.input_layout {
            Some(Layout::ChannelsLast) => ".permute([0, 2, 3, 1])",
            _ => "",
        };
        let forward = format!(
            "let model = self.valid();\n        let input = {runtime}::network_input(input){permute};\n        {forward}"
        );
        let activation = match tapped.final_activation {
            Some(activation) => format!("Some({runtime}::FinalActivation::{activation:?})"),
            None => "None".to_owned(),
        };
        let _ = writeln!(
            code,
            "/// The activation the graph ends in; `CamModel::forward` explains its input unless the\n\
             /// import kept the output (`TappedModelGen::scores`).\n\
             #[allow(dead_code)]\n\
             pub const FINAL_ACTIVATION: Option<{runtime}::FinalActivation> = {activation};\n"
        );
        let _ = write!(
            code,
            r#"impl {runtime}::CamModel for Model {{
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> {runtime}::Result<Tensor<2>> {{
        {forward}
    }}

    fn layers(&self) -> Vec<{runtime}::LayerInfo> {{
        LAYERS
            .iter()
            .map(|(name, output, op_type, shape, layout)| {runtime}::LayerInfo {{
                name: (*name).to_owned(),
                output: Some((*output).to_owned()),
                op_type: (*op_type).to_owned(),
                shape: shape.to_vec(),
                layout: *layout,
            }})
            .collect()
    }}

    fn default_layer(&self) -> Option<String> {{
        Some(DEFAULT_LAYER.to_owned())
    }}

    fn check_input(&self, input: &Tensor<4>) -> {runtime}::Result<()> {{
        {runtime}::check_input_chw(input, INPUT_CHW)
    }}
}}
"#
        );
    }
    code
}

/// A layer's layout as code.
fn layout_code(layout: Option<Layout>, runtime: &str) -> String {
    match layout {
        None => "None".into(),
        Some(Layout::ChannelsFirst) => format!("Some({runtime}::Layout::ChannelsFirst)"),
        Some(Layout::ChannelsLast) => format!("Some({runtime}::Layout::ChannelsLast)"),
        Some(Layout::Tokens(grid)) => format!(
            "Some({runtime}::Layout::Tokens({runtime}::TokenGrid {{ skip: {}, height: {}, width: {} }}))",
            grid.skip, grid.height, grid.width
        ),
    }
}
