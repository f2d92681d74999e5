//! Mosquitto's `acl_file`: `user NAME`, `topic [read|write|readwrite|deny]
//! FILTER` and `pattern [...] FILTER` (with `%c` and `%u`). Its semantics:
//! `topic` lines before the first `user` line apply to anonymous clients,
//! `pattern` lines to everyone; a deny that matches wins over any grant;
//! `$` topics match only entries that start with `$`; whatever is not
//! granted is denied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;
use vigil_proto::topic;

use super::ClientRef;

/// What an entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages on matching topics (and subscribe to them).
    Read,
    /// Publish to matching topics.
    Write,
    /// Both.
    ReadWrite,
    /// Nothing: a match denies, whatever else grants.
    Deny,
}

impl Access {
    fn grants_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn grants_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    access: Access,
    filter: String,
}

/// Why an ACL file could not be used. Names the file and the line.
#[derive(Debug, Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read ACL file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line that is not an ACL statement.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed ACL file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Entry>,
    users: HashMap<String, Vec<Entry>>,
    patterns: Vec<Entry>,
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Acl::parse(&text, path)
    }

    /// Parses ACL text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let error = |message: String| AclError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = line
                .split_once(|c: char| c.is_ascii_whitespace())
                .map_or((line, ""), |(w, r)| (w, r.trim_start()));
            match word {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name".into()));
                    }
                    acl.users.entry(rest.to_string()).or_default();
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let entry = parse_entry(rest).map_err(|m| error(format!("{word}: {m}")))?;
                    if word == "pattern" {
                        acl.patterns.push(entry);
                    } else if let Some(u) = &user {
                        acl.users.entry(u.clone()).or_default().push(entry);
                    } else {
                        acl.anonymous.push(entry);
                    }
                }
                other => {
                    return Err(error(format!(
                        "unknown statement {other:?} (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// May `client` publish to `topic`?
    pub fn may_write(&self, client: &ClientRef<'_>, topic: &str) -> bool {
        self.decide(
            client,
            |access| access.grants_write(),
            |f| matches(f, topic),
        )
    }

    /// May `client` receive a message published to `topic`?
    pub fn may_read(&self, client: &ClientRef<'_>, topic: &str) -> bool {
        self.decide(client, |access| access.grants_read(), |f| matches(f, topic))
    }

    /// May `client` subscribe to `filter`? Refused when no topic the filter
    /// matches is readable: no read grant intersects it, or one deny covers
    /// all of it. A filter partly denied is granted; each message is checked
    /// again at delivery.
    pub fn may_subscribe(&self, client: &ClientRef<'_>, filter: &str) -> bool {
        let mut granted = false;
        for (access, entry) in self.entries(client) {
            if access == Access::Deny && covers(&entry, filter) {
                return false;
            }
            if access.grants_read() && intersects(&entry, filter) {
                granted = true;
            }
        }
        granted
    }

    /// The entries that apply to `client`, patterns substituted.
    fn entries<'a>(
        &'a self,
        client: &'a ClientRef<'_>,
    ) -> impl Iterator<Item = (Access, std::borrow::Cow<'a, str>)> + 'a {
        let own = match client.username {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous[..],
        };
        own.iter()
            .map(|e| (e.access, std::borrow::Cow::Borrowed(e.filter.as_str())))
            .chain(self.patterns.iter().filter_map(move |e| {
                substitute(&e.filter, client).map(|f| (e.access, std::borrow::Cow::Owned(f)))
            }))
    }

    fn decide(
        &self,
        client: &ClientRef<'_>,
        grants: impl Fn(Access) -> bool,
        hit: impl Fn(&str) -> bool,
    ) -> bool {
        let mut granted = false;
        for (access, filter) in self.entries(client) {
            if access == Access::Deny {
                if hit(&filter) {
                    return false;
                }
            } else if !granted && grants(access) && hit(&filter) {
                granted = true;
            }
        }
        granted
    }
}

fn parse_entry(rest: &str) -> Result<Entry, String> {
    let (first, after) = rest
        .split_once(|c: char| c.is_ascii_whitespace())
        .map_or((rest, ""), |(w, r)| (w, r.trim_start()));
    let access = match first {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    // The access word is optional (readwrite); the filter is the rest of the
    // line, spaces included, as Mosquitto reads it.
    let (access, filter) = match access {
        Some(a) if !after.is_empty() => (a, after),
        _ => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("needs a topic filter".into());
    }
    topic::validate_topic_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    Ok(Entry {
        access,
        filter: filter.to_string(),
    })
}

/// `filter` with whole `%c` / `%u` levels replaced; None when the pattern
/// cannot apply (no user name, or an id containing a wildcard, which would
/// otherwise widen the grant).
fn substitute(filter: &str, client: &ClientRef<'_>) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_string());
    }
    let mut out = Vec::new();
    for level in filter.split('/') {
        let value = match level {
            "%c" => client.client_id,
            "%u" => client.username?,
            other => other,
        };
        if (level == "%c" || level == "%u") && value.contains(['+', '#']) {
            return None;
        }
        out.push(value);
    }
    Some(out.join("/"))
}

/// [`matches`], for the token ACLs of `jwt`.
pub(crate) fn matches_topic(filter: &str, topic_name: &str) -> bool {
    matches(filter, topic_name)
}

/// [`intersects`], for the token ACLs of `jwt`.
pub(crate) fn intersects_filter(a: &str, b: &str) -> bool {
    intersects(a, b)
}

/// Does `filter` match the topic name `topic_name`? `$` topics are matched
/// only by filters whose first level is not a wildcard.
fn matches(filter: &str, topic_name: &str) -> bool {
    topic::matches(filter, topic_name)
}

/// True if some topic name matches both filters.
fn intersects(a: &str, b: &str) -> bool {
    let mut la = a.split('/');
    let mut lb = b.split('/');
    let mut first = true;
    loop {
        match (la.next(), lb.next()) {
            (Some("#"), Some(x)) | (Some(x), Some("#")) => {
                return !(first && x.starts_with('$'));
            }
            (Some("#"), None) | (None, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(x)) | (Some(x), Some("+")) => {
                if first && x.starts_with('$') {
                    return false;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// True if every topic `filter` matches is matched by `by` too.
fn covers(by: &str, filter: &str) -> bool {
    let mut lb = by.split('/');
    let mut lf = filter.split('/');
    let mut first = true;
    loop {
        match (lb.next(), lf.next()) {
            // `by`'s wildcards miss `$` topics, which a filter starting with
            // a literal `$` level matches.
            (Some("#"), Some(f)) => return !(first && f.starts_with('$')),
            (Some("#"), None) => return true,
            (None, None) => return true,
            (None, Some(_)) => return false,
            (Some(_), None) => return false,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(f)) => {
                if first && f.starts_with('$') {
                    return false;
                }
            }
            (Some(_), Some("+")) => return false,
            (Some(b), Some(f)) => {
                if b != f {
                    return false;
                }
            }
        }
        first = false;
    }
}

#[cfg(test)]
mod tests;
