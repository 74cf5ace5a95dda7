//! A node's labels, interned: every distinct `key=value` pair is stored once for the whole
//! process and each node holds a sorted slice of shared pointers to its pairs. In a fleet the
//! pairs repeat (instance type, zone, node group, OS, architecture): at 100,000 nodes this
//! keeps the node cache to a few hundred bytes a node instead of a few kilobytes of strings.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kube::core::Expression;

/// One label, `key\0value` (neither may contain NUL), shared by every node that carries it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Label(Arc<str>);

impl Label {
    fn split(&self) -> (&str, &str) {
        self.0.split_once('\0').unwrap_or((&self.0, ""))
    }

    fn key(&self) -> &str {
        self.split().0
    }
}

/// A node's labels, sorted by key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(Box<[Label]>);

impl NodeLabels {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.key().cmp(key))
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
        expressions.iter().all(|expression| match expression {
            Expression::In(key, values) => self.get(key).is_some_and(|v| values.contains(v)),
            Expression::NotIn(key, values) => self.get(key).is_none_or(|v| !values.contains(v)),
            Expression::Exists(key) => self.contains_key(key),
            Expression::DoesNotExist(key) => !self.contains_key(key),
            Expression::Equal(key, value) => self.get(key) == Some(value.as_str()),
            Expression::NotEqual(key, value) => self.get(key) != Some(value.as_str()),
        })
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for NodeLabels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .map(|(k, v)| intern(k.as_ref(), v.as_ref()))
            .collect();
        labels.sort_by(|a, b| a.key().cmp(b.key()));
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

fn intern(key: &str, value: &str) -> Label {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    let text = format!("{key}\0{value}");
    let mut interner = INTERNER
        .get_or_init(|| {
            Mutex::new(Interner {
                labels: HashSet::new(),
                swept_at: 0,
            })
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = interner.labels.get(text.as_str()) {
        return Label(shared.clone());
    }
    if interner.labels.len() >= (2 * interner.swept_at).max(4096) {
        interner.labels.retain(|l| Arc::strong_count(l) > 1);
        interner.swept_at = interner.labels.len();
    }
    let shared: Arc<str> = Arc::from(text);
    interner.labels.insert(shared.clone());
    Label(shared)
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
}
