//! The committed CRD as the API server applies it to a NodeNetworkPolicy: its structural schema
//! (types, enums, ranges, patterns; with the `jsonschema` crate) and its CEL rules
//! (`x-kubernetes-validations`, evaluated by kube-cel).

use serde_json::{Value, json};

fn schema() -> Value {
    let crd: Value = serde_yaml_ng::from_str(include_str!(
        "../../crds/nodenetworkpolicies.tuner.vpccni.io.yaml"
    ))
    .unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// JSON Schema has no `nullable`: turn `nullable: true` into a `null` alternative.
fn json_schema(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        if map.remove("nullable") == Some(Value::Bool(true))
            && let Some(Value::String(t)) = map.get("type").cloned()
        {
            map.insert("type".into(), json!([t, "null"]));
        }
        for child in map.values_mut() {
            *child = json_schema(child.take());
        }
    } else if let Value::Array(items) = &mut value {
        for item in items {
            *item = json_schema(item.take());
        }
    }
    value
}

/// Why the API server would reject `object`, or `None`.
pub fn rejection(object: &Value) -> Option<String> {
    let schema = schema();
    let structural =
        jsonschema::draft7::new(&json_schema(schema.clone())).expect("schema compiles");
    if let Some(error) = structural.iter_errors(object).next() {
        return Some(format!("schema: {error} at {}", error.instance_path));
    }
    kube_cel::Validator::new()
        .validate(&schema, object, None)
        .err()
        .map(|errors| format!("CEL: {errors:?}"))
}
