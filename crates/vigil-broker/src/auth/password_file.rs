//! Mosquitto's password file: `user:hash` per line, `#` comments and blank
//! lines skipped. Read by the broker; edited by `vigil passwd`, which keeps
//! every other line (comments included) as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::hash::{HashError, PasswordHash};

/// Why a password file could not be used. Names the file and the line.
#[derive(Debug, Error)]
pub enum PasswordFileError {
    /// The file could not be read.
    #[error("cannot read password file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a hash vigil can verify.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the hash itself).
        message: String,
    },
}

/// A parsed password file: who may log in, and with what.
#[derive(Debug, Default, Clone)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// Verified against when the user is unknown, so that an unknown user
    /// costs the same time as a wrong password.
    decoy: Option<PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PasswordFile::parse(&text, path)
    }

    /// Parses password-file text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let mut file = PasswordFile::default();
        for (n, raw) in text.lines().enumerate() {
            let error = |message: String| PasswordFileError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                message,
            };
            let Some((user, hash)) = split_line(raw) else {
                continue;
            };
            let hash = match PasswordHash::parse(hash) {
                Ok(h) => h,
                Err(HashError::UnknownFormat) if !hash.starts_with('$') => {
                    return Err(error(format!(
                        "user {user:?} has a plain-text password; hash the file with `vigil passwd -U FILE`"
                    )))
                }
                Err(e) => return Err(error(format!("user {user:?}: {e}"))),
            };
            if file.users.contains_key(user) {
                return Err(error(format!("user {user:?} appears twice")));
            }
            if file.decoy.is_none() {
                file.decoy = Some(hash.clone());
            }
            file.users.insert(user.to_string(), hash);
        }
        Ok(file)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file names no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The stored hash of `user`.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// True if `user` exists and `password` matches. An unknown user costs
    /// one verification too (against another user's hash, result ignored).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match (self.users.get(user), &self.decoy) {
            (Some(hash), _) => hash.verify(password),
            (None, Some(decoy)) => {
                let _ = std::hint::black_box(decoy.verify(password));
                false
            }
            (None, None) => false,
        }
    }
}

/// `user` and the rest of a line, or None for comments and blank lines.
/// Only the first colon separates: passwords (in plain-text files) may hold more.
pub fn split_line(raw: &str) -> Option<(&str, &str)> {
    let line = raw.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    Some(line.split_once(':').unwrap_or((line, "")))
}

/// Password-file text being edited by `vigil passwd`: lines kept in order,
/// comments included.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PasswordFileText {
    lines: Vec<String>,
}

impl PasswordFileText {
    /// The lines of `text`.
    pub fn new(text: &str) -> PasswordFileText {
        PasswordFileText {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// Sets `user`'s hash, replacing its line or appending one.
    pub fn set(&mut self, user: &str, hash: &PasswordHash) {
        let entry = format!("{user}:{}", hash.encode());
        match self.position(user) {
            Some(i) => self.lines[i] = entry,
            None => self.lines.push(entry),
        }
    }

    /// Removes `user`'s line; false if there was none.
    pub fn delete(&mut self, user: &str) -> bool {
        match self.position(user) {
            Some(i) => {
                self.lines.remove(i);
                true
            }
            None => false,
        }
    }

    /// Replaces every plain-text password with a hash made by `hash`
    /// (`mosquitto_passwd -U`); lines already hashed are kept.
    pub fn hash_plain_text(
        &mut self,
        mut hash: impl FnMut(&[u8]) -> Result<PasswordHash, HashError>,
    ) -> Result<usize, HashError> {
        let mut changed = 0;
        for line in &mut self.lines {
            let Some((user, password)) = split_line(line) else {
                continue;
            };
            if PasswordHash::parse(password).is_ok() {
                continue;
            }
            let entry = format!("{user}:{}", hash(password.as_bytes())?.encode());
            *line = entry;
            changed += 1;
        }
        Ok(changed)
    }

    /// The text to write (one line each, newline-terminated).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    fn position(&self, user: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| split_line(l).is_some_and(|(u, _)| u == user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash::HashKind;

    const FIXTURE: &str = include_str!("../../tests/fixtures/mosquitto.passwd");

    #[test]
    fn the_mosquitto_file_loads_with_every_user() {
        let f = PasswordFile::parse(FIXTURE, Path::new("passwd")).unwrap();
        assert_eq!(f.len(), 6);
        assert!(f.verify("alice", b"correct horse"));
        assert!(f.verify("erin", b"erin pw"));
        assert!(!f.verify("alice", b"erin pw"));
        assert!(!f.verify("mallory", b"correct horse"), "unknown user");
        assert!(!f.verify("", b""));
    }

    #[test]
    fn a_bad_line_names_file_line_and_user() {
        let text = "# users\nalice:$7$101$FznXULKGdWidnSX/$ZLAZ\n";
        let err = PasswordFile::parse(text, Path::new("/etc/vigil/passwd")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/vigil/passwd:2: user \"alice\""),
            "{msg}"
        );
        assert!(
            !msg.contains("ZLAZ"),
            "the hash stays out of messages: {msg}"
        );
        let err = PasswordFile::parse("bob:hunter2\n", Path::new("p")).unwrap_err();
        assert!(err.to_string().contains("vigil passwd -U"), "{err}");
        let twice = format!(
            "{0}\n{0}\n",
            FIXTURE.lines().find(|l| l.starts_with("alice:")).unwrap()
        );
        let err = PasswordFile::parse(&twice, Path::new("p")).unwrap_err();
        assert!(err.to_string().starts_with("p:2: "), "{err}");
    }

    #[test]
    fn editing_keeps_other_lines_and_comments() {
        let mut t = PasswordFileText::new("# admins\nalice:old\n\nbob:old\n");
        let h = PasswordHash::generate(HashKind::Sha512, b"new", None).unwrap();
        t.set("bob", &h);
        t.set("carol", &h);
        assert!(t.delete("alice"));
        assert!(!t.delete("alice"));
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# admins");
        assert_eq!(lines[1], "");
        assert!(lines[2].starts_with("bob:$6$"));
        assert!(lines[3].starts_with("carol:$6$"));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn plain_text_files_are_hashed_in_place() {
        let mut t = PasswordFileText::new("# x\nalice:a:b:c\nbob:pw\n");
        let n = t
            .hash_plain_text(|pw| PasswordHash::generate(HashKind::Sha512, pw, None))
            .unwrap();
        assert_eq!(n, 2);
        let f = PasswordFile::parse(&t.render(), Path::new("p")).unwrap();
        assert!(f.verify("alice", b"a:b:c"));
        assert!(f.verify("bob", b"pw"));
    }
}
