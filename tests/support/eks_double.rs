//! A wire-level test double of the EKS add-on API for the managed add-on `vpc-cni`, on
//! 127.0.0.1, reached by the operator through the SDK's endpoint override
//! (`--eks-endpoint-url`). No local server implements this API (moto has clusters and node
//! groups, not add-ons).
//!
//! What it simulates, as EKS does:
//! - REST-JSON: DescribeAddon (`GET /clusters/{name}/addons/{addon}`), UpdateAddon
//!   (`POST /clusters/{name}/addons/{addon}/update`), DescribeUpdate
//!   (`GET /clusters/{name}/updates/{id}?addonName=`) and DescribeAddonConfiguration
//!   (`GET /addons/configuration-schemas?addonName=&addonVersion=`), errors as
//!   `x-amzn-errortype` + `{"message"}` (ResourceNotFoundException 404, AccessDeniedException
//!   403, InvalidParameterException 400, InvalidRequestException 400 while an update runs).
//! - It keeps the add-on's version, status and `configurationValues` (an UpdateAddon without
//!   configurationValues keeps them), and a configuration schema that, like the real one, takes
//!   only known keys and string env values.
//! - An update answers `InProgress`, and a moment later applies the add-on to the **real API
//!   server**: a server-side apply of the whole aws-node DaemonSet (the add-on's default env
//!   with `configurationValues.env` over it) with field manager `eks`, honouring
//!   `resolveConflicts`: NONE fails the update (`ConfigurationConflict`, with the API server's
//!   message) on a field another manager owns; OVERWRITE forces; PRESERVE leaves those fields
//!   (their values and owners) as they are. The update then reads `Successful` or `Failed`.
//!
//! What it does not: SigV4 (the signature is not checked), IAM beyond "deny this action",
//! add-on versions' differing manifests, pod identity, tags, throttling (the SDK's retry is
//! tested elsewhere), health issues.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use vpc_cni_tuner::testing::{EKS_ADDON_ENV, aws_node_ds};

pub const CLUSTER: &str = "tuner-e2e";
pub const ADDON: &str = "vpc-cni";

/// One add-on update, as DescribeUpdate shows it.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: String,
    pub status: String,
    pub errors: Vec<(String, String)>,
    pub resolve_conflicts: String,
    pub configuration_values: Option<String>,
}

#[derive(Default)]
struct Inner {
    version: String,
    status: String,
    configuration_values: Option<String>,
    updates: BTreeMap<String, Update>,
    /// (method, path) of every request.
    requests: Vec<(String, String)>,
    denied: BTreeSet<String>,
    next_id: u32,
}

#[derive(Clone)]
pub struct EksDouble {
    inner: Arc<Mutex<Inner>>,
    client: Client,
    pub addr: SocketAddr,
}

/// The configuration schema of the add-on: objects of known keys, env values strings.
fn schema() -> Value {
    let env: serde_json::Map<String, Value> = [
        "ADDITIONAL_ENI_TAGS",
        "AWS_VPC_CNI_NODE_PORT_SUPPORT",
        "AWS_VPC_ENI_MTU",
        "AWS_VPC_K8S_CNI_EXTERNALSNAT",
        "AWS_VPC_K8S_CNI_LOGLEVEL",
        "ENABLE_POD_ENI",
        "ENABLE_PREFIX_DELEGATION",
        "WARM_ENI_TARGET",
        "WARM_IP_TARGET",
        "MINIMUM_IP_TARGET",
        "WARM_PREFIX_TARGET",
        "CLUSTER_NAME",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), json!({"type": "string"})))
    .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "env": {"type": "object", "additionalProperties": false, "properties": env},
            "resources": {"type": "object"},
            "enableNetworkPolicy": {"type": "string"},
            "tolerations": {"type": "array"}
        }
    })
}

impl EksDouble {
    /// Serves on a free loopback port; the add-on exists with `configuration_values` and is
    /// applied to the API server behind `client` once, as EKS does when it is created.
    pub async fn start(client: Client, configuration_values: Option<&str>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            version: "v1.19.2-eksbuild.1".into(),
            status: "ACTIVE".into(),
            configuration_values: configuration_values.map(str::to_owned),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let double = Self {
            inner,
            client,
            addr,
        };
        let app = Router::new()
            .route("/clusters/{cluster}/addons/{addon}", get(describe_addon))
            .route(
                "/clusters/{cluster}/addons/{addon}/update",
                post(update_addon),
            )
            .route("/clusters/{cluster}/updates/{id}", get(describe_update))
            .route("/addons/configuration-schemas", get(describe_configuration))
            .fallback(|method: Method, uri: Uri| async move {
                error(
                    StatusCode::NOT_FOUND,
                    "InvalidRequestException",
                    &format!("no route {method} {uri}"),
                )
            })
            .layer(axum::middleware::from_fn_with_state(double.clone(), record))
            .with_state(double.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let applied = double.apply("OVERWRITE").await;
        assert!(applied.is_ok(), "installing the add-on: {applied:?}");
        double
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `action` (`UpdateAddon`) answer AccessDeniedException.
    pub fn deny(&self, action: &str) {
        self.inner.lock().unwrap().denied.insert(action.to_owned());
    }

    pub fn configuration_values(&self) -> Option<String> {
        self.inner.lock().unwrap().configuration_values.clone()
    }

    /// Requests so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(m, p)| format!("{m} {p}"))
            .collect()
    }

    /// How many requests so far were UpdateAddon calls.
    pub fn update_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("POST ") && r.ends_with("/update"))
            .count()
    }

    pub fn update(&self, id: &str) -> Option<Update> {
        self.inner.lock().unwrap().updates.get(id).cloned()
    }

    /// An add-on update by someone else (the console, `aws eks update-addon`, Terraform),
    /// through the same code as the wire: waits for it to end and returns it.
    pub async fn user_update(
        &self,
        version: Option<&str>,
        configuration_values: Option<&str>,
        resolve_conflicts: &str,
    ) -> Update {
        let id = self
            .start_update(version, configuration_values, resolve_conflicts)
            .unwrap();
        for _ in 0..200 {
            let update = self.update(&id).unwrap();
            if update.status != "InProgress" {
                return update;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("update {id} did not end");
    }

    fn start_update(
        &self,
        version: Option<&str>,
        configuration_values: Option<&str>,
        resolve_conflicts: &str,
    ) -> Result<String, Box<Response>> {
        let mut inner = self.inner.lock().unwrap();
        if inner.status == "UPDATING" {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestException",
                "the add-on is being updated",
            )));
        }
        if let Some(text) = configuration_values {
            let parsed = serde_json::from_str::<Value>(text)
                .ok()
                .or_else(|| serde_yaml_ng::from_str::<Value>(text).ok());
            let Some(parsed) = parsed else {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterException",
                    "configurationValues is not valid JSON or YAML",
                )));
            };
            let validator = jsonschema::validator_for(&schema()).unwrap();
            if let Some(problem) = validator.iter_errors(&parsed).next() {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterException",
                    &format!("ConfigurationValue provided in request is not supported: {problem}"),
                )));
            }
            inner.configuration_values = Some(text.to_owned());
        }
        if let Some(version) = version {
            inner.version = version.to_owned();
        }
        inner.next_id += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", inner.next_id);
        inner.status = "UPDATING".into();
        inner.updates.insert(
            id.clone(),
            Update {
                id: id.clone(),
                status: "InProgress".into(),
                errors: vec![],
                resolve_conflicts: resolve_conflicts.to_owned(),
                configuration_values: configuration_values.map(str::to_owned),
            },
        );
        drop(inner);
        let double = self.clone();
        let (id2, resolve) = (id.clone(), resolve_conflicts.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let result = double.apply(&resolve).await;
            let mut inner = double.inner.lock().unwrap();
            inner.status = if result.is_ok() { "ACTIVE" } else { "DEGRADED" }.into();
            let update = inner.updates.get_mut(&id2).unwrap();
            match result {
                Ok(()) => update.status = "Successful".into(),
                Err(message) => {
                    update.status = "Failed".into();
                    update
                        .errors
                        .push(("ConfigurationConflict".into(), message));
                }
            }
        });
        Ok(id)
    }

    /// The add-on's aws-node DaemonSet: the default env with configurationValues.env over it.
    fn manifest(&self, drop_env: &BTreeSet<String>) -> Value {
        let config: Value = self
            .configuration_values()
            .and_then(|t| {
                serde_json::from_str(&t)
                    .ok()
                    .or_else(|| serde_yaml_ng::from_str(&t).ok())
            })
            .unwrap_or(json!({}));
        let mut env: Vec<(String, String)> = EKS_ADDON_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in config["env"].as_object().into_iter().flatten() {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            match env.iter_mut().find(|(name, _)| name == k) {
                Some(entry) => entry.1 = v,
                None => env.push((k.clone(), v)),
            }
        }
        env.retain(|(k, _)| !drop_env.contains(k));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut ds = serde_json::to_value(aws_node_ds(&pairs, &[])).unwrap();
        ds["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        ds
    }

    /// Server-side apply of the add-on as manager `eks`, by `resolve_conflicts`.
    async fn apply(&self, resolve_conflicts: &str) -> Result<(), String> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), "kube-system");
        let mut preserved = BTreeSet::new();
        for _ in 0..20 {
            let mut params = PatchParams::apply("eks");
            params.force = resolve_conflicts == "OVERWRITE";
            match api
                .patch(
                    "aws-node",
                    &params,
                    &Patch::Apply(self.manifest(&preserved)),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    if resolve_conflicts != "PRESERVE" {
                        return Err(status.message);
                    }
                    // PRESERVE: the conflicting env entries keep their values and owners.
                    let before = preserved.len();
                    for part in status.message.split("env[name=\"").skip(1) {
                        if let Some(name) = part.split('"').next() {
                            preserved.insert(name.to_owned());
                        }
                    }
                    if preserved.len() == before {
                        return Err(status.message);
                    }
                }
                Err(err) => return Err(err.to_string()),
            }
        }
        Err("too many conflicts".into())
    }

    fn denied(&self, action: &str) -> Option<Response> {
        self.inner.lock().unwrap().denied.contains(action).then(|| {
            error(StatusCode::FORBIDDEN, "AccessDeniedException", &format!(
                "User: arn:aws:sts::111122223333:assumed-role/vpc-cni-tuner/e2e is not authorized to perform: eks:{action} on resource: arn:aws:eks:us-west-2:111122223333:addon/{CLUSTER}/{ADDON}/x"
            ))
        })
    }

    fn check(&self, cluster: &str, addon: &str, action: &str) -> Option<Response> {
        if let Some(denied) = self.denied(action) {
            return Some(denied);
        }
        (cluster != CLUSTER || addon != ADDON).then(|| {
            error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("No addon: {addon} found in cluster: {cluster}"),
            )
        })
    }

    fn addon_json(&self) -> Value {
        let inner = self.inner.lock().unwrap();
        let mut addon = json!({
            "addonName": ADDON, "clusterName": CLUSTER, "status": inner.status,
            "addonVersion": inner.version, "health": {"issues": []},
            "addonArn": format!("arn:aws:eks:us-west-2:111122223333:addon/{CLUSTER}/{ADDON}/x"),
            "createdAt": 1.7e9, "modifiedAt": 1.7e9, "tags": {},
        });
        if let Some(values) = &inner.configuration_values {
            addon["configurationValues"] = json!(values);
        }
        addon
    }
}

fn update_json(update: &Update) -> Value {
    json!({"update": {
        "id": update.id, "status": update.status, "type": "AddonUpdate", "createdAt": 1.7e9,
        "params": [{"type": "ResolveConflicts", "value": update.resolve_conflicts}],
        "errors": update.errors.iter().map(|(code, message)| json!({
            "errorCode": code, "errorMessage": message, "resourceIds": [ADDON]})).collect::<Vec<_>>(),
    }})
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", code.parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (status, headers, json!({"message": message}).to_string()).into_response()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn ok(body: Value) -> Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn record(
    State(double): State<EksDouble>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    double.inner.lock().unwrap().requests.push((
        request.method().to_string(),
        request.uri().path().to_owned(),
    ));
    next.run(request).await
}

async fn describe_addon(
    State(d): State<EksDouble>,
    Path((cluster, addon)): Path<(String, String)>,
) -> Response {
    if let Some(err) = d.check(&cluster, &addon, "DescribeAddon") {
        return err;
    }
    ok(json!({"addon": d.addon_json()}))
}

async fn update_addon(
    State(d): State<EksDouble>,
    Path((cluster, addon)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(err) = d.check(&cluster, &addon, "UpdateAddon") {
        return err;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let resolve = body["resolveConflicts"].as_str().unwrap_or("NONE");
    match d.start_update(
        body["addonVersion"].as_str(),
        body["configurationValues"].as_str(),
        resolve,
    ) {
        Ok(id) => ok(update_json(&d.update(&id).unwrap())),
        Err(response) => *response,
    }
}

async fn describe_update(
    State(d): State<EksDouble>,
    Path((cluster, id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let query = query(&uri);
    if let Some(err) = d.check(
        &cluster,
        query.get("addonName").map(String::as_str).unwrap_or(ADDON),
        "DescribeUpdate",
    ) {
        return err;
    }
    match d.update(&id) {
        Some(update) => ok(update_json(&update)),
        None => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("No update {id}"),
        ),
    }
}

async fn describe_configuration(State(d): State<EksDouble>, uri: Uri) -> Response {
    let query = query(&uri);
    if let Some(err) = d.denied("DescribeAddonConfiguration") {
        return err;
    }
    let version = query.get("addonVersion").cloned().unwrap_or_default();
    ok(json!({"addonName": ADDON, "addonVersion": version,
              "configurationSchema": schema().to_string(), "podIdentityConfiguration": []}))
}
