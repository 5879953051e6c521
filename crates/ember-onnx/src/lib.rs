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
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_core::{FinalActivation, LayerInfo};
use onnx_ir::{
    ArgType, AttributeProto, AttributeType, CustomNode, CustomOpInference, DType, HookCoverage, Message, MissingReason,
    ModelProto, Node, NodeProto, OnnxGraphBuilder, ProcessError,
};

#[cfg(feature = "codegen")]
mod codegen;
mod layout;
pub mod legalize;
/// How generated models load their weights (re-exported from burn-onnx).
#[cfg(feature = "codegen")]
pub use burn_onnx::LoadStrategy;
#[cfg(feature = "codegen")]
pub use codegen::TappedModelGen;
/// Which output generated models explain ([`TappedModelGen::scores`]).
pub use ember_core::ScoreSource;
/// Layouts of inputs and layers ([`TappedGraph::input_layout`], [`LayerInfo::layout`]).
pub use ember_core::{Layout, SpatialLayout, TokenGrid};

/// The custom ONNX domain of inserted tap nodes.
pub const TAP_DOMAIN: &str = "ember.tap";
/// The op type of inserted tap nodes.
pub const TAP_OP: &str = "Tap";
/// What a tapped value's name gets appended (`x` becomes `x__ember_tap` after its tap).
pub const TAPPED_SUFFIX: &str = "__ember_tap";
/// The attribute of a tap node that holds the original node name.
pub const TAP_ATTRIBUTE: &str = "layer";
/// The op type of the score tap: inserted (in [`TAP_DOMAIN`]) on the input of a final Softmax,
/// LogSoftmax or one-logit Sigmoid, the logits Grad-CAM explains (see
/// [`ember_core::ScoreSource`]).
pub const SCORES_OP: &str = "Scores";
/// What the logits' name gets appended after the score tap.
const SCORED_SUFFIX: &str = "__ember_scores";
const SURVEY_ATTRIBUTE: &str = "survey_index";

/// Why a model could not be imported with taps.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The ONNX file could not be read (missing, not a regular file, larger than protobuf's
    /// 2 GiB or the memory budget).
    #[error(transparent)]
    Read(#[from] ember_core::FileError),
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
    /// The graph has more nodes than Ember loads (see [`MAX_NODES`]).
    #[error(
        "{path} has {nodes} nodes, more than the {limit} Ember loads (onnx-ir 0.22's type inference takes time \
         quadratic in the node count: 5000 nodes load in 3.5 s, 10000 in 17 s)"
    )]
    TooManyNodes {
        /// The file.
        path: PathBuf,
        /// Its nodes, subgraphs included.
        nodes: usize,
        /// [`MAX_NODES`].
        limit: usize,
    },
    /// The graph uses a construct the tap rewrite does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// No node has a spatial floating-point output.
    #[error("{0} has no node with a [N, C, H, W] floating-point output to tap")]
    NothingToTap(PathBuf),
    /// The output asked for is not one of the graph's.
    #[error("{path} has no output `{name}`; its outputs: {}", .outputs.join(", "))]
    UnknownOutput {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The graph's outputs, in order.
        outputs: Vec<String>,
    },
    /// Writing generated files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The ONNX graph rewritten with taps, and what was tapped.
#[derive(Debug, Clone)]
pub struct TappedGraph {
    /// The rewritten model.
    pub model: ModelProto,
    /// The taps in graph order: the original ONNX node name (what a tap is addressed by), its
    /// output tensor name (an alias), op type and static shape.
    pub layers: Vec<LayerInfo>,
    /// Rank of the graph's single output, if it has exactly one tensor output.
    pub output_rank: Option<usize>,
    /// The graph input's static `[C, H, W]` (whatever its layout), `None` where symbolic.
    pub input_chw: Vec<Option<usize>>,
    /// The graph input's layout: channels first or last; `None` when neither its shape nor the
    /// graph tells (see [`tap_graph_as`]).
    pub input_layout: Option<Layout>,
    /// The activation the graph ends in, whose input carries a score tap.
    pub final_activation: Option<FinalActivation>,
    /// The layer explained when none is chosen (see [`default_layer`]).
    pub default_layer: Option<String>,
}

/// Reads an ONNX file and inserts a tap after every spatial floating-point node output.
///
/// Two passes: the first puts a pass-through tap after *every* node output and lets onnx-ir's
/// type inference tell each one's type (onnx-ir renames values, so types cannot be looked up by
/// name); the second taps only the `[N, C, H, W]` floating-point outputs.
pub fn tap_graph(path: &Path) -> Result<TappedGraph, ImportError> {
    tap_graph_as(path, None)
}

/// [`tap_graph`], with the input's layout given (channels first or last) instead of decided
/// from its shape and the graph; the layers' layouts follow from it.
pub fn tap_graph_as(path: &Path, input_layout: Option<Layout>) -> Result<TappedGraph, ImportError> {
    tap_model_as(read_model(path)?, path, input_layout)
}

/// Reads an ONNX file as it is, with the tensors of its external-data files inlined: within
/// the memory budget and protobuf's 2 GiB, nothing read outside the model's folder.
pub fn read_model(path: &Path) -> Result<ModelProto, ImportError> {
    // Protobuf messages end at 2 GiB; larger weights live in external-data files.
    let limit = ember_core::memory_budget().min(2 << 30);
    let bytes = ember_core::limits::read_regular_file(path, "ONNX model", limit)?;
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
    check_node_count(&model, path)?;
    Ok(model)
}

/// The names of the graph's outputs, in order, as the file has them.
pub fn output_names(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .get_or_default()
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect()
}

/// Keeps only the graph output `name` (for models with several outputs: a detector's boxes and
/// scores, a segmenter's auxiliary head), so that the taps, the score tap and the explanation
/// see that one; the nodes only the others need are never run.
pub fn select_output(model: &mut ModelProto, name: &str, path: &Path) -> Result<(), ImportError> {
    let graph = model.graph.mut_or_insert_default();
    if !graph.output.iter().any(|o| o.name == name) {
        return Err(ImportError::UnknownOutput {
            path: path.to_path_buf(),
            name: name.to_owned(),
            outputs: output_names(model),
        });
    }
    graph.output.retain(|o| o.name == name);
    Ok(())
}

/// The most nodes (subgraphs included) a graph may have. Image classifiers have a few hundred
/// (ResNet-50: 175, a ViT-B export: under 1000); onnx-ir 0.22's type inference is quadratic in
/// the node count, so without a bound a 300 KB file of 30000 nodes would take minutes to load.
pub const MAX_NODES: usize = 5_000;

/// Refuses graphs of more than [`MAX_NODES`] nodes.
fn check_node_count(model: &ModelProto, path: &Path) -> Result<(), ImportError> {
    let nodes = count_nodes(model.graph.get_or_default());
    if nodes > MAX_NODES {
        return Err(ImportError::TooManyNodes {
            path: path.to_path_buf(),
            nodes,
            limit: MAX_NODES,
        });
    }
    Ok(())
}

/// The nodes of `graph` and of the subgraphs in its nodes' attributes.
fn count_nodes(graph: &onnx_ir::GraphProto) -> usize {
    graph.node.len()
        + graph
            .node
            .iter()
            .flat_map(|node| &node.attribute)
            .map(|attribute| {
                attribute.g.as_ref().map_or(0, count_nodes) + attribute.graphs.iter().map(count_nodes).sum::<usize>()
            })
            .sum::<usize>()
}

/// [`tap_graph`] for a model already in memory (`path` names it in errors); external data
/// must already be inlined.
pub fn tap_model(model: ModelProto, path: &Path) -> Result<TappedGraph, ImportError> {
    tap_model_as(model, path, None)
}

/// [`tap_model`] with the input's layout given (see [`tap_graph_as`]).
pub fn tap_model_as(
    mut model: ModelProto,
    path: &Path,
    input_layout: Option<Layout>,
) -> Result<TappedGraph, ImportError> {
    check_node_count(&model, path)?;
    let (input_name, input_dims) = graph_input(&model).unwrap_or_default();
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

    let mut rank4: HashSet<String> = candidates
        .iter()
        .enumerate()
        .filter(|(index, _)| matches!(types.get(index), Some(ArgType::Tensor(t)) if t.rank == 4))
        .map(|(_, candidate)| candidate.output.clone())
        .collect();
    if input_dims.len() == 4 {
        rank4.insert(input_name.clone());
    }
    // The input's layout: as given, from its shape or first consumers, or else from what the
    // graph implies for it further on (a convolution after element-wise operators).
    let proto = model.graph.get_or_default();
    let input_layout = input_layout
        .or_else(|| layout::input_layout(&input_dims, &input_name, proto))
        .or_else(
            || match layout::channel_axes(proto, &input_name, None, &rank4).get(&input_name) {
                Some(1) => Some(Layout::ChannelsFirst),
                Some(3) => Some(Layout::ChannelsLast),
                _ => None,
            },
        );
    let (input_chw, input_hw) = match (input_layout, input_dims.as_slice()) {
        (Some(Layout::ChannelsLast), &[_, h, w, c]) => (vec![c, h, w], h.zip(w)),
        (_, [_, c, h, w]) => (vec![*c, *h, *w], h.zip(*w)),
        (_, dims) => (dims.get(1..).map(<[_]>::to_vec).unwrap_or_default(), None),
    };
    let input_hw = input_hw.map(|(h, w)| [h, w]);
    let axes = layout::channel_axes(proto, &input_name, input_layout, &rank4);

    let mut layers = Vec::new();
    let mut labels = Vec::new();
    for (index, candidate) in candidates.into_iter().enumerate() {
        let Some(ArgType::Tensor(tensor)) = types.get(&index) else {
            continue;
        };
        if !is_float(tensor.dtype) || !(tensor.rank == 3 || tensor.rank == 4) {
            continue;
        }
        let mut shape = tensor.static_shape.clone().unwrap_or_else(|| vec![None; tensor.rank]);
        // onnx-ir 0.22 gives a Resize (and Upsample) its input's height and width
        // (`node/resize.rs`, `same_as_input`): the file's declaration, or else unknown.
        let resizes = matches!(candidate.op_type.as_str(), "Resize" | "Upsample");
        let declared = declared_shape(proto, &candidate.output).filter(|d| d.len() == tensor.rank);
        if resizes && let Some(declared) = &declared {
            shape.clone_from(declared);
        }
        // A first axis that is not the batch (attention heads or tokens moved in front) makes
        // no image-batch layer.
        if let Some(first) = shape[0]
            && input_dims.first().copied().flatten() != Some(first)
        {
            continue;
        }
        let layout = if tensor.rank == 4 {
            layout::layer_layout(axes.get(&candidate.output).copied(), &shape, input_hw)
        } else {
            // Transformer tokens [N, T, C]: a layer when T tokens make a patch grid of the input
            // (after leading class, distillation or register tokens).
            match (shape[1], input_hw) {
                (Some(tokens), Some(hw)) => match TokenGrid::infer(tokens, hw) {
                    Some(grid) => Some(Layout::Tokens(grid)),
                    None => continue,
                },
                _ => continue,
            }
        };
        if resizes && declared.is_none() && shape.len() == 4 {
            let spatial = match layout {
                Some(Layout::ChannelsLast) => 1..3,
                _ => 2..4,
            };
            shape[spatial].fill(None);
        }
        labels.push((
            candidate.output.clone(),
            string_attribute(TAP_ATTRIBUTE, &candidate.node),
        ));
        layers.push(LayerInfo {
            name: candidate.node,
            output: Some(candidate.output),
            op_type: candidate.op_type,
            shape,
            layout,
        });
    }
    if layers.is_empty() {
        return Err(ImportError::NothingToTap(path.to_path_buf()));
    }
    let output_rank = match graph.outputs.as_slice() {
        [only] => match &only.ty {
            ArgType::Tensor(t) => Some(t.rank),
            _ => None,
        },
        _ => None,
    };
    let default_layer = default_layer(model.graph.get_or_default(), &layers, output_rank == Some(4));
    insert_taps(&mut model, labels);

    // One logit: a sigmoid over it is a binary classifier's probability. The size is onnx-ir's
    // inference, or the file's declaration (onnx-ir leaves static shapes with a symbolic batch
    // unknown).
    let inferred = match graph.outputs.as_slice() {
        [only] => {
            matches!(&only.ty, ArgType::Tensor(t) if t.static_shape.as_deref().is_some_and(|s| s.get(1) == Some(&Some(1))))
        }
        _ => false,
    };
    let declared = model
        .graph
        .get_or_default()
        .output
        .first()
        .and_then(|output| output.type_.as_ref())
        .and_then(|ty| ty.tensor_type().shape.as_ref())
        .is_some_and(|shape| shape.dim.len() == 2 && shape.dim[1].dim_value() == 1);
    let one_logit = inferred || declared;
    let final_activation = match output_rank {
        Some(rank @ (2 | 4)) => insert_score_tap(&mut model, rank, one_logit),
        _ => None,
    };
    Ok(TappedGraph {
        model,
        layers,
        output_rank,
        input_chw,
        input_layout,
        final_activation,
        default_layer,
    })
}

/// The layer explained when none is chosen. In a transformer (token layers and attention
/// Softmaxes), the normalisation (a LayerNormalization or RMSNormalization, or LayerNorm's
/// decomposition below opset 17)
/// before the last attention — pytorch-grad-cam's advice for ViTs,
/// `blocks[-1].norm1`: after the last attention only the class token reaches the head, so later
/// layers' patch tokens have no gradient. The same in a transformer with a `dense` output (a
/// saliency or segmentation ViT), whose patch-token head would otherwise pass for the coarsest
/// layer. Otherwise, for a dense output the end of the encoder (`dense_default_layer`), and for
/// class scores the last layer with a spatial extent ([`ember_core::default_layer`]).
pub fn default_layer(graph: &onnx_ir::GraphProto, layers: &[LayerInfo], dense: bool) -> Option<String> {
    let position: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .map(|(index, node)| (node.name.as_str(), index))
        .collect();
    let producer: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|node| node.output.iter().map(move |o| (o.as_str(), node)))
        .collect();
    let op_of = |node: &NodeProto, input: usize| {
        node.input
            .get(input)
            .and_then(|name| producer.get(name.as_str()))
            .map(|n| n.op_type.as_str())
    };
    // A LayerNormalization or RMSNormalization, or the decomposition exporters write below
    // opset 17: `(x − mean) / sqrt(var + ε) · γ + β`, ending Div(·, Sqrt) → Mul → Add.
    let is_layer_norm = |layer: &LayerInfo| {
        if layer.op_type == "LayerNormalization" || layer.op_type == "RMSNormalization" {
            return true;
        }
        let Some(&index) = position.get(layer.name.as_str()) else {
            return false;
        };
        let add = &graph.node[index];
        let mul = (add.op_type == "Add" && op_of(add, 0) == Some("Mul"))
            .then(|| producer.get(add.input[0].as_str()))
            .flatten();
        let div = mul
            .filter(|mul| op_of(mul, 0) == Some("Div"))
            .and_then(|mul| producer.get(mul.input[0].as_str()));
        div.is_some_and(|div| op_of(div, 1) == Some("Sqrt"))
    };
    // A Softmax of decomposed attention, or an Attention node (opset 23+).
    let last_attention = graph
        .node
        .iter()
        .rposition(|node| node.op_type == "Softmax" || node.op_type == "Attention");
    let before_attention = last_attention.and_then(|attention| {
        layers.iter().rfind(|layer| {
            matches!(layer.layout, Some(Layout::Tokens(_)))
                && is_layer_norm(layer)
                && position
                    .get(layer.name.as_str())
                    .is_some_and(|&index| index < attention)
        })
    });
    before_attention
        .map(|layer| layer.name.clone())
        .or_else(|| dense.then(|| dense_default_layer(layers)).flatten())
        .or_else(|| ember_core::default_layer(layers))
}

/// The layer explained by default in a model with a dense output (segmentation, saliency, text
/// detection): the last layer of the coarsest resolution, the end of the encoder (where
/// pytorch-grad-cam's segmentation tutorial explains DeepLabV3, `backbone.layer4`). The last
/// spatial layer would be the output itself, or its upsampling, whose map only repeats the
/// region. Global (1×1) layers do not count; `None` when no layer's size is known.
fn dense_default_layer(layers: &[LayerInfo]) -> Option<String> {
    let area = |layer: &LayerInfo| -> Option<usize> {
        let (height, width) = match (layer.layout?, layer.shape.as_slice()) {
            (Layout::ChannelsFirst, &[_, _, h, w]) | (Layout::ChannelsLast, &[_, h, w, _]) => (h?, w?),
            (Layout::Tokens(grid), _) => (grid.height, grid.width),
            _ => return None,
        };
        Some(height * width).filter(|&area| area > 1)
    };
    let coarsest = layers.iter().filter_map(area).min()?;
    layers
        .iter()
        .rfind(|layer| area(layer) == Some(coarsest))
        .map(|layer| layer.name.clone())
}

/// Finds the activation the graph's output comes from (through Identity and Dropout) and puts a
/// score tap on its input, saying which it is. For class scores (`rank` 2): a Softmax or
/// LogSoftmax over the classes, or a Sigmoid when there is `one_logit`. For dense outputs
/// (`rank` 4, `[N, K, H, W]`): a Sigmoid (per pixel), or a Softmax or LogSoftmax over any axis
/// but the batch's.
fn insert_score_tap(model: &mut ModelProto, rank: usize, one_logit: bool) -> Option<FinalActivation> {
    let graph = model.graph.mut_or_insert_default();
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(index, node)| node.output.iter().map(move |o| (o.as_str(), index)))
        .collect();
    let mut value = graph.output.first()?.name.as_str();
    let (index, activation) = loop {
        let index = *producer.get(value)?;
        let node = &graph.node[index];
        let axis = node.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
        // Over the class axis of a [N, classes] output: 1, -1, or the default; over any axis of
        // a dense output but the batch's (the default, -1, is the width's: still not the batch).
        let over_classes = || match rank {
            2 => axis.is_none_or(|axis| axis == 1 || axis == -1),
            _ => axis.is_none_or(|axis| axis != 0 && axis != -(rank as i64)),
        };
        let one_logit = one_logit || rank == 4;
        match node.op_type.as_str() {
            "Identity" | "Dropout" => value = node.input.first()?.as_str(),
            // A dense output is itself a tapped layer.
            TAP_OP if node.domain == TAP_DOMAIN => value = node.input.first()?.as_str(),
            "Softmax" if over_classes() => break (index, FinalActivation::Softmax),
            "LogSoftmax" if over_classes() => break (index, FinalActivation::LogSoftmax),
            "Sigmoid" if one_logit => break (index, FinalActivation::Sigmoid),
            _ => return None,
        }
    };
    let logits = graph.node[index].input.first()?.clone();
    let scored = format!("{logits}{SCORED_SUFFIX}");
    let mut tap = NodeProto::new();
    tap.name = format!("ember_scores_{logits}");
    tap.op_type = SCORES_OP.into();
    tap.domain = TAP_DOMAIN.into();
    tap.input = vec![logits];
    tap.output = vec![scored.clone()];
    graph.node[index].input[0] = scored;
    graph.node.insert(index, tap);
    ensure_tap_domain(model);
    Some(activation)
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
    let shapes = shape_values(graph);
    let mut outputs = Vec::new();
    for (index, node) in graph.node.iter_mut().enumerate() {
        if node.name.is_empty() {
            node.name = format!("{}_{index}", node.op_type);
        }
        if node.op_type == "Constant" {
            continue;
        }
        for output in node.output.iter().filter(|o| !o.is_empty() && !shapes.contains(*o)) {
            outputs.push(NodeOutput {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                output: output.clone(),
            });
        }
    }
    Ok(outputs)
}

/// Operators that compute shapes from shapes in exported graphs (`x.view(n, -1, c)` becomes
/// Shape → Gather → Unsqueeze → Concat → Reshape).
const SHAPE_ARITHMETIC: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "Ceil",
    "Concat",
    "Div",
    "Equal",
    "Floor",
    "Gather",
    "Identity",
    "Max",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "Range",
    "ReduceProd",
    "Reshape",
    "Slice",
    "Squeeze",
    "Sub",
    "Unsqueeze",
    "Where",
];

/// The values that are shapes, or computed from shapes and constants only, or from constants
/// only: never layers (they do not depend on the image), and left untapped, since onnx-ir
/// follows their values through the graph to infer the ranks of Reshape and Expand outputs (a
/// tap would hide them).
fn shape_values(graph: &onnx_ir::GraphProto) -> HashSet<String> {
    let mut constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut shapes: HashSet<String> = HashSet::new();
    for node in &graph.node {
        let op = node.op_type.as_str();
        let mut variable = node
            .input
            .iter()
            .filter(|i| !i.is_empty() && !constants.contains(i.as_str()))
            .peekable();
        if variable.peek().is_none() {
            // Constant, or computed from constants alone.
            constants.extend(node.output.iter().map(String::as_str));
            continue;
        }
        let computed = if op == "Shape" || op == "Size" {
            true
        } else {
            SHAPE_ARITHMETIC.contains(&op) && variable.all(|i| shapes.contains(i))
        };
        if computed {
            shapes.extend(node.output.iter().cloned());
        }
    }
    shapes.extend(constants.into_iter().map(str::to_owned));
    shapes
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
    ensure_tap_domain(model);
}

/// Declares [`TAP_DOMAIN`] among the model's opsets.
fn ensure_tap_domain(model: &mut ModelProto) {
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
/// be absolute or climb out of it — after symlinks too. Only the bytes a tensor names are read,
/// and no more than the memory budget allows.
pub fn inline_external_data(model: &mut ModelProto, base: &Path) -> Result<(), ImportError> {
    const EXTERNAL: i32 = 1;
    let graph = model.graph.mut_or_insert_default();
    let folder = base.canonicalize().ok();
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
        let inside = match (file.canonicalize(), &folder) {
            (Ok(real), Some(folder)) => real.starts_with(folder),
            // A missing file is reported when it is opened.
            (Err(_), _) => true,
            (Ok(_), None) => false,
        };
        if !inside {
            return Err(bad(format!(
                "location `{location}` resolves (through a symlink) outside the model's folder"
            )));
        }
        let (mut opened, file_length) = ember_core::limits::open_regular_file(&file, "external-data file", u64::MAX)
            .map_err(|e| bad(e.to_string()))?;
        let parse = |key: &str| -> Result<Option<u64>, ImportError> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("`{key}` = `{v}` is not a number")))
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?.unwrap_or(file_length.saturating_sub(offset));
        offset
            .checked_add(length)
            .filter(|&end| end <= file_length)
            .ok_or_else(|| {
                bad(format!(
                    "bytes {offset}..{} lie outside {} ({file_length} bytes)",
                    offset.saturating_add(length),
                    file.display(),
                ))
            })?;
        ember_core::checked_bytes("its data", &[length], 1).map_err(|e| bad(e.to_string()))?;
        let mut data = Vec::with_capacity(length as usize);
        opened
            .seek(SeekFrom::Start(offset))
            .and_then(|_| opened.take(length).read_to_end(&mut data))
            .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
        if data.len() as u64 != length {
            return Err(bad(format!("{} ended early", file.display())));
        }
        tensor.raw_data = data.into();
        tensor.external_data.clear();
        tensor.data_location = Default::default();
    }
    Ok(())
}

/// Type inference of tap and score-tap nodes for onnx-ir: the output has the input's type.
///
/// Register it with `OnnxGraphBuilder::with_custom_op_inference` to parse a tapped graph.
pub struct PassThrough;

impl CustomOpInference for PassThrough {
    fn coverage(&self, op_type: &str, domain: &str, _opset: usize) -> HookCoverage {
        let tap = (op_type == TAP_OP || op_type == SCORES_OP) && domain == TAP_DOMAIN;
        let legalized = domain == legalize::LEGALIZED_DOMAIN && legalize::LEGALIZED_OPS.contains(&op_type);
        if tap || legalized {
            HookCoverage::Covered
        } else {
            HookCoverage::Missing(MissingReason::NoHook)
        }
    }

    fn infer(&self, node: &CustomNode) -> Result<Option<Vec<ArgType>>, ProcessError> {
        if (node.op_type == TAP_OP || node.op_type == SCORES_OP) && node.domain == TAP_DOMAIN {
            Ok(Some(vec![node.inputs[0].ty.clone()]))
        } else if node.domain == legalize::LEGALIZED_DOMAIN && legalize::LEGALIZED_OPS.contains(&node.op_type.as_str())
        {
            // The input's rank and type; the sizes are known only when it runs. Attention's
            // key/value cache and scores (outputs 1 to 3) are rank 4.
            let ty = match node.inputs.first().map(|input| input.ty.clone()) {
                Some(ArgType::Tensor(mut tensor)) => {
                    tensor.static_shape = None;
                    tensor
                }
                Some(other) => return Ok(Some(vec![other])),
                None => return Ok(None),
            };
            let mut types = vec![ArgType::Tensor(ty.clone())];
            if node.op_type == "Attention" {
                let four = onnx_ir::TensorType { rank: 4, ..ty };
                types.extend((1..node.outputs.len()).map(|_| ArgType::Tensor(four.clone())));
            }
            Ok(Some(types))
        } else {
            Ok(None)
        }
    }
}

/// The name and static shape of the first graph input that is not an initializer.
fn graph_input(model: &ModelProto) -> Option<(String, Vec<Option<usize>>)> {
    let graph = model.graph.get_or_default();
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph.input.iter().find(|i| !initializers.contains(i.name.as_str()))?;
    Some((input.name.clone(), dims_of(input)))
}

/// The dimensions a value's declared type gives, `None` where symbolic.
fn dims_of(value: &onnx_ir::ValueInfoProto) -> Vec<Option<usize>> {
    value
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| d.has_dim_value().then(|| usize::try_from(d.dim_value()).ok()).flatten())
        .collect()
}

/// The shape the file declares for value `name` (a graph output or a `value_info` entry), if it
/// declares one with a shape.
fn declared_shape(graph: &onnx_ir::GraphProto, name: &str) -> Option<Vec<Option<usize>>> {
    graph
        .output
        .iter()
        .chain(&graph.value_info)
        .find(|value| value.name == name && value.type_.tensor_type().shape.is_some())
        .map(dims_of)
}

/// The metadata keys class names are stored under by exporters (PaddleClas, Ultralytics, …),
/// compared case-insensitively.
const CLASS_NAME_KEYS: &[&str] = &["labels", "class_names", "classes", "names"];

/// The class names stored in the model's metadata (`metadata_props`), if any: under `labels`,
/// `class_names`, `classes` or `names`, as a JSON list (`["cat", "dog"]`), a JSON or Python
/// dictionary by index (`{0: 'cat', 1: 'dog'}`, as Ultralytics writes), or one name per line
/// (or per comma).
pub fn class_names(model: &ModelProto) -> Option<Vec<String>> {
    CLASS_NAME_KEYS.iter().find_map(|key| {
        let entry = model
            .metadata_props
            .iter()
            .find(|entry| entry.key.eq_ignore_ascii_case(key))?;
        parse_class_names(&entry.value).filter(|names| !names.is_empty())
    })
}

/// See [`class_names`].
fn parse_class_names(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    match text.chars().next()? {
        '[' => Some(quoted_strings(text).into_iter().map(|(_, s)| s).collect()),
        '{' => {
            // `key: 'value'` pairs: the text before each value holds its index.
            let mut entries: Vec<(usize, String)> = Vec::new();
            for (start, value) in quoted_strings(text) {
                let before = &text[..start];
                let key = before
                    .rsplit([',', '{'])
                    .next()?
                    .trim()
                    .trim_end_matches(':')
                    .trim()
                    .trim_matches(['"', '\'']);
                // A quoted key is itself a quoted string: skip it.
                if key.is_empty() {
                    continue;
                }
                entries.push((key.parse().ok()?, value));
            }
            entries.sort_by_key(|(index, _)| *index);
            let contiguous = entries.iter().enumerate().all(|(i, (index, _))| i == *index);
            contiguous.then(|| entries.into_iter().map(|(_, name)| name).collect())
        }
        _ => {
            let separator = if text.contains('\n') { '\n' } else { ',' };
            Some(text.split(separator).map(|s| s.trim().to_owned()).collect())
        }
    }
}

/// The quoted strings of `text` (single or double quotes, backslash escapes), with the byte
/// offset where each starts.
fn quoted_strings(text: &str) -> Vec<(usize, String)> {
    let mut strings = Vec::new();
    let mut chars = text.char_indices();
    while let Some((start, c)) = chars.next() {
        if c != '"' && c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some((_, next)) = chars.next() {
            match next {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                q if q == c => break,
                other => value.push(other),
            }
        }
        strings.push((start, value));
    }
    strings
}

#[cfg(test)]
mod class_name_tests {
    use super::parse_class_names;

    #[test]
    fn class_names_in_the_formats_exporters_write() {
        let names = |text: &str| parse_class_names(text).unwrap();
        assert_eq!(names(r#"["cat", "dog", "crane, bird"]"#), ["cat", "dog", "crane, bird"]);
        assert_eq!(
            names("{0: 'person', 1: 'bicycle', 2: \"it's\"}"),
            ["person", "bicycle", "it's"]
        );
        assert_eq!(names(r#"{"1": "dog", "0": "cat"}"#), ["cat", "dog"]);
        assert_eq!(names("cat\ndog\n"), ["cat", "dog"]);
        assert_eq!(names("cat, dog"), ["cat", "dog"]);
        // Indices with a gap are not a class list.
        assert!(parse_class_names("{0: 'a', 2: 'c'}").is_none());
    }
}
