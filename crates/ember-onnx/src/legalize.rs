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

use onnx_ir::{AttributeProto, ModelProto, NodeProto};

/// The custom domain of nodes rewritten by [`legalize`]; their op type is the ONNX operator's.
pub const LEGALIZED_DOMAIN: &str = "ember.onnx";

/// The ONNX operators that [`legalize`] may turn into nodes of [`LEGALIZED_DOMAIN`].
pub const LEGALIZED_OPS: &[&str] = &["Resize", "Upsample"];

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
            "Upsample" if domain_is_onnx => {
                legalized = true;
                nodes.push(upsample_as_resize(node));
            }
            _ => nodes.push(node),
        }
    }
    graph.node = nodes;
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
