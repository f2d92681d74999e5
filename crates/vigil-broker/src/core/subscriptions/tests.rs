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

#[test]
fn concurrent_publishers_and_subscribers() {
    let idx = std::sync::Arc::new(SubscriptionIndex::default());
    let writer = {
        let idx = idx.clone();
        std::thread::spawn(move || {
            for i in 0..2000u64 {
                let f = format!("t/{}", i % 50);
                idx.subscribe(i % 7, i % 7, &f, None, opts(QoS::AtMostOnce), None);
                idx.unsubscribe((i + 3) % 7, &f, None);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let idx = idx.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..2000u64 {
                    out.clear();
                    idx.match_topic(&format!("t/{}", i % 50), None, |_| true, &mut out);
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}

fn level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just(""), Just("$x")]
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
        filters in prop::collection::vec(filter(), 1..12),
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
