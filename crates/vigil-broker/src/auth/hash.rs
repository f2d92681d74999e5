//! Password hashes as Mosquitto writes them: `$7$` (PBKDF2-HMAC-SHA512),
//! `$6$` (one SHA-512 over password then salt; not crypt(3)'s sha512-crypt)
//! and `$argon2id$` in PHC form. Verification compares in constant time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

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
}

impl std::fmt::Debug for PasswordHash {
    // The hash is not the password, but it is what guessing would start from:
    // keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordHash::Sha512 { .. } => "PasswordHash::Sha512",
            PasswordHash::Pbkdf2 { .. } => "PasswordHash::Pbkdf2",
            PasswordHash::Argon2id(_) => "PasswordHash::Argon2id",
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
}

/// Why a stored hash could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    /// Not one of the known forms.
    #[error("unknown password hash format (expected $6$, $7$ or $argon2id$)")]
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
    /// `Sha512Pbkdf2` (default 101, as `mosquitto_passwd` 2.0) and is the
    /// time cost of `Argon2id` (default: the argon2 crate's, t=2, m=19 MiB).
    pub fn generate(
        kind: HashKind,
        password: &[u8],
        iterations: Option<u32>,
    ) -> Result<PasswordHash, HashError> {
        let salt: [u8; SALT_LEN] = rand::random();
        match kind {
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
        }
    }
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
            "$argon2id$v=19$m=4096,t=2,p=1$c2FsdA",
            "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$QwZ6rKcwyvKCxf353dxIELxPUSdpLqn4czKf/25AFcU",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
