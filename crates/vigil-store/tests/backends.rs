//! One suite, run against both backends: what is committed comes back.

use bytes::Bytes;
use vigil_proto::time::Clock;
use vigil_proto::{Publish, QoS, SubscriptionOptions};
use vigil_store::{
    Backend, DiskBackend, MemoryBackend, MessageRecord, Op, QueuedRecord, Sent, SessionRecord,
    SubscriptionRecord, WillRecord,
};

fn msg(topic: &str, payload: &'static [u8], qos: QoS) -> MessageRecord {
    MessageRecord {
        publish: Publish {
            qos,
            topic: topic.into(),
            packet_id: u16::from(qos != QoS::AtMostOnce),
            payload: Bytes::from_static(payload),
            ..Publish::default()
        },
        expires_at: None,
    }
}

fn session(id: u64, client: &str) -> SessionRecord {
    SessionRecord {
        id,
        client_id: client.into(),
        protocol: 5,
        expiry: 600,
        subscriptions: vec![SubscriptionRecord {
            filter: "a/#".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..SubscriptionOptions::default()
            },
            id: Some(3),
        }],
        will: Some(WillRecord {
            message: msg("w", b"bye", QoS::AtLeastOnce),
            delay: 5,
        }),
        disconnected_at: Some(1000),
        will_due: Some(6000),
    }
}

fn queued(payload: &'static [u8]) -> QueuedRecord {
    QueuedRecord {
        message: msg("a/b", payload, QoS::ExactlyOnce),
        qos: QoS::ExactlyOnce,
        retain: false,
        subscription_ids: vec![3],
    }
}

fn suite(mut b: impl Backend, reopen: impl Fn() -> Box<dyn Backend>) {
    let ops = vec![
        Op::PutSession(session(1, "one")),
        Op::PutSession(session(2, "two")),
        Op::Enqueue {
            session: 1,
            seq: 10,
            record: queued(b"m10"),
        },
        Op::Enqueue {
            session: 1,
            seq: 11,
            record: queued(b"m11"),
        },
        Op::Enqueue {
            session: 1,
            seq: 12,
            record: queued(b"m12"),
        },
        Op::Enqueue {
            session: 2,
            seq: 13,
            record: queued(b"m13"),
        },
        Op::Progress {
            session: 1,
            seq: 10,
            sent: Sent::Published(1),
        },
        Op::Progress {
            session: 1,
            seq: 11,
            sent: Sent::Published(2),
        },
        Op::Progress {
            session: 1,
            seq: 11,
            sent: Sent::Released(2),
        },
        Op::Dequeue {
            session: 1,
            seq: 12,
        },
        // Progress of something already gone must not bring it back.
        Op::Progress {
            session: 1,
            seq: 12,
            sent: Sent::Published(3),
        },
        Op::AddInbound {
            session: 1,
            packet_id: 7,
        },
        Op::AddInbound {
            session: 2,
            packet_id: 8,
        },
        Op::RemoveInbound {
            session: 2,
            packet_id: 8,
        },
        Op::PutRetained(msg("r/1", b"one", QoS::AtLeastOnce)),
        Op::PutRetained(msg("r/2", b"two", QoS::AtMostOnce)),
        Op::DeleteRetained("r/2".into()),
    ];
    b.commit(&ops, true).unwrap();
    drop(b);
    let mut b = reopen();
    let c = b.load(false).unwrap();
    assert_eq!(c.sessions, vec![session(1, "one"), session(2, "two")]);
    let q: Vec<_> = c
        .queued
        .iter()
        .map(|e| {
            let record = QueuedRecord {
                message: MessageRecord::from_message(&e.message, &Clock::now()),
                qos: e.qos,
                retain: e.retain,
                subscription_ids: e.subscription_ids.clone(),
            };
            (e.session, e.seq, record, e.sent)
        })
        .collect();
    assert_eq!(
        q,
        vec![
            (1, 10, queued(b"m10"), Some(Sent::Published(1))),
            (1, 11, queued(b"m11"), Some(Sent::Released(2))),
            (2, 13, queued(b"m13"), None),
        ]
    );
    assert_eq!(c.inbound_qos2, vec![(1, 7)]);
    assert_eq!(c.retained, vec![msg("r/1", b"one", QoS::AtLeastOnce)]);

    // Deleting a session takes its queue and inbound ids with it; a clean
    // start keeps the record but empties the queue.
    b.commit(&[Op::DeleteSession(1), Op::ClearQueue(2)], false)
        .unwrap();
    let c = b.load(false).unwrap();
    assert_eq!(c.sessions, vec![session(2, "two")]);
    assert!(c.queued.is_empty());
    assert!(c.inbound_qos2.is_empty());
}

#[test]
fn memory_backend() {
    let shared = MemoryBackend::new();
    let again = shared.clone();
    suite(shared, move || Box::new(again.clone()));
}

#[test]
fn disk_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    suite(DiskBackend::open(&path).unwrap(), move || {
        Box::new(DiskBackend::open(&path).unwrap())
    });
}

#[test]
fn a_store_from_a_newer_format_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(DiskBackend::open(dir.path()).unwrap());
    {
        let db = redb::Database::open(vigil_store::store_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", vigil_store::STORE_FORMAT + 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = DiskBackend::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vigil.redb"), "{err}");
    assert!(err.contains("format 2"), "{err}");
}

#[test]
fn a_damaged_record_names_the_file_and_salvage_drops_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = DiskBackend::open(dir.path()).unwrap();
    b.commit(
        &[
            Op::PutRetained(msg("good", b"ok", QoS::AtMostOnce)),
            Op::PutRetained(msg("bad", b"ok", QoS::AtMostOnce)),
        ],
        true,
    )
    .unwrap();
    drop(b);
    {
        let db = redb::Database::open(vigil_store::store_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("retained"))
                .unwrap();
            t.insert("bad", &[1u8, 0, 0][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let mut b = DiskBackend::open(dir.path()).unwrap();
    let err = b.load(false).unwrap_err().to_string();
    assert!(
        err.contains("vigil.redb") && err.contains("\"bad\""),
        "{err}"
    );
    assert!(err.contains("--salvage-store"), "{err}");
    let c = b.load(true).unwrap();
    assert_eq!(c.skipped, 1);
    assert_eq!(c.retained, vec![msg("good", b"ok", QoS::AtMostOnce)]);
    // Salvage deleted the damaged record: a normal start works again.
    assert_eq!(b.load(false).unwrap().retained.len(), 1);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        vigil_store::store_file(dir.path()),
        b"not a database at all",
    )
    .unwrap();
    let err = DiskBackend::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vigil.redb"), "{err}");
}

#[test]
fn a_truncated_store_is_refused_with_its_name_or_repaired_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = DiskBackend::open(dir.path()).unwrap();
    let ops: Vec<Op> = (0..2000)
        .map(|i| Op::Enqueue {
            session: 1,
            seq: i,
            record: queued(b"payload"),
        })
        .collect();
    b.commit(&[Op::PutSession(session(1, "one"))], true)
        .unwrap();
    b.commit(&ops, true).unwrap();
    drop(b);
    let file = vigil_store::store_file(dir.path());
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    match DiskBackend::open(dir.path()).and_then(|mut b| b.load(false)) {
        Err(e) => assert!(e.to_string().contains("vigil.redb"), "{e}"),
        // If the engine's repair recovered a consistent state, it must be
        // a committed one: either everything or the state before the queue.
        Ok(c) => assert!(
            c.queued.len() == 2000 || c.queued.is_empty(),
            "{} queued",
            c.queued.len()
        ),
    }
}

#[test]
fn a_data_dir_that_is_a_regular_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"some file").unwrap();
    let err = DiskBackend::open(&file).unwrap_err().to_string();
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
    assert!(!err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"some file", "left alone");
}

#[test]
fn a_data_dir_under_a_regular_file_is_an_io_problem_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"some file").unwrap();
    let err = DiskBackend::open(&file.join("sub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("part of the path is a file"), "{err}");
    assert!(!err.contains("damaged"), "{err}");
}

#[test]
fn a_directory_where_the_store_file_belongs_is_not_called_damage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(vigil_store::store_file(dir.path())).unwrap();
    let err = DiskBackend::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vigil.redb"), "{err}");
    assert!(!err.contains("damaged"), "{err}");
}

/// A message queued for many sessions is stored once per entry; read back,
/// the entries share one allocation of it again (as the live broker shared
/// it), and only equal messages are shared.
fn shares_one_message_per_stored_message(
    mut b: impl Backend,
    reopen: impl Fn() -> Box<dyn Backend>,
) {
    let mut ops = Vec::new();
    let mut seq = 1;
    for session in 1..=50 {
        for payload in [&b"first"[..], b"second"] {
            let mut record = queued(b"x");
            record.message.publish.payload = Bytes::from_static(payload);
            ops.push(Op::Enqueue {
                session,
                seq,
                record,
            });
            seq += 1;
        }
    }
    b.commit(&ops, true).unwrap();
    drop(b);
    let c = reopen().load(false).unwrap();
    assert_eq!(c.queued.len(), 100);
    let first = &c.queued[0].message;
    let second = &c.queued[1].message;
    assert_eq!(&first.payload[..], b"first");
    assert_eq!(&second.payload[..], b"second");
    assert!(!std::sync::Arc::ptr_eq(first, second));
    for (i, e) in c.queued.iter().enumerate() {
        let expected = if i % 2 == 0 { first } else { second };
        assert!(std::sync::Arc::ptr_eq(&e.message, expected), "entry {i}");
    }
}

#[test]
fn memory_backend_shares_recovered_messages() {
    let mem = MemoryBackend::new();
    let again = mem.clone();
    shares_one_message_per_stored_message(mem, move || Box::new(again.clone()));
}

#[test]
fn disk_backend_shares_recovered_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    shares_one_message_per_stored_message(DiskBackend::open(&path).unwrap(), move || {
        Box::new(DiskBackend::open(&path).unwrap())
    });
}
