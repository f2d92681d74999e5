//! JWT login (`[auth.jwt]`): the token comes as the CONNECT password (or
//! user name), signed with a shared secret (HS256) or a key pair (RS256,
//! ES256); `exp` is required, checked at CONNECT and enforced while the
//! client stays connected. An optional claim carrying topic filters acts as
//! this client's ACL, as EMQX's `acl` claim does:
//! `{"acl": {"pub": [...], "sub": [...], "all": [...]}}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use vigil_proto::topic;
use vigil_proto::ReasonCode;

use super::acl::{intersects_filter, matches_topic};
use super::{Authenticator, Credentials, Login};

/// Where the token is in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenField {
    /// The password (default); the user name, if any, is the ACL's name.
    #[default]
    Password,
    /// The user name; the token's `sub` is then the ACL's name.
    Username,
}

/// Signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `secret` / `secret_file` (default).
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with `public_key_file` (PEM).
    RS256,
    /// ECDSA P-256 SHA-256 with `public_key_file` (PEM).
    ES256,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Signature algorithm (default HS256).
    pub algorithm: JwtAlgorithm,
    /// HS256 secret, in the config file itself.
    pub secret: Option<String>,
    /// HS256 secret, read from a file (trailing newline dropped); reloaded on SIGHUP.
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256 public key (PEM); reloaded on SIGHUP.
    pub public_key_file: Option<PathBuf>,
    /// Where the token is (default the password).
    pub from: TokenField,
    /// Claim holding `{"pub": [...], "sub": [...], "all": [...]}` filters
    /// that act as the client's ACL (unset: no per-token ACL).
    pub acl_claim: Option<String>,
}

/// A token's own ACL: what it lets its client publish and read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenAcl {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl TokenAcl {
    /// May the client publish to `topic`?
    pub fn may_publish(&self, topic_name: &str) -> bool {
        self.publish.iter().any(|f| matches_topic(f, topic_name))
    }

    /// May the client receive messages on `topic`?
    pub fn may_read(&self, topic_name: &str) -> bool {
        self.subscribe.iter().any(|f| matches_topic(f, topic_name))
    }

    /// May the client subscribe to `filter` (some granted filter overlaps it)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| intersects_filter(f, filter))
    }
}

/// A JWT authenticator with its key loaded.
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
    from: TokenField,
    acl_claim: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.validation.algorithms)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Loads the key `config` names.
    pub fn load(config: &JwtConfig) -> Result<JwtAuth, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let (key, algorithm) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = match (&config.secret, &config.secret_file) {
                    (Some(s), None) => s.as_bytes().to_vec(),
                    (None, Some(path)) => {
                        let mut bytes = read(path)?;
                        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            bytes.pop();
                        }
                        bytes
                    }
                    _ => {
                        return Err(
                            "auth.jwt with HS256 needs exactly one of secret and secret_file"
                                .into(),
                        )
                    }
                };
                if secret.len() < 16 {
                    return Err("auth.jwt secret is shorter than 16 bytes".into());
                }
                (DecodingKey::from_secret(&secret), Algorithm::HS256)
            }
            alg => {
                let path = config
                    .public_key_file
                    .as_ref()
                    .ok_or("auth.jwt with RS256/ES256 needs public_key_file")?;
                let pem = read(path)?;
                let parsed = if alg == JwtAlgorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem).map(|k| (k, Algorithm::RS256))
                } else {
                    DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256))
                };
                parsed.map_err(|e| format!("{}: not a {alg:?} public key: {e}", path.display()))?
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        validation.validate_aud = false;
        Ok(JwtAuth {
            key,
            validation,
            from: config.from,
            acl_claim: config.acl_claim.clone(),
        })
    }

    /// True if `text` has a JWT's shape (three dot-separated parts): with a
    /// password file beside JWT, anything else is a password.
    pub fn looks_like_token(text: &[u8]) -> bool {
        text.iter().filter(|b| **b == b'.').count() == 2 && text.len() > 10
    }

    /// The token in `c`, as the config says.
    pub fn token<'a>(&self, c: &Credentials<'a>) -> Option<&'a [u8]> {
        match self.from {
            TokenField::Password => c.password,
            TokenField::Username => c.username.map(str::as_bytes),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    sub: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, c: &Credentials<'_>) -> Result<Login, ReasonCode> {
        let token = self
            .token(c)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or(ReasonCode::BAD_USER_NAME_OR_PASSWORD)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| ReasonCode::BAD_USER_NAME_OR_PASSWORD)?;
        let claims = data.claims;
        let username = match self.from {
            TokenField::Password => c.username.map(str::to_string).or(claims.sub),
            TokenField::Username => claims.sub,
        };
        let acl = match &self.acl_claim {
            Some(name) => match claims.rest.get(name) {
                Some(value) => Some(Arc::new(
                    parse_acl(value).ok_or(ReasonCode::BAD_USER_NAME_OR_PASSWORD)?,
                )),
                None => None,
            },
            None => None,
        };
        Ok(Login {
            username,
            credential: None,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
            acl,
        })
    }

    fn still_valid(&self, login: &Login) -> bool {
        login.expires_at.is_none_or(|at| at > SystemTime::now())
    }
}

/// `{"pub": [...], "sub": [...], "all": [...]}`; None if malformed (a token
/// whose ACL cannot be read is refused, never let in with no limits).
fn parse_acl(value: &serde_json::Value) -> Option<TokenAcl> {
    let object = value.as_object()?;
    let mut acl = TokenAcl::default();
    for (key, list) in object {
        let filters: Vec<String> = list
            .as_array()?
            .iter()
            .map(|f| f.as_str().map(str::to_string))
            .collect::<Option<_>>()?;
        if filters
            .iter()
            .any(|f| topic::validate_topic_filter(f).is_err())
        {
            return None;
        }
        match key.as_str() {
            "pub" | "publish" => acl.publish.extend(filters),
            "sub" | "subscribe" => acl.subscribe.extend(filters),
            "all" => {
                acl.publish.extend(filters.iter().cloned());
                acl.subscribe.extend(filters);
            }
            _ => return None,
        }
    }
    Some(acl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "a secret of at least sixteen bytes";

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth(acl_claim: Option<&str>) -> JwtAuth {
        JwtAuth::load(&JwtConfig {
            secret: Some(SECRET.into()),
            acl_claim: acl_claim.map(Into::into),
            ..JwtConfig::default()
        })
        .unwrap()
    }

    fn creds<'a>(user: Option<&'a str>, token: &'a str) -> Credentials<'a> {
        Credentials {
            client_id: "c",
            username: user,
            password: Some(token.as_bytes()),
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn valid_expired_forged_and_exp_less_tokens() {
        let a = auth(None);
        let good = token(serde_json::json!({"sub": "dev-1", "exp": now() + 60}));
        let login = a.authenticate(&creds(None, &good)).unwrap();
        assert_eq!(login.username.as_deref(), Some("dev-1"));
        assert!(login.expires_at.is_some());
        // The CONNECT user name wins over `sub` when the token is the password.
        let login = a.authenticate(&creds(Some("u"), &good)).unwrap();
        assert_eq!(login.username.as_deref(), Some("u"));
        let expired = token(serde_json::json!({"sub": "dev-1", "exp": now() - 1}));
        assert_eq!(
            a.authenticate(&creds(None, &expired)).unwrap_err(),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let no_exp = token(serde_json::json!({"sub": "dev-1"}));
        assert!(a.authenticate(&creds(None, &no_exp)).is_err());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret, sixteen bytes+"),
        )
        .unwrap();
        assert!(a.authenticate(&creds(None, &forged)).is_err());
        assert!(a.authenticate(&creds(None, "not.a.token")).is_err());
        assert!(JwtAuth::looks_like_token(good.as_bytes()));
        assert!(!JwtAuth::looks_like_token(b"correct horse"));
    }

    #[test]
    fn the_acl_claim_is_the_clients_acl() {
        let a = auth(Some("acl"));
        let t = token(serde_json::json!({
            "exp": now() + 60,
            "acl": {"pub": ["up/%c"], "sub": ["down/#"], "all": ["both/+"]}
        }));
        let acl = a.authenticate(&creds(None, &t)).unwrap().acl.unwrap();
        assert!(acl.may_publish("up/%c"));
        assert!(acl.may_publish("both/x"));
        assert!(!acl.may_publish("down/x"));
        assert!(acl.may_read("down/x/y"));
        assert!(acl.may_read("both/x"));
        assert!(!acl.may_read("up/%c"));
        assert!(acl.may_subscribe("#"));
        assert!(!acl.may_subscribe("up/#"));
        // A malformed ACL claim refuses the login.
        let bad = token(serde_json::json!({"exp": now() + 60, "acl": {"pub": "x"}}));
        assert!(a.authenticate(&creds(None, &bad)).is_err());
        let bad = token(serde_json::json!({"exp": now() + 60, "acl": {"pub": ["a/#/b"]}}));
        assert!(a.authenticate(&creds(None, &bad)).is_err());
    }

    #[test]
    fn key_configuration_errors_are_clear() {
        let short = JwtAuth::load(&JwtConfig {
            secret: Some("short".into()),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(short.contains("16 bytes"), "{short}");
        let none = JwtAuth::load(&JwtConfig::default()).unwrap_err();
        assert!(none.contains("secret"), "{none}");
        let rsa = JwtAuth::load(&JwtConfig {
            algorithm: JwtAlgorithm::RS256,
            public_key_file: Some("/nonexistent/key.pem".into()),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(rsa.contains("/nonexistent/key.pem"), "{rsa}");
    }
}
