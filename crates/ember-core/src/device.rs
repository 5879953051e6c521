//! Backends by name, for command lines and configuration files.

use burn::tensor::Device;

/// Why a backend name gives no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// A known backend this build leaves out.
    #[error("the {0} backend is not built in: build with the `{0}` feature")]
    NotBuiltIn(String),
    /// Not a backend name.
    #[error("unknown device `{0}`; expected flex, ndarray or wgpu")]
    Unknown(String),
}

/// The backend command lines use when none is named: the GPU (wgpu) when this build has it,
/// flex (the CPU) otherwise.
#[cfg(feature = "wgpu")]
pub const DEFAULT_DEVICE: &str = "wgpu";
/// The backend command lines use when none is named: the GPU (wgpu) when this build has it,
/// flex (the CPU) otherwise.
#[cfg(not(feature = "wgpu"))]
pub const DEFAULT_DEVICE: &str = "flex";

/// The device of a backend named `flex` (CPU), `ndarray` (CPU) or `wgpu` (GPU; the system's
/// default adapter), as far as this build includes it.
pub fn device_named(name: &str) -> Result<Device, DeviceError> {
    match name {
        "flex" => return Ok(Device::flex()),
        // ndarray is deprecated in burn 0.22 but still a useful second CPU reference.
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => return Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        _ => {}
    }
    if matches!(name, "ndarray" | "wgpu") {
        Err(DeviceError::NotBuiltIn(name.to_owned()))
    } else {
        Err(DeviceError::Unknown(name.to_owned()))
    }
}
