//! The CRD manifest committed under `crds/`, generated from the Rust types: formats the API
//! server knows, keys in a stable order.

/// The CRD as committed under `crds/`: YAML generated from the Rust types.
pub fn yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let crd = super::NodeNetworkPolicy::crd();
    let value = serde_json::to_value(&crd).map_err(|e| e.to_string())?;
    serde_yaml_ng::to_string(&sorted_keys(kubernetes_formats(value))).map_err(|e| e.to_string())
}

/// The same schema with schemars' unsigned integer formats (`uint32`, ...) replaced by ones the
/// API server knows: it warns `unrecognized format "uint32"` on every apply otherwise. The range
/// stays in the schema (`minimum: 0` comes from schemars; the `uint32` maximum is added here).
fn kubernetes_formats(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut map) => {
            let replacement = match map.get("format").and_then(|f| f.as_str()) {
                Some("uint32") => Some(("int64", Some(u64::from(u32::MAX)))),
                Some("uint8" | "uint16" | "int8" | "int16") => Some(("int32", None)),
                Some("uint" | "uint64" | "uint128" | "int128") => Some(("int64", None)),
                _ => None,
            };
            if let Some((format, maximum)) = replacement {
                map.insert("format".into(), format.into());
                if let Some(maximum) = maximum {
                    map.entry("maximum").or_insert(maximum.into());
                }
            }
            map.into_iter()
                .map(|(k, v)| (k, kubernetes_formats(v)))
                .collect()
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(kubernetes_formats).collect())
        }
        other => other,
    }
}

/// The same value with every object's keys sorted, so the YAML is byte-stable whichever
/// `serde_json` map features the build unifies.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}
