//! Depthwise (and few-channel grouped) convolution on flex, one output row at a time with the
//! sums kept in registers.
//!
//! Why: flex 0.22's depthwise kernel adds one kernel tap at a time into the whole output row
//! (nine loads and stores of every output value for a 3×3 kernel) and runs strided
//! convolutions as a scalar loop; on MobileNetV2 its depthwise layers were 35 % of a forward
//! pass at batch 1 (8.3 of 24 ms, 2 threads), the four stride-2 layers alone 3.6 ms. Here each
//! input plane is copied once into a zero-framed scratch plane whose rows are split by column
//! phase (`column mod stride`), so that every kernel tap reads a contiguous run; a block of
//! outputs then sums all its taps in registers, starting from the bias, and is stored once.
//! Values differ from flex's by rounding only (fused multiply-adds, another summation order).

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Outputs summed at once: four 8-lane vectors, so that four sums are in flight.
const BLOCK: usize = 32;
/// One 8-lane vector: the rest of a row after its blocks.
const LANES: usize = 8;

/// The geometry of one convolution's planes.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    height: usize,
    width: usize,
    stride: [usize; 2],
    /// Zeros before the first row and column.
    lead: [usize; 2],
    out: [usize; 2],
    /// Rows of the framed plane that outputs read.
    framed_rows: usize,
    /// Length of one column phase of a framed row: the last 8-wide block of outputs reads
    /// zeros past the row's end.
    phase_len: usize,
}

impl Geometry {
    fn new(input: [usize; 4], kernel: [usize; 2], options: &ConvOptions<2>) -> Option<Self> {
        let [_, _, height, width] = input;
        let out = |axis: usize, size: usize| {
            let (begin, end) = options.padding[axis];
            let span = size.checked_add(begin)?.checked_add(end)?;
            (span >= kernel[axis]).then(|| (span - kernel[axis]) / options.stride[axis] + 1)
        };
        let out = [out(0, height)?, out(1, width)?];
        let stride = options.stride;
        Some(Self {
            height,
            width,
            stride,
            lead: [options.padding[0].0, options.padding[1].0],
            out,
            framed_rows: (out[0] - 1) * stride[0] + kernel[0],
            phase_len: out[1].next_multiple_of(LANES) + (kernel[1] - 1) / stride[1],
        })
    }

    /// Values of the framed plane: every row split into `stride` column phases.
    fn framed_len(&self) -> usize {
        self.framed_rows * self.stride[1] * self.phase_len
    }
}

/// At most this many input channels per group take Ember's kernel: a network's first layer
/// (3 channels) and depthwise layers (1); wider groups are matrix products, flex's.
pub(super) const MAX_CHANNELS_PER_GROUP: usize = 4;

/// At most this many kernel values per output (channels per group × kernel height × width).
const MAX_TAPS: usize = 256;

/// The largest stride taken: a framed row holds `stride` phases of at least 8 values each.
const MAX_STRIDE: usize = 16;

/// `conv2d(x, weight, bias, options)` for a grouped convolution of f32 tensors with at most
/// [`MAX_CHANNELS_PER_GROUP`] input channels per group (depthwise: one), dilation 1 and padding
/// smaller than the kernel, or `None` for anything else (the caller then runs flex's kernel).
pub(super) fn grouped_conv2d(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    let input: [usize; 4] = x.shape().dims();
    let [out_channels, per_group, kh, kw]: [usize; 4] = weight.shape().dims();
    let [batch, channels, ..] = input;
    let groups = options.groups;
    let supported = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.shape().dims::<1>() == [out_channels])
        && groups >= 1
        && (1..=MAX_CHANNELS_PER_GROUP).contains(&per_group)
        && channels == groups * per_group
        && out_channels % groups == 0
        && per_group * kh * kw <= MAX_TAPS
        && options.dilation == [1, 1]
        && options.stride.iter().all(|s| (1..=MAX_STRIDE).contains(s))
        && options.padding[0].0.max(options.padding[0].1) < kh
        && options.padding[1].0.max(options.padding[1].1) < kw;
    if !supported {
        return None;
    }
    let geometry = Geometry::new(input, [kh, kw], options)?;
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let bias = bias.map(FlexTensor::to_contiguous);
    let (values, kernels) = (x.as_slice::<f32>()?, weight.as_slice::<f32>()?);
    let biases = match &bias {
        Some(bias) => bias.as_slice::<f32>()?,
        None => &vec![0.0; out_channels],
    };
    let [out_h, out_w] = geometry.out;
    let out_plane = out_h * out_w;
    let total = batch.checked_mul(out_channels)?.checked_mul(out_plane)?;
    let mut output: Vec<f32> = Vec::with_capacity(total);
    // Where each kernel value's input lies in the framed planes of its group, from the first
    // framed row an output row reads.
    let (framed_len, row_len) = (geometry.framed_len(), geometry.stride[1] * geometry.phase_len);
    let offsets: Vec<usize> = (0..per_group * kh * kw)
        .map(|tap| {
            let (channel, r, c) = (tap / (kh * kw), tap / kw % kh, tap % kw);
            channel * framed_len + r * row_len + (c % geometry.stride[1]) * geometry.phase_len + c / geometry.stride[1]
        })
        .collect();
    let (in_plane, taps_len, outputs_per_group) = (
        geometry.height * geometry.width,
        per_group * kh * kw,
        out_channels / groups,
    );
    if out_plane > 0 {
        output.spare_capacity_mut()[..total]
            .par_chunks_mut(out_plane)
            .enumerate()
            .for_each_init(
                || (vec![0.0f32; per_group * framed_len], None),
                |(framed, framed_group), (plane, out)| {
                    let (image, out_channel) = (plane / out_channels, plane % out_channels);
                    let group = (image, out_channel / outputs_per_group);
                    // Consecutive output planes of one group share its framed input planes.
                    if *framed_group != Some(group) {
                        let first = (image * channels + group.1 * per_group) * in_plane;
                        for (channel, target) in framed.chunks_exact_mut(framed_len).enumerate() {
                            let start = first + channel * in_plane;
                            frame(&values[start..start + in_plane], &geometry, target);
                        }
                        *framed_group = Some(group);
                    }
                    let taps = &kernels[out_channel * taps_len..(out_channel + 1) * taps_len];
                    convolve_plane(framed, (taps, &offsets), biases[out_channel], &geometry, out);
                },
            );
    }
    // SAFETY: `convolve_plane` wrote every value of every output plane.
    unsafe { output.set_len(total) };
    Some(FlexTensor::from_data(TensorData::new(
        output,
        [batch, out_channels, out_h, out_w],
    )))
}

/// Copies one input plane into `framed`, each row split by column phase (`column mod stride`).
/// Only the plane's own values are written: every plane of a convolution lands on the same
/// places, so the zeros around them, written once when the scratch plane was made, stay.
/// (Framing wrote the zeros anew for every plane, and MobileNetV2's small planes made that
/// as costly as the convolution itself: 14 % of a forward pass against 17 %.)
fn frame(plane: &[f32], g: &Geometry, framed: &mut [f32]) {
    let stride = g.stride[1];
    let row_len = stride * g.phase_len;
    // The framed columns the outputs read: those before `row_len` in column order.
    let columns = g.width.min(row_len.saturating_sub(g.lead[1]));
    for (row, source) in plane.chunks_exact(g.width).enumerate() {
        let start = (g.lead[0] + row) * row_len;
        let Some(target) = framed.get_mut(start..start + row_len) else {
            // Rows below the last one the outputs read.
            break;
        };
        let source = &source[..columns];
        match stride {
            1 => target[g.lead[1]..g.lead[1] + columns].copy_from_slice(source),
            2 => split_phases_2(source, g, target),
            _ => split_phases(source, g, target),
        }
    }
}

/// Stride 2: the even and the odd source columns in one loop, whose interleaved reads the
/// compiler turns into vector shuffles (a strided loop per phase was 3× slower).
fn split_phases_2(source: &[f32], g: &Geometry, target: &mut [f32]) {
    let lead = g.lead[1];
    let (first_phase, second_phase) = target.split_at_mut(g.phase_len);
    // Source column `i` is framed column `lead + i`: phase `(lead + i) mod 2`, at `(lead + i) / 2`.
    let (even, odd) = if lead.is_multiple_of(2) {
        (&mut first_phase[lead / 2..], &mut second_phase[lead / 2..])
    } else {
        (&mut second_phase[lead / 2..], &mut first_phase[lead / 2 + 1..])
    };
    let pairs = source.chunks_exact(2);
    if let [last] = pairs.remainder() {
        even[source.len() / 2] = *last;
    }
    for ((even, odd), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        *even = pair[0];
        *odd = pair[1];
    }
}

/// Any stride: each phase's source columns in turn.
fn split_phases(source: &[f32], g: &Geometry, target: &mut [f32]) {
    let stride = g.stride[1];
    for phase in 0..stride {
        // The first source column of this phase, and where it lands in the phase.
        let first = (phase + stride - g.lead[1] % stride) % stride;
        if first >= source.len() {
            continue;
        }
        let at = phase * g.phase_len + (g.lead[1] + first) / stride;
        for (value, &x) in target[at..].iter_mut().zip(source[first..].iter().step_by(stride)) {
            *value = x;
        }
    }
}

/// Every output of one plane from its framed input.
fn convolve_plane(
    framed: &[f32],
    (taps, offsets): (&[f32], &[usize]),
    bias: f32,
    g: &Geometry,
    out: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { convolve_plane_fma(framed, (taps, offsets), bias, g, out) };
    }
    convolve_plane_body::<false>(framed, taps, offsets, bias, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convolve_plane_fma(
    framed: &[f32],
    (taps, offsets): (&[f32], &[usize]),
    bias: f32,
    g: &Geometry,
    out: &mut [MaybeUninit<f32>],
) {
    convolve_plane_body::<true>(framed, taps, offsets, bias, g, out)
}

/// `out[oh][ow] = bias + Σ taps[kh][kw] · framed[oh·sh + kh][ow·sw + kw]`, the framed column
/// read from phase `kw mod sw` at `ow + kw / sw` (`offsets` holds each tap's place in the
/// framed rows). `FUSED` uses fused multiply-adds (only where the CPU has them: elsewhere
/// `mul_add` is a slow library call).
#[inline(always)]
fn convolve_plane_body<const FUSED: bool>(
    framed: &[f32],
    taps: &[f32],
    offsets: &[usize],
    bias: f32,
    g: &Geometry,
    out: &mut [MaybeUninit<f32>],
) {
    let out_w = g.out[1];
    let row_len = g.stride[1] * g.phase_len;
    for (oh, out_row) in out.chunks_exact_mut(out_w).enumerate() {
        // Offsets count from the first framed row this output row reads (of the first plane).
        let rows = &framed[oh * g.stride[0] * row_len..];
        let mut start = 0;
        while start + BLOCK <= out_w {
            let sums = outputs::<BLOCK, 1, FUSED>(rows, taps, offsets, bias, start);
            write(&mut out_row[start..], &sums);
            start += BLOCK;
        }
        // The rest in 8-wide blocks: the framed rows run on in zeros past the last output.
        while start < out_w {
            let sums = outputs::<LANES, 4, FUSED>(rows, taps, offsets, bias, start);
            write(&mut out_row[start..], &sums);
            start += LANES;
        }
    }
}

/// `N` outputs of one row from `first` on, summed in registers: the taps in turn go to `PARTS`
/// partial sums, added at the end, so that an 8-wide block too has several sums in flight.
#[inline(always)]
fn outputs<const N: usize, const PARTS: usize, const FUSED: bool>(
    rows: &[f32],
    taps: &[f32],
    offsets: &[usize],
    bias: f32,
    first: usize,
) -> [f32; N] {
    let mut parts = [[0.0f32; N]; PARTS];
    parts[0] = [bias; N];
    let add = |sums: &mut [f32; N], tap: f32, offset: usize| {
        let run: &[f32; N] = rows[offset + first..offset + first + N]
            .try_into()
            .expect("N values in the framed rows");
        for (sum, &value) in sums.iter_mut().zip(run) {
            *sum = if FUSED {
                value.mul_add(tap, *sum)
            } else {
                value * tap + *sum
            };
        }
    };
    // `PARTS` taps at a time, one to each partial sum (indices the compiler unrolls, so the
    // sums stay in registers).
    let (tap_groups, offset_groups) = (taps.chunks_exact(PARTS), offsets.chunks_exact(PARTS));
    let (rest_taps, rest_offsets) = (tap_groups.remainder(), offset_groups.remainder());
    for (group, group_offsets) in tap_groups.zip(offset_groups) {
        for part in 0..PARTS {
            add(&mut parts[part], group[part], group_offsets[part]);
        }
    }
    for (&tap, &offset) in rest_taps.iter().zip(rest_offsets) {
        add(&mut parts[0], tap, offset);
    }
    let mut sums = parts[0];
    for part in &parts[1..] {
        for (sum, value) in sums.iter_mut().zip(part) {
            *sum += value;
        }
    }
    sums
}

/// Stores as many of `sums` as `out` has room for.
#[inline(always)]
fn write(out: &mut [MaybeUninit<f32>], sums: &[f32]) {
    for (target, &sum) in out.iter_mut().zip(sums) {
        target.write(sum);
    }
}
