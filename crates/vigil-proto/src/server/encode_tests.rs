//! `encode_transmit` writes deliveries from the shared message without
//! building a `Packet`: its bytes must be exactly those of `poll_transmit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::tests::{connected, outgoing};
use super::ServerConfig;
use crate::message::{Message, Outgoing};
use crate::{Properties, ProtocolVersion, QoS};

/// Deliveries covering every way a PUBLISH differs per subscriber.
fn variety(t0: Instant) -> Vec<Outgoing> {
    let mut with_props = outgoing("sensors/t1", QoS::AtLeastOnce);
    let props = Properties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    with_props.message = Arc::new(Message {
        properties: Message::boxed(props),
        retain: true,
        ..(*with_props.message).clone()
    });
    with_props.retain = true;
    let mut expiring = outgoing("e", QoS::ExactlyOnce);
    expiring.message = Arc::new(Message {
        expires_at: Some(t0 + Duration::from_millis(2500)),
        ..(*expiring.message).clone()
    });
    let mut with_ids = outgoing("ids", QoS::AtLeastOnce);
    with_ids.subscription_ids = vec![7, 300];
    vec![
        outgoing("plain/qos0", QoS::AtMostOnce),
        outgoing("plain/qos1", QoS::AtLeastOnce),
        outgoing("plain/qos2", QoS::ExactlyOnce),
        with_props,
        expiring,
        with_ids,
    ]
}

#[test]
fn encode_transmit_writes_the_same_bytes_as_poll_transmit() {
    for version in [
        ProtocolVersion::V5,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V3_1,
    ] {
        let t0 = Instant::now();
        let mut by_packet = connected(ServerConfig::default(), version, 30, t0);
        let mut direct = connected(ServerConfig::default(), version, 30, t0);
        for o in variety(t0) {
            by_packet.deliver(t0, o.clone());
            direct.deliver(t0, o);
        }
        let mut want = BytesMut::new();
        let mut n = 0;
        while let Some(p) = by_packet.poll_transmit() {
            p.encode(version, &mut want).unwrap();
            n += 1;
        }
        assert_eq!(n, 6, "{version:?}");
        let mut got = BytesMut::new();
        while let Some(r) = direct.encode_transmit(&mut got) {
            r.unwrap();
        }
        assert_eq!(got, want, "{version:?}");
    }
}

#[test]
fn a_plain_delivery_is_written_byte_for_byte() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), ProtocolVersion::V3_1_1, 30, t0);
    c.deliver(t0, outgoing("t", QoS::AtLeastOnce));
    let mut out = BytesMut::new();
    c.encode_transmit(&mut out).unwrap().unwrap();
    assert_eq!(
        &out[..],
        &[0x32, 9, 0, 1, b't', 0, 1, b'd', b'a', b't', b'a']
    );
    assert!(c.encode_transmit(&mut out).is_none());

    let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 30, t0);
    c.deliver(t0, outgoing("t", QoS::AtMostOnce));
    let mut out = BytesMut::new();
    c.encode_transmit(&mut out).unwrap().unwrap();
    // MQTT 5 adds the property length, 0.
    assert_eq!(&out[..], &[0x30, 8, 0, 1, b't', 0, b'd', b'a', b't', b'a']);
}
