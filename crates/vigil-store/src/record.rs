//! The records the broker keeps, and their versioned binary encoding.
//!
//! Every record starts with a format byte. Messages reuse the MQTT 5 PUBLISH
//! encoding (topic, flags, all properties, payload): one well-tested codec,
//! and a record stays readable by anyone who can read MQTT. Times are stored
//! as Unix milliseconds, because `Instant`s mean nothing after a restart.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use vigil_proto::message::Message;
use vigil_proto::time::Clock;
use vigil_proto::{Packet, ProtocolVersion, Publish, QoS, SubscriptionOptions, Will};

use crate::error::RecordError;

/// Format byte at the start of every record written by this version.
const RECORD_FORMAT: u8 = 1;

/// An application message at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Topic, payload, QoS, RETAIN and properties, as a PUBLISH (packet id unused).
    pub publish: Publish,
    /// Message expiry as Unix milliseconds.
    pub expires_at: Option<u64>,
}

impl MessageRecord {
    /// The record of a routed message.
    pub fn from_message(m: &Message, clock: &Clock) -> MessageRecord {
        MessageRecord {
            publish: Publish {
                dup: false,
                qos: m.qos,
                retain: m.retain,
                topic: m.topic.clone().into(),
                packet_id: u16::from(m.qos != QoS::AtMostOnce),
                properties: m.properties().into(),
                payload: m.payload.clone(),
            },
            expires_at: m.expires_at.map(|at| clock.to_unix(at)),
        }
    }

    /// The routed message again.
    pub fn to_message(&self, clock: &Clock) -> Message {
        Message {
            topic: self.publish.topic.clone().into(),
            payload: self.publish.payload.clone(),
            qos: self.publish.qos,
            retain: self.publish.retain,
            properties: Message::boxed(self.publish.properties.clone().into()),
            expires_at: self.expires_at.map(|ms| clock.to_instant(ms)),
        }
    }

    /// The routed message, moving topic and properties out of the record.
    /// The payload is copied into an allocation of its own: decoded, it is a
    /// view into the buffer of the whole encoded record, which would otherwise
    /// stay alive (with a bookkeeping block) for as long as the message does.
    pub fn into_message(self, clock: &Clock) -> Message {
        Message {
            topic: self.publish.topic.into(),
            payload: Bytes::copy_from_slice(&self.publish.payload),
            qos: self.publish.qos,
            retain: self.publish.retain,
            properties: Message::boxed(self.publish.properties.into_inner()),
            expires_at: self.expires_at.map(|ms| clock.to_instant(ms)),
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), RecordError> {
        put_opt_u64(out, self.expires_at);
        let mut body = BytesMut::new();
        Packet::Publish(self.publish.clone())
            .encode(ProtocolVersion::V5, &mut body)
            .map_err(|e| RecordError(format!("message cannot be encoded: {e}")))?;
        put_bytes(out, &body);
        Ok(())
    }

    fn decode(r: &mut Bytes) -> Result<MessageRecord, RecordError> {
        let expires_at = get_opt_u64(r)?;
        let mut body = BytesMut::from(&get_bytes(r)?[..]);
        match Packet::decode(&mut body, ProtocolVersion::V5, u32::MAX) {
            Ok(Some(Packet::Publish(publish))) => Ok(MessageRecord {
                publish,
                expires_at,
            }),
            Ok(_) => Err(RecordError("message is not a PUBLISH".into())),
            Err(e) => Err(RecordError(format!("message: {e}"))),
        }
    }

    /// Encodes a retained message.
    pub fn to_bytes(&self) -> Result<Bytes, RecordError> {
        let mut out = BytesMut::new();
        out.put_u8(RECORD_FORMAT);
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes a retained message.
    pub fn from_bytes(bytes: &[u8]) -> Result<MessageRecord, RecordError> {
        let mut r = Bytes::copy_from_slice(bytes);
        check_format(&mut r)?;
        let m = MessageRecord::decode(&mut r)?;
        finish(&r)?;
        Ok(m)
    }
}

/// One delivery waiting in a session's durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// The message.
    pub message: MessageRecord,
    /// Delivery QoS (after the subscription's downgrade).
    pub qos: QoS,
    /// RETAIN flag on this delivery.
    pub retain: bool,
    /// Subscription identifiers.
    pub subscription_ids: Vec<u32>,
}

impl QueuedRecord {
    /// Encodes the record.
    pub fn to_bytes(&self) -> Result<Bytes, RecordError> {
        let mut out = BytesMut::new();
        out.put_u8(RECORD_FORMAT);
        out.put_u8(self.qos.as_u8() | (u8::from(self.retain) << 2));
        put_len(out_len(self.subscription_ids.len())?, &mut out);
        for id in &self.subscription_ids {
            out.put_u32(*id);
        }
        self.message.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes a record.
    pub fn from_bytes(bytes: &[u8]) -> Result<QueuedRecord, RecordError> {
        let (head, message) = QueuedHead::split(bytes)?;
        Ok(QueuedRecord {
            message: MessageRecord::decode_whole(message)?,
            qos: head.qos,
            retain: head.retain,
            subscription_ids: head.subscription_ids,
        })
    }
}

/// A queued record's delivery fields, read apart from its message so that
/// recovery can recognise a message it has already decoded by its bytes.
#[derive(Debug)]
pub(crate) struct QueuedHead {
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) subscription_ids: Vec<u32>,
}

impl QueuedHead {
    /// The delivery fields, and the message's encoding still undecoded.
    pub(crate) fn split(bytes: &[u8]) -> Result<(QueuedHead, Bytes), RecordError> {
        let mut r = Bytes::copy_from_slice(bytes);
        check_format(&mut r)?;
        let flags = get_u8(&mut r)?;
        let qos = QoS::from_u8(flags & 0x03).ok_or_else(|| RecordError("QoS 3".into()))?;
        let n = get_u32(&mut r)? as usize;
        if n > r.remaining() / 4 {
            return Err(RecordError("subscription id count past the end".into()));
        }
        let subscription_ids = (0..n).map(|_| r.get_u32()).collect();
        let head = QueuedHead {
            qos,
            retain: flags & 0x04 != 0,
            subscription_ids,
        };
        Ok((head, r))
    }
}

impl MessageRecord {
    /// Decodes a message that must fill `r` exactly.
    pub(crate) fn decode_whole(mut r: Bytes) -> Result<MessageRecord, RecordError> {
        let m = MessageRecord::decode(&mut r)?;
        finish(&r)?;
        Ok(m)
    }
}

/// A subscription as the session holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Filter as the client wrote it (with any `$share/group/` prefix).
    pub filter: String,
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its subscription identifier.
    pub id: Option<u32>,
}

/// A will kept with its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// The will message (its Will Delay Interval is in `delay`).
    pub message: MessageRecord,
    /// Will Delay Interval in seconds.
    pub delay: u32,
}

impl WillRecord {
    /// The record of a CONNECT's will.
    pub fn from_will(will: &Will) -> WillRecord {
        let mut properties = will.properties.clone();
        let delay = properties.will_delay_interval.take().unwrap_or(0);
        WillRecord {
            message: MessageRecord {
                publish: Publish {
                    dup: false,
                    qos: will.qos,
                    retain: will.retain,
                    topic: will.topic.clone().into(),
                    packet_id: u16::from(will.qos != QoS::AtMostOnce),
                    properties: properties.into(),
                    payload: will.payload.clone(),
                },
                expires_at: None,
            },
            delay,
        }
    }

    /// The will again, as the CONNECT carried it.
    pub fn to_will(&self) -> Will {
        let p = &self.message.publish;
        let mut properties = p.properties.clone();
        properties.will_delay_interval = (self.delay > 0).then_some(self.delay);
        Will {
            topic: p.topic.clone().into(),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            properties: properties.into(),
        }
    }
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The broker's key for the session (also the queue's key prefix).
    pub id: u64,
    /// Client identifier.
    pub client_id: String,
    /// MQTT protocol level of the last connection (3, 4 or 5).
    pub protocol: u8,
    /// Session Expiry Interval in seconds (u32::MAX: never).
    pub expiry: u32,
    /// Its subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// The will of the current connection, or one waiting on its delay.
    pub will: Option<WillRecord>,
    /// When the last connection ended (Unix ms); None while connected.
    pub disconnected_at: Option<u64>,
    /// When a delayed will is due (Unix ms), if one is waiting.
    pub will_due: Option<u64>,
}

impl SessionRecord {
    /// Encodes the record.
    pub fn to_bytes(&self) -> Result<Bytes, RecordError> {
        let mut out = BytesMut::new();
        out.put_u8(RECORD_FORMAT);
        put_str(&mut out, &self.client_id)?;
        out.put_u8(self.protocol);
        out.put_u32(self.expiry);
        put_len(out_len(self.subscriptions.len())?, &mut out);
        for s in &self.subscriptions {
            put_str(&mut out, &s.filter)?;
            out.put_u8(s.options.encode(ProtocolVersion::V5));
            put_opt_u64(&mut out, s.id.map(u64::from));
        }
        put_opt_u64(&mut out, self.disconnected_at);
        put_opt_u64(&mut out, self.will_due);
        match &self.will {
            None => out.put_u8(0),
            Some(w) => {
                out.put_u8(1);
                out.put_u32(w.delay);
                w.message.encode(&mut out)?;
            }
        }
        Ok(out.freeze())
    }

    /// Decodes the record stored under `id`.
    pub fn from_bytes(id: u64, bytes: &[u8]) -> Result<SessionRecord, RecordError> {
        let mut r = Bytes::copy_from_slice(bytes);
        check_format(&mut r)?;
        let client_id = get_str(&mut r)?;
        let protocol = get_u8(&mut r)?;
        let expiry = get_u32(&mut r)?;
        let n = get_u32(&mut r)? as usize;
        let mut subscriptions = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            let filter = get_str(&mut r)?;
            let options = SubscriptionOptions::decode(get_u8(&mut r)?, ProtocolVersion::V5)
                .map_err(|e| RecordError(format!("subscription options: {e}")))?;
            let id = get_opt_u64(&mut r)?
                .map(|v| u32::try_from(v).map_err(|_| RecordError("subscription id".into())))
                .transpose()?;
            subscriptions.push(SubscriptionRecord {
                filter,
                options,
                id,
            });
        }
        let disconnected_at = get_opt_u64(&mut r)?;
        let will_due = get_opt_u64(&mut r)?;
        let will = match get_u8(&mut r)? {
            0 => None,
            1 => {
                let delay = get_u32(&mut r)?;
                Some(WillRecord {
                    delay,
                    message: MessageRecord::decode(&mut r)?,
                })
            }
            other => return Err(RecordError(format!("will marker {other}"))),
        };
        finish(&r)?;
        Ok(SessionRecord {
            id,
            client_id,
            protocol,
            expiry,
            subscriptions,
            will,
            disconnected_at,
            will_due,
        })
    }
}

fn check_format(r: &mut Bytes) -> Result<(), RecordError> {
    match get_u8(r)? {
        RECORD_FORMAT => Ok(()),
        other => Err(RecordError(format!(
            "record format {other}, this vigil reads {RECORD_FORMAT}"
        ))),
    }
}

fn finish(r: &Bytes) -> Result<(), RecordError> {
    if r.has_remaining() {
        return Err(RecordError(format!("{} trailing bytes", r.remaining())));
    }
    Ok(())
}

fn out_len(n: usize) -> Result<u32, RecordError> {
    u32::try_from(n).map_err(|_| RecordError("too many items".into()))
}

fn put_len(n: u32, out: &mut BytesMut) {
    out.put_u32(n);
}

fn put_str(out: &mut BytesMut, s: &str) -> Result<(), RecordError> {
    put_len(out_len(s.len())?, out);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    // Bounded by the MQTT maximum packet size, far below u32::MAX.
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn put_opt_u64(out: &mut BytesMut, v: Option<u64>) {
    match v {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            out.put_u64(v);
        }
    }
}

fn need(r: &Bytes, n: usize) -> Result<(), RecordError> {
    if r.remaining() < n {
        return Err(RecordError(format!(
            "truncated: needed {n} more bytes, {} left",
            r.remaining()
        )));
    }
    Ok(())
}

fn get_u8(r: &mut Bytes) -> Result<u8, RecordError> {
    need(r, 1)?;
    Ok(r.get_u8())
}

fn get_u32(r: &mut Bytes) -> Result<u32, RecordError> {
    need(r, 4)?;
    Ok(r.get_u32())
}

fn get_opt_u64(r: &mut Bytes) -> Result<Option<u64>, RecordError> {
    match get_u8(r)? {
        0 => Ok(None),
        1 => {
            need(r, 8)?;
            Ok(Some(r.get_u64()))
        }
        other => Err(RecordError(format!("option marker {other}"))),
    }
}

fn get_bytes(r: &mut Bytes) -> Result<Bytes, RecordError> {
    let n = get_u32(r)? as usize;
    need(r, n)?;
    Ok(r.split_to(n))
}

fn get_str(r: &mut Bytes) -> Result<String, RecordError> {
    let b = get_bytes(r)?;
    String::from_utf8(b.to_vec()).map_err(|_| RecordError("string is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::{Properties, RetainHandling};

    fn message() -> MessageRecord {
        let mut properties = Properties::default();
        properties.content_type = Some("text/plain".into());
        properties.user_properties = vec![("k".into(), "v".into())];
        properties.message_expiry_interval = Some(60);
        MessageRecord {
            publish: Publish {
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b".into(),
                packet_id: 1,
                properties: properties.into(),
                payload: Bytes::from_static(b"hello"),
                dup: false,
            },
            expires_at: Some(1_700_000_000_123),
        }
    }

    #[test]
    fn queued_record_round_trips() {
        let q = QueuedRecord {
            message: message(),
            qos: QoS::AtLeastOnce,
            retain: true,
            subscription_ids: vec![1, 268_435_455],
        };
        let bytes = q.to_bytes().unwrap();
        assert_eq!(QueuedRecord::from_bytes(&bytes).unwrap(), q);
        for cut in 0..bytes.len() {
            assert!(
                QueuedRecord::from_bytes(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn session_record_round_trips() {
        let s = SessionRecord {
            id: 9,
            client_id: "dev-9".into(),
            protocol: 5,
            expiry: 3600,
            subscriptions: vec![
                SubscriptionRecord {
                    filter: "$share/g/a/#".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    id: Some(42),
                },
                SubscriptionRecord {
                    filter: "b/+".into(),
                    options: SubscriptionOptions::default(),
                    id: None,
                },
            ],
            will: Some(WillRecord {
                message: message(),
                delay: 30,
            }),
            disconnected_at: Some(5),
            will_due: Some(35),
        };
        let bytes = s.to_bytes().unwrap();
        assert_eq!(SessionRecord::from_bytes(9, &bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(SessionRecord::from_bytes(9, &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn a_newer_record_format_is_refused_not_misread() {
        let mut bytes = message().to_bytes().unwrap().to_vec();
        bytes[0] = RECORD_FORMAT + 1;
        let err = MessageRecord::from_bytes(&bytes).unwrap_err();
        assert!(err.0.contains("record format 2"), "{err}");
    }

    #[test]
    fn will_delay_travels_beside_the_message() {
        let mut properties = Properties::default();
        properties.will_delay_interval = Some(10);
        let will = Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties,
        };
        let r = WillRecord::from_will(&will);
        assert_eq!(r.delay, 10);
        assert_eq!(r.message.publish.properties.will_delay_interval, None);
        assert_eq!(r.to_will(), will);
    }
}
