//! Where the channels of the graph input and of every tapped 4-D layer are: `[N, C, H, W]` or
//! `[N, H, W, C]`, decided from the graph, then from the shapes, never guessed.
//!
//! From the graph: ONNX's spatial operators (Conv, pooling, BatchNormalization, …) produce
//! channels-first values by definition; a Transpose moves the channel axis where its `perm`
//! says; element-wise operators, Concat, Pad, Resize and reductions that keep their dimensions
//! keep it where their 4-D inputs have it. A tf2onnx export (NHWC input, a Transpose before each
//! convolution and one after) is decided value by value this way.
//!
//! From the shapes, where the graph says nothing (after a Reshape, say): a layer's spatial
//! dimensions shrink the input's by one factor on both sides, so `[N, 7, 7, 1024]` under a
//! 224×224 input can only be channels-last and `[N, 1024, 7, 7]` only channels-first. When both
//! or neither fit (`[N, 7, 7, 7]`), the layer stays undecided and explaining it asks for
//! `--layout`.

use std::collections::{HashMap, HashSet};

use ember_core::Layout;
use onnx_ir::{GraphProto, NodeProto};

/// Operators whose 4-D outputs are channels-first by ONNX's definition.
const CHANNELS_FIRST_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "BatchNormalization",
    "InstanceNormalization",
    "LRN",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxUnpool",
    "GridSample",
    "DeformConv",
];

/// Operators whose output keeps the layout of their 4-D inputs.
const LAYOUT_KEEPING_OPS: &[&str] = &[
    "Abs",
    "Add",
    "BitShift",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Cos",
    "Dropout",
    "DequantizeLinear",
    "Div",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "Greater",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "Less",
    "Log",
    "Max",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "PRelu",
    "QuantizeLinear",
    "Reciprocal",
    "Relu",
    "Resize",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Slice",
    "Softplus",
    "Softsign",
    "Split",
    "Sqrt",
    "Sub",
    "Sum",
    "Swish",
    "Tanh",
    "ThresholdedRelu",
    "Upsample",
    "Where",
];

/// Operators over the last axis (a matrix product with weights, layer normalisation): a
/// channels-last input stays channels-last.
const LAST_AXIS_OPS: &[&str] = &[
    "MatMul",
    "LayerNormalization",
    "RMSNormalization",
    "Softmax",
    "LogSoftmax",
    "Gemm",
];

/// Reductions: they keep the layout when they keep their dimensions (`keepdims`, 1 by default).
const REDUCTIONS: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
];

/// Channel counts an image input has (grey, RGB, RGBA).
fn image_channels(dim: Option<usize>) -> bool {
    matches!(dim, Some(1 | 3 | 4))
}

/// The layout of a 4-D image input of static shape `dims`: from where a 1-, 3- or 4-channel
/// axis is, else from what first consumes it (a Transpose to channels-first, or a spatial
/// operator); `None` when neither tells.
pub(crate) fn input_layout(dims: &[Option<usize>], input: &str, graph: &GraphProto) -> Option<Layout> {
    let &[_, second, _, last] = dims else {
        return None;
    };
    match (image_channels(second), image_channels(last)) {
        (true, false) => return Some(Layout::ChannelsFirst),
        (false, true) => return Some(Layout::ChannelsLast),
        _ => {}
    }
    let mut evidence = graph
        .node
        .iter()
        .filter(|node| node.input.iter().any(|i| i == input))
        .filter_map(|node| match node.op_type.as_str() {
            "Transpose" => match permutation(node).as_deref() {
                Some([0, 3, 1, 2]) => Some(Layout::ChannelsLast),
                Some([0, 2, 3, 1]) => Some(Layout::ChannelsFirst),
                _ => None,
            },
            op if CHANNELS_FIRST_OPS.contains(&op) => Some(Layout::ChannelsFirst),
            _ => None,
        });
    let first = evidence.next()?;
    evidence.all(|other| other == first).then_some(first)
}

/// The channel axis (1 or 3) of every 4-D value the graph decides, starting from the input's.
///
/// Forward (what a value is made by) and backward (what consumes it: a convolution's input is
/// channels-first too), repeated until nothing changes; a value once decided keeps its axis.
/// `rank4` holds the names of the graph's 4-D values (from type inference).
pub(crate) fn channel_axes(
    graph: &GraphProto,
    input: &str,
    input_layout: Option<Layout>,
    rank4: &HashSet<String>,
) -> HashMap<String, usize> {
    let mut axes: HashMap<String, usize> = HashMap::new();
    match input_layout {
        Some(Layout::ChannelsFirst) => {
            axes.insert(input.to_owned(), 1);
        }
        Some(Layout::ChannelsLast) => {
            axes.insert(input.to_owned(), 3);
        }
        _ => {}
    }
    // Each round decides at least one more value, or stops.
    for _ in 0..=rank4.len() {
        let before = axes.len();
        for node in &graph.node {
            if let Some(axis) = forward_axis(node, &axes, rank4) {
                for output in node.output.iter().filter(|o| rank4.contains(*o)) {
                    axes.entry(output.clone()).or_insert(axis);
                }
            }
        }
        for node in graph.node.iter().rev() {
            for (input, axis) in backward_axes(node, &axes, rank4) {
                axes.entry(input).or_insert(axis);
            }
        }
        if axes.len() == before {
            break;
        }
    }
    axes
}

/// The channel axis of a node's 4-D outputs, from its operator and its inputs.
fn forward_axis(node: &NodeProto, axes: &HashMap<String, usize>, rank4: &HashSet<String>) -> Option<usize> {
    let op = node.op_type.as_str();
    if CHANNELS_FIRST_OPS.contains(&op) {
        return Some(1);
    }
    let first = node.input.first().and_then(|i| axes.get(i)).copied();
    if op == "Transpose" {
        let (perm, from) = (permutation(node)?, first?);
        return if perm.len() == 4 {
            perm.iter().position(|&p| p == from as i64)
        } else {
            None
        };
    }
    if LAST_AXIS_OPS.contains(&op) {
        // Over the last axis: channels-last values stay channels-last.
        return first.filter(|&axis| axis == 3);
    }
    if LAYOUT_KEEPING_OPS.contains(&op) || (REDUCTIONS.contains(&op) && keeps_dims(node)) {
        // The 4-D inputs the graph decided must agree; constants and lower-rank operands
        // (broadcast scales, masks) do not count.
        let mut decided = node
            .input
            .iter()
            .filter(|i| rank4.contains(*i))
            .filter_map(|i| axes.get(i).copied());
        let first = decided.next()?;
        return decided.all(|other| other == first).then_some(first);
    }
    None
}

/// What a node's operator says about its undecided 4-D inputs, given its outputs' axes.
fn backward_axes(node: &NodeProto, axes: &HashMap<String, usize>, rank4: &HashSet<String>) -> Vec<(String, usize)> {
    let op = node.op_type.as_str();
    let undecided = |name: &String| rank4.contains(name) && !axes.contains_key(name);
    let output = node.output.first().and_then(|o| axes.get(o)).copied();
    match node.input.first() {
        Some(data) if undecided(data) => {
            if [
                "Conv",
                "ConvTranspose",
                "MaxPool",
                "AveragePool",
                "BatchNormalization",
                "GlobalAveragePool",
            ]
            .contains(&op)
            {
                return vec![(data.clone(), 1)];
            }
            if op == "Transpose"
                && let (Some(axis), Some(perm)) = (output, permutation(node))
                && let Some(&from) = perm.get(axis)
                && (from == 1 || from == 3)
            {
                return vec![(data.clone(), from as usize)];
            }
        }
        _ => {}
    }
    if LAYOUT_KEEPING_OPS.contains(&op)
        && let Some(axis) = output
    {
        return node
            .input
            .iter()
            .filter(|i| undecided(i))
            .map(|i| (i.clone(), axis))
            .collect();
    }
    Vec::new()
}

/// The layout of a 4-D layer: the graph's channel axis, else the one that its static shape
/// `dims` allows under an input of `input_hw` (see the module's documentation).
pub(crate) fn layer_layout(
    graph_axis: Option<usize>,
    dims: &[Option<usize>],
    input_hw: Option<[usize; 2]>,
) -> Option<Layout> {
    match graph_axis {
        Some(1) => return Some(Layout::ChannelsFirst),
        Some(3) => return Some(Layout::ChannelsLast),
        _ => {}
    }
    let [height, width] = input_hw?;
    let &[_, Some(a), Some(b), Some(c)] = dims else {
        return None;
    };
    let fits = |h: usize, w: usize| spatial_sides_fit([h, w], [height, width]);
    match (fits(b, c), fits(a, b)) {
        (true, false) => Some(Layout::ChannelsFirst),
        (false, true) => Some(Layout::ChannelsLast),
        _ => None,
    }
}

/// Whether `[h, w]` are the input's `[height, width]` divided by one integer stride (rounded
/// down or up, as strided layers round) or multiplied by one integer factor (upsampling). A
/// transformer's 17 tokens under a 64-pixel input are neither.
fn spatial_sides_fit([h, w]: [usize; 2], [height, width]: [usize; 2]) -> bool {
    if h == 0 || w == 0 {
        return false;
    }
    let divides = |stride: usize, side: usize, of: usize| side == of / stride || side == of.div_ceil(stride);
    let estimate = (height as f64 / h as f64).round().max(1.0) as usize;
    let downscaled = (estimate.saturating_sub(1).max(1)..=estimate + 1)
        .any(|stride| divides(stride, h, height) && divides(stride, w, width));
    let upscaled = h.is_multiple_of(height) && w.is_multiple_of(width) && h / height == w / width;
    downscaled || upscaled
}

fn permutation(node: &NodeProto) -> Option<Vec<i64>> {
    node.attribute.iter().find(|a| a.name == "perm").map(|a| a.ints.clone())
}

fn keeps_dims(node: &NodeProto) -> bool {
    node.attribute
        .iter()
        .find(|a| a.name == "keepdims")
        .is_none_or(|a| a.i != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_decide_only_when_one_layout_fits() {
        let shape = |a, b, c| vec![None, Some(a), Some(b), Some(c)];
        let square = Some([224, 224]);
        assert_eq!(
            layer_layout(None, &shape(7, 7, 1024), square),
            Some(Layout::ChannelsLast)
        );
        assert_eq!(
            layer_layout(None, &shape(1024, 7, 7), square),
            Some(Layout::ChannelsFirst)
        );
        assert_eq!(layer_layout(None, &shape(7, 7, 7), square), None);
        // A rectangular input: 15×20 under 480×640; odd sizes round up (113 under 225).
        assert_eq!(
            layer_layout(None, &shape(15, 20, 64), Some([480, 640])),
            Some(Layout::ChannelsLast)
        );
        assert_eq!(
            layer_layout(None, &shape(64, 113, 113), Some([225, 225])),
            Some(Layout::ChannelsFirst)
        );
        // Attention scores [N, heads, 17, 17] under a 64×64 input are not spatial either way.
        assert_eq!(layer_layout(None, &shape(2, 17, 17), Some([64, 64])), None);
        // The graph's answer wins; without an input size the shape cannot decide.
        assert_eq!(
            layer_layout(Some(1), &shape(7, 7, 1024), square),
            Some(Layout::ChannelsFirst)
        );
        assert_eq!(layer_layout(None, &shape(7, 7, 1024), None), None);
    }

    #[test]
    fn image_inputs_are_decided_by_their_channel_axis() {
        let graph = GraphProto::new();
        let layout = |dims: &[Option<usize>]| input_layout(dims, "x", &graph);
        assert_eq!(
            layout(&[None, Some(3), Some(224), Some(224)]),
            Some(Layout::ChannelsFirst)
        );
        assert_eq!(
            layout(&[None, Some(224), Some(224), Some(3)]),
            Some(Layout::ChannelsLast)
        );
        assert_eq!(layout(&[None, None, None, Some(1)]), Some(Layout::ChannelsLast));
        // Three channels and a 3×3 image, or nothing static: the graph must tell.
        assert_eq!(layout(&[None, Some(3), Some(3), Some(3)]), None);
        assert_eq!(layout(&[None, None, None, None]), None);
    }
}
