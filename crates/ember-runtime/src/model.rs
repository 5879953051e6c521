//! The loaded model: a plan of steps over value slots.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use ember_core::{
    CamModel, FinalActivation, LayerInfo, Layout, ScoreSource, SpatialLayout, check_input_chw, describe_dims,
};
use ember_onnx::{PassThrough, SCORES_OP, TAP_ATTRIBUTE, TAP_DOMAIN, TAP_OP, TappedGraph};
use onnx_ir::{ArgType, Argument, Message, Node, OnnxGraphBuilder};

use crate::error::RuntimeError;
use crate::ops;
use crate::value::{Float, Value};

/// Where a step finds an input.
// Built once per model; the size of `Value` does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Operand {
    /// Computed by an earlier step (or the graph input).
    Slot(usize),
    /// A weight or constant, uploaded at load time.
    Constant(Value),
    /// An omitted optional input.
    Absent,
}

#[derive(Clone)]
enum Op {
    /// An inserted tap with the original node name.
    Tap(String),
    /// The score tap on the input of the final activation: identity, its output is the logits.
    Scores,
    /// Any other node, compiled.
    Kernel {
        /// The node's name in the ONNX file.
        node: String,
        /// Its ONNX operator.
        op: String,
        kernel: ops::Kernel,
    },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Tap(layer) => write!(f, "Tap({layer:?})"),
            Op::Scores => write!(f, "Scores"),
            Op::Kernel { node, op, .. } => write!(f, "{op}({node:?})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    inputs: Vec<Operand>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step: freed after it.
    release: Vec<usize>,
}

/// An ONNX image classifier interpreted over Burn tensors, with a tap after every spatial
/// layer. Implements [`CamModel`].
#[derive(Debug, Clone)]
pub struct OnnxModel {
    path: PathBuf,
    steps: Vec<Step>,
    slots: usize,
    input_slot: usize,
    output_slot: usize,
    /// The output of the score tap (the logits), if the graph ends in an activation.
    logits_slot: Option<usize>,
    final_activation: Option<FinalActivation>,
    scores: ScoreSource,
    layers: Vec<LayerInfo>,
    default_layer: String,
    /// The input's static shape as Ember feeds it, `[N, C, H, W]`.
    input_shape: Vec<Option<usize>>,
    /// The input's static shape as the graph declares it.
    graph_input_shape: Vec<Option<usize>>,
    /// The graph input's layout (`None`: undecided; explaining fails until it is given).
    input_layout: Option<Layout>,
    /// Class names from the file's metadata.
    class_names: Option<Vec<String>>,
    device: Device,
}

impl OnnxModel {
    /// Loads the model at `path`, uploading its weights to `device`. Whether the input is
    /// channels-first or channels-last is decided from its shape and the graph (see
    /// [`OnnxModel::input_layout`]); [`CamModel::forward`] always takes `[N, C, H, W]`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, RuntimeError> {
        Self::load_as(path, None, device)
    }

    /// [`OnnxModel::load`] with the input's layout given, for models whose input shape and graph
    /// do not tell (`[N, ?, ?, ?]` inputs).
    pub fn load_as(
        path: impl AsRef<Path>,
        input_layout: Option<SpatialLayout>,
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        let path = path.as_ref();
        let input_layout = input_layout.map(Layout::from);
        // onnx-ir is given arbitrary files: a panic in it must become an error, not a crash.
        let tapped =
            catch_unwind(|| ember_onnx::tap_graph_as(path, input_layout)).map_err(|panic| RuntimeError::Parse {
                path: path.to_path_buf(),
                message: panic_message(&panic),
            })??;
        let bytes = tapped.model.write_to_bytes().map_err(|e| RuntimeError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let graph = catch_unwind(|| {
            OnnxGraphBuilder::new()
                .with_custom_op_inference(Arc::new(PassThrough))
                .parse_bytes(&bytes)
        })
        .map_err(|panic| RuntimeError::Parse {
            path: path.to_path_buf(),
            message: panic_message(&panic),
        })?
        .map_err(|e| RuntimeError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::plan(path, &tapped, graph, device)
    }

    fn plan(
        path: &Path,
        tapped: &TappedGraph,
        graph: onnx_ir::OnnxGraph,
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        let not_classifier = |message: String| RuntimeError::NotAClassifier {
            path: path.to_path_buf(),
            message,
        };
        // Every node is compiled through the operator table before anything runs: unknown
        // operators and invalid configurations are load-time errors.
        let names = file_names(tapped, &graph.nodes);
        let mut kernels: Vec<Option<ops::Kernel>> = Vec::with_capacity(graph.nodes.len());
        let mut unsupported: Vec<String> = Vec::new();
        for (index, node) in graph.nodes.iter().enumerate() {
            if matches!(node, Node::Custom(_)) {
                kernels.push(None);
                continue;
            }
            match ops::compile(node) {
                Ok(kernel) => kernels.push(Some(kernel)),
                Err(ops::CompileError::Unsupported) => {
                    unsupported.push(described(node, &names[index]));
                    kernels.push(None);
                }
                Err(ops::CompileError::Invalid(message)) => {
                    return Err(RuntimeError::InvalidNode {
                        path: path.to_path_buf(),
                        node: described(node, &names[index]),
                        message,
                    });
                }
            }
        }
        if !unsupported.is_empty() {
            unsupported.truncate(5);
            return Err(RuntimeError::UnsupportedOps {
                path: path.to_path_buf(),
                ops: unsupported,
            });
        }

        let runtime_inputs: Vec<&Argument> = graph.inputs.iter().filter(|a| a.value().is_none()).collect();
        let [input] = runtime_inputs.as_slice() else {
            return Err(not_classifier(format!(
                "expected one image input, found {}",
                runtime_inputs.len()
            )));
        };
        let graph_input_shape = match &input.ty {
            ArgType::Tensor(t) if t.rank == 4 && t.dtype.is_float() => {
                t.static_shape.clone().unwrap_or_else(|| vec![None; 4])
            }
            other => {
                return Err(not_classifier(format!(
                    "the input `{}` is {}, not a float [N, C, H, W] image batch",
                    input.name,
                    describe_type(other)
                )));
            }
        };
        if graph_input_shape.contains(&Some(0)) {
            return Err(not_classifier(format!(
                "the input `{}` has an empty dimension: {}",
                input.name,
                describe_dims(&graph_input_shape)
            )));
        }
        let input_layout = tapped.input_layout;
        let input_shape = match (input_layout, graph_input_shape.as_slice()) {
            (Some(Layout::ChannelsLast), &[n, h, w, c]) => vec![n, c, h, w],
            _ => graph_input_shape.clone(),
        };
        let Some(output) = graph.outputs.first() else {
            return Err(not_classifier("the graph has no output".into()));
        };
        match &output.ty {
            ArgType::Tensor(t) if t.rank == 2 && t.dtype.is_float() => {
                if t.static_shape.as_ref().and_then(|s| s.get(1).copied().flatten()) == Some(0) {
                    return Err(not_classifier("the output has 0 classes".into()));
                }
            }
            other => {
                // onnx-ir renames values; the file's own name is the one a user knows.
                let graph = tapped.model.graph.get_or_default();
                let name = graph.output.first().map_or(output.name.as_str(), |o| {
                    o.name.strip_suffix(ember_onnx::TAPPED_SUFFIX).unwrap_or(&o.name)
                });
                return Err(not_classifier(format!(
                    "the output `{name}` is {}, not [N, classes] class scores",
                    describe_type(other)
                )));
            }
        }

        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut slots = 0;
        let mut new_slot = |name: &str, slot_of: &mut HashMap<String, usize>| {
            let slot = slots;
            slots += 1;
            slot_of.insert(name.to_owned(), slot);
            slot
        };
        let input_slot = new_slot(&input.name, &mut slot_of);
        let mut steps = Vec::with_capacity(graph.nodes.len());
        // Run-time errors name nodes as the file does.
        for ((node, kernel), file_name) in graph.nodes.into_iter().zip(kernels).zip(names) {
            if let Node::Constant(_) = node {
                // Consumers read constants through their arguments' values.
                continue;
            }
            let mut inputs = Vec::with_capacity(node.inputs().len());
            for arg in node.inputs() {
                let operand = if let Some(&slot) = slot_of.get(&arg.name).filter(|_| !arg.name.is_empty()) {
                    Operand::Slot(slot)
                } else if let Some(data) = arg.value() {
                    Operand::Constant(Value::from_data(data, device).map_err(|message| RuntimeError::Node {
                        node: node.name().to_owned(),
                        op: node.node_type().to_string(),
                        message,
                    })?)
                } else if arg.is_optional() || arg.name.is_empty() {
                    Operand::Absent
                } else {
                    return Err(RuntimeError::Parse {
                        path: path.to_path_buf(),
                        message: format!(
                            "input `{}` of node `{}` is neither computed nor constant",
                            arg.name,
                            node.name()
                        ),
                    });
                };
                inputs.push(operand);
            }
            let outputs: Vec<usize> = node
                .outputs()
                .iter()
                .map(|arg| new_slot(&arg.name, &mut slot_of))
                .collect();
            let op = match &node {
                Node::Custom(custom) if custom.op_type == TAP_OP && custom.domain == TAP_DOMAIN => {
                    let layer = custom
                        .attrs
                        .get_string(TAP_ATTRIBUTE)
                        .ok_or_else(|| RuntimeError::Parse {
                            path: path.to_path_buf(),
                            message: format!("tap node `{}` has no layer name", custom.name),
                        })?;
                    Op::Tap(layer.to_owned())
                }
                Node::Custom(custom) if custom.op_type == SCORES_OP && custom.domain == TAP_DOMAIN => Op::Scores,
                Node::Custom(custom) => {
                    return Err(RuntimeError::UnsupportedOps {
                        path: path.to_path_buf(),
                        ops: vec![format!(
                            "{}::{} (node `{}`)",
                            custom.domain, custom.op_type, custom.name
                        )],
                    });
                }
                _ => Op::Kernel {
                    node: file_name,
                    op: onnx_op(&node),
                    kernel: kernel.ok_or_else(|| RuntimeError::Parse {
                        path: path.to_path_buf(),
                        message: format!("node `{}` was not compiled", node.name()),
                    })?,
                },
            };
            steps.push(Step {
                op,
                inputs,
                outputs,
                release: Vec::new(),
            });
        }
        let output_slot = *slot_of
            .get(&output.name)
            .ok_or_else(|| not_classifier(format!("the output `{}` is not computed by any node", output.name)))?;

        // ember-onnx put the score tap on the final activation's input: its output is the logits.
        let logits_slot = steps
            .iter()
            .find(|step| matches!(step.op, Op::Scores))
            .and_then(|step| step.outputs.first().copied());
        let final_activation = tapped.final_activation.filter(|_| logits_slot.is_some());
        schedule_releases(&mut steps, &[Some(output_slot), logits_slot]);

        let layers = tapped.layers.clone();
        Ok(Self {
            path: path.to_path_buf(),
            steps,
            slots,
            input_slot,
            output_slot,
            logits_slot,
            final_activation,
            scores: ScoreSource::default(),
            layers,
            default_layer: ember_core::default_layer(&tapped.layers).unwrap_or_default(),
            input_shape,
            graph_input_shape,
            input_layout,
            class_names: ember_onnx::class_names(&tapped.model),
            device: device.clone(),
        })
    }

    /// Chooses which output the class scores come from ([`ScoreSource::Logits`] by default).
    pub fn with_scores(mut self, scores: ScoreSource) -> Self {
        self.scores = scores;
        self
    }

    /// The Softmax, LogSoftmax or one-logit Sigmoid the graph ends in, if any: by default the
    /// scores are its input (see [`ScoreSource`]).
    pub fn final_activation(&self) -> Option<FinalActivation> {
        self.final_activation
    }

    /// Which output the class scores come from.
    pub fn score_source(&self) -> ScoreSource {
        self.scores
    }

    /// The class names stored in the file's metadata (see [`ember_onnx::class_names`]), if any.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The input's static shape as Ember feeds it, `[N, C, H, W]` whatever the graph's layout
    /// (`None` where dynamic).
    pub fn input_shape(&self) -> &[Option<usize>] {
        &self.input_shape
    }

    /// The input's static shape as the graph declares it (`[N, H, W, C]` for a channels-last
    /// graph).
    pub fn graph_input_shape(&self) -> &[Option<usize>] {
        &self.graph_input_shape
    }

    /// The graph input's layout: [`Layout::ChannelsFirst`] or [`Layout::ChannelsLast`]; `None`
    /// when neither its shape nor the graph tells (then explaining fails until it is given to
    /// [`OnnxModel::load_as`]).
    pub fn input_layout(&self) -> Option<Layout> {
        self.input_layout
    }

    /// A tensor in the graph's input layout as Ember feeds it, `[N, C, H, W]` (for tensors users
    /// bring, `--input-npy`).
    pub fn to_nchw(&self, graph_input: Tensor<4>) -> Tensor<4> {
        match self.input_layout {
            Some(Layout::ChannelsLast) => graph_input.permute([0, 3, 1, 2]),
            _ => graph_input,
        }
    }

    fn undecided_input(&self) -> RuntimeError {
        RuntimeError::InputLayoutUndecided {
            path: self.path.clone(),
            shape: describe_dims(&self.graph_input_shape),
        }
    }

    /// The batch size the graph was exported with, if it is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input_shape.first().copied().flatten()
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the graph on `input` (`[N, C, H, W]`, handed to the graph in its own layout): the
    /// class scores (see [`ScoreSource`]) and the graph's own output.
    pub fn run(&self, input: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>), RuntimeError> {
        let input = match self.input_layout {
            Some(Layout::ChannelsFirst) => input,
            Some(Layout::ChannelsLast) => input.permute([0, 2, 3, 1]),
            _ => return Err(self.undecided_input()),
        };
        let device = input.device();
        let mut values: Vec<Option<Value>> = vec![None; self.slots];
        // The bytes held by computed values: the memory budget bounds what a step may add to
        // them, not only each tensor alone.
        let mut held: Vec<u64> = vec![0; self.slots];
        let input = Value::Float(Float::new(input));
        held[self.input_slot] = input.bytes();
        let mut live: u64 = held[self.input_slot];
        values[self.input_slot] = Some(input);
        for step in &self.steps {
            ops::set_live_bytes(live);
            // A slot read for the last time is moved, not cloned: a tensor with one owner can
            // be updated in place by the backend.
            let inputs: Vec<Option<Value>> = step
                .inputs
                .iter()
                .enumerate()
                .map(|(i, operand)| match operand {
                    Operand::Slot(slot) => {
                        let read_again = step.inputs[i + 1..]
                            .iter()
                            .any(|later| matches!(later, Operand::Slot(s) if s == slot));
                        if step.release.contains(slot) && !read_again {
                            values[*slot].take()
                        } else {
                            values[*slot].clone()
                        }
                    }
                    Operand::Constant(value) => Some(value.clone()),
                    Operand::Absent => None,
                })
                .collect();
            let outputs = match &step.op {
                Op::Tap(layer) => tap(layer, inputs),
                Op::Scores => inputs
                    .into_iter()
                    .next()
                    .flatten()
                    .map(|value| vec![value])
                    .ok_or_else(|| "the score tap has no input".to_owned()),
                Op::Kernel { kernel, .. } => run_kernel(kernel, inputs, &device),
            }
            .map_err(|message| self.node_error(step, message))?;
            if outputs.len() < step.outputs.len() {
                return Err(self.node_error(step, "produced fewer outputs than the graph uses".into()));
            }
            for (slot, value) in step.outputs.iter().zip(outputs) {
                live = live - held[*slot] + value.bytes();
                held[*slot] = value.bytes();
                values[*slot] = Some(value);
            }
            for &slot in &step.release {
                live -= std::mem::take(&mut held[slot]);
                values[slot] = None;
            }
        }
        ops::set_live_bytes(0);
        let read = |slot: usize| -> Result<Tensor<2>, RuntimeError> {
            let value = values[slot].clone().ok_or_else(|| RuntimeError::Node {
                node: "output".into(),
                op: "-".into(),
                message: "the output was not computed".into(),
            })?;
            value
                .into_float(&device)
                .and_then(|f| f.to_rank::<2>())
                .map_err(|message| RuntimeError::Node {
                    node: "output".into(),
                    op: "-".into(),
                    message,
                })
        };
        let output = read(self.output_slot)?;
        let scores = match (self.scores, self.logits_slot) {
            (ScoreSource::Logits, Some(slot)) => read(slot)?,
            _ => output.clone(),
        };
        Ok((scores, output))
    }

    fn node_error(&self, step: &Step, message: String) -> RuntimeError {
        let (node, op) = match &step.op {
            Op::Tap(layer) => (layer.clone(), "tap".to_owned()),
            Op::Scores => ("scores".to_owned(), "score tap".to_owned()),
            Op::Kernel { node, op, .. } => (node.clone(), op.clone()),
        };
        RuntimeError::Node { node, op, message }
    }
}

/// `a rank-4 F32 tensor [N, 32, 4, 4]`, for messages.
fn describe_type(ty: &ArgType) -> String {
    match ty {
        ArgType::Tensor(t) => {
            let shape = t
                .static_shape
                .as_deref()
                .map_or_else(String::new, |dims| format!(" {}", describe_dims(dims)));
            format!("a rank-{} {:?} tensor{shape}", t.rank, t.dtype)
        }
        ArgType::Shape(rank) => format!("a shape of rank {rank}"),
        ArgType::ScalarTensor(dtype) | ArgType::ScalarNative(dtype) => format!("a {dtype:?} scalar"),
    }
}

/// Frees every slot after its last reader, except the slots in `keep` (the outputs).
fn schedule_releases(steps: &mut [Step], keep: &[Option<usize>]) {
    let mut last_reader: HashMap<usize, usize> = HashMap::new();
    for (index, step) in steps.iter().enumerate() {
        for operand in &step.inputs {
            if let Operand::Slot(slot) = operand {
                last_reader.insert(*slot, index);
            }
        }
    }
    for (slot, index) in last_reader {
        if !keep.contains(&Some(slot)) {
            steps[index].release.push(slot);
        }
    }
}

fn run_kernel(kernel: &ops::Kernel, inputs: ops::Inputs, device: &Device) -> Result<Vec<Value>, String> {
    // Every shape the operators depend on is checked before Burn sees it; a panic left in a
    // backend still must not take the caller down.
    catch_unwind(AssertUnwindSafe(|| kernel(inputs, device))).unwrap_or_else(|panic| Err(panic_message(&panic)))
}

fn tap(layer: &str, mut inputs: ops::Inputs) -> Result<Vec<Value>, String> {
    let Some(Some(Value::Float(x))) = inputs.pop() else {
        return Err("a tap needs a float input".into());
    };
    let tapped = ember_core::tap(layer, x.to_rank::<4>()?);
    Ok(vec![Value::Float(Float::new(tapped))])
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown failure".into())
}

/// The ONNX operator of a node: the table's name where the executor has it (onnx-ir
/// specialises some, `Conv` → `Conv2d`), onnx-ir's node type otherwise.
fn onnx_op(node: &Node) -> String {
    ops::onnx_name(node).map_or_else(|| node.node_type().to_string(), str::to_owned)
}

/// `Op (node `name`)`, for messages.
fn described(node: &Node, file_name: &str) -> String {
    format!("{} (node `{file_name}`)", onnx_op(node))
}

/// The name each of onnx-ir's nodes has in the ONNX file (onnx-ir renames nodes, `conv2d3`):
/// the k-th node of an operator in onnx-ir's graph is taken to be the file's k-th node of that
/// operator; onnx-ir's name where the file has none.
fn file_names(tapped: &TappedGraph, nodes: &[Node]) -> Vec<String> {
    let mut by_op: HashMap<&str, std::collections::VecDeque<&str>> = HashMap::new();
    for file_node in &tapped.model.graph.get_or_default().node {
        by_op
            .entry(file_node.op_type.as_str())
            .or_default()
            .push_back(file_node.name.as_str());
    }
    nodes
        .iter()
        .map(|node| {
            let op = onnx_op(node);
            let original = by_op.get_mut(op.as_str()).and_then(|names| names.pop_front());
            match original {
                Some(name) if !name.is_empty() => name.to_owned(),
                _ => node.name().to_owned(),
            }
        })
        .collect()
}

impl CamModel for OnnxModel {
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> ember_core::Result<Tensor<2>> {
        Ok(self.run(input)?.0)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.layers.clone()
    }

    fn default_layer(&self) -> Option<String> {
        Some(self.default_layer.clone())
    }

    fn check_input(&self, input: &Tensor<4>) -> ember_core::Result<()> {
        if self.input_layout.is_none() {
            return Err(self.undecided_input().into());
        }
        check_input_chw(input, self.input_shape.get(1..).unwrap_or_default()).map_err(|error| {
            // Shapes as the user knows them: the graph's layout.
            match (error, self.input_layout) {
                (ember_core::CamError::InputShape { got, .. }, Some(Layout::ChannelsLast)) => {
                    ember_core::CamError::InputShape {
                        expected: format!("{} (channels last)", describe_dims(&self.graph_input_shape)),
                        got: vec![got[0], got[2], got[3], got[1]],
                    }
                }
                (error, _) => error,
            }
        })?;
        // Exports without a dynamic batch axis bake the batch size into reshapes.
        match self.fixed_batch() {
            Some(fixed) if fixed != input.dims()[0] => Err(ember_core::CamError::InputShape {
                expected: format!(
                    "{} (this export fixes the batch size at {fixed}; export with a dynamic batch axis for others)",
                    describe_dims(&self.graph_input_shape)
                ),
                got: input.dims().to_vec(),
            }),
            _ => Ok(()),
        }
    }
}
