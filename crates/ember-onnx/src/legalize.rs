//! Rewrites, before onnx-ir sees a graph, of nodes that its type inference refuses but that
//! mean something simple: the run-time executor then runs them (`ember_runtime`), and the tap
//! survey types them. Build-time code generation does not call this (burn-onnx has no kernel
//! for the nodes it makes).
//!
//! - `Max`, `Min` with one input or more than two (onnx-ir 0.22 takes exactly two): an
//!   `Identity`, or a chain of two-input nodes (the last keeps the node's name and output).
//! - `Resize` with what onnx-ir 0.22 refuses (`axes`, `antialias`, `exclude_outside`,
//!   `extrapolation_value`, `keep_aspect_ratio_policy` other than `stretch`, a non-empty `roi`,
//!   `half_pixel_symmetric`), and the deprecated `Upsample`: a node of [`LEGALIZED_DOMAIN`] with
//!   the same inputs and attributes, whose kernel reads them as written.
//! - Every `Attention` (opset 23+): onnx-ir 0.22 refuses the optional cache outputs left out by
//!   name before `qk_matmul_output`, and drops opset 25's `left_window_size` /
//!   `right_window_size` (a silently wrong answer); the kernel reads the attributes itself. The
//!   Attention nodes onnx-ir's simplification makes of decomposed attention stay onnx-ir's.
//! - `SpaceToDepth` with opset 25's `mode` attribute, which onnx-ir 0.22 ignores (`CRD` would
//!   come out in `DCR` order, silently).
//! - `RMSNormalization` (opset 23, the norm of recent transformers), which onnx-ir 0.22 does not
//!   know.

use onnx_ir::{AttributeProto, ModelProto, NodeProto};

/// The custom domain of nodes rewritten by [`legalize`]; their op type is the ONNX operator's.
pub const LEGALIZED_DOMAIN: &str = "ember.onnx";

/// The ONNX operators that [`legalize`] may turn into nodes of [`LEGALIZED_DOMAIN`].
pub const LEGALIZED_OPS: &[&str] = &["Resize", "Upsample", "Attention", "SpaceToDepth", "RMSNormalization"];

/// Rewrites the nodes of `model`'s main graph that onnx-ir would refuse (see the module).
pub fn legalize(model: &mut ModelProto) {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    let graph = model.graph.mut_or_insert_default();
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut legalized = false;
    for node in std::mem::take(&mut graph.node) {
        let domain_is_onnx = node.domain.is_empty() || node.domain == "ai.onnx";
        match node.op_type.as_str() {
            "Max" | "Min" if domain_is_onnx && node.input.len() != 2 => nodes.extend(pairwise(node)),
            "Resize" if domain_is_onnx && onnx_ir_refuses_resize(&node, opset) => {
                legalized = true;
                nodes.push(custom(node));
            }
            "SpaceToDepth" if domain_is_onnx && node.attribute.iter().any(|a| a.name == "mode") => {
                legalized = true;
                nodes.push(custom(node));
            }
            "Attention" | "RMSNormalization" if domain_is_onnx => {
                legalized = true;
                nodes.push(custom(node));
            }
            "Upsample" if domain_is_onnx => {
                legalized = true;
                nodes.push(upsample_as_resize(node));
            }
            _ => nodes.push(node),
        }
    }
    graph.node = nodes;
    declare_reshape_ranks(graph);
    if legalized
        && !model.opset_import.iter().any(|o| o.domain == LEGALIZED_DOMAIN)
        && let Some(first) = model.opset_import.first()
    {
        let mut import = first.clone();
        import.domain = LEGALIZED_DOMAIN.into();
        import.version = 1;
        model.opset_import.push(import);
    }
}

/// The highest rank [`declare_reshape_ranks`] declares.
const MAX_DECLARED_RANK: usize = 16;

/// Declares the rank of Reshape outputs whose shape input is assembled at run time
/// (`Shape → Gather → Unsqueeze → Concat`, as torch's legacy exporter writes `x.view(b, n, h, d)`):
/// onnx-ir 0.22 cannot tell such a shape's length and refuses the graph ("the output has no
/// declared rank") unless the file declares it. The length is worked out here by following the
/// values' ranks and the lengths of 1-D shape tensors through the graph, and declared as a
/// `value_info` of unknown sizes; nothing is declared where it cannot be told.
fn declare_reshape_ranks(graph: &mut onnx_ir::GraphProto) {
    use std::collections::HashMap;
    let mut rank: HashMap<String, usize> = HashMap::new();
    // Lengths of 1-D integer tensors (shapes), where known.
    let mut length: HashMap<String, usize> = HashMap::new();
    let declared = |info: &onnx_ir::ValueInfoProto| {
        info.type_
            .as_ref()
            .and_then(|t| t.tensor_type().shape.as_ref())
            .map(|s| s.dim.len())
    };
    for info in graph.input.iter().chain(&graph.value_info) {
        if let Some(r) = declared(info) {
            rank.insert(info.name.clone(), r);
        }
    }
    for tensor in &graph.initializer {
        rank.insert(tensor.name.clone(), tensor.dims.len());
        if let [dim] = tensor.dims[..]
            && let Ok(dim) = usize::try_from(dim)
        {
            length.insert(tensor.name.clone(), dim);
        }
    }
    let ints = |node: &NodeProto, name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.to_vec());
    let mut constants: HashMap<String, Vec<i64>> = HashMap::new();
    let mut declarations = Vec::new();
    for node in &graph.node {
        let input_rank = |i: usize| node.input.get(i).and_then(|n| rank.get(n)).copied();
        let input_length = |i: usize| node.input.get(i).and_then(|n| length.get(n)).copied();
        let constant = |i: usize| node.input.get(i).and_then(|n| constants.get(n)).cloned();
        let Some(output) = node.output.first().cloned() else {
            continue;
        };
        // The values of an int64 Constant node.
        let mut written: Option<Vec<i64>> = None;
        let (out_rank, out_length): (Option<usize>, Option<usize>) = match node.op_type.as_str() {
            "Constant" => {
                let tensor = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref());
                match tensor {
                    Some(t) => {
                        let values: Vec<i64> = if !t.int64_data.is_empty() {
                            t.int64_data.clone()
                        } else if t.data_type == 7 && t.raw_data.len() % 8 == 0 {
                            t.raw_data
                                .chunks_exact(8)
                                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        if t.data_type == 7 && !values.is_empty() {
                            written = Some(values);
                        }
                        let len = match t.dims[..] {
                            [dim] => usize::try_from(dim).ok(),
                            _ => None,
                        };
                        (Some(t.dims.len()), len)
                    }
                    None => (None, None),
                }
            }
            "Shape" => {
                // The shape of a 1-D tensor of known length is that length.
                if let (Some(1), Some(l)) = (input_rank(0), input_length(0)) {
                    written = Some(vec![l as i64]);
                }
                (Some(1), input_rank(0))
            }
            "Gather" => {
                let indices = input_rank(1);
                let out = input_rank(0)
                    .zip(indices)
                    .and_then(|(d, i)| d.saturating_add(i).checked_sub(1));
                let len = match (out, indices) {
                    (Some(1), Some(1)) => input_length(1),
                    _ => None,
                };
                (out, len)
            }
            "Unsqueeze" => {
                let axes = ints(node, "axes").or_else(|| constant(1)).map(|a| a.len());
                let out = input_rank(0).zip(axes).map(|(r, a)| r.saturating_add(a));
                (
                    out,
                    if out == Some(1) && input_rank(0) == Some(0) {
                        Some(1)
                    } else {
                        None
                    },
                )
            }
            "Squeeze" => {
                let axes = ints(node, "axes").or_else(|| constant(1)).map(|a| a.len());
                (input_rank(0).zip(axes).map(|(r, a)| r.saturating_sub(a)), None)
            }
            "Concat" => {
                let lengths = (0..node.input.len())
                    .map(input_length)
                    .try_fold(0usize, |total, l| total.checked_add(l?));
                (input_rank(0), lengths.filter(|_| input_rank(0) == Some(1)))
            }
            "Slice" if input_rank(0) != Some(1) => (input_rank(0), None),
            "Slice" => {
                let len = match (input_length(0), constant(1), constant(2)) {
                    (Some(dim), Some(starts), Some(ends)) if starts.len() == 1 && ends.len() == 1 => {
                        let steps = constant(4).and_then(|s| s.first().copied()).unwrap_or(1);
                        let dim = dim as i64;
                        let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim);
                        (steps == 1).then(|| (clamp(ends[0]) - clamp(starts[0])).max(0) as usize)
                    }
                    _ => None,
                };
                (Some(1), len)
            }
            "Reshape" => {
                let out = input_length(1);
                // Ranks beyond any tensor's are not declared (a hostile file's lengths).
                if let Some(out) = out.filter(|&r| r <= MAX_DECLARED_RANK && !rank.contains_key(&output)) {
                    // Shape tensors are int64, activations float (onnx-ir reads a declaration
                    // only with a valid element type).
                    let integer = node
                        .input
                        .first()
                        .is_some_and(|n| length.contains_key(n) || constants.contains_key(n));
                    declarations.push((output.clone(), out, if integer { 7 } else { 1 }));
                }
                // To one axis: the shape's one value, or all of a 1-D input's.
                let len = match constant(1).as_deref() {
                    Some(&[-1]) if input_rank(0) == Some(1) => input_length(0),
                    Some(&[k]) if k > 0 => Some(k as usize),
                    _ => None,
                };
                (out, len.filter(|_| out == Some(1)))
            }
            "Transpose" | "Cast" | "Identity" | "Neg" | "Sqrt" | "Erf" | "Softmax" | "LogSoftmax"
            | "LayerNormalization" | "RMSNormalization" | "Relu" | "Sigmoid" | "Tanh" | "Gelu" | "Dropout" | "Conv"
            | "BatchNormalization" | "Abs" | "Exp" | "Log" | "Floor" | "Ceil" | "Clip" | "Reciprocal"
            | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Softplus" | "Mish" | "Elu" | "MaxPool" | "AveragePool"
            | "Not" => (input_rank(0), input_length(0).filter(|_| input_rank(0) == Some(1))),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Equal" | "Less" | "Greater" | "Where" | "Max" | "Min" => {
                let ranks: Option<Vec<usize>> = (0..node.input.len()).map(input_rank).collect();
                let out = ranks.and_then(|r| r.into_iter().max());
                // A 1-D result broadcasts its inputs' lengths (scalars count as one).
                let len = (out == Some(1))
                    .then(|| {
                        (0..node.input.len())
                            .map(|i| {
                                if input_rank(i) == Some(0) {
                                    Some(1)
                                } else {
                                    input_length(i)
                                }
                            })
                            .collect::<Option<Vec<usize>>>()
                    })
                    .flatten()
                    .and_then(|l| l.into_iter().max());
                (out, len)
            }
            "MatMul" => (input_rank(0).zip(input_rank(1)).map(|(a, b)| a.max(b)), None),
            op if op.starts_with("Reduce") => {
                let keep = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "keepdims")
                    .is_none_or(|a| a.i != 0);
                let axes = ints(node, "axes").or_else(|| constant(1)).map(|a| a.len());
                let out = match (keep, axes) {
                    (true, _) => input_rank(0),
                    (false, Some(a)) => input_rank(0).map(|r| r.saturating_sub(a)),
                    // Every axis reduced.
                    (false, None) => Some(0),
                };
                (out, None)
            }
            "Gemm" | "Flatten" => (Some(2), None),
            "ConstantOfShape" => (
                input_length(0),
                constant(0).filter(|c| c.len() == 1).map(|c| c[0].max(0) as usize),
            ),
            "Expand" => (input_rank(0).zip(input_length(1)).map(|(r, l)| r.max(l)), None),
            _ => (None, None),
        };
        // Integer arithmetic on constants stays constant (exporters compute slice bounds so).
        let folded: Option<Vec<i64>> = match node.op_type.as_str() {
            "Reshape" | "Unsqueeze" | "Squeeze" | "Cast" | "Identity" => constant(0),
            "Add" | "Sub" | "Mul" | "Div" | "Mod" => match (constant(0), constant(1)) {
                (Some(a), Some(b)) if a.len() == b.len() || a.len() == 1 || b.len() == 1 => {
                    let n = a.len().max(b.len());
                    let at = |v: &[i64], i: usize| v[if v.len() == 1 { 0 } else { i }];
                    (0..n)
                        .map(|i| {
                            let (x, y) = (at(&a, i), at(&b, i));
                            match node.op_type.as_str() {
                                "Add" => x.checked_add(y),
                                "Sub" => x.checked_sub(y),
                                "Mul" => x.checked_mul(y),
                                "Div" => x.checked_div_euclid(y).filter(|_| y > 0),
                                _ => x.checked_rem_euclid(y).filter(|_| y > 0),
                            }
                        })
                        .collect()
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(values) = written.or(folded) {
            constants.insert(output.clone(), values);
        }
        if let Some(r) = out_rank {
            rank.entry(output.clone()).or_insert(r);
        }
        if let Some(l) = out_length {
            length.entry(output).or_insert(l);
        }
    }
    for (name, rank, elem_type) in declarations {
        let mut info = onnx_ir::ValueInfoProto::new();
        info.name = name;
        let tensor = info.type_.mut_or_insert_default().mut_tensor_type();
        tensor.elem_type = elem_type;
        let shape = tensor.shape.mut_or_insert_default();
        for _ in 0..rank {
            shape.dim.push(Default::default());
        }
        graph.value_info.push(info);
    }
}

/// `Max(a)` → `Identity(a)`; `Max(a, b, c, …)` → `Max(Max(a, b), c)…`.
fn pairwise(node: NodeProto) -> Vec<NodeProto> {
    if node.input.len() < 2 {
        let mut identity = node;
        identity.op_type = "Identity".into();
        identity.attribute.clear();
        return vec![identity];
    }
    let mut chain = Vec::with_capacity(node.input.len() - 1);
    let mut left = node.input[0].clone();
    let last = node.input.len() - 1;
    for (index, right) in node.input.iter().enumerate().skip(1) {
        let mut step = node.clone();
        step.input = vec![left.clone(), right.clone()];
        if index < last {
            step.name = format!("{}__ember_{index}", node.name);
            left = format!("{}__ember_{index}", node.output.first().map_or("", String::as_str));
            step.output = vec![left.clone()];
        }
        chain.push(step);
    }
    chain
}

/// Whether onnx-ir 0.22's `Resize` type inference refuses the node (read in its sources:
/// `node/resize.rs`, `infer_types` and `extract_config`).
fn onnx_ir_refuses_resize(node: &NodeProto, opset: i64) -> bool {
    let int = |a: &AttributeProto| a.i != 0;
    let refused_attribute = node.attribute.iter().any(|a| match a.name.as_str() {
        "axes" => true,
        "antialias" | "exclude_outside" => int(a),
        "extrapolation_value" => a.f != 0.0,
        "keep_aspect_ratio_policy" => !a.s.eq_ignore_ascii_case(b"stretch"),
        "coordinate_transformation_mode" => a.s[..] == b"half_pixel_symmetric"[..],
        _ => false,
    });
    // A `roi` given (opset 11+) is refused unless empty; whether it is empty is known only for
    // initializers, so any named roi goes to Ember's kernel.
    let roi = opset >= 11 && node.input.get(1).is_some_and(|name| !name.is_empty());
    refused_attribute || roi
}

/// The node in [`LEGALIZED_DOMAIN`], inputs and attributes unchanged.
fn custom(mut node: NodeProto) -> NodeProto {
    node.domain = LEGALIZED_DOMAIN.into();
    node
}

/// `Upsample(X, scales)` (opset 9; opset 7 has `scales` as an attribute) with the inputs and
/// attributes of the `Resize` ONNX defines it to be (it keeps its op type, for messages): the
/// output is `floor(input · scale)`, sampled at `i / scale` (asymmetric), nearest neighbours by
/// `floor`.
fn upsample_as_resize(mut node: NodeProto) -> NodeProto {
    node.domain = LEGALIZED_DOMAIN.into();
    let scales = node.input.get(1).cloned();
    node.input = match scales {
        Some(scales) => vec![node.input[0].clone(), String::new(), scales],
        None => vec![node.input[0].clone()],
    };
    node.attribute
        .retain(|a| a.name != "coordinate_transformation_mode" && a.name != "nearest_mode");
    node.attribute
        .push(crate::string_attribute("coordinate_transformation_mode", "asymmetric"));
    node.attribute.push(crate::string_attribute("nearest_mode", "floor"));
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str]) -> NodeProto {
        let mut node = NodeProto::new();
        node.name = "m".into();
        node.op_type = op.into();
        node.input = inputs.iter().map(|s| (*s).to_owned()).collect();
        node.output = vec!["y".into()];
        node
    }

    /// `x.view(shape(x)[0], 2, -1)` as the legacy exporter writes it: the Reshape's rank (3) is
    /// declared; a shape assembled from a lying initializer (a negative length) or a Gather of a
    /// scalar declares nothing, without panicking.
    #[test]
    fn reshape_ranks_are_declared_from_assembled_shapes() {
        let mut graph = onnx_ir::GraphProto::new();
        let mut input = onnx_ir::ValueInfoProto::new();
        input.name = "x".into();
        let shape = input
            .type_
            .mut_or_insert_default()
            .mut_tensor_type()
            .shape
            .mut_or_insert_default();
        shape.dim.extend((0..3).map(|_| Default::default()));
        graph.input.push(input);
        let constant = |name: &str, values: &[i64]| {
            let mut tensor = onnx_ir::TensorProto::new();
            tensor.data_type = 7;
            // No values: a scalar (rank 0).
            tensor.dims = if values.is_empty() {
                Vec::new()
            } else {
                vec![values.len() as i64]
            };
            tensor.int64_data = values.to_vec();
            let mut attribute = AttributeProto::new();
            attribute.name = "value".into();
            attribute.t = Some(tensor).into();
            let mut node = node("Constant", &[]);
            node.output = vec![name.into()];
            node.attribute.push(attribute);
            node
        };
        let step = |op: &str, inputs: &[&str], output: &str| {
            let mut node = node(op, inputs);
            node.output = vec![output.into()];
            node
        };
        let mut lying = onnx_ir::TensorProto::new();
        lying.name = "lying".into();
        lying.dims = vec![-5];
        graph.initializer.push(lying);
        graph.node = vec![
            step("Shape", &["x"], "s"),
            constant("zero", &[0]),
            step("Gather", &["s", "zero"], "n"),
            constant("rest", &[2, -1]),
            step("Concat", &["n", "rest"], "target"),
            step("Reshape", &["x", "target"], "y"),
            step("Concat", &["lying", "rest"], "bad_target"),
            step("Reshape", &["x", "bad_target"], "z"),
            constant("scalar_index", &[]),
            step("Gather", &["scalar_index", "scalar_index"], "g"),
        ];
        // "n" is a 1-element vector (a 1-D index), "target" 3 long; "g" gathers from a scalar
        // (rank 0 + 0 − 1: no rank, no panic).
        declare_reshape_ranks(&mut graph);
        let declared: Vec<(String, usize)> = graph
            .value_info
            .iter()
            .map(|v| (v.name.clone(), v.type_.tensor_type().shape.dim.len()))
            .collect();
        assert_eq!(declared, vec![("y".to_owned(), 3)]);
    }

    #[test]
    fn variadic_max_becomes_a_chain_that_ends_in_the_node() {
        let chain = pairwise(node("Max", &["a", "b", "c"]));
        let io: Vec<(String, Vec<String>, Vec<String>)> = chain
            .iter()
            .map(|n| (n.name.clone(), n.input.to_vec(), n.output.to_vec()))
            .collect();
        assert_eq!(
            io,
            vec![
                (
                    "m__ember_1".into(),
                    vec!["a".into(), "b".into()],
                    vec!["y__ember_1".into()]
                ),
                ("m".into(), vec!["y__ember_1".into(), "c".into()], vec!["y".into()]),
            ]
        );
        let single = pairwise(node("Min", &["a"]));
        assert_eq!((single.len(), single[0].op_type.as_str()), (1, "Identity"));
    }
}
