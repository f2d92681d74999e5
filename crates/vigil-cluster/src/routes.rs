//! Routes: the topic filters each node has local subscribers for.
//!
//! This node's own routes are counted here (`LocalRoutes`: one entry per
//! filter, however many subscribers share it) and gossiped as one chitchat
//! key per filter by the membership task, in batches, off the PUBLISH path.
//! Other nodes' routes are read back from chitchat into a trie
//! (`RouteTable`) that a PUBLISH is matched against once to find the nodes
//! it goes to.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

/// Longest filter gossiped as it is. A chitchat key must fit one UDP
/// datagram; a longer plain filter is widened to its first levels and `#`
/// (more is forwarded than needed, nothing is missed), a longer shared one
/// is not announced (logged).
pub(crate) const MAX_GOSSIPED_FILTER: usize = 1024;

/// One route: a plain filter, or a shared group's filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Route {
    /// The share name of a `$share/{group}/{filter}` subscription.
    pub(crate) group: Option<Box<str>>,
    /// The filter (without `$share/{group}/`).
    pub(crate) filter: Box<str>,
}

/// Prefix of a plain route's chitchat key.
const PLAIN: &str = "r:";
/// Prefix of a shared route's chitchat key (`s:{group}/{filter}`: a share
/// name holds no `/`, so the first one ends it).
const SHARED: &str = "s:";

impl Route {
    /// The route gossiped for a local subscription, None if it cannot be.
    pub(crate) fn gossiped(filter: &str, group: Option<&str>) -> Option<Route> {
        if filter.len() <= MAX_GOSSIPED_FILTER {
            return Some(Route {
                group: group.map(Into::into),
                filter: filter.into(),
            });
        }
        if group.is_some() {
            return None;
        }
        let mut widened = String::new();
        for level in filter.split('/') {
            if widened.len() + level.len() + 3 > MAX_GOSSIPED_FILTER {
                break;
            }
            widened.push_str(level);
            widened.push('/');
        }
        widened.push('#');
        Some(Route {
            group: None,
            filter: widened.into(),
        })
    }

    /// Its chitchat key.
    pub(crate) fn key(&self) -> String {
        match &self.group {
            None => format!("{PLAIN}{}", self.filter),
            Some(g) => format!("{SHARED}{g}/{}", self.filter),
        }
    }

    /// The route a chitchat key holds (None: not a route key).
    pub(crate) fn from_key(key: &str) -> Option<Route> {
        if let Some(filter) = key.strip_prefix(PLAIN) {
            return Some(Route {
                group: None,
                filter: filter.into(),
            });
        }
        let (group, filter) = key.strip_prefix(SHARED)?.split_once('/')?;
        Some(Route {
            group: Some(group.into()),
            filter: filter.into(),
        })
    }

    /// True for a chitchat key that holds a route.
    pub(crate) fn is_key(key: &str) -> bool {
        key.starts_with(PLAIN) || key.starts_with(SHARED)
    }
}

/// This node's routes with the number of local subscriptions behind each,
/// and the ones that appeared or vanished since they were last gossiped.
#[derive(Debug, Default)]
pub(crate) struct LocalRoutes {
    inner: Mutex<LocalInner>,
}

#[derive(Debug, Default)]
struct LocalInner {
    counts: HashMap<Route, u32>,
    dirty: HashSet<Route>,
}

impl LocalRoutes {
    /// One more local subscription on `route`.
    pub(crate) fn add(&self, route: Route) {
        let mut inner = self.inner.lock();
        let count = inner.counts.entry(route.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            inner.dirty.insert(route);
        }
    }

    /// One local subscription on `route` fewer.
    pub(crate) fn remove(&self, route: &Route) {
        let mut inner = self.inner.lock();
        let Some(count) = inner.counts.get_mut(route) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            inner.counts.remove(route);
            inner.dirty.insert(route.clone());
        }
    }

    /// True while this node has a member of shared group `group` on `filter`.
    pub(crate) fn has_group(&self, group: &str, filter: &str) -> bool {
        let route = Route {
            group: Some(group.into()),
            filter: filter.into(),
        };
        self.inner.lock().counts.contains_key(&route)
    }

    /// Up to `max` routes changed since the last call, each with whether
    /// it is now present; the rest stay for the next call.
    pub(crate) fn take_changes(&self, max: usize) -> Vec<(Route, bool)> {
        let mut inner = self.inner.lock();
        let taken: Vec<Route> = inner.dirty.iter().take(max).cloned().collect();
        taken
            .into_iter()
            .map(|r| {
                inner.dirty.remove(&r);
                let present = inner.counts.contains_key(&r);
                (r, present)
            })
            .collect()
    }

    /// Number of distinct routes.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().counts.len()
    }
}

/// Other nodes' routes, as a trie of filter levels.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    root: TrieNode,
    per_node: HashMap<u64, HashSet<Route>>,
}

#[derive(Debug, Default)]
struct TrieNode {
    children: HashMap<Box<str>, TrieNode>,
    /// Nodes with a plain subscription on the filter ending here.
    nodes: Vec<u64>,
    /// Shared groups on the filter ending here.
    shared: Vec<SharedRoute>,
}

impl TrieNode {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.nodes.is_empty() && self.shared.is_empty()
    }
}

#[derive(Debug)]
struct SharedRoute {
    group: Box<str>,
    filter: Box<str>,
    nodes: Vec<u64>,
}

/// Where a topic goes: the nodes with a matching plain filter, and each
/// matching shared group with the nodes that have members of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Matches {
    /// Nodes with a matching plain filter, sorted, once each.
    pub(crate) nodes: Vec<u64>,
    /// (group, filter, nodes with members).
    pub(crate) groups: Vec<(Box<str>, Box<str>, Vec<u64>)>,
}

impl RouteTable {
    /// Adds `route` for `node`; false if it had it.
    pub(crate) fn insert(&mut self, node: u64, route: Route) -> bool {
        if !self.per_node.entry(node).or_default().insert(route.clone()) {
            return false;
        }
        let mut at = &mut self.root;
        for level in route.filter.split('/') {
            at = at.children.entry(level.into()).or_default();
        }
        match route.group {
            None => at.nodes.push(node),
            Some(group) => match at.shared.iter_mut().find(|s| s.group == group) {
                Some(s) => s.nodes.push(node),
                None => at.shared.push(SharedRoute {
                    group,
                    filter: route.filter.clone(),
                    nodes: vec![node],
                }),
            },
        }
        true
    }

    /// Removes `route` of `node`; false if it had none.
    pub(crate) fn remove(&mut self, node: u64, route: &Route) -> bool {
        let Some(routes) = self.per_node.get_mut(&node) else {
            return false;
        };
        if !routes.remove(route) {
            return false;
        }
        if routes.is_empty() {
            self.per_node.remove(&node);
        }
        let levels: Vec<&str> = route.filter.split('/').collect();
        remove_at(&mut self.root, &levels, node, route.group.as_deref());
        true
    }

    /// Forgets every route of `node`.
    pub(crate) fn remove_node(&mut self, node: u64) {
        let routes: Vec<Route> = self
            .per_node
            .get(&node)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        for r in routes {
            self.remove(node, &r);
        }
    }

    /// The routes of `node`.
    pub(crate) fn routes_of(&self, node: u64) -> Option<&HashSet<Route>> {
        self.per_node.get(&node)
    }

    /// Where a message on `topic` goes.
    pub(crate) fn matches(&self, topic: &str) -> Matches {
        let mut m = Matches::default();
        let levels: Vec<&str> = topic.split('/').collect();
        walk(&self.root, &levels, 0, topic.starts_with('$'), &mut m);
        m.nodes.sort_unstable();
        m.nodes.dedup();
        m
    }
}

fn remove_at(node: &mut TrieNode, levels: &[&str], id: u64, group: Option<&str>) {
    let Some((first, rest)) = levels.split_first() else {
        match group {
            None => node.nodes.retain(|&n| n != id),
            Some(g) => {
                if let Some(s) = node.shared.iter_mut().find(|s| &*s.group == g) {
                    s.nodes.retain(|&n| n != id);
                }
                node.shared.retain(|s| !s.nodes.is_empty());
            }
        }
        return;
    };
    if let Some(child) = node.children.get_mut(*first) {
        remove_at(child, rest, id, group);
        if child.is_empty() {
            node.children.remove(*first);
        }
    }
}

fn walk(node: &TrieNode, levels: &[&str], depth: usize, dollar: bool, out: &mut Matches) {
    // A leading wildcard never matches a `$` topic (MQTT-4.7.2-1).
    let wildcards_ok = !(depth == 0 && dollar);
    if wildcards_ok {
        if let Some(hash) = node.children.get("#") {
            collect(hash, out);
        }
    }
    let Some(level) = levels.get(depth) else {
        collect(node, out);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, levels, depth + 1, dollar, out);
    }
    if wildcards_ok {
        if let Some(plus) = node.children.get("+") {
            walk(plus, levels, depth + 1, dollar, out);
        }
    }
}

fn collect(node: &TrieNode, out: &mut Matches) {
    out.nodes.extend_from_slice(&node.nodes);
    for s in &node.shared {
        out.groups
            .push((s.group.clone(), s.filter.clone(), s.nodes.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(f: &str) -> Route {
        Route {
            group: None,
            filter: f.into(),
        }
    }

    fn shared(g: &str, f: &str) -> Route {
        Route {
            group: Some(g.into()),
            filter: f.into(),
        }
    }

    #[test]
    fn keys_round_trip() {
        for r in [
            plain("a/+/#"),
            shared("g", "a/b"),
            plain(""),
            shared("g", ""),
        ] {
            assert_eq!(Route::from_key(&r.key()), Some(r.clone()));
            assert!(Route::is_key(&r.key()));
        }
        assert_eq!(shared("g", "x/y").key(), "s:g/x/y");
        assert_eq!(Route::from_key("mqtt"), None);
        assert_eq!(Route::from_key("s:nogroup"), None);
    }

    #[test]
    fn a_filter_too_long_to_gossip_is_widened_and_still_matches() {
        let long = format!("a/{}/c", "b".repeat(MAX_GOSSIPED_FILTER));
        let r = Route::gossiped(&long, None).unwrap();
        assert_eq!(&*r.filter, "a/#");
        assert!(Route::gossiped(&long, Some("g")).is_none());
        let mut t = RouteTable::default();
        t.insert(2, r);
        let topic = long.clone();
        assert_eq!(t.matches(&topic).nodes, vec![2]);
    }

    #[test]
    fn local_routes_are_counted_once_per_filter() {
        let local = LocalRoutes::default();
        local.add(plain("a"));
        local.add(plain("a"));
        local.add(shared("g", "a"));
        let mut changes = local.take_changes(10);
        changes.sort();
        assert_eq!(changes, vec![(plain("a"), true), (shared("g", "a"), true)]);
        assert!(local.has_group("g", "a"));
        local.remove(&plain("a"));
        assert!(local.take_changes(10).is_empty(), "one subscriber is left");
        local.remove(&plain("a"));
        // Added and removed between two flushes: gossiped as absent.
        local.add(plain("b"));
        local.remove(&plain("b"));
        let mut changes = local.take_changes(10);
        changes.sort();
        assert_eq!(changes, vec![(plain("a"), false), (plain("b"), false)]);
        assert_eq!(local.len(), 1);
    }

    #[test]
    fn the_table_matches_like_mqtt_filters() {
        let mut t = RouteTable::default();
        t.insert(2, plain("a/+"));
        t.insert(3, plain("a/#"));
        t.insert(4, plain("#"));
        t.insert(5, plain("a/b/c"));
        t.insert(2, plain("a/b"));
        t.insert(6, shared("g", "a/+"));
        t.insert(7, shared("g", "a/+"));
        assert_eq!(t.matches("a/b").nodes, vec![2, 3, 4]);
        assert_eq!(t.matches("a").nodes, vec![3, 4], "a/# matches its parent");
        assert_eq!(t.matches("a/b/c").nodes, vec![3, 4, 5]);
        assert_eq!(t.matches("$SYS/x").nodes, Vec::<u64>::new());
        let g = t.matches("a/x").groups;
        assert_eq!(g, vec![("g".into(), "a/+".into(), vec![6, 7])]);
        t.remove_node(2);
        assert_eq!(t.matches("a/b").nodes, vec![3, 4]);
        assert!(t.remove(6, &shared("g", "a/+")));
        assert!(!t.remove(6, &shared("g", "a/+")));
        assert_eq!(t.matches("a/x").groups[0].2, vec![7]);
        t.remove_node(7);
        assert!(t.matches("a/x").groups.is_empty());
        for n in [3, 4, 5] {
            t.remove_node(n);
        }
        assert!(t.root.is_empty(), "every trie node pruned");
    }

    #[test]
    fn a_hundred_thousand_routes_load_and_match_quickly() {
        let mut t = RouteTable::default();
        let started = std::time::Instant::now();
        for i in 0..100_000 {
            t.insert(2, plain(&format!("devices/{i}/state")));
        }
        assert_eq!(t.matches("devices/99999/state").nodes, vec![2]);
        assert!(t.matches("devices/100000/state").nodes.is_empty());
        t.remove_node(2);
        assert!(t.root.is_empty());
        let took = started.elapsed();
        assert!(took.as_secs() < 5, "100k routes took {took:?}");
    }
}
