//! Element-wise operators: arithmetic with NumPy broadcasting, maths, activations, softmax.

use burn::tensor::activation;
use burn::tensor::{Device, Tensor};
use onnx_ir::Node;
use onnx_ir::node::clip::ClipInput;
use onnx_ir::node::gelu::GeluApproximate;

use super::{Inputs, Kernel, binary_float, check_axis, float, kernel, node, one, take};
use crate::value::{Float, Ints, MAX_RANK, Value};

type Unary = fn(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>;
type Binary = fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>;

pub fn add(_: &Node) -> Result<Kernel, String> {
    arithmetic(|a, b| a + b, i64::checked_add)
}

pub fn sub(_: &Node) -> Result<Kernel, String> {
    arithmetic(|a, b| a - b, i64::checked_sub)
}

pub fn mul(_: &Node) -> Result<Kernel, String> {
    arithmetic(|a, b| a * b, i64::checked_mul)
}

pub fn div(_: &Node) -> Result<Kernel, String> {
    arithmetic(|a, b| a / b, i64::checked_div)
}

/// Mod: C's `fmod` (`fmod = 1`: the sign of the dividend), or Python's `%` (`fmod = 0`, the
/// default, integers only in ONNX: the sign of the divisor).
pub fn modulo(node: &Node) -> Result<Kernel, String> {
    if node!(node, Mod).config.fmod {
        arithmetic(|a, b| a.fmod(b), i64::checked_rem)
    } else {
        arithmetic(
            |a, b| a.remainder(b),
            |a, b| {
                let r = a.checked_rem(b)?;
                Some(if r != 0 && (r < 0) != (b < 0) { r + b } else { r })
            },
        )
    }
}

pub fn pow(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let exponent = float(&mut inputs, 1, device)?;
        let base = float(&mut inputs, 0, device)?;
        one(binary_float(base, exponent, |a, b| a.powf(b))?)
    })
}

pub fn neg(_: &Node) -> Result<Kernel, String> {
    unary(|t| -t)
}

pub fn abs(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.abs())
}

pub fn sqrt(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.sqrt())
}

pub fn exp(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.exp())
}

pub fn log(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.log())
}

pub fn reciprocal(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.recip())
}

pub fn erf(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.erf())
}

pub fn max(_: &Node) -> Result<Kernel, String> {
    variadic(|a, b| a.max_pair(b))
}

pub fn min(_: &Node) -> Result<Kernel, String> {
    variadic(|a, b| a.min_pair(b))
}

pub fn sum(_: &Node) -> Result<Kernel, String> {
    variadic(|a, b| a + b)
}

pub fn mean(_: &Node) -> Result<Kernel, String> {
    kernel(|inputs, device| {
        let count = inputs.iter().flatten().count() as f32;
        let total = fold(inputs, device, |a, b| a + b)?;
        one(Float {
            tensor: total.tensor / count,
            rank: total.rank,
        })
    })
}

/// `ember_core::relu`: Burn's ReLU, Guided Backpropagation's during a guided pass.
pub fn relu(_: &Node) -> Result<Kernel, String> {
    unary(ember_core::relu)
}

pub fn leaky_relu(node: &Node) -> Result<Kernel, String> {
    let alpha = node!(node, LeakyRelu).config.alpha;
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        one(x.map(|t| activation::leaky_relu(t, alpha)))
    })
}

/// PRelu(x, slope) = max(x, 0) + slope · min(x, 0), the slope broadcast (per channel).
pub fn prelu(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let slope = float(&mut inputs, 1, device)?;
        let x = float(&mut inputs, 0, device)?;
        let negative = x.clone().map(|t| t.clamp_max(0.0));
        let scaled = binary_float(negative, slope, |a, b| a * b)?;
        one(Float {
            rank: scaled.rank.max(x.rank),
            tensor: x.tensor.clamp_min(0.0) + scaled.tensor,
        })
    })
}

/// Clip to bounds given as attributes (opset < 11) or as inputs: constants, or integers
/// computed on the host.
pub fn clip(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Clip).config.clone();
    kernel(move |mut inputs, device| {
        let bound = |bound: &Option<ClipInput>, inputs: &Inputs| -> Result<Option<f64>, String> {
            match bound {
                None => Ok(None),
                Some(ClipInput::Static(v)) => Ok(Some(*v)),
                Some(ClipInput::Runtime(r)) => match inputs.get(r.input_index) {
                    Some(Some(Value::Ints(i))) if i.values.len() == 1 => Ok(Some(i.values[0] as f64)),
                    Some(None) | None => Ok(None),
                    _ => Err("Clip bounds computed as float tensors at run time are not supported".into()),
                },
            }
        };
        let (min, max) = (bound(&config.min, &inputs)?, bound(&config.max, &inputs)?);
        let x = float(&mut inputs, 0, device)?;
        let (lo, hi) = (min.unwrap_or(f64::NEG_INFINITY), max.unwrap_or(f64::INFINITY));
        one(x.map(|t| ember_core::clamp(t, lo, hi)))
    })
}

pub fn sigmoid(_: &Node) -> Result<Kernel, String> {
    unary(activation::sigmoid)
}

/// HardSigmoid(x) = max(0, min(1, α·x + β)).
pub fn hard_sigmoid(node: &Node) -> Result<Kernel, String> {
    let config = &node!(node, HardSigmoid).config;
    let (alpha, beta) = (config.alpha, config.beta);
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        one(x.map(|t| ember_core::clamp(t * alpha + beta, 0.0, 1.0)))
    })
}

/// HardSwish(x) = x · max(0, min(1, x/6 + 1/2)).
pub fn hard_swish(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.clone() * ember_core::clamp(t / 6.0 + 0.5, 0.0, 1.0))
}

pub fn tanh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.tanh())
}

pub fn gelu(node: &Node) -> Result<Kernel, String> {
    match node!(node, Gelu).config.approximate {
        // Exact GELU with its exact gradient on every backend (Burn's is the tanh
        // approximation's outside flex).
        GeluApproximate::Exact => unary(ember_core::gelu),
        GeluApproximate::Tanh => unary(activation::gelu_approximate),
    }
}

pub fn softmax(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, Softmax).config.axis;
    check_axis(node, axis, "Softmax")?;
    along_axis(axis, activation::softmax)
}

pub fn log_softmax(node: &Node) -> Result<Kernel, String> {
    let axis = node!(node, LogSoftmax).config.axis;
    check_axis(node, axis, "LogSoftmax")?;
    along_axis(axis, activation::log_softmax)
}

impl Float {
    /// The same logical rank, another tensor.
    pub(super) fn map(self, f: impl FnOnce(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>) -> Float {
        Float {
            tensor: f(self.tensor),
            rank: self.rank,
        }
    }
}

fn unary(f: Unary) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| one(float(&mut inputs, 0, device)?.map(f)))
}

/// An operator along one logical axis (softmax).
fn along_axis(axis: usize, f: fn(Tensor<MAX_RANK>, usize) -> Tensor<MAX_RANK>) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let x = float(&mut inputs, 0, device)?;
        if axis >= x.rank {
            return Err(format!("axis {axis} out of range for a rank-{} tensor", x.rank));
        }
        let padded_axis = x.axis(axis);
        one(x.map(|t| f(t, padded_axis)))
    })
}

/// A binary operator with broadcasting; on two integer operands (shape arithmetic) it is
/// computed on the host with overflow and division by zero as errors.
fn arithmetic(f: Binary, int: fn(i64, i64) -> Option<i64>) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let b = take(&mut inputs, 1)?;
        let a = take(&mut inputs, 0)?;
        match (a, b) {
            (Value::Ints(a), Value::Ints(b)) => Ok(vec![Value::Ints(integer_arithmetic(&a, &b, int)?)]),
            (a, b) => one(binary_float(a.into_float(device)?, b.into_float(device)?, f)?),
        }
    })
}

/// `int` on host integers, broadcast as NumPy does.
fn integer_arithmetic(a: &Ints, b: &Ints, int: fn(i64, i64) -> Option<i64>) -> Result<Ints, String> {
    let shape = super::host_broadcast(&[&a.shape, &b.shape])?;
    let (from_a, from_b) = (
        super::broadcast_indices(&a.shape, &shape),
        super::broadcast_indices(&b.shape, &shape),
    );
    let values: Option<Vec<i64>> = from_a
        .iter()
        .zip(&from_b)
        .map(|(&i, &j)| int(a.values[i], b.values[j]))
        .collect();
    let values = values.ok_or("integer overflow or division by zero")?;
    Ok(Ints { values, shape })
}

/// A variadic operator (Max, Min, Sum) over every present input.
fn variadic(f: Binary) -> Result<Kernel, String> {
    kernel(move |inputs, device| one(fold(inputs, device, f)?))
}

fn fold(inputs: Inputs, device: &Device, f: Binary) -> Result<Float, String> {
    let mut acc: Option<Float> = None;
    for value in inputs.into_iter().flatten() {
        let value = value.into_float(device)?;
        acc = Some(match acc {
            None => value,
            Some(a) => binary_float(a, value, f)?,
        });
    }
    acc.ok_or_else(|| "no inputs".to_owned())
}

pub fn floor(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.floor())
}

pub fn ceil(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.ceil())
}

/// Round half to even, as ONNX specifies (and Burn implements).
pub fn round(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.round())
}

pub fn sign(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.sign())
}

pub fn sin(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.sin())
}

pub fn cos(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.cos())
}

pub fn tan(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.tan())
}

pub fn sinh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.sinh())
}

pub fn cosh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.cosh())
}

pub fn asin(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.asin())
}

pub fn acos(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.acos())
}

pub fn atan(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.atan())
}

pub fn asinh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.asinh())
}

pub fn acosh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.acosh())
}

pub fn atanh(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.atanh())
}

/// Swish(x) = x · σ(α·x) (opset 24; SiLU for α = 1).
pub fn swish(node: &Node) -> Result<Kernel, String> {
    let alpha = node!(node, Swish).config.alpha;
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| t.clone() * activation::sigmoid(t * alpha)))
    })
}

/// Shrink(x) = x − bias for x > λ, x + bias for x < −λ, 0 otherwise.
pub fn shrink(node: &Node) -> Result<Kernel, String> {
    let config = &node!(node, Shrink).config;
    let (lambda, bias) = (config.lambda, config.bias);
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| {
            let above = t.clone().greater_elem(lambda);
            let below = t.clone().lower_elem(-lambda);
            let zero = t.zeros_like();
            zero.mask_where(above, t.clone() - bias).mask_where(below, t + bias)
        }))
    })
}

/// Softplus(x) = ln(1 + eˣ).
pub fn softplus(_: &Node) -> Result<Kernel, String> {
    unary(|t| activation::softplus(t, 1.0))
}

/// Softsign(x) = x / (1 + |x|).
pub fn softsign(_: &Node) -> Result<Kernel, String> {
    unary(|t| t.clone() / (t.abs() + 1.0))
}

/// Mish(x) = x · tanh(softplus(x)).
pub fn mish(_: &Node) -> Result<Kernel, String> {
    unary(activation::mish)
}

/// Elu(x) = x for x > 0, α(eˣ − 1) otherwise.
pub fn elu(node: &Node) -> Result<Kernel, String> {
    let alpha = node!(node, Elu).config.alpha;
    kernel(move |mut inputs, device| one(float(&mut inputs, 0, device)?.map(|t| exponential_linear(t, alpha, 1.0))))
}

/// Selu(x) = γ·x for x > 0, γ·α(eˣ − 1) otherwise.
pub fn selu(node: &Node) -> Result<Kernel, String> {
    let config = &node!(node, Selu).config;
    let (alpha, gamma) = (config.alpha, config.gamma);
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| exponential_linear(t, alpha, 1.0) * gamma))
    })
}

/// Celu(x) = max(0, x) + min(0, α(e^(x/α) − 1)).
pub fn celu(node: &Node) -> Result<Kernel, String> {
    let alpha = node!(node, Celu).config.alpha;
    if alpha == 0.0 {
        return Err("Celu with alpha 0".into());
    }
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| exponential_linear(t, alpha, 1.0 / alpha)))
    })
}

/// ThresholdedRelu(x) = x for x > α, 0 otherwise.
pub fn thresholded_relu(node: &Node) -> Result<Kernel, String> {
    let alpha = node!(node, ThresholdedRelu).config.alpha;
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| {
            let below = t.clone().lower_equal_elem(alpha);
            t.mask_fill(below, 0.0)
        }))
    })
}

/// x for x > 0, α(e^(s·x) − 1) otherwise (Elu with s = 1, Celu with s = 1/α).
fn exponential_linear(t: Tensor<MAX_RANK>, alpha: f64, scale: f64) -> Tensor<MAX_RANK> {
    let negative = t.clone().lower_equal_elem(0.0);
    let curve = ((t.clone() * scale).exp() - 1.0) * alpha;
    t.mask_where(negative, curve)
}
