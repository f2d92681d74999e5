//! The subscription index: a trie of topic levels, read concurrently by every
//! publishing connection (a read lock; shared-group cursors are atomics, so
//! matching never needs the write lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use parking_lot::RwLock;
use vigil_proto::{QoS, SubscriptionOptions};

use level_map::LevelMap;

/// One subscription of one subscriber.
#[derive(Debug, Clone)]
struct Entry<S> {
    subscriber: S,
    options: SubscriptionOptions,
    id: Option<u32>,
}

#[derive(Debug)]
struct SharedGroup<S> {
    members: Vec<(u64, Entry<S>)>,
    cursor: AtomicUsize,
}

#[derive(Debug)]
struct Node<S> {
    children: LevelMap<Box<str>, Node<S>>,
    subs: LevelMap<u64, Entry<S>>,
    /// Boxed and absent on almost every node.
    #[allow(
        clippy::box_collection,
        reason = "one word in every node instead of a map's six"
    )]
    shared: Option<Box<HashMap<String, SharedGroup<S>>>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            children: LevelMap::default(),
            subs: LevelMap::default(),
            shared: None,
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_none()
    }

    fn shared_groups(&self) -> impl Iterator<Item = &SharedGroup<S>> {
        self.shared.iter().flat_map(|m| m.values())
    }
}

/// One subscriber a published message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Match<S> {
    /// The subscriber's unique key.
    pub key: u64,
    /// The subscriber.
    pub subscriber: S,
    /// Highest granted QoS over its matching subscriptions.
    pub qos: QoS,
    /// Whether any matching subscription asked for Retain As Published.
    pub retain_as_published: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// Chosen as the one member of a shared group.
    pub shared: bool,
}

/// Topic filter → subscribers, with wildcards and shared groups.
#[derive(Debug)]
pub(crate) struct SubscriptionIndex<S> {
    root: RwLock<Node<S>>,
}

impl<S: Clone> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex {
            root: RwLock::new(Node::default()),
        }
    }
}

impl<S: Clone> SubscriptionIndex<S> {
    /// Adds or replaces a subscription; returns true if it already existed.
    /// `filter` is the plain filter; `group` is set for `$share/{group}/{filter}`.
    pub(crate) fn subscribe(
        &self,
        key: u64,
        subscriber: S,
        filter: &str,
        group: Option<&str>,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let mut root = self.root.write();
        let mut node = &mut *root;
        for level in filter.split('/') {
            node = node.children.get_or_insert_with(level, Node::default);
        }
        let entry = Entry {
            subscriber,
            options,
            id,
        };
        match group {
            None => node.subs.insert(key, entry).is_some(),
            Some(g) => {
                let group = node
                    .shared
                    .get_or_insert_with(Default::default)
                    .entry(g.to_owned())
                    .or_insert_with(|| SharedGroup {
                        members: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    });
                match group.members.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => {
                        slot.1 = entry;
                        true
                    }
                    None => {
                        group.members.push((key, entry));
                        false
                    }
                }
            }
        }
    }

    /// Removes a subscription; returns true if it existed. Empty nodes are pruned.
    pub(crate) fn unsubscribe(&self, key: u64, filter: &str, group: Option<&str>) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut root = self.root.write();
        remove(&mut root, &levels, key, group)
    }

    /// Appends one `Match` per receiving subscriber: non-shared subscriptions of a
    /// subscriber are merged (max QoS, all ids); each shared group adds one member,
    /// round-robin, preferring members for which `is_online` holds.
    pub(crate) fn match_topic(
        &self,
        topic: &str,
        publisher: Option<u64>,
        is_online: impl Fn(&S) -> bool,
        out: &mut Vec<Match<S>>,
    ) {
        self.match_topic_with(topic, publisher, true, is_online, out);
    }

    /// `match_topic` without shared groups (`shared` false): a message
    /// forwarded by another cluster node, which chose the groups itself.
    pub(crate) fn match_topic_with(
        &self,
        topic: &str,
        publisher: Option<u64>,
        shared: bool,
        is_online: impl Fn(&S) -> bool,
        out: &mut Vec<Match<S>>,
    ) {
        let start = out.len();
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        {
            let root = self.root.read();
            let ctx = Walk {
                publisher,
                shared,
                is_online: &is_online,
            };
            walk(&root, &levels, 0, dollar, &ctx, out);
        }
        merge_per_subscriber(&mut out[start..]);
        let mut kept = start;
        for i in start..out.len() {
            if out[i].key != u64::MAX {
                out.swap(kept, i);
                kept += 1;
            }
        }
        out.truncate(kept);
    }
}

impl<S: Clone> SubscriptionIndex<S> {
    /// One member of the shared group `group` on `filter` other than the
    /// subscriber `exclude`, round-robin, preferring members for which
    /// `is_online` holds; None when the group has no other member.
    pub(crate) fn pick_shared(
        &self,
        filter: &str,
        group: &str,
        exclude: u64,
        is_online: impl Fn(&S) -> bool,
    ) -> Option<Match<S>> {
        let root = self.root.read();
        let mut node = &*root;
        for level in filter.split('/') {
            node = node.children.get(level)?;
        }
        let g = node.shared.as_ref()?.get(group)?;
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let start = g.cursor.fetch_add(1, Relaxed) % n;
        let others = || {
            (0..n)
                .map(move |i| (start + i) % n)
                .filter(|&i| g.members[i].0 != exclude)
        };
        let pick = others()
            .find(|&i| is_online(&g.members[i].1.subscriber))
            .or_else(|| others().next())?;
        let (key, e) = &g.members[pick];
        Some(Match {
            key: *key,
            subscriber: e.subscriber.clone(),
            qos: e.options.qos,
            retain_as_published: e.options.retain_as_published,
            subscription_ids: e.id.into_iter().collect(),
            shared: true,
        })
    }
}

fn remove<S>(node: &mut Node<S>, levels: &[&str], key: u64, group: Option<&str>) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => node.subs.remove(&key).is_some(),
            Some(g) => {
                let Some(groups) = node.shared.as_mut() else {
                    return false;
                };
                let Some(shared) = groups.get_mut(g) else {
                    return false;
                };
                let before = shared.members.len();
                shared.members.retain(|(k, _)| *k != key);
                let removed = shared.members.len() != before;
                if shared.members.is_empty() {
                    groups.remove(g);
                    if groups.is_empty() {
                        node.shared = None;
                    }
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove(child, rest, key, group);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

/// What every step of a match needs, whatever the level.
struct Walk<'a, F> {
    publisher: Option<u64>,
    shared: bool,
    is_online: &'a F,
}

fn walk<S: Clone, F: Fn(&S) -> bool>(
    node: &Node<S>,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    ctx: &Walk<'_, F>,
    out: &mut Vec<Match<S>>,
) {
    // A leading wildcard never matches a `$` topic (MQTT-4.7.2-1).
    let wildcards_ok = !(depth == 0 && dollar);
    if wildcards_ok {
        if let Some(hash) = node.children.get("#") {
            collect(hash, ctx, out);
        }
    }
    let Some(level) = levels.get(depth) else {
        collect(node, ctx, out);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, levels, depth + 1, dollar, ctx, out);
    }
    if wildcards_ok {
        if let Some(plus) = node.children.get("+") {
            walk(plus, levels, depth + 1, dollar, ctx, out);
        }
    }
}

fn collect<S: Clone, F: Fn(&S) -> bool>(
    node: &Node<S>,
    ctx: &Walk<'_, F>,
    out: &mut Vec<Match<S>>,
) {
    for (&key, e) in node.subs.iter() {
        if e.options.no_local && ctx.publisher == Some(key) {
            continue;
        }
        out.push(Match {
            key,
            subscriber: e.subscriber.clone(),
            qos: e.options.qos,
            retain_as_published: e.options.retain_as_published,
            subscription_ids: e.id.into_iter().collect(),
            shared: false,
        });
    }
    if !ctx.shared {
        return;
    }
    for group in node.shared_groups() {
        let n = group.members.len();
        if n == 0 {
            continue;
        }
        let start = group.cursor.fetch_add(1, Relaxed) % n;
        let pick = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| (ctx.is_online)(&group.members[i].1.subscriber))
            .unwrap_or(start);
        let (key, e) = &group.members[pick];
        out.push(Match {
            key: *key,
            subscriber: e.subscriber.clone(),
            qos: e.options.qos,
            retain_as_published: e.options.retain_as_published,
            subscription_ids: e.id.into_iter().collect(),
            shared: true,
        });
    }
}

/// Merges non-shared matches of the same subscriber into the first of them;
/// merged-away entries get key u64::MAX and are removed by the caller.
fn merge_per_subscriber<S>(matches: &mut [Match<S>]) {
    if matches.len() < 2 {
        return;
    }
    matches.sort_by_key(|m| (m.shared, m.key));
    let mut head = 0;
    for i in 1..matches.len() {
        let same = !matches[i].shared
            && !matches[head].shared
            && matches[i].key == matches[head].key
            && matches[head].key != u64::MAX;
        if same {
            let qos = matches[i].qos;
            let rap = matches[i].retain_as_published;
            let ids = std::mem::take(&mut matches[i].subscription_ids);
            let h = &mut matches[head];
            h.qos = h.qos.max(qos);
            h.retain_as_published |= rap;
            h.subscription_ids.extend(ids);
            matches[i].key = u64::MAX;
        } else {
            head = i;
        }
    }
}

mod level_map;
#[cfg(test)]
mod tests;
