//! One line per packet sent or received, worded as `mosquitto_sub -d` words
//! them, logged at debug level under the target `vigil_client::packets` (the
//! CLI's `-d` shows exactly that target).

use std::fmt::Write;

use vigil_proto::{Packet, ProtocolVersion};

/// The tracing target of the packet lines.
pub(crate) const TARGET: &str = "vigil_client::packets";

/// Whether anyone listens: the lines are only built then.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// Logs `packet` as sent (`sending`) or received (`received`) by `client`.
pub(crate) fn log(client: &str, verb: &str, packet: &Packet, version: ProtocolVersion) {
    let client = if client.is_empty() { "null" } else { client };
    tracing::debug!(target: TARGET, "Client {client} {verb} {}", describe(packet, version));
}

/// The packet's name and the fields mosquitto shows for it.
pub(crate) fn describe(packet: &Packet, version: ProtocolVersion) -> String {
    let v5 = version.is_v5();
    let ack = |name: &str, a: &vigil_proto::Ack| {
        if v5 {
            format!("{name} (m{}, rc{})", a.packet_id, a.reason.0)
        } else {
            format!("{name} (m{})", a.packet_id)
        }
    };
    match packet {
        Packet::Connect(_) => "CONNECT".into(),
        Packet::ConnAck(c) => format!("CONNACK ({})", c.reason.0),
        Packet::Publish(p) => format!(
            "PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(a) => ack("PUBACK", a),
        Packet::PubRec(a) => ack("PUBREC", a),
        Packet::PubRel(a) => ack("PUBREL", a),
        Packet::PubComp(a) => ack("PUBCOMP", a),
        Packet::Subscribe(s) => {
            let mut out = format!("SUBSCRIBE (Mid: {}", s.packet_id);
            for f in &s.filters {
                let _ = write!(
                    out,
                    ", Topic: {}, QoS: {}, Options: 0x{:02x}",
                    f.filter,
                    f.options.qos.as_u8(),
                    f.options.encode(version) & !0x03
                );
            }
            out.push(')');
            out
        }
        Packet::SubAck(s) => {
            let codes: Vec<String> = s.reasons.iter().map(|r| r.0.to_string()).collect();
            format!("SUBACK (Mid: {}, {})", s.packet_id, codes.join(", "))
        }
        Packet::Unsubscribe(u) => format!(
            "UNSUBSCRIBE (Mid: {}, Topic: {})",
            u.packet_id,
            u.filters.join(", ")
        ),
        Packet::UnsubAck(u) => format!("UNSUBACK (Mid: {})", u.packet_id),
        Packet::PingReq => "PINGREQ".into(),
        Packet::PingResp => "PINGRESP".into(),
        Packet::Disconnect(d) if v5 => format!("DISCONNECT ({})", d.reason),
        Packet::Disconnect(_) => "DISCONNECT".into(),
        Packet::Auth(a) => format!("AUTH ({})", a.reason),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vigil_proto::{Ack, Publish, QoS, ReasonCode};

    use super::*;

    #[test]
    fn packets_read_as_mosquitto_prints_them() {
        let p = Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            packet_id: 3,
            ..Publish::default()
        });
        assert_eq!(
            describe(&p, ProtocolVersion::V3_1_1),
            "PUBLISH (d0, q1, r0, m3, 'a/b', ... (5 bytes))"
        );
        let mut a = Ack::new(3);
        a.reason = ReasonCode::NOT_AUTHORIZED;
        assert_eq!(
            describe(&Packet::PubAck(a), ProtocolVersion::V5),
            "PUBACK (m3, rc135)"
        );
        assert_eq!(describe(&Packet::PingReq, ProtocolVersion::V5), "PINGREQ");
    }
}
