//! An ONNX graph run as it is: any inputs and outputs, no taps, no classifier checks — what
//! `ember run` uses to compare the executor with onnxruntime and ONNX's own test cases.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, TensorData};
use onnx_ir::{ArgType, Message};

use crate::error::RuntimeError;
use crate::plan::{Plan, parse, schedule_releases};
use crate::value::{Float, Ints, MAX_RANK, Value};

/// A tensor on the host: float32 values, or integers (int64, int32 and bool tensors all travel
/// as `i64`, as the executor keeps them).
#[derive(Debug, Clone, PartialEq)]
pub enum HostTensor {
    /// Float values (any float type is read as float32).
    Float {
        /// Row-major values.
        values: Vec<f32>,
        /// The shape (`[]` for a scalar).
        shape: Vec<usize>,
    },
    /// Integer or boolean values.
    Int {
        /// Row-major values.
        values: Vec<i64>,
        /// The shape (`[]` for a scalar).
        shape: Vec<usize>,
    },
}

impl HostTensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            HostTensor::Float { shape, .. } | HostTensor::Int { shape, .. } => shape,
        }
    }

    fn element_count(&self) -> usize {
        match self {
            HostTensor::Float { values, .. } => values.len(),
            HostTensor::Int { values, .. } => values.len(),
        }
    }
}

/// A graph input or output as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphValue {
    /// The name in the file.
    pub name: String,
    /// Whether it holds floats (else integers or booleans).
    pub float: bool,
    /// The static shape, `None` where symbolic; empty for a scalar.
    pub shape: Vec<Option<usize>>,
}

/// An ONNX file compiled by the executor and run on whatever tensors its inputs take.
#[derive(Debug, Clone)]
pub struct OnnxGraph {
    path: PathBuf,
    plan: Plan,
    inputs: Vec<(GraphValue, usize)>,
    outputs: Vec<(GraphValue, usize)>,
}

impl OnnxGraph {
    /// Loads the file at `path`, uploading its weights to `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, RuntimeError> {
        let path = path.as_ref();
        let mut model = ember_onnx::read_model(path)?;
        ember_onnx::legalize::legalize(&mut model);
        let bytes = model.write_to_bytes().map_err(|e| RuntimeError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let graph = parse(path, &bytes)?;
        // onnx-ir renames values; the file's names, in the same order, are the ones users know.
        let file_graph = model.graph.get_or_default();
        let initializers: std::collections::HashSet<&str> =
            file_graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let file_inputs: Vec<&str> = file_graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|name| !initializers.contains(name))
            .collect();
        let file_outputs: Vec<&str> = file_graph.output.iter().map(|o| o.name.as_str()).collect();
        let runtime_inputs: Vec<&onnx_ir::Argument> = graph.inputs.iter().filter(|a| a.value().is_none()).collect();
        if runtime_inputs.len() != file_inputs.len() || graph.outputs.len() != file_outputs.len() {
            return Err(RuntimeError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "onnx-ir sees {} inputs and {} outputs where the file declares {} and {}",
                    runtime_inputs.len(),
                    graph.outputs.len(),
                    file_inputs.len(),
                    file_outputs.len()
                ),
            });
        }
        let describe = |name: &str, ty: &ArgType| GraphValue {
            name: name.to_owned(),
            float: match ty {
                ArgType::Tensor(t) => t.dtype.is_float(),
                ArgType::ScalarTensor(d) | ArgType::ScalarNative(d) => d.is_float(),
                ArgType::Shape(_) => false,
            },
            shape: match ty {
                ArgType::Tensor(t) => t.static_shape.clone().unwrap_or_else(|| vec![None; t.rank]),
                ArgType::Shape(_) => vec![None],
                _ => Vec::new(),
            },
        };
        let input_values: Vec<GraphValue> = runtime_inputs
            .iter()
            .zip(&file_inputs)
            .map(|(arg, name)| describe(name, &arg.ty))
            .collect();
        let output_values: Vec<(GraphValue, String)> = graph
            .outputs
            .iter()
            .zip(&file_outputs)
            .map(|(arg, name)| (describe(name, &arg.ty), arg.name.clone()))
            .collect();
        let names: Vec<String> = runtime_inputs.iter().map(|a| a.name.clone()).collect();
        let mut plan = Plan::compile(path, &model, graph.nodes, &names, device)?;
        let mut outputs = Vec::with_capacity(output_values.len());
        for (value, internal) in output_values {
            let slot = *plan.slot_of.get(&internal).ok_or_else(|| RuntimeError::Parse {
                path: path.to_path_buf(),
                message: format!("the output `{}` is not computed by any node", value.name),
            })?;
            outputs.push((value, slot));
        }
        let keep: Vec<Option<usize>> = outputs.iter().map(|(_, slot)| Some(*slot)).collect();
        schedule_releases(&mut plan.steps, &keep);
        let inputs = input_values
            .into_iter()
            .zip(names.iter().map(|n| plan.slot_of[n]))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            plan,
            inputs,
            outputs,
        })
    }

    /// The inputs to give, in the file's order.
    pub fn inputs(&self) -> Vec<&GraphValue> {
        self.inputs.iter().map(|(value, _)| value).collect()
    }

    /// The outputs, in the file's order.
    pub fn outputs(&self) -> Vec<&GraphValue> {
        self.outputs.iter().map(|(value, _)| value).collect()
    }

    /// Runs the graph on one tensor per input (in [`OnnxGraph::inputs`]'s order); returns one
    /// per output. Each tensor must have its input's kind (float or integer) and static sizes.
    pub fn run(&self, tensors: Vec<HostTensor>, device: &Device) -> Result<Vec<HostTensor>, RuntimeError> {
        let bad = |message: String| RuntimeError::BadInput {
            path: self.path.clone(),
            message,
        };
        if tensors.len() != self.inputs.len() {
            return Err(bad(format!(
                "the graph takes {} inputs, {} given",
                self.inputs.len(),
                tensors.len()
            )));
        }
        let mut values = Vec::with_capacity(tensors.len());
        for ((declared, slot), tensor) in self.inputs.iter().zip(tensors) {
            let shape = tensor.shape().to_vec();
            let fits = shape.len() == declared.shape.len()
                && declared
                    .shape
                    .iter()
                    .zip(&shape)
                    .all(|(d, s)| d.is_none_or(|d| d == *s));
            if !fits {
                return Err(bad(format!(
                    "input `{}` is {}, the graph declares {}",
                    declared.name,
                    ember_core::describe_dims(&shape.iter().map(|&d| Some(d)).collect::<Vec<_>>()),
                    ember_core::describe_dims(&declared.shape)
                )));
            }
            if shape.iter().product::<usize>() != tensor.element_count() {
                return Err(bad(format!("input `{}` has the wrong number of values", declared.name)));
            }
            if shape.len() > MAX_RANK {
                return Err(bad(format!(
                    "input `{}` has rank {}, above the executor's {MAX_RANK}",
                    declared.name,
                    shape.len()
                )));
            }
            let value = match (tensor, declared.float) {
                (HostTensor::Float { values, shape }, true) => {
                    Value::Float(Float::from_data(TensorData::new(values, shape), device).map_err(&bad)?)
                }
                (HostTensor::Int { values, shape }, false) => Value::Ints(Ints { values, shape }),
                (HostTensor::Float { .. }, false) => {
                    return Err(bad(format!("input `{}` takes integers, floats given", declared.name)));
                }
                (HostTensor::Int { .. }, true) => {
                    return Err(bad(format!("input `{}` takes floats, integers given", declared.name)));
                }
            };
            values.push((*slot, value));
        }
        let slots = self.plan.execute(values, device)?;
        self.outputs
            .iter()
            .map(|(declared, slot)| {
                // Cloned: two outputs may name one value.
                let value = slots[*slot].clone();
                let failed = |message: String| RuntimeError::Node {
                    node: declared.name.clone(),
                    op: "output".into(),
                    message,
                };
                match value {
                    Some(Value::Float(float)) => {
                        let shape = float.shape();
                        let values = float
                            .tensor
                            .into_data()
                            .convert::<f32>()
                            .try_into_vec::<f32>()
                            .map_err(|e| failed(format!("{e:?}")))?;
                        Ok(HostTensor::Float { values, shape })
                    }
                    Some(Value::Ints(ints)) => Ok(HostTensor::Int {
                        values: ints.values,
                        shape: ints.shape,
                    }),
                    None => Err(failed("the output was not computed".into())),
                }
            })
            .collect()
    }
}
