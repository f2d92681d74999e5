//! Raw MQTT packets for the cluster tests: exact CONNACK and DISCONNECT
//! reason codes, which a client library would hide.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::cluster_nodes::Node;

/// A raw MQTT 5 connection, to read exact reason codes.
pub(crate) struct Raw {
    stream: std::net::TcpStream,
}

impl Raw {
    /// Connects to `node` as `client_id` (MQTT 5, clean start, keep alive
    /// 30 s) and returns the connection with its CONNACK reason code.
    pub(crate) fn connect(node: &Node, client_id: &str) -> (Raw, u8) {
        Raw::connect_to(node.ip, node.mqtt, client_id)
    }

    pub(crate) fn connect_to(ip: &str, port: u16, client_id: &str) -> (Raw, u8) {
        Raw::connect_level(ip, port, client_id, 5)
    }

    /// Connects at protocol `level` (4: 3.1.1, 5: MQTT 5); the CONNACK's
    /// reason code (MQTT 5) or return code (3.1.1).
    pub(crate) fn connect_level(ip: &str, port: u16, client_id: &str, level: u8) -> (Raw, u8) {
        let mut stream = std::net::TcpStream::connect((ip, port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let id = client_id.as_bytes();
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 30];
        if level == 5 {
            body.push(0); // no properties
        }
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        assert!(body.len() < 128);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        stream.write_all(&packet).unwrap();
        let mut raw = Raw { stream };
        let (kind, body) = raw.read_packet().expect("a CONNACK");
        assert_eq!(kind, 0x20, "CONNACK expected");
        (raw, body[1])
    }

    /// Connects as `client_id` (MQTT 5) without clean start and with a
    /// session expiry of `expiry` seconds: the connection, Session Present
    /// and the reason code.
    pub(crate) fn connect_persistent(node: &Node, client_id: &str, expiry: u32) -> (Raw, bool, u8) {
        Raw::connect_persistent_max(node, client_id, expiry, None)
    }

    /// As `connect_persistent`, with Receive Maximum `receive_max`.
    pub(crate) fn connect_persistent_max(
        node: &Node,
        client_id: &str,
        expiry: u32,
        receive_max: Option<u16>,
    ) -> (Raw, bool, u8) {
        let mut stream = std::net::TcpStream::connect((node.ip, node.mqtt)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let id = client_id.as_bytes();
        let mut props = vec![0x11];
        props.extend_from_slice(&expiry.to_be_bytes());
        if let Some(max) = receive_max {
            props.push(0x21);
            props.extend_from_slice(&max.to_be_bytes());
        }
        let mut body = vec![
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x00,
            0,
            30,
            props.len() as u8,
        ];
        body.extend_from_slice(&props);
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        stream.write_all(&packet).unwrap();
        let mut raw = Raw { stream };
        let (kind, body) = raw.read_packet().expect("a CONNACK");
        assert_eq!(kind, 0x20, "CONNACK expected");
        (raw, body[0] & 1 == 1, body[1])
    }

    /// SUBSCRIBE to `filter` at QoS 1; waits for the SUBACK.
    pub(crate) fn subscribe(&mut self, filter: &str) {
        let f = filter.as_bytes();
        let mut body = vec![0, 1, 0];
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f);
        body.push(1);
        let mut packet = vec![0x82, body.len() as u8];
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet).unwrap();
        assert!(matches!(self.read_packet(), Some((0x90, _))), "SUBACK");
    }

    /// The next PUBLISH, acknowledged (PUBACK): its payload and DUP flag.
    pub(crate) fn next_publish_acked(&mut self) -> (String, bool) {
        let (first, body) = self.read_packet().expect("a PUBLISH");
        assert_eq!(first & 0xF0, 0x30, "PUBLISH expected, got {first:#x}");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let mut at = 2 + topic_len;
        assert_eq!(first & 0x06, 0x02, "QoS 1");
        self.stream
            .write_all(&[0x40, 2, body[at], body[at + 1]])
            .unwrap();
        at += 2;
        at += 1 + usize::from(body[at]);
        (
            String::from_utf8_lossy(&body[at..]).into_owned(),
            first & 0x08 != 0,
        )
    }

    /// The next PUBLISH: its payload and DUP flag (not acknowledged).
    pub(crate) fn next_publish(&mut self) -> (String, bool) {
        let (first, body) = self.read_packet().expect("a PUBLISH");
        assert_eq!(first & 0xF0, 0x30, "PUBLISH expected, got {first:#x}");
        (payload_of(first, &body), first & 0x08 != 0)
    }

    /// PUBLISH `payload` on `topic` at QoS 0; false if the connection is gone.
    pub(crate) fn publish(&mut self, topic: &str, payload: &str) -> bool {
        let t = topic.as_bytes();
        let mut body = (t.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(t);
        body.push(0); // no properties
        body.extend_from_slice(payload.as_bytes());
        assert!(body.len() < 128);
        let mut packet = vec![0x30, body.len() as u8];
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet).is_ok()
    }

    /// Whether a PUBLISH with `payload` arrives within `limit` (other
    /// packets are skipped).
    pub(crate) fn receives(&mut self, payload: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.read_packet() {
                Some((first, body)) if first & 0xF0 == 0x30 => {
                    if payload_of(first, &body) == payload {
                        break true;
                    }
                }
                Some(_) => {}
                None => break false,
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        found
    }

    /// SUBSCRIBE to `filter` at `qos`; waits for the SUBACK.
    pub(crate) fn subscribe_qos(&mut self, filter: &str, qos: u8) {
        let f = filter.as_bytes();
        let mut body = vec![0, 1, 0];
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f);
        body.push(qos);
        let mut packet = vec![0x82, body.len() as u8];
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet).unwrap();
        assert!(matches!(self.read_packet(), Some((0x90, _))), "SUBACK");
    }

    /// Receives PUBLISHes until the connection ends or stays silent for
    /// `quiet`, as a client keeping the session's QoS 2 state in
    /// `pending` would: QoS 1 acknowledged; QoS 2 answered with PUBREC and
    /// taken once per packet id until its PUBREL (a resent PUBLISH of a
    /// pending id is the same message). Each message taken: its topic,
    /// payload and DUP flag; and the reason code of a DISCONNECT that ended
    /// the connection.
    pub(crate) fn receive_all(
        &mut self,
        quiet: Duration,
        pending: &std::sync::Mutex<std::collections::HashSet<u16>>,
    ) -> (Vec<(String, String, bool)>, Option<u8>) {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut got = Vec::new();
        while let Some((first, body)) = self.read_packet() {
            match first & 0xF0 {
                0x30 => {
                    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let topic = String::from_utf8_lossy(&body[2..2 + topic_len]).into_owned();
                    let mut at = 2 + topic_len;
                    let qos = (first >> 1) & 3;
                    let mut fresh = true;
                    if qos > 0 {
                        let id = [body[at], body[at + 1]];
                        let kind = if qos == 1 { 0x40 } else { 0x50 };
                        if qos == 2 {
                            fresh = pending.lock().unwrap().insert(u16::from_be_bytes(id));
                        }
                        self.stream.write_all(&[kind, 2, id[0], id[1]]).unwrap();
                        at += 2;
                    }
                    at += 1 + usize::from(body[at]);
                    let payload = String::from_utf8_lossy(&body[at..]).into_owned();
                    if fresh {
                        got.push((topic, payload, first & 0x08 != 0));
                    }
                }
                0x60 => {
                    pending
                        .lock()
                        .unwrap()
                        .remove(&u16::from_be_bytes([body[0], body[1]]));
                    self.stream.write_all(&[0x70, 2, body[0], body[1]]).unwrap();
                }
                0xE0 => return (got, Some(body.first().copied().unwrap_or(0))),
                _ => {}
            }
        }
        (got, None)
    }

    /// The next packet's first byte and body; None on EOF or timeout.
    pub(crate) fn read_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut first = [0u8; 1];
        self.stream.read_exact(&mut first).ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).ok()?;
            len |= usize::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).ok()?;
        Some((first[0], body))
    }

    /// Sends PINGREQ; true when PINGRESP comes back.
    pub(crate) fn ping(&mut self) -> bool {
        if self.stream.write_all(&[0xC0, 0]).is_err() {
            return false;
        }
        matches!(self.read_packet(), Some((0xD0, _)))
    }

    /// Waits (up to the read timeout) for the server's DISCONNECT; its
    /// reason code.
    pub(crate) fn disconnect_reason(&mut self) -> Option<u8> {
        loop {
            match self.read_packet()? {
                (0xE0, body) => return Some(body.first().copied().unwrap_or(0)),
                _ => continue,
            }
        }
    }
}

/// The payload of an MQTT 5 PUBLISH (first byte `first`, body `body`).
fn payload_of(first: u8, body: &[u8]) -> String {
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let mut at = 2 + topic_len;
    if first & 0x06 != 0 {
        at += 2;
    }
    let props = usize::from(body[at]);
    at += 1 + props;
    String::from_utf8_lossy(&body[at..]).into_owned()
}

/// HTTP status of `GET path` on the admin listener of `node`.
pub(crate) fn admin_get_status(node: &Node, path: &str) -> u16 {
    let mut s = std::net::TcpStream::connect((node.ip, node.admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}
