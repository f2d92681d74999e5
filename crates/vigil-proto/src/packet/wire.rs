//! `Packet::decode` and `Packet::encode`: the fixed header and dispatch to each
//! packet's body codec.

use bytes::{BufMut, BytesMut};

use super::{Ack, Auth, ConnAck, Connect, Disconnect, Packet, Publish, SubAck, Subscribe};
use super::{UnsubAck, Unsubscribe};
use crate::codec::{parse_fixed_header, put_varint, varint_len, Reader, MAX_VARINT};
use crate::{DecodeError, EncodeError, ProtocolVersion};

impl Packet {
    /// Decodes one packet from the front of `buf`.
    ///
    /// Returns `Ok(None)` while `buf` holds only part of a packet, without
    /// copying or allocating. As soon as the fixed header is complete, a packet
    /// larger than `max_packet_size` is refused, before its body is buffered.
    /// On success exactly the packet's bytes are removed from `buf`. A CONNECT
    /// is decoded by its own protocol name and level, whatever `version` says.
    pub fn decode(
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        // Judged before the length: garbage is refused at its first byte,
        // not after the body its "length" announces has arrived.
        check_first_byte(first, version)?;
        let Some(header) = parse_fixed_header(buf)? else {
            return Ok(None);
        };
        let total = header.total_len();
        if total as u64 > u64::from(max_packet_size) {
            return Err(DecodeError::PacketTooLarge {
                size: total as u64,
                max: max_packet_size,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let mut r = Reader::new(frame.slice(header.header_len..));
        let packet = match header.packet_type {
            1 => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
            2 => Packet::ConnAck(ConnAck::decode(&mut r, version)?),
            3 => Packet::Publish(Publish::decode(&mut r, header.flags, version)?),
            4 => Packet::PubAck(Ack::decode(&mut r, version, false)?),
            5 => Packet::PubRec(Ack::decode(&mut r, version, false)?),
            6 => Packet::PubRel(Ack::decode(&mut r, version, true)?),
            7 => Packet::PubComp(Ack::decode(&mut r, version, true)?),
            8 => Packet::Subscribe(Subscribe::decode(&mut r, version)?),
            9 => Packet::SubAck(SubAck::decode(&mut r, version)?),
            10 => Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
            11 => Packet::UnsubAck(UnsubAck::decode(&mut r, version)?),
            12 => {
                r.finish()?;
                Packet::PingReq
            }
            13 => {
                r.finish()?;
                Packet::PingResp
            }
            14 => Packet::Disconnect(Disconnect::decode(&mut r, version)?),
            // 15 in MQTT 5 only, and 0: refused by `check_first_byte`.
            _ => Packet::Auth(Auth::decode(&mut r)?),
        };
        Ok(Some(packet))
    }

    /// Appends the packet's bytes to `out`. On error nothing is written.
    /// CONNECT is encoded for its own `protocol`, whatever `version` says.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.check(version)?;
        put_frame(
            out,
            self.first_byte(),
            self.body_len(version),
            |out| match self {
                Packet::Connect(c) => c.encode_body(out),
                Packet::ConnAck(c) => c.encode_body(version, out),
                Packet::Publish(p) => p.encode_body(version, out),
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                    a.encode_body(version, out)
                }
                Packet::Subscribe(s) => s.encode_body(version, out),
                Packet::SubAck(s) => s.encode_body(version, out),
                Packet::Unsubscribe(u) => u.encode_body(version, out),
                Packet::UnsubAck(u) => u.encode_body(version, out),
                Packet::PingReq | Packet::PingResp => {}
                Packet::Disconnect(d) => d.encode_body(version, out),
                Packet::Auth(a) => a.encode_body(out),
            },
        )
    }

    /// Total bytes the packet takes on the wire for `version`, without encoding it
    /// (used to honour a peer's Maximum Packet Size).
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + varint_len(body) + body
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0x02,
            _ => 0,
        };
        ((self.packet_type() as u8) << 4) | flags
    }

    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(c) => c.check(),
            Packet::ConnAck(c) => c.check(version),
            Packet::Publish(p) => p.check(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.check(version)
            }
            Packet::Subscribe(s) => s.check(version),
            Packet::SubAck(s) => s.check(version),
            Packet::Unsubscribe(u) => u.check(version),
            Packet::UnsubAck(u) => u.check(version),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => d.check(version),
            Packet::Auth(_) if !version.is_v5() => Err(EncodeError::NotInVersion("AUTH")),
            Packet::Auth(a) => a.check(),
        }
    }

    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(version)
            }
            Packet::Subscribe(s) => s.body_len(version),
            Packet::SubAck(s) => s.body_len(version),
            Packet::Unsubscribe(u) => u.body_len(version),
            Packet::UnsubAck(u) => u.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len(version),
            Packet::Auth(a) => a.body_len(),
        }
    }
}

/// Checks the first byte of a packet on its own: a reserved packet type
/// (0, or 15 before MQTT 5) or flags the type does not allow (MQTT-2.1.3-1;
/// PUBLISH: QoS 3, or DUP at QoS 0) is an error at once.
pub(crate) fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let flags = first & 0x0F;
    let want = match first >> 4 {
        0 => return Err(DecodeError::Malformed("reserved packet type 0")),
        3 => {
            if (flags >> 1) & 0x03 == 3 {
                return Err(DecodeError::Malformed("PUBLISH QoS 3"));
            }
            if flags & 0x08 != 0 && flags & 0x06 == 0 {
                return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
            }
            return Ok(());
        }
        6 | 8 | 10 => 0x02,
        15 if !version.is_v5() => return Err(DecodeError::Malformed("AUTH exists only in MQTT 5")),
        _ => 0x00,
    };
    if flags == want {
        Ok(())
    } else {
        Err(DecodeError::Malformed("invalid fixed header flags"))
    }
}

/// Appends a fixed header (first byte, remaining length `body`) and the body
/// `encode_body` writes; refuses a body too long for the remaining length.
pub(crate) fn put_frame(
    out: &mut BytesMut,
    first_byte: u8,
    body: usize,
    encode_body: impl FnOnce(&mut BytesMut),
) -> Result<(), EncodeError> {
    if body > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    out.reserve(1 + varint_len(body) + body);
    out.put_u8(first_byte);
    put_varint(out, body);
    encode_body(out);
    Ok(())
}
