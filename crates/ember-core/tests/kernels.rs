//! Ember's own ReLU, clamp and depthwise convolution against Burn's operations they replace:
//! the same values, and the same gradients, on flex (where Ember runs kernels of its own).

use burn::prelude::*;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;

fn flex() -> Device {
    Device::flex()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().try_into_vec_as::<f32>().expect("readable tensor")
}

/// Normal-ish values from a seed, without the device's random generator: tests run in
/// parallel and would interleave its draws.
fn normal(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| ((0..12).map(|_| uniform()).sum::<f64>() - 6.0) as f32)
        .collect()
}

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let len = shape.iter().product();
    Tensor::<1>::from_floats(normal(len, seed).as_slice(), device).reshape(shape)
}

/// Values with the awkward cases among them: NaN, infinities, exact bounds, signed zeros.
fn awkward(len: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = normal(len, seed).into_iter().map(|v| v * 4.0).collect();
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 6.0, -1.0, 1.0];
    for (i, s) in specials.iter().enumerate() {
        v[i * 7 % len] = *s;
    }
    v
}

/// Equal bit for bit, NaN included.
fn assert_same(ours: &[f32], burn: &[f32], what: &str) {
    assert_eq!(ours.len(), burn.len(), "{what}: sizes");
    for (i, (a, b)) in ours.iter().zip(burn).enumerate() {
        let same = (a.is_nan() && b.is_nan()) || a == b;
        assert!(same, "{what}: element {i} is {a}, Burn's is {b}");
    }
}

fn close(ours: &[f32], burn: &[f32], what: &str) {
    assert_eq!(ours.len(), burn.len(), "{what}: sizes");
    let scale = burn.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(burn).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(
        worst <= 1e-5 * scale,
        "{what}: differs from Burn's by {worst} (largest value {scale})"
    );
}

#[test]
fn relu_and_clamp_give_burns_values() {
    let device = flex();
    // Small (one thread) and large (split over threads) tensors.
    for len in [1000usize, 300_000] {
        let data = awkward(len, len as u64);
        let x = || Tensor::<1>::from_floats(data.as_slice(), &device).reshape([len / 10, 10]);
        assert_same(
            &values(ember_core::fast_relu(x())),
            &values(burn::tensor::activation::relu(x())),
            "relu",
        );
        assert_same(
            &values(ember_core::clamp(x(), 0.0, 6.0)),
            &values(x().clamp(0.0, 6.0)),
            "clamp",
        );
        assert_same(
            &values(ember_core::clamp(x(), -1.5, f64::INFINITY)),
            &values(x().clamp_min(-1.5)),
            "clamp_min",
        );
        assert_same(
            &values(ember_core::clamp(x(), f64::NEG_INFINITY, 2.0)),
            &values(x().clamp_max(2.0)),
            "clamp_max",
        );
        // A view that is not contiguous (transposed) and one that shares its buffer.
        let shared = x();
        assert_same(
            &values(ember_core::clamp(shared.clone().transpose(), 0.0, 6.0)),
            &values(shared.clone().transpose().clamp(0.0, 6.0)),
            "clamp of a transposed view",
        );
        let before = values(shared.clone());
        let _ = ember_core::fast_relu(shared.clone());
        assert_same(&values(shared), &before, "relu must not write over a shared input");
    }
}

#[test]
fn crossed_and_nan_bounds_follow_onnx_clip() {
    let device = flex();
    let x = Tensor::<1>::from_floats([-3.0, 0.5, 2.0, 9.0], &device);
    // ONNX Clip is min(max(x, lo), hi): crossed bounds give hi everywhere.
    assert_eq!(values(ember_core::clamp(x.clone(), 4.0, 1.0)), vec![1.0; 4]);
    // A NaN bound makes every value NaN, as Burn's clamp_min/clamp_max and PyTorch's clamp do.
    let nan_bound = values(ember_core::clamp(x, f64::NAN, 1.0));
    assert!(nan_bound.iter().all(|v| v.is_nan()), "{nan_bound:?}");
}

/// `d sum(f(x) · w) / dx` through `f`, on flex with autodiff.
fn input_gradient<const D: usize>(x: &[f32], shape: [usize; D], f: impl Fn(Tensor<D>) -> Tensor<D>) -> Vec<f32> {
    let device = flex().autodiff();
    let x = Tensor::<1>::from_floats(x, &device).reshape(shape).require_grad();
    let weights = random(shape, 7, &device);
    let grads = (f(x.clone()) * weights).sum().backward();
    values(x.grad(&grads).expect("a gradient"))
}

#[test]
fn relu_and_clamp_gradients_are_burns() {
    for len in [1000usize, 300_000] {
        let data: Vec<f32> = awkward(len, 3 + len as u64)
            .into_iter()
            .filter(|v| v.is_finite())
            .collect();
        let len = data.len() / 10 * 10;
        let data = &data[..len];
        let shape = [len / 10, 10];
        let relu = input_gradient(data, shape, ember_core::fast_relu);
        let burn_relu = input_gradient(data, shape, burn::tensor::activation::relu);
        assert_same(&relu, &burn_relu, "relu gradient");
        let clamp = input_gradient(data, shape, |x| ember_core::clamp(x, 0.0, 6.0));
        let burn_clamp = input_gradient(data, shape, |x| x.clamp(0.0, 6.0));
        assert_same(&clamp, &burn_clamp, "clamp gradient");
        // Exactly at a bound the gradient passes (lo ≤ x ≤ hi), as in Burn and PyTorch.
        let at_bounds = input_gradient(&[0.0, 6.0, -0.5, 6.5], [4], |x| ember_core::clamp(x, 0.0, 6.0));
        assert!(at_bounds[0] != 0.0 && at_bounds[1] != 0.0, "{at_bounds:?}");
        assert_eq!(&at_bounds[2..], &[0.0, 0.0]);
    }
}

/// Output, input gradient, kernel gradient and bias gradient of a convolution with kernels of
/// shape `kernel` (`[out channels, channels per group, kh, kw]`).
fn conv_results(
    conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
    input: [usize; 4],
    kernel: [usize; 4],
    options: &ConvOptions<2>,
) -> [Vec<f32>; 4] {
    let device = flex().autodiff();
    let x = random(input, 11, &device).require_grad();
    let weight = random(kernel, 12, &device).require_grad();
    let bias = random([kernel[0]], 13, &device).require_grad();
    let y = conv(x.clone(), weight.clone(), Some(bias.clone()), options.clone());
    let upstream = random(y.dims(), 14, &device);
    let grads = (y.clone() * upstream).sum().backward();
    [
        values(y),
        values(x.grad(&grads).expect("input gradient")),
        values(weight.grad(&grads).expect("kernel gradient")),
        values(bias.grad(&grads).expect("bias gradient")),
    ]
}

#[test]
fn depthwise_convolution_gradients_are_burns() {
    /// Input, kernel, stride, padding (begin, end), dilation.
    type Case = ([usize; 4], [usize; 2], [usize; 2], [(usize, usize); 2], [usize; 2]);
    let cases: &[Case] = &[
        ([2, 6, 9, 9], [3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
        ([2, 6, 9, 8], [3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        ([1, 4, 10, 10], [3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        ([1, 4, 11, 7], [5, 5], [2, 1], [(2, 2), (2, 2)], [1, 1]),
        ([1, 3, 8, 8], [3, 3], [1, 1], [(0, 0), (0, 0)], [1, 1]),
        ([1, 3, 8, 8], [3, 3], [2, 2], [(0, 1), (1, 0)], [1, 1]),
        ([1, 5, 12, 12], [7, 7], [3, 3], [(3, 3), (3, 3)], [1, 1]),
        ([1, 3, 9, 9], [1, 1], [2, 2], [(0, 0), (0, 0)], [1, 1]),
        // Rows long enough for Ember's forward kernel's 32- and 8-wide blocks, strided too.
        ([1, 3, 6, 75], [3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
        ([2, 2, 5, 83], [3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        ([1, 2, 4, 50], [1, 3], [1, 3], [(0, 0), (0, 2)], [1, 1]),
        // Burn's own input gradient: dilation, and padding as wide as the kernel.
        ([1, 3, 9, 9], [3, 3], [1, 1], [(2, 2), (2, 2)], [2, 2]),
        ([1, 3, 9, 9], [3, 3], [1, 1], [(3, 3), (3, 3)], [1, 1]),
    ];
    for (input, kernel, stride, padding, dilation) in cases {
        let options = ConvOptions::new_with_padding(*stride, *padding, *dilation, input[1]);
        let weight = [input[1], 1, kernel[0], kernel[1]];
        compare_convolutions(*input, weight, &options);
    }
    // A first layer (3 channels in): Ember's forward kernel, Burn's gradients.
    compare_convolutions(
        [1, 3, 11, 40],
        [8, 3, 3, 3],
        &ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
    );
}

#[test]
fn small_group_convolutions_without_autodiff_are_burns() {
    // Ember's forward kernel on flex: depthwise and up to 4 channels per group, every row
    // length through the 32- and 8-wide blocks and the rest, strides 1–4, asymmetric padding,
    // a bias or none, and non-finite values (a padded zero times an infinite kernel value is
    // NaN, as in Burn's).
    let device = flex();
    // Input, kernels `[out, per group, kh, kw]`, stride, padding, groups.
    type Case = ([usize; 4], [usize; 4], [usize; 2], [(usize, usize); 2], usize);
    let cases: &[Case] = &[
        ([2, 4, 7, 71], [4, 1, 3, 3], [1, 1], [(1, 1), (1, 1)], 4),
        ([1, 3, 9, 45], [3, 1, 3, 3], [2, 2], [(1, 1), (1, 1)], 3),
        ([1, 2, 12, 40], [2, 1, 5, 5], [3, 2], [(2, 1), (0, 4)], 2),
        ([1, 2, 3, 3], [2, 1, 3, 3], [1, 1], [(0, 0), (0, 0)], 2),
        ([3, 5, 8, 17], [5, 1, 3, 1], [1, 1], [(2, 0), (0, 0)], 5),
        // The last rows and columns unread; leading zeros not a multiple of the stride.
        ([1, 2, 11, 35], [2, 1, 4, 4], [3, 4], [(0, 0), (0, 0)], 2),
        ([1, 1, 9, 30], [1, 1, 5, 5], [2, 3], [(2, 2), (4, 1)], 1),
        // A network's first layer (3 channels in), grouped layers, a 1×1 layer.
        ([2, 3, 19, 37], [8, 3, 3, 3], [2, 2], [(1, 1), (1, 1)], 1),
        ([1, 3, 23, 23], [6, 3, 7, 7], [2, 2], [(3, 3), (3, 3)], 1),
        ([2, 4, 6, 20], [6, 2, 3, 3], [1, 1], [(1, 1), (1, 1)], 2),
        ([1, 2, 5, 9], [4, 2, 1, 1], [1, 1], [(0, 0), (0, 0)], 1),
    ];
    for &(input, weight_shape, stride, padding, groups) in cases {
        let options = ConvOptions::new_with_padding(stride, padding, [1, 1], groups);
        let x = random(input, 21, &device);
        let mut weights = normal(weight_shape.iter().product(), 22);
        weights[0] = f32::INFINITY;
        let weight = Tensor::<1>::from_floats(weights.as_slice(), &device).reshape(weight_shape);
        for bias in [Some(random([weight_shape[0]], 23, &device)), None] {
            let what = format!(
                "{input:?} * {weight_shape:?}, stride {stride:?}, padding {padding:?}, {groups} groups, bias {}",
                bias.is_some()
            );
            let ours = values(ember_core::conv2d(
                x.clone(),
                weight.clone(),
                bias.clone(),
                options.clone(),
            ));
            let burns = values(burn_conv2d(x.clone(), weight.clone(), bias, options.clone()));
            // The same values are non-finite (NaN, or the same infinity); the rest are close.
            let special = |v: &[f32]| {
                v.iter()
                    .map(|v| {
                        (!v.is_finite()).then(|| {
                            if v.is_nan() {
                                "NaN"
                            } else if *v > 0.0 {
                                "+inf"
                            } else {
                                "-inf"
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(special(&ours), special(&burns), "{what}: non-finite values");
            assert!(
                special(&ours).iter().any(Option::is_some),
                "{what}: the infinite kernel value shows"
            );
            let finite = |v: &[f32]| {
                v.iter()
                    .map(|v| if v.is_finite() { *v } else { 0.0 })
                    .collect::<Vec<_>>()
            };
            close(&finite(&ours), &finite(&burns), &what);
        }
    }
}

/// Ember's convolution and Burn's: output and the three gradients.
fn compare_convolutions(input: [usize; 4], kernel: [usize; 4], options: &ConvOptions<2>) {
    let ours = conv_results(ember_core::conv2d, input, kernel, options);
    let burns = conv_results(burn_conv2d, input, kernel, options);
    for (what, (a, b)) in ["output", "input gradient", "kernel gradient", "bias gradient"]
        .iter()
        .zip(ours.iter().zip(&burns))
    {
        close(
            a,
            b,
            &format!(
                "{what} of {input:?} * {kernel:?}, stride {:?}, padding {:?}",
                options.stride, options.padding
            ),
        );
    }
}

#[test]
fn pointwise_convolution_gradients_are_burns() {
    // 1×1, stride 1, no padding, one group: Ember's input gradient is a matrix product.
    for (input, out_channels) in [([2, 6, 5, 7], 10), ([1, 3, 4, 4], 8), ([3, 16, 9, 9], 4)] {
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        compare_convolutions(input, [out_channels, input[1], 1, 1], &options);
    }
    // Strided or padded 1×1 convolutions keep Burn's gradient.
    compare_convolutions([1, 4, 6, 6], [5, 4, 1, 1], &ConvOptions::new([2, 2], [0, 0], [1, 1], 1));
    compare_convolutions([1, 4, 6, 6], [5, 4, 1, 1], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
}

#[test]
fn convolutions_with_many_channels_per_group_are_burns() {
    // 5 channels per group: more than Ember's kernel takes, so Burn's convolution, bit for bit.
    let device = flex().autodiff();
    let x = random([1, 10, 6, 6], 5, &device);
    let weight = random([6, 5, 3, 3], 6, &device);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
    let ours = ember_core::conv2d(x.clone(), weight.clone(), None, options.clone());
    let burns = burn_conv2d(x, weight, None, options);
    assert_same(&values(ours), &values(burns), "grouped convolution");
}
