//! What `explain` and `evaluate` share: the device, the inputs listed before anything is
//! written, the model and its classes, and the inputs decoded batch by batch.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use ember_core::{Adapter, ClassTarget, DeviceError, Region, RegionTarget, open_device};
use ember_runtime::{LoadOptions, OnnxModel, ScoreSource};
use ember_vision::{Placement, Prepared, Preprocess, ReadPaths, load_rgb};
use image::RgbImage;

use crate::Failure;
use crate::cli::{InputArgs, ScoreKind};
use crate::input;

/// One input to explain: a name, its pictures (photos only) and its tensor.
pub struct Item {
    pub source: PathBuf,
    pub picture: Option<Picture>,
    pub tensor: Tensor<4>,
}

impl Item {
    /// The input without its tensor: what is drawn once it is explained.
    pub fn into_pictures(self) -> Shown {
        Shown {
            source: self.source,
            picture: self.picture,
        }
    }
}

/// An input's name and pictures (photos only).
pub struct Shown {
    pub source: PathBuf,
    pub picture: Option<Picture>,
}

/// What a photo looks like before and after pre-processing, for overlays.
pub struct Picture {
    /// The photo as decoded.
    pub photo: RgbImage,
    /// The resized and cropped image the network sees.
    pub shown: RgbImage,
    /// Where `shown` sits in `photo`.
    pub placement: Placement,
}

/// An input before decoding.
pub enum Source {
    /// A photo, decoded and pre-processed when its batch comes.
    Image(PathBuf),
    /// One image of the pre-processed tensor.
    Tensor { name: PathBuf, index: usize },
}

impl Source {
    pub fn name(&self) -> &Path {
        match self {
            Source::Image(file) => file,
            Source::Tensor { name, .. } => name,
        }
    }
}

/// The inputs listed (not decoded), so that every output can be checked against them before
/// anything is read or written.
pub struct Listed {
    pub device: Device,
    /// The wgpu adapter, reported with the results.
    pub adapter: Option<Adapter>,
    /// Every file and folder the run reads.
    pub read: ReadPaths,
    pub sources: Vec<Source>,
    /// The pre-processed tensor of `--input-npy`.
    tensor: Option<Tensor<4>>,
    requested_size: Option<[u32; 2]>,
}

/// The model, its class names, the target, and how inputs become tensors.
pub struct Loaded {
    pub model: OnnxModel,
    pub labels: Vec<String>,
    pub target: RunTarget,
    pub decoder: Decoder,
}

/// What a run explains: a class of a classifier's scores, or a channel of a dense output summed
/// over a region.
#[derive(Debug, Clone)]
pub enum RunTarget {
    /// `--class`, or each image's top class.
    Class(ClassTarget),
    /// `--channel` over `--region` / `--mask` (dense outputs).
    Region {
        target: RegionTarget,
        /// `x 16..48, y 8..40 of `seg``, for reports.
        described: String,
    },
}

/// Turns sources into tensors.
pub struct Decoder {
    /// How photos become tensors (`None` for pre-processed tensors).
    recipe: Option<Preprocess>,
    tensor: Option<Tensor<4>>,
    device: Device,
}

/// Checks the arguments (usage errors, exit 2), opens the device and lists the inputs (failed
/// inputs, exit 1).
pub fn list(args: &InputArgs) -> Result<Listed, Failure> {
    input::check_arguments(args)?;
    let opened = open_device(&args.device).map_err(|e| match e {
        DeviceError::Unavailable { .. } => Failure::Input(e.to_string()),
        _ => Failure::usage(e.to_string()),
    })?;
    let (device, adapter) = (opened.device, opened.adapter);
    let requested_size = args.size.as_deref().map(input::parse_size).transpose()?;
    let mut read = ReadPaths::default();
    read.files.push(("model", args.model.clone()));
    if let Some(config) = &args.preprocess_config {
        read.files.push(("pre-processing config", config.clone()));
    }
    if let Some(labels) = &args.labels {
        read.files.push(("labels", labels.clone()));
    }
    if let Some(mask) = &args.mask {
        read.files.push(("mask", mask.clone()));
    }
    let mut tensor = None;
    let sources: Vec<Source> = match &args.input_npy {
        Some(path) => {
            read.files.push(("tensor", path.clone()));
            let loaded = input::tensor_from_npy(path, &device)?;
            let batch = loaded.dims()[0];
            tensor = Some(loaded);
            (0..batch)
                .map(|index| Source::Tensor {
                    name: if batch == 1 {
                        path.clone()
                    } else {
                        PathBuf::from(format!("{}[{index}]", path.display()))
                    },
                    index,
                })
                .collect()
        }
        None => {
            let files = input::image_files(&args.image)?;
            read.folders.extend(args.image.iter().filter(|p| p.is_dir()).cloned());
            read.files.extend(files.iter().map(|f| ("input image", f.clone())));
            files.into_iter().map(Source::Image).collect()
        }
    };
    Ok(Listed {
        device,
        adapter,
        read,
        sources,
        tensor,
        requested_size,
    })
}

impl Listed {
    /// Loads the model and its class names, resolves the target (`--class`, or `--channel`
    /// over `--region` / `--mask` for a dense output, which only commands that take `dense`
    /// outputs accept), and settles the pre-processing.
    pub fn load(&mut self, args: &InputArgs, dense: bool) -> Result<Loaded, Failure> {
        let scores = match args.score {
            ScoreKind::Logits => ScoreSource::Logits,
            ScoreKind::Output => ScoreSource::Output,
        };
        let options = LoadOptions {
            input_layout: args.input_layout,
            output: args.output.clone(),
        };
        let model = OnnxModel::load_with(&args.model, &options, &self.device)?.with_scores(scores);
        // Class names: --labels, or those the file's metadata carries.
        let labels = match (&args.labels, model.class_names()) {
            (None, Some(names)) => names.to_vec(),
            (labels, _) => input::labels(labels.as_deref())?,
        };
        let target = if model.has_dense_output() {
            if !dense {
                return Err(Failure::Input(format!(
                    "{}: a dense output; this command scores class outputs only (`ember explain` explains \
                     dense outputs)",
                    model.output_description()
                )));
            }
            region_target(args, &model, &labels)?
        } else {
            if let Some(flag) = [
                ("--channel", args.channel.is_some()),
                ("--region", args.region.is_some()),
                ("--mask", args.mask.is_some()),
            ]
            .into_iter()
            .find_map(|(flag, given)| given.then_some(flag))
            {
                return Err(Failure::usage(format!(
                    "{flag} is for dense [N, K, H, W] outputs; {}: choose a class with --class",
                    model.output_description()
                )));
            }
            RunTarget::Class(match &args.class {
                Some(text) => ClassTarget::Class(input::class_index(text, &labels)?),
                None => ClassTarget::TopClass,
            })
        };
        // A tensor the user brings is in the model's layout; Ember works in [N, C, H, W].
        let tensor = self.tensor.take().map(|tensor| model.to_nchw(tensor));
        let recipe = match (&tensor, &args.preprocess_config) {
            (Some(_), _) => None,
            (None, Some(config)) => Some(input::preprocess_config(args, config)?),
            (None, None) => {
                let size = input::input_size(model.input_shape(), self.requested_size)?;
                Some(input::preprocess(args, size)?)
            }
        };
        Ok(Loaded {
            model,
            labels,
            target,
            decoder: Decoder {
                recipe,
                tensor,
                device: self.device.clone(),
            },
        })
    }
}

/// The target of a dense output: `--channel` (needed unless the output has one channel) over
/// `--region` and/or `--mask` (default: every pixel), checked against the output's declared
/// shape where it has one.
fn region_target(args: &InputArgs, model: &OnnxModel, labels: &[String]) -> Result<RunTarget, Failure> {
    let dims = model.output_shape();
    let channels = dims.get(1).copied().flatten();
    if args.class.is_some() {
        return Err(Failure::usage(format!(
            "--class chooses among class scores; {}: a dense output, explained for a --channel over \
             --region / --mask",
            model.output_description()
        )));
    }
    let channel = match (&args.channel, channels) {
        (Some(text), _) => input::class_index(text, labels).map_err(|e| e.replace("--class", "--channel"))?,
        (None, Some(1)) => 0,
        (None, _) => {
            return Err(Failure::usage(format!(
                "{}: a dense output; choose the channel to explain with --channel{}",
                model.output_description(),
                match channels {
                    Some(k) if k > 0 => format!(" (0 … {})", k - 1),
                    _ => String::new(),
                }
            )));
        }
    };
    if let Some(k) = channels.filter(|&k| channel >= k) {
        return Err(Failure::Input(format!(
            "--channel {channel} is out of range: {} ({k} channels)",
            model.output_description()
        )));
    }
    let boxed = args.region.as_deref().map(input::region).transpose()?;
    let region = match (&args.mask, &boxed) {
        (Some(path), _) => input::mask(path, boxed.as_ref())?,
        (None, Some(boxed)) => boxed.clone(),
        (None, None) => Region::Whole,
    };
    let target = RegionTarget { channel, region };
    // A region or mask that does not fit an output of known size fails before any input is read.
    if let [_, _, Some(height), Some(width)] = *dims {
        target
            .weights([height, width])
            .map_err(|e| Failure::Input(format!("{e} (`{}`)", model.output_name())))?;
    }
    let label = labels.get(channel).map_or_else(String::new, |l| format!(" {l}"));
    let place = match (&args.mask, &boxed) {
        (Some(path), Some(Region::Box { x0, y0, x1, y1 })) => {
            format!("the mask {} within x {x0}..{x1}, y {y0}..{y1}", path.display())
        }
        (Some(path), _) => format!("the mask {}", path.display()),
        (None, Some(Region::Box { x0, y0, x1, y1 })) => format!("x {x0}..{x1}, y {y0}..{y1}"),
        _ => "every pixel".to_owned(),
    };
    Ok(RunTarget::Region {
        target,
        described: format!(
            "channel {channel}{label} of `{}` summed over {place}",
            model.output_name()
        ),
    })
}

impl Decoder {
    /// How photos become tensors (`None` for pre-processed tensors).
    pub fn recipe(&self) -> Option<&Preprocess> {
        self.recipe.as_ref()
    }

    /// The decoded input, or why it cannot be read.
    pub fn load(&self, source: Source) -> Result<Item, (PathBuf, String)> {
        self.finish(self.host().decode(source)?)
    }

    /// The part of decoding that needs no device (reading, pre-processing), to run on another
    /// thread while the device works.
    pub fn host(&self) -> HostDecoder {
        HostDecoder {
            recipe: self.recipe.clone(),
        }
    }

    /// The input's tensor on the device.
    pub fn finish(&self, decoded: Decoded) -> Result<Item, (PathBuf, String)> {
        match (decoded, &self.tensor) {
            (
                Decoded::Photo {
                    source,
                    prepared,
                    photo,
                },
                _,
            ) => {
                let (tensor, shown, placement) = prepared.into_input(&self.device);
                Ok(Item {
                    source,
                    tensor,
                    picture: Some(Picture {
                        photo,
                        shown,
                        placement,
                    }),
                })
            }
            (Decoded::Tensor { name, index }, Some(tensor)) => Ok(Item {
                source: name,
                picture: None,
                tensor: tensor.clone().narrow(0, index, 1),
            }),
            (Decoded::Tensor { name, .. }, None) => Err((name, "no tensor for this input".into())),
        }
    }
}

/// An input read and pre-processed on the host, before its tensor is made.
pub enum Decoded {
    /// A photo, its network input and pictures.
    Photo {
        source: PathBuf,
        prepared: Prepared,
        photo: RgbImage,
    },
    /// One image of the pre-processed tensor (already on the device).
    Tensor { name: PathBuf, index: usize },
}

/// Decodes photos on the host: what [`Decoder`] does before the device.
#[derive(Clone)]
pub struct HostDecoder {
    recipe: Option<Preprocess>,
}

impl HostDecoder {
    /// The decoded input, or why it cannot be read.
    pub fn decode(&self, source: Source) -> Result<Decoded, (PathBuf, String)> {
        match (source, &self.recipe) {
            (Source::Image(file), Some(recipe)) => {
                match load_rgb(&file).and_then(|photo| Ok((recipe.prepare(&photo)?, photo))) {
                    Ok((prepared, photo)) => Ok(Decoded::Photo {
                        source: file,
                        prepared,
                        photo,
                    }),
                    Err(error) => Err((file, error.to_string())),
                }
            }
            (Source::Tensor { name, index }, _) => Ok(Decoded::Tensor { name, index }),
            (Source::Image(file), None) => Err((file, "no pre-processing for this input".into())),
        }
    }
}
