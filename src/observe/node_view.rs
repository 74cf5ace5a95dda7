//! The parts of a Node the operator reads, as the watch's own type: labels, `spec.providerID`
//! and `status.capacity.pods`. Everything else in a kubelet-written Node (images, conditions,
//! managedFields, addresses: 10-20 KiB each) is skipped while parsing instead of being built
//! and dropped, which is most of the work of listing 100,000 Nodes.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use crate::plan::NodeLabels;

/// A Node as the operator watches it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "RawNode")]
pub struct NodeView {
    /// The name and resourceVersion (what the watch reads); labels are in [`Self::labels`].
    pub metadata: ObjectMeta,
    /// `metadata.labels`, interned as they are parsed: no `String` is made for a label.
    pub labels: NodeLabels,
    pub spec: NodeViewSpec,
    pub status: NodeViewStatus,
}

#[derive(Deserialize)]
struct RawNode {
    metadata: RawMeta,
    #[serde(default)]
    spec: NodeViewSpec,
    #[serde(default)]
    status: NodeViewStatus,
}

/// `metadata` without annotations, owner references and managedFields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    resource_version: Option<String>,
    #[serde(default)]
    labels: NodeLabels,
}

impl From<RawNode> for NodeView {
    fn from(raw: RawNode) -> Self {
        Self {
            metadata: ObjectMeta {
                name: raw.metadata.name,
                resource_version: raw.metadata.resource_version,
                ..Default::default()
            },
            labels: raw.metadata.labels,
            spec: raw.spec,
            status: raw.status,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeViewSpec {
    #[serde(default, rename = "providerID")]
    pub provider_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeViewStatus {
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// The `Ready` condition's status is `True` (`None`: no such condition yet).
    #[serde(default, rename = "conditions", deserialize_with = "ready_condition")]
    pub ready: Option<bool>,
}

/// Whether `status.conditions` has `Ready` `True`, read without keeping the conditions.
fn ready_condition<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct Conditions;
    #[derive(Deserialize)]
    struct Condition<'a> {
        #[serde(rename = "type", borrow)]
        type_: Cow<'a, str>,
        #[serde(default, borrow)]
        status: Cow<'a, str>,
    }
    impl<'de> serde::de::Visitor<'de> for Conditions {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of node conditions")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut ready = None;
            while let Some(c) = seq.next_element::<Condition<'de>>()? {
                if c.type_ == "Ready" {
                    ready = Some(c.status == "True");
                }
            }
            Ok(ready)
        }
    }
    deserializer.deserialize_any(Conditions)
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Capacity {
    #[serde(default)]
    pub pods: Option<Quantity>,
}

impl kube::Resource for NodeView {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Node")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("nodes")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
