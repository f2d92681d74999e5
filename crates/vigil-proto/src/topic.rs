//! Topic names and topic filters: validation, matching, and shared
//! subscription parsing (`$share/{group}/{filter}`).

use thiserror::Error;

/// Which topic rule a name or filter breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Zero-length topic.
    #[error("topic is empty")]
    Empty,
    /// Longer than a two-byte length allows.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000.
    #[error("topic contains U+0000")]
    NullCharacter,
    /// A topic name with `+` or `#`.
    #[error("wildcards are not allowed in a topic name")]
    WildcardInName,
    /// `+` that is not a whole level.
    #[error("'+' must occupy a whole topic level")]
    BadSingleLevelWildcard,
    /// `#` that is not a whole, last level.
    #[error("'#' must be the last level and occupy it whole")]
    BadMultiLevelWildcard,
    /// `$share/` with an empty or wildcard group name.
    #[error("shared subscription group name is empty or contains '+', '#' or '/'")]
    BadShareGroup,
    /// `$share/{group}` without a filter.
    #[error("shared subscription has no topic filter")]
    EmptyShareFilter,
}

impl TopicError {
    /// The rule as a static string, for `DecodeError::InvalidTopic`.
    pub fn rule(self) -> &'static str {
        match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than 65535 bytes",
            TopicError::NullCharacter => "topic contains U+0000",
            TopicError::WildcardInName => "wildcards are not allowed in a topic name",
            TopicError::BadSingleLevelWildcard => "'+' must occupy a whole topic level",
            TopicError::BadMultiLevelWildcard => "'#' must be the last level and occupy it whole",
            TopicError::BadShareGroup => "shared subscription group name is invalid",
            TopicError::EmptyShareFilter => "shared subscription has no topic filter",
        }
    }
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name (what PUBLISH carries): no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (what SUBSCRIBE carries), not counting `$share/`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('+') && level != "+" {
            return Err(TopicError::BadSingleLevelWildcard);
        }
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::BadMultiLevelWildcard);
        }
    }
    Ok(())
}

/// Whether `filter` matches `topic`. A filter starting with a wildcard does
/// not match a topic starting with `$` (MQTT-4.7.2-1); `a/#` also matches `a`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A parsed `$share/{group}/{filter}` subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share group name.
    pub group: &'a str,
    /// The topic filter the group subscribes to.
    pub filter: &'a str,
}

impl<'a> SharedFilter<'a> {
    /// `Ok(None)` for an ordinary filter; `Ok(Some)` for a valid shared one.
    pub fn parse(filter: &'a str) -> Result<Option<SharedFilter<'a>>, TopicError> {
        let Some(rest) = filter.strip_prefix("$share/") else {
            return Ok(None);
        };
        let (group, inner) = rest.split_once('/').ok_or(TopicError::EmptyShareFilter)?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::BadShareGroup);
        }
        if inner.is_empty() {
            return Err(TopicError::EmptyShareFilter);
        }
        validate_topic_filter(inner)?;
        Ok(Some(SharedFilter {
            group,
            filter: inner,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic_name("a/b"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/+/c",
            "a/#",
            "+/+",
            "/+",
            "$SYS/#",
            "sport/tennis/+",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_topic_filter("a+"),
            Err(TopicError::BadSingleLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a/#/b"),
            Err(TopicError::BadMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_filter("a#"),
            Err(TopicError::BadMultiLevelWildcard)
        );
    }

    #[test]
    fn matching() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(matches("+", ""));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/+/c", "a//c"));
    }

    #[test]
    fn shared() {
        let s = SharedFilter::parse("$share/g/a/+").unwrap().unwrap();
        assert_eq!((s.group, s.filter), ("g", "a/+"));
        assert_eq!(SharedFilter::parse("a/b"), Ok(None));
        assert_eq!(
            SharedFilter::parse("$share/g"),
            Err(TopicError::EmptyShareFilter)
        );
        assert_eq!(
            SharedFilter::parse("$share//a"),
            Err(TopicError::BadShareGroup)
        );
        assert_eq!(
            SharedFilter::parse("$share/g+/a"),
            Err(TopicError::BadShareGroup)
        );
        assert_eq!(
            SharedFilter::parse("$share/g/"),
            Err(TopicError::EmptyShareFilter)
        );
        assert_eq!(
            SharedFilter::parse("$share/g/a#"),
            Err(TopicError::BadMultiLevelWildcard)
        );
    }
}
