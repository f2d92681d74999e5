//! The map a trie node keeps its children and its subscribers in: a vector
//! scanned in place while it holds a few entries, a hash map once it holds
//! many.
//!
//! Why: most nodes hold one entry (`cmd/{device}/#` gives every device a
//! node with one child and a node with one subscriber), and a `HashMap` with
//! one entry allocates four buckets plus control bytes: 692 bytes for a
//! child, 148 for a subscriber. With 100,000 recovered sessions that was
//! ~930 bytes each (see `trie_nodes_stay_small` and docs/architecture.md).
//! Scanning a handful of entries also costs less than hashing a topic level.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept in the vector; one more moves them to a hash map.
const FEW: usize = 8;

/// A small map: see the module comment.
#[derive(Debug)]
pub(super) enum LevelMap<K, V> {
    /// Up to `FEW` entries, in no particular order, the vector's capacity
    /// grown one at a time (exact, so one entry is one entry's bytes).
    Few(Vec<(K, V)>),
    /// More: boxed, so an empty or small map stays one vector wide.
    #[allow(
        clippy::box_collection,
        reason = "keeps every map, few or many, one vector wide"
    )]
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for LevelMap<K, V> {
    fn default() -> Self {
        LevelMap::Few(Vec::new())
    }
}

impl<K: Eq + Hash, V> LevelMap<K, V> {
    /// The value under `key`.
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            LevelMap::Few(v) => v.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            LevelMap::Many(m) => m.get(key),
        }
    }

    /// The value under `key`, to change it.
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            LevelMap::Few(v) => v
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            LevelMap::Many(m) => m.get_mut(key),
        }
    }

    /// The value under `key`, made by `make` if there is none.
    pub(super) fn get_or_insert_with<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &mut V
    where
        K: Borrow<Q> + for<'q> From<&'q Q>,
        Q: Eq + Hash + ?Sized,
    {
        // Two lookups when absent: inserting is rare next to matching, and
        // this keeps the borrow checker content without unsafe code.
        if self.get(key).is_none() {
            self.insert(K::from(key), make());
        }
        self.get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Puts `value` under `key`; returns the value it replaced.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            LevelMap::Few(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if v.len() < FEW {
                    v.reserve_exact(1);
                    v.push((key, value));
                } else {
                    let mut m = HashMap::with_capacity(FEW * 2);
                    m.extend(v.drain(..));
                    m.insert(key, value);
                    *self = LevelMap::Many(Box::new(m));
                }
                None
            }
            LevelMap::Many(m) => m.insert(key, value),
        }
    }

    /// Takes the value under `key` out.
    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            LevelMap::Few(v) => {
                let i = v.iter().position(|(k, _)| k.borrow() == key)?;
                Some(v.swap_remove(i).1)
            }
            LevelMap::Many(m) => m.remove(key),
        }
    }

    /// True when it holds nothing.
    pub(super) fn is_empty(&self) -> bool {
        match self {
            LevelMap::Few(v) => v.is_empty(),
            LevelMap::Many(m) => m.is_empty(),
        }
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            LevelMap::Few(v) => (Some(v.iter().map(|(k, v)| (k, v))), None),
            LevelMap::Many(m) => (None, Some(m.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_hash_map_across_the_move_to_many_and_back_to_empty() {
        let mut small: LevelMap<Box<str>, u32> = LevelMap::default();
        let mut reference: HashMap<Box<str>, u32> = HashMap::new();
        let key = |i: u32| -> Box<str> { format!("k{}", i % 13).into() };
        for i in 0..40u32 {
            assert_eq!(
                small.insert(key(i), i),
                reference.insert(key(i), i),
                "insert {i}"
            );
            if i % 3 == 0 {
                let k = key(i * 7);
                assert_eq!(small.remove(&*k), reference.remove(&k), "remove {i}");
            }
            for j in 0..13 {
                assert_eq!(small.get(&*key(j)), reference.get(&key(j)));
            }
            let mut got: Vec<_> = small.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut want: Vec<_> = reference.iter().map(|(k, v)| (k.clone(), *v)).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
        assert!(matches!(small, LevelMap::Many(_)), "13 keys went past FEW");
        for j in 0..13 {
            small.remove(&*key(j));
        }
        assert!(small.is_empty());
        *small.get_or_insert_with("x", || 5) += 1;
        assert_eq!(small.get("x"), Some(&6));
    }

    #[test]
    fn one_entry_takes_one_entrys_bytes() {
        let mut m: LevelMap<u64, [u8; 24]> = LevelMap::default();
        m.insert(1, [0; 24]);
        match &m {
            LevelMap::Few(v) => assert_eq!(v.capacity(), 1),
            LevelMap::Many(_) => panic!("one entry is few"),
        }
        assert_eq!(
            std::mem::size_of::<LevelMap<u64, [u8; 24]>>(),
            std::mem::size_of::<Vec<(u64, [u8; 24])>>()
        );
    }
}
