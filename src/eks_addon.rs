//! The EKS managed add-on `vpc-cni`'s `configurationValues`: the JSON (or YAML) document through
//! which EKS sets the aws-node env (`{"env": {"ENABLE_PREFIX_DELEGATION": "true"}}`). Pure: this
//! module parses it, changes only the `env` keys the operator owns, and renders it again in the
//! format it came in; every other key and value keeps its meaning.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::engine::EnvChange;

/// The add-on's name in EKS.
pub const ADDON_NAME: &str = "vpc-cni";

/// The aws-node env var in which the VPC CNI takes the cluster name (to tag ENIs); the EKS add-on
/// sets it, so the operator can find its cluster without being told.
pub const CLUSTER_NAME_ENV: &str = "CLUSTER_NAME";

/// Where the operator writes the aws-node env (`--cni-config-via`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CniConfigVia {
    /// The EKS add-on's configurationValues when EKS applies aws-node (its managedFields has the
    /// field manager `eks`; nothing is written if EKS has no such add-on); the DaemonSet
    /// otherwise.
    #[default]
    Auto,
    /// Server-side apply of the aws-node env, even next to the EKS add-on.
    #[value(name = "daemonset")]
    DaemonSet,
    /// Always the EKS add-on's configurationValues.
    EksAddon,
}

/// The add-on as the operator last read it (eks:DescribeAddon, eks:DescribeUpdate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonFacts {
    pub cluster: String,
    pub version: Option<String>,
    /// ACTIVE, UPDATING, DEGRADED, ...
    pub status: Option<String>,
    pub configuration_values: Option<String>,
    /// The operator's last UpdateAddon, as DescribeUpdate last reported it.
    pub last_update: Option<UpdateFacts>,
}

/// One add-on update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFacts {
    pub id: String,
    /// InProgress, Successful, Failed, Cancelled.
    pub status: String,
    /// EKS's `errors` (`errorCode: errorMessage`).
    pub errors: Vec<String>,
}

impl UpdateFacts {
    pub fn in_progress(&self) -> bool {
        self.status == "InProgress"
    }
}

/// How a `configurationValues` document was written: it is rendered back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A parsed `configurationValues` document.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigurationValues {
    root: Map<String, Value>,
    format: Format,
}

/// Why a `configurationValues` document cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configurationValues is neither JSON nor YAML: {0}")]
    Syntax(String),
    #[error("configurationValues is not an object (it is {0}); EKS expects e.g. {{\"env\": {{}}}}")]
    NotAnObject(&'static str),
    #[error(
        "configurationValues.env is not an object (it is {0}); EKS expects env as a map of names to strings"
    )]
    EnvNotAnObject(&'static str),
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An empty JSON document, as an add-on without configurationValues has.
impl Default for ConfigurationValues {
    fn default() -> Self {
        Self {
            root: Map::new(),
            format: Format::Json,
        }
    }
}

impl ConfigurationValues {
    /// Parses the add-on's `configurationValues`; none (or blank) is an empty JSON document.
    pub fn parse(text: Option<&str>) -> Result<Self, ConfigError> {
        let text = text.unwrap_or_default();
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let (value, format) = match serde_json::from_str::<Value>(text) {
            Ok(value) => (value, Format::Json),
            Err(json_err) => match serde_yaml_ng::from_str::<Value>(text) {
                Ok(value) => (value, Format::Yaml),
                Err(yaml_err) => {
                    return Err(ConfigError::Syntax(format!(
                        "as JSON: {json_err}; as YAML: {yaml_err}"
                    )));
                }
            },
        };
        let Value::Object(root) = value else {
            return Err(ConfigError::NotAnObject(kind(&value)));
        };
        if let Some(env) = root.get("env")
            && !env.is_object()
        {
            return Err(ConfigError::EnvNotAnObject(kind(env)));
        }
        Ok(Self { root, format })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `env` as strings (a YAML `1` or `true` reads as "1" / "true", as EKS passes it on).
    pub fn env(&self) -> BTreeMap<String, String> {
        let Some(Value::Object(env)) = self.root.get("env") else {
            return BTreeMap::new();
        };
        env.iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// This document with `set` in `env` and the `remove` names taken out of it; every other key
    /// and env entry is kept. An `env` left empty is removed when this added it.
    pub(crate) fn with_env(
        &self,
        set: &BTreeMap<String, String>,
        remove: &BTreeSet<String>,
    ) -> Self {
        let mut root = self.root.clone();
        let had_env = root.contains_key("env");
        let env = root
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(env) = env {
            for name in remove {
                if !set.contains_key(name) {
                    env.remove(name);
                }
            }
            for (name, value) in set {
                env.insert(name.clone(), Value::String(value.clone()));
            }
            if env.is_empty() && !had_env {
                root.remove("env");
            }
        }
        Self {
            root,
            format: self.format,
        }
    }

    /// The document as text, in the format it was parsed from (JSON compact, YAML block).
    pub fn render(&self) -> String {
        let value = Value::Object(self.root.clone());
        match self.format {
            Format::Json => value.to_string(),
            Format::Yaml => serde_yaml_ng::to_string(&value).unwrap_or_else(|_| value.to_string()),
        }
    }

    /// The document as a JSON value (for schema validation).
    pub fn as_json(&self) -> Value {
        Value::Object(self.root.clone())
    }
}

/// The edit that gives the add-on `wanted` in `configurationValues.env`: the new document and
/// the keys it changes, or `None` when it already has them. `written` is what this operator
/// wrote before: keys of it that `wanted` no longer has are removed, and a key of it whose value
/// someone else changed is drift.
pub fn edit(
    current: &ConfigurationValues,
    wanted: &BTreeMap<String, String>,
    written: &BTreeMap<String, String>,
) -> Option<(ConfigurationValues, Vec<EnvChange>)> {
    let env = current.env();
    let mut changes = Vec::new();
    for (name, value) in wanted {
        let from = env.get(name).cloned();
        if from.as_ref() != Some(value) {
            changes.push(EnvChange {
                name: name.clone(),
                drift: written.get(name) == Some(value),
                from,
                to: Some(value.clone()),
            });
        }
    }
    let stale: BTreeSet<String> = written
        .keys()
        .filter(|k| !wanted.contains_key(*k) && env.contains_key(*k))
        .cloned()
        .collect();
    for name in &stale {
        changes.push(EnvChange {
            name: name.clone(),
            from: env.get(name).cloned(),
            to: None,
            drift: false,
        });
    }
    if changes.is_empty() {
        return None;
    }
    Some((current.with_env(wanted, &stale), changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const PREFIX: &[(&str, &str)] = &[
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("WARM_PREFIX_TARGET", "1"),
    ];

    #[test]
    fn keeps_every_other_key_and_env_entry() {
        let current = ConfigurationValues::parse(Some(
            r#"{"env":{"AWS_VPC_K8S_CNI_LOGLEVEL":"DEBUG","ENABLE_PREFIX_DELEGATION":"false"},
                "resources":{"requests":{"cpu":"25m"}},"enableNetworkPolicy":"true","tolerations":[{"operator":"Exists"}]}"#,
        ))
        .unwrap();
        let (next, changes) = edit(&current, &map(PREFIX), &BTreeMap::new()).unwrap();
        let value = next.as_json();
        assert_eq!(value["env"]["AWS_VPC_K8S_CNI_LOGLEVEL"], "DEBUG");
        assert_eq!(value["env"]["ENABLE_PREFIX_DELEGATION"], "true");
        assert_eq!(value["env"]["WARM_PREFIX_TARGET"], "1");
        assert_eq!(value["resources"]["requests"]["cpu"], "25m");
        assert_eq!(value["enableNetworkPolicy"], "true");
        assert_eq!(value["tolerations"][0]["operator"], "Exists");
        let mut before = current.as_json();
        let mut after = value.clone();
        before["env"].as_object_mut().unwrap().clear();
        after["env"].as_object_mut().unwrap().clear();
        assert_eq!(before, after, "nothing outside env changes");
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "ENABLE_PREFIX_DELEGATION: false -> true",
                "WARM_PREFIX_TARGET: (unset) -> 1"
            ]
        );
        assert!(changes.iter().all(|c| !c.drift));
        assert_eq!(next.format(), Format::Json);
        // Already there: nothing to send.
        assert_eq!(edit(&next, &map(PREFIX), &map(PREFIX)), None);
    }

    #[test]
    fn empty_yaml_and_bad_documents() {
        let empty = ConfigurationValues::parse(None).unwrap();
        let (next, _) = edit(&empty, &map(PREFIX), &BTreeMap::new()).unwrap();
        assert_eq!(
            next.render(),
            r#"{"env":{"ENABLE_PREFIX_DELEGATION":"true","WARM_PREFIX_TARGET":"1"}}"#
        );
        let yaml = ConfigurationValues::parse(Some(
            "env:\n  WARM_PREFIX_TARGET: 2\nresources:\n  limits:\n    memory: 128Mi\n",
        ))
        .unwrap();
        assert_eq!(yaml.format(), Format::Yaml);
        assert_eq!(yaml.env()["WARM_PREFIX_TARGET"], "2");
        let (next, changes) = edit(&yaml, &map(PREFIX), &BTreeMap::new()).unwrap();
        let text = next.render();
        assert!(text.contains("memory: 128Mi"), "{text}");
        let reparsed = ConfigurationValues::parse(Some(&text)).unwrap();
        assert_eq!(reparsed.env(), map(PREFIX));
        assert_eq!(changes.len(), 2);
        for (text, want) in [
            ("[1, 2]", "not an object (it is a list)"),
            (
                "{\"env\": [\"A=1\"]}",
                "env is not an object (it is a list)",
            ),
            ("{\"env\": ", "neither JSON nor YAML"),
        ] {
            let err = ConfigurationValues::parse(Some(text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn drift_and_keys_no_longer_wanted() {
        let written = map(&[
            ("ENABLE_PREFIX_DELEGATION", "true"),
            ("WARM_IP_TARGET", "5"),
        ]);
        // IaC put ENABLE_PREFIX_DELEGATION back to false; the policy no longer wants WARM_IP_TARGET.
        let current = ConfigurationValues::parse(Some(
            r#"{"env":{"ENABLE_PREFIX_DELEGATION":"false","WARM_IP_TARGET":"5","AWS_VPC_K8S_CNI_LOGLEVEL":"INFO"}}"#,
        ))
        .unwrap();
        let (next, changes) = edit(&current, &map(PREFIX), &written).unwrap();
        let env = next.env();
        assert_eq!(env.get("WARM_IP_TARGET"), None);
        assert_eq!(env["AWS_VPC_K8S_CNI_LOGLEVEL"], "INFO");
        let drift: Vec<&str> = changes
            .iter()
            .filter(|c| c.drift)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(drift, ["ENABLE_PREFIX_DELEGATION"]);
        assert!(
            changes
                .iter()
                .any(|c| c.name == "WARM_IP_TARGET" && c.to.is_none())
        );
    }
}
