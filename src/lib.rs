#![doc = include_str!("../README.md")]

// Generated models call `ember_cam::tap`; this lets the bundled one do so from inside the crate.
extern crate self as ember_cam;

pub use ember_core::*;

/// Image decoding, pre-processing, colour maps and overlays.
pub use ember_vision as vision;

/// Re-exported so users need no direct burn dependency for the basics.
pub use burn;

pub mod models;

use burn::tensor::Tensor;

/// Reads maps `[N, H, W]` back to the host, image after image in row-major order.
pub fn maps_to_host(maps: &Tensor<3>) -> Result<Vec<f32>> {
    maps.clone()
        .inner()
        .try_into_vec_as::<f32>()
        .map_err(|e| CamError::Read(format!("{e:?}")))
}
