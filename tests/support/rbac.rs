//! Every request a test's mocked API server receives is checked against the controller's declared
//! `API_CALLS`, the list the Helm chart's RBAC is checked against (`tests/chart.rs`). A request
//! the list does not permit fails the test, so the chart's RBAC is proven sufficient by every
//! reconcile, watch and lease test.

use std::sync::Mutex;

use http::Uri;
use vpc_cni_tuner::controller::{API_CALLS, ApiCall, Scope};

/// The names the operator under test was given (`--daemonset`, `--lease-namespace/--lease-name`).
pub struct Names {
    pub daemonset: (&'static str, &'static str),
    pub lease: (&'static str, &'static str),
}

pub const DEFAULT_NAMES: Names = Names {
    daemonset: ("kube-system", "aws-node"),
    lease: ("default", "vpc-cni-tuner"),
};

/// One request as RBAC sees it.
#[derive(Debug)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub verb: &'static str,
    pub namespace: Option<String>,
    /// The object's name; for list and watch, the `metadata.name` field selector.
    pub name: Option<String>,
}

pub fn access(method: &str, uri: &Uri) -> Access {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (group, mut rest) = match segments.first() {
        Some(&"api") => (String::new(), &segments[2..]),
        Some(&"apis") => (segments[1].to_owned(), &segments[3..]),
        _ => panic!("not a Kubernetes API path: {uri}"),
    };
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        namespace = Some(rest[1].to_owned());
        rest = &rest[2..];
    }
    let mut resource = rest[0].to_owned();
    let mut name = rest.get(1).map(|n| (*n).to_owned());
    if let Some(sub) = rest.get(2) {
        resource = format!("{resource}/{sub}");
    }
    let query = uri.query().unwrap_or_default();
    let params: Vec<(String, String)> = url_pairs(query);
    let verb = match method {
        "GET" if name.is_some() => "get",
        "GET"
            if params
                .iter()
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1")) =>
        {
            "watch"
        }
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if name.is_some() => "delete",
        "DELETE" => "deletecollection",
        other => panic!("unexpected method {other} {uri}"),
    };
    if matches!(verb, "list" | "watch") {
        name = params
            .iter()
            .find(|(k, _)| k == "fieldSelector")
            .and_then(|(_, v)| v.strip_prefix("metadata.name=").map(str::to_owned));
    }
    Access {
        group,
        resource,
        verb,
        namespace,
        name,
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The declared call that permits this request, if any.
pub fn permitting(access: &Access, names: &Names) -> Option<&'static ApiCall> {
    let ns = access.namespace.as_deref();
    let name = access.name.as_deref();
    API_CALLS.iter().find(|call| {
        call.group == access.group
            && call.resource == access.resource
            && call.verb == access.verb
            && match call.scope {
                Scope::Cluster => true,
                Scope::ManagedDaemonSet => {
                    ns == Some(names.daemonset.0) && name == Some(names.daemonset.1)
                }
                Scope::Lease => ns == Some(names.lease.0) && name == Some(names.lease.1),
                Scope::LeaseNamespace => ns == Some(names.lease.0),
                Scope::DefaultNamespace => ns == Some("default"),
                // The mocked-API tests run no webhook.
                Scope::WebhookSecret | Scope::WebhookConfiguration => false,
                Scope::AwsNodeNamespace => ns == Some(names.daemonset.0),
            }
    })
}

/// Requests no declared call permits, kept for [`assert_none_denied`]: a panic inside a mocked
/// API service may be swallowed by a task nobody joins.
static DENIED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Fails the test when the controller's request is not one `API_CALLS` permits.
pub fn assert_permitted(method: &str, uri: &Uri, names: &Names) {
    let access = access(method, uri);
    if permitting(&access, names).is_none() {
        let message = format!(
            "{method} {uri} ({access:?}) is not in controller::API_CALLS: the chart's RBAC would deny it"
        );
        DENIED.lock().unwrap().push(message.clone());
        panic!("{message}");
    }
}

/// Fails when any request so far was not permitted.
pub fn assert_none_denied() {
    let denied = DENIED.lock().unwrap();
    assert!(denied.is_empty(), "denied requests: {denied:#?}");
}
