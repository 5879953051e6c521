//! Resize: nearest, linear and cubic interpolation, every coordinate transformation of ONNX
//! Resize-11 to -19 but `tf_crop_and_resize`, one axis at a time (all three are separable).

use burn::tensor::{Int, Tensor, TensorData};
use onnx_ir::Node;
use onnx_ir::node::resize::{
    CoordinateTransformMode, NearestMode, ResizeConfig, ResizeMode, ResizeScales, ResizeSizes,
};

use super::{Kernel, float, kernel, node, one, take, within_budget};
use crate::value::{Float, MAX_RANK, Value, padded};

pub fn resize(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Resize).config.clone();
    if config.coordinate_transformation_mode == CoordinateTransformMode::TfCropAndResize {
        return Err("Resize with coordinate_transformation_mode tf_crop_and_resize is not supported".into());
    }
    if config.antialias != 0 {
        return Err("Resize with antialias is not supported".into());
    }
    kernel(move |mut inputs, device| {
        let sizes = match &config.sizes {
            Some(ResizeSizes::Static(sizes)) => Some(sizes.clone()),
            Some(ResizeSizes::Runtime(r)) => Some(take(&mut inputs, r.input_index)?.into_ints()?.sizes()?),
            None => None,
        };
        let scales = match &config.scales {
            Some(ResizeScales::Static(scales)) => Some(scales.iter().map(|&s| f64::from(s)).collect()),
            Some(ResizeScales::Runtime(r)) => Some(read_floats(take(&mut inputs, r.input_index)?)?),
            None => None,
        };
        let x = float(&mut inputs, 0, device)?;
        let shape = x.shape();
        // onnx-ir keeps only the spatial part of constant scales and sizes (it drops N and C).
        let spatial_only = |len: usize| shape.len() >= 2 && len == shape.len() - 2;
        let sizes = sizes.map(|sizes| {
            if spatial_only(sizes.len()) && matches!(config.sizes, Some(ResizeSizes::Static(_))) {
                shape[..2].iter().copied().chain(sizes).collect()
            } else {
                sizes
            }
        });
        let scales = scales.map(|scales: Vec<f64>| {
            if spatial_only(scales.len()) && matches!(config.scales, Some(ResizeScales::Static(_))) {
                [1.0, 1.0].into_iter().chain(scales).collect()
            } else {
                scales
            }
        });
        // (output length, scale) per axis.
        let plan: Vec<(usize, f64)> = match (sizes.filter(|s| !s.is_empty()), scales.filter(|s| !s.is_empty())) {
            (Some(sizes), _) => {
                if sizes.len() != shape.len() {
                    return Err(format!("{} sizes for a rank-{} input", sizes.len(), shape.len()));
                }
                shape
                    .iter()
                    .zip(&sizes)
                    .map(|(&from, &to)| (to, to as f64 / from.max(1) as f64))
                    .collect()
            }
            (None, Some(scales)) => {
                if scales.len() != shape.len() {
                    return Err(format!("{} scales for a rank-{} input", scales.len(), shape.len()));
                }
                shape
                    .iter()
                    .zip(&scales)
                    .map(|(&from, &scale)| {
                        if !(scale.is_finite() && scale > 0.0) {
                            return Err(format!("Resize scale {scale} is not a positive number"));
                        }
                        let to = (from as f64 * scale).floor();
                        if to > (1u64 << 32) as f64 {
                            return Err(format!("Resize to {to} along an axis"));
                        }
                        Ok((to as usize, scale))
                    })
                    .collect::<Result<_, _>>()?
            }
            (None, None) => return Err("Resize without scales or sizes".into()),
        };
        let out: Vec<usize> = plan.iter().map(|&(to, _)| to).collect();
        if out.contains(&0) {
            return Err(format!("Resize to an empty shape {out:?}"));
        }
        within_budget(&padded(&out)?)?;
        let mut tensor = x.tensor;
        for (axis, (&from, &(to, scale))) in shape.iter().zip(&plan).enumerate() {
            if to == from && scale == 1.0 {
                continue;
            }
            tensor = resize_axis(tensor, MAX_RANK - shape.len() + axis, from, to, scale, &config);
        }
        one(Float { tensor, rank: x.rank })
    })
}

/// A scales input computed on the host or on the device (read back: a few numbers).
fn read_floats(value: Value) -> Result<Vec<f64>, String> {
    match value {
        Value::Ints(i) => Ok(i.values.iter().map(|&v| v as f64).collect()),
        Value::Float(f) => f
            .tensor
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| format!("{e:?}")),
    }
}

/// Where output index `i` samples the input along an axis of `from` → `to` elements.
fn source(i: usize, from: usize, to: usize, scale: f64, mode: &CoordinateTransformMode) -> f64 {
    let i = i as f64;
    match mode {
        CoordinateTransformMode::HalfPixel => (i + 0.5) / scale - 0.5,
        CoordinateTransformMode::PytorchHalfPixel if to > 1 => (i + 0.5) / scale - 0.5,
        CoordinateTransformMode::PytorchHalfPixel => 0.0,
        // ONNX's resized length is `from · scale`, not rounded (with sizes given, `to`).
        CoordinateTransformMode::AlignCorners if to > 1 => i * (from as f64 - 1.0) / (from as f64 * scale - 1.0),
        CoordinateTransformMode::AlignCorners => 0.0,
        CoordinateTransformMode::Asymmetric => i / scale,
        CoordinateTransformMode::TfHalfPixelForNn => (i + 0.5) / scale,
        // Refused when the node is compiled.
        CoordinateTransformMode::TfCropAndResize => 0.0,
    }
}

fn nearest(x: f64, mode: &NearestMode) -> f64 {
    let half = x.fract().abs() == 0.5;
    match mode {
        NearestMode::RoundPreferFloor if half => x.floor(),
        NearestMode::RoundPreferCeil if half => x.ceil(),
        NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => x.round(),
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    }
}

/// Resamples `tensor` along padded axis `axis` from `from` to `to` elements.
fn resize_axis(
    tensor: Tensor<MAX_RANK>,
    axis: usize,
    from: usize,
    to: usize,
    scale: f64,
    config: &ResizeConfig,
) -> Tensor<MAX_RANK> {
    let device = tensor.device();
    let last = from as i64 - 1;
    let clamp = |index: i64| index.clamp(0, last);
    let coordinates: Vec<f64> = (0..to)
        .map(|i| source(i, from, to, scale, &config.coordinate_transformation_mode))
        .collect();
    let gather = |indices: Vec<i64>| {
        let indices = Tensor::<1, Int>::from_data(TensorData::new(indices, [to]), &device);
        tensor.clone().select(axis, indices)
    };
    // Per-output weights, broadcast along every other axis.
    let weights = |values: Vec<f32>| {
        let mut shape = [1; MAX_RANK];
        shape[axis] = to;
        Tensor::<MAX_RANK>::from_data(TensorData::new(values, shape), &device)
    };
    match config.mode {
        ResizeMode::Nearest => gather(
            coordinates
                .iter()
                .map(|&x| clamp(nearest(x, &config.nearest_mode) as i64))
                .collect(),
        ),
        ResizeMode::Linear => {
            let low: Vec<i64> = coordinates.iter().map(|x| x.floor() as i64).collect();
            let fraction: Vec<f32> = coordinates.iter().map(|x| (x - x.floor()) as f32).collect();
            let below = gather(low.iter().map(|&i| clamp(i)).collect());
            let above = gather(low.iter().map(|&i| clamp(i + 1)).collect());
            let w = weights(fraction);
            below.clone() + (above - below) * w
        }
        ResizeMode::Cubic => {
            let a = f64::from(config.cubic_coeff_a);
            let exclude_outside = config.exclude_outside != 0;
            let mut taps: [Vec<f32>; 4] = Default::default();
            for &x in &coordinates {
                let base = x.floor() as i64;
                let r = x - x.floor();
                let mut coefficients = cubic_coefficients(r, a);
                if exclude_outside {
                    for (k, c) in coefficients.iter_mut().enumerate() {
                        let index = base - 1 + k as i64;
                        if index < 0 || index > last {
                            *c = 0.0;
                        }
                    }
                    let total: f64 = coefficients.iter().sum();
                    if total != 0.0 {
                        coefficients.iter_mut().for_each(|c| *c /= total);
                    }
                }
                for (tap, c) in taps.iter_mut().zip(coefficients) {
                    tap.push(c as f32);
                }
            }
            let mut result: Option<Tensor<MAX_RANK>> = None;
            for (k, coefficients) in taps.into_iter().enumerate() {
                let indices = coordinates
                    .iter()
                    .map(|x| clamp(x.floor() as i64 - 1 + k as i64))
                    .collect();
                let term = gather(indices) * weights(coefficients);
                result = Some(match result {
                    None => term,
                    Some(sum) => sum + term,
                });
            }
            result.unwrap_or(tensor)
        }
    }
}

/// The four weights of the cubic convolution kernel (Keys, with coefficient `a`) for taps at
/// −1, 0, 1 and 2 from `floor(x)`, `r` being `x − floor(x)`.
fn cubic_coefficients(r: f64, a: f64) -> [f64; 4] {
    let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    [far(r + 1.0), near(r), near(1.0 - r), far(2.0 - r)]
}
