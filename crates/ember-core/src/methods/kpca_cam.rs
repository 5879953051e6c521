use burn::tensor::Tensor;

use super::principal::{top_eigenvector, with_fixed_sign};
use super::{CamMethod, MethodOutput};

/// KPCA-CAM: the activations projected on their first principal component in a kernel's
/// feature space; no gradients, no class.
///
/// With `A` the `h·w × K` matrix of the layer's channels centred per channel, the kernel matrix
/// `G_ij = k(a_i, a_j)` over positions, centred (`G − 1G/n − G1/n + 1G1/n²`), and its eigenvector
/// `v` of the largest eigenvalue `λ`: map `= v·√max(λ, 0)`, the entry of largest magnitude
/// positive. As pytorch-grad-cam 1.5.7's `KPCA_CAM` (scikit-learn's `KernelPCA(n_components=1)`,
/// whose `svd_flip` makes the same sign choice); kernels with scikit-learn's defaults
/// (`γ = 1/K`, `coef0 = 1`, `degree = 3`).
///
/// The kernel matrix has `(h·w)²` entries and its eigenvector costs a dozen `(h·w)³` products:
/// layers up to [`KpcaCam::MAX_POSITIONS`] positions are accepted.
///
/// Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel
/// PCA", MMSP 2024.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KpcaCam {
    /// The kernel.
    pub kernel: Kernel,
    /// `γ` of the sigmoid, RBF and polynomial kernels; `1/K` when `None`.
    pub gamma: Option<f32>,
}

/// A kernel of [`KpcaCam`], as scikit-learn defines it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kernel {
    /// `tanh(γ⟨x, y⟩ + 1)`, pytorch-grad-cam's default.
    #[default]
    Sigmoid,
    /// `exp(−γ‖x − y‖²)`.
    Rbf,
    /// `(γ⟨x, y⟩ + 1)³`.
    Polynomial,
    /// `⟨x, y⟩`: plain PCA (EigenCAM's map, scaled by `√λ`).
    Linear,
    /// `⟨x, y⟩ / (‖x‖‖y‖)`.
    Cosine,
}

impl KpcaCam {
    /// The largest layer accepted, in positions (`h·w`): 32×32.
    pub const MAX_POSITIONS: usize = 1024;
}

impl CamMethod for KpcaCam {
    fn name(&self) -> &'static str {
        "kpcacam"
    }

    fn uses_gradients(&self) -> bool {
        false
    }

    fn check_layer(&self, shape: [usize; 4]) -> Result<(), String> {
        let positions = shape[2] * shape[3];
        if positions > Self::MAX_POSITIONS {
            return Err(format!(
                "KPCA-CAM builds a kernel matrix over the layer's positions, and {}×{} = {positions} is more than \
                 {} (a {positions}×{positions} eigenproblem): explain a later, smaller layer",
                shape[2],
                shape[3],
                Self::MAX_POSITIONS
            ));
        }
        Ok(())
    }

    fn compute(&self, activations: Tensor<4>, _gradients: Tensor<4>) -> MethodOutput {
        let [batch, channels, height, width] = activations.dims();
        let positions = height * width;
        let a = activations.reshape([batch, channels, positions]).swap_dims(1, 2);
        let a = a.clone() - a.mean_dim(1);
        let gamma = self.gamma.unwrap_or(1.0 / channels as f32);
        let dot = a.clone().matmul(a.clone().swap_dims(1, 2));
        let kernel = match self.kernel {
            Kernel::Sigmoid => (dot * gamma + 1.0).tanh(),
            Kernel::Rbf => {
                let norms = a.powf_scalar(2.0).sum_dim(2);
                let distances = (norms.clone() + norms.swap_dims(1, 2) - dot * 2.0).clamp_min(0.0);
                (distances * (-gamma)).exp()
            }
            Kernel::Polynomial => (dot * gamma + 1.0).powf_scalar(3.0),
            Kernel::Linear => dot,
            Kernel::Cosine => {
                let lengths = a.powf_scalar(2.0).sum_dim(2).sqrt();
                let products = lengths.clone().matmul(lengths.swap_dims(1, 2));
                // scikit-learn normalises zero rows to zero.
                dot / products.clone().clamp_min(f32::MIN_POSITIVE) * products.greater_elem(0.0).float()
            }
        };
        let rows = kernel.clone().mean_dim(2);
        let centred = kernel.clone() - rows.clone() - rows.clone().swap_dims(1, 2) + rows.mean_dim(1);
        // The largest eigenvalue, which an indefinite kernel matrix (sigmoid) may not have as
        // its largest magnitude: shifted by the most negative one where that dominates.
        let first = top_eigenvector(centred.clone());
        let dominant = rayleigh(&centred, &first);
        let identity = Tensor::<2>::eye(positions, &centred.device())
            .reshape([1, positions, positions])
            .expand([batch, positions, positions]);
        let shift = dominant.neg().clamp_min(0.0);
        let vector = top_eigenvector(centred.clone() + identity * shift);
        let eigenvalue = rayleigh(&centred, &vector).clamp_min(0.0);
        let projection = (vector * eigenvalue.sqrt()).reshape([batch, height, width]);
        MethodOutput {
            map: with_fixed_sign(projection),
            channel_weights: None,
            terms: None,
        }
    }
}

/// `vᵀMv` `[N, 1, 1]` for unit vectors `v` `[N, d, 1]`.
fn rayleigh(matrix: &Tensor<3>, vector: &Tensor<3>) -> Tensor<3> {
    vector
        .clone()
        .swap_dims(1, 2)
        .matmul(matrix.clone().matmul(vector.clone()))
}
