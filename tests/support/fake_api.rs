//! One in-memory fake Kubernetes API server for every test that does not need the real one (the
//! reconcile scenarios, API faults, leases, shutdown, the fleet bench), and [`MockApi`]: a
//! reconcile [`Context`] wired to it plus a [`Verifier`] that checks the requests by named
//! step ([`apply_env`], [`event`], [`status`]).
//!
//! What it simulates, as a kube `Client` service (no socket):
//! - objects stored as JSON under their API path, with a resource version bumped on each write;
//! - GET of an object (404 when absent), LIST with `limit`/`continue` paging and the
//!   `metadata.name` field selector, WATCH (the stream ends at once, or with 410 Gone once
//!   after [`FakeApi::expire_next_watch`]), and the streaming initial list of a watch with
//!   `sendInitialEvents=true` (or 422 after [`FakeApi::refuse_streaming_lists`]);
//! - POST (409 when the object exists; Events are echoed), PUT with optimistic concurrency
//!   (409 on a stale `resourceVersion`), DELETE;
//! - server-side apply of the aws-node container's env (entries set, entries this manager
//!   owned and no longer sends removed, `managedFields` updated), of other objects' `spec`
//!   (applied fields merged in), and of a `status` subresource (the status replaced);
//! - synthetic collections too large to store ([`FakeApi::generate`]);
//! - faults: an error answer for one request or all ([`FakeApi::fail`], [`FakeApi::fail_all`]),
//!   and a held request ([`FakeApi::hold`]).
//!
//! What it does not: field ownership beyond that env, admission, defaulting, label selectors,
//! real watch events. Every request is checked against the chart's RBAC (`API_CALLS`) and
//! every apply for the field manager, `force` and content type; a violation is recorded and
//! fails [`FakeApi::assert_clean`] (a panic inside the service would be lost in kube's buffer
//! task).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vpc_cni_tuner::controller::{Context, Error, ReconcileReport, reconcile_fleet};
use vpc_cni_tuner::crd::{DaemonSetRef, FIELD_MANAGER, NodeNetworkPolicy};
use vpc_cni_tuner::eks_addon::CniConfigVia;
use vpc_cni_tuner::observe::facts::aws_node_facts;
use vpc_cni_tuner::plan::NodeFacts;
use vpc_cni_tuner::testing::{
    EKS_ADDON_ENV, FakeEks, default_policy, eks_addon_ds, owned_env_fields,
};

use super::rbac::{DEFAULT_NAMES, Names, access, permitting};

pub const DS_PATH: &str = "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node";
pub const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
pub const NODES_PATH: &str = "/api/v1/nodes";

pub fn policy_path(name: &str) -> String {
    format!("/apis/tuner.vpccni.io/v1alpha1/nodenetworkpolicies/{name}")
}

pub fn status_path(name: &str) -> String {
    format!("{}/status", policy_path(name))
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

type Generator = Arc<dyn Fn(usize) -> Value + Send + Sync>;

struct Rule {
    method: Option<Method>,
    path: Option<String>,
    /// `None`: every matching request.
    times: Option<usize>,
    action: Action,
}

enum Action {
    Error {
        code: u16,
        reason: String,
        retry_after: Option<u64>,
    },
    Hold {
        delay: Duration,
        arrived: mpsc::UnboundedSender<Instant>,
    },
}

struct State {
    names: Names,
    objects: BTreeMap<String, Value>,
    generated: BTreeMap<String, (usize, Generator)>,
    resource_version: u64,
    requests: Vec<Recorded>,
    problems: Vec<String>,
    rules: Vec<Rule>,
    expire_watch: Vec<String>,
    refuse_streaming_lists: bool,
}

/// The fake API server. Clones share the same state.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::with_names(DEFAULT_NAMES)
    }
}

impl FakeApi {
    /// An empty API server for an operator given the default names (`kube-system/aws-node`,
    /// lease `default/vpc-cni-tuner`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty API server for an operator given other DaemonSet or lease names.
    pub fn with_names(names: Names) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                names,
                objects: BTreeMap::new(),
                generated: BTreeMap::new(),
                resource_version: 1,
                requests: Vec::new(),
                problems: Vec::new(),
                rules: Vec::new(),
                expire_watch: Vec::new(),
                refuse_streaming_lists: false,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kube client whose every request this fake answers.
    pub fn client(&self, default_namespace: &str) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        Client::new(service, default_namespace)
    }

    /// Stores `object` (any Kubernetes object with apiVersion, kind and metadata) under its
    /// API path, keeping the `resourceVersion` it carries or giving it one.
    pub fn insert(&self, object: &impl Serialize) {
        let mut object = serde_json::to_value(object).unwrap_or(Value::Null);
        let path = object_path(&object);
        let mut state = self.state();
        match object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse::<u64>().ok())
        {
            Some(rv) => state.resource_version = state.resource_version.max(rv),
            None => {
                state.resource_version += 1;
                object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
            }
        }
        state.objects.insert(path, object);
    }

    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state().objects.remove(path)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    /// A collection of `len` objects made on demand by `item(i)`, for fleets too large to hold.
    pub fn generate(
        &self,
        collection: &str,
        len: usize,
        item: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) {
        self.state()
            .generated
            .insert(collection.to_owned(), (len, Arc::new(item)));
    }

    /// The next request `method path` gets this error (`reason` as the API server's Status
    /// reason) instead of its answer.
    pub fn fail(&self, method: Method, path: &str, code: u16, reason: &str) {
        self.fail_with(method, path, code, reason, None);
    }

    /// Like [`Self::fail`], with `details.retryAfterSeconds`.
    pub fn fail_with(
        &self,
        method: Method,
        path: &str,
        code: u16,
        reason: &str,
        retry_after: Option<u64>,
    ) {
        self.state().rules.push(Rule {
            method: Some(method),
            path: Some(path.to_owned()),
            times: Some(1),
            action: Action::Error {
                code,
                reason: reason.to_owned(),
                retry_after,
            },
        });
    }

    /// Every request from now on gets this error: an API server that is down.
    pub fn fail_all(&self, code: u16, reason: &str) {
        self.state().rules.push(Rule {
            method: None,
            path: None,
            times: None,
            action: Action::Error {
                code,
                reason: reason.to_owned(),
                retry_after: None,
            },
        });
    }

    /// Every request `method path` is answered `delay` late; the receiver gets the instant each
    /// one arrived.
    pub fn hold(
        &self,
        method: Method,
        path: &str,
        delay: Duration,
    ) -> mpsc::UnboundedReceiver<Instant> {
        let (arrived, receiver) = mpsc::unbounded_channel();
        self.state().rules.push(Rule {
            method: Some(method),
            path: Some(path.to_owned()),
            times: None,
            action: Action::Hold { delay, arrived },
        });
        receiver
    }

    /// Answers a watch with `sendInitialEvents=true` with 422, as an API server without the
    /// WatchList feature does.
    pub fn refuse_streaming_lists(&self) {
        self.state().refuse_streaming_lists = true;
    }

    /// The next watch of `collection` ends with 410 Gone (resource version too old).
    pub fn expire_next_watch(&self, collection: &str) {
        self.state().expire_watch.push(collection.to_owned());
    }

    /// The requests so far, and forgets them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.state().requests)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Fails when a request so far was not one the chart's RBAC permits, or was an apply
    /// without this operator's field manager and `force`.
    pub fn assert_clean(&self) {
        let problems = self.state().problems.clone();
        assert!(
            problems.is_empty(),
            "requests the real API server would refuse: {problems:#?}"
        );
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let hold = {
            let mut state = self.state();
            if permitting(&access(method.as_str(), &uri), &state.names).is_none() {
                let problem = format!(
                    "{method} {uri}: not in controller::API_CALLS, the chart's RBAC would deny it"
                );
                state.problems.push(problem);
            }
            if method == Method::PATCH && content_type == "application/json-patch+json" {
                // Only the add-on mode's release of this operator's managedFields entries.
                let releases = body.as_array().is_some_and(|ops| {
                    ops.iter().all(|op| {
                        op["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("/metadata/managedFields/"))
                            && (op["op"] == "remove"
                                || (op["op"] == "test" && op["value"] == FIELD_MANAGER))
                    })
                });
                if !releases {
                    state.problems.push(format!(
                        "PATCH {uri}: a JSON patch that is not a release of {FIELD_MANAGER}'s managedFields"
                    ));
                }
            } else if method == Method::PATCH {
                let params = query_params(&query);
                let manager = params.get("fieldManager").map(String::as_str);
                if manager != Some(FIELD_MANAGER)
                    || params.get("force").map(String::as_str) != Some("true")
                    || content_type != "application/apply-patch+yaml"
                {
                    let problem = format!(
                        "PATCH {uri} ({content_type}): not a forced server-side apply by {FIELD_MANAGER}"
                    );
                    state.problems.push(problem);
                }
            }
            state.requests.push(Recorded {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
            match state.take_rule(&method, &path) {
                Some(Action::Error {
                    code,
                    reason,
                    retry_after,
                }) => {
                    let mut status = status_body(code, &reason);
                    if let Some(seconds) = retry_after {
                        status["details"] = json!({"retryAfterSeconds": seconds});
                    }
                    return respond(code, &status);
                }
                Some(Action::Hold { delay, arrived }) => {
                    let _ = arrived.send(Instant::now());
                    Some(delay)
                }
                None => None,
            }
        };
        if let Some(delay) = hold {
            tokio::time::sleep(delay).await;
        }
        let (code, answer) = self.state().answer(&method, &path, &query, body);
        match answer {
            Answer::Json(value) => respond(code, &value),
            Answer::Raw(bytes) => Response::builder()
                .status(code)
                .body(Body::from(bytes))
                .unwrap_or_else(|_| Response::new(Body::empty())),
        }
    }
}

enum Answer {
    Json(Value),
    Raw(Vec<u8>),
}

impl State {
    fn take_rule(&mut self, method: &Method, path: &str) -> Option<Action> {
        let index = self.rules.iter().position(|rule| {
            rule.method.as_ref().is_none_or(|m| m == method)
                && rule.path.as_deref().is_none_or(|p| p == path)
        })?;
        let rule = &mut self.rules[index];
        let action = match &rule.action {
            Action::Error {
                code,
                reason,
                retry_after,
            } => Action::Error {
                code: *code,
                reason: reason.clone(),
                retry_after: *retry_after,
            },
            Action::Hold { delay, arrived } => Action::Hold {
                delay: *delay,
                arrived: arrived.clone(),
            },
        };
        if let Some(times) = &mut rule.times {
            *times -= 1;
            if *times == 0 {
                self.rules.remove(index);
            }
        }
        Some(action)
    }

    fn bump(&mut self, object: &mut Value) {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
    }

    fn answer(&mut self, method: &Method, path: &str, query: &str, body: Value) -> (u16, Answer) {
        let route = Route::parse(path);
        let params = query_params(query);
        let json = |code: u16, value: Value| (code, Answer::Json(value));
        match *method {
            Method::GET if route.name.is_none() => {
                if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    let collection = route.collection();
                    if let Some(i) = self.expire_watch.iter().position(|c| *c == collection) {
                        self.expire_watch.remove(i);
                        let gone = json!({"type": "ERROR", "object": status_body(410, "Expired")});
                        return (200, Answer::Raw(format!("{gone}\n").into_bytes()));
                    }
                    if params.get("sendInitialEvents").is_some_and(|v| v == "true") {
                        if self.refuse_streaming_lists {
                            return json(422, status_body(422, "Invalid"));
                        }
                        return (200, Answer::Raw(self.initial_events(&route, &params)));
                    }
                    return (200, Answer::Raw(Vec::new()));
                }
                json(200, self.list(&route, &params))
            }
            Method::GET => match self.objects.get(path) {
                Some(object) => json(200, object.clone()),
                None => json(404, status_body(404, "NotFound")),
            },
            Method::POST if route.resource == "events" => {
                let mut event = body;
                event["metadata"]["name"] = json!(format!("event-{}", self.requests.len()));
                json(201, event)
            }
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return json(409, status_body(409, "AlreadyExists"));
                }
                let mut created = body;
                self.bump(&mut created);
                self.objects.insert(key, created.clone());
                json(201, created)
            }
            Method::PUT => {
                let current = self
                    .objects
                    .get(path)
                    .map(|o| o["metadata"]["resourceVersion"].clone());
                match current {
                    None => json(404, status_body(404, "NotFound")),
                    Some(rv) if rv != body["metadata"]["resourceVersion"] => {
                        json(409, status_body(409, "Conflict"))
                    }
                    Some(_) => {
                        let mut replaced = body;
                        self.bump(&mut replaced);
                        self.objects.insert(path.to_owned(), replaced.clone());
                        json(200, replaced)
                    }
                }
            }
            Method::PATCH => {
                let key = route.object_key();
                let Some(mut object) = self.objects.get(&key).cloned() else {
                    return json(404, status_body(404, "NotFound"));
                };
                match route.subresource.as_deref() {
                    _ if body.is_array() => {
                        let applied = serde_json::from_value::<json_patch::Patch>(body)
                            .ok()
                            .and_then(|patch| json_patch::patch(&mut object, &patch).ok());
                        if applied.is_none() {
                            return json(422, status_body(422, "Invalid"));
                        }
                    }
                    Some("status") => object["status"] = body["status"].clone(),
                    _ if route.resource == "daemonsets" => apply_container_env(&mut object, &body),
                    _ => merge(&mut object["spec"], &body["spec"]),
                }
                self.bump(&mut object);
                self.objects.insert(key, object.clone());
                json(200, object)
            }
            Method::DELETE => match self.objects.remove(path) {
                Some(object) => json(200, object),
                None => json(404, status_body(404, "NotFound")),
            },
            _ => json(405, status_body(405, "MethodNotAllowed")),
        }
    }

    /// A streaming initial list: an ADDED event per object, then the BOOKMARK that ends it.
    fn initial_events(&self, route: &Route, params: &BTreeMap<String, String>) -> Vec<u8> {
        let mut unpaged = params.clone();
        unpaged.remove("limit");
        unpaged.remove("continue");
        let list = self.list(route, &unpaged);
        let mut out = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            out.extend(json!({"type": "ADDED", "object": item}).to_string().bytes());
            out.push(b'\n');
        }
        let bookmark = json!({"type": "BOOKMARK", "object": {
            "apiVersion": route.api_version(), "kind": kind_of(&route.resource),
            "metadata": {"resourceVersion": self.resource_version.to_string(),
                         "annotations": {"k8s.io/initial-events-end": "true"}}}});
        out.extend(bookmark.to_string().bytes());
        out.push(b'\n');
        out
    }

    fn list(&self, route: &Route, params: &BTreeMap<String, String>) -> Value {
        let name = params
            .get("fieldSelector")
            .and_then(|s| s.strip_prefix("metadata.name="));
        let collection = route.collection();
        let start: usize = params
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: Option<usize> = params.get("limit").and_then(|l| l.parse().ok());
        let (items, total): (Vec<Value>, usize) = match self.generated.get(&collection) {
            Some((len, item)) => {
                let end = limit.map_or(*len, |l| (start + l).min(*len));
                ((start..end).map(|i| item(i)).collect(), *len)
            }
            None => {
                let all: Vec<&Value> = self
                    .objects
                    .iter()
                    .filter(|(key, _)| route.contains(key))
                    .map(|(_, object)| object)
                    .filter(|o| name.is_none_or(|n| o["metadata"]["name"] == n))
                    .collect();
                let end = limit.map_or(all.len(), |l| (start + l).min(all.len()));
                (
                    all[start.min(end)..end]
                        .iter()
                        .map(|o| (*o).clone())
                        .collect(),
                    all.len(),
                )
            }
        };
        let mut metadata = json!({"resourceVersion": self.resource_version.to_string()});
        let next = start + items.len();
        if next < total {
            metadata["continue"] = json!(next.to_string());
        }
        json!({"apiVersion": route.api_version(), "kind": format!("{}List", kind_of(&route.resource)),
               "metadata": metadata, "items": items})
    }
}

/// A parsed API path: `/api/v1` or `/apis/{group}/{version}`, an optional namespace, the
/// resource, an optional name and subresource.
struct Route {
    prefix: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let split = if segments.first() == Some(&"api") {
            2
        } else {
            3
        };
        let prefix = format!("/{}", segments[..split.min(segments.len())].join("/"));
        let mut rest = segments.get(split..).unwrap_or_default();
        let mut namespace = None;
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
            namespace = Some(rest[1].to_owned());
            rest = &rest[2..];
        }
        Self {
            prefix,
            namespace,
            resource: rest.first().copied().unwrap_or_default().to_owned(),
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource: rest.get(2).map(|s| (*s).to_owned()),
        }
    }

    fn collection(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.prefix, self.resource),
            None => format!("{}/{}", self.prefix, self.resource),
        }
    }

    fn object_key(&self) -> String {
        format!(
            "{}/{}",
            self.collection(),
            self.name.as_deref().unwrap_or_default()
        )
    }

    /// Whether the object stored under `key` is in this (possibly all-namespaces) collection.
    fn contains(&self, key: &str) -> bool {
        let object = Route::parse(key);
        object.prefix == self.prefix
            && object.resource == self.resource
            && object.name.is_some()
            && object.subresource.is_none()
            && (self.namespace.is_none() || object.namespace == self.namespace)
    }

    fn api_version(&self) -> String {
        self.prefix
            .trim_start_matches("/api/")
            .trim_start_matches("/apis/")
            .to_owned()
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "nodes" => "Node",
        "daemonsets" => "DaemonSet",
        "nodenetworkpolicies" => "NodeNetworkPolicy",
        "leases" => "Lease",
        "events" => "Event",
        "nodepools" => "NodePool",
        "ec2nodeclasses" => "EC2NodeClass",
        _ => "Object",
    }
}

fn plural_of(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// The API path an object is stored under.
fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let resource = plural_of(object["kind"].as_str().unwrap_or_default());
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{resource}/{name}"),
        None => format!("{prefix}/{resource}/{name}"),
    }
}

/// Server-side apply of container env, as far as this operator uses it: each applied entry is
/// set (appended when new), entries this manager owned before and no longer sends are removed,
/// and the manager's `managedFields` entry names what it now owns.
fn apply_container_env(object: &mut Value, applied: &Value) {
    let owned_before: Vec<String> = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["manager"] == FIELD_MANAGER)
        .flat_map(|f| {
            let containers = &f["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"];
            containers
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
                .flat_map(|c| c["f:env"].as_object().into_iter().flat_map(|e| e.keys()))
                .filter_map(|k| k.strip_prefix("k:{\"name\":\"")?.strip_suffix("\"}"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut now_owned = Vec::new();
    let applied_containers = applied["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_array_mut() {
        for applied_container in &applied_containers {
            let Some(container) = containers
                .iter_mut()
                .find(|c| c["name"] == applied_container["name"])
            else {
                continue;
            };
            let entries = applied_container["env"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
            let mut env = container["env"].as_array().cloned().unwrap_or_default();
            env.retain(|e| {
                let name = e["name"].as_str().unwrap_or_default();
                names.contains(&name) || !owned_before.iter().any(|o| o == name)
            });
            for entry in &entries {
                match env.iter_mut().find(|e| e["name"] == entry["name"]) {
                    Some(existing) => *existing = entry.clone(),
                    None => env.push(entry.clone()),
                }
            }
            container["env"] = Value::Array(env);
            now_owned.extend(names.iter().map(|n| (*n).to_owned()));
        }
    }
    let owned: Vec<&str> = now_owned.iter().map(String::as_str).collect();
    let mut fields: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    fields.retain(|f| f["manager"] != FIELD_MANAGER);
    if !owned.is_empty() {
        fields.push(owned_env_fields(FIELD_MANAGER, &owned));
    }
    object["metadata"]["managedFields"] = Value::Array(fields);
}

/// Server-side apply of plain fields: the applied maps merged in, other values replaced.
fn merge(into: &mut Value, applied: &Value) {
    match (into, applied) {
        (Value::Object(into), Value::Object(applied)) => {
            for (key, value) in applied {
                merge(into.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (into, applied) => *into = applied.clone(),
    }
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": format!("{reason} (fake API server)"), "reason": reason, "code": code})
}

fn respond(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(value).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// One expected request of a reconcile and a check of its body.
pub struct Step {
    method: Method,
    path: String,
    check: Box<dyn Fn(&Value)>,
}

impl Step {
    /// Any other request.
    pub fn new(method: Method, path: &str, check: impl Fn(&Value) + 'static) -> Self {
        Self {
            method,
            path: path.to_owned(),
            check: Box::new(check),
        }
    }
}

/// The server-side apply of the aws-node env.
pub fn apply_env(check: impl Fn(&Value) + 'static) -> Step {
    Step {
        method: Method::PATCH,
        path: DS_PATH.to_owned(),
        check: Box::new(check),
    }
}

/// An Event about a policy.
pub fn event(check: impl Fn(&Value) + 'static) -> Step {
    Step {
        method: Method::POST,
        path: EVENTS_PATH.to_owned(),
        check: Box::new(check),
    }
}

/// The status apply of policy `name`.
pub fn status(name: &str, check: impl Fn(&Value) + 'static) -> Step {
    Step {
        method: Method::PATCH,
        path: status_path(name),
        check: Box::new(check),
    }
}

/// A mocked API server for reconcile scenarios: [`MockApi::new`] gives the reconcile context
/// and the verifier that fills both the fake's store and the context's caches, runs the
/// reconcile, and checks its requests step by step.
pub struct MockApi;

impl MockApi {
    /// A leader's context: it writes.
    #[allow(clippy::new_ret_no_self)] // the pair is the point: a context and its verifier
    pub fn new() -> (Context, Verifier) {
        Self::with_leader(true)
    }

    /// A leader's context on a cluster of the policy `default` (every node, the defaults),
    /// these nodes and, when given, this aws-node.
    pub fn cluster(nodes: Vec<NodeFacts>, ds: Option<&DaemonSet>) -> (Context, Verifier) {
        let (ctx, api) = Self::new();
        api.fill(&ctx, vec![default_policy()], nodes, ds);
        (ctx, api)
    }

    /// A follower's context: it plans, but must write nothing.
    pub fn follower() -> (Context, Verifier) {
        Self::with_leader(false)
    }

    /// A leader in add-on mode on a cluster of `policy`, these nodes and the EKS add-on's
    /// aws-node (this operator owning `owned` from a DaemonSet-mode run).
    pub fn addon_cluster(
        policy: NodeNetworkPolicy,
        nodes: Vec<NodeFacts>,
        owned: &[&str],
    ) -> (Context, Verifier, FakeEks) {
        let (ctx, api, eks) = Self::addon(true);
        api.fill(
            &ctx,
            vec![policy],
            nodes,
            Some(&eks_addon_ds(EKS_ADDON_ENV, owned)),
        );
        (ctx, api, eks)
    }

    /// A context in add-on mode's default (`--cni-config-via auto`, the cluster name from
    /// aws-node's `CLUSTER_NAME`) with the in-process EKS.
    pub fn addon(leader: bool) -> (Context, Verifier, FakeEks) {
        let (ctx, api) = Self::with_leader(leader);
        let eks = FakeEks::default();
        let ctx = ctx.with_eks(CniConfigVia::Auto, None, Arc::new(eks.clone()));
        (ctx, api, eks)
    }

    fn with_leader(leader: bool) -> (Context, Verifier) {
        let api = FakeApi::new();
        let ctx = Context::new(
            api.client("default"),
            DaemonSetRef::default(),
            Arc::new(AtomicBool::new(leader)),
        );
        (ctx, Verifier { api })
    }
}

pub struct Verifier {
    pub api: FakeApi,
}

impl std::ops::Deref for Verifier {
    type Target = FakeApi;

    fn deref(&self) -> &FakeApi {
        &self.api
    }
}

impl Verifier {
    /// The cluster: these policies, nodes (named `node-0`, `node-1`, ...) and aws-node, in the
    /// fake API server and in the context's caches, as the watches would have brought them.
    pub fn fill(
        &self,
        ctx: &Context,
        policies: Vec<NodeNetworkPolicy>,
        nodes: Vec<NodeFacts>,
        ds: Option<&DaemonSet>,
    ) {
        for policy in &policies {
            self.api.insert(policy);
        }
        ctx.observed()
            .policies
            .replace_all(policies.into_iter().map(|p| (p.name_any(), p)));
        ctx.observed().nodes.replace_all(
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| (format!("node-{i}"), n)),
        );
        if let Some(ds) = ds {
            self.api.insert(ds);
        }
        ctx.observed()
            .aws_node
            .replace_all(ds.map(|ds| ("kube-system/aws-node".to_owned(), aws_node_facts(ds))));
    }

    /// EKS applies the add-on's configurationValues to aws-node, as it does after an update:
    /// the add-on's env over the add-on's defaults, in the fake and in the cache; the update is
    /// done and the add-on ACTIVE.
    pub fn eks_applies(&self, ctx: &Context, eks: &FakeEks) {
        eks.finish_updates();
        let values = eks.state().configuration_values.clone().unwrap_or_default();
        let document: Value = serde_json::from_str(&values).unwrap_or(Value::Null);
        let mut env: BTreeMap<String, String> = EKS_ADDON_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in document["env"].as_object().into_iter().flatten() {
            env.insert(name.clone(), value.as_str().unwrap_or_default().to_owned());
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ds = eks_addon_ds(&env, &[]);
        self.api.insert(&ds);
        ctx.observed()
            .aws_node
            .replace_all([("kube-system/aws-node".to_owned(), aws_node_facts(&ds))]);
    }

    /// The aws-node DaemonSet as the fake holds it now.
    pub fn daemonset(&self) -> Value {
        self.api.get(DS_PATH).unwrap_or(Value::Null)
    }

    /// Status applies go back into the policy cache, as the policy watch would bring them.
    pub fn sync_policies(&self, ctx: &Context) {
        let policies: Vec<(String, NodeNetworkPolicy)> = self
            .api
            .state()
            .objects
            .iter()
            .filter(|(k, _)| k.contains("/nodenetworkpolicies/"))
            .filter_map(|(_, v)| serde_json::from_value::<NodeNetworkPolicy>(v.clone()).ok())
            .map(|p| (p.name_any(), p))
            .collect();
        ctx.observed().policies.replace_all(policies);
    }

    /// Runs one fleet reconcile, which must succeed and make exactly these requests in order.
    pub async fn reconcile(&self, ctx: &Context, steps: Vec<Step>) -> ReconcileReport {
        self.attempt(ctx, steps).await.expect("reconcile succeeds")
    }

    /// Like [`Self::reconcile`], returning the reconcile's result instead of requiring success.
    pub async fn attempt(&self, ctx: &Context, steps: Vec<Step>) -> Result<ReconcileReport, Error> {
        let result = tokio::time::timeout(Duration::from_secs(10), reconcile_fleet(ctx))
            .await
            .expect("the reconcile hung");
        self.verify(steps);
        result
    }

    /// The requests since the last check are exactly `steps`, in order, and each passes its
    /// step's check.
    pub fn verify(&self, steps: Vec<Step>) {
        let requests = self.api.take_requests();
        let seen: Vec<String> = requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        let wanted: Vec<String> = steps
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert_eq!(seen, wanted, "the reconcile's requests");
        for (request, step) in requests.iter().zip(&steps) {
            (step.check)(&request.body);
        }
        self.api.assert_clean();
    }
}

/// The literal env entries of an apply body's (first) container.
pub fn env_of(body: &Value) -> Vec<(String, String)> {
    body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env list")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub fn condition<'a>(status_body: &'a Value, type_: &str) -> &'a Value {
    status_body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status_body}"))
}

pub fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
