//! Backends by name, for command lines and configuration files, and the adapter a wgpu device
//! runs on.

use burn::tensor::Device;

/// Why a backend name gives no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// A known backend this build leaves out.
    #[error("the {0} backend is not built in: build with the `{1}` feature")]
    NotBuiltIn(String, &'static str),
    /// Not a backend name.
    #[error("unknown device `{0}`; expected one of {names}", names = device_names().join(", "))]
    Unknown(String),
    /// The backend is built in but no adapter of it starts on this machine.
    #[error("the {name} device cannot start: {message}")]
    Unavailable {
        /// The device name.
        name: String,
        /// The backend's reason.
        message: String,
    },
}

/// The device names [`open_device`] knows, with what each is, in the order help texts list
/// them.
pub const DEVICES: &[(&str, &str)] = &[
    ("flex", "the CPU (Burn's flex backend)"),
    ("ndarray", "the CPU (ndarray; `ndarray` feature)"),
    (
        "wgpu",
        "the GPU through wgpu, on the graphics API it prefers (`wgpu` feature)",
    ),
    ("wgpu-vulkan", "wgpu on Vulkan"),
    ("wgpu-gl", "wgpu on OpenGL (EGL)"),
    ("wgpu-metal", "wgpu on Metal"),
    ("wgpu-dx12", "wgpu on DirectX 12"),
];

/// The names of [`DEVICES`].
pub fn device_names() -> Vec<&'static str> {
    DEVICES.iter().map(|(name, _)| *name).collect()
}

/// The backend command lines use when none is named: the GPU (wgpu) when this build has it,
/// flex (the CPU) otherwise.
#[cfg(feature = "wgpu")]
pub const DEFAULT_DEVICE: &str = "wgpu";
/// The backend command lines use when none is named: the GPU (wgpu) when this build has it,
/// flex (the CPU) otherwise.
#[cfg(not(feature = "wgpu"))]
pub const DEFAULT_DEVICE: &str = "flex";

/// The graphics adapter a wgpu device runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The adapter's name (`NVIDIA H200`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// The graphics API (`Vulkan`, `Gl`, `Metal`, `Dx12`).
    pub graphics_api: String,
    /// Whether it is a CPU rasteriser (Mesa's llvmpipe/lavapipe, WARP, SwiftShader).
    pub software: bool,
}

impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.name, self.graphics_api)?;
        if self.software {
            write!(f, ", a software rasteriser")?;
        }
        Ok(())
    }
}

/// A device, and for wgpu the adapter it runs on.
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    /// The device to put tensors on.
    pub device: Device,
    /// The wgpu adapter (`None` for the CPU backends).
    pub adapter: Option<Adapter>,
}

/// The device of a backend named in [`DEVICES`], as far as this build includes it.
pub fn device_named(name: &str) -> Result<Device, DeviceError> {
    open_device(name).map(|opened| opened.device)
}

/// The device named `name` (see [`DEVICES`]) and, for wgpu, its adapter. A wgpu device is set
/// up once per graphics API and process; later calls return the same device.
pub fn open_device(name: &str) -> Result<OpenedDevice, DeviceError> {
    match name {
        "flex" => Ok(OpenedDevice {
            device: Device::flex(),
            adapter: None,
        }),
        // ndarray is deprecated in burn 0.22 but still a useful second CPU reference.
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(OpenedDevice {
            device: Device::ndarray(),
            adapter: None,
        }),
        #[cfg(feature = "wgpu")]
        "wgpu" | "wgpu-vulkan" | "wgpu-gl" | "wgpu-metal" | "wgpu-dx12" => wgpu::open(name),
        #[cfg(not(feature = "ndarray"))]
        "ndarray" => Err(DeviceError::NotBuiltIn(name.to_owned(), "ndarray")),
        _ if DEVICES.iter().any(|(known, _)| *known == name) => Err(DeviceError::NotBuiltIn(name.to_owned(), "wgpu")),
        _ => Err(DeviceError::Unknown(name.to_owned())),
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use std::sync::Mutex;

    use burn::tensor::wgpu::{WgpuBackend, WgpuInitError, wgpu::DeviceType};
    use burn::tensor::{Device, DeviceKind};

    use super::{Adapter, DeviceError, OpenedDevice};

    /// The devices set up so far, by graphics API: burn sets a runtime up once per process.
    static OPENED: Mutex<Vec<(WgpuBackend, OpenedDevice)>> = Mutex::new(Vec::new());

    pub fn open(name: &str) -> Result<OpenedDevice, DeviceError> {
        let api = match name {
            "wgpu-vulkan" => WgpuBackend::Vulkan,
            "wgpu-gl" => WgpuBackend::Gl,
            "wgpu-metal" => WgpuBackend::Metal,
            "wgpu-dx12" => WgpuBackend::Dx12,
            _ => WgpuBackend::Auto,
        };
        let mut opened = OPENED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, device)) = opened.iter().find(|(known, _)| *known == api) {
            return Ok(device.clone());
        }
        let options = Device::wgpu_options().device_kind(DeviceKind::DefaultDevice);
        let options = if api == WgpuBackend::Auto {
            options
        } else {
            options.graphics_api(api)
        };
        let device = match options.init_with_setup() {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                OpenedDevice {
                    device,
                    adapter: Some(Adapter {
                        name: info.name,
                        graphics_api: format!("{:?}", info.backend),
                        software: info.device_type == DeviceType::Cpu,
                    }),
                }
            }
            // Something else in this process (a tensor on `Device::wgpu`) set the default
            // runtime up first: it is the same device, its adapter unknown here.
            Err(WgpuInitError::Registration { .. }) if api == WgpuBackend::Auto => OpenedDevice {
                device: Device::wgpu(DeviceKind::DefaultDevice),
                adapter: None,
            },
            Err(error) => {
                return Err(DeviceError::Unavailable {
                    name: name.to_owned(),
                    message: error.to_string(),
                });
            }
        };
        opened.push((api, device.clone()));
        Ok(device)
    }
}
