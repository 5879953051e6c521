//! Build-time import of ONNX classifiers with tappable layers.
//!
//! [`TappedModelGen`] wraps `burn_onnx::ModelGen`: it generates the Burn model *and* puts a tap
//! after every node with a floating-point `[N, C, H, W]` output, so one generated model can be
//! explained at any of its layers, chosen at run time by the **original ONNX node name** (as
//! Netron shows it, e.g. `/features/features.18/features.18.2/Clip`) or by the node's output
//! tensor name.
//!
//! # How
//!
//! The ONNX graph is rewritten before code generation: a node `ember.tap::Tap` carrying the
//! original node name is inserted after each spatial output, and a [`burn_onnx::ext::CustomOp`]
//! hook turns it into a call to `ember_cam::tap(name, x)`. Of the mechanisms that work with
//! burn-onnx 0.22, this is the only one that reaches *every* node: an `OpOverride` replaces a
//! built-in op's code globally and cannot keep the built-in code of weighted ops such as `Conv`,
//! and burn-onnx renames nodes (`conv2d17`), so names must be carried into the graph before it
//! renames them. The types that decide which outputs are spatial come from onnx-ir's own type
//! inference on the same graph, so the choice matches what burn-onnx generates.
//!
//! A table of the taps (name, output, op type, shape) and an implementation of
//! `ember_cam::CamModel` for the generated `Model` are appended to the generated file.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::{env, fs};

use burn_onnx::ext::{ArgType, CodegenContext, CustomNode, CustomOp, DType, ProcessError, arg_to_ident};
use burn_onnx::{LoadStrategy, ModelGen};
use onnx_ir::{
    AttributeProto, AttributeType, CustomOpInference, HookCoverage, Message, MissingReason, ModelProto, Node,
    NodeProto, OnnxGraphBuilder,
};
use proc_macro2::TokenStream;
use quote::quote;

/// The custom ONNX domain of inserted tap nodes.
pub const TAP_DOMAIN: &str = "ember.tap";
/// The op type of inserted tap nodes.
pub const TAP_OP: &str = "Tap";
/// What a tapped value's name gets appended (`x` becomes `x__ember_tap` after its tap).
pub const TAPPED_SUFFIX: &str = "__ember_tap";
/// The attribute of a tap node that holds the original node name.
pub const TAP_ATTRIBUTE: &str = "layer";
const SURVEY_ATTRIBUTE: &str = "survey_index";

/// Why a model could not be imported with taps.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The ONNX file could not be read.
    #[error("cannot read ONNX model {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid ONNX protobuf.
    #[error("{path} is not a valid ONNX model: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// onnx-ir could not parse the graph.
    #[error("onnx-ir cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// onnx-ir's message.
        message: String,
    },
    /// A tensor stored in an external-data file could not be loaded.
    #[error("external data of tensor `{tensor}`: {message}")]
    ExternalData {
        /// The initializer.
        tensor: String,
        /// What went wrong.
        message: String,
    },
    /// The graph uses a construct the tap rewrite does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// No node has a spatial floating-point output.
    #[error("{0} has no node with a [N, C, H, W] floating-point output to tap")]
    NothingToTap(PathBuf),
    /// Writing generated files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One tappable layer as recorded at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TappedLayer {
    /// The original ONNX node name (what the tap is addressed by).
    pub node: String,
    /// The node's original output tensor name (an alias).
    pub output: String,
    /// The ONNX op type.
    pub op_type: String,
    /// The static output shape, `None` for symbolic dimensions (the batch).
    pub shape: Vec<Option<usize>>,
}

/// The ONNX graph rewritten with taps, and what was tapped.
#[derive(Debug, Clone)]
pub struct TappedGraph {
    /// The rewritten model.
    pub model: ModelProto,
    /// The taps in graph order.
    pub layers: Vec<TappedLayer>,
    /// Rank of the graph's single output, if it has exactly one tensor output.
    pub output_rank: Option<usize>,
    /// The graph input's static `[C, H, W]`, `None` where symbolic.
    pub input_chw: Vec<Option<usize>>,
}

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
#[derive(Debug, Clone)]
pub struct TappedModelGen {
    input: PathBuf,
    out_dir: String,
    load_strategy: LoadStrategy,
    runtime_crate: String,
}

impl TappedModelGen {
    /// Imports the ONNX model at `input`.
    pub fn new(input: impl AsRef<Path>) -> Self {
        Self {
            input: input.as_ref().to_path_buf(),
            out_dir: "model/".into(),
            load_strategy: LoadStrategy::Embedded,
            runtime_crate: "ember_cam".into(),
        }
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

    /// The crate path the generated code calls (`ember_cam` by default).
    pub fn runtime_crate(mut self, path: impl Into<String>) -> Self {
        self.runtime_crate = path.into();
        self
    }

    /// Generates the model into `$OUT_DIR/<out_dir>/<stem>.rs`; returns the generated file.
    pub fn run_from_script(&self) -> Result<PathBuf, ImportError> {
        println!("cargo:rerun-if-changed={}", self.input.display());
        let out_dir = PathBuf::from(env::var("OUT_DIR").expect("run from a build script"));
        let tapped = tap_graph(&self.input)?;

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
            })
            .run_from_script();

        let generated = out_dir.join(&self.out_dir).join(file_name).with_extension("rs");
        let mut code = fs::read_to_string(&generated).map_err(|source| ImportError::Read {
            path: generated.clone(),
            source,
        })?;
        code.push_str(&layer_table(&tapped, &self.runtime_crate));
        fs::write(&generated, code).map_err(|source| ImportError::Write {
            path: generated.clone(),
            source,
        })?;
        Ok(generated)
    }
}

/// Reads an ONNX file and inserts a tap after every spatial floating-point node output.
///
/// Two passes: the first puts a pass-through tap after *every* node output and lets onnx-ir's
/// type inference tell each one's type (onnx-ir renames values, so types cannot be looked up by
/// name); the second taps only the `[N, C, H, W]` floating-point outputs.
pub fn tap_graph(path: &Path) -> Result<TappedGraph, ImportError> {
    let bytes = fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut model = ModelProto::parse_from_bytes(&bytes).map_err(|e| ImportError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if model.graph.is_none() {
        return Err(ImportError::Decode {
            path: path.to_path_buf(),
            message: "the file holds no graph".into(),
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    inline_external_data(&mut model, base)?;
    tap_model(model, path)
}

/// [`tap_graph`] for a model already in memory (`path` names it in errors); external data
/// must already be inlined.
pub fn tap_model(mut model: ModelProto, path: &Path) -> Result<TappedGraph, ImportError> {
    let input_chw = graph_input_chw(&model);
    let candidates = node_outputs(&mut model)?;

    let mut survey = model.clone();
    let labels = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| (c.output.clone(), int_attribute(SURVEY_ATTRIBUTE, index as i64)))
        .collect();
    insert_taps(&mut survey, labels);
    let survey_bytes = survey
        .write_to_bytes()
        .map_err(|e| ImportError::Unsupported(format!("cannot encode the graph: {e}")))?;
    let graph = OnnxGraphBuilder::new()
        .simplify(false)
        .with_custom_op_inference(Arc::new(PassThrough))
        .parse_bytes(&survey_bytes)
        .map_err(|e| ImportError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let types: HashMap<usize, ArgType> = graph
        .nodes
        .iter()
        .filter_map(|node| match node {
            Node::Custom(tap) => {
                let index = tap.attrs.get_i64(SURVEY_ATTRIBUTE)?;
                Some((index as usize, tap.inputs.first()?.ty.clone()))
            }
            _ => None,
        })
        .collect();

    let mut layers = Vec::new();
    let mut labels = Vec::new();
    for (index, candidate) in candidates.into_iter().enumerate() {
        if let Some(ArgType::Tensor(tensor)) = types.get(&index)
            && tensor.rank == 4
            && is_float(tensor.dtype)
        {
            let shape = tensor.static_shape.clone().unwrap_or_else(|| vec![None; 4]);
            labels.push((
                candidate.output.clone(),
                string_attribute(TAP_ATTRIBUTE, &candidate.node),
            ));
            layers.push(TappedLayer {
                node: candidate.node,
                output: candidate.output,
                op_type: candidate.op_type,
                shape,
            });
        }
    }
    if layers.is_empty() {
        return Err(ImportError::NothingToTap(path.to_path_buf()));
    }
    insert_taps(&mut model, labels);

    let output_rank = match graph.outputs.as_slice() {
        [only] => match &only.ty {
            ArgType::Tensor(t) => Some(t.rank),
            _ => None,
        },
        _ => None,
    };
    Ok(TappedGraph {
        model,
        layers,
        output_rank,
        input_chw,
    })
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// A node output that may be tapped.
struct NodeOutput {
    node: String,
    op_type: String,
    output: String,
}

/// Every output of every node but constants, in graph order; unnamed nodes get a name.
fn node_outputs(model: &mut ModelProto) -> Result<Vec<NodeOutput>, ImportError> {
    let graph = model.graph.mut_or_insert_default();
    if graph
        .node
        .iter()
        .any(|n| n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty()))
    {
        return Err(ImportError::Unsupported(
            "graphs with control flow (If, Loop, Scan) cannot be tapped yet".into(),
        ));
    }
    let mut outputs = Vec::new();
    for (index, node) in graph.node.iter_mut().enumerate() {
        if node.name.is_empty() {
            node.name = format!("{}_{index}", node.op_type);
        }
        if node.op_type == "Constant" {
            continue;
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            outputs.push(NodeOutput {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                output: output.clone(),
            });
        }
    }
    Ok(outputs)
}

fn string_attribute(name: &str, value: &str) -> AttributeProto {
    let mut attribute = AttributeProto::new();
    attribute.name = name.into();
    attribute.type_ = AttributeType::STRING.into();
    attribute.s = value.as_bytes().to_vec().into();
    attribute
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    let mut attribute = AttributeProto::new();
    attribute.name = name.into();
    attribute.type_ = AttributeType::INT.into();
    attribute.i = value;
    attribute
}

/// Inserts `ember.tap::Tap(value) -> value__ember_tap` right after the producer of each listed
/// value, carrying the given attribute, and rewires every consumer and graph output to it.
fn insert_taps(model: &mut ModelProto, labels: Vec<(String, AttributeProto)>) {
    let mut label_of: HashMap<String, AttributeProto> = labels.into_iter().collect();
    let tapped_name = |value: &str| format!("{value}{TAPPED_SUFFIX}");
    let graph = model.graph.mut_or_insert_default();
    let mut nodes = Vec::with_capacity(graph.node.len() + label_of.len());
    let tapped: HashSet<String> = label_of.keys().cloned().collect();
    for mut node in std::mem::take(&mut graph.node) {
        for input in node.input.iter_mut() {
            if tapped.contains(input.as_str()) {
                *input = tapped_name(input);
            }
        }
        let taps: Vec<NodeProto> = node
            .output
            .iter()
            .filter_map(|output| {
                let attribute = label_of.remove(output)?;
                let mut tap = NodeProto::new();
                tap.name = format!("ember_tap_{output}");
                tap.op_type = TAP_OP.into();
                tap.domain = TAP_DOMAIN.into();
                tap.input = vec![output.clone()];
                tap.output = vec![tapped_name(output)];
                tap.attribute = vec![attribute];
                Some(tap)
            })
            .collect();
        nodes.push(node);
        nodes.extend(taps);
    }
    graph.node = nodes;
    for output in graph.output.iter_mut() {
        if tapped.contains(output.name.as_str()) {
            output.name = tapped_name(&output.name);
        }
    }
    if !model.opset_import.iter().any(|o| o.domain == TAP_DOMAIN)
        && let Some(first) = model.opset_import.first()
    {
        let mut opset = first.clone();
        opset.domain = TAP_DOMAIN.into();
        opset.version = 1;
        model.opset_import.push(opset);
    }
}

/// Replaces references to external-data files (models over 2 GB, or exported with
/// `save_as_external_data`) by the bytes they point to, so the graph can be parsed from memory.
///
/// Locations are resolved against `base` (the model's folder) and, as onnx-ir requires, may not
/// be absolute or climb out of it.
pub fn inline_external_data(model: &mut ModelProto, base: &Path) -> Result<(), ImportError> {
    const EXTERNAL: i32 = 1;
    let graph = model.graph.mut_or_insert_default();
    let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    for tensor in graph.initializer.iter_mut() {
        if tensor.data_location.value() != EXTERNAL {
            continue;
        }
        let entry = |key: &str| {
            tensor
                .external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let bad = |why: String| ImportError::ExternalData {
            tensor: tensor.name.clone(),
            message: why,
        };
        let location = entry("location").ok_or_else(|| bad("no `location` entry".into()))?;
        let relative = PathBuf::from(&location);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad(format!(
                "location `{location}` must be a path inside the model's folder"
            )));
        }
        let file = base.join(&relative);
        if !files.contains_key(&file) {
            let data = fs::read(&file)
                .map_err(|e| bad(format!("cannot read the external-data file {}: {e}", file.display())))?;
            files.insert(file.clone(), data);
        }
        let data = &files[&file];
        let parse = |key: &str| -> Result<Option<usize>, ImportError> {
            entry(key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| bad(format!("`{key}` = `{v}` is not a number")))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?.unwrap_or(data.len().saturating_sub(offset));
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                bad(format!(
                    "bytes {offset}..{} lie outside {} ({} bytes)",
                    offset.saturating_add(length),
                    file.display(),
                    data.len()
                ))
            })?;
        tensor.raw_data = data[offset..end].to_vec().into();
        tensor.external_data.clear();
        tensor.data_location = Default::default();
    }
    Ok(())
}

/// Type inference of tap nodes for onnx-ir: a tap's output has its input's type.
///
/// Register it with `OnnxGraphBuilder::with_custom_op_inference` to parse a tapped graph.
pub struct PassThrough;

impl CustomOpInference for PassThrough {
    fn coverage(&self, op_type: &str, domain: &str, _opset: usize) -> HookCoverage {
        if op_type == TAP_OP && domain == TAP_DOMAIN {
            HookCoverage::Covered
        } else {
            HookCoverage::Missing(MissingReason::NoHook)
        }
    }

    fn infer(&self, node: &CustomNode) -> Result<Option<Vec<ArgType>>, ProcessError> {
        if node.op_type == TAP_OP && node.domain == TAP_DOMAIN {
            Ok(Some(vec![node.inputs[0].ty.clone()]))
        } else {
            Ok(None)
        }
    }
}

/// The static `[C, H, W]` of the first graph input that is not an initializer.
fn graph_input_chw(model: &ModelProto) -> Vec<Option<usize>> {
    let graph = model.graph.get_or_default();
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let Some(input) = graph.input.iter().find(|i| !initializers.contains(i.name.as_str())) else {
        return Vec::new();
    };
    let dims: Vec<Option<usize>> = input
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_value() {
                usize::try_from(d.dim_value()).ok()
            } else {
                None
            }
        })
        .collect();
    dims.get(1..).map(<[_]>::to_vec).unwrap_or_default()
}

/// Code generation of the inserted tap nodes.
struct TapOp {
    runtime_crate: String,
}

impl CustomOp for TapOp {
    fn op_type(&self) -> &str {
        TAP_OP
    }

    fn domain(&self) -> &str {
        TAP_DOMAIN
    }

    fn infer_output_types(&self, node: &CustomNode) -> Result<Vec<ArgType>, ProcessError> {
        Ok(vec![node.inputs[0].ty.clone()])
    }

    fn forward(&self, node: &CustomNode, ctx: &mut CodegenContext<'_, '_>) -> Result<TokenStream, ProcessError> {
        let layer = node
            .attrs
            .get_string(TAP_ATTRIBUTE)
            .ok_or_else(|| ProcessError::Custom(format!("tap node {} has no layer name", node.name)))?
            .to_owned();
        let input = ctx.arg(&node.inputs[0]);
        let output = arg_to_ident(&node.outputs[0]);
        let runtime: syn_path::Path = self.runtime_crate.parse().map_err(ProcessError::Custom)?;
        Ok(quote! { let #output = #runtime::tap(#layer, #input); })
    }
}

/// A `::crate_name` path as tokens.
mod syn_path {
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};

    pub struct Path(TokenStream);

    impl std::str::FromStr for Path {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let path: TokenStream = s.parse().map_err(|e| format!("bad crate path `{s}`: {e}"))?;
            Ok(Self(quote!(::#path)))
        }
    }

    impl ToTokens for Path {
        fn to_tokens(&self, tokens: &mut TokenStream) {
            self.0.to_tokens(tokens);
        }
    }
}

/// The layer table and the `CamModel` implementation appended to the generated model.
fn layer_table(tapped: &TappedGraph, runtime: &str) -> String {
    let default = default_layer(&tapped.layers);
    let mut code = String::new();
    let _ = writeln!(code, "\n// ---- Appended by ember-onnx: the model's taps. ----\n");
    let _ = writeln!(
        code,
        "/// The tappable layers in graph order: (node name, output name, op type, shape)."
    );
    let _ = writeln!(code, "#[rustfmt::skip]");
    let _ = writeln!(code, "pub const LAYERS: &[(&str, &str, &str, &[Option<usize>])] = &[");
    for layer in &tapped.layers {
        let _ = writeln!(
            code,
            "    ({:?}, {:?}, {:?}, &{:?}),",
            layer.node, layer.output, layer.op_type, layer.shape
        );
    }
    let _ = writeln!(code, "];\n");
    let _ = writeln!(
        code,
        "/// The last spatial layer before global pooling: explained when none is chosen."
    );
    let _ = writeln!(code, "pub const DEFAULT_LAYER: &str = {default:?};\n");
    let _ = writeln!(
        code,
        "/// The input's static [channels, height, width] (`None` where dynamic)."
    );
    let _ = writeln!(
        code,
        "pub const INPUT_CHW: &[Option<usize>] = &{:?};\n",
        tapped.input_chw
    );
    if tapped.output_rank == Some(2) {
        let _ = write!(
            code,
            r#"impl ::{runtime}::CamModel for Model {{
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> ::{runtime}::Result<Tensor<2>> {{
        Ok(Model::forward(self, input))
    }}

    fn layers(&self) -> Vec<::{runtime}::LayerInfo> {{
        LAYERS
            .iter()
            .map(|(name, output, op_type, shape)| ::{runtime}::LayerInfo {{
                name: (*name).to_owned(),
                output: Some((*output).to_owned()),
                op_type: (*op_type).to_owned(),
                shape: shape.to_vec(),
            }})
            .collect()
    }}

    fn default_layer(&self) -> Option<String> {{
        Some(DEFAULT_LAYER.to_owned())
    }}

    fn check_input(&self, input: &Tensor<4>) -> ::{runtime}::Result<()> {{
        ::{runtime}::check_input_chw(input, INPUT_CHW)
    }}
}}
"#
        );
    }
    code
}

/// The last tapped layer that still has a spatial extent (global pooling outputs are 1×1).
pub fn default_layer(layers: &[TappedLayer]) -> String {
    let is_global =
        |l: &TappedLayer| l.op_type.starts_with("Global") || matches!(l.shape.as_slice(), [_, _, Some(1), Some(1)]);
    layers
        .iter()
        .rev()
        .find(|l| !is_global(l))
        .or(layers.last())
        .map(|l| l.node.clone())
        .unwrap_or_default()
}
