//! AL2023 / nodeadm: NodeConfig documents, plain or in MIME `application/node.eks.aws` parts.

use super::mime::{Multipart, OWNER_HEADER, OWNER_VALUE};
use super::{UserDataError, UserDataFormat, line_ending};

const NODE_CONFIG_CONTENT_TYPE: &str = "application/node.eks.aws";
/// Boundary used when a plain NodeConfig is wrapped into MIME.
const WRAP_BOUNDARY: &str = "//VPC-CNI-TUNER//";

fn malformed(reason: impl Into<String>) -> UserDataError {
    UserDataError::Malformed {
        format: UserDataFormat::Al2023,
        reason: reason.into(),
    }
}

/// Whether `text` is a plain NodeConfig YAML document.
pub(crate) fn is_node_config(text: &str) -> bool {
    node_configs(text).is_ok_and(|docs| !docs.is_empty())
}

/// The NodeConfig documents of one YAML stream.
fn node_configs(yaml: &str) -> Result<Vec<serde_yaml_ng::Value>, UserDataError> {
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde::Deserialize::deserialize(document)
            .map_err(|e| malformed(format!("NodeConfig YAML: {e}")))?;
        let value: serde_yaml_ng::Value = value;
        let kind = value.get("kind").and_then(|k| k.as_str());
        let api = value.get("apiVersion").and_then(|k| k.as_str());
        if kind == Some("NodeConfig") && api.is_some_and(|a| a.starts_with("node.eks.aws/")) {
            out.push(value);
        }
    }
    Ok(out)
}

fn max_pods_of(config: &serde_yaml_ng::Value) -> Result<Option<u32>, UserDataError> {
    let Some(value) = config
        .get("spec")
        .and_then(|s| s.get("kubelet"))
        .and_then(|k| k.get("config"))
        .and_then(|c| c.get("maxPods"))
    else {
        return Ok(None);
    };
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            malformed(format!(
                "spec.kubelet.config.maxPods is not a number: {value:?}"
            ))
        })
}

/// The effective maxPods: the last NodeConfig that sets it wins (nodeadm merges in order).
pub fn read_max_pods(text: &str) -> Result<Option<u32>, UserDataError> {
    let bodies: Vec<&str> = match Multipart::parse(text) {
        Some(multipart) => multipart
            .parts
            .iter()
            .filter(|p| p.is_node_config())
            .map(|p| p.body)
            .collect(),
        None => vec![text],
    };
    let mut found = None;
    for body in bodies {
        for config in node_configs(body)? {
            if let Some(value) = max_pods_of(&config)? {
                found = Some(value);
            }
        }
    }
    Ok(found)
}

fn owned_part(boundary: &str, nl: &str, max_pods: u32) -> String {
    format!(
        "--{boundary}{nl}Content-Type: {NODE_CONFIG_CONTENT_TYPE}{nl}{OWNER_HEADER}: {OWNER_VALUE}{nl}{nl}\
         ---{nl}apiVersion: node.eks.aws/v1alpha1{nl}kind: NodeConfig{nl}spec:{nl}  kubelet:{nl}    \
         config:{nl}      maxPods: {max_pods}{nl}"
    )
}

/// Puts the operator's NodeConfig part last (replacing its earlier one); other parts keep their
/// bytes. A plain NodeConfig is wrapped into MIME with the original as the first part.
pub fn set_max_pods(text: &str, max_pods: u32) -> Result<String, UserDataError> {
    // Reading first validates every NodeConfig part.
    read_max_pods(text)?;
    let nl = line_ending(text);
    let Some(multipart) = Multipart::parse(text) else {
        if !is_node_config(text) {
            return Err(malformed("no NodeConfig document found"));
        }
        if text.contains(WRAP_BOUNDARY) {
            return Err(malformed(
                "the document contains the operator's MIME boundary",
            ));
        }
        let b = WRAP_BOUNDARY;
        let body_end = if text.ends_with('\n') { "" } else { nl };
        return Ok(format!(
            "MIME-Version: 1.0{nl}Content-Type: multipart/mixed; boundary=\"{b}\"{nl}{nl}\
             --{b}{nl}Content-Type: {NODE_CONFIG_CONTENT_TYPE}{nl}{nl}{text}{body_end}{}--{b}--{nl}",
            owned_part(b, nl, max_pods)
        ));
    };
    let boundary = multipart.boundary.clone();
    // Remove the operator's earlier part(s), then insert a fresh one before the closing line.
    let mut out = String::with_capacity(text.len() + 256);
    let mut cursor = 0;
    for part in multipart.parts.iter().filter(|p| p.is_owned()) {
        out.push_str(&text[cursor..part.delimiter_start]);
        cursor = part.end;
    }
    let insert_at = multipart.closing.unwrap_or(text.len());
    if insert_at < cursor {
        return Err(malformed(
            "the operator's part is after the closing boundary",
        ));
    }
    out.push_str(&text[cursor..insert_at]);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
    out.push_str(&owned_part(&boundary, nl, max_pods));
    match multipart.closing {
        Some(closing) => out.push_str(&text[closing..]),
        None => out.push_str(&format!("--{boundary}--{nl}")),
    }
    Ok(out)
}
