//! Password hashes as Mosquitto writes them: `$7$` (PBKDF2-HMAC-SHA512),
//! `$6$` (one SHA-512 over password then salt; not crypt(3)'s sha512-crypt)
//! and `$argon2id$` in PHC form; and vigil's own SCRAM entries,
//! `$scram-sha-256$i=N$salt$StoredKey$ServerKey` (and `$scram-sha-512$`),
//! which serve MQTT 5 SCRAM logins and plain password logins alike.
//! Verification compares in constant time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;
use vigil_proto::scram::{self, Mechanism, StoredCredential};

/// Length of the SHA-512 output Mosquitto stores for `$6$` and `$7$`.
const HASH_LEN: usize = 64;
/// The salt `mosquitto_passwd` 2.0 writes for `$6$` and `$7$`, in bytes.
/// (2.1 writes 64, but 2.0 refuses any other length when it reads the file,
/// so vigil writes what both read.)
pub const SALT_LEN: usize = 12;
/// PBKDF2 iterations `mosquitto_passwd` 2.0 writes by default.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 101;
/// Upper bound on `$7$` iterations read from a file: a bigger count would
/// let one line stall a verification thread for minutes.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$salt$hash`: SHA-512(password ‖ salt).
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// The 64-byte digest.
        hash: Vec<u8>,
    },
    /// `$7$iterations$salt$hash`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// Iteration count.
        iterations: u32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// The 64-byte derived key.
        hash: Vec<u8>,
    },
    /// `$argon2id$v=19$m=..,t=..,p=..$salt$hash`, kept in its PHC text form.
    Argon2id(String),
    /// `$scram-sha-256$i=N$salt$StoredKey$ServerKey` (or `-512`): what a
    /// SCRAM server keeps (RFC 5802 section 3), base64 fields.
    Scram(StoredCredential),
}

impl std::fmt::Debug for PasswordHash {
    // The hash is not the password, but it is what guessing would start from:
    // keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordHash::Sha512 { .. } => "PasswordHash::Sha512",
            PasswordHash::Pbkdf2 { .. } => "PasswordHash::Pbkdf2",
            PasswordHash::Argon2id(_) => "PasswordHash::Argon2id",
            PasswordHash::Scram(_) => "PasswordHash::Scram",
        })
    }
}

/// Which algorithm `vigil passwd -H` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$` (Mosquitto 2.1's default).
    Argon2id,
    /// `$7$` (Mosquitto 2.0's default).
    Sha512Pbkdf2,
    /// `$6$` (Mosquitto 1.6 and earlier).
    Sha512,
    /// `$scram-sha-256$` (MQTT 5 SCRAM-SHA-256 logins, and plain ones).
    ScramSha256,
    /// `$scram-sha-512$` (MQTT 5 SCRAM-SHA-512 logins, and plain ones).
    ScramSha512,
}

/// Why a stored hash could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    /// Not one of the known forms.
    #[error(
        "unknown password hash format (expected $6$, $7$, $argon2id$, $scram-sha-256$ or $scram-sha-512$)"
    )]
    UnknownFormat,
    /// A known form with a bad field.
    #[error("malformed {0} hash: {1}")]
    Malformed(&'static str, &'static str),
}

impl PasswordHash {
    /// Parses the part of a password-file line after `user:`.
    pub fn parse(text: &str) -> Result<PasswordHash, HashError> {
        if let Some(rest) = text.strip_prefix("$6$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or(HashError::Malformed("$6$", "expected $6$salt$hash"))?;
            let salt = decode(salt, "$6$", "salt is not base64")?;
            let hash = decode(hash, "$6$", "hash is not base64")?;
            check_lengths(&salt, &hash, "$6$")?;
            return Ok(PasswordHash::Sha512 { salt, hash });
        }
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.splitn(3, '$');
            let (Some(iterations), Some(salt), Some(hash)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(HashError::Malformed(
                    "$7$",
                    "expected $7$iterations$salt$hash",
                ));
            };
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| HashError::Malformed("$7$", "iterations is not a number"))?;
            if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                return Err(HashError::Malformed(
                    "$7$",
                    "iterations outside 1..=10000000",
                ));
            }
            let salt = decode(salt, "$7$", "salt is not base64")?;
            let hash = decode(hash, "$7$", "hash is not base64")?;
            check_lengths(&salt, &hash, "$7$")?;
            return Ok(PasswordHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(scram) = parse_scram(text)? {
            return Ok(PasswordHash::Scram(scram));
        }
        if text.starts_with("$argon2id$") {
            let phc = argon2::PasswordHash::new(text)
                .map_err(|_| HashError::Malformed("$argon2id$", "not a valid PHC string"))?;
            if phc.hash.is_none() || phc.salt.is_none() {
                return Err(HashError::Malformed("$argon2id$", "no salt or no hash"));
            }
            // The parameters must be ones the algorithm accepts (and bounded,
            // so a line cannot ask for gigabytes per verification).
            let params = argon2::Params::try_from(&phc)
                .map_err(|_| HashError::Malformed("$argon2id$", "invalid parameters"))?;
            if params.m_cost() > 1024 * 1024 {
                return Err(HashError::Malformed(
                    "$argon2id$",
                    "memory cost above 1 GiB",
                ));
            }
            return Ok(PasswordHash::Argon2id(text.to_string()));
        }
        Err(HashError::UnknownFormat)
    }

    /// True if `password` is the one this hash was made from. Slow on
    /// purpose (PBKDF2, argon2): call it off the connection workers.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                let digest = sha512_salted(password, salt);
                digest.as_slice().ct_eq(hash).into()
            }
            PasswordHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.as_slice().ct_eq(hash).into()
            }
            PasswordHash::Scram(credential) => credential.verify_password(password),
            PasswordHash::Argon2id(phc) => {
                use argon2::PasswordVerifier;
                // Parsed and checked when the file was read.
                match argon2::PasswordHash::new(phc) {
                    // `verify_password` compares in constant time.
                    Ok(parsed) => argon2::Argon2::default()
                        .verify_password(password, &parsed)
                        .is_ok(),
                    Err(_) => false,
                }
            }
        }
    }

    /// A new hash of `password` with a random salt. `iterations` applies to
    /// `Sha512Pbkdf2` (default 101, as `mosquitto_passwd` 2.0) and to the
    /// SCRAM kinds (default 4096, RFC 7677's minimum), and is the time cost
    /// of `Argon2id` (default: the argon2 crate's, t=2, m=19 MiB).
    pub fn generate(
        kind: HashKind,
        password: &[u8],
        iterations: Option<u32>,
    ) -> Result<PasswordHash, HashError> {
        let salt: [u8; SALT_LEN] = rand::random();
        match kind {
            HashKind::ScramSha256 | HashKind::ScramSha512 => {
                let mechanism = if kind == HashKind::ScramSha256 {
                    Mechanism::Sha256
                } else {
                    Mechanism::Sha512
                };
                let iterations = iterations.unwrap_or(scram::DEFAULT_ITERATIONS);
                if iterations == 0 || iterations > scram::MAX_ITERATIONS {
                    return Err(HashError::Malformed(
                        mechanism_tag(mechanism),
                        "iterations outside 1..=10000000",
                    ));
                }
                let salt: [u8; SCRAM_SALT_LEN] = rand::random();
                Ok(PasswordHash::Scram(StoredCredential::derive(
                    mechanism, password, &salt, iterations,
                )))
            }
            HashKind::Sha512 => Ok(PasswordHash::Sha512 {
                hash: sha512_salted(password, &salt).to_vec(),
                salt: salt.to_vec(),
            }),
            HashKind::Sha512Pbkdf2 => {
                let iterations = iterations.unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
                if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                    return Err(HashError::Malformed(
                        "$7$",
                        "iterations outside 1..=10000000",
                    ));
                }
                let mut hash = vec![0u8; HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
                Ok(PasswordHash::Pbkdf2 {
                    iterations,
                    salt: salt.to_vec(),
                    hash,
                })
            }
            HashKind::Argon2id => {
                use argon2::PasswordHasher;
                let salt: [u8; 16] = rand::random();
                let salt = argon2::password_hash::SaltString::encode_b64(&salt)
                    .map_err(|_| HashError::Malformed("$argon2id$", "salt"))?;
                let defaults = argon2::Params::default();
                let params = argon2::Params::new(
                    defaults.m_cost(),
                    iterations.unwrap_or(defaults.t_cost()),
                    defaults.p_cost(),
                    None,
                )
                .map_err(|_| HashError::Malformed("$argon2id$", "invalid time cost"))?;
                let hasher = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let phc = hasher
                    .hash_password(password, &salt)
                    .map_err(|_| HashError::Malformed("$argon2id$", "hashing failed"))?;
                Ok(PasswordHash::Argon2id(phc.to_string()))
            }
        }
    }

    /// The stored form, as it goes after `user:` in the file.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            PasswordHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            PasswordHash::Argon2id(phc) => phc.clone(),
            PasswordHash::Scram(c) => format!(
                "{}i={}${}${}${}",
                mechanism_tag(c.mechanism),
                c.iterations,
                STANDARD.encode(&c.salt),
                STANDARD.encode(&c.stored_key),
                STANDARD.encode(&c.server_key)
            ),
        }
    }

    /// The SCRAM credential for `mechanism`, if this entry is one.
    pub fn scram(&self, mechanism: Mechanism) -> Option<&StoredCredential> {
        match self {
            PasswordHash::Scram(c) if c.mechanism == mechanism => Some(c),
            _ => None,
        }
    }
}

/// Salt bytes `vigil passwd` writes for SCRAM entries.
const SCRAM_SALT_LEN: usize = 16;

/// The prefix of a SCRAM entry.
fn mechanism_tag(m: Mechanism) -> &'static str {
    match m {
        Mechanism::Sha256 => "$scram-sha-256$",
        Mechanism::Sha512 => "$scram-sha-512$",
    }
}

/// `$scram-sha-256$i=N$salt$StoredKey$ServerKey`; None if `text` is not a
/// SCRAM entry at all.
fn parse_scram(text: &str) -> Result<Option<StoredCredential>, HashError> {
    let Some((mechanism, rest)) = [Mechanism::Sha256, Mechanism::Sha512]
        .into_iter()
        .find_map(|m| text.strip_prefix(mechanism_tag(m)).map(|rest| (m, rest)))
    else {
        return Ok(None);
    };
    let tag = mechanism_tag(mechanism);
    let mut parts = rest.split('$');
    let (Some(iterations), Some(salt), Some(stored_key), Some(server_key), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(HashError::Malformed(
            tag,
            "expected i=iterations$salt$StoredKey$ServerKey",
        ));
    };
    let iterations: u32 = iterations
        .strip_prefix("i=")
        .and_then(|i| i.parse().ok())
        .ok_or(HashError::Malformed(tag, "expected i=iterations"))?;
    if iterations == 0 || iterations > scram::MAX_ITERATIONS {
        return Err(HashError::Malformed(tag, "iterations outside 1..=10000000"));
    }
    let salt = decode(salt, tag, "salt is not base64")?;
    if salt.is_empty() || salt.len() > 1024 {
        return Err(HashError::Malformed(tag, "salt is empty or too long"));
    }
    let stored_key = decode(stored_key, tag, "StoredKey is not base64")?;
    let server_key = decode(server_key, tag, "ServerKey is not base64")?;
    let len = mechanism.output_len();
    if stored_key.len() != len || server_key.len() != len {
        return Err(HashError::Malformed(
            tag,
            "StoredKey or ServerKey has the wrong length",
        ));
    }
    Ok(Some(StoredCredential {
        mechanism,
        salt,
        iterations,
        stored_key,
        server_key,
    }))
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    h.finalize().into()
}

fn decode(text: &str, kind: &'static str, what: &'static str) -> Result<Vec<u8>, HashError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| HashError::Malformed(kind, what))
}

fn check_lengths(salt: &[u8], hash: &[u8], kind: &'static str) -> Result<(), HashError> {
    if salt.is_empty() || salt.len() > 1024 {
        return Err(HashError::Malformed(kind, "salt is empty or too long"));
    }
    if hash.len() != HASH_LEN {
        return Err(HashError::Malformed(kind, "hash is not 64 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `mosquitto_passwd` wrote (see the fixture's header), with the
    /// password each was made from.
    const FIXTURE: &str = include_str!("../../tests/fixtures/mosquitto.passwd");

    fn line(user: &str) -> PasswordHash {
        let text = FIXTURE
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{user} in the fixture"));
        PasswordHash::parse(text).unwrap()
    }

    #[test]
    fn mosquitto_2_0_pbkdf2_lines_verify() {
        let alice = line("alice");
        assert!(
            matches!(alice, PasswordHash::Pbkdf2 { iterations: 101, ref salt, .. } if salt.len() == 12)
        );
        assert!(alice.verify(b"correct horse"));
        assert!(!alice.verify(b"correct horsE"));
        assert!(!alice.verify(b""));
        // A password with colons: only the first colon of a line separates.
        assert!(line("bob").verify(b"s3cr3t:with:colons"));
        // -I 1000
        let dave = line("dave");
        assert!(matches!(
            dave,
            PasswordHash::Pbkdf2 {
                iterations: 1000,
                ..
            }
        ));
        assert!(dave.verify(b"dave pw"));
        assert!(!dave.verify(b"alice pw"));
    }

    #[test]
    fn mosquitto_2_1_pbkdf2_parameters_verify() {
        let frank = line("frank");
        assert!(
            matches!(frank, PasswordHash::Pbkdf2 { iterations: 1000, ref salt, .. } if salt.len() == 64)
        );
        assert!(frank.verify(b"frank pw"));
        assert!(!frank.verify(b"frank pw "));
    }

    #[test]
    fn sha512_lines_verify() {
        let carol = line("carol");
        assert!(matches!(carol, PasswordHash::Sha512 { .. }));
        assert!(carol.verify(b"carol pw"));
        assert!(!carol.verify(b"carol"));
    }

    #[test]
    fn argon2id_phc_lines_verify() {
        let erin = line("erin");
        assert!(matches!(erin, PasswordHash::Argon2id(_)));
        assert!(erin.verify(b"erin pw"));
        assert!(!erin.verify(b"erin pW"));
    }

    #[test]
    fn generated_hashes_round_trip_through_their_text() {
        for kind in [HashKind::Sha512, HashKind::Sha512Pbkdf2, HashKind::Argon2id] {
            let h = PasswordHash::generate(kind, b"pw \xff", Some(3)).unwrap();
            let text = h.encode();
            let back = PasswordHash::parse(&text).unwrap();
            assert_eq!(back, h, "{text}");
            assert!(back.verify(b"pw \xff"), "{kind:?}");
            assert!(!back.verify(b"pw"), "{kind:?}");
        }
        // Two hashes of one password differ (random salt).
        let a = PasswordHash::generate(HashKind::Sha512Pbkdf2, b"x", None).unwrap();
        let b = PasswordHash::generate(HashKind::Sha512Pbkdf2, b"x", None).unwrap();
        assert_ne!(a.encode(), b.encode());
        assert!(a.encode().starts_with("$7$101$"), "{}", a.encode());
    }

    /// RFC 7677's user "user", password "pencil", salt and 4096 iterations;
    /// StoredKey and ServerKey computed independently with Python:
    /// sp = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096);
    /// ck = hmac.new(sp, b"Client Key", "sha256").digest();
    /// StoredKey = sha256(ck); ServerKey = hmac.new(sp, b"Server Key", "sha256").
    const PENCIL_256: &str = "$scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    /// The same with sha512.
    const PENCIL_512: &str = "$scram-sha-512$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$6AAub3065EYRmyFpM2RNwqK+eGnrkYuEWbXn19LsEmBqzu8QaCXNc1FwpnX9NhH2hK/60dzj9DoO5DvVkOHbvg==$jZHbYjC1aHh0/hKbxyBuGFjDrgjgKTT1esA7awWiKcRZ0o/0b1yWEebBeSVkkCFewf91nLDfKF24mvD5nmE6rA==";

    #[test]
    fn scram_entries_parse_and_verify_plain_passwords() {
        for (text, m) in [
            (PENCIL_256, Mechanism::Sha256),
            (PENCIL_512, Mechanism::Sha512),
        ] {
            let h = PasswordHash::parse(text).unwrap();
            let c = h.scram(m).expect("a SCRAM entry of its mechanism");
            assert_eq!(c.iterations, 4096);
            assert_eq!(STANDARD.encode(&c.salt), "W22ZaJ0SNY7soEsUEjb6gQ==");
            assert!(h.verify(b"pencil"), "{m:?}");
            assert!(!h.verify(b"Pencil"), "{m:?}");
            assert_eq!(h.encode(), text);
        }
        assert!(PasswordHash::parse(PENCIL_256)
            .unwrap()
            .scram(Mechanism::Sha512)
            .is_none());
        for kind in [HashKind::ScramSha256, HashKind::ScramSha512] {
            let h = PasswordHash::generate(kind, b"pw", None).unwrap();
            let text = h.encode();
            assert!(text.contains("$i=4096$"), "{text}");
            assert_eq!(PasswordHash::parse(&text).unwrap(), h);
            assert!(h.verify(b"pw"));
            assert!(!h.verify(b"pW"));
        }
        let h = PasswordHash::generate(HashKind::ScramSha256, b"pw", Some(5)).unwrap();
        assert!(h.encode().starts_with("$scram-sha-256$i=5$"));
        assert!(PasswordHash::generate(HashKind::ScramSha256, b"pw", Some(0)).is_err());
    }

    #[test]
    fn bad_hashes_are_errors_not_panics() {
        for bad in [
            "",
            "plain",
            "$5$abc$def",
            "$6$",
            "$6$c2FsdA==",
            "$6$!!$abc",
            "$6$c2FsdA==$c2hvcnQ=",
            "$7$",
            "$7$x$c2FsdA==$c2FsdA==",
            "$7$0$c2FsdA==$c2FsdA==",
            "$7$99999999999$c2FsdA==$c2FsdA==",
            "$7$101$$",
            "$argon2id$",
            "$scram-sha-256$",
            "$scram-sha-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-256$i=0$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-256$i=99999999$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-256$i=4096$$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-512$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=$x",
            "$scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ==$!!$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$argon2id$v=19$m=4096,t=2,p=1$c2FsdA",
            "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$QwZ6rKcwyvKCxf353dxIELxPUSdpLqn4czKf/25AFcU",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
