//! Attention (ONNX opset 23 to 25): scaled dot-product attention with masks, a causal frontier,
//! a key/value cache, grouped query heads, a soft cap and a sliding window.
//!
//! `Y = softmax(softcap(Q·√s (K·√s)ᵀ) + bias) · V`, `s` the scale (default `1/√head_size`),
//! following ONNX's reference implementation step by step (`onnx/reference/ops/op_attention.py`)
//! so that results agree to rounding: the scale's square root on both operands, the soft cap
//! before the mask, a boolean mask as `0 / −∞`, a causal frontier aligned bottom-right (after
//! the cached keys), and rows whose every key is masked giving zeros rather than NaN. onnx-ir
//! also turns the decomposed attention of older exports (`MatMul → Div → Add → Softmax →
//! MatMul`) into this node, so transformers exported at any opset run through it.

use burn::tensor::{DType, Tensor, TensorData};
use onnx_ir::node::attention::AttentionQkMatmulOutputMode;
use onnx_ir::{Argument, CustomNode, Node};

use super::{Kernel, float, kernel, node, optional_float, within_budget};
use crate::value::{Float, Value};

/// What the scores' fourth output (`qk_matmul_output`) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposed {
    /// The scaled product (after the soft cap when there is one, as ONNX's reference).
    Product,
    /// The product with the bias added.
    WithBias,
    /// The probabilities.
    Probabilities,
}

/// An Attention node's configuration.
#[derive(Debug, Clone, Copy)]
struct Settings {
    is_causal: bool,
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    scale: Option<f64>,
    softcap: f64,
    exposed: Exposed,
    /// Keys a query may see before and after its own position (`-1`: no bound; opset 25).
    window: (i64, i64),
    /// Whether the mask holds booleans (the executor may hold them as floats 0 and 1): told
    /// apart from an additive float mask by its declared type.
    boolean_mask: bool,
    outputs: usize,
}

/// An Attention node as onnx-ir types it: the ones its simplification makes of the decomposed
/// attention of older exports.
pub fn attention(node: &Node) -> Result<Kernel, String> {
    let attention = node!(node, Attention);
    let config = &attention.config;
    compile(Settings {
        is_causal: config.is_causal,
        q_heads: config.q_num_heads,
        kv_heads: config.kv_num_heads,
        scale: config.scale,
        softcap: config.softcap,
        exposed: match config.qk_matmul_output_mode {
            AttentionQkMatmulOutputMode::Matmul | AttentionQkMatmulOutputMode::MatmulAfterSoftcap => Exposed::Product,
            AttentionQkMatmulOutputMode::MatmulPlusAttentionMask => Exposed::WithBias,
            AttentionQkMatmulOutputMode::MatmulAfterSoftmax => Exposed::Probabilities,
        },
        window: (-1, -1),
        boolean_mask: boolean_mask(&attention.inputs),
        outputs: attention.outputs.len(),
    })
}

/// An Attention node of the file (`ember_onnx::legalize` hands them all over: onnx-ir 0.22
/// refuses optional outputs left out by name and ignores the opset-25 window), compiled from its
/// attributes as written.
pub fn legalized(node: &CustomNode) -> Result<Kernel, String> {
    let int = |name: &str, default: i64| node.attrs.get_i64(name).unwrap_or(default);
    let heads = |name: &str| -> Result<Option<usize>, String> {
        match node.attrs.get_i64(name) {
            None => Ok(None),
            Some(count) if count > 0 => Ok(usize::try_from(count).ok()),
            Some(count) => Err(format!("{name} {count} must be positive")),
        }
    };
    let exposed = match int("qk_matmul_output_mode", 0) {
        0 | 1 => Exposed::Product,
        2 => Exposed::WithBias,
        3 => Exposed::Probabilities,
        other => return Err(format!("unknown qk_matmul_output_mode {other}")),
    };
    let window = (int("left_window_size", -1), int("right_window_size", -1));
    if window.0 < -1 || window.1 < -1 {
        return Err(format!("window sizes {window:?} must be -1 or at least 0"));
    }
    compile(Settings {
        is_causal: int("is_causal", 0) != 0,
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        scale: node.attrs.get_f32("scale").map(f64::from),
        softcap: node.attrs.get_f32("softcap").map_or(0.0, f64::from),
        exposed,
        window,
        boolean_mask: boolean_mask(&node.inputs),
        // Trailing outputs left out by name are not computed.
        outputs: node
            .outputs
            .iter()
            .rposition(|o| !o.name.is_empty())
            .map_or(1, |last| last + 1),
    })
}

fn boolean_mask(inputs: &[Argument]) -> bool {
    inputs
        .get(3)
        .is_some_and(|input| !input.name.is_empty() && matches!(input.ty.elem_type(), DType::Bool(_)))
}

fn compile(config: Settings) -> Result<Kernel, String> {
    if config.scale.is_some_and(|s| !s.is_finite() || s < 0.0) || !config.softcap.is_finite() {
        return Err(format!(
            "Attention with scale {:?} and softcap {}",
            config.scale, config.softcap
        ));
    }
    kernel(move |mut inputs, device| {
        let q = float(&mut inputs, 0, device)?;
        let k = float(&mut inputs, 1, device)?;
        let v = float(&mut inputs, 2, device)?;
        let mask = inputs.get_mut(3).and_then(Option::take);
        let past_key = optional_float(&mut inputs, 4, device)?;
        let past_value = optional_float(&mut inputs, 5, device)?;
        let lengths = match inputs.get_mut(6).and_then(Option::take) {
            Some(value) => Some(value.into_ints()?),
            None => None,
        };
        if past_key.is_some() != past_value.is_some() {
            return Err("past_key and past_value must be given together".into());
        }
        if lengths.is_some() && past_key.is_some() {
            return Err("nonpad_kv_seqlen cannot be combined with past_key and past_value".into());
        }
        if q.rank != k.rank || q.rank != v.rank || !(q.rank == 3 || q.rank == 4) {
            return Err(format!(
                "Q, K and V must all be rank 3 or all rank 4, got shapes {:?}, {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ));
        }
        let three_d = q.rank == 3;
        let q = heads(q, config.q_heads, "Q")?;
        let k = heads(k, config.kv_heads, "K")?;
        let v = heads(v, config.kv_heads, "V")?;
        let [batch, q_heads, q_length, head_size] = q.dims();
        let [k_batch, kv_heads, _, k_head_size] = k.dims();
        let [v_batch, v_heads, _, _] = v.dims();
        if k_batch != batch || v_batch != batch || v_heads != kv_heads || k_head_size != head_size {
            return Err(format!(
                "Q {:?}, K {:?} and V {:?} do not fit together",
                q.dims(),
                k.dims(),
                v.dims()
            ));
        }
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return Err(format!(
                "{q_heads} query heads are not a multiple of {kv_heads} key/value heads"
            ));
        }

        let scale = config.scale.unwrap_or(1.0 / (head_size as f64).sqrt());
        let root = scale.sqrt() as f32;
        let past_length = past_key.as_ref().map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
        let (k, v) = match (past_key, past_value) {
            (Some(past_key), Some(past_value)) => {
                let (past_key, past_value) = (past_key.to_rank::<4>()?, past_value.to_rank::<4>()?);
                let fits = |past: &Tensor<4>, now: &Tensor<4>| {
                    let (p, n) = (past.dims(), now.dims());
                    p[0] == n[0] && p[1] == n[1] && p[3] == n[3]
                };
                if !fits(&past_key, &k) || !fits(&past_value, &v) {
                    return Err(format!(
                        "the cache {:?} / {:?} does not fit K {:?} / V {:?}",
                        past_key.dims(),
                        past_value.dims(),
                        k.dims(),
                        v.dims()
                    ));
                }
                (Tensor::cat(vec![past_key, k], 2), Tensor::cat(vec![past_value, v], 2))
            }
            _ => (k, v),
        };
        let kv_length = k.dims()[2];
        if v.dims()[2] != kv_length {
            return Err(format!("K {:?} and V {:?} have different lengths", k.dims(), v.dims()));
        }
        let scores_shape = [batch, q_heads, q_length, kv_length];
        if scores_shape.contains(&0) || head_size == 0 || v.dims()[3] == 0 {
            return Err(format!(
                "attention of empty tensors: Q {:?}, K {:?}, V {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            ));
        }
        within_budget(&scores_shape)?;
        if q_heads != kv_heads {
            // The key/value heads repeated for grouped queries.
            within_budget(&[batch, q_heads, kv_length, head_size.max(v.dims()[3])])?;
        }

        let bias = bias(
            mask,
            &config,
            lengths.as_ref().map(|l| l.values.as_slice()),
            past_length,
            scores_shape,
            device,
        )?;
        // Grouped query attention: each key/value head serves consecutive query heads.
        let repeat = |t: Tensor<4>| {
            let [b, h, s, d] = t.dims();
            let groups = q_heads / kv_heads;
            if groups == 1 {
                return t;
            }
            t.unsqueeze_dim::<5>(2)
                .expand([b, h, groups, s, d])
                .reshape([b, h * groups, s, d])
        };
        // Values kept for the optional outputs only: a second owner would stop the backend
        // from updating the scores in place.
        let present = (config.outputs > 1).then(|| (k.clone(), v.clone()));
        let (k, v) = (repeat(k), repeat(v));

        let mut product = (q * root).matmul((k * root).swap_dims(2, 3));
        if config.softcap > 0.0 {
            let cap = config.softcap as f32;
            product = (product / cap).tanh() * cap;
        }
        let exposed_product =
            (config.outputs > 3 && config.exposed != Exposed::Probabilities).then(|| match (&bias, config.exposed) {
                (Some(bias), Exposed::WithBias) => product.clone() + bias.clone(),
                _ => product.clone(),
            });
        let (with_bias, fully_masked) = match bias {
            Some(bias) => {
                let row_max = bias.clone().max_dim(3);
                let fully_masked = row_max.equal_elem(f32::NEG_INFINITY).expand(scores_shape);
                // Fully masked rows are set to 0 before the softmax (which would make NaN of
                // them) and their probabilities to 0 after it.
                let with_bias = (product + bias).mask_fill(fully_masked.clone(), 0.0);
                (with_bias, Some(fully_masked))
            }
            None => (product, None),
        };
        let mut probabilities = burn::tensor::activation::softmax(with_bias, 3);
        if let Some(fully_masked) = fully_masked {
            probabilities = probabilities.mask_fill(fully_masked, 0.0);
        }
        let exposed = match exposed_product {
            Some(product) => Some(product),
            None => (config.outputs > 3).then(|| probabilities.clone()),
        };
        let y = probabilities.matmul(v);
        let y = if three_d {
            let [b, h, s, d] = y.dims();
            Float::new(y.swap_dims(1, 2).reshape([b, s, h * d]))
        } else {
            Float::new(y)
        };
        let mut values = vec![Value::Float(y)];
        if let Some((present_key, present_value)) = present {
            values.push(Value::Float(Float::new(present_key)));
            values.push(Value::Float(Float::new(present_value)));
        }
        if let Some(exposed) = exposed {
            values.push(Value::Float(Float::new(exposed)));
        }
        Ok(values)
    })
}

/// `[B, H, S, D]` from rank-4 input, or from rank-3 `[B, S, H·D]` with `heads` heads.
fn heads(x: Float, heads: Option<usize>, what: &str) -> Result<Tensor<4>, String> {
    if x.rank == 4 {
        return x.to_rank::<4>();
    }
    let [batch, length, hidden] = x.to_rank::<3>()?.dims();
    let heads = heads.ok_or_else(|| format!("{what} is rank 3 but the head count is not given"))?;
    if heads == 0 || hidden % heads != 0 {
        return Err(format!("{what}'s width {hidden} does not split into {heads} heads"));
    }
    Ok(x.to_rank::<3>()?
        .reshape([batch, length, heads, hidden / heads])
        .swap_dims(1, 2))
}

/// The additive bias of the scores, broadcastable to `[B, H, Sq, Skv]`: the mask (booleans as
/// `0 / −∞`, padded with `−∞` up to the keys' length), the causal frontier and the padding of
/// `nonpad_kv_seqlen`; `None` when there is nothing to add.
fn bias(
    mask: Option<Value>,
    config: &Settings,
    lengths: Option<&[i64]>,
    past_length: usize,
    [batch, q_heads, q_length, kv_length]: [usize; 4],
    device: &burn::tensor::Device,
) -> Result<Option<Tensor<4>>, String> {
    let mask = match mask {
        None => None,
        Some(mask) => {
            let mask = mask.into_float(device)?;
            if mask.rank > 4 {
                return Err(format!("an attention mask of shape {:?}", mask.shape()));
            }
            let mut shape = [1; 4];
            shape[4 - mask.rank..].copy_from_slice(&mask.shape());
            let mut mask = mask.tensor.reshape(shape);
            if config.boolean_mask {
                mask = Tensor::zeros(shape, device).mask_fill(mask.equal_elem(0.0), f32::NEG_INFINITY);
            }
            let width = shape[3];
            if width > kv_length {
                return Err(format!("an attention mask of {width} keys for {kv_length} keys"));
            }
            if width < kv_length {
                let mut pad = shape;
                pad[3] = kv_length - width;
                mask = Tensor::cat(vec![mask, Tensor::full(pad, f32::NEG_INFINITY, device)], 3);
            }
            let fits = |axis: usize, size: usize| shape[axis] == 1 || shape[axis] == size;
            if !(fits(0, batch) && fits(1, q_heads) && fits(2, q_length)) {
                return Err(format!(
                    "an attention mask of shape {shape:?} does not broadcast to the scores {:?}",
                    [batch, q_heads, q_length, kv_length]
                ));
            }
            Some(mask)
        }
    };
    if lengths.is_some_and(|lengths| lengths.len() != batch) {
        return Err(format!(
            "nonpad_kv_seqlen has {} lengths for a batch of {batch}",
            lengths.unwrap_or_default().len()
        ));
    }
    let mut terms: Vec<Tensor<4>> = mask.into_iter().collect();
    // Query i's own position among the keys is `i + offset`: after the cached keys, or, with an
    // external cache, at the end of each batch's valid keys.
    let offsets: Vec<i64> = match lengths {
        Some(lengths) => lengths.iter().map(|&l| l - q_length as i64).collect(),
        None => vec![past_length as i64],
    };
    let (left, right) = config.window;
    if config.is_causal || left >= 0 || right >= 0 {
        let allowed = |offset: i64, i: i64, j: i64| {
            let distance = i + offset - j;
            (!config.is_causal || distance >= 0) && (left < 0 || distance <= left) && (right < 0 || -distance <= right)
        };
        let mut frontier = Vec::with_capacity(offsets.len() * q_length * kv_length);
        for &offset in &offsets {
            for i in 0..q_length as i64 {
                frontier
                    .extend((0..kv_length as i64).map(|j| if allowed(offset, i, j) { 0.0 } else { f32::NEG_INFINITY }));
            }
        }
        let shape = [offsets.len(), 1, q_length, kv_length];
        terms.push(Tensor::from_data(TensorData::new(frontier, shape), device));
    }
    if let Some(lengths) = lengths {
        let padding: Vec<f32> = lengths
            .iter()
            .flat_map(|&l| (0..kv_length as i64).map(move |j| if j < l { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        terms.push(Tensor::from_data(
            TensorData::new(padding, [batch, 1, 1, kv_length]),
            device,
        ));
    }
    Ok(terms.into_iter().reduce(|a, b| a + b))
}
