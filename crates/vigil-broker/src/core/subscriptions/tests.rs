use proptest::prelude::*;
use vigil_proto::{QoS, SubscriptionOptions};

use super::*;

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

fn keys(idx: &SubscriptionIndex<u64>, topic: &str, publisher: Option<u64>) -> Vec<u64> {
    let mut out = Vec::new();
    idx.match_topic(topic, publisher, |_| true, &mut out);
    let mut k: Vec<u64> = out.iter().map(|m| m.key).collect();
    k.sort_unstable();
    k
}

#[test]
fn wildcards_and_dollar_topics() {
    let idx = SubscriptionIndex::default();
    idx.subscribe(1, 1, "a/b", None, opts(QoS::AtMostOnce), None);
    idx.subscribe(2, 2, "a/+", None, opts(QoS::AtMostOnce), None);
    idx.subscribe(3, 3, "a/#", None, opts(QoS::AtMostOnce), None);
    idx.subscribe(4, 4, "#", None, opts(QoS::AtMostOnce), None);
    idx.subscribe(5, 5, "$SYS/#", None, opts(QoS::AtMostOnce), None);
    assert_eq!(keys(&idx, "a/b", None), vec![1, 2, 3, 4]);
    assert_eq!(
        keys(&idx, "a", None),
        vec![3, 4],
        "a/# matches its parent level"
    );
    assert_eq!(keys(&idx, "a/b/c", None), vec![3, 4]);
    assert_eq!(
        keys(&idx, "$SYS/load", None),
        vec![5],
        "# does not match $ topics"
    );
}

#[test]
fn overlapping_subscriptions_make_one_delivery_with_max_qos_and_all_ids() {
    let idx = SubscriptionIndex::default();
    idx.subscribe(1, 1, "a/+", None, opts(QoS::AtMostOnce), Some(10));
    idx.subscribe(1, 1, "a/#", None, opts(QoS::ExactlyOnce), Some(20));
    let mut out = Vec::new();
    idx.match_topic("a/b", None, |_| true, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].qos, QoS::ExactlyOnce);
    let mut ids = out[0].subscription_ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![10, 20]);
}

#[test]
fn no_local_skips_the_publisher_only() {
    let idx = SubscriptionIndex::default();
    let nl = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    idx.subscribe(1, 1, "t", None, nl, None);
    idx.subscribe(2, 2, "t", None, nl, None);
    assert_eq!(keys(&idx, "t", Some(1)), vec![2]);
}

#[test]
fn shared_group_round_robin_is_fair() {
    let idx = SubscriptionIndex::default();
    for k in 1..=3 {
        idx.subscribe(k, k, "jobs/+", Some("g"), opts(QoS::AtLeastOnce), None);
    }
    let mut counts = [0; 4];
    for _ in 0..300 {
        let mut out = Vec::new();
        idx.match_topic("jobs/x", None, |_| true, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].shared);
        counts[out[0].key as usize] += 1;
    }
    assert_eq!(&counts[1..], &[100, 100, 100]);
}

#[test]
fn shared_group_prefers_online_members() {
    let idx = SubscriptionIndex::default();
    for k in 1..=3 {
        idx.subscribe(k, k, "jobs", Some("g"), opts(QoS::AtLeastOnce), None);
    }
    for _ in 0..30 {
        let mut out = Vec::new();
        idx.match_topic("jobs", None, |s| *s != 2, &mut out);
        assert_ne!(
            out[0].key, 2,
            "an offline member must not black-hole messages"
        );
    }
}

#[test]
fn shared_and_plain_subscription_of_one_client_are_separate_deliveries() {
    let idx = SubscriptionIndex::default();
    idx.subscribe(1, 1, "t", None, opts(QoS::AtMostOnce), None);
    idx.subscribe(1, 1, "t", Some("g"), opts(QoS::AtMostOnce), None);
    let mut out = Vec::new();
    idx.match_topic("t", None, |_| true, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn unsubscribe_prunes_the_trie() {
    let idx = SubscriptionIndex::default();
    assert!(!idx.subscribe(1, 1, "a/b/c", None, opts(QoS::AtMostOnce), None));
    assert!(
        idx.subscribe(1, 1, "a/b/c", None, opts(QoS::AtLeastOnce), None),
        "re-subscribe replaces"
    );
    idx.subscribe(2, 2, "x", Some("g"), opts(QoS::AtMostOnce), None);
    assert!(idx.unsubscribe(1, "a/b/c", None));
    assert!(!idx.unsubscribe(1, "a/b/c", None));
    assert!(idx.unsubscribe(2, "x", Some("g")));
    assert!(idx.root.read().is_empty());
}

/// A recovered broker holds a node per level of every session's filter
/// (100,000 sessions on `cmd/{id}/#` are 200,000 nodes): a node, and an
/// entry in a node with one child or one subscriber, stay a few words.
#[test]
fn trie_nodes_stay_small() {
    type S = std::sync::Arc<()>;
    assert!(
        std::mem::size_of::<Node<S>>() <= 56,
        "{}",
        std::mem::size_of::<Node<S>>()
    );
    let idx = SubscriptionIndex::default();
    idx.subscribe(
        1,
        S::default(),
        "cmd/d1/#",
        None,
        opts(QoS::AtLeastOnce),
        None,
    );
    let root = idx.root.read();
    let device = root.children.get("cmd").and_then(|n| n.children.get("d1"));
    let device = device.expect("node of cmd/d1");
    match (&device.children, &device.children.get("#").expect("#").subs) {
        (LevelMap::Few(children), LevelMap::Few(subs)) => {
            assert_eq!((children.capacity(), subs.capacity()), (1, 1));
        }
        _ => panic!("one child and one subscriber are few"),
    }
}

/// One writer's step in `concurrent_publishers_and_subscribers`.
#[derive(Clone, Copy)]
enum Op {
    Subscribe {
        key: u64,
        filter: &'static str,
        qos: QoS,
        id: u32,
    },
    Unsubscribe {
        key: u64,
        filter: &'static str,
    },
}

/// What a reader of `CONCURRENT_TOPIC` sees, in a canonical order:
/// (key, merged QoS, sorted subscription ids) per subscriber.
type Seen = Vec<(u64, QoS, Vec<u32>)>;

const CONCURRENT_TOPIC: &str = "a/b";

/// A fixed mix of subscribes, re-subscribes with another QoS (replacing the
/// entry) and unsubscribes (pruning nodes), over filters that match
/// `CONCURRENT_TOPIC` and filters that only share nodes with it.
fn concurrent_ops() -> Vec<Op> {
    const FILTERS: [&str; 9] = [
        "a/b", "a/+", "#", "+/b", "a/#", "+/+", "a/c", "b/#", "a/b/c",
    ];
    (0..3000u32)
        .map(|i| {
            let key = u64::from(i * 7 % 40);
            let filter = FILTERS[(i as usize * 3 + i as usize / 9) % FILTERS.len()];
            if i % 4 == 3 {
                Op::Unsubscribe { key, filter }
            } else {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i as usize % 3];
                Op::Subscribe {
                    key,
                    filter,
                    qos,
                    id: i + 1,
                }
            }
        })
        .collect()
}

/// The reference model: what `CONCURRENT_TOPIC` matches after each prefix
/// of `ops` (index c: after the first c ops).
fn expected_after_each_op(ops: &[Op]) -> Vec<Seen> {
    let mut subs: std::collections::HashMap<(u64, &str), (QoS, u32)> = Default::default();
    let mut states = Vec::with_capacity(ops.len() + 1);
    let seen = |subs: &std::collections::HashMap<(u64, &str), (QoS, u32)>| {
        let mut per_key: std::collections::BTreeMap<u64, (QoS, Vec<u32>)> = Default::default();
        for (&(key, filter), &(qos, id)) in subs {
            if vigil_proto::topic::matches(filter, CONCURRENT_TOPIC) {
                let e = per_key.entry(key).or_insert((QoS::AtMostOnce, Vec::new()));
                e.0 = e.0.max(qos);
                e.1.push(id);
            }
        }
        per_key
            .into_iter()
            .map(|(k, (q, mut ids))| {
                ids.sort_unstable();
                (k, q, ids)
            })
            .collect::<Seen>()
    };
    states.push(seen(&subs));
    for op in ops {
        match *op {
            Op::Subscribe {
                key,
                filter,
                qos,
                id,
            } => {
                subs.insert((key, filter), (qos, id));
            }
            Op::Unsubscribe { key, filter } => {
                subs.remove(&(key, filter));
            }
        }
        states.push(seen(&subs));
    }
    states
}

fn seen_now(idx: &SubscriptionIndex<u64>, out: &mut Vec<Match<u64>>) -> Seen {
    out.clear();
    idx.match_topic(CONCURRENT_TOPIC, None, |_| true, out);
    let mut seen: Seen = out
        .iter()
        .map(|m| {
            let mut ids = m.subscription_ids.clone();
            ids.sort_unstable();
            (m.key, m.qos, ids)
        })
        .collect();
    seen.sort_unstable();
    seen
}

/// Readers matching while a writer subscribes, re-subscribes and
/// unsubscribes: every match a reader gets is exactly the index's state
/// after some prefix of the writer's ops (no half-done update, no subscriber
/// twice), each reader's prefixes never go back, and the final state is
/// exact. A deadlock fails the test after a minute instead of hanging it.
#[test]
fn concurrent_publishers_and_subscribers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::RecvTimeoutError;
    use std::sync::{Arc, Barrier};
    const READERS: usize = 2;

    let ops = concurrent_ops();
    let expected = Arc::new(expected_after_each_op(&ops));
    let idx = Arc::new(SubscriptionIndex::<u64>::default());
    let writing = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(READERS + 1));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let mut threads = Vec::new();
    threads.push({
        let (idx, writing, start, done) =
            (idx.clone(), writing.clone(), start.clone(), done.clone());
        std::thread::spawn(move || {
            start.wait();
            for op in ops {
                match op {
                    Op::Subscribe {
                        key,
                        filter,
                        qos,
                        id,
                    } => {
                        idx.subscribe(key, key, filter, None, opts(qos), Some(id));
                    }
                    Op::Unsubscribe { key, filter } => {
                        idx.unsubscribe(key, filter, None);
                    }
                }
                // Without it the writer takes the lock again at once (it is
                // not fair), and readers see hardly any state between.
                std::thread::yield_now();
            }
            writing.store(false, Ordering::Release);
            let _ = done.send(());
        })
    });
    for _ in 0..READERS {
        let (idx, writing, start, done, expected) = (
            idx.clone(),
            writing.clone(),
            start.clone(),
            done.clone(),
            expected.clone(),
        );
        threads.push(std::thread::spawn(move || {
            start.wait();
            let mut out = Vec::new();
            // The earliest prefix the last read can have been; a later read
            // is at this prefix or after it.
            let mut at = 0;
            let mut reads = 0usize;
            loop {
                let last = !writing.load(Ordering::Acquire);
                let seen = seen_now(&idx, &mut out);
                reads += 1;
                match (at..expected.len()).find(|&c| expected[c] == seen) {
                    Some(c) => at = c,
                    None => panic!(
                        "read {reads} saw {seen:?}: not the state after any op from {at} on \
                         (state after op {at}: {:?})",
                        expected[at]
                    ),
                }
                if last {
                    break;
                }
            }
            assert_eq!(
                expected[at],
                expected[expected.len() - 1],
                "the last read, after the writer, sees the end state"
            );
            let _ = done.send(());
        }));
    }
    drop(done);
    for _ in 0..threads.len() {
        match finished.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(()) => {}
            // A thread panicked (every sender is gone): its join says why.
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("writer or readers still running after 60 s: deadlock")
            }
        }
    }
    for t in threads {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }
    assert_eq!(
        seen_now(&idx, &mut Vec::new()),
        expected[expected.len() - 1],
        "final state"
    );
}

fn level() -> impl Strategy<Value = &'static str> {
    // More than `level_map::FEW` distinct levels, so nodes with many
    // children (and many subscribers) take the hash-map path too.
    prop_oneof![
        Just("a"),
        Just("b"),
        Just(""),
        Just("$x"),
        Just("c"),
        Just("d"),
        Just("e"),
        Just("f"),
        Just("g"),
        Just("h"),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![level(), Just("+")], 1..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#");
            }
            l.join("/")
        })
}

proptest! {
    #[test]
    fn agrees_with_the_reference_matcher(
        filters in prop::collection::vec(filter(), 1..40),
        topic in prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/")),
    ) {
        let idx = SubscriptionIndex::default();
        for (k, f) in filters.iter().enumerate() {
            idx.subscribe(k as u64, k as u64, f, None, opts(QoS::AtMostOnce), None);
        }
        let want: Vec<u64> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| vigil_proto::topic::matches(f, &topic))
            .map(|(k, _)| k as u64)
            .collect();
        prop_assert_eq!(keys(&idx, &topic, None), want);
    }
}
