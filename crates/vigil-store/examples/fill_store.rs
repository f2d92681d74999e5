//! Writes a large store for timing recovery:
//! `cargo run --release -p vigil-store --example fill_store -- DIR SESSIONS QUEUED_PER_SESSION`
//! then start `vigil serve --data-dir DIR` and read `took_ms` on its "store opened" line
//! (`scripts/fill_store_rss.py target/release/vigil DIR` does that and reads the RSS).

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use vigil_proto::{Publish, QoS, SubscriptionOptions};
use vigil_store::{
    Backend, DiskBackend, MessageRecord, Op, QueuedRecord, SessionRecord, SubscriptionRecord,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fill_store DIR SESSIONS QUEUED_PER_SESSION";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let sessions: u64 = args.next().ok_or(usage)?.parse()?;
    let per: u64 = args.next().ok_or(usage)?.parse()?;
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut store = DiskBackend::open(&dir)?;
    let started = Instant::now();
    let mut ops = Vec::new();
    let mut seq = 1u64;
    for id in 1..=sessions {
        ops.push(Op::PutSession(SessionRecord {
            id,
            client_id: format!("device-{id:07}"),
            protocol: 5,
            expiry: 86_400,
            subscriptions: vec![SubscriptionRecord {
                filter: format!("cmd/device-{id:07}/#"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
                id: None,
            }],
            will: None,
            disconnected_at: Some(now_ms),
            will_due: None,
        }));
        for _ in 0..per {
            ops.push(Op::Enqueue {
                session: id,
                seq,
                record: QueuedRecord {
                    message: MessageRecord {
                        publish: Publish {
                            qos: QoS::AtLeastOnce,
                            topic: format!("cmd/device-{id:07}/set").into(),
                            packet_id: 1,
                            payload: Bytes::from(vec![b'x'; 64]),
                            ..Publish::default()
                        },
                        expires_at: None,
                    },
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: vec![],
                },
            });
            seq += 1;
        }
        if ops.len() >= 50_000 {
            store.commit(&ops, false)?;
            ops.clear();
        }
    }
    store.commit(&ops, true)?;
    println!(
        "wrote {sessions} sessions and {} queued messages to {} in {:.1} s",
        seq - 1,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
