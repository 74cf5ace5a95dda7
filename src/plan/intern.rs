//! A table of shared values: one allocation per distinct value, handed out as `Arc` clones.
//! What no holder outside the table keeps any more is dropped once the table has doubled since
//! its last sweep, so churn does not grow it without bound. Used for node labels and label sets
//! ([`super::node_labels`]) and for the DNS suffixes of watch-cache keys.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

pub(crate) struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    swept_at: usize,
    /// No sweep below this many values.
    floor: usize,
}

impl<T: ?Sized + Eq + Hash> Table<T> {
    pub(crate) fn new(floor: usize) -> Self {
        Self {
            values: HashSet::new(),
            swept_at: 0,
            floor,
        }
    }

    /// The shared copy of `value`, made if there is none.
    pub(crate) fn get<Q>(&mut self, value: &Q) -> Arc<T>
    where
        Q: ?Sized + Eq + Hash,
        Arc<T>: Borrow<Q> + for<'a> From<&'a Q>,
    {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        if self.values.len() >= (2 * self.swept_at).max(self.floor) {
            // A value only the table holds has no other holder that could clone it meanwhile:
            // every clone is made here, under the caller's lock.
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.swept_at = self.values.len();
        }
        let shared = Arc::<T>::from(value);
        self.values.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_value_and_unheld_values_are_swept() {
        let mut table: Table<str> = Table::new(2);
        let a = table.get("a");
        assert!(Arc::ptr_eq(&a, &table.get("a")), "one copy of a");
        drop(table.get("b"));
        // Two values reach the floor: the next new one sweeps b (held by no one) and keeps a.
        let _c = table.get("c");
        assert_eq!(table.values.len(), 2);
        assert!(table.values.contains("a") && table.values.contains("c"));
        assert!(Arc::ptr_eq(&a, &table.get("a")), "a survived the sweep");
    }
}
