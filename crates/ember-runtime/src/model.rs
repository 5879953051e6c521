//! The loaded model: a plan of steps over value slots.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use ember_core::{
    CamModel, FinalActivation, LayerInfo, Layout, ScoreSource, SpatialLayout, check_input_chw, describe_dims,
};
use ember_onnx::TappedGraph;
use onnx_ir::{ArgType, Message};

use crate::error::RuntimeError;
use crate::plan::{Op, Plan, panic_message, parse, schedule_releases};
use crate::value::{Float, Value};

/// What [`OnnxModel::load_with`] is told that the file does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The input's layout, for graphs whose input shape and nodes do not tell (`[N, ?, ?, ?]`).
    pub input_layout: Option<SpatialLayout>,
    /// The graph output explained, by its name in the file, for graphs with several (default:
    /// the first).
    pub output: Option<String>,
}

/// An ONNX image classifier interpreted over Burn tensors, with a tap after every spatial
/// layer. Implements [`CamModel`].
#[derive(Debug, Clone)]
pub struct OnnxModel {
    path: PathBuf,
    /// The compiled graph; the input is slot 0.
    plan: Plan,
    output_slot: usize,
    /// The output of the score tap (the logits), if the graph ends in an activation.
    logits_slot: Option<usize>,
    final_activation: Option<FinalActivation>,
    scores: ScoreSource,
    layers: Vec<LayerInfo>,
    default_layer: String,
    /// Whether the output is dense, `[N, K, H, W]` (see [`OnnxModel::dense`]).
    dense_output: bool,
    /// `the output `name` is a rank-4 F32 tensor [N, 3, 64, 64]`, for messages.
    output_description: String,
    /// The output's name in the file.
    output_name: String,
    /// The output's static shape (`None` where dynamic).
    output_shape: Vec<Option<usize>>,
    /// Every output of the graph in the file, by name.
    graph_outputs: Vec<String>,
    /// The input's static shape as Ember feeds it, `[N, C, H, W]`.
    input_shape: Vec<Option<usize>>,
    /// The input's static shape as the graph declares it.
    graph_input_shape: Vec<Option<usize>>,
    /// The graph input's layout (`None`: undecided; explaining fails until it is given).
    input_layout: Option<Layout>,
    /// Class names from the file's metadata.
    class_names: Option<Vec<String>>,
    device: Device,
}

impl OnnxModel {
    /// Loads the model at `path`, uploading its weights to `device`. Whether the input is
    /// channels-first or channels-last is decided from its shape and the graph (see
    /// [`OnnxModel::input_layout`]); [`CamModel::forward`] always takes `[N, C, H, W]`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, RuntimeError> {
        Self::load_as(path, None, device)
    }

    /// [`OnnxModel::load`] with the input's layout given, for models whose input shape and graph
    /// do not tell (`[N, ?, ?, ?]` inputs).
    pub fn load_as(
        path: impl AsRef<Path>,
        input_layout: Option<SpatialLayout>,
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        let options = LoadOptions {
            input_layout,
            ..LoadOptions::default()
        };
        Self::load_with(path, &options, device)
    }

    /// [`OnnxModel::load`] with what the file does not say given in `options`: the input's
    /// layout, the output to explain.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions, device: &Device) -> Result<Self, RuntimeError> {
        let path = path.as_ref();
        let input_layout = options.input_layout.map(Layout::from);
        let mut model = ember_onnx::read_model(path)?;
        ember_onnx::legalize::legalize(&mut model);
        let graph_outputs = ember_onnx::output_names(&model);
        if let Some(output) = &options.output {
            ember_onnx::select_output(&mut model, output, path)?;
        }
        // onnx-ir is given arbitrary files: a panic in it must become an error, not a crash.
        let tapped = catch_unwind(|| ember_onnx::tap_model_as(model, path, input_layout)).map_err(|panic| {
            RuntimeError::Parse {
                path: path.to_path_buf(),
                message: panic_message(&panic),
            }
        })??;
        let bytes = tapped.model.write_to_bytes().map_err(|e| RuntimeError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let graph = parse(path, &bytes)?;
        let mut model = Self::plan(path, &tapped, graph, device)?;
        model.graph_outputs = graph_outputs;
        Ok(model)
    }

    fn plan(
        path: &Path,
        tapped: &TappedGraph,
        graph: onnx_ir::OnnxGraph,
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        let not_classifier = |message: String| RuntimeError::NotAClassifier {
            path: path.to_path_buf(),
            message,
        };
        let runtime_inputs: Vec<_> = graph.inputs.iter().filter(|a| a.value().is_none()).collect();
        let names: Vec<String> = runtime_inputs.iter().map(|a| a.name.clone()).collect();
        // Unsupported operators are reported before anything else.
        let mut plan = Plan::compile(path, &tapped.model, graph.nodes, &names, device)?;
        let [input] = runtime_inputs.as_slice() else {
            return Err(not_classifier(format!(
                "expected one image input, found {}",
                runtime_inputs.len()
            )));
        };
        let graph_input_shape = match &input.ty {
            ArgType::Tensor(t) if t.rank == 4 && t.dtype.is_float() => {
                t.static_shape.clone().unwrap_or_else(|| vec![None; 4])
            }
            other => {
                return Err(not_classifier(format!(
                    "the input `{}` is {}, not a float [N, C, H, W] image batch",
                    input.name,
                    describe_type(other)
                )));
            }
        };
        if graph_input_shape.contains(&Some(0)) {
            return Err(not_classifier(format!(
                "the input `{}` has an empty dimension: {}",
                input.name,
                describe_dims(&graph_input_shape)
            )));
        }
        let input_layout = tapped.input_layout;
        let input_shape = match (input_layout, graph_input_shape.as_slice()) {
            (Some(Layout::ChannelsLast), &[n, h, w, c]) => vec![n, c, h, w],
            _ => graph_input_shape.clone(),
        };
        let Some(output) = graph.outputs.first() else {
            return Err(not_classifier("the graph has no output".into()));
        };
        // onnx-ir renames values; the file's own name is the one a user knows.
        let output_name = {
            let graph = tapped.model.graph.get_or_default();
            graph.output.first().map_or(output.name.clone(), |o| {
                o.name
                    .strip_suffix(ember_onnx::TAPPED_SUFFIX)
                    .unwrap_or(&o.name)
                    .to_owned()
            })
        };
        // The file's declaration, else onnx-ir's inference, which leaves static shapes with a
        // symbolic batch unknown and gives a Resize its input's height and width (onnx-ir 0.22):
        // a dense output's height and width only ever come from the file.
        let output_shape = match &output.ty {
            ArgType::Tensor(t) => {
                let declared = declared_output_shape(&tapped.model)
                    .filter(|d| d.len() == t.rank)
                    .unwrap_or_else(|| vec![None; t.rank]);
                let inferred = t.static_shape.clone().unwrap_or_else(|| vec![None; t.rank]);
                (0..t.rank)
                    .map(|axis| {
                        let trusted = t.rank != 4 || axis < 2;
                        declared[axis].or(inferred.get(axis).copied().flatten().filter(|_| trusted))
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let output_description = match &output.ty {
            ArgType::Tensor(t) => format!(
                "the output `{output_name}` is a rank-{} {:?} tensor {}",
                t.rank,
                t.dtype,
                describe_dims(&output_shape)
            ),
            other => format!("the output `{output_name}` is {}", describe_type(other)),
        };
        let dense_output = match &output.ty {
            ArgType::Tensor(t) if t.rank == 2 && t.dtype.is_float() => {
                if t.static_shape.as_ref().and_then(|s| s.get(1).copied().flatten()) == Some(0) {
                    return Err(not_classifier("the output has 0 classes".into()));
                }
                false
            }
            // Segmentation, saliency, text detection: explained with a region target through
            // `OnnxModel::dense`.
            ArgType::Tensor(t) if t.rank == 4 && t.dtype.is_float() => true,
            _ => {
                return Err(not_classifier(format!(
                    "{output_description}, not [N, classes] class scores nor a dense [N, K, H, W] output"
                )));
            }
        };

        let output_slot = *plan
            .slot_of
            .get(&output.name)
            .ok_or_else(|| not_classifier(format!("the output `{}` is not computed by any node", output.name)))?;

        // ember-onnx put the score tap on the final activation's input: its output is the logits.
        let logits_slot = plan
            .steps
            .iter()
            .find(|step| matches!(step.op, Op::Scores))
            .and_then(|step| step.outputs.first().copied());
        let final_activation = tapped.final_activation.filter(|_| logits_slot.is_some());
        schedule_releases(&mut plan.steps, &[Some(output_slot), logits_slot]);

        let layers = tapped.layers.clone();
        Ok(Self {
            path: path.to_path_buf(),
            plan,
            output_slot,
            logits_slot,
            final_activation,
            scores: ScoreSource::default(),
            layers,
            default_layer: tapped.default_layer.clone().unwrap_or_default(),
            dense_output,
            output_description,
            graph_outputs: vec![output_name.clone()],
            output_name,
            output_shape,
            input_shape,
            graph_input_shape,
            input_layout,
            class_names: ember_onnx::class_names(&tapped.model),
            device: device.clone(),
        })
    }

    /// Chooses which output the class scores come from ([`ScoreSource::Logits`] by default).
    pub fn with_scores(mut self, scores: ScoreSource) -> Self {
        self.scores = scores;
        self
    }

    /// The Softmax, LogSoftmax or one-logit Sigmoid the graph ends in, if any: by default the
    /// scores are its input (see [`ScoreSource`]).
    pub fn final_activation(&self) -> Option<FinalActivation> {
        self.final_activation
    }

    /// Which output the class scores come from.
    pub fn score_source(&self) -> ScoreSource {
        self.scores
    }

    /// The class names stored in the file's metadata (see [`ember_onnx::class_names`]), if any.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The input's static shape as Ember feeds it, `[N, C, H, W]` whatever the graph's layout
    /// (`None` where dynamic).
    pub fn input_shape(&self) -> &[Option<usize>] {
        &self.input_shape
    }

    /// The input's static shape as the graph declares it (`[N, H, W, C]` for a channels-last
    /// graph).
    pub fn graph_input_shape(&self) -> &[Option<usize>] {
        &self.graph_input_shape
    }

    /// The graph input's layout: [`Layout::ChannelsFirst`] or [`Layout::ChannelsLast`]; `None`
    /// when neither its shape nor the graph tells (then explaining fails until it is given to
    /// [`OnnxModel::load_as`]).
    pub fn input_layout(&self) -> Option<Layout> {
        self.input_layout
    }

    /// A tensor in the graph's input layout as Ember feeds it, `[N, C, H, W]` (for tensors users
    /// bring, `--input-npy`).
    pub fn to_nchw(&self, graph_input: Tensor<4>) -> Tensor<4> {
        match self.input_layout {
            Some(Layout::ChannelsLast) => graph_input.permute([0, 3, 1, 2]),
            _ => graph_input,
        }
    }

    fn undecided_input(&self) -> RuntimeError {
        RuntimeError::InputLayoutUndecided {
            path: self.path.clone(),
            shape: describe_dims(&self.graph_input_shape),
        }
    }

    /// The batch size the graph was exported with, if it is not dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input_shape.first().copied().flatten()
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the graph on `input` (`[N, C, H, W]`, handed to the graph in its own layout): the
    /// class scores (see [`ScoreSource`]) and the graph's own output.
    pub fn run(&self, input: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>), RuntimeError> {
        if self.dense_output {
            return Err(RuntimeError::NotAClassifier {
                path: self.path.clone(),
                message: format!(
                    "{}: dense, not class scores; explain it with a region target (OnnxModel::dense)",
                    self.output_description
                ),
            });
        }
        let device = input.device();
        let values = self.execute(input)?;
        let output = read_output::<2>(&values, self.output_slot, &device)?;
        let scores = match (self.scores, self.logits_slot) {
            (ScoreSource::Logits, Some(slot)) => read_output::<2>(&values, slot, &device)?,
            _ => output.clone(),
        };
        Ok((scores, output))
    }

    /// Whether the output is dense, `[N, K, H, W]` (segmentation, saliency, text detection).
    pub fn has_dense_output(&self) -> bool {
        self.dense_output
    }

    /// The output's name in the file and its type, for messages: `the output `seg` is a
    /// rank-4 F32 tensor [N, 3, 64, 64]`.
    pub fn output_description(&self) -> &str {
        &self.output_description
    }

    /// The explained output's name in the file.
    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    /// The names of every output of the graph in the file (the explained one is chosen with
    /// [`LoadOptions::output`]).
    pub fn graph_outputs(&self) -> &[String] {
        &self.graph_outputs
    }

    /// The explained output's static shape (`None` where dynamic): `[N, classes]` or a dense
    /// `[N, K, H, W]`.
    pub fn output_shape(&self) -> &[Option<usize>] {
        &self.output_shape
    }

    /// The model as a [`CamModel`] of its dense output `[N, K, H, W]`, to explain with a
    /// [`ember_core::RegionTarget`]; `None` for a classifier.
    pub fn dense(&self) -> Option<DenseOnnxModel<'_>> {
        self.dense_output.then_some(DenseOnnxModel(self))
    }

    /// Every value of a forward pass on `input` (`[N, C, H, W]`).
    fn execute(&self, input: Tensor<4>) -> Result<Vec<Option<Value>>, RuntimeError> {
        let input = match self.input_layout {
            Some(Layout::ChannelsFirst) => input,
            Some(Layout::ChannelsLast) => input.permute([0, 2, 3, 1]),
            _ => return Err(self.undecided_input()),
        };
        let device = input.device();
        self.plan.execute(vec![(0, Value::Float(Float::new(input)))], &device)
    }
}

/// An [`OnnxModel`] with a dense output `[N, K, H, W]`, as a [`CamModel`] of that output.
#[derive(Debug, Clone, Copy)]
pub struct DenseOnnxModel<'a>(&'a OnnxModel);

impl CamModel for DenseOnnxModel<'_> {
    type Output = Tensor<4>;

    /// The dense output, or the input of the Sigmoid or Softmax it ends in (see
    /// [`OnnxModel::with_scores`]).
    fn forward(&self, input: Tensor<4>) -> ember_core::Result<Tensor<4>> {
        let device = input.device();
        let values = self.0.execute(input)?;
        let slot = match (self.0.scores, self.0.logits_slot) {
            (ScoreSource::Logits, Some(logits)) => logits,
            _ => self.0.output_slot,
        };
        Ok(read_output::<4>(&values, slot, &device)?)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.0.layers()
    }

    fn default_layer(&self) -> Option<String> {
        CamModel::default_layer(self.0)
    }

    fn check_input(&self, input: &Tensor<4>) -> ember_core::Result<()> {
        self.0.check_input(input)
    }
}

/// The shape the file declares for its (first) output, `None` where symbolic.
fn declared_output_shape(model: &onnx_ir::ModelProto) -> Option<Vec<Option<usize>>> {
    let output = model.graph.get_or_default().output.first()?;
    let shape = output.type_.as_ref()?.tensor_type().shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| usize::try_from(d.dim_value()).ok().filter(|&v| v > 0))
            .collect(),
    )
}

/// Output slot `slot` as a rank-`D` float tensor.
fn read_output<const D: usize>(
    values: &[Option<Value>],
    slot: usize,
    device: &Device,
) -> Result<Tensor<D>, RuntimeError> {
    let failed = |message: String| RuntimeError::Node {
        node: "output".into(),
        op: "-".into(),
        message,
    };
    let value = values[slot]
        .clone()
        .ok_or_else(|| failed("the output was not computed".into()))?;
    value.into_float(device).and_then(|f| f.to_rank::<D>()).map_err(failed)
}

/// `a rank-4 F32 tensor [N, 32, 4, 4]`, for messages.
fn describe_type(ty: &ArgType) -> String {
    match ty {
        ArgType::Tensor(t) => {
            let shape = t
                .static_shape
                .as_deref()
                .map_or_else(String::new, |dims| format!(" {}", describe_dims(dims)));
            format!("a rank-{} {:?} tensor{shape}", t.rank, t.dtype)
        }
        ArgType::Shape(rank) => format!("a shape of rank {rank}"),
        ArgType::ScalarTensor(dtype) | ArgType::ScalarNative(dtype) => format!("a {dtype:?} scalar"),
    }
}

impl CamModel for OnnxModel {
    type Output = Tensor<2>;

    fn forward(&self, input: Tensor<4>) -> ember_core::Result<Tensor<2>> {
        Ok(self.run(input)?.0)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.layers.clone()
    }

    fn default_layer(&self) -> Option<String> {
        Some(self.default_layer.clone())
    }

    fn check_input(&self, input: &Tensor<4>) -> ember_core::Result<()> {
        if self.input_layout.is_none() {
            return Err(self.undecided_input().into());
        }
        check_input_chw(input, self.input_shape.get(1..).unwrap_or_default()).map_err(|error| {
            // Shapes as the user knows them: the graph's layout.
            match (error, self.input_layout) {
                (ember_core::CamError::InputShape { got, .. }, Some(Layout::ChannelsLast)) => {
                    ember_core::CamError::InputShape {
                        expected: format!("{} (channels last)", describe_dims(&self.graph_input_shape)),
                        got: vec![got[0], got[2], got[3], got[1]],
                    }
                }
                (error, _) => error,
            }
        })?;
        // Exports without a dynamic batch axis bake the batch size into reshapes.
        match self.fixed_batch() {
            Some(fixed) if fixed != input.dims()[0] => Err(ember_core::CamError::InputShape {
                expected: format!(
                    "{} (this export fixes the batch size at {fixed}; export with a dynamic batch axis for others)",
                    describe_dims(&self.graph_input_shape)
                ),
                got: input.dims().to_vec(),
            }),
            _ => Ok(()),
        }
    }
}
