//! A node's labels, interned: every distinct `key=value` pair is stored once for the whole
//! process and each node holds a sorted slice of shared pointers to its pairs. In a fleet the
//! pairs repeat (instance type, zone, node group, OS, architecture): at 100,000 nodes this
//! keeps the node cache to a few hundred bytes a node instead of a few kilobytes of strings.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kube::core::Expression;

/// One label, shared by every node that carries it: the key's length in bytes as one `char`,
/// then the key, then the value. The length up front makes a lookup two slices, where a
/// separator had to be searched for on every comparison of every lookup (plan CPU at 10,000
/// nodes went from 13 ms to the 2.5 ms it took before interning). Kubernetes label keys are at
/// most 317 bytes, far below the first code point that is not a `char` (0xD800).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Label(Arc<str>);

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

/// A node's labels, sorted by key length, then key ([`key_order`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(Box<[Label]>);

impl NodeLabels {
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.as_bytes();
        self.0
            .binary_search_by(|l| {
                // Length, then the first byte, settle most comparisons without a memcmp call.
                let k = l.key_bytes();
                k.len()
                    .cmp(&key.len())
                    .then_with(|| k.first().cmp(&key.first()))
                    .then_with(|| k.cmp(key))
            })
            .ok()
            .map(|i| self.0[i].split().1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(Label::split)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .filter_map(|(k, v)| intern(k.as_ref(), v.as_ref()))
            .collect();
        labels.sort_by(|a, b| key_order(a.key(), b.key()));
        labels.dedup_by(|a, b| a.key() == b.key());
        Self(labels.into_boxed_slice())
    }
}

impl fmt::Debug for NodeLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The process-wide set of labels. Labels no node holds any more are dropped once the set has
/// doubled since the last sweep, so churn does not grow it without bound.
struct Interner {
    labels: HashSet<Arc<str>>,
    swept_at: usize,
}

/// `None` for a key no API server accepts (longer than [`MAX_KEY_LEN`]).
fn intern(key: &str, value: &str) -> Option<Label> {
    let len =
        char::from_u32(u32::try_from(key.len()).ok()?).filter(|_| key.len() <= MAX_KEY_LEN)?;
    // The lookup key is built in a buffer kept per thread: most labels are already interned,
    // and 100,000 nodes of a dozen labels would otherwise allocate a String per label.
    thread_local! {
        static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    TEXT.with_borrow_mut(|text| {
        text.clear();
        text.push(len);
        text.push_str(key);
        text.push_str(value);
        intern_text(text)
    })
}

fn intern_text(text: &str) -> Option<Label> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    let mut interner = INTERNER
        .get_or_init(|| {
            Mutex::new(Interner {
                labels: HashSet::new(),
                swept_at: 0,
            })
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = interner.labels.get(text) {
        return Some(Label(shared.clone()));
    }
    if interner.labels.len() >= (2 * interner.swept_at).max(4096) {
        interner.labels.retain(|l| Arc::strong_count(l) > 1);
        interner.swept_at = interner.labels.len();
    }
    let shared: Arc<str> = Arc::from(text);
    interner.labels.insert(shared.clone());
    Some(Label(shared))
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
        assert!(Arc::ptr_eq(&a.0[0].0, &b.0[0].0), "one pool=web for both");
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
}
