//! One test per operator of the table: small ONNX graphs built here, parsed by onnx-ir,
//! compiled through [`super::compile`] and run, against values worked out by hand (or by the
//! ONNX specification's formula on a few numbers).

use std::collections::HashMap;

use burn::tensor::{Device, TensorData};
use onnx_ir::{
    AttributeProto, AttributeType, Message, ModelProto, NodeProto, OnnxGraphBuilder, TensorProto, TypeProto,
    ValueInfoProto,
};

use super::{CompileError, LEGALIZED, OPERATORS, compile, supported};
use crate::value::{Float, Ints, Value};

/// A graph under construction.
struct Graph {
    model: ModelProto,
    runtime: Vec<Value>,
}

impl Graph {
    fn new() -> Self {
        let mut model = ModelProto::new();
        model.ir_version = 8;
        model.opset_import.push(Default::default());
        model.opset_import[0].version = 17;
        model.graph.mut_or_insert_default().name = "test".into();
        Self {
            model,
            runtime: Vec::new(),
        }
    }

    fn opset(mut self, version: i64) -> Self {
        self.model.opset_import[0].version = version;
        self
    }

    /// Declares a graph input of known rank and symbolic sizes, as a model with dynamic axes
    /// does: onnx-ir then cannot fold shape arithmetic away, so the kernels run.
    fn declare(&mut self, name: &str, elem_type: i32, shape: &[usize]) {
        self.declare_dims(name, elem_type, shape, false);
    }

    fn declare_dims(&mut self, name: &str, elem_type: i32, shape: &[usize], fixed: bool) {
        let mut info = ValueInfoProto::new();
        info.name = name.into();
        let mut ty = TypeProto::new();
        let tensor = ty.mut_tensor_type();
        tensor.elem_type = elem_type;
        let dims = &mut tensor.shape.mut_or_insert_default().dim;
        for (axis, &size) in shape.iter().enumerate() {
            dims.push(Default::default());
            let dim = dims.last_mut().unwrap();
            if fixed {
                dim.set_dim_value(size as i64);
            } else {
                dim.set_dim_param(format!("{name}_{axis}"));
            }
        }
        info.type_ = Some(ty).into();
        self.model.graph.mut_or_insert_default().input.push(info);
    }

    /// A float32 graph input given at run time.
    fn input(mut self, name: &str, values: &[f32], shape: &[usize]) -> Self {
        self.declare(name, 1, shape);
        let data = TensorData::new(values.to_vec(), shape.to_vec());
        self.runtime
            .push(Value::Float(Float::from_data(data, &device()).unwrap()));
        self
    }

    /// A float32 graph input of static shape (for operators whose output rank depends on sizes).
    fn input_fixed(mut self, name: &str, values: &[f32], shape: &[usize]) -> Self {
        self.declare_dims(name, 1, shape, true);
        let data = TensorData::new(values.to_vec(), shape.to_vec());
        self.runtime
            .push(Value::Float(Float::from_data(data, &device()).unwrap()));
        self
    }

    /// An int64 graph input given at run time (shapes, axes computed by the graph).
    fn input_ints(mut self, name: &str, values: &[i64], shape: &[usize]) -> Self {
        self.declare(name, 7, shape);
        self.runtime.push(Value::Ints(Ints {
            values: values.to_vec(),
            shape: shape.to_vec(),
        }));
        self
    }

    /// An initializer of ONNX type `data_type`, its values filled in by `fill`.
    fn initializer(mut self, name: &str, data_type: i32, shape: &[usize], fill: impl FnOnce(&mut TensorProto)) -> Self {
        let mut tensor = TensorProto::new();
        tensor.name = name.into();
        tensor.data_type = data_type;
        tensor.dims = shape.iter().map(|&d| d as i64).collect();
        fill(&mut tensor);
        self.model.graph.mut_or_insert_default().initializer.push(tensor);
        self
    }

    /// A float32 initializer.
    fn weight(self, name: &str, values: &[f32], shape: &[usize]) -> Self {
        self.initializer(name, 1, shape, |t| t.float_data = values.to_vec())
    }

    /// An int64 initializer.
    fn ints(self, name: &str, values: &[i64], shape: &[usize]) -> Self {
        self.initializer(name, 7, shape, |t| t.int64_data = values.to_vec())
    }

    fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> Self {
        let mut node = NodeProto::new();
        node.name = format!("{op}_{}", self.model.graph.get_or_default().node.len());
        node.op_type = op.into();
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = outputs.iter().map(|s| s.to_string()).collect();
        node.attribute = attributes;
        self.model.graph.mut_or_insert_default().node.push(node);
        self
    }

    fn output(mut self, name: &str) -> Self {
        let mut info = ValueInfoProto::new();
        info.name = name.into();
        self.model.graph.mut_or_insert_default().output.push(info);
        self
    }

    /// Parses the graph with onnx-ir, compiles every node through the table and runs it.
    fn try_run(self) -> Result<Vec<Value>, String> {
        let bytes = self.model.write_to_bytes().map_err(|e| e.to_string())?;
        let graph = std::panic::catch_unwind(|| OnnxGraphBuilder::new().parse_bytes(&bytes))
            .map_err(|_| "onnx-ir panicked while parsing".to_owned())?
            .map_err(|e| format!("onnx-ir: {e}"))?;
        let mut values: HashMap<String, Value> = HashMap::new();
        let runtime_inputs = graph.inputs.iter().filter(|a| a.value().is_none());
        for (arg, value) in runtime_inputs.zip(self.runtime) {
            values.insert(arg.name.clone(), value);
        }
        for node in &graph.nodes {
            let kernel = compile(node).map_err(|e| match e {
                CompileError::Unsupported => format!("{} is not in the table", node.node_type()),
                CompileError::Invalid(message) => message,
            })?;
            let mut inputs = Vec::new();
            for arg in node.inputs() {
                inputs.push(
                    if let Some(v) = values.get(&arg.name).filter(|_| !arg.name.is_empty()) {
                        Some(v.clone())
                    } else if let Some(data) = arg.value() {
                        Some(Value::from_data(data, &device())?)
                    } else {
                        None
                    },
                );
            }
            let outputs = kernel(inputs, &device())?;
            for (arg, value) in node.outputs().iter().zip(outputs) {
                values.insert(arg.name.clone(), value);
            }
        }
        graph
            .outputs
            .iter()
            .map(|o| {
                values
                    .get(&o.name)
                    .cloned()
                    .ok_or_else(|| format!("output {} not computed", o.name))
            })
            .collect()
    }

    /// onnx-ir's node types for the graph, in order (to check which kernel a test exercises).
    fn node_types(&self) -> Vec<String> {
        let bytes = self.model.write_to_bytes().unwrap();
        let graph = OnnxGraphBuilder::new().parse_bytes(&bytes).unwrap();
        graph.nodes.iter().map(|n| n.node_type().to_string()).collect()
    }

    fn run(self) -> Vec<Value> {
        self.try_run().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The single float output: values and shape.
    fn run_float(self) -> (Vec<f32>, Vec<usize>) {
        floats(&self.run()[0])
    }
}

fn device() -> Device {
    Device::flex()
}

fn floats(value: &Value) -> (Vec<f32>, Vec<usize>) {
    match value {
        Value::Float(f) => (f.tensor.clone().try_into_vec_as::<f32>().unwrap(), f.shape()),
        Value::Ints(i) => panic!("expected floats, got integers {:?}", i.values),
    }
}

fn ints_of(value: &Value) -> (Vec<i64>, Vec<usize>) {
    match value {
        Value::Ints(i) => (i.values.clone(), i.shape.clone()),
        Value::Float(f) => panic!("expected integers, got floats of shape {:?}", f.shape()),
    }
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{got:?} vs {want:?}");
    }
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

fn attr_float(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = value;
    a
}

fn attr_string(name: &str, value: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = value.as_bytes().to_vec().into();
    a
}

/// A float op with one runtime input `x` of `shape` and optional constants, one output.
fn unary(op: &str, x: &[f32], attributes: Vec<AttributeProto>) -> Vec<f32> {
    Graph::new()
        .input("x", x, &[x.len()])
        .node(op, &["x"], &["y"], attributes)
        .output("y")
        .run_float()
        .0
}

const X: [f32; 5] = [-2.0, -0.5, 0.0, 0.5, 3.0];
const POSITIVE: [f32; 4] = [0.25, 1.0, 2.0, 9.0];

#[test]
fn the_table_has_each_onnx_name_once_per_node_type() {
    // 128 entries: Gemm twice (onnx-ir's Gemm, and its Linear for constant weights), Conv,
    // ConvTranspose, MaxPool and AveragePool twice (2-D and 1-D); Resize, Attention and
    // SpaceToDepth are also among the legalized operators, Upsample and RMSNormalization only
    // there.
    let names = supported();
    assert_eq!(OPERATORS.len(), 128);
    assert_eq!(names.len(), 125, "{names:?}");
    // The legalized nodes are exactly those ember-onnx types for onnx-ir.
    let legalized: Vec<&str> = LEGALIZED.iter().map(|(name, _)| *name).collect();
    assert_eq!(legalized, ember_onnx::legalize::LEGALIZED_OPS);
    for (i, a) in OPERATORS.iter().enumerate() {
        for b in &OPERATORS[i + 1..] {
            assert!(a.node_type != b.node_type, "{} is in the table twice", a.node_type);
        }
    }
}

#[test]
fn arithmetic_broadcasts_like_numpy() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [10.0, 20.0, 30.0];
    let run = |op: &str| {
        Graph::new()
            .input("x", &x, &[2, 3])
            .weight("b", &b, &[3])
            .node(op, &["x", "b"], &["y"], vec![])
            .output("y")
            .run_float()
    };
    let expect = |f: fn(f32, f32) -> f32| -> Vec<f32> { (0..6).map(|i| f(x[i], b[i % 3])).collect() };
    for (op, f) in [
        ("Add", (|a, b| a + b) as fn(f32, f32) -> f32),
        ("Sub", |a, b| a - b),
        ("Mul", |a, b| a * b),
        ("Div", |a, b| a / b),
        ("Pow", |a: f32, b: f32| a.powf(b / 10.0)),
    ] {
        let (got, shape) = if op == "Pow" {
            Graph::new()
                .input("x", &x, &[2, 3])
                .weight("b", &[1.0, 2.0, 3.0], &[3])
                .node("Pow", &["x", "b"], &["y"], vec![])
                .output("y")
                .run_float()
        } else {
            run(op)
        };
        assert_eq!(shape, [2, 3], "{op}");
        close(&got, &expect(f));
    }
    // Shapes that do not broadcast are an error, not a panic.
    let error = Graph::new()
        .input("x", &x, &[2, 3])
        .input("b", &[1.0, 2.0], &[2])
        .node("Add", &["x", "b"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("broadcast"), "{error}");
}

#[test]
fn integer_shape_arithmetic_stays_exact_on_the_host() {
    let out = Graph::new()
        .input("x", &[0.0; 24], &[2, 3, 4])
        .ints("two", &[2], &[1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Mul", &["s", "two"], &["y"], vec![])
        .output("y")
        .run();
    assert_eq!(ints_of(&out[0]), (vec![4, 6, 8], vec![3]));
    let overflow = Graph::new()
        .input("x", &[0.0; 24], &[2, 3, 4])
        .ints("big", &[i64::MAX], &[1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Mul", &["s", "big"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(overflow.contains("overflow"), "{overflow}");
}

#[test]
fn unary_maths_follows_the_formulas() {
    close(&unary("Neg", &X, vec![]), &X.map(|v| -v));
    close(&unary("Abs", &X, vec![]), &X.map(f32::abs));
    close(&unary("Sqrt", &POSITIVE, vec![]), &POSITIVE.map(f32::sqrt));
    close(&unary("Exp", &X, vec![]), &X.map(f32::exp));
    close(&unary("Log", &POSITIVE, vec![]), &POSITIVE.map(f32::ln));
    close(&unary("Reciprocal", &POSITIVE, vec![]), &POSITIVE.map(|v| 1.0 / v));
    close(&unary("Tanh", &X, vec![]), &X.map(f32::tanh));
    // erf(±0.5) = ±0.5204999, erf(3) = 0.9999779, erf(-2) = -0.9953223.
    close(
        &unary("Erf", &X, vec![]),
        &[-0.995_322_3, -0.520_499_9, 0.0, 0.520_499_9, 0.999_977_9],
    );
}

#[test]
fn activations_follow_the_onnx_definitions() {
    close(&unary("Relu", &X, vec![]), &X.map(|v| v.max(0.0)));
    close(
        &unary("LeakyRelu", &X, vec![attr_float("alpha", 0.1)]),
        &X.map(|v| if v < 0.0 { 0.1 * v } else { v }),
    );
    close(&unary("Sigmoid", &X, vec![]), &X.map(|v| 1.0 / (1.0 + (-v).exp())));
    close(
        &unary(
            "HardSigmoid",
            &X,
            vec![attr_float("alpha", 0.25), attr_float("beta", 0.5)],
        ),
        &X.map(|v| (0.25 * v + 0.5).clamp(0.0, 1.0)),
    );
    close(
        &unary("HardSwish", &X, vec![]),
        &X.map(|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
    );
    // Gelu (opset 20): x·Φ(x) with Φ from erf: at -2, -0.5, 0, 0.5, 3.
    let gelu = Graph::new()
        .opset(20)
        .input("x", &X, &[5])
        .node("Gelu", &["x"], &["y"], vec![])
        .output("y")
        .run_float()
        .0;
    close(&gelu, &[-0.045_500_26, -0.154_268_7, 0.0, 0.345_731_3, 2.995_950_5]);
    // PRelu with a per-channel slope on [1, 2, 2].
    let prelu = Graph::new()
        .input("x", &[-1.0, 2.0, -3.0, 4.0], &[1, 2, 2])
        .weight("slope", &[0.5, 0.25], &[2, 1])
        .node("PRelu", &["x", "slope"], &["y"], vec![])
        .output("y")
        .run_float();
    assert_eq!(prelu.1, [1, 2, 2]);
    close(&prelu.0, &[-0.5, 2.0, -0.75, 4.0]);
    // Clip with bounds as inputs (opset 11+), and with only a minimum.
    let clip = Graph::new()
        .input("x", &X, &[5])
        .weight("lo", &[-1.0], &[])
        .weight("hi", &[1.0], &[])
        .node("Clip", &["x", "lo", "hi"], &["y"], vec![])
        .output("y")
        .run_float()
        .0;
    close(&clip, &[-1.0, -0.5, 0.0, 0.5, 1.0]);
    let clip_min = Graph::new()
        .input("x", &X, &[5])
        .weight("lo", &[0.0], &[])
        .node("Clip", &["x", "lo"], &["y"], vec![])
        .output("y")
        .run_float()
        .0;
    close(&clip_min, &X.map(|v| v.max(0.0)));
}

#[test]
fn softmax_and_log_softmax_normalise_along_the_axis() {
    let x = [1.0, 2.0, 3.0, 1.0, 1.0, 1.0];
    let softmax = Graph::new()
        .input("x", &x, &[2, 3])
        .node("Softmax", &["x"], &["y"], vec![attr_int("axis", -1)])
        .output("y")
        .run_float()
        .0;
    let total: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
    let row0: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp() / total).collect();
    close(&softmax, &[row0[0], row0[1], row0[2], 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    let log = Graph::new()
        .input("x", &x, &[2, 3])
        .node("LogSoftmax", &["x"], &["y"], vec![attr_int("axis", 1)])
        .output("y")
        .run_float()
        .0;
    close(&log, &softmax.iter().map(|p| p.ln()).collect::<Vec<_>>());
}

#[test]
fn variadic_max_min_sum_mean_broadcast_over_every_input() {
    // onnx-ir takes Max and Min with two inputs, Sum and Mean with any number.
    let run = |op: &str, inputs: &[&str]| {
        Graph::new()
            .input("a", &[1.0, 5.0, 3.0], &[3])
            .input("b", &[4.0, 2.0, 6.0], &[3])
            .weight("c", &[0.5], &[1])
            .node(op, inputs, &["y"], vec![])
            .output("y")
            .run_float()
            .0
    };
    close(&run("Max", &["a", "b"]), &[4.0, 5.0, 6.0]);
    close(&run("Min", &["a", "c"]), &[0.5, 0.5, 0.5]);
    close(&run("Sum", &["a", "b", "c"]), &[5.5, 7.5, 9.5]);
    close(&run("Mean", &["a", "b", "c"]), &[5.5 / 3.0, 7.5 / 3.0, 9.5 / 3.0]);
}

#[test]
fn convolution_with_groups_padding_and_bias() {
    // One 3×3 image, two channels; a depthwise 2×2 kernel per channel, pads 1 on the right and
    // bottom only, stride 2.
    let x: Vec<f32> = (1..=18).map(|v| v as f32).collect();
    let (y, shape) = Graph::new()
        .input("x", &x, &[1, 2, 3, 3])
        .weight("w", &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0], &[2, 1, 2, 2])
        .weight("b", &[0.5, -0.5], &[2])
        .node(
            "Conv",
            &["x", "w", "b"],
            &["y"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[0, 0, 1, 1]),
                attr_int("group", 2),
            ],
        )
        .output("y")
        .run_float();
    assert_eq!(shape, [1, 2, 2, 2]);
    // Channel 0 (main diagonal): x[i][j] + x[i+1][j+1] + 0.5, zero outside.
    // Channel 1 (anti-diagonal): x[i][j+1] + x[i+1][j] − 0.5.
    close(
        &y,
        &[
            1.0 + 5.0 + 0.5,
            3.0 + 0.5,
            7.0 + 0.5,
            9.0 + 0.5,
            11.0 + 13.0 - 0.5,
            15.0 - 0.5,
            17.0 - 0.5,
            -0.5,
        ],
    );
    // Zero strides are rejected when the model loads, not when it runs.
    let error = Graph::new()
        .input("x", &x, &[1, 2, 3, 3])
        .weight("w", &[1.0; 8], &[2, 1, 2, 2])
        .node(
            "Conv",
            &["x", "w"],
            &["y"],
            vec![attr_ints("strides", &[0, 1]), attr_int("group", 2)],
        )
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("strides") || error.contains("stride"), "{error}");
}

#[test]
fn normalisations_match_their_formulas() {
    let x = [1.0, 3.0, 2.0, 6.0];
    // BatchNormalization over 2 channels of [1, 2, 2]: (x − mean)/√(var + ε)·γ + β.
    let (bn, _) = Graph::new()
        .input("x", &x, &[1, 2, 2])
        .weight("gamma", &[2.0, 1.0], &[2])
        .weight("beta", &[0.0, 1.0], &[2])
        .weight("mean", &[2.0, 4.0], &[2])
        .weight("var", &[1.0, 4.0], &[2])
        .node(
            "BatchNormalization",
            &["x", "gamma", "beta", "mean", "var"],
            &["y"],
            vec![attr_float("epsilon", 0.0)],
        )
        .output("y")
        .run_float();
    close(&bn, &[-2.0, 2.0, 0.0, 2.0]);
    // LayerNormalization over the last axis.
    let (ln, _) = Graph::new()
        .input("x", &x, &[2, 2])
        .weight("scale", &[1.0, 2.0], &[2])
        .weight("bias", &[0.5, 0.0], &[2])
        .node(
            "LayerNormalization",
            &["x", "scale", "bias"],
            &["y"],
            vec![attr_float("epsilon", 0.0)],
        )
        .output("y")
        .run_float();
    close(&ln, &[-0.5, 2.0, -0.5, 2.0]);
    // LRN, size 3 over 3 channels of 1×1: x / (bias + α/size · Σ x²)^β.
    let (lrn, _) = Graph::new()
        .input("x", &[1.0, 2.0, 3.0], &[1, 3, 1, 1])
        .node(
            "LRN",
            &["x"],
            &["y"],
            vec![
                attr_int("size", 3),
                attr_float("alpha", 3.0),
                attr_float("beta", 1.0),
                attr_float("bias", 1.0),
            ],
        )
        .output("y")
        .run_float();
    close(&lrn, &[1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0]);
}

#[test]
fn pooling_windows_and_global_pools() {
    let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let pool = |op: &str, attributes: Vec<AttributeProto>| {
        Graph::new()
            .input("x", &x, &[1, 1, 4, 4])
            .node(op, &["x"], &["y"], attributes)
            .output("y")
            .run_float()
    };
    let window = || vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])];
    assert_eq!(
        pool("MaxPool", window()),
        (vec![6.0, 8.0, 14.0, 16.0], vec![1, 1, 2, 2])
    );
    assert_eq!(
        pool("AveragePool", window()),
        (vec![3.5, 5.5, 11.5, 13.5], vec![1, 1, 2, 2])
    );
    assert_eq!(pool("GlobalAveragePool", vec![]), (vec![8.5], vec![1, 1, 1, 1]));
    assert_eq!(pool("GlobalMaxPool", vec![]), (vec![16.0], vec![1, 1, 1, 1]));
    // A dilated average pool is refused when the model loads.
    let error = Graph::new()
        .opset(19)
        .input("x", &x, &[1, 1, 4, 4])
        .node(
            "AveragePool",
            &["x"],
            &["y"],
            vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("dilations", &[2, 2])],
        )
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("dilat"), "{error}");
}

#[test]
fn gemm_linear_and_matmul_multiply() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
    let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [3, 2]
    let want = [4.0, 5.0, 10.0, 11.0];
    // Constant weights, transB = 1, α = β = 1: onnx-ir turns the Gemm into its Linear node.
    let linear_graph = || {
        Graph::new()
            .input_fixed("a", &a, &[2, 3])
            .weight("b", &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], &[2, 3])
            .weight("c", &[0.5, -0.5], &[2])
            .node(
                "Gemm",
                &["a", "b", "c"],
                &["y"],
                vec![attr_int("transB", 1), attr_float("alpha", 1.0), attr_float("beta", 1.0)],
            )
            .output("y")
    };
    assert_eq!(linear_graph().node_types(), ["Linear"]);
    let (linear, shape) = linear_graph().run_float();
    assert_eq!(shape, [2, 2]);
    close(&linear, &[4.5, 4.5, 10.5, 10.5]);
    // Both operands at run time: the Gemm node itself, with α and β.
    let gemm_graph = || {
        Graph::new()
            .input("a", &a, &[2, 3])
            .input("b", &b, &[3, 2])
            .weight("c", &[1.0], &[1])
            .node(
                "Gemm",
                &["a", "b", "c"],
                &["y"],
                vec![attr_float("alpha", 2.0), attr_float("beta", 3.0)],
            )
            .output("y")
    };
    assert!(gemm_graph().node_types().contains(&"Gemm".to_owned()));
    let (gemm, _) = gemm_graph().run_float();
    close(&gemm, &want.map(|v| 2.0 * v + 3.0));
    // MatMul with a broadcast batch axis.
    let (matmul, shape) = Graph::new()
        .input("a", &[a, a].concat(), &[2, 2, 3])
        .input("b", &b, &[3, 2])
        .node("MatMul", &["a", "b"], &["y"], vec![])
        .output("y")
        .run_float();
    assert_eq!(shape, [2, 2, 2]);
    close(&matmul, &[want, want].concat());
}

#[test]
fn einsum_contracts_transposes_takes_diagonals_and_broadcasts() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
    let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [3, 2]
    let einsum = |equation: &str, operands: &[(&str, &[f32], &[usize])]| {
        let mut graph = Graph::new().opset(12);
        for (name, values, shape) in operands {
            graph = graph.input_fixed(name, values, shape);
        }
        let names: Vec<&str> = operands.iter().map(|(name, ..)| *name).collect();
        graph
            .node("Einsum", &names, &["y"], vec![attr_string("equation", equation)])
            .output("y")
            .try_run()
            .map(|outputs| floats(&outputs[0]))
    };
    // A matrix product, [2, 3] · [3, 2].
    let (product, shape) = einsum("ij,jk->ik", &[("a", &a, &[2, 3]), ("b", &b, &[3, 2])]).unwrap();
    assert_eq!(shape, [2, 2]);
    close(&product, &[4.0, 5.0, 10.0, 11.0]);
    // A transpose, an implicit output (labels in alphabetical order), a trace to a scalar.
    let (transposed, shape) = einsum("ij->ji", &[("a", &a, &[2, 3])]).unwrap();
    assert_eq!(shape, [3, 2]);
    close(&transposed, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let (implicit, _) = einsum("ji", &[("a", &a, &[2, 3])]).unwrap();
    close(&implicit, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let square = [1.0, 2.0, 3.0, 4.0];
    let (trace, shape) = einsum("ii->", &[("m", &square, &[2, 2])]).unwrap();
    assert_eq!(shape, Vec::<usize>::new());
    close(&trace, &[5.0]);
    let (diagonal, _) = einsum("ii->i", &[("m", &square, &[2, 2])]).unwrap();
    close(&diagonal, &[1.0, 4.0]);
    // Batched products with an ellipsis: [2, 1, 3] · [3, 2] per batch.
    let (batched, shape) = einsum("...ij,jk->...ik", &[("a", &a, &[2, 1, 3]), ("b", &b, &[3, 2])]).unwrap();
    assert_eq!(shape, [2, 1, 2]);
    close(&batched, &[4.0, 5.0, 10.0, 11.0]);
    // An operand whose rank is not its subscript's (onnx-ir sees it first when ranks are
    // declared), and a bad equation: errors, not panics.
    let wrong = einsum("ijk,jk->i", &[("a", &a, &[2, 3]), ("b", &b, &[3, 2])]).unwrap_err();
    assert!(wrong.contains("rank 2"), "{wrong}");
    let bad = einsum("ij,,->", &[("a", &a, &[2, 3])]).unwrap_err();
    assert!(bad.contains("Einsum"), "{bad}");
}

#[test]
fn reductions_take_static_and_run_time_axes_negative_ones_included() {
    let x: Vec<f32> = (1..=6).map(|v| v as f32).collect(); // [2, 3]
    for (op, row_results) in [
        ("ReduceMean", [2.0, 5.0]),
        ("ReduceSum", [6.0, 15.0]),
        ("ReduceMax", [3.0, 6.0]),
        ("ReduceMin", [1.0, 4.0]),
    ] {
        // Static axes (an attribute up to opset 17 for all but ReduceSum).
        let opset = if op == "ReduceSum" { 11 } else { 17 };
        let (got, shape) = Graph::new()
            .opset(opset)
            .input("x", &x, &[2, 3])
            .node(
                op,
                &["x"],
                &["y"],
                vec![attr_ints("axes", &[-1]), attr_int("keepdims", 0)],
            )
            .output("y")
            .run_float();
        assert_eq!(shape, [2], "{op}");
        close(&got, &row_results);
        // Axes computed at run time (opset 18, a graph input): -1 is the last axis.
        let graph = Graph::new()
            .opset(18)
            .input("x", &x, &[2, 3])
            .input_ints("axes", &[-1], &[1])
            .node(op, &["x", "axes"], &["y"], vec![attr_int("keepdims", 1)])
            .output("y");
        let bytes = graph.model.write_to_bytes().unwrap();
        let parsed = OnnxGraphBuilder::new().parse_bytes(&bytes).unwrap();
        let runtime_axes = |config: &onnx_ir::node::reduce::ReduceConfig| {
            matches!(config.axes, onnx_ir::node::reduce::ReduceAxes::Runtime(_))
        };
        let is_runtime = match &parsed.nodes[0] {
            onnx_ir::Node::ReduceMean(n) => runtime_axes(&n.config),
            onnx_ir::Node::ReduceSum(n) => runtime_axes(&n.config),
            onnx_ir::Node::ReduceMax(n) => runtime_axes(&n.config),
            onnx_ir::Node::ReduceMin(n) => runtime_axes(&n.config),
            other => panic!("{op} parsed as {}", other.node_type()),
        };
        assert!(is_runtime, "{op}: the axes must reach the kernel at run time");
        let (got, shape) = graph.run_float();
        assert_eq!(shape, [2, 1], "{op} with run-time axes");
        close(&got, &row_results);
    }
}

#[test]
fn reshaping_operators_move_no_values() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let run = |op: &str, extra: Graph, inputs: &[&str], attributes: Vec<AttributeProto>| {
        extra.node(op, inputs, &["y"], attributes).output("y").run_float()
    };
    let base = || Graph::new().input("x", &x, &[2, 3, 4]);
    assert_eq!(
        run("Flatten", base(), &["x"], vec![attr_int("axis", 1)]),
        (x.clone(), vec![2, 12])
    );
    assert_eq!(
        run("Reshape", base().ints("s", &[0, -1, 2], &[3]), &["x", "s"], vec![]),
        (x.clone(), vec![2, 6, 2])
    );
    assert_eq!(
        run("Unsqueeze", base().ints("a", &[0, -1], &[2]), &["x", "a"], vec![]),
        (x.clone(), vec![1, 2, 3, 4, 1])
    );
    let squeezable = || Graph::new().input_fixed("x", &x, &[1, 2, 1, 12]);
    assert_eq!(
        run("Squeeze", squeezable().ints("a", &[2], &[1]), &["x", "a"], vec![]),
        (x.clone(), vec![1, 2, 12])
    );
    assert_eq!(run("Squeeze", squeezable(), &["x"], vec![]), (x.clone(), vec![2, 12]));
    assert_eq!(run("Identity", base(), &["x"], vec![]), (x.clone(), vec![2, 3, 4]));
    assert_eq!(run("Dropout", base(), &["x"], vec![]), (x.clone(), vec![2, 3, 4]));
    // Transpose [2, 3, 4] → [4, 2, 3]: y[k][i][j] = x[i][j][k].
    let (t, shape) = run("Transpose", base(), &["x"], vec![attr_ints("perm", &[2, 0, 1])]);
    assert_eq!(shape, [4, 2, 3]);
    assert_eq!(t[1], x[4]);
    assert_eq!(t[6 + 5], x[(3 + 2) * 4 + 1]);
    // A reshape whose target overflows is an error.
    let overflow = Graph::new()
        .input("x", &x, &[2, 3, 4])
        .input_ints("s", &[i64::MAX, i64::MAX, -1], &[3])
        .node("Reshape", &["x", "s"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(overflow.contains("reshape"), "{overflow}");
}

#[test]
fn concat_split_and_slice() {
    let (cat, shape) = Graph::new()
        .input("a", &[1.0, 2.0], &[1, 2])
        .input("b", &[3.0, 4.0, 5.0, 6.0], &[2, 2])
        .node("Concat", &["a", "b"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .run_float();
    assert_eq!((cat, shape), (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![3, 2]));
    // An axis outside the rank is an error, not a panic.
    let error = Graph::new()
        .input("a", &[1.0, 2.0], &[1, 2])
        .input("b", &[3.0, 4.0], &[1, 2])
        .node("Concat", &["a", "b"], &["y"], vec![attr_int("axis", -3)])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.starts_with("Concat axis") && error.contains("rank-2"), "{error}");

    let parts = Graph::new()
        .input("x", &[1.0, 2.0, 3.0, 4.0, 5.0], &[5])
        .ints("sizes", &[2, 3], &[2])
        .node("Split", &["x", "sizes"], &["p", "q"], vec![attr_int("axis", 0)])
        .output("p")
        .output("q")
        .run();
    assert_eq!(floats(&parts[0]), (vec![1.0, 2.0], vec![2]));
    assert_eq!(floats(&parts[1]), (vec![3.0, 4.0, 5.0], vec![3]));

    let x: Vec<f32> = (0..12).map(|v| v as f32).collect(); // [3, 4]
    let (sliced, shape) = Graph::new()
        .input("x", &x, &[3, 4])
        .ints("starts", &[1, -3], &[2])
        .ints("ends", &[3, 4], &[2])
        .ints("axes", &[0, 1], &[2])
        .ints("steps", &[1, 2], &[2])
        .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["y"], vec![])
        .output("y")
        .run_float();
    assert_eq!((sliced, shape), (vec![5.0, 7.0, 9.0, 11.0], vec![2, 2]));
}

#[test]
fn pad_modes() {
    let pad = |mode: &str| {
        Graph::new()
            .input("x", &[1.0, 2.0, 3.0], &[1, 3])
            .ints("pads", &[0, 2, 0, 1], &[4])
            .weight("value", &[9.0], &[])
            .node("Pad", &["x", "pads", "value"], &["y"], vec![attr_string("mode", mode)])
            .output("y")
            .run_float()
    };
    assert_eq!(pad("constant"), (vec![9.0, 9.0, 1.0, 2.0, 3.0, 9.0], vec![1, 6]));
    assert_eq!(pad("reflect").0, vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
    assert_eq!(pad("edge").0, vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
}

#[test]
fn shape_gather_cast_and_constants() {
    let x: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [2, 3]
    // Shape then Gather on the host: the second dimension.
    let out = Graph::new()
        .input("x", &x, &[2, 3])
        .ints("i", &[-1], &[])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "i"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .run();
    assert_eq!(ints_of(&out[0]).0, vec![3]);
    // Gather of float rows.
    let (rows, shape) = Graph::new()
        .input("x", &x, &[2, 3])
        .ints("i", &[1, 0, 1], &[3])
        .node("Gather", &["x", "i"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .run_float();
    assert_eq!(shape, [3, 3]);
    assert_eq!(rows, [3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let out_of_range = Graph::new()
        .input("x", &x, &[2, 3])
        .ints("i", &[2], &[1])
        .node("Gather", &["x", "i"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(out_of_range.contains("out of range"), "{out_of_range}");
    // Cast of host integers to floats, and ConstantOfShape with the default value 0.
    let out = Graph::new()
        .input("x", &x, &[2, 3])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Cast", &["s"], &["f"], vec![attr_int("to", 1)])
        .node("ConstantOfShape", &["s"], &["z"], vec![])
        .output("f")
        .output("z")
        .run();
    assert_eq!(floats(&out[0]), (vec![2.0, 3.0], vec![2]));
    assert_eq!(floats(&out[1]), (vec![0.0; 6], vec![2, 3]));
}

#[test]
fn gather_elements_reads_along_the_axis_with_fewer_indices_than_data() {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect(); // [3, 4]
    // Constant indices [2, 2] along axis 1: only the first two rows and a negative index.
    let (values, shape) = Graph::new()
        .input("x", &x, &[3, 4])
        .ints("i", &[3, 0, -1, 1], &[2, 2])
        .node("GatherElements", &["x", "i"], &["y"], vec![attr_int("axis", 1)])
        .output("y")
        .run_float();
    assert_eq!(shape, [2, 2]);
    assert_eq!(values, [3.0, 0.0, 7.0, 5.0]);
    // Run-time indices along axis 0, and the same on integers (on the host).
    let (values, _) = Graph::new()
        .input("x", &x, &[3, 4])
        .input_ints("i", &[2, 0, 1, 2], &[1, 4])
        .node("GatherElements", &["x", "i"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .run_float();
    assert_eq!(values, [8.0, 1.0, 6.0, 11.0]);
    let ints: Vec<i64> = (0..12).collect();
    let out = Graph::new()
        .input_ints("x", &ints, &[3, 4])
        .input_ints("i", &[2, 0, 1, 2], &[1, 4])
        .node("GatherElements", &["x", "i"], &["y"], vec![attr_int("axis", 0)])
        .output("y")
        .run();
    assert_eq!(ints_of(&out[0]), (vec![8, 1, 6, 11], vec![1, 4]));
    let out_of_range = Graph::new()
        .input("x", &x, &[3, 4])
        .input_ints("i", &[4], &[1, 1])
        .node("GatherElements", &["x", "i"], &["y"], vec![attr_int("axis", 1)])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(out_of_range.contains("out of range"), "{out_of_range}");
    // Size: the element count.
    let out = Graph::new()
        .input("x", &x, &[3, 4])
        .node("Size", &["x"], &["n"], vec![])
        .output("n")
        .run();
    assert_eq!(ints_of(&out[0]).0, vec![12]);
}

#[test]
fn constant_nodes_give_their_value() {
    let mut value = TensorProto::new();
    value.data_type = 1;
    value.dims = vec![2];
    value.float_data = vec![1.5, -2.0];
    let mut attribute = AttributeProto::new();
    attribute.name = "value".into();
    attribute.type_ = AttributeType::TENSOR.into();
    attribute.t = Some(value).into();
    let graph = Graph::new()
        .input("x", &[1.0, 1.0], &[2])
        .node("Constant", &[], &["c"], vec![attribute])
        .node("Add", &["x", "c"], &["y"], vec![])
        .output("y");
    assert_eq!(graph.run_float(), (vec![2.5, -1.0], vec![2]));
    // onnx-ir keeps Constant nodes (initializers become Constant nodes too): the helper runs
    // them through the Constant kernel, which gave the value above.
    let mut value = TensorProto::new();
    value.data_type = 1;
    value.dims = vec![1];
    value.float_data = vec![7.0];
    let mut attribute = AttributeProto::new();
    attribute.name = "value".into();
    attribute.type_ = AttributeType::TENSOR.into();
    attribute.t = Some(value).into();
    let alone = Graph::new().node("Constant", &[], &["c"], vec![attribute]).output("c");
    assert_eq!(alone.node_types(), ["Constant"]);
    assert_eq!(alone.run_float(), (vec![7.0], vec![1]));
}

#[test]
fn unknown_operators_are_not_compiled() {
    let error = Graph::new()
        .input("x", &X, &[5])
        .node("NonZero", &["x"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("not in the table"), "{error}");
}

#[test]
fn reshape_targets_copy_and_infer() {
    use super::shape::reshape_target;
    assert_eq!(reshape_target(&[2, 3, 4], &[0, -1]).unwrap(), vec![2, 12]);
    assert_eq!(reshape_target(&[2, 3, 4], &[-1, 4]).unwrap(), vec![6, 4]);
    assert!(reshape_target(&[2, 3, 4], &[5, -1]).is_err());
    assert!(reshape_target(&[2, 3, 4], &[-1, -1]).is_err());
    assert!(reshape_target(&[2, 3, 4], &[5, 5]).is_err());
}

#[test]
fn same_padding_matches_onnx() {
    use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

    use super::nn::Window;
    let window = |auto_pad| Window {
        auto_pad,
        padding: PaddingConfig2d::Valid,
        kernel: [3, 3],
        stride: [2, 2],
        dilation: [1, 1],
    };
    // 7 wide, kernel 3, stride 2: output 4, total padding 2 → 1 each side; 6 wide: output 3,
    // total padding 1 → the extra pad at the end (upper) or the beginning (lower).
    let upper = window(AutoPad::SameUpper).plan([7, 6], false).unwrap();
    assert_eq!(upper.padding, [(1, 1), (0, 1)]);
    assert_eq!((upper.padded, upper.output), ([9, 7], [4, 3]));
    let lower = window(AutoPad::SameLower).plan([7, 6], false).unwrap();
    assert_eq!(lower.padding, [(1, 1), (1, 0)]);
    assert!(
        window(AutoPad::Valid)
            .plan([2, 2], false)
            .unwrap_err()
            .contains("smaller than the window")
    );
    // ceil_mode counts a last, partial window.
    assert_eq!(window(AutoPad::Valid).plan([8, 8], true).unwrap().output, [4, 4]);
    assert_eq!(window(AutoPad::Valid).plan([8, 8], false).unwrap().output, [3, 3]);
    // Pads of 10⁹ are a size, not a crash: the budget refuses the padded input.
    let huge = Window {
        padding: PaddingConfig2d::Explicit(1_000_000_000, 1_000_000_000, 1_000_000_000, 1_000_000_000),
        ..window(AutoPad::NotSet)
    };
    let error = huge.checked_padding([1, 4, 16, 16], false).unwrap_err();
    assert!(error.contains("memory budget"), "{error}");
}

#[test]
fn integer_slices_and_transposes_follow_onnx() {
    use super::shape::{slice_ints, transpose_ints};
    // torch.onnx's F.pad export: reverse the pads pairwise with a step of -1.
    let pairs = Ints {
        values: vec![0, 0, 0, 0, 0, 1, 0, 1],
        shape: vec![4, 2],
    };
    let reversed = slice_ints(&pairs, &[-1], &[i64::MIN + 1], &[0], &[-1]).unwrap();
    assert_eq!(reversed.values, vec![0, 1, 0, 1, 0, 0, 0, 0]);
    let transposed = transpose_ints(&reversed, &[1, 0]).unwrap();
    assert_eq!(transposed.shape, vec![2, 4]);
    assert_eq!(transposed.values, vec![0, 0, 0, 0, 1, 1, 0, 0]);
    let middle = slice_ints(&Ints::vector(vec![1, 2, 3, 4]), &[1], &[-1], &[0], &[1]).unwrap();
    assert_eq!(middle.values, vec![2, 3]);
    assert!(transpose_ints(&reversed, &[0, 0]).is_err());
}

#[test]
fn negative_axes_are_normalised() {
    use super::normalise_axes;
    assert_eq!(normalise_axes(&[-1, 0], 4).unwrap(), vec![3, 0]);
    assert!(normalise_axes(&[4], 4).is_err());
    assert!(normalise_axes(&[-5], 4).is_err());
    assert!(normalise_axes(&[i64::MIN], 4).is_err());
}

/// CumSum, which ONNX's node tests cover only with data types the conformance run skips.
#[test]
fn cumulative_sums_forward_backward_inclusive_and_exclusive() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let run = |attributes: Vec<AttributeProto>| {
        Graph::new()
            .input("x", &x, &[2, 3])
            .ints("axis", &[1], &[])
            .node("CumSum", &["x", "axis"], &["y"], attributes)
            .output("y")
            .run_float()
    };
    assert_eq!(run(vec![]), (vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0], vec![2, 3]));
    assert_eq!(
        run(vec![attr_int("exclusive", 1)]),
        (vec![0.0, 1.0, 3.0, 0.0, 4.0, 9.0], vec![2, 3])
    );
    assert_eq!(
        run(vec![attr_int("reverse", 1)]),
        (vec![6.0, 5.0, 3.0, 15.0, 11.0, 6.0], vec![2, 3])
    );
    assert_eq!(
        run(vec![attr_int("reverse", 1), attr_int("exclusive", 1)]),
        (vec![5.0, 3.0, 0.0, 11.0, 6.0, 0.0], vec![2, 3])
    );
}

#[test]
fn integer_arithmetic_broadcasts_shapes_not_just_lengths() {
    // [4, 1, 1] + [1, 4, 1]: four values each, but the result is [4, 4, 1].
    let out = Graph::new()
        .input_ints("a", &[0, 1, 2, 3], &[4, 1, 1])
        .input_ints("b", &[0, 10, 20, 30], &[1, 4, 1])
        .node("Add", &["a", "b"], &["y"], vec![])
        .output("y")
        .run();
    let want: Vec<i64> = (0..4).flat_map(|i| (0..4).map(move |j| i + 10 * j)).collect();
    assert_eq!(ints_of(&out[0]), (want, vec![4, 4, 1]));
}

#[test]
fn integer_tensors_concatenate_along_any_axis() {
    let out = Graph::new()
        .input_ints("a", &[1, 2], &[2, 1, 1])
        .input_ints("b", &[3, 4, 5, 6], &[2, 1, 2])
        .node("Concat", &["a", "b"], &["y"], vec![attr_int("axis", 2)])
        .output("y")
        .run();
    assert_eq!(ints_of(&out[0]), (vec![1, 3, 4, 2, 5, 6], vec![2, 1, 3]));
    let mismatch = Graph::new()
        .input_ints("a", &[1, 2], &[2, 1, 1])
        .input_ints("b", &[3, 4, 5, 6], &[1, 4, 1])
        .node("Concat", &["a", "b"], &["y"], vec![attr_int("axis", 2)])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(mismatch.contains("cannot concatenate"), "{mismatch}");
}

#[test]
fn mod_takes_the_sign_of_the_divisor_or_with_fmod_of_the_dividend() {
    let run = |fmod: i64| {
        let out = Graph::new()
            .input_ints("a", &[-7, 7, -7, 7], &[4])
            .input_ints("b", &[3, -3, -3, 3], &[4])
            .node("Mod", &["a", "b"], &["y"], vec![attr_int("fmod", fmod)])
            .output("y")
            .run();
        ints_of(&out[0]).0
    };
    assert_eq!(run(0), vec![2, -2, -1, 1]);
    assert_eq!(run(1), vec![-1, 1, -1, 1]);
    let (floats_out, _) = Graph::new()
        .input("a", &[5.5, -5.5, 5.5], &[3])
        .weight("b", &[2.0, 2.0, -2.0], &[3])
        .node("Mod", &["a", "b"], &["y"], vec![attr_int("fmod", 1)])
        .output("y")
        .run_float();
    close(&floats_out, &[1.5, -1.5, 1.5]);
}

#[test]
fn scatter_nd_replaces_or_combines_the_indexed_slices() {
    let scatter = |reduction: &str| {
        Graph::new()
            .input("data", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[4, 2])
            .ints("indices", &[1, -1], &[2, 1])
            .weight("updates", &[10.0, 20.0, 30.0, 40.0], &[2, 2])
            .node(
                "ScatterND",
                &["data", "indices", "updates"],
                &["y"],
                vec![attr_string("reduction", reduction)],
            )
            .output("y")
            .run_float()
    };
    assert_eq!(
        scatter("none"),
        (vec![1.0, 2.0, 10.0, 20.0, 5.0, 6.0, 30.0, 40.0], vec![4, 2])
    );
    assert_eq!(
        scatter("add"),
        (vec![1.0, 2.0, 13.0, 24.0, 5.0, 6.0, 37.0, 48.0], vec![4, 2])
    );
    // Host integers, one element per index tuple.
    let out = Graph::new()
        .input_ints("data", &[0, 0, 0, 0], &[2, 2])
        .ints("indices", &[0, 1, 1, 0], &[2, 2])
        .input_ints("updates", &[7, 9], &[2])
        .node("ScatterND", &["data", "indices", "updates"], &["y"], vec![])
        .output("y")
        .run();
    assert_eq!(ints_of(&out[0]), (vec![0, 7, 9, 0], vec![2, 2]));
    let outside = Graph::new()
        .input_ints("data", &[0, 0, 0, 0], &[2, 2])
        .ints("indices", &[0, 2], &[1, 2])
        .input_ints("updates", &[7], &[1])
        .node("ScatterND", &["data", "indices", "updates"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(outside.contains("outside"), "{outside}");
}

/// Softmax of each row of `scores` `[rows, n]` times `v` `[n, d]`, on the host.
fn attend(scores: &[f32], n: usize, v: &[f32], d: usize) -> Vec<f32> {
    scores
        .chunks(n)
        .flat_map(|row| {
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|s| (s - top).exp()).collect();
            let total: f32 = e.iter().sum();
            (0..d).map(move |c| e.iter().enumerate().map(|(j, w)| w / total * v[j * d + c]).sum())
        })
        .collect()
}

#[test]
fn decomposed_attention_becomes_an_attention_node_and_computes_softmax_qk_v() {
    // One head, 2 queries, 3 keys, width 2: MatMul(Q, Transpose(K)) → Div(√2) → Softmax →
    // MatMul(·, V),
    // the legacy exporters' form, which onnx-ir's simplification fuses.
    let q = [1.0, 0.0, 0.5, -1.0];
    let k = [0.2, 0.4, -0.3, 1.0, 0.9, -0.1];
    let v = [1.0, 2.0, -1.0, 0.5, 3.0, 0.0];
    let graph = Graph::new()
        .input("q", &q, &[1, 1, 2, 2])
        .input("k", &k, &[1, 1, 3, 2])
        .input("v", &v, &[1, 1, 3, 2])
        .weight("root", &[2.0f32.sqrt()], &[])
        .node("Transpose", &["k"], &["kt"], vec![attr_ints("perm", &[0, 1, 3, 2])])
        .node("MatMul", &["q", "kt"], &["qk"], vec![])
        .node("Div", &["qk", "root"], &["scaled"], vec![])
        .node("Softmax", &["scaled"], &["p"], vec![attr_int("axis", -1)])
        .node("MatMul", &["p", "v"], &["y"], vec![])
        .output("y");
    assert!(
        graph.node_types().contains(&"Attention".to_owned()),
        "{:?}",
        graph.node_types()
    );
    let (y, shape) = graph.run_float();
    let scores: Vec<f32> = (0..2)
        .flat_map(|i| (0..3).map(move |j| (q[i * 2] * k[j * 2] + q[i * 2 + 1] * k[j * 2 + 1]) / 2.0f32.sqrt()))
        .collect();
    let expected = attend(&scores, 3, &v, 2);
    assert_eq!(shape, [1, 1, 2, 2]);
    assert!(
        y.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6),
        "{y:?} vs {expected:?}"
    );
}

#[test]
fn attention_operands_that_do_not_fit_are_errors() {
    // V with 4 keys where K has 3.
    let error = Graph::new()
        .opset(23)
        .input("q", &[0.0; 4], &[1, 1, 2, 2])
        .input("k", &[0.0; 6], &[1, 1, 3, 2])
        .input("v", &[0.0; 8], &[1, 1, 4, 2])
        .node("Attention", &["q", "k", "v"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("different lengths"), "{error}");
    // A mask of 2 queries' rows for 3 queries.
    let error = Graph::new()
        .opset(23)
        .input("q", &[0.0; 6], &[1, 1, 3, 2])
        .input("k", &[0.0; 6], &[1, 1, 3, 2])
        .input("v", &[0.0; 6], &[1, 1, 3, 2])
        .input("mask", &[0.0; 6], &[2, 3])
        .node("Attention", &["q", "k", "v", "mask"], &["y"], vec![])
        .output("y")
        .try_run()
        .unwrap_err();
    assert!(error.contains("does not broadcast"), "{error}");
}

#[test]
fn one_dimensional_convolution_runs_as_a_two_dimensional_one() {
    // Conv over [1, 2, 5] with 3 kernels of width 3, padding 1 each side, stride 2, and biases:
    // y[o][t] = b[o] + Σ_c Σ_k w[o][c][k] · x[c][2t + k − 1].
    let x: Vec<f32> = (0..10).map(|v| v as f32 * 0.5 - 2.0).collect();
    let w: Vec<f32> = (0..18).map(|v| ((v * 7) % 5) as f32 - 2.0).collect();
    let b = [0.5f32, -1.0, 2.0];
    let graph = Graph::new()
        .input("x", &x, &[1, 2, 5])
        .weight("w", &w, &[3, 2, 3])
        .weight("b", &b, &[3])
        .node(
            "Conv",
            &["x", "w", "b"],
            &["y"],
            vec![attr_ints("pads", &[1, 1]), attr_ints("strides", &[2])],
        )
        .output("y");
    assert!(
        graph.node_types().contains(&"Conv1d".to_owned()),
        "{:?}",
        graph.node_types()
    );
    let (y, shape) = graph.run_float();
    assert_eq!(shape, [1, 3, 3]);
    let mut expected = Vec::new();
    for o in 0..3 {
        for t in 0..3i64 {
            let mut sum = b[o];
            for c in 0..2 {
                for k in 0..3i64 {
                    let i = 2 * t + k - 1;
                    if (0..5).contains(&i) {
                        sum += w[(o * 2 + c) * 3 + k as usize] * x[c * 5 + i as usize];
                    }
                }
            }
            expected.push(sum);
        }
    }
    assert!(
        y.iter().zip(&expected).all(|(a, e)| (a - e).abs() < 1e-5),
        "{y:?} vs {expected:?}"
    );
}
