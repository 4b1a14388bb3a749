//! The pinned embedder, rewritten so that ONNX Runtime keeps its weights
//! as integers.
//!
//! The pinned all-MiniLM-L6-v2 stores int8 weights, but feeds each one
//! through `Cast` to float and `Mul` by its per-column (or, for the token
//! and position tables, per-row) scale before a float `MatMul` or
//! `Gather`. ONNX Runtime folds those constants at load, so the session
//! holds every weight as fp32: about 160 MiB more than the file, and a
//! float matrix product per layer (issue 23).
//!
//! This rewrite keeps the same int8 numbers and the same scales, and
//! changes only where the arithmetic happens:
//! - `Cast → Mul → MatMul(x, ·)` becomes ONNX Runtime's
//!   `DynamicQuantizeMatMul(x, int8 weight, scale per column)`: the weight
//!   stays int8 in the session and the product is an integer one, with the
//!   activations quantized per call (vectors within cosine 0.99 of the
//!   float ones; the cache's decisions are measured in `BENCHMARKS.md`);
//! - `Cast → Mul → Gather(·, ids)` becomes `Gather` of the int8 rows,
//!   then `Cast` and `Mul` by the gathered rows' scales: the tables stay
//!   int8 and only the rows a query uses become float. This part is exact.
//!
//! It runs once, when the model is fetched (`fetch::ensure`), from the
//! pinned file whose sha256 is checked first, and what it writes is
//! checked against a pinned sha256 too, so every machine runs the same
//! bytes. It is deliberately strict: anything in the graph that does not
//! match the shape above is an error rather than a guess, because the
//! input is one known file.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::onnx::{
    attribute_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto,
};

/// ONNX Runtime's operator domain, where `DynamicQuantizeMatMul` lives.
const MICROSOFT: &str = "com.microsoft";

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the model file is not ONNX: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("the model's graph is not the pinned embedder's: {0}")]
    Unexpected(String),
}

/// What the rewrite changed, for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Float matrix products now done in integers.
    pub matmuls: usize,
    /// Embedding tables now gathered as int8 rows.
    pub tables: usize,
}

/// Rewrites the pinned model's bytes; see the module's documentation.
pub fn rewrite(bytes: &[u8]) -> Result<(Vec<u8>, Rewritten), RewriteError> {
    let mut model = ModelProto::decode(bytes)?;
    // The schema in `onnx.rs` is a subset: a file with a field it lacks
    // would lose that field silently, so refuse one that does not read
    // and write back to itself.
    if model.encoded_len() != bytes.len() || model.encode_to_vec() != bytes {
        return Err(RewriteError::Unexpected(
            "it holds fields this reader does not know".into(),
        ));
    }
    let graph = model.graph.as_mut().ok_or(RewriteError::NoGraph)?;
    let done = rewrite_graph(graph)?;
    if done.matmuls == 0 {
        return Err(RewriteError::Unexpected(
            "no int8 weight feeds a MatMul".into(),
        ));
    }
    if !model
        .opset_import
        .iter()
        .any(|o| o.domain.as_deref() == Some(MICROSOFT))
    {
        model.opset_import.push(OperatorSetIdProto {
            domain: Some(MICROSOFT.into()),
            version: Some(1),
        });
    }
    Ok((model.encode_to_vec(), done))
}

fn rewrite_graph(graph: &mut GraphProto) -> Result<Rewritten, RewriteError> {
    let unexpected = |what: String| RewriteError::Unexpected(what);
    let initializers: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.name.clone().map(|n| (n, i)))
        .collect();
    let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            users.entry(input.as_str()).or_default().push(i);
        }
    }
    let only_user = |tensor: &str| match users.get(tensor).map(Vec::as_slice) {
        Some([one]) => Ok(*one),
        _ => Err(unexpected(format!("{tensor} has not exactly one user"))),
    };

    // Each int8 weight: its Cast, its Mul, the scale, and the node using it.
    struct Chain {
        weight: String,
        scale: String,
        cast: usize,
        mul: usize,
        user: usize,
    }
    let mut chains = Vec::new();
    for (cast, node) in graph.node.iter().enumerate() {
        let Some(weight) = single_input(node, "Cast") else {
            continue;
        };
        let Some(&w) = initializers.get(weight) else {
            continue;
        };
        if graph.initializer[w].data_type != Some(data_type::INT8) {
            continue;
        }
        if int_attribute(node, "to") != Some(i64::from(data_type::FLOAT)) {
            return Err(unexpected(format!("{weight} is cast to another type")));
        }
        let cast_out = first_output(node)?;
        let mul = only_user(cast_out)?;
        let mul_node = &graph.node[mul];
        if mul_node.op_type.as_deref() != Some("Mul") || mul_node.input.len() != 2 {
            return Err(unexpected(format!("{weight} is not scaled by a Mul")));
        }
        let scale = mul_node
            .input
            .iter()
            .find(|i| i.as_str() != cast_out)
            .filter(|s| initializers.contains_key(s.as_str()))
            .ok_or_else(|| unexpected(format!("{weight}'s scale is not a constant")))?;
        only_user(scale)?;
        let user = only_user(first_output(mul_node)?)?;
        chains.push(Chain {
            weight: weight.to_string(),
            scale: scale.clone(),
            cast,
            mul,
            user,
        });
    }

    let mut replaced: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut removed = HashSet::new();
    let mut reshaped = Vec::new();
    let mut done = Rewritten {
        matmuls: 0,
        tables: 0,
    };
    for chain in &chains {
        let weight = &graph.initializer[initializers[&chain.weight]];
        let scale = &graph.initializer[initializers[&chain.scale]];
        let scaled = first_output(&graph.node[chain.mul])?;
        let user = &graph.node[chain.user];
        let [rows, columns] = weight.dims[..] else {
            return Err(unexpected(format!("{} is not a matrix", chain.weight)));
        };
        match (user.op_type.as_deref(), user.input.as_slice()) {
            (Some("MatMul"), [x, b]) if b == scaled && scale.dims == [1, columns] => {
                let name = format!("{}_int8", node_name(user));
                replaced.insert(
                    chain.user,
                    vec![node(
                        &name,
                        "DynamicQuantizeMatMul",
                        MICROSOFT,
                        &[x, &chain.weight, &chain.scale],
                        &user.output,
                        Vec::new(),
                    )],
                );
                // A column scale as the operator wants it: one dimension.
                reshaped.push((initializers[&chain.scale], vec![columns]));
                done.matmuls += 1;
            }
            (Some("Gather"), [table, ids]) if table == scaled && scale.dims == [rows, 1] => {
                let name = node_name(user);
                let out = |suffix: &str| format!("{}_{suffix}", chain.weight);
                let [output] = user.output.as_slice() else {
                    return Err(unexpected(format!("{name} has several outputs")));
                };
                let to_float = AttributeProto {
                    name: Some("to".into()),
                    i: Some(i64::from(data_type::FLOAT)),
                    r#type: Some(attribute_type::INT),
                    ..Default::default()
                };
                replaced.insert(
                    chain.user,
                    vec![
                        node(
                            &format!("{name}_rows"),
                            "Gather",
                            "",
                            &[&chain.weight, ids],
                            &[out("rows")],
                            user.attribute.clone(),
                        ),
                        node(
                            &format!("{name}_float"),
                            "Cast",
                            "",
                            &[&out("rows")],
                            &[out("rows_float")],
                            vec![to_float],
                        ),
                        node(
                            &format!("{name}_scales"),
                            "Gather",
                            "",
                            &[&chain.scale, ids],
                            &[out("row_scales")],
                            user.attribute.clone(),
                        ),
                        node(
                            &format!("{name}_scaled"),
                            "Mul",
                            "",
                            &[&out("rows_float"), &out("row_scales")],
                            std::slice::from_ref(output),
                            Vec::new(),
                        ),
                    ],
                );
                done.tables += 1;
            }
            (op, _) => {
                return Err(unexpected(format!(
                    "{} feeds {} in a way the rewrite does not know",
                    chain.weight,
                    op.unwrap_or("?")
                )))
            }
        }
        removed.insert(chain.cast);
        removed.insert(chain.mul);
    }

    for (index, dims) in reshaped {
        graph.initializer[index].dims = dims;
    }
    let gone: HashSet<String> = removed
        .iter()
        .flat_map(|&i| graph.node[i].output.clone())
        .collect();
    let nodes = std::mem::take(&mut graph.node);
    for (i, old) in nodes.into_iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        match replaced.remove(&i) {
            Some(new) => graph.node.extend(new),
            None => graph.node.push(old),
        }
    }
    graph
        .value_info
        .retain(|v| !v.name.as_ref().is_some_and(|n| gone.contains(n)));
    Ok(done)
}

fn single_input<'a>(node: &'a NodeProto, op: &str) -> Option<&'a str> {
    match (node.op_type.as_deref(), node.input.as_slice()) {
        (Some(o), [input]) if o == op => Some(input),
        _ => None,
    }
}

fn first_output(node: &NodeProto) -> Result<&str, RewriteError> {
    node.output
        .first()
        .map(String::as_str)
        .ok_or_else(|| RewriteError::Unexpected(format!("{} has no output", node_name(node))))
}

fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
}

fn node_name(node: &NodeProto) -> &str {
    node.name.as_deref().unwrap_or("?")
}

fn node(
    name: &str,
    op: &str,
    domain: &str,
    inputs: &[&String],
    outputs: &[String],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.to_vec(),
        name: Some(name.into()),
        op_type: Some(op.into()),
        domain: (!domain.is_empty()).then(|| domain.into()),
        attribute,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::onnx::{TensorProto, ValueInfoProto};
    use super::*;

    fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(data_type),
            dims: dims.to_vec(),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    fn plain(name: &str, op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        node(
            name,
            op,
            "",
            &inputs.iter().collect::<Vec<_>>(),
            &[output.to_string()],
            Vec::new(),
        )
    }

    fn cast(name: &str, input: &str, output: &str) -> NodeProto {
        let mut node = plain(name, "Cast", &[input], output);
        node.attribute.push(AttributeProto {
            name: Some("to".into()),
            i: Some(1),
            r#type: Some(attribute_type::INT),
            ..Default::default()
        });
        node
    }

    /// The pinned model's two patterns in miniature: a weight for a
    /// MatMul (scale per column) and a table for a Gather (scale per row).
    fn miniature(matmul_scale: &[i64]) -> ModelProto {
        let graph = GraphProto {
            node: vec![
                cast("c1", "w_q", "w_f"),
                plain("m1", "Mul", &["w_f", "w_s"], "w"),
                cast("c2", "t_q", "t_f"),
                plain("m2", "Mul", &["t_f", "t_s"], "t"),
                plain("g", "Gather", &["t", "ids"], "e"),
                plain("mm", "MatMul", &["e", "w"], "y"),
            ],
            initializer: vec![
                tensor("w_q", data_type::INT8, &[2, 3], vec![1, 2, 3, 4, 5, 6]),
                tensor(
                    "w_s",
                    data_type::FLOAT,
                    matmul_scale,
                    [0.5f32, 0.25, 2.0]
                        .iter()
                        .flat_map(|f| f.to_le_bytes())
                        .collect(),
                ),
                tensor("t_q", data_type::INT8, &[4, 2], vec![1; 8]),
                tensor(
                    "t_s",
                    data_type::FLOAT,
                    &[4, 1],
                    [1.0f32; 4].iter().flat_map(|f| f.to_le_bytes()).collect(),
                ),
            ],
            value_info: vec![ValueInfoProto {
                name: Some("w_f".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(10),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn weights_stay_int8_and_tables_are_gathered_as_int8_rows() {
        let (bytes, done) = rewrite(&miniature(&[1, 3]).encode_to_vec()).unwrap();
        assert_eq!(
            done,
            Rewritten {
                matmuls: 1,
                tables: 1
            }
        );
        let model = ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = model.graph.unwrap();
        let ops: Vec<(&str, Vec<&str>)> = graph
            .node
            .iter()
            .map(|n| {
                (
                    n.op_type.as_deref().unwrap(),
                    n.input.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("Gather", vec!["t_q", "ids"]),
                ("Cast", vec!["t_q_rows"]),
                ("Gather", vec!["t_s", "ids"]),
                ("Mul", vec!["t_q_rows_float", "t_q_row_scales"]),
                ("DynamicQuantizeMatMul", vec!["e", "w_q", "w_s"]),
            ]
        );
        assert_eq!(graph.node[3].output, ["e"]);
        assert_eq!(graph.node[4].output, ["y"]);
        assert_eq!(graph.node[4].domain.as_deref(), Some(MICROSOFT));
        let scale = graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("w_s"));
        assert_eq!(scale.unwrap().dims, [3]);
        assert!(
            graph.value_info.is_empty(),
            "the removed Cast's output is gone"
        );
        assert!(model
            .opset_import
            .iter()
            .any(|o| o.domain.as_deref() == Some(MICROSOFT)));
    }

    #[test]
    fn a_scale_that_is_not_per_column_is_refused() {
        let refused = rewrite(&miniature(&[3, 1]).encode_to_vec());
        assert!(
            matches!(refused, Err(RewriteError::Unexpected(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_field_the_schema_lacks_is_refused_rather_than_dropped() {
        let mut bytes = miniature(&[1, 3]).encode_to_vec();
        // Field 25 (ModelProto.functions), length-delimited, empty.
        bytes.extend_from_slice(&[0xca, 0x01, 0x00]);
        let refused = rewrite(&bytes);
        assert!(
            matches!(refused, Err(RewriteError::Unexpected(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_model_without_int8_weights_is_refused() {
        let mut model = miniature(&[1, 3]);
        let graph = model.graph.as_mut().unwrap();
        graph.node.retain(|n| n.op_type.as_deref() != Some("Cast"));
        assert!(rewrite(&model.encode_to_vec()).is_err());
        assert!(rewrite(b"\xff\xff not onnx").is_err());
    }
}
