//! Comparisons, logic and selection: Equal, Less, Greater (and their -OrEqual), Not, And, Or,
//! Xor, Where, IsNaN, IsInf.
//!
//! Booleans on the device are floats 0 and 1 (masks multiply, and Burn's boolean tensors cannot
//! be stored next to floats in one value); on the host (shape arithmetic) they are integers 0
//! and 1, like every host tensor.

use burn::tensor::{Bool, Tensor};
use onnx_ir::Node;

use super::{Kernel, binary_float, broadcast_indices, float, host_broadcast, kernel, node, one, take, within_budget};
use crate::value::{Float, Ints, MAX_RANK, Value};

type Compare = fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK, Bool>;

pub fn equal(_: &Node) -> Result<Kernel, String> {
    comparison(|a, b| a.equal(b), |a, b| a == b)
}

pub fn less(_: &Node) -> Result<Kernel, String> {
    comparison(|a, b| a.lower(b), |a, b| a < b)
}

pub fn less_or_equal(_: &Node) -> Result<Kernel, String> {
    comparison(|a, b| a.lower_equal(b), |a, b| a <= b)
}

pub fn greater(_: &Node) -> Result<Kernel, String> {
    comparison(|a, b| a.greater(b), |a, b| a > b)
}

pub fn greater_or_equal(_: &Node) -> Result<Kernel, String> {
    comparison(|a, b| a.greater_equal(b), |a, b| a >= b)
}

pub fn and(_: &Node) -> Result<Kernel, String> {
    logical(|a, b| a * b, |a, b| a && b)
}

pub fn or(_: &Node) -> Result<Kernel, String> {
    logical(|a, b| (a + b).clamp_max(1.0), |a, b| a || b)
}

pub fn xor(_: &Node) -> Result<Kernel, String> {
    logical(|a, b| (a - b).abs(), |a, b| a != b)
}

pub fn not(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| match take(&mut inputs, 0)? {
        Value::Ints(i) => Ok(vec![Value::Ints(Ints {
            values: i.values.iter().map(|&v| i64::from(v == 0)).collect(),
            shape: i.shape,
        })]),
        other => one(other.into_float(device)?.map(|t| mask(t).bool_not().float())),
    })
}

pub fn is_nan(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| one(float(&mut inputs, 0, device)?.map(|t| t.is_nan().float())))
}

/// IsInf: +∞ and/or −∞, as `detect_positive` and `detect_negative` say.
pub fn is_inf(node: &Node) -> Result<Kernel, String> {
    let config = &node!(node, IsInf).config;
    let (positive, negative) = (config.detect_positive, config.detect_negative);
    kernel(move |mut inputs, device| {
        one(float(&mut inputs, 0, device)?.map(|t| {
            let infinite = t.clone().is_inf().float();
            match (positive, negative) {
                (true, true) => infinite,
                (true, false) => infinite * t.greater_elem(0.0).float(),
                (false, true) => infinite * t.lower_elem(0.0).float(),
                (false, false) => infinite.zeros_like(),
            }
        }))
    })
}

/// Where(condition, x, y): x where the condition holds, y elsewhere, all three broadcast; on
/// host integers when all three are.
pub fn where_(_: &Node) -> Result<Kernel, String> {
    kernel(|mut inputs, device| {
        let y = take(&mut inputs, 2)?;
        let x = take(&mut inputs, 1)?;
        let condition = take(&mut inputs, 0)?;
        if let (Value::Ints(c), Value::Ints(x), Value::Ints(y)) = (&condition, &x, &y) {
            return host_where(c, x, y).map(|ints| vec![Value::Ints(ints)]);
        }
        let (c, x, y) = (
            condition.into_float(device)?,
            x.into_float(device)?,
            y.into_float(device)?,
        );
        let rank = c.rank.max(x.rank).max(y.rank);
        let shape = broadcast(&[&c.tensor.dims(), &x.tensor.dims(), &y.tensor.dims()])?;
        within_budget(&shape)?;
        let expand = |t: Tensor<MAX_RANK>| t.expand(shape);
        let chosen = expand(y.tensor).mask_where(mask(expand(c.tensor)), expand(x.tensor));
        one(Float { tensor: chosen, rank })
    })
}

/// Non-zero floats as booleans.
fn mask(t: Tensor<MAX_RANK>) -> Tensor<MAX_RANK, Bool> {
    t.not_equal_elem(0.0)
}

/// The NumPy broadcast of padded shapes.
fn broadcast(shapes: &[&[usize; MAX_RANK]]) -> Result<[usize; MAX_RANK], String> {
    let mut out = [1; MAX_RANK];
    for (axis, size) in out.iter_mut().enumerate() {
        for shape in shapes {
            let d = shape[axis];
            if d != 1 && *size != 1 && d != *size {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
            if d != 1 {
                *size = d;
            }
        }
    }
    Ok(out)
}

fn comparison(device_op: Compare, host_op: fn(i64, i64) -> bool) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let b = take(&mut inputs, 1)?;
        let a = take(&mut inputs, 0)?;
        match (a, b) {
            (Value::Ints(a), Value::Ints(b)) => host_binary(&a, &b, |x, y| i64::from(host_op(x, y))),
            (a, b) => {
                let (a, b) = (a.into_float(device)?, b.into_float(device)?);
                let shape = broadcast(&[&a.tensor.dims(), &b.tensor.dims()])?;
                one(binary_float(a, b, |x, y| {
                    device_op(x.expand(shape), y.expand(shape)).float()
                })?)
            }
        }
    })
}

fn logical(
    device_op: fn(Tensor<MAX_RANK>, Tensor<MAX_RANK>) -> Tensor<MAX_RANK>,
    host_op: fn(bool, bool) -> bool,
) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let b = take(&mut inputs, 1)?;
        let a = take(&mut inputs, 0)?;
        match (a, b) {
            (Value::Ints(a), Value::Ints(b)) => host_binary(&a, &b, |x, y| i64::from(host_op(x != 0, y != 0))),
            (a, b) => {
                let (a, b) = (a.into_float(device)?, b.into_float(device)?);
                let (a, b) = (a.map(|t| mask(t).float()), b.map(|t| mask(t).float()));
                one(binary_float(a, b, device_op)?)
            }
        }
    })
}

/// Host integers element by element, NumPy-broadcast.
fn host_binary(a: &Ints, b: &Ints, f: impl Fn(i64, i64) -> i64) -> Result<Vec<Value>, String> {
    let shape = host_broadcast(&[&a.shape, &b.shape])?;
    let (ia, ib) = (broadcast_indices(&a.shape, &shape), broadcast_indices(&b.shape, &shape));
    let values = ia.iter().zip(&ib).map(|(&i, &j)| f(a.values[i], b.values[j])).collect();
    Ok(vec![Value::Ints(Ints { values, shape })])
}

fn host_where(c: &Ints, x: &Ints, y: &Ints) -> Result<Ints, String> {
    let shape = host_broadcast(&[&c.shape, &x.shape, &y.shape])?;
    let (ic, ix, iy) = (
        broadcast_indices(&c.shape, &shape),
        broadcast_indices(&x.shape, &shape),
        broadcast_indices(&y.shape, &shape),
    );
    let values = (0..ic.len())
        .map(|k| {
            if c.values[ic[k]] != 0 {
                x.values[ix[k]]
            } else {
                y.values[iy[k]]
            }
        })
        .collect();
    Ok(Ints { values, shape })
}
