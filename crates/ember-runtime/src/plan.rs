//! A graph compiled into steps over value slots, and their execution: what the classifier
//! ([`crate::OnnxModel`]) and plain runs ([`crate::OnnxGraph`]) share.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use ember_onnx::legalize::LEGALIZED_DOMAIN;
use ember_onnx::{PassThrough, SCORES_OP, TAP_ATTRIBUTE, TAP_DOMAIN, TAP_OP};
use onnx_ir::{ModelProto, Node, OnnxGraph, OnnxGraphBuilder};

use crate::error::RuntimeError;
use crate::ops;
use crate::value::{Float, Value};

/// Where a step finds an input.
// Built once per model; the size of `Value` does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    /// Computed by an earlier step (or the graph input).
    Slot(usize),
    /// A weight or constant, uploaded at load time.
    Constant(Value),
    /// An omitted optional input.
    Absent,
}

#[derive(Clone)]
pub(crate) enum Op {
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
pub(crate) struct Step {
    pub op: Op,
    pub inputs: Vec<Operand>,
    pub outputs: Vec<usize>,
    /// Slots whose last reader is this step: freed after it.
    pub release: Vec<usize>,
}

/// The compiled graph: steps in graph order over numbered value slots.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub slots: usize,
    /// The slot of every named value.
    pub slot_of: HashMap<String, usize>,
}

impl Plan {
    /// Compiles onnx-ir's `nodes` through the operator table; the values named `inputs` come
    /// first (slots 0, 1, …). `file` is the model as written, for the node names messages use.
    /// Unknown operators and invalid configurations are errors before anything runs.
    pub fn compile(
        path: &Path,
        file: &ModelProto,
        nodes: Vec<Node>,
        inputs: &[String],
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        // Every node is compiled through the operator table before anything runs: unknown
        // operators and invalid configurations are load-time errors.
        let names = file_names(file, &nodes);
        let mut kernels: Vec<Option<ops::Kernel>> = Vec::with_capacity(nodes.len());
        let mut unsupported: Vec<String> = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let compiled = match node {
                Node::Custom(custom) if custom.domain == LEGALIZED_DOMAIN => ops::compile_legalized(custom),
                Node::Custom(_) => {
                    kernels.push(None);
                    continue;
                }
                _ => ops::compile(node),
            };
            match compiled {
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

        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut slots = 0;
        let mut new_slot = |name: &str, slot_of: &mut HashMap<String, usize>| {
            let slot = slots;
            slots += 1;
            slot_of.insert(name.to_owned(), slot);
            slot
        };
        for input in inputs {
            new_slot(input, &mut slot_of);
        }
        // Values of Constant nodes, for consumers whose arguments onnx-ir did not give the value
        // (it never lifts constants into custom nodes).
        let constants: HashMap<String, _> = nodes
            .iter()
            .filter(|node| matches!(node, Node::Constant(_)))
            .filter_map(|node| {
                let output = node.outputs().first()?;
                let data = node.inputs().iter().chain(node.outputs()).find_map(|arg| arg.value())?;
                Some((output.name.clone(), data))
            })
            .collect();
        let consumed: std::collections::HashSet<String> = nodes
            .iter()
            .flat_map(|node| node.inputs().iter().map(|arg| arg.name.clone()))
            .collect();
        let mut steps = Vec::with_capacity(nodes.len());
        // Run-time errors name nodes as the file does.
        for ((node, kernel), file_name) in nodes.into_iter().zip(kernels).zip(names) {
            if let Node::Constant(_) = &node
                && node.outputs().iter().all(|o| consumed.contains(o.name.as_str()))
            {
                // Consumers read constants through their arguments' values; a constant no node
                // reads (a graph output) is a step.
                continue;
            }
            let mut inputs = Vec::with_capacity(node.inputs().len());
            for arg in node.inputs() {
                let operand = if let Some(&slot) = slot_of.get(&arg.name).filter(|_| !arg.name.is_empty()) {
                    Operand::Slot(slot)
                } else if let Some(data) = arg.value().or_else(|| constants.get(&arg.name).cloned()) {
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
                Node::Custom(custom) if custom.domain != LEGALIZED_DOMAIN => {
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
        Ok(Self { steps, slots, slot_of })
    }

    /// Runs every step on the given input slots; returns every slot (those released after
    /// their last reader are empty).
    pub fn execute(&self, inputs: Vec<(usize, Value)>, device: &Device) -> Result<Vec<Option<Value>>, RuntimeError> {
        let mut values: Vec<Option<Value>> = vec![None; self.slots];
        // The bytes held by computed values: the memory budget bounds what a step may add to
        // them, not only each tensor alone.
        let mut held: Vec<u64> = vec![0; self.slots];
        let mut live: u64 = 0;
        for (slot, value) in inputs {
            held[slot] = value.bytes();
            live += held[slot];
            values[slot] = Some(value);
        }
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
                Op::Kernel { kernel, .. } => run_kernel(kernel, inputs, device),
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
        Ok(values)
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

/// Frees every slot after its last reader, except the slots in `keep` (the outputs).
pub(crate) fn schedule_releases(steps: &mut [Step], keep: &[Option<usize>]) {
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
    // A plain forward pass: no reshapes to the layer's rank and back.
    if !ember_core::recording() {
        return Ok(vec![Value::Float(x)]);
    }
    // Spatial layers are rank 4, token layers rank 3; the tap knows each one's layout.
    let tapped = match x.rank {
        3 => Float::new(ember_core::tap(layer, x.to_rank::<3>()?)),
        _ => Float::new(ember_core::tap(layer, x.to_rank::<4>()?)),
    };
    Ok(vec![Value::Float(tapped)])
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown failure".into())
}

/// The ONNX operator of a node: the table's name where the executor has it (onnx-ir
/// specialises some, `Conv` → `Conv2d`), onnx-ir's node type otherwise.
fn onnx_op(node: &Node) -> String {
    match node {
        Node::Custom(custom) => custom.op_type.clone(),
        _ => ops::onnx_name(node).map_or_else(|| node.node_type().to_string(), str::to_owned),
    }
}

/// `Op (node `name`)`, for messages.
fn described(node: &Node, file_name: &str) -> String {
    format!("{} (node `{file_name}`)", onnx_op(node))
}

/// The name each of onnx-ir's nodes has in the ONNX file (onnx-ir renames nodes, `conv2d3`):
/// the k-th node of an operator in onnx-ir's graph is taken to be the file's k-th node of that
/// operator; onnx-ir's name where the file has none.
fn file_names(file: &ModelProto, nodes: &[Node]) -> Vec<String> {
    let mut by_op: HashMap<&str, std::collections::VecDeque<&str>> = HashMap::new();
    for file_node in &file.graph.get_or_default().node {
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

/// onnx-ir's typed graph of an encoded model (taps included); onnx-ir is given arbitrary files,
/// so a panic in it becomes an error, not a crash.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<OnnxGraph, RuntimeError> {
    catch_unwind(|| {
        OnnxGraphBuilder::new()
            .with_custom_op_inference(Arc::new(PassThrough))
            .parse_bytes(bytes)
    })
    .map_err(|panic| RuntimeError::Parse {
        path: path.to_path_buf(),
        message: panic_message(&panic),
    })?
    .map_err(|e| RuntimeError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
