//! Credentials inside message payloads (a package server's password, an
//! `ftp://user:password@host` URL): what every output shows in their place unless
//! the user asks for them (`captures show --show-secrets`). The CONNECT's own
//! credentials are overwritten before they reach the store (`store::WriteBatch`).

use serde_json::Value;

/// What every output shows in place of a credential: in payloads here, in a
/// CONNECT's packet record (`store::PacketRecord::redacted`).
pub const REDACTED: &str = "<redacted>";

/// JSON keys whose values are credentials.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "apikey",
    "api_key",
];

/// A payload with credential values replaced by `<redacted>`: JSON keys that name a
/// credential (any depth, any case) and the `user:password@` of URLs.
pub fn redact_payload(text: &str) -> String {
    if !has_secret_hint(text) {
        return text.to_string();
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    let key = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| key.contains(s)) {
                        *x = Value::from(REDACTED);
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::String(s) => *s = redact_url(s),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => redact_keys(&redact_url(text)),
    }
}

/// In text that is not JSON: the value after each key that names a credential (a
/// quoted string, or up to the next `,` `}` or line end) → `<redacted>`.
fn redact_keys(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut cut: Vec<(usize, usize)> = vec![];
    for k in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = lower[from..].find(k) {
            let key_end = from + i + k.len();
            from = key_end;
            // The rest of the key's name and its closing quote, then `:`.
            let rest = &text[key_end..];
            let Some(colon) = rest.find(':') else { break };
            if rest[..colon].contains([',', '{', '}', '\n']) {
                continue;
            }
            let start = key_end + colon + 1;
            let value = &text[start..];
            let skip = value.len() - value.trim_start().len();
            let vstart = start + skip;
            let v = &text[vstart..];
            let vend = if let Some(body) = v.strip_prefix('"') {
                let mut esc = false;
                let close = body.char_indices().find(|&(_, c)| {
                    let end = c == '"' && !esc;
                    esc = c == '\\' && !esc;
                    end
                });
                vstart + 1 + close.map_or(body.len(), |(j, _)| j + 1)
            } else {
                vstart + v.find([',', '}', '\n']).unwrap_or(v.len())
            };
            if vend > vstart {
                cut.push((vstart, vend));
            }
        }
    }
    cut.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (a, b) in cut {
        if a < at {
            continue;
        }
        out.push_str(&text[at..a]);
        out.push_str(REDACTED);
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

/// `scheme://user:password@host` → `scheme://<redacted>@host`, anywhere in `s`.
fn redact_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str(REDACTED);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// A payload that may hold a credential: a URL, or a key naming one (any case). Most
/// payloads hold neither and are not parsed.
fn has_secret_hint(text: &str) -> bool {
    text.contains("://")
        || SECRET_KEYS.iter().any(|k| {
            text.as_bytes()
                .windows(k.len())
                .any(|w| w.eq_ignore_ascii_case(k.as_bytes()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_payloads_are_redacted() {
        let p = r#"{"type":"CMD_SYS_UPGRADE","param":{"file":{"url":"ftp://admin:s3cret@10.0.0.2/fw.bin","md5":"ab"},"Password":"x","auth":{"accessToken":"t"}}}"#;
        let r = redact_payload(p);
        assert!(!r.contains("s3cret") && !r.contains("admin:"), "{r}");
        assert!(r.contains("ftp://<redacted>@10.0.0.2/fw.bin"), "{r}");
        assert!(r.contains(r#""Password":"<redacted>""#), "{r}");
        assert!(r.contains(r#""accessToken":"<redacted>""#), "{r}");
        assert!(r.contains(r#""md5":"ab""#), "{r}");
        assert_eq!(
            redact_payload("not json http://a:b@h/x"),
            "not json http://<redacted>@h/x"
        );
        assert_eq!(redact_payload("http://host/x"), "http://host/x");
        // Not JSON (a comma missing): the keys' values are still hidden.
        let r = redact_payload(r#"{"user":"u" "Password": "p\"w", "token":12, "md5":"ab"}"#);
        assert_eq!(
            r,
            r#"{"user":"u" "Password": <redacted>, "token":<redacted>, "md5":"ab"}"#
        );
    }
}
