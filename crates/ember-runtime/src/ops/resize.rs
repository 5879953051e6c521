//! Resize (and the deprecated Upsample): nearest, linear and cubic interpolation, with or without
//! antialiasing, every coordinate transformation of ONNX Resize-10 to -19 (`tf_crop_and_resize`
//! with its `roi` and extrapolation value included), `exclude_outside`, `axes` and
//! `keep_aspect_ratio_policy`; one axis at a time (all of them are separable), as ONNX's
//! reference implementation (`onnx/reference/ops/op_resize.py`).
//!
//! Nodes reach it two ways: as onnx-ir's `Resize` ([`resize`], from its configuration) or, for
//! what onnx-ir 0.22 refuses, as a node of `ember_onnx::legalize`'s domain ([`legalized`], from the
//! attributes as written).

use burn::tensor::{Int, Tensor, TensorData};
use onnx_ir::node::resize::{CoordinateTransformMode, NearestMode, ResizeMode, ResizeScales, ResizeSizes};
use onnx_ir::{CustomNode, Node};

use super::{Inputs, Kernel, float, kernel, node, one, within_budget};
use crate::value::{Float, MAX_RANK, Value, padded};

/// Where output index `i` samples the input (ONNX's `coordinate_transformation_mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coordinates {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

/// How a nearest neighbour is chosen (`nearest_mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rounding {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Interpolation {
    Nearest(Rounding),
    Linear,
    Cubic { a: f64 },
}

/// `keep_aspect_ratio_policy`, for sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AspectRatio {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// A constant list, or the input it is read from when the node runs.
#[derive(Debug, Clone)]
enum Numbers {
    Absent,
    Static(Vec<f64>),
    Input(usize),
}

/// Everything a Resize node says.
#[derive(Debug, Clone)]
struct ResizeSpec {
    interpolation: Interpolation,
    coordinates: Coordinates,
    exclude_outside: bool,
    antialias: bool,
    extrapolation: f32,
    aspect_ratio: AspectRatio,
    /// The axes `scales`, `sizes` and `roi` are given for (all, when `None`).
    axes: Option<Vec<i64>>,
    roi: Numbers,
    scales: Numbers,
    sizes: Numbers,
    /// onnx-ir keeps only the spatial part of constant scales and sizes (it drops N and C).
    spatial_constants: bool,
}

/// onnx-ir's `Resize`.
pub fn resize(node: &Node) -> Result<Kernel, String> {
    let config = node!(node, Resize).config.clone();
    let interpolation = match config.mode {
        ResizeMode::Nearest => Interpolation::Nearest(match config.nearest_mode {
            NearestMode::RoundPreferFloor => Rounding::PreferFloor,
            NearestMode::RoundPreferCeil => Rounding::PreferCeil,
            NearestMode::Floor => Rounding::Floor,
            NearestMode::Ceil => Rounding::Ceil,
        }),
        ResizeMode::Linear => Interpolation::Linear,
        ResizeMode::Cubic => Interpolation::Cubic {
            a: f64::from(config.cubic_coeff_a),
        },
    };
    let coordinates = match config.coordinate_transformation_mode {
        CoordinateTransformMode::HalfPixel => Coordinates::HalfPixel,
        CoordinateTransformMode::PytorchHalfPixel => Coordinates::PytorchHalfPixel,
        CoordinateTransformMode::AlignCorners => Coordinates::AlignCorners,
        CoordinateTransformMode::Asymmetric => Coordinates::Asymmetric,
        CoordinateTransformMode::TfHalfPixelForNn => Coordinates::TfHalfPixelForNn,
        CoordinateTransformMode::TfCropAndResize => Coordinates::TfCropAndResize,
    };
    let scales = match &config.scales {
        Some(ResizeScales::Static(scales)) => Numbers::Static(scales.iter().map(|&s| f64::from(s)).collect()),
        Some(ResizeScales::Runtime(r)) => Numbers::Input(r.input_index),
        None => Numbers::Absent,
    };
    let sizes = match &config.sizes {
        Some(ResizeSizes::Static(sizes)) => Numbers::Static(sizes.iter().map(|&s| s as f64).collect()),
        Some(ResizeSizes::Runtime(r)) => Numbers::Input(r.input_index),
        None => Numbers::Absent,
    };
    compiled(ResizeSpec {
        interpolation,
        coordinates,
        exclude_outside: config.exclude_outside != 0,
        antialias: config.antialias != 0,
        extrapolation: config.extrapolation_value,
        aspect_ratio: AspectRatio::Stretch,
        axes: None,
        // onnx-ir refuses a non-empty roi: tf_crop_and_resize then crops nothing.
        roi: Numbers::Absent,
        scales,
        sizes,
        spatial_constants: true,
    })
}

/// A `Resize` or `Upsample` (rewritten to Resize's inputs and attributes) that
/// `ember_onnx::legalize` kept from onnx-ir.
pub fn legalized(node: &CustomNode) -> Result<Kernel, String> {
    let text = |name: &str, default: &str| node.attrs.get_string(name).unwrap_or(default).to_owned();
    let int = |name: &str| node.attrs.get_i64(name).unwrap_or(0);
    let interpolation = match text("mode", "nearest").as_str() {
        "nearest" => Interpolation::Nearest(match text("nearest_mode", "round_prefer_floor").as_str() {
            "round_prefer_floor" => Rounding::PreferFloor,
            "round_prefer_ceil" => Rounding::PreferCeil,
            "floor" => Rounding::Floor,
            "ceil" => Rounding::Ceil,
            other => return Err(format!("unknown nearest_mode `{other}`")),
        }),
        "linear" | "bilinear" | "trilinear" => Interpolation::Linear,
        "cubic" | "bicubic" => Interpolation::Cubic {
            a: f64::from(node.attrs.get_f32("cubic_coeff_a").unwrap_or(-0.75)),
        },
        other => return Err(format!("unknown mode `{other}`")),
    };
    let coordinates = match text("coordinate_transformation_mode", "half_pixel").as_str() {
        "half_pixel" => Coordinates::HalfPixel,
        "half_pixel_symmetric" => Coordinates::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
        "align_corners" => Coordinates::AlignCorners,
        "asymmetric" => Coordinates::Asymmetric,
        "tf_half_pixel_for_nn" => Coordinates::TfHalfPixelForNn,
        "tf_crop_and_resize" => Coordinates::TfCropAndResize,
        other => return Err(format!("unknown coordinate_transformation_mode `{other}`")),
    };
    let aspect_ratio = match text("keep_aspect_ratio_policy", "stretch").as_str() {
        "stretch" => AspectRatio::Stretch,
        "not_larger" => AspectRatio::NotLarger,
        "not_smaller" => AspectRatio::NotSmaller,
        other => return Err(format!("unknown keep_aspect_ratio_policy `{other}`")),
    };
    if int("antialias") != 0 && matches!(interpolation, Interpolation::Nearest(_)) {
        return Err("antialias with mode nearest".into());
    }
    // Opset 10 (and Upsample-9): [X, scales]; 11+: [X, roi, scales, sizes]; Upsample-7: the
    // scales as an attribute.
    let input = |index: usize| -> Numbers {
        match node.inputs.get(index) {
            Some(arg) if !arg.name.is_empty() => match arg.value() {
                Some(data) => data
                    .convert::<f64>()
                    .try_into_vec::<f64>()
                    .map_or(Numbers::Input(index), Numbers::Static),
                None => Numbers::Input(index),
            },
            _ => Numbers::Absent,
        }
    };
    let (roi, scales, sizes) = if node.opset < 11 && node.inputs.len() == 2 {
        (Numbers::Absent, input(1), Numbers::Absent)
    } else {
        (input(1), input(2), input(3))
    };
    let scales = match (scales, node.attrs.get_f32s("scales")) {
        (Numbers::Absent, Some(scales)) => Numbers::Static(scales.iter().map(|&s| f64::from(s)).collect()),
        (scales, _) => scales,
    };
    compiled(ResizeSpec {
        interpolation,
        coordinates,
        exclude_outside: int("exclude_outside") != 0,
        antialias: int("antialias") != 0,
        extrapolation: node.attrs.get_f32("extrapolation_value").unwrap_or(0.0),
        aspect_ratio,
        axes: node.attrs.get_i64s("axes").map(<[i64]>::to_vec),
        roi,
        scales,
        sizes,
        spatial_constants: false,
    })
}

fn compiled(spec: ResizeSpec) -> Result<Kernel, String> {
    kernel(move |mut inputs, device| {
        let roi = read(&mut inputs, &spec.roi)?;
        let scales = read(&mut inputs, &spec.scales)?;
        let sizes = read(&mut inputs, &spec.sizes)?;
        let x = float(&mut inputs, 0, device)?;
        let shape = x.shape();
        let plan = spec.plan(&shape, roi, scales, sizes)?;
        let out: Vec<usize> = plan.iter().map(|axis| axis.to).collect();
        if out.contains(&0) {
            return Err(format!("Resize to an empty shape {out:?}"));
        }
        within_budget(&padded(&out)?)?;
        if spec.antialias {
            for resampled in &plan {
                // Antialiasing widens the kernel to 2/scale (linear) or 4/scale (cubic) taps.
                let taps = 4.0 / resampled.scale.min(1.0);
                if taps > MAX_TAPS as f64 {
                    return Err(format!(
                        "antialiased Resize by a factor of {:.3e}: more than {MAX_TAPS} taps per output",
                        resampled.scale
                    ));
                }
            }
        }
        let mut tensor = x.tensor;
        for (axis, (&from, resampled)) in shape.iter().zip(&plan).enumerate() {
            let identity = resampled.to == from
                && (resampled.scale - 1.0).abs() < 1e-12
                && resampled.roi == (0.0, 1.0)
                && !spec.antialias;
            if !identity {
                tensor = spec.resize_axis(tensor, MAX_RANK - shape.len() + axis, from, resampled);
            }
        }
        one(Float { tensor, rank: x.rank })
    })
}

/// The most input elements an antialiased output may blend (a downscale by 1/1024 at most).
const MAX_TAPS: usize = 4096;

/// A constant list, or an input read back (a few numbers), `None` when absent or empty.
fn read(inputs: &mut Inputs, numbers: &Numbers) -> Result<Option<Vec<f64>>, String> {
    let values = match numbers {
        Numbers::Absent => return Ok(None),
        Numbers::Static(values) => values.clone(),
        Numbers::Input(index) => match inputs.get_mut(*index).and_then(Option::take) {
            Some(Value::Ints(i)) => i.values.iter().map(|&v| v as f64).collect(),
            Some(Value::Float(f)) => f
                .tensor
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .map_err(|e| format!("{e:?}"))?,
            None => return Ok(None),
        },
    };
    Ok(Some(values).filter(|v| !v.is_empty()))
}

/// One axis of a resize: the output length, the scale and the region of interest.
#[derive(Debug, Clone, Copy)]
struct Resampled {
    to: usize,
    scale: f64,
    /// Start and end of the region of interest (tf_crop_and_resize), in [0, 1] of the axis.
    roi: (f64, f64),
}

impl ResizeSpec {
    /// Output length, scale and region of each axis of an input of `shape`.
    fn plan(
        &self,
        shape: &[usize],
        roi: Option<Vec<f64>>,
        scales: Option<Vec<f64>>,
        sizes: Option<Vec<f64>>,
    ) -> Result<Vec<Resampled>, String> {
        let rank = shape.len();
        let axes: Vec<usize> = match &self.axes {
            None => (0..rank).collect(),
            Some(axes) => {
                let mut normalised = Vec::with_capacity(axes.len());
                for &axis in axes {
                    let resolved = if axis < 0 { axis + rank as i64 } else { axis };
                    match usize::try_from(resolved) {
                        Ok(a) if a < rank && !normalised.contains(&a) => normalised.push(a),
                        _ => return Err(format!("Resize axes {axes:?} of a rank-{rank} input")),
                    }
                }
                normalised
            }
        };
        // Constant scales and sizes of onnx-ir's nodes lost N and C.
        let widen = |values: Vec<f64>, fill: &dyn Fn(usize) -> f64| -> Vec<f64> {
            if self.spatial_constants && self.axes.is_none() && rank >= 2 && values.len() == rank - 2 {
                (0..2).map(fill).chain(values).collect()
            } else {
                values
            }
        };
        let given = |values: Vec<f64>, what: &str| -> Result<Vec<f64>, String> {
            if values.len() != axes.len() {
                return Err(format!(
                    "{} {what} for {} axes of a rank-{rank} input",
                    values.len(),
                    axes.len()
                ));
            }
            Ok(values)
        };
        let mut plan: Vec<Resampled> = shape
            .iter()
            .map(|&from| Resampled {
                to: from,
                scale: 1.0,
                roi: (0.0, 1.0),
            })
            .collect();
        match (sizes, scales) {
            (Some(sizes), _) => {
                let sizes = given(widen(sizes, &|axis| shape[axis] as f64), "sizes")?;
                let mut ratios = Vec::with_capacity(axes.len());
                for (&axis, &size) in axes.iter().zip(&sizes) {
                    if !(size.is_finite() && size >= 0.0 && size <= (1u64 << 32) as f64) {
                        return Err(format!("Resize size {size} along an axis"));
                    }
                    ratios.push(size / shape[axis].max(1) as f64);
                }
                let common = match self.aspect_ratio {
                    AspectRatio::Stretch => None,
                    AspectRatio::NotLarger => ratios.iter().copied().reduce(f64::min),
                    AspectRatio::NotSmaller => ratios.iter().copied().reduce(f64::max),
                };
                for ((&axis, &size), &ratio) in axes.iter().zip(&sizes).zip(&ratios) {
                    plan[axis] = match common {
                        None => Resampled {
                            to: size as usize,
                            scale: ratio,
                            roi: (0.0, 1.0),
                        },
                        // Rounded half up, as ONNX's reference.
                        Some(scale) => Resampled {
                            to: (scale * shape[axis] as f64 + 0.5) as usize,
                            scale,
                            roi: (0.0, 1.0),
                        },
                    };
                }
            }
            (None, Some(scales)) => {
                let scales = given(widen(scales, &|_| 1.0), "scales")?;
                for (&axis, &scale) in axes.iter().zip(&scales) {
                    if !(scale.is_finite() && scale > 0.0) {
                        return Err(format!("Resize scale {scale} is not a positive number"));
                    }
                    let to = (shape[axis] as f64 * scale).floor();
                    if to > (1u64 << 32) as f64 {
                        return Err(format!("Resize to {to} along an axis"));
                    }
                    plan[axis] = Resampled {
                        to: to as usize,
                        scale,
                        roi: (0.0, 1.0),
                    };
                }
            }
            (None, None) => return Err("Resize without scales or sizes".into()),
        }
        if self.coordinates == Coordinates::TfCropAndResize {
            let roi = roi.ok_or("Resize with tf_crop_and_resize needs a roi")?;
            if roi.len() != 2 * axes.len() {
                return Err(format!("a roi of {} values for {} axes", roi.len(), axes.len()));
            }
            for (k, &axis) in axes.iter().enumerate() {
                plan[axis].roi = (roi[k], roi[axes.len() + k]);
            }
        }
        Ok(plan)
    }

    /// Where output index `i` of `resampled` samples an axis of `from` elements.
    fn source(&self, i: usize, from: usize, resampled: &Resampled) -> f64 {
        let (i, from_f, scale) = (i as f64, from as f64, resampled.scale);
        // ONNX's resized length is `from · scale`, not rounded (with sizes given, `to`).
        let length = scale * from_f;
        match self.coordinates {
            Coordinates::HalfPixel => (i + 0.5) / scale - 0.5,
            Coordinates::HalfPixelSymmetric => {
                let adjustment = resampled.to as f64 / length;
                let offset = from_f / 2.0 * (1.0 - adjustment);
                offset + (i + 0.5) / scale - 0.5
            }
            Coordinates::PytorchHalfPixel if length != 1.0 => (i + 0.5) / scale - 0.5,
            Coordinates::PytorchHalfPixel => -0.5,
            Coordinates::AlignCorners if length != 1.0 => i * (from_f - 1.0) / (length - 1.0),
            Coordinates::AlignCorners => 0.0,
            Coordinates::Asymmetric => i / scale,
            Coordinates::TfHalfPixelForNn => (i + 0.5) / scale,
            Coordinates::TfCropAndResize => {
                let (start, end) = resampled.roi;
                let span = if length == 1.0 {
                    (end - start) * (from_f - 1.0) / 2.0
                } else {
                    i * (end - start) * (from_f - 1.0) / (length - 1.0)
                };
                span + start * (from_f - 1.0)
            }
        }
    }

    /// The weights of the taps at `start`, `start + 1`, … for a sample `ratio` past the tap on
    /// its left (in (0, 1]), ONNX's `_*_coeffs` functions.
    fn coefficients(&self, ratio: f64, scale: f64) -> Vec<f64> {
        let cubic = |a: f64, x: f64| {
            let x = x.abs();
            if x <= 1.0 {
                ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
            } else {
                0.0
            }
        };
        let normalised = |c: Vec<f64>| {
            let total: f64 = c.iter().sum();
            c.into_iter().map(|v| v / total).collect()
        };
        match (self.interpolation, self.antialias) {
            (Interpolation::Linear, false) => vec![1.0 - ratio, ratio],
            (Interpolation::Cubic { a }, false) => vec![
                cubic(a, ratio + 1.0),
                cubic(a, ratio),
                cubic(a, 1.0 - ratio),
                cubic(a, 2.0 - ratio),
            ],
            // Antialiasing widens the kernel by 1/scale when downsampling.
            (Interpolation::Linear, true) => {
                let scale = scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                normalised(
                    (start..start + footprint)
                        .map(|k| (1.0 - ((k as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                        .collect(),
                )
            }
            (Interpolation::Cubic { a }, true) => {
                let scale = scale.min(1.0);
                let start = (-2.0 / scale).floor() as i64 + 1;
                normalised(
                    (start..2 - start)
                        .map(|k| cubic(a, scale * (k as f64 - ratio)))
                        .collect(),
                )
            }
            (Interpolation::Nearest(_), _) => vec![1.0],
        }
    }

    /// Resamples `tensor` along padded axis `axis` from `from` elements as `resampled` says.
    fn resize_axis(
        &self,
        tensor: Tensor<MAX_RANK>,
        axis: usize,
        from: usize,
        resampled: &Resampled,
    ) -> Tensor<MAX_RANK> {
        let device = tensor.device();
        let to = resampled.to;
        let last = from as i64 - 1;
        let coordinates: Vec<f64> = (0..to).map(|i| self.source(i, from, resampled)).collect();
        let gather = |indices: Vec<i64>| {
            let indices = Tensor::<1, Int>::from_data(TensorData::new(indices, [to]), &device);
            tensor.clone().select(axis, indices)
        };
        // Per-output weights, broadcast along every other axis.
        let per_output = |values: Vec<f32>| {
            let mut shape = [1; MAX_RANK];
            shape[axis] = to;
            Tensor::<MAX_RANK>::from_data(TensorData::new(values, shape), &device)
        };
        let resized = match self.interpolation {
            Interpolation::Nearest(rounding) => gather(
                coordinates
                    .iter()
                    .map(|&x| (nearest(x, rounding) as i64).clamp(0, last))
                    .collect(),
            ),
            Interpolation::Linear | Interpolation::Cubic { .. } => {
                // The taps of every output: the `n` indices nearest its sample (the left one
                // preferred), their weights; ONNX's `_interpolate_1d_along_axis`.
                let mut taps: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
                for (position, &x) in coordinates.iter().enumerate() {
                    let left = x.floor();
                    let ratio = if x == left { 1.0 } else { x - left };
                    let mut weights = self.coefficients(ratio, resampled.scale);
                    let n = weights.len();
                    let pad = n.div_ceil(2) as f64;
                    let padded_x = x + pad;
                    let base = padded_x.floor();
                    let fraction = padded_x - base;
                    let offset = if n.is_multiple_of(2) {
                        -((n / 2) as i64) + i64::from(fraction != 0.0)
                    } else {
                        -(((n - 1) / 2) as i64) + i64::from(fraction > 0.5)
                    };
                    let start = base as i64 + offset - pad as i64;
                    if self.exclude_outside {
                        for (k, weight) in weights.iter_mut().enumerate() {
                            let index = start + k as i64;
                            if index < 0 || index > last {
                                *weight = 0.0;
                            }
                        }
                        let total: f64 = weights.iter().sum();
                        if total != 0.0 {
                            weights.iter_mut().for_each(|w| *w /= total);
                        }
                    }
                    if taps.len() < n {
                        taps.resize_with(n, || (vec![0; to], vec![0.0; to]));
                    }
                    for (k, weight) in weights.into_iter().enumerate() {
                        taps[k].0[position] = (start + k as i64).clamp(0, last);
                        taps[k].1[position] = weight as f32;
                    }
                }
                let mut sum: Option<Tensor<MAX_RANK>> = None;
                for (indices, weights) in taps {
                    let term = gather(indices) * per_output(weights);
                    sum = Some(match sum {
                        None => term,
                        Some(sum) => sum + term,
                    });
                }
                sum.unwrap_or(tensor.clone())
            }
        };
        // tf_crop_and_resize: samples outside the input take the extrapolation value.
        if self.coordinates == Coordinates::TfCropAndResize {
            let outside: Vec<bool> = coordinates.iter().map(|&x| x < 0.0 || x > last as f64).collect();
            if outside.iter().any(|&o| o) {
                let keep = per_output(outside.iter().map(|&o| f32::from(u8::from(!o))).collect());
                let fill = per_output(
                    outside
                        .iter()
                        .map(|&o| if o { self.extrapolation } else { 0.0 })
                        .collect(),
                );
                return resized * keep + fill;
            }
        }
        resized
    }
}

fn nearest(x: f64, rounding: Rounding) -> f64 {
    let half = x.fract().abs() == 0.5;
    match rounding {
        Rounding::PreferFloor if half => x.floor(),
        Rounding::PreferCeil if half => x.ceil(),
        Rounding::PreferFloor | Rounding::PreferCeil => x.round(),
        Rounding::Floor => x.floor(),
        Rounding::Ceil => x.ceil(),
    }
}
