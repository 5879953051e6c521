//! The first principal component of a layer's channels, for the factorisation methods.
//!
//! pytorch-grad-cam's `get_2d_projection`: per image, the `h·w × K` matrix of channel values at
//! each position, centred per channel, projected on its first right singular vector. Computed
//! on the device without an SVD: the top eigenvector of the smaller of `MᵀM` (`K × K`) and
//! `MMᵀ` (`h·w × h·w`), by repeated squaring (the ratio of the two largest eigenvalues is raised
//! to the power 2¹²) and a few power iterations.
//!
//! The sign of a singular vector is arbitrary (pytorch-grad-cam's EigenCAM maps come out
//! inverted at random). Ember fixes it as pytorch-grad-cam's `get_2d_projection_with_sign_correction`
//! does (Chung & Ying, Seg-Eigen-CAM, Appl. Sci. 2025, Eq. 13): the projection is flipped when
//! its most negative value is larger in magnitude than its most positive one, so the same input
//! gives the same map on every backend.

use burn::tensor::{Tensor, TensorData};

/// Squarings of the normalised matrix: the second eigenvalue's weight falls as (λ₂/λ₁)^(2¹²).
const SQUARINGS: usize = 12;
/// Power iterations with the matrix itself after the squarings, to polish the vector.
const POLISH: usize = 4;

/// The projection `[N, h, w]` of `x` (`[N, K, h, w]`) on its first principal component, with
/// the sign rule above.
pub(crate) fn principal_projection(x: Tensor<4>) -> Tensor<3> {
    let [batch, channels, height, width] = x.dims();
    let positions = height * width;
    let m = x.reshape([batch, channels, positions]).swap_dims(1, 2);
    let m = m.clone() - m.mean_dim(1);
    let direction = if channels <= positions {
        top_eigenvector(m.clone().swap_dims(1, 2).matmul(m.clone()))
    } else {
        // v = Mᵀu/‖Mᵀu‖ for the top eigenvector u of MMᵀ.
        let u = top_eigenvector(m.clone().matmul(m.clone().swap_dims(1, 2)));
        normalised(m.clone().swap_dims(1, 2).matmul(u))
    };
    with_fixed_sign(m.matmul(direction).reshape([batch, height, width]))
}

/// Each map `[N, h, w]` flipped where its most negative value is larger in magnitude than its
/// most positive one (the sign rule above; scikit-learn's `svd_flip` makes the same choice for
/// the eigenvectors of kernel PCA: the entry of largest magnitude is positive).
pub(crate) fn with_fixed_sign(projection: Tensor<3>) -> Tensor<3> {
    let largest = projection.clone().max_dim(2).max_dim(1);
    let smallest = projection.clone().min_dim(2).min_dim(1);
    let flip = smallest.abs().greater(largest.abs()).float();
    let sign = flip * (-2.0) + 1.0;
    projection * sign
}

/// The top eigenvector `[N, d, 1]` of symmetric positive semi-definite matrices `[N, d, d]`
/// (zero for a zero matrix). For an indefinite matrix, the eigenvector of the eigenvalue of
/// largest magnitude.
pub(crate) fn top_eigenvector(matrix: Tensor<3>) -> Tensor<3> {
    let [batch, size, _] = matrix.dims();
    let mut power = scaled(matrix.clone());
    for _ in 0..SQUARINGS {
        power = scaled(power.clone().matmul(power));
    }
    // Every column of a high power is (nearly) a multiple of the top eigenvector: a fixed
    // start with no zero entry picks it up unless it is orthogonal to it.
    let start: Vec<f32> = (0..size).map(|i| 1.0 + i as f32 / size as f32).collect();
    let start = Tensor::<1>::from_data(TensorData::new(start, [size]), &matrix.device())
        .reshape([1, size, 1])
        .expand([batch, size, 1]);
    let mut vector = normalised(power.matmul(start));
    for _ in 0..POLISH {
        vector = normalised(matrix.clone().matmul(vector));
    }
    vector
}

/// Each matrix divided by its largest magnitude (zero stays zero).
fn scaled(matrix: Tensor<3>) -> Tensor<3> {
    let largest = matrix.clone().abs().max_dim(2).max_dim(1);
    matrix / (largest + f32::MIN_POSITIVE)
}

/// Each column vector `[N, d, 1]` at unit length (zero stays zero).
pub(crate) fn normalised(vector: Tensor<3>) -> Tensor<3> {
    let length = vector.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    vector / (length + f32::MIN_POSITIVE)
}
