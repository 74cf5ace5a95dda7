//! The Node watch in Kubernetes' protobuf encoding.
//!
//! Serialising 100,000 kubelet-written Nodes as JSON is most of what the API server spends on an
//! initial list, and parsing them most of what the operator spends. kube-apiserver encodes the
//! same objects in protobuf three to four times faster (measured here, kube-apiserver v1.36.2:
//! a streaming list of 20,000 Nodes took 4.4-5.2 s and 4.9-5.7 CPU seconds as JSON, 1.2-1.7 s
//! and 1.2-2.3 CPU seconds as protobuf), and a protobuf field the operator does not read is
//! skipped by its length instead of being scanned.
//!
//! kube-rs reads JSON only, and its `watcher` (initial list, bookmarks, 410 Gone, resumes,
//! idle timeouts) is worth keeping as it is. So [`NodeProtobuf`] is a client layer for the Node
//! watch's own client: it asks for `application/vnd.kubernetes.protobuf` (JSON as the second
//! choice) on `GET /api/v1/nodes`, and when the API server answers in protobuf it decodes the
//! few fields [`NodeView`](super::node_view::NodeView) reads (name, resourceVersion, labels,
//! `spec.providerID`, `status.capacity.pods`, the `Ready` condition's status) and hands
//! kube the same response as a small JSON document: one line per watch event, a `NodeList` for
//! a page, a `Status` for an error. An answer in JSON (a proxy or a server without protobuf,
//! the fake API servers of the tests) passes through untouched, and a protobuf answer it cannot
//! read makes it ask for JSON from then on (a warning says so).
//!
//! The wire format (k8s.io/apimachinery `pkg/runtime/serializer/protobuf`, `generated.proto`
//! of `meta/v1`, `runtime` and `core/v1`): a list or an error is the magic `k8s\0` and a
//! `runtime.Unknown` holding the object; a watch is a stream of frames, each a 4-byte
//! big-endian length and a `meta/v1.WatchEvent` whose `object.raw` is again `k8s\0` + `Unknown`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use prost::Message;
use serde::Serialize;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::io::StreamReader;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response that went through [`NodeProtobuf`].
pub type WireBody = UnsyncBoxBody<Bytes, BoxError>;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const ACCEPT: &str = "application/vnd.kubernetes.protobuf, application/json";
const MAGIC: &[u8] = b"k8s\0";
/// No Node comes near this: etcd refuses values over 1.5 MiB.
const MAX_FRAME: usize = 16 << 20;

/// A Node or watch response that is not what the protobuf encoding says it is.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("protobuf Node response: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("protobuf Node response: the object does not start with the k8s magic number")]
    NoMagic,
    #[error("protobuf Node response: {0}")]
    Json(#[from] serde_json::Error),
}

// The messages, with only the fields the operator reads (prost skips the others). Field numbers
// are those of the `generated.proto` files named above.

#[derive(Clone, PartialEq, Message)]
struct WatchEvent {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(message, optional, tag = "2")]
    object: Option<RawExtension>,
}

#[derive(Clone, PartialEq, Message)]
struct RawExtension {
    #[prost(bytes = "bytes", optional, tag = "1")]
    raw: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    raw: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
struct Node {
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<NodeMeta>,
    #[prost(message, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<NodeSpec>,
    #[prost(message, optional, tag = "3")]
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<NodeStatus>,
}

/// `ObjectMeta` without annotations, owner references and managedFields. Strings are slices of
/// the received buffer (no copy): they are only read once, to write the JSON.
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeMeta {
    #[prost(bytes = "bytes", optional, tag = "1")]
    #[serde(serialize_with = "text_opt", skip_serializing_if = "Option::is_none")]
    name: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "6")]
    #[serde(serialize_with = "text_opt", skip_serializing_if = "Option::is_none")]
    resource_version: Option<Bytes>,
    /// `map<string, string>`, which is a repeated key/value message on the wire.
    #[prost(message, repeated, tag = "11")]
    #[serde(serialize_with = "entries", skip_serializing_if = "Vec::is_empty")]
    labels: Vec<Entry>,
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// Protobuf `string` bytes as text; the API server only writes UTF-8.
fn utf8<E: serde::ser::Error>(bytes: &[u8]) -> Result<&str, E> {
    std::str::from_utf8(bytes).map_err(E::custom)
}

fn text<S: serde::Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(utf8(bytes)?)
}

fn text_opt<S: serde::Serializer>(bytes: &Option<Bytes>, serializer: S) -> Result<S::Ok, S::Error> {
    text(bytes.as_ref().unwrap_or(&Bytes::new()), serializer)
}

/// A protobuf map (its key/value entries) as a JSON object.
fn map_of<'a, S: serde::Serializer, V: Serialize + 'a>(
    serializer: S,
    entries: impl Iterator<Item = (&'a Bytes, V)>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(None)?;
    for (key, value) in entries {
        map.serialize_entry(utf8::<S::Error>(key)?, &value)?;
    }
    map.end()
}

fn entries<S: serde::Serializer>(entries: &[Entry], serializer: S) -> Result<S::Ok, S::Error> {
    map_of(serializer, entries.iter().map(|e| (&e.key, Text(&e.value))))
}

/// Bytes written as a JSON string.
struct Text<'a>(&'a Bytes);

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        text(self.0, serializer)
    }
}

#[derive(Clone, PartialEq, Message, Serialize)]
struct NodeSpec {
    #[prost(bytes = "bytes", optional, tag = "3")]
    #[serde(
        rename = "providerID",
        serialize_with = "text_opt",
        skip_serializing_if = "Option::is_none"
    )]
    provider_id: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
struct NodeStatus {
    #[prost(message, repeated, tag = "1")]
    #[serde(serialize_with = "capacity", skip_serializing_if = "Vec::is_empty")]
    capacity: Vec<CapacityEntry>,
    #[prost(message, repeated, tag = "4")]
    #[serde(serialize_with = "ready_only", skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<NodeCondition>,
}

/// Only the `Ready` condition: the one the view reads (each string written is parsed again).
fn ready_only<S: serde::Serializer>(
    conditions: &[NodeCondition],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(
        conditions
            .iter()
            .filter(|c| c.kind.as_deref() == Some(b"Ready".as_slice())),
    )
}

#[derive(Clone, PartialEq, Message)]
struct CapacityEntry {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(message, optional, tag = "2")]
    value: Option<Quantity>,
}

/// `capacity.pods` only: the one the view reads.
fn capacity<S: serde::Serializer>(
    entries: &[CapacityEntry],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let empty = Quantity::default();
    map_of(
        serializer,
        entries
            .iter()
            .filter(|e| e.key == "pods")
            .map(|e| (&e.key, e.value.as_ref().unwrap_or(&empty))),
    )
}

#[derive(Clone, PartialEq, Message, Serialize)]
struct NodeCondition {
    #[prost(bytes = "bytes", optional, tag = "1")]
    #[serde(
        rename = "type",
        serialize_with = "text_opt",
        skip_serializing_if = "Option::is_none"
    )]
    kind: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    #[serde(serialize_with = "text_opt", skip_serializing_if = "Option::is_none")]
    status: Option<Bytes>,
}

/// `resource.Quantity`: its string form (JSON has it as a bare string).
#[derive(Clone, PartialEq, Message)]
struct Quantity {
    #[prost(bytes = "bytes", optional, tag = "1")]
    string: Option<Bytes>,
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        text_opt(&self.string, serializer)
    }
}

/// The object of a BOOKMARK event: its resourceVersion and annotations
/// (`k8s.io/initial-events-end` closes a streaming initial list).
#[derive(Clone, PartialEq, Message, Serialize)]
struct Bookmark {
    #[prost(message, optional, tag = "1")]
    metadata: Option<BookmarkMeta>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
struct BookmarkMeta {
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
struct NodeList {
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Node>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[prost(string, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
    #[prost(int64, optional, tag = "4")]
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_item_count: Option<i64>,
}

/// `meta/v1.Status`, as the API server sends errors.
#[derive(Clone, PartialEq, Message, Serialize)]
struct Status {
    #[prost(string, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[prost(string, optional, tag = "3")]
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[prost(string, optional, tag = "4")]
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[prost(int32, optional, tag = "6")]
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
}

/// An object with its apiVersion and kind, as JSON carries them.
#[derive(Serialize)]
struct Typed<'a, T> {
    #[serde(flatten)]
    types: &'a TypeMeta,
    #[serde(flatten)]
    object: &'a T,
}

#[derive(Serialize)]
struct JsonEvent<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: Typed<'a, T>,
}

/// The object in `k8s\0` + `runtime.Unknown`: its type and its own encoding.
fn unwrap_unknown(data: Bytes) -> Result<(TypeMeta, Bytes), WireError> {
    let Some(rest) = data.strip_prefix(MAGIC) else {
        return Err(WireError::NoMagic);
    };
    let unknown = Unknown::decode(data.slice_ref(rest))?;
    Ok((
        unknown.type_meta.unwrap_or_default(),
        unknown.raw.unwrap_or_default(),
    ))
}

/// One watch frame (without its length) as the JSON line the API server would have sent.
pub fn watch_event_json(frame: Bytes) -> Result<Vec<u8>, WireError> {
    let event = WatchEvent::decode(frame)?;
    let kind = event.kind.unwrap_or_default();
    let (types, raw) = unwrap_unknown(event.object.and_then(|o| o.raw).unwrap_or_default())?;
    let mut line = Vec::with_capacity(1024);
    match kind.as_str() {
        "BOOKMARK" => write_event(&mut line, &kind, &types, &Bookmark::decode(raw)?)?,
        "ERROR" => write_event(&mut line, &kind, &types, &Status::decode(raw)?)?,
        _ => write_event(&mut line, &kind, &types, &Node::decode(raw)?)?,
    }
    line.push(b'\n');
    Ok(line)
}

fn write_event<T: Serialize>(
    out: &mut Vec<u8>,
    kind: &str,
    types: &TypeMeta,
    object: &T,
) -> Result<(), WireError> {
    let object = Typed { types, object };
    Ok(serde_json::to_writer(out, &JsonEvent { kind, object })?)
}

/// A `NodeList` page as JSON.
pub fn list_json(body: Bytes) -> Result<Vec<u8>, WireError> {
    let (types, raw) = unwrap_unknown(body)?;
    let list = NodeList::decode(raw)?;
    Ok(serde_json::to_vec(&Typed {
        types: &types,
        object: &list,
    })?)
}

/// An error `Status` as JSON.
pub fn status_json(body: Bytes) -> Result<Vec<u8>, WireError> {
    let (types, raw) = unwrap_unknown(body)?;
    let status = Status::decode(raw)?;
    Ok(serde_json::to_vec(&Typed {
        types: &types,
        object: &status,
    })?)
}

/// The client layer of the Node watch (see the module documentation). Clones share what the
/// API server answered.
#[derive(Clone, Debug, Default)]
pub struct NodeProtobuf {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The API server has answered a Node list or watch in protobuf.
    answered: AtomicBool,
    /// A protobuf answer could not be decoded: Nodes are asked for in JSON from then on, for
    /// the rest of the process, rather than failing every watch the same way.
    gave_up: AtomicBool,
}

impl State {
    fn give_up(&self, err: &WireError) {
        if !self.gave_up.swap(true, Ordering::Relaxed) {
            tracing::warn!(%err, "cannot read the API server's protobuf Nodes; watching them in JSON");
        }
    }
}

impl NodeProtobuf {
    /// The encoding Nodes are read in: `protobuf` once the API server answered so (and until a
    /// protobuf answer could not be read), else `json`.
    pub fn encoding(&self) -> &'static str {
        if self.state.answered.load(Ordering::Relaxed)
            && !self.state.gave_up.load(Ordering::Relaxed)
        {
            "protobuf"
        } else {
            "json"
        }
    }
}

impl<S> tower::Layer<S> for NodeProtobuf {
    type Service = NodeProtobufService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NodeProtobufService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See [`NodeProtobuf`].
#[derive(Clone, Debug)]
pub struct NodeProtobufService<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for NodeProtobufService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<WireBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The collection only: a list or a watch of Nodes.
        let nodes = request.method() == Method::GET
            && request.uri().path() == "/api/v1/nodes"
            && !self.state.gave_up.load(Ordering::Relaxed);
        if nodes {
            request
                .headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        }
        let response = self.inner.call(request);
        let state = self.state.clone();
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !nodes || !content_type.starts_with(PROTOBUF) {
                return Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()));
            }
            state.answered.store(true, Ordering::Relaxed);
            let watch = content_type.contains("stream=watch");
            let (mut parts, body) = response.into_parts();
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = if watch && parts.status.is_success() {
                watch_body(body, state)
            } else {
                let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
                let json = if parts.status.is_success() {
                    list_json(bytes)
                } else {
                    status_json(bytes)
                };
                let json = json.inspect_err(|err| state.give_up(err))?;
                Full::new(Bytes::from(json))
                    .map_err(|never| match never {})
                    .boxed_unsync()
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// A protobuf watch body as JSON lines, frame by frame as they arrive.
fn watch_body<B>(body: B, state: Arc<State>) -> WireBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let data = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.into()));
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let lines = FramedRead::new(StreamReader::new(data), codec).map(move |frame| {
        let line = watch_event_json(frame?.freeze())
            .inspect_err(|err| state.give_up(err))
            .map_err(std::io::Error::other)?;
        Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(line)))
    });
    StreamBody::new(lines).boxed_unsync()
}

#[cfg(test)]
#[path = "node_wire_tests.rs"]
mod tests;
