//! MQTT 5 enhanced authentication with SCRAM-SHA-256 / SCRAM-SHA-512 over
//! real sockets: vigil-client logging in and re-authenticating while its
//! subscription keeps receiving, refusals (0x86, 0x8C), the connect timeout
//! mid-exchange, and hand-built CONNECT / AUTH frames whose SCRAM proof the
//! test computes itself with sha2/hmac/pbkdf2 (not with vigil's code).

mod auth_common;
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use auth_common::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_broker::auth::{AuthConfig, HashKind, PasswordHash};
use vigil_client::{Client, ClientError, ConnectOptions, Event};
use vigil_proto::scram::Mechanism;
use vigil_proto::{QoS, ReasonCode};

/// RFC 7677's user "user" with password "pencil" (salt W22Z..., i=4096);
/// keys computed independently with Python hashlib/hmac.
const RFC_USER: &str = "user:$scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

fn scram_line(user: &str, kind: HashKind, pw: &[u8]) -> String {
    format!(
        "{user}:{}",
        PasswordHash::generate(kind, pw, None).unwrap().encode()
    )
}

/// alice: SCRAM-SHA-256 "alice pw"; bob: SCRAM-SHA-512 "bob pw"; plus the RFC user.
fn files() -> Files {
    Files::new(
        &format!(
            "{}\n{}\n{RFC_USER}\n",
            scram_line("alice", HashKind::ScramSha256, b"alice pw"),
            scram_line("bob", HashKind::ScramSha512, b"bob pw"),
        ),
        None,
    )
}

fn options(
    b: &common::TestBroker,
    id: &str,
    m: Mechanism,
    user: &str,
    pw: &'static str,
) -> ConnectOptions {
    ConnectOptions::builder(b.addr.ip().to_string(), b.addr.port())
        .client_id(id)
        .scram(m, user, Bytes::from_static(pw.as_bytes()))
        .build()
}

async fn next_message(events: &mut vigil_client::Events) -> vigil_client::Message {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Message(m))) => return *m,
            Ok(Some(_)) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn vigil_client_logs_in_with_scram_sha_256_and_512_and_can_publish_and_subscribe() {
    let files = files();
    let (b, auth) = broker_with(&files.config(false, None)).await;
    let (alice, mut alice_events) =
        Client::connect(options(&b, "a", Mechanism::Sha256, "alice", "alice pw"))
            .await
            .expect("SCRAM-SHA-256 login");
    let (bob, mut bob_events) =
        Client::connect(options(&b, "b", Mechanism::Sha512, "bob", "bob pw"))
            .await
            .expect("SCRAM-SHA-512 login");
    alice.subscribe("t/#", QoS::AtLeastOnce).await.unwrap();
    bob.subscribe("t/#", QoS::AtLeastOnce).await.unwrap();
    bob.publish(vigil_client::Message::new("t/1", "from bob").qos(QoS::AtLeastOnce))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        &next_message(&mut alice_events).await.payload[..],
        b"from bob"
    );
    assert_eq!(
        &next_message(&mut bob_events).await.payload[..],
        b"from bob"
    );
    assert_eq!(auth.counters().connect_allowed.load(Relaxed), 2);
    // A SCRAM entry also serves a plain password login (MQTT 3.1.1 has no AUTH).
    logged_in(&b, "plain", V311, "alice", "alice pw").await;
    logged_in(&b, "plain5", V5, "bob", "bob pw").await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_wrong_mechanism_get_0x86_and_an_unknown_method_0x8c() {
    let files = files();
    let (b, auth) = broker_with(&files.config(false, None)).await;
    for (m, user, pw) in [
        (Mechanism::Sha256, "alice", "alice pW"),
        (Mechanism::Sha256, "mallory", "alice pw"),
        (Mechanism::Sha512, "alice", "alice pw"),
    ] {
        let err = Client::connect(options(&b, "x", m, user, pw))
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                ClientError::ConnackRefused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            ),
            "{user} {m:?}: {err}"
        );
    }
    assert_eq!(auth.counters().connect_bad_credentials.load(Relaxed), 3);
    let mut c = RawFrames::connect(b.addr).await;
    c.send(&connect_frame("SCRAM-SHA-1", b"n,,n=user,r=abc"))
        .await;
    let (kind, reason, _) = c.recv().await;
    assert_eq!(
        (kind, reason),
        (0x20, ReasonCode::BAD_AUTHENTICATION_METHOD.0)
    );
}

#[tokio::test]
async fn reauthentication_succeeds_mid_connection_while_a_subscription_keeps_receiving() {
    let files = files();
    let (b, _auth) = broker_with(&files.config(false, None)).await;
    let (sub, mut events) =
        Client::connect(options(&b, "sub", Mechanism::Sha256, "alice", "alice pw"))
            .await
            .unwrap();
    sub.subscribe("flow", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _pe) = Client::connect(options(&b, "pub", Mechanism::Sha512, "bob", "bob pw"))
        .await
        .unwrap();
    let feed = tokio::spawn(async move {
        for i in 0u32..200 {
            publisher
                .publish(vigil_client::Message::new("flow", i.to_string()).qos(QoS::AtLeastOnce))
                .await
                .unwrap()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut next = 0u32;
    let mut reauthenticated = 0;
    while next < 200 {
        let m = next_message(&mut events).await;
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), next.to_string());
        next += 1;
        if next == 50 || next == 120 {
            // Twice, with messages arriving before, during and after.
            sub.reauthenticate().await.expect("re-authentication");
            reauthenticated += 1;
        }
    }
    feed.await.unwrap();
    assert_eq!(reauthenticated, 2);
    // A client that did not log in with SCRAM cannot re-authenticate.
    let (plain, _e) = Client::connect(
        ConnectOptions::builder(b.addr.ip().to_string(), b.addr.port())
            .client_id("plain")
            .credentials("alice", Some(Bytes::from_static(b"alice pw")))
            .build(),
    )
    .await
    .unwrap();
    assert!(plain.reauthenticate().await.is_err());
}

/// The password changes in the file (reloaded without revocation): the
/// connected client's next re-authentication fails with DISCONNECT 0x87
/// (0x86 is not a DISCONNECT code in MQTT 5 section 3.14.2.1; vigil-client's
/// decoder, like others, refuses it as malformed).
#[tokio::test]
async fn a_failed_reauthentication_is_disconnect_0x87() {
    let files = files();
    let config = AuthConfig {
        revoke_on_reload: false,
        ..files.config(false, None)
    };
    let (b, auth) = broker_with(&config).await;
    let (c, _events) = Client::connect(options(&b, "a", Mechanism::Sha256, "alice", "alice pw"))
        .await
        .unwrap();
    std::fs::write(
        files.path("passwd"),
        scram_line("alice", HashKind::ScramSha256, b"new pw") + "\n",
    )
    .unwrap();
    auth.reload().unwrap();
    let err = c.reauthenticate().await.expect_err("refused");
    assert!(
        matches!(
            err,
            ClientError::ClosedByBroker {
                reason: ReasonCode::NOT_AUTHORIZED,
                ..
            }
        ),
        "{err}"
    );
}

/// docs/keepalive.md: a client that stops mid-exchange is closed by the
/// connect timeout (counted from the TCP accept), not left hanging.
#[tokio::test]
async fn a_client_that_stops_mid_exchange_is_closed_by_the_connect_timeout() {
    let files = files();
    let b = common::TestBroker::with(|c| c.listener.connect_timeout = 1).await;
    let auth = std::sync::Arc::new(
        vigil_broker::auth::Auth::from_config(&files.config(false, None)).unwrap(),
    );
    assert!(b.broker.set_auth(auth));
    let opened = Instant::now();
    let mut c = RawFrames::connect(b.addr).await;
    c.send(&connect_frame("SCRAM-SHA-256", b"n,,n=user,r=abc"))
        .await;
    let (kind, reason, _) = c.recv().await;
    assert_eq!((kind, reason), (0xF0, 0x18));
    // Silence: the broker closes without CONNACK at 1 s.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, c.stream.read_to_end(&mut rest))
        .await
        .expect("closed within the wait")
        .unwrap_or(0);
    let after = opened.elapsed();
    assert_eq!(n, 0, "nothing more was sent: {rest:?}");
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1800),
        "closed after {after:?}"
    );
}

/// Hand-built frames, SCRAM computed here from RFC 5802's definitions:
/// login as RFC 7677's user, check the server's signature, re-authenticate,
/// then a re-authentication with a wrong proof gets DISCONNECT 0x87.
#[tokio::test]
async fn raw_frames_log_in_and_reauthenticate_as_rfc_7677s_user() {
    let files = files();
    let (b, _auth) = broker_with(&files.config(false, None)).await;
    let mut c = RawFrames::connect(b.addr).await;
    let client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    c.send(&connect_frame("SCRAM-SHA-256", client_first.as_bytes()))
        .await;
    let (signature, _) = c.exchange(client_first, 0x18, "pencil").await;
    let (kind, reason, data) = c.recv().await;
    assert_eq!((kind, reason), (0x20, 0x00), "CONNACK success");
    assert_eq!(data, format!("v={signature}").into_bytes());

    // Re-authentication: AUTH 0x19, 0x18 both ways, AUTH 0x00.
    let again = "n,,n=user,r=secondnonce";
    c.send(&auth_frame(0x19, again.as_bytes())).await;
    let (signature, _) = c.exchange(again, 0x18, "pencil").await;
    let (kind, reason, data) = c.recv().await;
    assert_eq!((kind, reason), (0xF0, 0x00), "AUTH success");
    assert_eq!(data, format!("v={signature}").into_bytes());

    // The connection still works: PINGREQ / PINGRESP.
    c.stream.write_all(&[0xC0, 0x00]).await.unwrap();
    let (kind, _, _) = c.recv().await;
    assert_eq!(kind, 0xD0);

    // A wrong password's proof: DISCONNECT 0x87 (0x86 is CONNACK-only).
    let third = "n,,n=user,r=thirdnonce";
    c.send(&auth_frame(0x19, third.as_bytes())).await;
    c.exchange(third, 0x18, "pencil!").await;
    let (kind, reason, _) = c.recv().await;
    assert_eq!((kind, reason), (0xE0, 0x87), "DISCONNECT not authorized");

    // AUTH with another method: DISCONNECT 0x82 (MQTT 5 section 4.12.1).
    let mut c = RawFrames::connect(b.addr).await;
    c.send(&connect_frame("SCRAM-SHA-256", client_first.as_bytes()))
        .await;
    c.exchange(client_first, 0x18, "pencil").await;
    let (kind, reason, _) = c.recv().await;
    assert_eq!((kind, reason), (0x20, 0x00));
    c.send(&auth_frame_with(0x19, "SCRAM-SHA-512", again.as_bytes()))
        .await;
    let (kind, reason, _) = c.recv().await;
    assert_eq!((kind, reason), (0xE0, 0x82), "DISCONNECT protocol error");
}

/// A socket speaking hand-built MQTT 5 frames.
struct RawFrames {
    stream: TcpStream,
}

impl RawFrames {
    async fn connect(addr: std::net::SocketAddr) -> RawFrames {
        RawFrames {
            stream: TcpStream::connect(addr).await.unwrap(),
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.unwrap();
    }

    /// The next frame as (first byte, reason code, Authentication Data).
    async fn recv(&mut self) -> (u8, u8, Vec<u8>) {
        tokio::time::timeout(WAIT, self.read_frame())
            .await
            .expect("a frame in time")
    }

    async fn read_frame(&mut self) -> (u8, u8, Vec<u8>) {
        let first = self.stream.read_u8().await.unwrap();
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let b = self.stream.read_u8().await.unwrap();
            len |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.unwrap();
        // CONNACK: flags, reason, properties. AUTH / DISCONNECT: reason, properties.
        let (reason, props) = match first {
            0x20 => (body[1], &body[2..]),
            0xD0 => (0, &body[..]),
            _ => (body[0], body.get(1..).unwrap_or_default()),
        };
        (first, reason, auth_data(props))
    }

    /// Reads the server's AUTH 0x18 (server-first), answers with
    /// client-final for `password`; returns the ServerSignature the server
    /// must send next (base64) and the client-final.
    async fn exchange(
        &mut self,
        client_first: &str,
        reason: u8,
        password: &str,
    ) -> (String, String) {
        let (kind, code, server_first) = self.recv().await;
        assert_eq!((kind, code), (0xF0, 0x18), "AUTH continue");
        let server_first = String::from_utf8(server_first).unwrap();
        let client_nonce = client_first.rsplit_once("r=").unwrap().1;
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());
        let salt = STANDARD
            .decode(attrs[1].strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let hmac = |key: &[u8], msg: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        };
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key).to_vec();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", &client_first[3..]);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let client_final = format!("{without_proof},p={}", STANDARD.encode(proof));
        self.send(&auth_frame(reason, client_final.as_bytes()))
            .await;
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        (STANDARD.encode(server_signature), client_final)
    }
}

/// The value of property 0x16 (Authentication Data) in a properties block.
fn auth_data(block: &[u8]) -> Vec<u8> {
    let Some((&len, mut rest)) = block.split_first() else {
        return Vec::new();
    };
    // Short blocks only (one-byte length) in these tests.
    assert!(len < 0x80);
    rest = &rest[..usize::from(len)];
    while let Some((&id, tail)) = rest.split_first() {
        let n = match id {
            // UTF-8 strings and binary data: two-byte length.
            0x15 | 0x16 | 0x1F | 0x12 | 0x1A | 0x1C => {
                let n = usize::from(u16::from_be_bytes([tail[0], tail[1]]));
                if id == 0x16 {
                    return tail[2..2 + n].to_vec();
                }
                2 + n
            }
            0x21 | 0x22 | 0x13 => 2,
            0x27 | 0x11 => 4,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            other => panic!("property {other:#x} not expected here"),
        };
        rest = &tail[n..];
    }
    Vec::new()
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 16_384);
    let mut out = vec![first];
    if body.len() < 128 {
        out.push(body.len() as u8);
    } else {
        out.push((body.len() % 128) as u8 | 0x80);
        out.push((body.len() / 128) as u8);
    }
    out.extend_from_slice(body);
    out
}

fn auth_properties(method: &str, data: &[u8]) -> Vec<u8> {
    let mut props = vec![0x15];
    string(&mut props, method.as_bytes());
    props.push(0x16);
    string(&mut props, data);
    assert!(props.len() < 128);
    let mut out = vec![props.len() as u8];
    out.extend(props);
    out
}

/// CONNECT (MQTT 5, clean start, keep alive 60, client id "raw") naming `method`.
fn connect_frame(method: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60]);
    body.extend(auth_properties(method, data));
    string(&mut body, b"raw");
    frame(0x10, &body)
}

fn auth_frame(reason: u8, data: &[u8]) -> Vec<u8> {
    auth_frame_with(reason, "SCRAM-SHA-256", data)
}

fn auth_frame_with(reason: u8, method: &str, data: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(auth_properties(method, data));
    frame(0xF0, &body)
}
