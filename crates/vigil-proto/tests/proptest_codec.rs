//! Property tests: every packet round-trips through encode and decode in every
//! version it exists in; arbitrary bytes never panic the decoder and never
//! make it consume more than it was given; declared sizes over the limit are
//! refused.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use vigil_proto::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck,
    Unsubscribe, Will,
};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é/_-]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(/[a-z0-9]{0,6}){0,3}"
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

/// Properties valid on a PUBLISH (or a will, without subscription ids / alias).
fn publish_properties(will: bool) -> impl Strategy<Value = Properties> {
    (
        option::of(0u8..=1),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(1u16..),
        user_properties(),
        option::of(any::<u32>()),
    )
        .prop_map(
            move |(pfi, exp, ct, rt, cd, ids, alias, up, delay)| Properties {
                payload_format_indicator: pfi,
                message_expiry_interval: exp,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                subscription_identifiers: if will { vec![] } else { ids },
                topic_alias: if will { None } else { alias },
                will_delay_interval: if will { delay } else { None },
                user_properties: up,
                ..Properties::default()
            },
        )
}

fn connect_properties() -> impl Strategy<Value = Properties> {
    (
        option::of(any::<u32>()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u32..),
        option::of(0u8..=1),
        option::of(text()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(|(sei, rm, tam, mps, rpi, am, ad, up)| Properties {
            session_expiry_interval: sei,
            receive_maximum: rm,
            topic_alias_maximum: tam,
            maximum_packet_size: mps,
            request_problem_information: rpi,
            authentication_method: am,
            authentication_data: ad,
            user_properties: up,
            ..Properties::default()
        })
}

fn connack_properties() -> impl Strategy<Value = Properties> {
    (
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(1u16..),
        option::of(0u8..=1),
        option::of(0u8..=1),
        option::of(text()),
        user_properties(),
    )
        .prop_map(|(sei, aci, ska, rm, mq, ra, rs, up)| Properties {
            session_expiry_interval: sei,
            assigned_client_identifier: aci,
            server_keep_alive: ska,
            receive_maximum: rm,
            maximum_qos: mq,
            retain_available: ra,
            reason_string: rs,
            user_properties: up,
            ..Properties::default()
        })
}

/// Reason string and user properties: what acks, SUBACK, UNSUBACK may carry.
fn ack_properties() -> impl Strategy<Value = Properties> {
    (option::of(text()), user_properties()).prop_map(|(rs, up)| Properties {
        reason_string: rs,
        user_properties: up,
        ..Properties::default()
    })
}

fn from_table(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(ReasonCode)
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let props = move |s: BoxedStrategy<Properties>| -> BoxedStrategy<Properties> {
        if v5 {
            s
        } else {
            Just(Properties::default()).boxed()
        }
    };
    let connect = (
        any::<bool>(),
        any::<u16>(),
        props(connect_properties().boxed()),
        "[a-zA-Z0-9]{0,23}",
        option::of((
            topic_name(),
            binary(),
            qos(),
            any::<bool>(),
            props(publish_properties(true).boxed()),
        )),
        option::of(text()),
        option::of(binary()),
    )
        .prop_map(move |(clean, ka, properties, id, will, user, pass)| {
            let password = if v5 || user.is_some() { pass } else { None };
            Packet::Connect(Box::new(Connect {
                protocol: v,
                clean_start: clean,
                keep_alive: ka,
                properties,
                client_id: id,
                will: will.map(|(topic, payload, qos, retain, properties)| Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties,
                }),
                username: user,
                password,
            }))
        });
    let connack_codes: &'static [u8] = if v5 {
        &[0x00, 0x80, 0x84, 0x85, 0x86, 0x87, 0x88, 0x8A, 0x95, 0x9F]
    } else {
        &[0x00, 0x84, 0x85, 0x86, 0x87, 0x88]
    };
    let connack = (
        any::<bool>(),
        from_table(connack_codes),
        props(connack_properties().boxed()),
    )
        .prop_map(|(sp, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && !reason.is_error(),
                reason,
                properties: properties.into(),
            })
        });
    let publish = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        props(publish_properties(false).boxed()),
        binary(),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            let at_least_once = qos != QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && at_least_once,
                qos,
                retain,
                topic: topic.into(),
                packet_id: if at_least_once { id } else { 0 },
                properties: properties.into(),
                payload,
            })
        });
    let ack_codes: &'static [u8] = if v5 {
        &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
    } else {
        &[0x00]
    };
    let rel_codes: &'static [u8] = if v5 { &[0x00, 0x92] } else { &[0x00] };
    let ack = move |codes: &'static [u8]| {
        (pkid(), from_table(codes), props(ack_properties().boxed())).prop_map(
            |(packet_id, reason, properties)| Ack {
                packet_id,
                reason,
                properties: properties.into(),
            },
        )
    };
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: [
                        RetainHandling::SendAtSubscribe,
                        RetainHandling::SendIfNew,
                        RetainHandling::DoNotSend,
                    ][usize::from(rh)],
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        });
    let sub_props = props(
        (option::of(1u32..=268_435_455), user_properties())
            .prop_map(|(id, up)| Properties {
                subscription_identifiers: id.into_iter().collect(),
                user_properties: up,
                ..Properties::default()
            })
            .boxed(),
    );
    let subscribe = (
        pkid(),
        sub_props,
        vec(
            (text().prop_filter("non-empty", |s| !s.is_empty()), options),
            1..4,
        ),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: properties.into(),
                filters: filters
                    .into_iter()
                    .map(|(filter, options)| Subscription { filter, options })
                    .collect(),
            })
        });
    let suback_codes: &'static [u8] = if v5 {
        &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ]
    } else {
        &[0x00, 0x01, 0x02, 0x80]
    };
    let suback = (
        pkid(),
        props(ack_properties().boxed()),
        vec(from_table(suback_codes), 1..4),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties: properties.into(),
                reasons,
            })
        });
    let unsub_props = props(
        user_properties()
            .prop_map(|up| Properties {
                user_properties: up,
                ..Properties::default()
            })
            .boxed(),
    );
    let unsubscribe =
        (pkid(), unsub_props, vec(text(), 1..4)).prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: properties.into(),
                filters,
            })
        });
    let unsuback = (
        pkid(),
        props(ack_properties().boxed()),
        vec(
            from_table(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]),
            1..4,
        ),
    )
        .prop_map(move |(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties: properties.into(),
                reasons: if v5 { reasons } else { vec![] },
            })
        });
    let disconnect_codes: &'static [u8] = if v5 {
        &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x8B, 0x8D, 0x8E, 0x93, 0x94, 0x95, 0x97, 0x98,
        ]
    } else {
        &[0x00]
    };
    let disconnect = (
        from_table(disconnect_codes),
        props(ack_properties().boxed()),
    )
        .prop_map(|(reason, properties)| {
            Packet::Disconnect(Disconnect {
                reason,
                properties: properties.into(),
            })
        });
    let mut all = vec![
        connect.boxed(),
        connack.boxed(),
        publish.boxed(),
        ack(ack_codes).prop_map(Packet::PubAck).boxed(),
        ack(ack_codes).prop_map(Packet::PubRec).boxed(),
        ack(rel_codes).prop_map(Packet::PubRel).boxed(),
        ack(rel_codes).prop_map(Packet::PubComp).boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = (
            from_table(&[0x00, 0x18, 0x19]),
            option::of(text()),
            option::of(binary()),
        )
            .prop_map(|(reason, m, d)| {
                Packet::Auth(Auth {
                    reason,
                    properties: Properties {
                        authentication_method: m,
                        authentication_data: d,
                        ..Properties::default()
                    }
                    .into(),
                })
            });
        all.push(auth.boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311), Just(V5)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip((v, p) in version().prop_flat_map(|v| (Just(v), packet(v)))) {
        let mut out = BytesMut::new();
        p.encode(v, &mut out).unwrap();
        prop_assert_eq!(out.len(), p.encoded_len(v));
        let decoded = Packet::decode(&mut out, v, u32::MAX).unwrap().unwrap();
        prop_assert!(out.is_empty());
        prop_assert_eq!(decoded, p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(v in version(), bytes in vec(any::<u8>(), 0..64)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        if let Ok(Some(p)) = Packet::decode(&mut buf, v, MAX) {
            prop_assert!(buf.len() < before, "a decoded packet consumed its bytes");
            // Whatever decodes must encode again without error.
            let mut out = BytesMut::new();
            prop_assert!(p.encode(p_version(&p, v), &mut out).is_ok());
        }
    }

    #[test]
    fn mutated_packets_never_panic((v, p) in version().prop_flat_map(|v| (Just(v), packet(v))), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut out = BytesMut::new();
        p.encode(v, &mut out).unwrap();
        for (i, b) in flips {
            let at = i.index(out.len());
            out[at] = b;
        }
        let _ = Packet::decode(&mut out, v, MAX);
    }

    #[test]
    fn declared_size_over_the_limit_is_refused(v in version(), len in 1025usize..268_435_455, first in 1u8..15) {
        let mut buf = BytesMut::new();
        // A valid first byte (PUBREL, SUBSCRIBE, UNSUBSCRIBE carry flags
        // 0010): an invalid one is refused before its length is read.
        let flags = if matches!(first, 6 | 8 | 10) { 0x02 } else { 0x00 };
        buf.extend_from_slice(&[(first << 4) | flags]);
        let mut n = len;
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 { b |= 0x80; }
            buf.extend_from_slice(&[b]);
            if n == 0 { break; }
        }
        let err = Packet::decode(&mut buf, v, 1024).unwrap_err();
        prop_assert!(matches!(err, vigil_proto::DecodeError::PacketTooLarge { .. }), "{:?}", err);
    }
}

/// A decoded CONNECT carries its own version.
fn p_version(p: &Packet, v: ProtocolVersion) -> ProtocolVersion {
    match p {
        Packet::Connect(c) => c.protocol,
        _ => v,
    }
}

#[test]
fn topic_matching_agrees_with_a_naive_matcher() {
    fn naive(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        for (i, level) in f.iter().enumerate() {
            if *level == "#" {
                return true;
            }
            match t.get(i) {
                None => return false,
                Some(tl) if *level != "+" && level != tl => return false,
                _ => {}
            }
        }
        f.len() == t.len()
    }
    let mut runner = proptest::test_runner::TestRunner::default();
    let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")];
    let flevel = prop_oneof![Just("a"), Just("b"), Just(""), Just("+"), Just("$s")];
    let strat = (vec(flevel, 1..4), prop::bool::ANY, vec(level, 1..5));
    runner
        .run(&strat, |(mut f, hash, t)| {
            if hash {
                f.push("#");
            }
            let filter = f.join("/");
            let topic = t.join("/");
            prop_assert_eq!(
                vigil_proto::topic::matches(&filter, &topic),
                naive(&filter, &topic),
                "{} vs {}",
                filter,
                topic
            );
            Ok(())
        })
        .unwrap();
}
