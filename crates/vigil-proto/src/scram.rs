//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as MQTT 5 enhanced
//! authentication methods, without channel binding (GS2 header `n,,`).
//!
//! Sans-IO like the rest of this crate: the server side ([`ScramServer`])
//! and the client side ([`ScramClient`]) turn one message into the next;
//! nonces come from the caller (a CSPRNG in the broker and client), so the
//! tests replay RFC 7677's exchange byte for byte. User names and passwords
//! are taken as UTF-8 bytes without SASLprep (the same for ASCII, which is
//! what MQTT deployments use).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Iterations `vigil passwd` writes by default (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The most iterations accepted from a file or from a server: more would let
/// one line (or one hostile server) hold a thread for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest SCRAM message accepted (user names and nonces are short).
const MAX_MESSAGE: usize = 4096;

/// The hash a SCRAM method uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-256`.
    Sha256,
    /// `SCRAM-SHA-512`.
    Sha512,
}

impl Mechanism {
    /// The Authentication Method name, as EMQX spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism an Authentication Method names, if vigil knows it.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Bytes of the hash output.
    pub fn output_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    /// HMAC(key, message).
    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length: this cannot fail.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts any key length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Mechanism::Sha256 => run::<Hmac<Sha256>>(key, message),
            Mechanism::Sha512 => run::<Hmac<Sha512>>(key, message),
        }
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword = Hi(password, salt, iterations) (PBKDF2 with HMAC).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ScramError {
    /// A message is not what RFC 5802 says it must be.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which vigil does not offer.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The nonce does not continue this exchange's.
    #[error("the nonce does not match the exchange's")]
    NonceMismatch,
    /// The client's proof is wrong (wrong password, or unknown user).
    #[error("the client proof is wrong")]
    BadProof,
    /// The server's signature is wrong: it does not know the password.
    #[error("the server signature is wrong")]
    BadServerSignature,
    /// The server answered with `e=`.
    #[error("the server refused: {0}")]
    ServerError(String),
    /// The iteration count is outside 1..=[`MAX_ITERATIONS`].
    #[error("iteration count {0} outside 1..=10000000")]
    Iterations(u32),
}

/// What the server keeps of a password (RFC 5802 section 3): enough to check
/// a client's proof and to prove itself, not enough to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The hash.
    pub mechanism: Mechanism,
    /// Salt of the PBKDF2 derivation.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for StoredCredential {
    // The keys are what guessing would start from: kept out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl StoredCredential {
    /// The credential of `password` under `salt` and `iterations`.
    pub fn derive(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> StoredCredential {
        let salted = mechanism.salted_password(password, salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        StoredCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
        }
    }

    /// True if `password` is the one this credential was derived from
    /// (plain CONNECT login with a SCRAM entry). Slow: PBKDF2.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = StoredCredential::derive(self.mechanism, password, &self.salt, self.iterations);
        let stored = other.stored_key.ct_eq(&self.stored_key);
        let server = other.server_key.ct_eq(&self.server_key);
        (stored & server).into()
    }
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name (`n=`, unescaped).
    pub username: String,
    /// The client's nonce (`r=`).
    pub nonce: String,
    /// The GS2 header as sent (`n,,` or `y,,`), echoed in `c=`.
    gs2_header: String,
    /// The message without the GS2 header, part of the AuthMessage.
    bare: String,
}

impl ClientFirst {
    /// Parses `n,,n=user,r=nonce[,extensions]`.
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let text = utf8(message)?;
        let mut gs2 = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (gs2.next(), gs2.next(), gs2.next()) else {
            return Err(ScramError::Malformed("client-first has no GS2 header"));
        };
        match flag {
            // "y": the client could bind but thinks we cannot; we cannot.
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad GS2 channel-binding flag")),
        }
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "an authorization identity is not supported",
            ));
        }
        let mut attrs = bare.split(',');
        if attrs.clone().next().is_some_and(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed("mandatory extension not supported"));
        }
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(ScramError::Malformed("client-first has no n="))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client-first has no r="))?;
        check_nonce(nonce)?;
        Ok(ClientFirst {
            username: unescape_name(user)?,
            nonce: nonce.to_string(),
            gs2_header: format!("{flag},,"),
            bare: bare.to_string(),
        })
    }
}

/// The server side of one exchange, after it sent server-first.
#[derive(Clone)]
pub struct ScramServer {
    credential: StoredCredential,
    /// The client's and the server's nonce together.
    nonce: String,
    gs2_header: String,
    /// client-first-bare "," server-first: the AuthMessage's start.
    auth_prefix: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Answers `client_first` for `credential` (the user's, or a decoy for a
    /// user who does not exist: the answer looks the same); `server_nonce` is
    /// fresh random printable text. Returns the state and server-first.
    pub fn start(
        client_first: &ClientFirst,
        credential: StoredCredential,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        check_nonce(server_nonce)?;
        let nonce = format!("{}{}", client_first.nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let auth_prefix = format!("{},{server_first}", client_first.bare);
        let server = ScramServer {
            credential,
            nonce,
            gs2_header: client_first.gs2_header.clone(),
            auth_prefix,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// Checks client-final (`c=..,r=..,p=..`); returns server-final
    /// (`v=signature`) if the proof is right. Cheap: HMACs and one hash.
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = utf8(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no p="))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("client-final has no c="))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client-final has no r="))?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Malformed("c= is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("p= is not base64"))?;
        let m = self.credential.mechanism;
        if proof.len() != m.output_len() {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let signature = m.hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !bool::from(m.hash(&client_key).ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = m.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// The client side of one exchange.
#[derive(Clone)]
pub struct ScramClient {
    mechanism: Mechanism,
    password: Vec<u8>,
    bare: String,
    nonce: String,
    /// AuthMessage and ServerKey once client-final was built.
    expect: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange for `username` with `password`; `nonce` is fresh random
    /// printable text without commas.
    pub fn new(
        mechanism: Mechanism,
        username: &str,
        password: &[u8],
        nonce: &str,
    ) -> Result<ScramClient, ScramError> {
        check_nonce(nonce)?;
        Ok(ScramClient {
            mechanism,
            password: password.to_vec(),
            bare: format!("n={},r={nonce}", escape_name(username)),
            nonce: nonce.to_string(),
            expect: None,
        })
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// client-first: `n,,n=user,r=nonce`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare).into_bytes()
    }

    /// Reads server-first and returns client-final with the proof. Slow:
    /// PBKDF2 with the server's iteration count.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = utf8(server_first)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_string()));
        }
        let mut attrs = text.split(',');
        if attrs.clone().next().is_some_and(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed("mandatory extension not supported"));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("server-first has no r="))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .ok_or(ScramError::Malformed("server-first has no s="))?;
        let iterations = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .ok_or(ScramError::Malformed("server-first has no i="))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        check_nonce(nonce)?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("s= is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("i= is not a number"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare);
        let signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.expect = Some((auth_message, m.hmac(&salted, b"Server Key")));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proves it knows the credential.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = utf8(server_final)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_string()));
        }
        let (Some((auth_message, server_key)), Some(v)) = (&self.expect, text.strip_prefix("v="))
        else {
            return Err(ScramError::Malformed("server-final has no v="));
        };
        // Extensions may follow the signature.
        let v = v.split(',').next().unwrap_or_default();
        let got = STANDARD
            .decode(v)
            .map_err(|_| ScramError::Malformed("v= is not base64"))?;
        let want = self.mechanism.hmac(server_key, auth_message.as_bytes());
        if bool::from(got.ct_eq(&want)) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

fn utf8(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MAX_MESSAGE {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("message is not UTF-8"))
}

/// A nonce is printable ASCII without commas (RFC 5802 section 7).
fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("nonce is empty or not printable"));
    }
    Ok(())
}

/// `saslname` encoding: `,` as `=2C`, `=` as `=3D`.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i..i + 3);
        match code {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn pencil(m: Mechanism) -> StoredCredential {
        StoredCredential::derive(m, b"pencil", &STANDARD.decode(SALT).unwrap(), 4096)
    }

    /// RFC 7677 section 3, both sides, byte for byte.
    #[test]
    fn rfc7677_exchange_sha256() {
        let mut client =
            ScramClient::new(Mechanism::Sha256, "user", b"pencil", CLIENT_NONCE).unwrap();
        let first = client.client_first();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let parsed = ClientFirst::parse(&first).unwrap();
        assert_eq!(parsed.username, "user");
        let (server, server_first) =
            ScramServer::start(&parsed, pencil(Mechanism::Sha256), SERVER_NONCE).unwrap();
        assert_eq!(
            String::from_utf8(server_first.clone()).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = client.client_final(&server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final.clone()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_final = server.finish(&client_final).unwrap();
        assert_eq!(
            String::from_utf8(server_final.clone()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client.verify_server_final(&server_final).unwrap();
    }

    /// RFC 7677's inputs with SHA-512; expected values from Python's
    /// hashlib.pbkdf2_hmac / hmac (sha512), computed independently:
    /// StoredKey 6AAub306..., proof gMGXRcev..., signature ZQnYEgWQ....
    #[test]
    fn the_same_exchange_with_sha512() {
        let cred = pencil(Mechanism::Sha512);
        assert_eq!(
            STANDARD.encode(&cred.stored_key),
            "6AAub3065EYRmyFpM2RNwqK+eGnrkYuEWbXn19LsEmBqzu8QaCXNc1FwpnX9NhH2hK/60dzj9DoO5DvVkOHbvg=="
        );
        assert_eq!(
            STANDARD.encode(&cred.server_key),
            "jZHbYjC1aHh0/hKbxyBuGFjDrgjgKTT1esA7awWiKcRZ0o/0b1yWEebBeSVkkCFewf91nLDfKF24mvD5nmE6rA=="
        );
        let mut client =
            ScramClient::new(Mechanism::Sha512, "user", b"pencil", CLIENT_NONCE).unwrap();
        let parsed = ClientFirst::parse(&client.client_first()).unwrap();
        let (server, server_first) = ScramServer::start(&parsed, cred, SERVER_NONCE).unwrap();
        let client_final = client.client_final(&server_first).unwrap();
        assert!(String::from_utf8(client_final.clone()).unwrap().ends_with(
            ",p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
        ));
        let server_final = server.finish(&client_final).unwrap();
        assert_eq!(
            server_final,
            b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw=="
        );
        client.verify_server_final(&server_final).unwrap();
    }

    #[test]
    fn a_wrong_password_fails_the_proof_and_a_wrong_server_fails_the_signature() {
        let mut client =
            ScramClient::new(Mechanism::Sha256, "user", b"pencik", CLIENT_NONCE).unwrap();
        let parsed = ClientFirst::parse(&client.client_first()).unwrap();
        let (server, server_first) =
            ScramServer::start(&parsed, pencil(Mechanism::Sha256), SERVER_NONCE).unwrap();
        let client_final = client.client_final(&server_first).unwrap();
        assert_eq!(server.finish(&client_final), Err(ScramError::BadProof));
        // The client accepts only the signature made with this password's
        // ServerKey.
        let mut client =
            ScramClient::new(Mechanism::Sha256, "user", b"pencil", CLIENT_NONCE).unwrap();
        let parsed = ClientFirst::parse(&client.client_first()).unwrap();
        let (_, server_first) =
            ScramServer::start(&parsed, pencil(Mechanism::Sha256), SERVER_NONCE).unwrap();
        client.client_final(&server_first).unwrap();
        assert_eq!(
            client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
        assert_eq!(
            client.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn the_nonce_and_binding_must_continue_the_exchange() {
        let parsed = ClientFirst::parse(b"n,,n=user,r=abc").unwrap();
        let (server, _) = ScramServer::start(&parsed, pencil(Mechanism::Sha256), "xyz").unwrap();
        let proof = STANDARD.encode([0u8; 32]);
        assert_eq!(
            server.finish(format!("c=biws,r=abcxyW,p={proof}").as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            server.finish(format!("c=eSws,r=abcxyz,p={proof}").as_bytes()),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            server.finish(format!("c=biws,r=abcxyz,p={proof}").as_bytes()),
            Err(ScramError::BadProof)
        );
        assert_eq!(
            server.finish(b"c=biws,r=abcxyz,p=AAAA"),
            Err(ScramError::BadProof)
        );
        // A server nonce that does not extend the client's.
        let mut client = ScramClient::new(Mechanism::Sha256, "u", b"p", "abc").unwrap();
        assert_eq!(
            client.client_final(b"r=abd,s=c2FsdA==,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            client.client_final(b"r=abcd,s=c2FsdA==,i=99999999"),
            Err(ScramError::Iterations(99_999_999))
        );
        assert_eq!(
            client.client_final(b"e=other-error"),
            Err(ScramError::ServerError("other-error".into()))
        );
    }

    #[test]
    fn client_first_parsing() {
        let c = ClientFirst::parse(b"y,,n=a=2Cb=3Dc,r=n1,ext=1").unwrap();
        assert_eq!(c.username, "a,b=c");
        assert_eq!(c.nonce, "n1");
        let c = ScramClient::new(Mechanism::Sha256, "a,b=c", b"", "n1").unwrap();
        assert_eq!(c.client_first(), b"n,,n=a=2Cb=3Dc,r=n1");
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=u,r=n"),
            Err(ScramError::ChannelBinding)
        );
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=u",
            b"n,a=admin,n=u,r=n",
            b"n,,m=x,n=u,r=n",
            b"n,,n=u=41,r=n",
            b"n,,n=,r=n",
            b"n,,n=u,r=",
            b"n,,n=u,r=a b",
            b"x,,n=u,r=n",
            b"n,,n=u,r=\xff",
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(ClientFirst::parse(&vec![b'a'; 5000]).is_err());
    }

    #[test]
    fn stored_credentials_verify_plain_passwords() {
        let cred = pencil(Mechanism::Sha256);
        // RFC 7677's exchange implies these keys (Python hashlib/hmac).
        assert_eq!(
            STANDARD.encode(&cred.stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            STANDARD.encode(&cred.server_key),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(cred.verify_password(b"pencil"));
        assert!(!cred.verify_password(b"pencil "));
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-512"),
            Some(Mechanism::Sha512)
        );
        assert_eq!(Mechanism::from_name("scram-sha-512"), None);
        assert_eq!(Mechanism::Sha256.name(), "SCRAM-SHA-256");
    }
}
