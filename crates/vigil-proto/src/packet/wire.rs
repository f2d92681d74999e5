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
        let flags = header.flags;
        let expect_flags = |want: u8| {
            if flags == want {
                Ok(())
            } else {
                Err(DecodeError::Malformed("invalid fixed header flags"))
            }
        };
        let packet = match header.packet_type {
            1 => {
                expect_flags(0)?;
                Packet::Connect(Box::new(Connect::decode(&mut r)?))
            }
            2 => {
                expect_flags(0)?;
                Packet::ConnAck(ConnAck::decode(&mut r, version)?)
            }
            3 => Packet::Publish(Publish::decode(&mut r, flags, version)?),
            4 => {
                expect_flags(0)?;
                Packet::PubAck(Ack::decode(&mut r, version, false)?)
            }
            5 => {
                expect_flags(0)?;
                Packet::PubRec(Ack::decode(&mut r, version, false)?)
            }
            6 => {
                expect_flags(2)?;
                Packet::PubRel(Ack::decode(&mut r, version, true)?)
            }
            7 => {
                expect_flags(0)?;
                Packet::PubComp(Ack::decode(&mut r, version, true)?)
            }
            8 => {
                expect_flags(2)?;
                Packet::Subscribe(Subscribe::decode(&mut r, version)?)
            }
            9 => {
                expect_flags(0)?;
                Packet::SubAck(SubAck::decode(&mut r, version)?)
            }
            10 => {
                expect_flags(2)?;
                Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?)
            }
            11 => {
                expect_flags(0)?;
                Packet::UnsubAck(UnsubAck::decode(&mut r, version)?)
            }
            12 | 13 => {
                expect_flags(0)?;
                r.finish()?;
                if header.packet_type == 12 {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            14 => {
                expect_flags(0)?;
                Packet::Disconnect(Disconnect::decode(&mut r, version)?)
            }
            15 if version.is_v5() => {
                expect_flags(0)?;
                Packet::Auth(Auth::decode(&mut r)?)
            }
            15 => return Err(DecodeError::Malformed("AUTH exists only in MQTT 5")),
            _ => return Err(DecodeError::Malformed("reserved packet type 0")),
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
