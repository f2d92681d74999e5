//! The node-to-node link's frames. Each frame is a 4-byte big-endian length
//! (of what follows it), a version byte, a kind byte and the kind's body.
//! A message travels as the MQTT 5 PUBLISH packet vigil-proto encodes and
//! decodes (so its properties and remaining expiry need no format of their
//! own); integers are big-endian, strings a 2-byte length and UTF-8.
//!
//! Decoding never panics: anything malformed is a `WireError`, and the link
//! that sent it is closed with a log line.

use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use vigil_proto::message::{Message, Outgoing};
use vigil_proto::{Packet, ProtocolVersion};

/// The version byte this build writes and accepts. 2: `Publish` names the
/// other nodes it went to, `Leave` and the hand-over frames exist.
pub(crate) const VERSION: u8 = 2;

/// Largest frame accepted: an MQTT packet's largest size and some room.
pub(crate) const MAX_FRAME: usize = 268_435_455 + 64 * 1024;

/// A retained message's place in last-writer-wins order: the hybrid
/// logical clock of the write, then the id of the node that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Stamp {
    /// Hybrid logical clock: unix milliseconds << 16 | logical counter.
    pub(crate) clock: u64,
    /// The node that wrote it (ties broken by the larger id).
    pub(crate) node: u64,
}

/// One frame on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// First frame of a link, from the node that opened it.
    Hello {
        /// The sender's node id.
        node_id: u64,
        /// The sender's generation (its start time, unix ms).
        generation: u64,
        /// Which of the sender's links to this node it is: sequence
        /// numbers count per link, and a node declared dead and back gets
        /// a new one.
        link: u64,
    },
    /// The answer to `Hello`: the highest sequence number already applied
    /// from this sender generation (resent frames up to it are skipped).
    Welcome {
        /// Highest applied sequence number (0: none).
        applied: u64,
    },
    /// A message to deliver to the receiver's local subscribers.
    Publish {
        /// Per-link sequence number.
        seq: u64,
        /// Shared groups the receiver delivers to, as (group, filter).
        groups: Vec<(String, String)>,
        /// The other nodes the sender sent the message to, with its place
        /// on their links (a node passing on a moved session's messages
        /// says which copy the new node had).
        also: Vec<(u64, LinkMark)>,
        /// The message as an MQTT 5 PUBLISH packet.
        packet: Bytes,
    },
    /// A retained message (an empty payload deletes) to store, not deliver.
    Retain {
        /// Per-link sequence number.
        seq: u64,
        /// Its place in last-writer-wins order.
        stamp: Stamp,
        /// The message as an MQTT 5 PUBLISH packet.
        packet: Bytes,
    },
    /// Every frame up to `seq` is accepted (delivered, and stored where
    /// it had to be).
    Ack {
        /// Highest accepted sequence number.
        seq: u64,
    },
    /// The sender is stopping: the receiver drops its routes and forwards
    /// nothing more to it, then acknowledges `seq` as usual.
    Leave {
        /// Per-link sequence number.
        seq: u64,
    },
    /// First and only request of a hand-over connection: `node` claimed
    /// `client_id` at `epoch`; the receiver, its previous owner, closes its
    /// connection and, with `ship`, sends the session.
    HandOver {
        /// The client id.
        client_id: String,
        /// The claiming node.
        node: u64,
        /// The claim's epoch.
        epoch: u64,
        /// Whether the session is wanted (the CONNECT resumes one).
        ship: bool,
    },
    /// A message for sessions that moved from the sender to the receiver,
    /// which the sender received after the session left it.
    PassOn {
        /// Per-link sequence number.
        seq: u64,
        /// The client ids of the moved sessions to deliver it to.
        clients: Vec<String>,
        /// The copy its publisher's node sent the receiver directly, if it
        /// did: delivered to a session only if it came before the session.
        direct: Option<LinkMark>,
        /// The message as an MQTT 5 PUBLISH packet.
        packet: Bytes,
    },
    /// A session handed over to the receiver, on the sender's link to it:
    /// in order with the messages the sender forwarded there before it.
    Session {
        /// Per-link sequence number.
        seq: u64,
        /// The client id.
        client_id: String,
        /// The previous owner's marks (see `HandOverReply::Session`).
        marks: Vec<LinkMark>,
        /// The session, as `vigil_broker::ShippedSession::to_bytes` wrote it.
        shipped: Bytes,
    },
    /// The answer to `HandOver`.
    HandedOver(HandOverReply),
    /// The new owner's last word on a hand-over connection: the shipped
    /// session is in its broker, so messages for it may follow.
    HandOverDone,
}

/// A frame's place on one link: the link's sender (node, generation), its
/// number, and the frame's sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LinkMark {
    /// The node that sends on the link.
    pub(crate) node: u64,
    /// Its generation.
    pub(crate) generation: u64,
    /// The link's number (`Hello::link`).
    pub(crate) link: u64,
    /// The sequence number.
    pub(crate) seq: u64,
}

impl LinkMark {
    /// The link it is on, as its receiver keys it.
    pub(crate) fn link_key(&self) -> (u64, u64, u64) {
        (self.node, self.generation, self.link)
    }
}

/// What the previous owner answers a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandOverReply {
    /// No session to ship (none here, or not asked for).
    Nothing,
    /// The session, as `vigil_broker::ShippedSession::to_bytes` wrote it,
    /// and for each link to the new node whose messages the previous owner
    /// also had, the last such message it had before the session left
    /// (those the session holds already, not to be delivered again).
    Session(Bytes, Vec<LinkMark>),
    /// The claim is not the current owner here (a stale epoch), or it
    /// could not be checked in time.
    Refused(String),
    /// The session follows on the link (`Frame::Session`).
    OnLink,
}

/// A frame that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The length prefix exceeds `MAX_FRAME`.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A version this build does not speak.
    #[error("frame version {0} (this node speaks {VERSION})")]
    Version(u8),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// The body ended before a field.
    #[error("frame truncated in {0}")]
    Truncated(&'static str),
    /// Bytes left after the body.
    #[error("{0} bytes after the end of a frame")]
    Trailing(usize),
    /// A string that is not UTF-8.
    #[error("a string field is not UTF-8")]
    Utf8,
    /// The embedded packet is not a well-formed PUBLISH.
    #[error("embedded PUBLISH: {0}")]
    Publish(String),
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const PUBLISH: u8 = 3;
const RETAIN: u8 = 4;
const ACK: u8 = 5;
const LEAVE: u8 = 6;
const HAND_OVER: u8 = 7;
const HANDED_OVER: u8 = 8;
const HAND_OVER_DONE: u8 = 9;
const PASS_ON: u8 = 10;
const SESSION: u8 = 11;

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u8(VERSION);
        match self {
            Frame::Hello {
                node_id,
                generation,
                link,
            } => {
                out.put_u8(HELLO);
                out.put_u64(*node_id);
                out.put_u64(*generation);
                out.put_u64(*link);
            }
            Frame::Welcome { applied } => {
                out.put_u8(WELCOME);
                out.put_u64(*applied);
            }
            Frame::Publish {
                seq,
                groups,
                also,
                packet,
            } => {
                out.put_u8(PUBLISH);
                out.put_u64(*seq);
                out.put_u16(u16::try_from(groups.len()).unwrap_or(u16::MAX));
                for (group, filter) in groups.iter().take(usize::from(u16::MAX)) {
                    put_str(out, group);
                    put_str(out, filter);
                }
                out.put_u16(u16::try_from(also.len()).unwrap_or(u16::MAX));
                for (to, m) in also.iter().take(usize::from(u16::MAX)) {
                    out.put_u64(*to);
                    put_mark(out, m);
                }
                out.put_slice(packet);
            }
            Frame::Retain { seq, stamp, packet } => {
                out.put_u8(RETAIN);
                out.put_u64(*seq);
                out.put_u64(stamp.clock);
                out.put_u64(stamp.node);
                out.put_slice(packet);
            }
            Frame::Ack { seq } => {
                out.put_u8(ACK);
                out.put_u64(*seq);
            }
            Frame::Leave { seq } => {
                out.put_u8(LEAVE);
                out.put_u64(*seq);
            }
            Frame::HandOver {
                client_id,
                node,
                epoch,
                ship,
            } => {
                out.put_u8(HAND_OVER);
                out.put_u64(*node);
                out.put_u64(*epoch);
                out.put_u8(u8::from(*ship));
                put_str(out, client_id);
            }
            Frame::HandOverDone => out.put_u8(HAND_OVER_DONE),
            Frame::Session {
                seq,
                client_id,
                marks,
                shipped,
            } => {
                out.put_u8(SESSION);
                out.put_u64(*seq);
                put_str(out, client_id);
                put_marks(out, marks);
                out.put_slice(shipped);
            }
            Frame::PassOn {
                seq,
                clients,
                direct,
                packet,
            } => {
                out.put_u8(PASS_ON);
                out.put_u64(*seq);
                out.put_u16(u16::try_from(clients.len()).unwrap_or(u16::MAX));
                for c in clients.iter().take(usize::from(u16::MAX)) {
                    put_str(out, c);
                }
                put_marks(out, direct.as_slice());
                out.put_slice(packet);
            }
            Frame::HandedOver(reply) => {
                out.put_u8(HANDED_OVER);
                match reply {
                    HandOverReply::Nothing => out.put_u8(0),
                    HandOverReply::Session(bytes, marks) => {
                        out.put_u8(1);
                        put_marks(out, marks);
                        out.put_slice(bytes);
                    }
                    HandOverReply::Refused(why) => {
                        out.put_u8(2);
                        out.put_slice(why.as_bytes());
                    }
                    HandOverReply::OnLink => out.put_u8(3),
                }
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Takes one frame off the front of `buf`; `Ok(None)` while it is
    /// incomplete. A frame whose length is over the limit is refused as
    /// soon as its length is read.
    pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let mut body = buf.split_to(len).freeze();
        let version = take_u8(&mut body, "version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let frame = match take_u8(&mut body, "kind")? {
            HELLO => Frame::Hello {
                node_id: take_u64(&mut body, "hello")?,
                generation: take_u64(&mut body, "hello")?,
                link: take_u64(&mut body, "hello")?,
            },
            WELCOME => Frame::Welcome {
                applied: take_u64(&mut body, "welcome")?,
            },
            PUBLISH => {
                let seq = take_u64(&mut body, "publish")?;
                let n = take_u16(&mut body, "publish groups")?;
                let mut groups = Vec::with_capacity(usize::from(n).min(64));
                for _ in 0..n {
                    let group = take_str(&mut body)?;
                    let filter = take_str(&mut body)?;
                    groups.push((group, filter));
                }
                let n = take_u16(&mut body, "publish nodes")?;
                let mut also = Vec::with_capacity(usize::from(n).min(64));
                for _ in 0..n {
                    let to = take_u64(&mut body, "publish nodes")?;
                    also.push((to, take_mark(&mut body, "publish nodes")?));
                }
                return Ok(Some(Frame::Publish {
                    seq,
                    groups,
                    also,
                    packet: body,
                }));
            }
            RETAIN => {
                let seq = take_u64(&mut body, "retain")?;
                let clock = take_u64(&mut body, "retain")?;
                let node = take_u64(&mut body, "retain")?;
                return Ok(Some(Frame::Retain {
                    seq,
                    stamp: Stamp { clock, node },
                    packet: body,
                }));
            }
            ACK => Frame::Ack {
                seq: take_u64(&mut body, "ack")?,
            },
            LEAVE => Frame::Leave {
                seq: take_u64(&mut body, "leave")?,
            },
            HAND_OVER => Frame::HandOver {
                node: take_u64(&mut body, "hand-over")?,
                epoch: take_u64(&mut body, "hand-over")?,
                ship: take_u8(&mut body, "hand-over")? != 0,
                client_id: take_str(&mut body)?,
            },
            HANDED_OVER => {
                let reply = match take_u8(&mut body, "handed-over")? {
                    0 => HandOverReply::Nothing,
                    1 => {
                        let marks = take_marks(&mut body, "handed-over marks")?;
                        HandOverReply::Session(std::mem::take(&mut body), marks)
                    }
                    2 => HandOverReply::Refused(
                        String::from_utf8(std::mem::take(&mut body).to_vec())
                            .map_err(|_| WireError::Utf8)?,
                    ),
                    3 => HandOverReply::OnLink,
                    other => return Err(WireError::Kind(other)),
                };
                Frame::HandedOver(reply)
            }
            HAND_OVER_DONE => Frame::HandOverDone,
            SESSION => {
                let seq = take_u64(&mut body, "session")?;
                let client_id = take_str(&mut body)?;
                let marks = take_marks(&mut body, "session marks")?;
                return Ok(Some(Frame::Session {
                    seq,
                    client_id,
                    marks,
                    shipped: body,
                }));
            }
            PASS_ON => {
                let seq = take_u64(&mut body, "pass-on")?;
                let n = take_u16(&mut body, "pass-on clients")?;
                let mut clients = Vec::with_capacity(usize::from(n).min(64));
                for _ in 0..n {
                    clients.push(take_str(&mut body)?);
                }
                let mut direct = take_marks(&mut body, "pass-on mark")?;
                if direct.len() > 1 {
                    return Err(WireError::Publish(
                        "a pass-on with two direct copies".into(),
                    ));
                }
                return Ok(Some(Frame::PassOn {
                    seq,
                    clients,
                    direct: direct.pop(),
                    packet: body,
                }));
            }
            other => return Err(WireError::Kind(other)),
        };
        if body.has_remaining() {
            return Err(WireError::Trailing(body.remaining()));
        }
        Ok(Some(frame))
    }
}

/// Writes link marks: a u16 count, then node, generation, link and
/// sequence number (u64 each).
fn put_marks(out: &mut BytesMut, marks: &[LinkMark]) {
    out.put_u16(u16::try_from(marks.len()).unwrap_or(u16::MAX));
    for m in marks.iter().take(usize::from(u16::MAX)) {
        put_mark(out, m);
    }
}

fn put_mark(out: &mut BytesMut, m: &LinkMark) {
    out.put_u64(m.node);
    out.put_u64(m.generation);
    out.put_u64(m.link);
    out.put_u64(m.seq);
}

/// Reads what `put_marks` wrote.
fn take_marks(body: &mut Bytes, what: &'static str) -> Result<Vec<LinkMark>, WireError> {
    let n = take_u16(body, what)?;
    let mut marks = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        marks.push(take_mark(body, what)?);
    }
    Ok(marks)
}

fn take_mark(body: &mut Bytes, what: &'static str) -> Result<LinkMark, WireError> {
    Ok(LinkMark {
        node: take_u64(body, what)?,
        generation: take_u64(body, what)?,
        link: take_u64(body, what)?,
        seq: take_u64(body, what)?,
    })
}

/// `message` as the MQTT 5 PUBLISH packet a link carries (its remaining
/// expiry as of `now` written into the Message Expiry Interval).
pub(crate) fn encode_message(message: &std::sync::Arc<Message>, now: Instant) -> Bytes {
    let outgoing = Outgoing {
        message: message.clone(),
        qos: message.qos,
        retain: message.retain,
        subscription_ids: Vec::new(),
        persisted: None,
        shared: false,
    };
    let packet_id = u16::from(message.qos != vigil_proto::QoS::AtMostOnce);
    let mut out = BytesMut::new();
    // A message the broker accepted always encodes; if one ever did not,
    // an empty packet makes the receiver close the link and say so.
    let _ = outgoing.encode(packet_id, false, now, ProtocolVersion::V5, None, &mut out);
    out.freeze()
}

/// The message a link's PUBLISH packet carries, received at `now`.
pub(crate) fn decode_message(packet: Bytes, now: Instant) -> Result<Message, WireError> {
    let len = packet.len();
    let mut buf = BytesMut::from(&packet[..]);
    match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(p))) if buf.is_empty() => Ok(Message::from_publish(p, now)),
        Ok(Some(Packet::Publish(_))) => Err(WireError::Trailing(buf.len())),
        Ok(Some(other)) => Err(WireError::Publish(format!("{other:?} instead"))),
        Ok(None) => Err(WireError::Publish(format!("incomplete ({len} bytes)"))),
        Err(e) => Err(WireError::Publish(e.to_string())),
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    let len = s.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(&s.as_bytes()[..len]);
}

fn take_u8(b: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    if b.remaining() < 1 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u8())
}

fn take_u16(b: &mut Bytes, what: &'static str) -> Result<u16, WireError> {
    if b.remaining() < 2 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u16())
}

fn take_u64(b: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    if b.remaining() < 8 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u64())
}

fn take_str(b: &mut Bytes) -> Result<String, WireError> {
    let len = usize::from(take_u16(b, "string length")?);
    if b.remaining() < len {
        return Err(WireError::Truncated("string"));
    }
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| WireError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use vigil_proto::QoS;

    fn message(retain: bool) -> Arc<Message> {
        Arc::new(Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::ExactlyOnce,
            retain,
            properties: None,
            expires_at: None,
        })
    }

    #[test]
    fn frames_have_the_documented_bytes() {
        let mut out = BytesMut::new();
        Frame::Ack { seq: 7 }.encode(&mut out);
        assert_eq!(
            &out[..],
            &[0, 0, 0, 10, VERSION, ACK, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        out.clear();
        Frame::Leave { seq: 258 }.encode(&mut out);
        assert_eq!(
            &out[..],
            &[0, 0, 0, 10, VERSION, LEAVE, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        out.clear();
        Frame::Publish {
            seq: 1,
            groups: vec![("g".into(), "t/+".into())],
            also: vec![(
                2,
                LinkMark {
                    node: 3,
                    generation: 4,
                    link: 5,
                    seq: 6,
                },
            )],
            packet: Bytes::from_static(&[0x30, 0]),
        }
        .encode(&mut out);
        let expected: &[u8] = &[
            0, 0, 0, 64, VERSION, PUBLISH, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, b'g', 0, 3, b't',
            b'/', b'+', 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0x30, 0,
        ];
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn every_frame_round_trips_and_split_input_waits() {
        let now = Instant::now();
        let frames = vec![
            Frame::Hello {
                node_id: 3,
                generation: 1_700_000_000_000,
                link: 4,
            },
            Frame::Welcome { applied: 42 },
            Frame::Publish {
                seq: 9,
                groups: vec![("g".into(), "a/#".into())],
                also: vec![
                    (
                        5,
                        LinkMark {
                            node: 1,
                            generation: 2,
                            link: 3,
                            seq: 4,
                        }
                    );
                    2
                ],
                packet: encode_message(&message(false), now),
            },
            Frame::Retain {
                seq: 10,
                stamp: Stamp { clock: 5, node: 2 },
                packet: encode_message(&message(true), now),
            },
            Frame::Ack { seq: 10 },
            Frame::Leave { seq: 11 },
            Frame::HandOver {
                client_id: "dev-7".into(),
                node: 2,
                epoch: 99 << 20,
                ship: true,
            },
            Frame::HandedOver(HandOverReply::Nothing),
            Frame::HandedOver(HandOverReply::Session(
                Bytes::from_static(b"session"),
                vec![LinkMark {
                    node: 3,
                    generation: 1,
                    link: 2,
                    seq: 77,
                }],
            )),
            Frame::PassOn {
                seq: 12,
                clients: vec!["dev-7".into(), "dev-8".into()],
                direct: Some(LinkMark {
                    node: 3,
                    generation: 1,
                    link: 2,
                    seq: 78,
                }),
                packet: encode_message(&message(false), now),
            },
            Frame::PassOn {
                seq: 13,
                clients: vec!["dev-7".into()],
                direct: None,
                packet: encode_message(&message(false), now),
            },
            Frame::HandedOver(HandOverReply::Refused("stale epoch".into())),
            Frame::HandOverDone,
            Frame::HandedOver(HandOverReply::OnLink),
            Frame::Session {
                seq: 14,
                client_id: "dev-7".into(),
                marks: vec![LinkMark {
                    node: 3,
                    generation: 1,
                    link: 2,
                    seq: 79,
                }],
                shipped: Bytes::from_static(b"session"),
            },
        ];
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode(&mut all);
        }
        // Fed one byte at a time: nothing comes out before a frame is whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all {
            buf.put_u8(b);
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        let Frame::Publish { packet, .. } = &got[2] else {
            unreachable!()
        };
        let m = decode_message(packet.clone(), now).unwrap();
        assert_eq!(&m, &*message(false));
    }

    #[test]
    fn the_remaining_expiry_travels() {
        let now = Instant::now();
        let mut m = (*message(false)).clone();
        m.expires_at = Some(now + Duration::from_secs(30));
        let packet = encode_message(&Arc::new(m), now + Duration::from_secs(10));
        let later = Instant::now();
        let got = decode_message(packet, later).unwrap();
        assert_eq!(got.expires_at, Some(later + Duration::from_secs(20)));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (
                vec![0xff, 0xff, 0xff, 0xff],
                WireError::TooLarge(0xffff_ffff),
            ),
            (vec![0, 0, 0, 2, 9, ACK], WireError::Version(9)),
            (vec![0, 0, 0, 2, VERSION, 77], WireError::Kind(77)),
            (
                vec![0, 0, 0, 3, VERSION, ACK, 1],
                WireError::Truncated("ack"),
            ),
            (
                vec![0, 0, 0, 11, VERSION, ACK, 0, 0, 0, 0, 0, 0, 0, 1, 5],
                WireError::Trailing(1),
            ),
            (
                vec![
                    0, 0, 0, 15, VERSION, PUBLISH, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0xff,
                ],
                WireError::Utf8,
            ),
            (
                vec![
                    0, 0, 0, 14, VERSION, PUBLISH, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 9,
                ],
                WireError::Truncated("string"),
            ),
            (
                vec![
                    0, 0, 0, 15, VERSION, PUBLISH, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0,
                ],
                WireError::Truncated("publish nodes"),
            ),
        ];
        for (bytes, want) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(Frame::decode(&mut buf), Err(want), "{bytes:?}");
        }
        let now = Instant::now();
        assert!(decode_message(Bytes::from_static(&[0x30]), now).is_err());
        assert!(decode_message(Bytes::from_static(&[0xc0, 0]), now).is_err());
        assert!(decode_message(Bytes::from_static(&[0x30, 5, 0, 1]), now).is_err());
    }
}
