//! Reading tensors back to the host: the only place the pipeline's results leave the device.

use burn::tensor::Tensor;

use crate::error::{CamError, Result};

/// The values of any float tensor in row-major order, as `f32` (autodiff tensors included).
pub fn to_host<const D: usize>(tensor: &Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .clone()
        .inner()
        .try_into_vec_as::<f32>()
        .map_err(|e| CamError::Read(format!("{e:?}")))
}

/// Reads maps `[N, H, W]` back to the host, image after image in row-major order.
pub fn maps_to_host(maps: &Tensor<3>) -> Result<Vec<f32>> {
    to_host(maps)
}
