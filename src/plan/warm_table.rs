//! What the aws-node pod webhook answers from (`warmPool.perInstanceType`): per Enforce policy,
//! oldest first, its node selector, the prefix-delegation mode it decided and the warm env of
//! each of its instance types. Built from every plan, on every replica.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::crd::{DaemonSetRef, Enforcement, NodeNetworkPolicy};

use super::{FleetPlan, NodeFacts};

/// One policy's per-type warm env, with what selects its nodes.
#[derive(Debug, Clone, Default)]
pub struct WarmEntry {
    pub policy: String,
    pub selector: Vec<kube::core::Expression>,
    /// The prefix-delegation mode the values were computed for.
    pub prefix_delegation: bool,
    pub env_by_type: BTreeMap<String, BTreeMap<String, String>>,
}

/// Every Enforce policy with `perInstanceType`, oldest first: what the webhook answers from.
#[derive(Debug, Clone, Default)]
pub struct WarmTable {
    pub daemonset: DaemonSetRef,
    pub entries: Vec<WarmEntry>,
}

impl WarmTable {
    /// The table of a plan: policies in `policies` order (the watch's oldest-first order).
    pub fn from_plan(
        daemonset: &DaemonSetRef,
        policies: &[Arc<NodeNetworkPolicy>],
        plan: &FleetPlan,
    ) -> Self {
        let mut ordered: Vec<&Arc<NodeNetworkPolicy>> = policies.iter().collect();
        ordered.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        let entries = ordered
            .into_iter()
            .filter(|p| {
                p.spec.warm_pool.per_instance_type && p.spec.enforcement == Enforcement::Enforce
            })
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                let planned = plan.policies.get(&name)?;
                let selector =
                    crate::plan::selector_expressions(p.spec.node_selector.as_ref()).ok()?;
                Some(WarmEntry {
                    policy: name,
                    selector,
                    prefix_delegation: planned.prefix_delegation?,
                    env_by_type: planned
                        .instance_types
                        .iter()
                        .filter(|t| !t.warm_env.is_empty())
                        .map(|t| (t.instance_type.clone(), t.warm_env.clone()))
                        .collect(),
                })
            })
            .collect();
        Self {
            daemonset: daemonset.clone(),
            entries,
        }
    }

    /// The entry for a node and its instance type: the oldest policy that selects the node.
    /// `Err(None)`: no policy selects it; `Err(Some(()))`: its type has no values.
    #[allow(clippy::result_unit_err)]
    pub fn for_node(
        &self,
        node: &NodeFacts,
    ) -> Result<(&WarmEntry, &BTreeMap<String, String>), Option<()>> {
        let instance_type = node.instance_type().map_err(|_| Some(()))?;
        let entry = self
            .entries
            .iter()
            .find(|e| node.labels.matches(&e.selector))
            .ok_or(None)?;
        let env = entry.env_by_type.get(instance_type).ok_or(Some(()))?;
        Ok((entry, env))
    }
}

/// The table the webhook reads, replaced after every plan.
#[derive(Default)]
pub struct SharedTable(RwLock<Arc<WarmTable>>);

impl SharedTable {
    pub fn get(&self) -> Arc<WarmTable> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, table: WarmTable) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }
}
