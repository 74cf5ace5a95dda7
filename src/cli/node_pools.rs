//! `recommend --karpenter-nodepool FILE`: the maxPods an EC2NodeClass should carry for the
//! instance types one NodePool may launch, offline, with the same evaluation the operator runs.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{CliError, OutputFormat, RecommendArgs};
use crate::instance::InstanceCatalog;
use crate::karpenter::resources::NodePool;
use crate::karpenter::{allowed_types, choose_max_pods};

/// The answer for one NodePool. Field names are a JSON contract (`-o json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolAnswer {
    pub node_pool: String,
    pub ec2_node_class: Option<String>,
    pub instance_types: usize,
    pub prefix_delegation: bool,
    pub max_pods: u32,
    pub bounding_instance_type: String,
    pub largest_instance_type: String,
    pub largest_instance_type_max_pods: u32,
    pub pods_lost_on_largest: u32,
}

/// Reads every `NodePool` in `path` (`-`: stdin; other documents are skipped) and answers for
/// each.
pub(crate) fn recommend_node_pools(
    args: &RecommendArgs,
    path: &str,
    catalog: &InstanceCatalog,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read {path}: {e}")))?
    };
    let mut answers = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| CliError::Input(format!("{path} is not YAML: {e}")))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("NodePool") {
            continue;
        }
        let pool: NodePool = serde_yaml_ng::from_value(value).map_err(|e| {
            CliError::Input(format!(
                "{path}: a NodePool that does not parse as karpenter.sh/v1: {e}"
            ))
        })?;
        answers.push(answer(args, &pool, catalog)?);
    }
    if answers.is_empty() {
        return Err(CliError::Input(format!(
            "{path} holds no NodePool (kind: NodePool, apiVersion: karpenter.sh/v1)"
        )));
    }
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &answers)
                .map_err(|e| CliError::Render(e.to_string()))?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => {
            let text =
                serde_yaml_ng::to_string(&answers).map_err(|e| CliError::Render(e.to_string()))?;
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Table => {
            for a in &answers {
                writeln!(
                    out,
                    "NodePool {}: set spec.kubelet.maxPods: {} on EC2NodeClass {} (bounded by {}; \
                     {} instance types allowed; prefix delegation {})",
                    a.node_pool,
                    a.max_pods,
                    a.ec2_node_class.as_deref().unwrap_or("(none)"),
                    a.bounding_instance_type,
                    a.instance_types,
                    if a.prefix_delegation { "on" } else { "off" },
                )?;
                writeln!(
                    out,
                    "  the largest allowed type, {}, could run {} pods: {} fewer per node",
                    a.largest_instance_type,
                    a.largest_instance_type_max_pods,
                    a.pods_lost_on_largest
                )?;
            }
        }
    }
    Ok(())
}

fn answer(
    args: &RecommendArgs,
    pool: &NodePool,
    catalog: &InstanceCatalog,
) -> Result<NodePoolAnswer, CliError> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let spec = &pool.spec.template.spec;
    let allowed = allowed_types(catalog, &[spec.requirements.as_slice()])
        .map_err(|e| CliError::Input(format!("NodePool {name}: {e}")))?;
    if allowed.is_empty() {
        return Err(CliError::Input(format!(
            "NodePool {name}: its requirements allow no instance type the embedded table knows; \
             check spec.template.spec.requirements"
        )));
    }
    let choice = choose_max_pods(&args.tuning_request(), &allowed)?;
    Ok(NodePoolAnswer {
        node_pool: name,
        ec2_node_class: spec.node_class_ref.ec2_node_class().map(str::to_owned),
        instance_types: choice.allowed,
        prefix_delegation: choice.prefix_delegation,
        max_pods: choice.max_pods,
        pods_lost_on_largest: choice.pods_lost_on_largest(),
        bounding_instance_type: choice.bounding_type,
        largest_instance_type: choice.largest_type,
        largest_instance_type_max_pods: choice.largest_max_pods,
    })
}
