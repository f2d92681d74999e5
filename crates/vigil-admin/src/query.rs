//! Percent-decoding of paths and query strings: the few lines of
//! `application/x-www-form-urlencoded` the admin API needs.

/// A query string or path segment that is not valid percent-encoded UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEncoding;

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`).
pub(crate) fn decode(s: &str, plus_is_space: bool) -> Result<String, BadEncoding> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BadEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| BadEncoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BadEncoding)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BadEncoding)
}

/// The `key=value` pairs of a query string, decoded; Err names the bad key.
pub(crate) fn pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let key = decode(k, true).map_err(|_| k.to_owned())?;
            let value = decode(v, true).map_err(|_| key.clone())?;
            Ok((key, value))
        })
        .collect()
}

/// Encodes a path segment (for URLs `vigil ctl` builds and tests).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_refuses_broken_ones() {
        assert_eq!(decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(decode("a+b", true).unwrap(), "a b");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("%zz", false), Err(BadEncoding));
        assert_eq!(decode("%4", false), Err(BadEncoding));
        assert_eq!(decode("%ff", false), Err(BadEncoding));
        assert_eq!(
            decode(&encode_segment("dev/7 ü"), false).unwrap(),
            "dev/7 ü"
        );
        assert_eq!(
            pairs("a=1&b=&c").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(pairs("ok=1&bad=%G1"), Err("bad".to_owned()));
    }
}
