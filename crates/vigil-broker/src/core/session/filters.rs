//! A session's subscriptions as the client wrote them, in filter order.
//!
//! Why not a `BTreeMap`: its first node holds room for eleven entries, 408
//! bytes (a 448-byte allocation) for the one filter most sessions have, in
//! every one of 100,000 recovered offline sessions. A sorted vector of exact
//! capacity holds one filter in 32 bytes; past `FEW` filters (a bridge, a
//! dashboard) the map takes over, so a session with thousands of filters does
//! not shift a long vector at every SUBSCRIBE.

use std::collections::BTreeMap;

use vigil_proto::SubscriptionOptions;

/// What a session keeps of one subscription: its options and subscription
/// identifier (for the store and the admin API).
pub(crate) type Kept = (SubscriptionOptions, Option<u32>);

/// Filters kept in the sorted vector; one more moves them to the map.
const FEW: usize = 16;

/// A session's filters (with any `$share/` prefix), sorted.
#[derive(Debug)]
pub(crate) enum Filters {
    /// Up to `FEW`, sorted by filter, capacity grown one at a time.
    Few(Vec<(Box<str>, Kept)>),
    /// More.
    Many(BTreeMap<Box<str>, Kept>),
}

impl Default for Filters {
    fn default() -> Self {
        Filters::Few(Vec::new())
    }
}

impl Filters {
    /// Adds or replaces the subscription to `filter`; returns what it replaced.
    pub(crate) fn insert(&mut self, filter: &str, kept: Kept) -> Option<Kept> {
        match self {
            Filters::Few(v) => match v.binary_search_by(|(f, _)| (**f).cmp(filter)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, kept)),
                Err(i) if v.len() < FEW => {
                    v.reserve_exact(1);
                    v.insert(i, (filter.into(), kept));
                    None
                }
                Err(_) => {
                    let mut m: BTreeMap<Box<str>, Kept> = std::mem::take(v).into_iter().collect();
                    m.insert(filter.into(), kept);
                    *self = Filters::Many(m);
                    None
                }
            },
            Filters::Many(m) => m.insert(filter.into(), kept),
        }
    }

    /// Removes the subscription to `filter`; returns what it kept.
    pub(crate) fn remove(&mut self, filter: &str) -> Option<Kept> {
        match self {
            Filters::Few(v) => {
                let i = v.binary_search_by(|(f, _)| (**f).cmp(filter)).ok()?;
                Some(v.remove(i).1)
            }
            Filters::Many(m) => m.remove(filter),
        }
    }

    /// How many filters.
    pub(crate) fn len(&self) -> usize {
        match self {
            Filters::Few(v) => v.len(),
            Filters::Many(m) => m.len(),
        }
    }

    /// Every filter with what it keeps, in filter order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Kept)> {
        let (few, many) = match self {
            Filters::Few(v) => (Some(v.iter()), None),
            Filters::Many(m) => (None, Some(m.iter())),
        };
        let few = few.into_iter().flatten().map(|(f, k)| (&**f, k));
        let many = many.into_iter().flatten().map(|(f, k)| (&**f, k));
        few.chain(many)
    }

    /// Every filter, in filter order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(f, _)| f)
    }

    /// Every filter, taken out, in filter order.
    pub(crate) fn into_keys(self) -> Vec<Box<str>> {
        match self {
            Filters::Few(v) => v.into_iter().map(|(f, _)| f).collect(),
            Filters::Many(m) => m.into_keys().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::QoS;

    fn kept(id: u32) -> Kept {
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..SubscriptionOptions::default()
        };
        (options, Some(id))
    }

    #[test]
    fn agrees_with_a_btree_map_across_the_move_to_many() {
        let mut filters = Filters::default();
        let mut reference: BTreeMap<String, Kept> = BTreeMap::new();
        for i in 0..60u32 {
            let f = format!("t/{}", (i * 7) % 23);
            assert_eq!(
                filters.insert(&f, kept(i)),
                reference.insert(f.clone(), kept(i))
            );
            if i % 4 == 0 {
                let gone = format!("t/{}", i % 23);
                assert_eq!(filters.remove(&gone), reference.remove(&gone));
            }
            let got: Vec<(String, Kept)> =
                filters.iter().map(|(f, k)| (f.to_owned(), *k)).collect();
            let want: Vec<(String, Kept)> =
                reference.iter().map(|(f, k)| (f.clone(), *k)).collect();
            assert_eq!(got, want, "after step {i}");
            assert_eq!(filters.len(), reference.len());
        }
        assert!(
            matches!(filters, Filters::Many(_)),
            "23 filters went past FEW"
        );
        let keys: Vec<String> = filters.into_keys().into_iter().map(String::from).collect();
        assert_eq!(keys, reference.into_keys().collect::<Vec<_>>());
    }

    #[test]
    fn one_filter_takes_one_entrys_bytes() {
        let mut filters = Filters::default();
        filters.insert("cmd/device-0000001/#", kept(1));
        match &filters {
            Filters::Few(v) => assert_eq!(v.capacity(), 1),
            Filters::Many(_) => panic!("one filter is few"),
        }
        assert!(std::mem::size_of::<(Box<str>, Kept)>() <= 32);
    }
}
