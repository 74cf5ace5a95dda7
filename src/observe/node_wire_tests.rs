use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tower::{Layer, ServiceExt};

use super::*;
use crate::observe::node_view::NodeView;

// Test-side messages: what kube-apiserver writes, with fields the decoder must skip (podCIDR,
// annotations, managedFields, allocatable, images, nodeInfo), in the field numbers of
// k8s.io/api core/v1 and k8s.io/apimachinery meta/v1 `generated.proto`.

#[derive(Clone, PartialEq, Message)]
struct FullNode {
    #[prost(message, optional, tag = "1")]
    metadata: Option<FullMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<FullSpec>,
    #[prost(message, optional, tag = "3")]
    status: Option<FullStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct FullMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(int64, optional, tag = "7")]
    generation: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(bytes = "vec", repeated, tag = "17")]
    managed_fields: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct FullSpec {
    #[prost(string, optional, tag = "1")]
    pod_cidr: Option<String>,
    #[prost(string, optional, tag = "3")]
    provider_id: Option<String>,
    #[prost(bool, optional, tag = "4")]
    unschedulable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct FullStatus {
    #[prost(btree_map = "string, message", tag = "1")]
    capacity: BTreeMap<String, Quantity>,
    #[prost(btree_map = "string, message", tag = "2")]
    allocatable: BTreeMap<String, Quantity>,
    #[prost(message, repeated, tag = "4")]
    conditions: Vec<FullCondition>,
    #[prost(bytes = "vec", optional, tag = "7")]
    node_info: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    images: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct FullCondition {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    status: Option<String>,
    #[prost(string, optional, tag = "5")]
    reason: Option<String>,
    #[prost(string, optional, tag = "6")]
    message: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct FullStatusObject {
    #[prost(string, optional, tag = "2")]
    status: Option<String>,
    #[prost(string, optional, tag = "3")]
    message: Option<String>,
    #[prost(string, optional, tag = "4")]
    reason: Option<String>,
    #[prost(int32, optional, tag = "6")]
    code: Option<i32>,
}

fn quantity(s: &str) -> Quantity {
    Quantity {
        string: Some(Bytes::from(s.to_owned())),
    }
}

fn kubelet_node(name: &str, instance_type: &str) -> FullNode {
    FullNode {
        metadata: Some(FullMeta {
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("1234".into()),
            generation: Some(1),
            labels: BTreeMap::from([
                ("kubernetes.io/hostname".into(), name.to_owned()),
                (
                    "node.kubernetes.io/instance-type".into(),
                    instance_type.to_owned(),
                ),
            ]),
            annotations: BTreeMap::from([("node.alpha.kubernetes.io/ttl".into(), "0".into())]),
            managed_fields: vec![vec![0x0a, 0x03, b'a', b'b', b'c']; 4],
        }),
        spec: Some(FullSpec {
            pod_cidr: Some("10.0.0.0/24".into()),
            provider_id: Some("aws:///us-west-2a/i-0123456789abcdef0".into()),
            unschedulable: Some(false),
        }),
        status: Some(FullStatus {
            capacity: BTreeMap::from([
                ("cpu".into(), quantity("2")),
                ("pods".into(), quantity("29")),
            ]),
            allocatable: BTreeMap::from([("pods".into(), quantity("29"))]),
            conditions: vec![
                FullCondition {
                    kind: Some("MemoryPressure".into()),
                    status: Some("False".into()),
                    reason: Some("KubeletHasSufficientMemory".into()),
                    message: Some("kubelet has sufficient memory available".into()),
                },
                FullCondition {
                    kind: Some("Ready".into()),
                    status: Some("False".into()),
                    reason: Some("KubeletNotReady".into()),
                    message: Some("container runtime network not ready".into()),
                },
            ],
            node_info: Some(vec![0x0a, 0x01, b'x']),
            images: vec![
                    b"\x0a\x40602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.2"
                        .to_vec();
                    30
                ],
        }),
    }
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`.
fn wrapped(kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw.into()),
    };
    [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
}

fn event(kind: &str, object_kind: &str, raw: Vec<u8>) -> Vec<u8> {
    WatchEvent {
        kind: Some(kind.into()),
        object: Some(RawExtension {
            raw: Some(wrapped(object_kind, raw).into()),
        }),
    }
    .encode_to_vec()
}

/// A length-delimited watch body of these events.
fn frames(events: &[Vec<u8>]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| {
            let len = u32::try_from(e.len()).unwrap_or(u32::MAX).to_be_bytes();
            [len.to_vec(), e.clone()].concat()
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

#[test]
fn a_watch_event_keeps_what_the_node_view_reads_and_nothing_else() -> anyhow::Result<()> {
    let node = kubelet_node("ip-10-0-0-1", "m5.large");
    let line = watch_event_json(event("ADDED", "Node", node.encode_to_vec()).into())?;
    assert_eq!(line.last(), Some(&b'\n'));
    let line: Line = serde_json::from_slice(&line)?;
    assert_eq!(line.kind, "ADDED");
    assert_eq!(line.object["apiVersion"], "v1");
    assert_eq!(line.object["kind"], "Node");
    let view: NodeView = serde_json::from_value(line.object.clone())?;
    assert_eq!(view.metadata.name.as_deref(), Some("ip-10-0-0-1"));
    assert_eq!(line.object["metadata"]["name"], "ip-10-0-0-1");
    assert_eq!(view.metadata.resource_version.as_deref(), Some("1234"));
    assert_eq!(
        view.labels.get("node.kubernetes.io/instance-type"),
        Some("m5.large")
    );
    assert_eq!(
        view.spec.provider_id.as_deref(),
        Some("aws:///us-west-2a/i-0123456789abcdef0")
    );
    let pods = view.status.capacity.and_then(|c| c.pods).map(|q| q.0);
    assert_eq!(pods.as_deref(), Some("29"));
    assert_eq!(view.status.ready, Some(false));
    // Only what the view reads: capacity.pods, the Ready condition, no uid.
    assert_eq!(
        line.object["status"]["capacity"],
        serde_json::json!({"pods": "29"})
    );
    assert_eq!(
        line.object["status"]["conditions"],
        serde_json::json!([{"type": "Ready", "status": "False"}])
    );
    // Skipped: annotations, managedFields, podCIDR, allocatable, images, condition messages.
    let text = line.object.to_string();
    for skipped in [
        "uid-ip-10-0-0-1",
        "MemoryPressure",
        "ttl",
        "podCIDR",
        "allocatable",
        "amazon-k8s-cni",
        "KubeletNotReady",
    ] {
        assert!(!text.contains(skipped), "{skipped} in {text}");
    }
    Ok(())
}

#[test]
fn the_bookmark_that_ends_a_streaming_list_keeps_its_annotation() -> anyhow::Result<()> {
    let bookmark = FullNode {
        metadata: Some(FullMeta {
            resource_version: Some("202228".into()),
            annotations: BTreeMap::from([("k8s.io/initial-events-end".into(), "true".into())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let line = watch_event_json(event("BOOKMARK", "Node", bookmark.encode_to_vec()).into())?;
    let event: kube::core::WatchEvent<NodeView> = serde_json::from_slice(&line)?;
    let kube::core::WatchEvent::Bookmark(bookmark) = event else {
        anyhow::bail!("not a bookmark: {}", String::from_utf8_lossy(&line));
    };
    assert_eq!(bookmark.metadata.resource_version, "202228");
    assert_eq!(
        bookmark.metadata.annotations["k8s.io/initial-events-end"],
        "true"
    );
    Ok(())
}

fn gone() -> FullStatusObject {
    FullStatusObject {
        status: Some("Failure".into()),
        message: Some("too old resource version: 1 (202228)".into()),
        reason: Some("Expired".into()),
        code: Some(410),
    }
}

#[test]
fn an_error_event_and_an_error_response_become_statuses() -> anyhow::Result<()> {
    let line = watch_event_json(event("ERROR", "Status", gone().encode_to_vec()).into())?;
    let event: kube::core::WatchEvent<NodeView> = serde_json::from_slice(&line)?;
    let kube::core::WatchEvent::Error(status) = event else {
        anyhow::bail!("not an error: {}", String::from_utf8_lossy(&line));
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));

    let json = status_json(wrapped("Status", gone().encode_to_vec()).into())?;
    let status: kube::core::Status = serde_json::from_slice(&json)?;
    assert_eq!(status.code, 410);
    assert!(status.message.contains("too old resource version"));
    Ok(())
}

#[test]
fn a_page_keeps_its_continue_token_and_resource_version() -> anyhow::Result<()> {
    #[derive(Clone, PartialEq, Message)]
    struct FullList {
        #[prost(message, optional, tag = "1")]
        metadata: Option<ListMeta>,
        #[prost(message, repeated, tag = "2")]
        items: Vec<FullNode>,
    }
    let list = FullList {
        metadata: Some(ListMeta {
            resource_version: Some("77".into()),
            continue_token: Some("next".into()),
            remaining_item_count: Some(1),
        }),
        items: vec![
            kubelet_node("a", "m5.large"),
            kubelet_node("b", "c5.xlarge"),
        ],
    };
    let json = list_json(wrapped("NodeList", list.encode_to_vec()).into())?;
    let list: kube::core::ObjectList<NodeView> = serde_json::from_slice(&json)?;
    assert_eq!(list.metadata.resource_version.as_deref(), Some("77"));
    assert_eq!(list.metadata.continue_.as_deref(), Some("next"));
    assert_eq!(list.metadata.remaining_item_count, Some(1));
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(matches!(
        list_json(Bytes::from_static(b"{\"kind\":\"NodeList\"}")),
        Err(WireError::NoMagic)
    ));
    assert!(watch_event_json(Bytes::from_static(&[0x0a, 0xff])).is_err());
}

fn response(content_type: &str, status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.parse().unwrap_or(HeaderValue::from_static("")),
    );
    response
}

/// Sends one request through the layer to a server that answers with `answer`; returns the
/// request's Accept header and the body the client gets.
async fn through_layer(
    path: &str,
    answer: Response<Full<Bytes>>,
) -> anyhow::Result<(Option<String>, Vec<u8>, &'static str)> {
    let layer = NodeProtobuf::default();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let answer = std::sync::Mutex::new(Some(answer));
    let service = layer.layer(tower::service_fn(move |request: Request<()>| {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let _ = seen_tx.send(accept);
        let answer = answer.lock().ok().and_then(|mut a| a.take());
        async move { answer.ok_or_else(|| BoxError::from("called twice")) }
    }));
    let request = Request::get(path).body(())?;
    let response = service
        .oneshot(request)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .to_bytes();
    Ok((seen_rx.recv()?, body.to_vec(), layer.encoding()))
}

#[tokio::test]
async fn the_layer_asks_for_protobuf_and_hands_kube_json_lines() -> anyhow::Result<()> {
    let body = frames(&[
        event(
            "ADDED",
            "Node",
            kubelet_node("a", "m5.large").encode_to_vec(),
        ),
        event(
            "MODIFIED",
            "Node",
            kubelet_node("b", "t3.medium").encode_to_vec(),
        ),
    ]);
    let answer = response(
        "application/vnd.kubernetes.protobuf;stream=watch",
        200,
        body,
    );
    let (accept, body, encoding) = through_layer("/api/v1/nodes?watch=true", answer).await?;
    assert_eq!(accept.as_deref(), Some(ACCEPT));
    assert_eq!(encoding, "protobuf");
    let lines: Vec<Line> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()?;
    let kinds: Vec<_> = lines.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED"]);
    assert_eq!(lines[1].object["metadata"]["name"], "b");
    Ok(())
}

#[tokio::test]
async fn an_error_in_protobuf_reaches_kube_as_a_json_status() -> anyhow::Result<()> {
    let answer = response(PROTOBUF, 410, wrapped("Status", gone().encode_to_vec()));
    let (_, body, _) = through_layer("/api/v1/nodes?limit=250", answer).await?;
    let status: kube::core::Status = serde_json::from_slice(&body)?;
    assert_eq!(status.reason, "Expired");
    Ok(())
}

#[tokio::test]
async fn json_answers_and_other_paths_pass_through_untouched() -> anyhow::Result<()> {
    let json = br#"{"kind":"NodeList","items":[]}"#.to_vec();
    let (accept, body, encoding) = through_layer(
        "/api/v1/nodes",
        response("application/json", 200, json.clone()),
    )
    .await?;
    assert_eq!(accept.as_deref(), Some(ACCEPT));
    assert_eq!((body, encoding), (json, "json"));

    // A single Node, or anything else, keeps kube's own Accept and body even in protobuf.
    let raw = wrapped("Node", kubelet_node("a", "m5.large").encode_to_vec());
    let (accept, body, encoding) =
        through_layer("/api/v1/nodes/a", response(PROTOBUF, 200, raw.clone())).await?;
    assert_eq!((accept, body, encoding), (None, raw, "json"));
    Ok(())
}

#[tokio::test]
async fn a_protobuf_answer_it_cannot_read_makes_it_ask_for_json_from_then_on() -> anyhow::Result<()>
{
    let layer = NodeProtobuf::default();
    let (accepts_tx, accepts_rx) = std::sync::mpsc::channel();
    let service = layer.layer(tower::service_fn(move |request: Request<()>| {
        let accept = request.headers().get(header::ACCEPT).cloned();
        let _ = accepts_tx.send(accept);
        // A page that is not what protobuf says it is.
        async move { Ok::<_, BoxError>(response(PROTOBUF, 200, b"k8s\0\xff\xff".to_vec())) }
    }));
    let first = service
        .clone()
        .oneshot(Request::get("/api/v1/nodes").body(())?)
        .await;
    assert!(
        first.is_err(),
        "the undecodable page is an error for the watcher to retry"
    );
    assert_eq!(layer.encoding(), "json");
    let _ = service
        .oneshot(Request::get("/api/v1/nodes").body(())?)
        .await;
    let accepts: Vec<_> = accepts_rx.try_iter().collect();
    assert_eq!(accepts.len(), 2);
    assert!(accepts[0].is_some(), "protobuf asked for first");
    assert_eq!(accepts[1], None, "kube's own Accept (JSON) after");
    Ok(())
}
