//! The operators: one table from ONNX operator to compiled step.
//!
//! [`OPERATORS`] is the single list of what the executor runs. A model's nodes are compiled
//! through it once, when the model loads: each node's configuration is read and checked there
//! (so a bad attribute is a load-time error naming the node), and the result is a [`Kernel`]
//! that only computes. [`supported`] (and so `ember ops` and the README's list) is derived from
//! the same table.
//!
//! Semantics follow the ONNX operator specification; where Burn has a module function for an
//! operator (convolution, batch norm, pooling, linear) it is used, so run-time models compute
//! what burn-onnx's generated code computes. One file per family:
//! [`elementwise`] (arithmetic, activations), [`logic`] (comparisons, logic, Where), [`nn`] (convolution, normalisation, pooling,
//! matrix products), [`attention`], [`resize`], [`reduce`] and [`shape`] (reshaping, indexing, constants).

mod attention;
mod elementwise;
mod logic;
mod nn;
mod reduce;
mod resize;
mod scatter;
mod shape;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use onnx_ir::{CustomNode, Node, NodeType};

use crate::value::{Float, MAX_RANK, Value};

/// A node's inputs at run time (`None` for an omitted optional input).
pub type Inputs = Vec<Option<Value>>;

/// What running a node gives: its outputs, or why it failed.
pub type Outputs = Result<Vec<Value>, String>;

/// A node compiled at load time: configuration read and checked, ready to run.
pub type Kernel = Arc<dyn Fn(Inputs, &Device) -> Outputs + Send + Sync>;

/// How a node of one onnx-ir type is compiled.
type Compile = fn(&Node) -> Result<Kernel, String>;

/// One operator the executor implements.
pub struct Operator {
    /// The ONNX operator type, as in the file and the ONNX specification (`Conv`).
    pub name: &'static str,
    /// onnx-ir's node type for it (onnx-ir specialises some: `Conv` → `Conv2d`, a `Gemm` with
    /// a constant weight → `Linear`).
    node_type: NodeType,
    compile: Compile,
}

/// Every operator the executor implements, by family, in the order lists show them.
pub static OPERATORS: &[Operator] = &[
    // Element-wise arithmetic and maths.
    op("Add", NodeType::Add, elementwise::add),
    op("Sub", NodeType::Sub, elementwise::sub),
    op("Mul", NodeType::Mul, elementwise::mul),
    op("Div", NodeType::Div, elementwise::div),
    op("Pow", NodeType::Pow, elementwise::pow),
    op("Mod", NodeType::Mod, elementwise::modulo),
    op("Neg", NodeType::Neg, elementwise::neg),
    op("Abs", NodeType::Abs, elementwise::abs),
    op("Sqrt", NodeType::Sqrt, elementwise::sqrt),
    op("Exp", NodeType::Exp, elementwise::exp),
    op("Log", NodeType::Log, elementwise::log),
    op("Reciprocal", NodeType::Reciprocal, elementwise::reciprocal),
    op("Erf", NodeType::Erf, elementwise::erf),
    op("Max", NodeType::Max, elementwise::max),
    op("Min", NodeType::Min, elementwise::min),
    op("Sum", NodeType::Sum, elementwise::sum),
    op("Mean", NodeType::Mean, elementwise::mean),
    // Activations.
    op("Relu", NodeType::Relu, elementwise::relu),
    op("LeakyRelu", NodeType::LeakyRelu, elementwise::leaky_relu),
    op("PRelu", NodeType::PRelu, elementwise::prelu),
    op("Clip", NodeType::Clip, elementwise::clip),
    op("Sigmoid", NodeType::Sigmoid, elementwise::sigmoid),
    op("HardSigmoid", NodeType::HardSigmoid, elementwise::hard_sigmoid),
    op("HardSwish", NodeType::HardSwish, elementwise::hard_swish),
    op("Swish", NodeType::Swish, elementwise::swish),
    op("Shrink", NodeType::Shrink, elementwise::shrink),
    op("Tanh", NodeType::Tanh, elementwise::tanh),
    op("Gelu", NodeType::Gelu, elementwise::gelu),
    op("Softmax", NodeType::Softmax, elementwise::softmax),
    op("LogSoftmax", NodeType::LogSoftmax, elementwise::log_softmax),
    op("Softplus", NodeType::Softplus, elementwise::softplus),
    op("Softsign", NodeType::Softsign, elementwise::softsign),
    op("Mish", NodeType::Mish, elementwise::mish),
    op("Elu", NodeType::Elu, elementwise::elu),
    op("Selu", NodeType::Selu, elementwise::selu),
    op("Celu", NodeType::Celu, elementwise::celu),
    op(
        "ThresholdedRelu",
        NodeType::ThresholdedRelu,
        elementwise::thresholded_relu,
    ),
    // Rounding and trigonometry.
    op("Floor", NodeType::Floor, elementwise::floor),
    op("Ceil", NodeType::Ceil, elementwise::ceil),
    op("Round", NodeType::Round, elementwise::round),
    op("Sign", NodeType::Sign, elementwise::sign),
    op("Sin", NodeType::Sin, elementwise::sin),
    op("Cos", NodeType::Cos, elementwise::cos),
    op("Tan", NodeType::Tan, elementwise::tan),
    op("Sinh", NodeType::Sinh, elementwise::sinh),
    op("Cosh", NodeType::Cosh, elementwise::cosh),
    op("Asin", NodeType::Asin, elementwise::asin),
    op("Acos", NodeType::Acos, elementwise::acos),
    op("Atan", NodeType::Atan, elementwise::atan),
    op("Asinh", NodeType::Asinh, elementwise::asinh),
    op("Acosh", NodeType::Acosh, elementwise::acosh),
    op("Atanh", NodeType::Atanh, elementwise::atanh),
    // Comparisons, logic, selection.
    op("Equal", NodeType::Equal, logic::equal),
    op("Less", NodeType::Less, logic::less),
    op("LessOrEqual", NodeType::LessOrEqual, logic::less_or_equal),
    op("Greater", NodeType::Greater, logic::greater),
    op("GreaterOrEqual", NodeType::GreaterOrEqual, logic::greater_or_equal),
    op("Not", NodeType::Not, logic::not),
    op("And", NodeType::And, logic::and),
    op("Or", NodeType::Or, logic::or),
    op("Xor", NodeType::Xor, logic::xor),
    op("Where", NodeType::Where, logic::where_),
    op("IsNaN", NodeType::IsNaN, logic::is_nan),
    op("IsInf", NodeType::IsInf, logic::is_inf),
    // Convolution, normalisation, pooling, matrix products.
    op("Conv", NodeType::Conv2d, nn::conv),
    op("Conv", NodeType::Conv1d, nn::conv1d),
    op("ConvTranspose", NodeType::ConvTranspose2d, nn::conv_transpose),
    op("ConvTranspose", NodeType::ConvTranspose1d, nn::conv_transpose1d),
    op("Resize", NodeType::Resize, resize::resize),
    op("BatchNormalization", NodeType::BatchNormalization, nn::batch_norm),
    op("LayerNormalization", NodeType::LayerNormalization, nn::layer_norm),
    op(
        "InstanceNormalization",
        NodeType::InstanceNormalization,
        nn::instance_norm,
    ),
    op("GroupNormalization", NodeType::GroupNormalization, nn::group_norm),
    op("LpNormalization", NodeType::LpNormalization, nn::lp_normalization),
    op(
        "MeanVarianceNormalization",
        NodeType::MeanVarianceNormalization,
        nn::mean_variance_normalization,
    ),
    op("DepthToSpace", NodeType::DepthToSpace, nn::depth_to_space),
    op("SpaceToDepth", NodeType::SpaceToDepth, nn::space_to_depth),
    op("LRN", NodeType::Lrn, nn::lrn),
    op("MaxPool", NodeType::MaxPool2d, nn::max_pool),
    op("MaxPool", NodeType::MaxPool1d, nn::max_pool1d),
    op("AveragePool", NodeType::AveragePool2d, nn::average_pool),
    op("AveragePool", NodeType::AveragePool1d, nn::average_pool1d),
    op(
        "GlobalAveragePool",
        NodeType::GlobalAveragePool,
        nn::global_average_pool,
    ),
    op("GlobalMaxPool", NodeType::GlobalMaxPool, nn::global_max_pool),
    op("Gemm", NodeType::Gemm, nn::gemm),
    op("Gemm", NodeType::Linear, nn::linear),
    op("MatMul", NodeType::MatMul, nn::matmul),
    op("Einsum", NodeType::Einsum, nn::einsum),
    op("Attention", NodeType::Attention, attention::attention),
    // Reductions.
    op("ReduceMean", NodeType::ReduceMean, reduce::mean),
    op("ReduceSum", NodeType::ReduceSum, reduce::sum),
    op("ReduceMax", NodeType::ReduceMax, reduce::max),
    op("ReduceMin", NodeType::ReduceMin, reduce::min),
    op("ReduceProd", NodeType::ReduceProd, reduce::prod),
    op("ReduceL1", NodeType::ReduceL1, reduce::l1),
    op("ReduceL2", NodeType::ReduceL2, reduce::l2),
    op("ReduceSumSquare", NodeType::ReduceSumSquare, reduce::sum_square),
    op("ReduceLogSum", NodeType::ReduceLogSum, reduce::log_sum),
    op("ReduceLogSumExp", NodeType::ReduceLogSumExp, reduce::log_sum_exp),
    op("ArgMax", NodeType::ArgMax, reduce::arg_max),
    op("ArgMin", NodeType::ArgMin, reduce::arg_min),
    op("TopK", NodeType::TopK, reduce::top_k),
    op("CumSum", NodeType::CumSum, reduce::cum_sum),
    op("Hardmax", NodeType::Hardmax, reduce::hardmax),
    // Shapes, indexing, constants.
    op("Flatten", NodeType::Flatten, shape::flatten),
    op("Reshape", NodeType::Reshape, shape::reshape),
    op("Squeeze", NodeType::Squeeze, shape::squeeze),
    op("Unsqueeze", NodeType::Unsqueeze, shape::unsqueeze),
    op("Transpose", NodeType::Transpose, shape::transpose),
    op("Concat", NodeType::Concat, shape::concat),
    op("Split", NodeType::Split, shape::split),
    op("Slice", NodeType::Slice, shape::slice),
    op("Pad", NodeType::Pad, shape::pad),
    op("Shape", NodeType::Shape, shape::shape),
    op("Size", NodeType::Size, shape::size),
    op("Gather", NodeType::Gather, shape::gather),
    op("GatherElements", NodeType::GatherElements, shape::gather_elements),
    op("ScatterND", NodeType::ScatterND, scatter::scatter_nd),
    op("Expand", NodeType::Expand, shape::expand),
    op("Tile", NodeType::Tile, shape::tile),
    op("Range", NodeType::Range, shape::range),
    op("Trilu", NodeType::Trilu, shape::trilu),
    op("Cast", NodeType::Cast, shape::cast),
    op("CastLike", NodeType::CastLike, shape::cast_like),
    op("Constant", NodeType::Constant, shape::constant),
    op("ConstantOfShape", NodeType::ConstantOfShape, shape::constant_of_shape),
    op("Identity", NodeType::Identity, shape::identity),
    op("Dropout", NodeType::Dropout, shape::dropout),
];

/// How a node that `ember_onnx::legalize` took out of onnx-ir's hands is compiled: from the
/// attributes and inputs as the file has them.
type CompileCustom = fn(&CustomNode) -> Result<Kernel, String>;

/// The operators the executor runs as [`ember_onnx::legalize::LEGALIZED_DOMAIN`] nodes (onnx-ir
/// 0.22 refuses some of their attributes, or the operator): ONNX name and compiler. Listed by
/// [`supported`] with [`OPERATORS`].
pub static LEGALIZED: &[(&str, CompileCustom)] = &[
    ("Resize", resize::legalized),
    ("Upsample", resize::legalized),
    ("Attention", attention::legalized),
    ("SpaceToDepth", nn::space_to_depth_legalized),
    ("RMSNormalization", nn::rms_normalization_legalized),
];

const fn op(name: &'static str, node_type: NodeType, compile: Compile) -> Operator {
    Operator {
        name,
        node_type,
        compile,
    }
}

/// The ONNX operators the executor implements, each once, in table order.
pub fn supported() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::with_capacity(OPERATORS.len() + LEGALIZED.len());
    for name in OPERATORS
        .iter()
        .map(|o| o.name)
        .chain(LEGALIZED.iter().map(|(name, _)| *name))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The ONNX name of `node`'s operator, if the executor implements it.
pub fn onnx_name(node: &Node) -> Option<&'static str> {
    let node_type = node.node_type();
    OPERATORS.iter().find(|o| o.node_type == node_type).map(|o| o.name)
}

/// Why a node cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// No operator of the table runs this node type.
    Unsupported,
    /// The operator is known but this node's configuration is not valid or not supported.
    Invalid(String),
}

/// Compiles `node` through [`OPERATORS`].
pub fn compile(node: &Node) -> Result<Kernel, CompileError> {
    let node_type = node.node_type();
    let operator = OPERATORS
        .iter()
        .find(|o| o.node_type == node_type)
        .ok_or(CompileError::Unsupported)?;
    (operator.compile)(node).map_err(CompileError::Invalid)
}

/// Compiles a node of [`ember_onnx::legalize::LEGALIZED_DOMAIN`] through [`LEGALIZED`].
pub fn compile_legalized(node: &CustomNode) -> Result<Kernel, CompileError> {
    let (_, compile) = LEGALIZED
        .iter()
        .find(|(name, _)| *name == node.op_type)
        .ok_or(CompileError::Unsupported)?;
    compile(node).map_err(CompileError::Invalid)
}

/// The configuration of a node of the expected variant (the table guarantees the variant).
macro_rules! node {
    ($node:expr, $variant:ident) => {
        match $node {
            onnx_ir::Node::$variant(n) => n,
            other => {
                return Err(format!(
                    "internal: a {} node was compiled as {}",
                    other.node_type(),
                    stringify!($variant)
                ));
            }
        }
    };
}
pub(crate) use node;

/// Wraps a closure as a kernel.
fn kernel(f: impl Fn(Inputs, &Device) -> Outputs + Send + Sync + 'static) -> Result<Kernel, String> {
    Ok(Arc::new(f))
}

/// The rank onnx-ir inferred for input `index` of `node`, when it knows it: configurations
/// that depend only on it (axes, permutations) are then checked when the model loads.
fn static_rank(node: &Node, index: usize) -> Option<usize> {
    match &node.inputs().get(index)?.ty {
        onnx_ir::ArgType::Tensor(t) => Some(t.rank),
        onnx_ir::ArgType::Shape(_) => Some(1),
        onnx_ir::ArgType::ScalarTensor(_) | onnx_ir::ArgType::ScalarNative(_) => Some(0),
    }
}

/// An axis that must lie inside a rank-`rank` input, checked when the rank is known.
fn check_axis(node: &Node, axis: usize, what: &str) -> Result<(), String> {
    match static_rank(node, 0) {
        Some(rank) if axis >= rank => Err(format!("{what} axis {axis} out of range for a rank-{rank} input")),
        _ => Ok(()),
    }
}

/// Removes input `index`, which must be present.
fn take(inputs: &mut Inputs, index: usize) -> Result<Value, String> {
    inputs
        .get_mut(index)
        .and_then(Option::take)
        .ok_or_else(|| format!("input {index} is missing"))
}

fn float(inputs: &mut Inputs, index: usize, device: &Device) -> Result<Float, String> {
    take(inputs, index)?.into_float(device)
}

fn optional_float(inputs: &mut Inputs, index: usize, device: &Device) -> Result<Option<Float>, String> {
    inputs
        .get_mut(index)
        .and_then(Option::take)
        .map(|v| v.into_float(device))
        .transpose()
}

/// One float output.
fn one(value: Float) -> Outputs {
    Ok(vec![Value::Float(value)])
}

/// Normalises possibly negative axes of a rank-`rank` tensor.
fn normalise_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    axes.iter()
        .map(|&a| {
            let rank_i = i64::try_from(rank).map_err(|_| "rank out of range".to_owned())?;
            let shifted = if a < 0 { a.checked_add(rank_i) } else { Some(a) };
            shifted
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v < rank)
                .ok_or_else(|| format!("axis {a} out of range for rank {rank}"))
        })
        .collect()
}

thread_local! {
    /// The bytes the running graph holds in computed values (set by the executor before each
    /// step).
    static LIVE_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Tells [`within_budget`] how many bytes the running graph already holds.
pub fn set_live_bytes(bytes: u64) {
    LIVE_BYTES.with(|live| live.set(bytes));
}

/// Refuses a float output of `shape` that overflows or does not fit in the memory budget next
/// to what the graph already holds, before Burn allocates it (an allocation failure there
/// aborts the process).
fn within_budget(shape: &[usize]) -> Result<(), String> {
    within_budget_of(shape, 4).map(drop)
}

/// [`within_budget`] for elements of `element_bytes` bytes; the output's size in bytes.
fn within_budget_of(shape: &[usize], element_bytes: u64) -> Result<u64, String> {
    let bytes = ember_core::checked_bytes("the output", shape, element_bytes).map_err(|e| e.to_string())?;
    let live = LIVE_BYTES.with(std::cell::Cell::get);
    let budget = ember_core::memory_budget();
    if live.saturating_add(bytes) > budget {
        let human = ember_core::limits::human_bytes;
        return Err(format!(
            "the output would need {} ({shape:?}) next to the {} the model already holds, above the memory budget of {} (see --max-memory)",
            human(bytes),
            human(live),
            human(budget)
        ));
    }
    Ok(bytes)
}

/// Checks that two padded shapes broadcast (NumPy rules).
fn check_broadcast(a: &[usize], b: &[usize]) -> Result<(), String> {
    let fits = a.iter().zip(b).all(|(&x, &y)| x == y || x == 1 || y == 1);
    if fits {
        Ok(())
    } else {
        Err(format!("shapes {a:?} and {b:?} do not broadcast"))
    }
}

/// An element-wise binary operator on floats with broadcasting.
fn binary_float(
    a: Float,
    b: Float,
    f: impl Fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
) -> Result<Float, String> {
    let rank = a.rank.max(b.rank);
    let (da, db) = (a.tensor.dims(), b.tensor.dims());
    check_broadcast(&da, &db).map_err(|_| format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape()))?;
    let out: Vec<usize> = da.iter().zip(&db).map(|(&x, &y)| x.max(y)).collect();
    within_budget(&out)?;
    Ok(Float {
        tensor: f(a.tensor, b.tensor),
        rank,
    })
}

/// The NumPy broadcast of host shapes (of any rank).
pub(super) fn host_broadcast(shapes: &[&Vec<usize>]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for shape in shapes {
        for (k, &d) in shape.iter().enumerate() {
            let axis = rank - shape.len() + k;
            if d != 1 && out[axis] != 1 && out[axis] != d {
                return Err(format!("integer shapes {shapes:?} do not broadcast"));
            }
            if d != 1 {
                out[axis] = d;
            }
        }
    }
    // Host tensors are shapes and indices: a few numbers.
    if out.iter().product::<usize>() > 1 << 20 {
        return Err(format!("an integer tensor of shape {out:?} is too large for the host"));
    }
    Ok(out)
}

/// For every element of `shape` (row-major), the index of the element of a `from`-shaped
/// tensor broadcast to it.
pub(super) fn broadcast_indices(from: &[usize], shape: &[usize]) -> Vec<usize> {
    let total: usize = shape.iter().product();
    let offset = shape.len() - from.len();
    (0..total)
        .map(|mut flat| {
            let mut index = 0;
            let mut stride = 1;
            for axis in (0..shape.len()).rev() {
                let coordinate = flat % shape[axis];
                flat /= shape[axis];
                if axis >= offset {
                    let d = from[axis - offset];
                    if d != 1 {
                        index += coordinate * stride;
                    }
                    stride *= d;
                }
            }
            index
        })
        .collect()
}
