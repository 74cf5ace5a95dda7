//! The aws-node pod webhook (`warmPool.perInstanceType`): when the DaemonSet controller creates
//! an aws-node pod, set the warm-pool env of the aws-node container to the values computed for
//! the pod's node's instance type. ipamd reads its env once, at start, so a pod created with the
//! right values is all it takes.
//!
//! Bounds: the patch touches only the `WARM_ENI_TARGET`, `WARM_IP_TARGET`, `MINIMUM_IP_TARGET`
//! and `WARM_PREFIX_TARGET` entries of the `aws-node` container (replaced in place, added at
//! the end, or set to `""`, which ipamd reads as unset), never an entry from `valueFrom`, never
//! `ENABLE_PREFIX_DELEGATION` (a node must never switch modes because the webhook was briefly
//! away) and nothing else of the pod. Anything it cannot decide (not the managed DaemonSet's pod,
//! no node, a node or type it does not know, no policy, a prefix-delegation mode other than the
//! one the values were computed for, a request it cannot read) is allowed unchanged and counted;
//! it never answers an error. Every replica answers from its own caches.

pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::engine::warm_pool::ENABLE_PREFIX_DELEGATION;
use crate::plan::NodeFacts;
pub use crate::plan::warm_table::{SharedTable, WarmEntry, WarmTable};

/// The env entries the webhook may set.
pub const WEBHOOK_ENV_VARS: [&str; 4] = crate::engine::warm_pool::PER_NODE_ENV_VARS;

/// The container whose env is patched.
const AWS_NODE: &str = "aws-node";

/// Why a pod is let through unchanged (the metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotAwsNode,
    NoNode,
    UnknownNode,
    UnknownType,
    NoPolicy,
    ModeMismatch,
    InSync,
    BadRequest,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAwsNode => "not_aws_node",
            Self::NoNode => "no_node",
            Self::UnknownNode => "unknown_node",
            Self::UnknownType => "unknown_type",
            Self::NoPolicy => "no_policy",
            Self::ModeMismatch => "mode_mismatch",
            Self::InSync => "in_sync",
            Self::BadRequest => "bad_request",
        }
    }
}

/// The node an aws-node pod is for: `spec.nodeName`, or the DaemonSet controller's required
/// node affinity `matchFields metadata.name In [NODE]`.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = &spec.node_name {
        return Some(name.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn literal<'a>(env: &'a [EnvVar], name: &str) -> Option<(usize, &'a EnvVar)> {
    env.iter().enumerate().find(|(_, e)| e.name == name)
}

/// The JSON patch that gives container `index` (the aws-node container) `wanted` for the
/// webhook's env entries: existing literal entries replaced in place, missing ones added, ones
/// `wanted` does not set made `""` (unset for ipamd). Entries from `valueFrom` are left alone.
pub fn env_patch(
    container: &Container,
    index: usize,
    wanted: &BTreeMap<String, String>,
) -> Vec<PatchOperation> {
    let env = container.env.as_deref().unwrap_or_default();
    let mut ops = Vec::new();
    if container.env.is_none() && WEBHOOK_ENV_VARS.iter().any(|k| wanted.contains_key(*k)) {
        ops.push(PatchOperation::Add(AddOperation {
            path: format!("/spec/containers/{index}/env")
                .parse()
                .unwrap_or_default(),
            value: json!([]),
        }));
    }
    for name in WEBHOOK_ENV_VARS {
        let want = wanted.get(name).map(String::as_str);
        match (literal(env, name), want) {
            (Some((_, e)), _) if e.value_from.is_some() => {}
            (Some((j, e)), want) => {
                let value = want.unwrap_or("");
                if e.value.as_deref().unwrap_or("") != value {
                    ops.push(PatchOperation::Replace(ReplaceOperation {
                        path: format!("/spec/containers/{index}/env/{j}")
                            .parse()
                            .unwrap_or_default(),
                        value: json!({"name": name, "value": value}),
                    }));
                }
            }
            (None, Some(value)) => ops.push(PatchOperation::Add(AddOperation {
                path: format!("/spec/containers/{index}/env/-")
                    .parse()
                    .unwrap_or_default(),
                value: json!({"name": name, "value": value}),
            })),
            (None, None) => {}
        }
    }
    ops
}

/// The patch for an aws-node pod, or why none.
pub fn decide(
    request: &AdmissionRequest<Pod>,
    table: &WarmTable,
    node: impl Fn(&str) -> Option<Arc<NodeFacts>>,
) -> Result<(String, Vec<PatchOperation>), Skip> {
    let pod = request.object.as_ref().ok_or(Skip::BadRequest)?;
    let owned = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.name == table.daemonset.name);
    if request.operation != Operation::Create
        || request.namespace.as_deref() != Some(table.daemonset.namespace.as_str())
        || !owned
    {
        return Err(Skip::NotAwsNode);
    }
    let node_name = node_of(pod).ok_or(Skip::NoNode)?;
    let facts = node(&node_name).ok_or(Skip::UnknownNode)?;
    let (entry, wanted) = table.for_node(&facts).map_err(|found| match found {
        None => Skip::NoPolicy,
        Some(()) => Skip::UnknownType,
    })?;
    let spec = pod.spec.as_ref().ok_or(Skip::BadRequest)?;
    let (index, container) = spec
        .containers
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == AWS_NODE)
        .ok_or(Skip::NotAwsNode)?;
    // Only for the mode the values were computed for, as the pod will run it.
    let mode = container
        .env
        .as_deref()
        .and_then(|env| literal(env, ENABLE_PREFIX_DELEGATION))
        .and_then(|(_, e)| e.value.as_deref())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if mode != entry.prefix_delegation {
        return Err(Skip::ModeMismatch);
    }
    let ops = env_patch(container, index, wanted);
    if ops.is_empty() {
        return Err(Skip::InSync);
    }
    Ok((entry.policy.clone(), ops))
}

/// The AdmissionReview answer for a request body: always allowed; patched when [`decide`] says
/// so. The second value is the metric's `result`.
pub fn review(
    body: &[u8],
    table: &WarmTable,
    node: impl Fn(&str) -> Option<Arc<NodeFacts>>,
) -> (Value, &'static str) {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(_) => return (bad_request(body), Skip::BadRequest.as_str()),
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return (bad_request(body), Skip::BadRequest.as_str()),
    };
    let allowed = AdmissionResponse::from(&request);
    let (response, result) = match decide(&request, table, node) {
        Ok((_, ops)) => match allowed.clone().with_patch(Patch(ops)) {
            Ok(patched) => (patched, "patched"),
            Err(_) => (allowed, Skip::BadRequest.as_str()),
        },
        Err(skip) => (allowed, skip.as_str()),
    };
    let body = serde_json::to_value(response.into_review()).unwrap_or_else(|_| json!({}));
    (body, result)
}

/// An allowed answer to a body that is not an AdmissionReview the webhook can read (keeping its
/// uid where there is one, as the API server requires).
fn bad_request(body: &[u8]) -> Value {
    let uid = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["request"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
