//! A node's labels, interned twice over. Every distinct `key=value` pair is stored once for the
//! whole process, and so is every distinct *set* of pairs: in a fleet the labels repeat
//! (instance type, zone, node group, OS, architecture), so the nodes of one node group in one
//! zone share one set, and a node holds a pointer to it. The one label that differs on every
//! node, `kubernetes.io/hostname`, is kept apart, inline in the node when it is short. At
//! 100,000 nodes this keeps a node's labels to 40 bytes, where a sorted slice of pointers per
//! node took about 300 (and a map of strings a few kilobytes).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use compact_str::CompactString;
use kube::core::Expression;

use super::intern::Table;

/// The label kubelet sets to the node's own host name: unique per node, so not in the shared set.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// One label, shared by every node that carries it: the key's length in bytes as one `char`,
/// then the key, then the value. The length up front makes a lookup two slices, where a
/// separator had to be searched for on every comparison of every lookup (plan CPU at 10,000
/// nodes went from 13 ms to the 2.5 ms it took before interning). Kubernetes label keys are at
/// most 317 bytes, far below the first code point that is not a `char` (0xD800).
///
/// Labels are only made by the interner, which holds one allocation per distinct text while any
/// node uses it, so two labels are equal exactly when they are the same allocation: equality and
/// hashing compare pointers, not text.
#[derive(Clone)]
struct Label(Arc<str>);

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0).cast::<u8>(), state);
    }
}

/// The longest key a label can be interned with (the `char` below the surrogates).
const MAX_KEY_LEN: usize = 0xD7FF;

impl Label {
    fn split(&self) -> (&str, &str) {
        let mut chars = self.0.chars();
        let len = chars.next().map_or(0, |c| c as usize);
        let rest = chars.as_str();
        rest.split_at_checked(len).unwrap_or((rest, ""))
    }

    fn key(&self) -> &str {
        self.split().0
    }

    /// The key's bytes: what lookups compare. Keys under 128 bytes (all but hand-made ones)
    /// have their length in one byte, read without decoding a `char`.
    fn key_bytes(&self) -> &[u8] {
        let text = self.0.as_bytes();
        match text.first() {
            Some(&len) if len < 0x80 => text.get(1..=usize::from(len)).unwrap_or_default(),
            _ => self.key().as_bytes(),
        }
    }
}

/// The order labels are kept in: by key length, then by key. Most comparisons of a lookup are
/// then settled by the length alone, without comparing bytes.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A node's labels: the set it shares with other nodes, sorted by key length, then key
/// ([`key_order`]), and its `kubernetes.io/hostname`.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeLabels {
    shared: Arc<[Label]>,
    hostname: Option<CompactString>,
}

impl Default for NodeLabels {
    fn default() -> Self {
        Self {
            shared: Arc::from([]),
            hostname: None,
        }
    }
}

impl NodeLabels {
    pub fn get(&self, key: &str) -> Option<&str> {
        if key == HOSTNAME {
            return self.hostname.as_deref();
        }
        let key = key.as_bytes();
        self.shared
            .binary_search_by(|l| {
                // Length, then the first byte, settle most comparisons without a memcmp call.
                let k = l.key_bytes();
                k.len()
                    .cmp(&key.len())
                    .then_with(|| k.first().cmp(&key.first()))
                    .then_with(|| k.cmp(key))
            })
            .ok()
            .map(|i| self.shared[i].split().1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every label, in [`key_order`].
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let at = self
            .shared
            .partition_point(|l| key_order(l.key(), HOSTNAME).is_lt());
        let (before, after) = self.shared.split_at(at);
        let hostname = self.hostname.as_deref().map(|h| (HOSTNAME, h));
        before
            .iter()
            .map(Label::split)
            .chain(hostname)
            .chain(after.iter().map(Label::split))
    }

    pub fn len(&self) -> usize {
        self.shared.len() + usize::from(self.hostname.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These labels with `key=value` set.
    pub fn with(self, key: &str, value: &str) -> Self {
        self.iter()
            .filter(|(k, _)| *k != key)
            .chain([(key, value)])
            .collect()
    }

    /// Whether a label selector (its parsed expressions) selects these labels.
    pub fn matches(&self, expressions: &[Expression]) -> bool {
        expressions
            .iter()
            .all(|expression| expression_matches(expression, self.get(expression_key(expression))))
    }
}

/// The label key an expression reads.
pub(crate) fn expression_key(expression: &Expression) -> &str {
    match expression {
        Expression::In(key, _)
        | Expression::NotIn(key, _)
        | Expression::Exists(key)
        | Expression::DoesNotExist(key)
        | Expression::Equal(key, _)
        | Expression::NotEqual(key, _) => key,
    }
}

/// Whether an expression holds for a node whose label at [`expression_key`] is `value`.
pub(crate) fn expression_matches(expression: &Expression, value: Option<&str>) -> bool {
    match expression {
        Expression::In(_, values) => value.is_some_and(|v| values.contains(v)),
        Expression::NotIn(_, values) => value.is_none_or(|v| !values.contains(v)),
        Expression::Exists(_) => value.is_some(),
        Expression::DoesNotExist(_) => value.is_none(),
        Expression::Equal(_, expected) => value == Some(expected.as_str()),
        Expression::NotEqual(_, expected) => value != Some(expected.as_str()),
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for NodeLabels {
    /// The first of duplicate keys wins. A key no API server accepts (longer than
    /// [`MAX_KEY_LEN`]) is left out.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut hostname = None;
        let mut interner = interner();
        let mut labels: Vec<Label> = Vec::new();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if key == HOSTNAME {
                hostname.get_or_insert_with(|| CompactString::from(value));
            } else if let Some(label) = interner.label(key, value) {
                labels.push(label);
            }
        }
        labels.sort_by(|a, b| key_order(a.key(), b.key()));
        labels.dedup_by(|a, b| a.key() == b.key());
        Self {
            shared: interner.set(&labels),
            hostname,
        }
    }
}

/// Reads a JSON object of labels (`null` is none) straight into interned labels: keys and values
/// are borrowed from the input where it has no escapes, so no `String` is made per label.
impl<'de> serde::Deserialize<'de> for NodeLabels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Labels;
        impl<'de> serde::de::Visitor<'de> for Labels {
            type Value = NodeLabels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of label keys to values")
            }
            fn visit_unit<E>(self) -> Result<NodeLabels, E> {
                Ok(NodeLabels::default())
            }
            fn visit_none<E>(self) -> Result<NodeLabels, E> {
                Ok(NodeLabels::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<NodeLabels, D::Error> {
                deserializer.deserialize_map(self)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NodeLabels, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(pair) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    pairs.push(pair);
                }
                Ok(pairs.iter().map(|(k, v)| (&*k.0, &*v.0)).collect())
            }
        }
        deserializer.deserialize_option(Labels)
    }
}

/// A string borrowed from the input when it can be (serde's own `Cow` always copies).
struct Text<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(text.to_owned().into()))
            }
            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(text.into()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl fmt::Debug for NodeLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The process-wide labels and sets of labels ([`Table`]s).
struct Interner {
    labels: Table<str>,
    sets: Table<[Label]>,
    /// The text of the label being looked up: most are interned already, and 100,000 nodes of
    /// a dozen labels would otherwise allocate a String per label.
    text: String,
}

/// The interner, locked: a node's labels are interned under one lock.
fn interner() -> std::sync::MutexGuard<'static, Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER
        .get_or_init(|| {
            Mutex::new(Interner {
                labels: Table::new(4096),
                sets: Table::new(1024),
                text: String::new(),
            })
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

impl Interner {
    /// `None` for a key no API server accepts (longer than [`MAX_KEY_LEN`]).
    fn label(&mut self, key: &str, value: &str) -> Option<Label> {
        let len =
            char::from_u32(u32::try_from(key.len()).ok()?).filter(|_| key.len() <= MAX_KEY_LEN)?;
        self.text.clear();
        self.text.push(len);
        self.text.push_str(key);
        self.text.push_str(value);
        Some(Label(self.labels.get(self.text.as_str())))
    }

    /// The shared copy of a sorted set of labels.
    fn set(&mut self, labels: &[Label]) -> Arc<[Label]> {
        self.sets.get(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Selector;

    #[test]
    fn labels_are_shared_sorted_and_matched_like_a_selector() {
        let a: NodeLabels = [("zone", "a"), ("pool", "web"), ("zone", "b")]
            .into_iter()
            .collect();
        let b: NodeLabels = [("pool", "web")].into_iter().collect();
        assert_eq!(a.get("pool"), Some("web"));
        assert_eq!(a.get("zone"), Some("a"), "the first of duplicate keys");
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["pool", "zone"]
        );
        assert!(
            Arc::ptr_eq(&a.shared[0].0, &b.shared[0].0),
            "one pool=web for both"
        );
        let selector: Selector = serde_json::from_value::<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        >(serde_json::json!({
            "matchLabels": {"pool": "web"},
            "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]},
                                 {"key": "gpu", "operator": "DoesNotExist"}]
        }))
        .expect("selector")
        .try_into()
        .expect("valid");
        let expressions: Vec<Expression> = selector.into_iter().collect();
        assert!(a.matches(&expressions));
        assert!(!a.clone().with("zone", "c").matches(&expressions));
        assert!(!a.with("gpu", "1").matches(&expressions));
    }

    #[test]
    fn keys_and_values_of_any_content_come_back_whole() {
        let long_key = "k".repeat(300);
        let labels: NodeLabels = [
            ("", "empty key"),
            ("a", ""),
            ("x\0y", "nul\0inside"),
            ("ключ", "значение"),
            (long_key.as_str(), "long"),
        ]
        .into_iter()
        .collect();
        assert_eq!(labels.get(""), Some("empty key"));
        assert_eq!(labels.get("a"), Some(""));
        assert_eq!(labels.get("x\0y"), Some("nul\0inside"));
        assert_eq!(labels.get("ключ"), Some("значение"));
        assert_eq!(labels.get(&long_key), Some("long"));
        assert_eq!(labels.len(), 5);
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        let none: NodeLabels = [(too_long.as_str(), "v")].into_iter().collect();
        assert!(none.is_empty());
    }

    #[test]
    fn nodes_share_one_set_and_keep_their_hostname() {
        let node = |i: usize| -> NodeLabels {
            let hostname = format!("ip-10-0-0-{i}.us-west-2.compute.internal");
            [
                ("topology.kubernetes.io/zone", "us-west-2a"),
                (HOSTNAME, hostname.as_str()),
                ("node.kubernetes.io/instance-type", "m5.large"),
                (HOSTNAME, "a later duplicate"),
            ]
            .into_iter()
            .collect()
        };
        let (a, b) = (node(1), node(2));
        assert!(Arc::ptr_eq(&a.shared, &b.shared), "one set for both nodes");
        assert_ne!(a, b, "the hostname tells them apart");
        assert_eq!(a, node(1));
        assert_eq!(
            a.get(HOSTNAME),
            Some("ip-10-0-0-1.us-west-2.compute.internal")
        );
        assert_eq!(
            b.get(HOSTNAME),
            Some("ip-10-0-0-2.us-west-2.compute.internal")
        );
        assert_eq!(a.len(), 3);
        // Every label comes back, in key order (by length, then key), the hostname included.
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            [
                HOSTNAME,
                "topology.kubernetes.io/zone",
                "node.kubernetes.io/instance-type"
            ]
        );
        let moved = b.clone().with(HOSTNAME, "elsewhere");
        assert_eq!(moved.get(HOSTNAME), Some("elsewhere"));
        assert!(Arc::ptr_eq(&moved.shared, &b.shared));
        let retyped = b.with("node.kubernetes.io/instance-type", "t3.medium");
        assert!(!Arc::ptr_eq(&retyped.shared, &a.shared));
        assert_eq!(
            retyped.get("node.kubernetes.io/instance-type"),
            Some("t3.medium")
        );
        assert_eq!(NodeLabels::default().get(HOSTNAME), None);
        // Parsed from JSON (borrowed, escaped, null) as from pairs.
        let parsed: NodeLabels = serde_json::from_str(
            r#"{"topology.kubernetes.io/zone":"us-west-2a","kubernetes.io/hostname":"ip-10-0-0-1.us-west-2.compute.internal","node.kubernetes.io/instance-type":"m5.large"}"#,
        )
        .expect("labels");
        assert_eq!(parsed, a);
        let escaped: NodeLabels = serde_json::from_str(r#"{"a\"b":"c\u00e9"}"#).expect("labels");
        assert_eq!(escaped.get("a\"b"), Some("cé"));
        let from_value: NodeLabels =
            serde_json::from_value(serde_json::json!({"a": "b"})).expect("labels");
        assert_eq!(from_value.get("a"), Some("b"));
        let null: NodeLabels = serde_json::from_str("null").expect("labels");
        assert!(null.is_empty());
        assert!(serde_json::from_str::<NodeLabels>(r#"{"a": 1}"#).is_err());
        assert!(NodeLabels::default().is_empty());
    }
}
