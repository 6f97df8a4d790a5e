//! The protocol layer: topics `/v1/{edgeId}/{channel}/{role}`, the JSON envelope, and
//! the classification of each message as request, reply or report.
//!
//! Lenient by design: real implementations deviate from the text, and each deviation
//! is recorded (as a [`Deviation`]) while the message is still recognised, so that
//! pairing and sequences keep working and the rule engine reports the deviation.

use serde::Serialize;

mod envelope;
pub mod json;

pub use envelope::{
    parse_envelope, parse_envelope_into, Deviation, Envelope, PayloadError, MAX_VALIDATED_DEPTH,
    PARSE_DEPTH,
};
pub use json::{Doc, Members, Val, View};

use crate::finding::{ConnId, Side};

pub use crate::finding::Actor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Expects a reply: `request` and `command` topics.
    Request,
    /// Answers a request: `response` and `reply` topics.
    Reply,
    /// Unsolicited: `data` topics.
    Report,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Request => "request",
            Class::Reply => "reply",
            Class::Report => "report",
        }
    }
}

/// A protocol topic, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub edge_id: String,
    pub channel: String,
    pub role: String,
    pub class: Class,
    pub publisher: Actor,
    /// The topic lacks its leading slash (`v1/...`).
    pub missing_slash: bool,
    /// The edge id is a literal placeholder such as `${edgeId}`.
    pub placeholder: bool,
}

/// Role on which the reply to a request role travels, and back.
pub fn reply_role(request_role: &str) -> Option<&'static str> {
    match request_role {
        "request" => Some("response"),
        "command" => Some("reply"),
        _ => None,
    }
}

pub fn request_role(reply_role: &str) -> Option<&'static str> {
    match reply_role {
        "response" => Some("request"),
        "reply" => Some("command"),
        _ => None,
    }
}

/// Parses `/v1/{edgeId}/{channel}/{role}`; `None` for topics outside the protocol.
pub fn parse_topic(topic: &str) -> Option<Topic> {
    parse_topic_with(topic, &mut Vec::new())
}

/// [`parse_topic`], its strings made of those in `spare` while it has some (a
/// reader that recycles the topics of judged messages allocates none).
pub fn parse_topic_with(topic: &str, spare: &mut Vec<String>) -> Option<Topic> {
    let (missing_slash, rest) = match topic.strip_prefix('/') {
        Some(r) => (false, r),
        None => (true, topic),
    };
    let mut parts = rest.split('/');
    if parts.next()? != "v1" {
        return None;
    }
    let edge_id = parts.next()?;
    let channel = parts.next()?;
    let role = parts.next()?;
    if parts.next().is_some() || edge_id.is_empty() || channel.is_empty() {
        return None;
    }
    let (class, publisher) = match role {
        "request" => (Class::Request, Actor::Edge),
        "command" => (Class::Request, Actor::Platform),
        "response" => (Class::Reply, Actor::Platform),
        "reply" => (Class::Reply, Actor::Edge),
        "data" => (Class::Report, Actor::Edge),
        _ => return None,
    };
    let placeholder = is_placeholder(edge_id);
    let mut own = |s: &str| {
        let mut x = spare.pop().unwrap_or_default();
        x.clear();
        x.push_str(s);
        x
    };
    // Taken in the reverse of the order a recycled topic gives its strings back
    // (edge id, channel, role), so that each part of a repeated topic gets the
    // string it had before, long enough without growing.
    let role_s = own(role);
    let channel_s = own(channel);
    Some(Topic {
        edge_id: own(edge_id),
        channel: channel_s,
        role: role_s,
        class,
        publisher,
        missing_slash,
        placeholder,
    })
}

/// The edge id a topic of the standard's tree names even when the topic is none of
/// its topics (`/V1/E7/Device/Data`, a trailing slash, an unknown role): the
/// second level after `v1` in any case. A finding on such a topic belongs to that
/// edge, so a per-edge filter keeps it.
pub fn edge_id_named(topic: &str) -> Option<&str> {
    let rest = topic.trim_start();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let mut parts = rest.split('/');
    if !parts.next()?.eq_ignore_ascii_case("v1") {
        return None;
    }
    Some(parts.next()?).filter(|e| !e.is_empty())
}

/// The edge id is the standard's placeholder left unexpanded: `{edgeId}`, `${edgeId}`
/// or `\${edgeId}` as the text prints it, or the same form around another name
/// (`${deviceId}`). An id that merely contains `$` or braces (`E$1`, `ZB{01}`) is an
/// id: the standard does not restrict its characters.
fn is_placeholder(edge_id: &str) -> bool {
    let s = edge_id.trim_start_matches('\\');
    let s = s.strip_prefix('$').unwrap_or(s);
    let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the lenient readers need of a JSON value, from either tree: the messages'
/// (the tape, [`Val`]) and the documents replay edits (serde_json).
pub trait Scalar {
    fn u64(&self) -> Option<u64>;
    fn i64(&self) -> Option<i64>;
    fn f64(&self) -> Option<f64>;
    fn str(&self) -> Option<&str>;
    fn type_name(&self) -> &'static str;
}

impl Scalar for serde_json::Value {
    fn u64(&self) -> Option<u64> {
        self.as_u64()
    }
    fn i64(&self) -> Option<i64> {
        self.as_i64()
    }
    fn f64(&self) -> Option<f64> {
        self.as_f64()
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn type_name(&self) -> &'static str {
        use serde_json::Value;
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

impl Scalar for Val<'_> {
    fn u64(&self) -> Option<u64> {
        self.as_u64()
    }
    fn i64(&self) -> Option<i64> {
        self.as_i64()
    }
    fn f64(&self) -> Option<f64> {
        self.as_f64()
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn type_name(&self) -> &'static str {
        Val::type_name(*self)
    }
}

/// An id (mid, jobId) as an integer: tables 1, 2 and the job tables type them
/// "number", so `5.0` is the id 5, and a string of digits is read too (its type is
/// envelope.string_number's finding).
pub fn as_u64_lenient<V: Scalar>(v: &V) -> Option<u64> {
    v.u64()
        .or_else(|| whole(v.f64()?).and_then(|x| u64::try_from(x).ok()))
        .or_else(|| v.str()?.trim().parse().ok())
}

pub fn as_i64_lenient<V: Scalar>(v: &V) -> Option<i64> {
    v.i64()
        .or_else(|| whole(v.f64()?))
        .or_else(|| v.str()?.trim().parse().ok())
}

/// A float that is a whole number JSON doubles hold exactly (|x| < 2^53).
fn whole(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0).then_some(x as i64)
}

pub fn json_type_name<V: Scalar>(v: &V) -> &'static str {
    v.type_name()
}

/// Parses a timestamp into microseconds since the Unix epoch (UTC). The standard's
/// form is `yyyy-MM-dd HH:mm:ss` in China Standard Time (UTC+8); integer seconds or
/// milliseconds and ISO 8601 strings are accepted too (the schema reports them).
pub fn timestamp_us<V: Scalar>(v: &V) -> Option<i64> {
    timestamp_us_in(v, CST_OFFSET_S)
}

/// The standard's clock: China Standard Time, UTC+8 (5.3.1 "CST 时间").
pub const CST_OFFSET_S: i64 = 8 * 3600;

/// [`timestamp_us`] for a device whose clock runs `offset_s` seconds east of UTC.
pub fn timestamp_us_in<V: Scalar>(v: &V, offset_s: i64) -> Option<i64> {
    if let Some(s) = v.str() {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
            return Some((t.and_utc().timestamp() - offset_s) * 1_000_000);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Some(t.timestamp_micros());
        }
        // Local (CST) forms a device may send instead: ISO without a zone, fractions
        // of a second, slashes. Read as meant; the dialect rule reports the form.
        for form in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y/%m/%d %H:%M:%S%.f",
        ] {
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, form) {
                return Some(t.and_utc().timestamp_micros() - offset_s * 1_000_000);
            }
        }
        return None;
    }
    let x = v.i64()?;
    // Seconds until the year 5138; beyond that the number means milliseconds.
    if x.abs() < 100_000_000_000 {
        Some(x * 1_000_000)
    } else {
        Some(x * 1_000)
    }
}

/// One logical protocol message: a PUBLISH on a protocol topic, counted once even
/// when the capture holds the publisher's leg and the broker's deliveries.
#[derive(Clone, Debug)]
pub struct Message {
    /// Order of the message in the run (0-based).
    pub seq: u64,
    pub conn: ConnId,
    pub side: Side,
    pub packet: u64,
    pub time_us: i64,
    pub topic_name: String,
    pub topic: Topic,
    pub body: Result<Envelope, PayloadError>,
    /// When `body` is an error: the payload's first [`RAW_EXCERPT`] bytes and its
    /// length, so a record can show what was sent.
    pub raw: Option<RawPayload>,
    /// edgetap saw the publisher's session begin: the message is the publisher's
    /// own leg (client → server) on a connection whose CONNECT was seen. A broker
    /// delivery, or a connection joined mid-stream, tells nothing of what the
    /// publisher sent before.
    pub origin_seen: bool,
    /// A broker delivery of a retained message (retain flag on a server → client
    /// PUBLISH): history replayed at subscription, not something happening now.
    pub retained: bool,
}

/// Bytes of an unreadable payload a [`Message`] keeps.
pub const RAW_EXCERPT: usize = 256;

/// The start of a payload that is no JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPayload {
    /// The first [`RAW_EXCERPT`] bytes (a copy: the payload itself is freed).
    pub head: bytes::Bytes,
    pub len: usize,
}

impl RawPayload {
    /// The start of `payload`.
    pub fn of(payload: &[u8]) -> RawPayload {
        RawPayload {
            head: bytes::Bytes::copy_from_slice(&payload[..payload.len().min(RAW_EXCERPT)]),
            len: payload.len(),
        }
    }

    /// The bytes kept as text: valid UTF-8 as it is (control characters escaped),
    /// other bytes as `\xNN`, and how many bytes follow.
    pub fn escaped(&self) -> String {
        let mut out = String::new();
        for chunk in self.head.utf8_chunks() {
            out.push_str(&crate::finding::printable(chunk.valid()));
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        if self.len > self.head.len() {
            out.push_str(&format!("… ({} bytes in all)", self.len));
        }
        out
    }
}

impl Message {
    pub fn envelope(&self) -> Option<&Envelope> {
        self.body.as_ref().ok()
    }
    pub fn msg_type(&self) -> Option<&str> {
        self.envelope().and_then(|e| e.msg_type.as_deref())
    }
    pub fn mid(&self) -> Option<u64> {
        self.envelope().and_then(|e| e.mid)
    }
}

#[cfg(test)]
mod tests;
