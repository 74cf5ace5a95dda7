//! The key of a watch cache entry (`name`, or `namespace/name`), kept small. Node names on EKS
//! share a long DNS suffix (`ip-10-0-1-2` + `.us-west-2.compute.internal`, or
//! `i-0123456789abcdef0` + `.us-west-2.compute.internal`): the part from the first dot is
//! interned once per process and the part before it is inline (up to 24 bytes). At 100,000 nodes
//! a name as a `Box<str>` took a 64-byte heap chunk each; as a key it takes none.
//!
//! Lookups take a plain `&str` ([`Lookup`]): it hashes as the key it names, because the map's
//! hasher (SipHash) reads the bytes as one stream however they are split between writes; a test
//! holds that.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use compact_str::CompactString;

use crate::plan::intern::Table;

#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    head: CompactString,
    /// From the first dot on, interned; `None` when there is no dot.
    tail: Option<Tail>,
}

impl Key {
    pub fn new(text: &str) -> Self {
        match text.find('.') {
            Some(at) => Self {
                head: CompactString::from(&text[..at]),
                tail: Some(Tail::intern(&text[at..])),
            },
            None => Self {
                head: CompactString::from(text),
                tail: None,
            },
        }
    }

    fn tail(&self) -> &str {
        self.tail.as_ref().map_or("", |t| &t.0)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.head.as_bytes());
        state.write(self.tail().as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.head)?;
        f.write_str(self.tail())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// A key as text, to look one up without building it.
pub struct Lookup<'a>(pub &'a str);

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
        state.write_u8(0xff);
    }
}

impl indexmap::Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        let head = key.head.as_str();
        self.0.len() == head.len() + key.tail().len()
            && self.0.starts_with(head)
            && self.0[head.len()..] == *key.tail()
    }
}

/// An interned suffix: one pointer in the key, shared by every key that ends with it
/// ([`Table`]).
#[derive(Clone, PartialEq, Eq)]
struct Tail(Arc<str>);

impl Tail {
    fn intern(text: &str) -> Self {
        static TAILS: OnceLock<Mutex<Table<str>>> = OnceLock::new();
        let mut tails = TAILS
            .get_or_init(|| Mutex::new(Table::new(64)))
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Self(tails.get(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    #[test]
    fn keys_share_their_suffix_and_are_found_by_text() {
        let names = [
            "ip-10-0-1-2.us-west-2.compute.internal",
            "ip-10-0-1-3.us-west-2.compute.internal",
            "i-0123456789abcdef0.us-west-2.compute.internal",
            "a-name-longer-than-twenty-four-bytes.ec2.internal",
            "kube-system/aws-node",
            "no-dot",
            ".leading-dot",
            "trailing-dot.",
            "",
        ];
        let mut map = IndexMap::new();
        for (i, name) in names.iter().enumerate() {
            map.insert(Key::new(name), i);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(map.get(&Lookup(name)), Some(&i), "{name}");
            assert_eq!(map.get(&Key::new(name)), Some(&i), "{name}");
            assert_eq!(Key::new(name).to_string(), *name);
        }
        for absent in [
            "ip-10-0-1-2",
            "ip-10-0-1-2.us-west-2.compute",
            "ip-10-0-1-2.us-west-2.compute.internalx",
            "ip-10-0-1-.us-west-2.compute.internal",
            "kube-system/aws-nod",
            "no-dot.",
        ] {
            assert_eq!(map.get(&Lookup(absent)), None, "{absent}");
        }
        let (a, b) = (Key::new(names[0]), Key::new(names[1]));
        let (Some(ta), Some(tb)) = (&a.tail, &b.tail) else {
            panic!("both have a suffix")
        };
        assert!(Arc::ptr_eq(&ta.0, &tb.0), "one suffix for both");
        assert_eq!(map.swap_remove(&Lookup(names[0])), Some(0));
        assert_eq!(map.get(&Lookup(names[0])), None);
        assert_eq!(map.get(&Lookup(names[1])), Some(&1));
    }
}
