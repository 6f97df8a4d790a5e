//! The tolerant reading of a payload as the JSON envelope: what a lenient reader
//! drops around the JSON text, how deep it reads, and each [`Deviation`] it tolerated
//! on the way, recorded so that the rule engine reports it.

use super::json::{self, Doc, Val};
use super::{as_i64_lenient, as_u64_lenient, timestamp_us};

/// A deviation of the payload that the parser tolerated: the message is judged as
/// the sender meant it, and the deviation is reported once per connection and kind
/// (rules of kind `dialect`), so that one dialect quirk never hides every other
/// finding of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deviation {
    /// A key with surrounding whitespace, e.g. `"type "`; read as the trimmed key.
    KeyWhitespace { seen: String, key: String },
    /// A member name repeated in the envelope or its `param` (`{"mid":7,"mid":8}`):
    /// read as the last, as serde_json does; a reader that keeps the first sees
    /// another message (RFC 8259 §4: names "SHOULD be unique").
    DuplicateKey { path: String },
    /// The `type` value with surrounding whitespace (`" REP_SYS_STATUS "`, a
    /// trailing newline); read as the trimmed type.
    TypeWhitespace { seen: String },
    /// Bytes after the JSON text that JSON does not allow there (a C string's
    /// terminating NUL, other control characters); the JSON before them was read.
    TrailingBytes { seen: String },
    /// A UTF-8 byte order mark before the JSON text; read without it.
    Bom,
    /// A header number sent as a string (`"code": "200"`, `"mid": "12"`): read as
    /// the number. `field` is the envelope member.
    StringNumber { field: &'static str, seen: String },
    /// The envelope timestamp as epoch seconds/milliseconds or ISO 8601 instead of
    /// `yyyy-MM-dd HH:mm:ss`; read as the instant it names.
    TimestampForm { seen: String },
}

impl Deviation {
    /// The kind's name, as rules of kind `dialect` list it.
    pub fn kind(&self) -> &'static str {
        match self {
            Deviation::KeyWhitespace { .. } => "key_whitespace",
            Deviation::TypeWhitespace { .. } => "type_whitespace",
            Deviation::DuplicateKey { .. } => "duplicate_key",
            Deviation::TrailingBytes { .. } => "trailing_bytes",
            Deviation::Bom => "bom",
            Deviation::StringNumber { .. } => "string_number",
            Deviation::TimestampForm { .. } => "timestamp_form",
        }
    }

    /// The envelope member it concerns: a schema violation there is this deviation
    /// again, reported by the dialect rule instead.
    pub fn field(&self) -> Option<&str> {
        match self {
            Deviation::KeyWhitespace { key, .. } => Some(key),
            Deviation::TypeWhitespace { .. } => Some("type"),
            Deviation::StringNumber { field, .. } => Some(field),
            Deviation::TimestampForm { .. } => Some("timestamp"),
            Deviation::TrailingBytes { .. } | Deviation::Bom | Deviation::DuplicateKey { .. } => {
                None
            }
        }
    }

    /// What was seen, for the finding's text.
    pub fn seen(&self) -> String {
        match self {
            Deviation::KeyWhitespace { seen, .. } => format!("key \"{seen}\""),
            Deviation::TypeWhitespace { seen } => format!("type {seen:?}"),
            Deviation::DuplicateKey { path } => format!("member \"{path}\" given more than once"),
            Deviation::TrailingBytes { seen } => format!("{seen} after the JSON text"),
            Deviation::Bom => "a UTF-8 byte order mark (EF BB BF) before the JSON text".into(),
            Deviation::StringNumber { field, seen } => format!("{field} {seen} (a string)"),
            Deviation::TimestampForm { seen } => format!("timestamp {seen}"),
        }
    }

    /// How edgetap read it.
    pub fn read_as(&self) -> String {
        match self {
            Deviation::KeyWhitespace { key, .. } => format!("the key \"{key}\""),
            Deviation::TypeWhitespace { seen } => format!("{:?}", seen.trim()),
            Deviation::DuplicateKey { .. } => "the last of them".into(),
            Deviation::TrailingBytes { .. } => "the JSON text before them".into(),
            Deviation::Bom => "the JSON text after it".into(),
            Deviation::StringNumber { field, .. } => format!("the number in {field}"),
            Deviation::TimestampForm { .. } => "the instant it names".into(),
        }
    }
}

/// Splits a payload into its JSON text and what a lenient reader drops around it: a
/// leading byte order mark, trailing NULs and other control characters. Trailing
/// JSON whitespace is valid JSON and no deviation.
fn tolerated_edges(payload: &[u8]) -> (&[u8], Vec<Deviation>) {
    let mut deviations = vec![];
    let mut start = 0;
    if payload.starts_with(b"\xEF\xBB\xBF") {
        start = 3;
        deviations.push(Deviation::Bom);
    }
    let mut end = payload.len();
    while end > start
        && (payload[end - 1] == 0
            || payload[end - 1].is_ascii_whitespace()
            || payload[end - 1] < 0x20)
    {
        end -= 1;
    }
    let tail = &payload[end..];
    if tail
        .iter()
        .any(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        let shown: Vec<String> = tail.iter().take(8).map(|b| format!("{b:02X}")).collect();
        let more = if tail.len() > 8 { " …" } else { "" };
        deviations.push(Deviation::TrailingBytes {
            seen: format!("{} byte(s) {}{more}", tail.len(), shown.join(" ")),
        });
    } else {
        end = payload.len();
    }
    if deviations.is_empty() {
        (payload, deviations)
    } else {
        (&payload[start..end], deviations)
    }
}

/// The JSON envelope of a message.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub doc: Doc,
    pub msg_type: Option<String>,
    /// Exact 64-bit mid; read from a number or (a deviation) a numeric string.
    pub mid: Option<u64>,
    pub code: Option<i64>,
    pub deviations: Vec<Deviation>,
    /// Where `param`, `expire` and `timestamp` are in `doc` (the members
    /// [`Envelope::get`] would find), found in the one pass over the envelope that
    /// reads `type`, `mid` and `code`: the rules ask for them on every message.
    param: Option<u32>,
    expire: Option<u32>,
    timestamp: Option<u32>,
}

impl Envelope {
    /// The envelope object itself.
    pub fn root(&self) -> Val<'_> {
        self.doc.root()
    }

    pub fn get(&self, key: &str) -> Option<Val<'_>> {
        self.doc.root().get(key)
    }

    pub fn param(&self) -> Option<Val<'_>> {
        self.param.map(|i| self.doc.at(i))
    }

    pub fn expire(&self) -> Option<Val<'_>> {
        self.expire.map(|i| self.doc.at(i))
    }

    pub fn timestamp(&self) -> Option<Val<'_>> {
        self.timestamp.map(|i| self.doc.at(i))
    }

    /// Its buffers, for [`parse_envelope_into`]; `None` when too large to keep.
    pub fn into_buffers(self) -> Option<json::Buffers> {
        let mut b = self.doc.into_buffers()?;
        b.put_type(self.msg_type);
        Some(b)
    }

    /// The envelope as an editable serde_json document (replay, exports).
    pub fn to_serde(&self) -> serde_json::Map<String, serde_json::Value> {
        match self.root().to_serde() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// Why a payload is not an envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadError {
    /// serde_json's message, with line and column.
    InvalidJson(String),
    NotObject(&'static str),
    /// Nested deeper than the parser's limit ([`PARSE_DEPTH`] levels) and not
    /// otherwise malformed: `checked` when the whole document was validated as
    /// JSON (up to [`MAX_VALIDATED_DEPTH`] levels), false beyond. edgetap does not
    /// judge its fields.
    TooDeep {
        depth: usize,
        checked: bool,
    },
}

/// serde_json's nesting limit, which the parser keeps: a payload nested deeper is
/// read no further.
pub const PARSE_DEPTH: usize = 128;
/// Deepest nesting whose validity is still checked (on a heap-grown stack).
pub const MAX_VALIDATED_DEPTH: usize = 100_000;

/// Deepest nesting of arrays and objects in `text`, strings skipped: one pass, no
/// recursion, whatever the input.
pub(super) fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in text {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Why serde_json refused a payload that nests deeper than it reads: is it JSON
/// after all? `Ok(())` when it is.
fn validate_deep(text: &[u8]) -> Result<(), serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    serde::de::IgnoredAny::deserialize(serde_stacker::Deserializer::new(&mut de))?;
    de.end()
}

fn is_depth_error(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// serde_json's error, or [`PayloadError::TooDeep`] when the only fault is depth.
fn json_error(text: &[u8], e: serde_json::Error) -> PayloadError {
    if !is_depth_error(&e) {
        return PayloadError::InvalidJson(e.to_string());
    }
    let depth = nesting_depth(text);
    if depth > MAX_VALIDATED_DEPTH {
        return PayloadError::TooDeep {
            depth,
            checked: false,
        };
    }
    match validate_deep(text) {
        Ok(()) => PayloadError::TooDeep {
            depth,
            checked: true,
        },
        Err(e) => PayloadError::InvalidJson(e.to_string()),
    }
}

/// Parses a payload. `mid` and `code` are accepted as numbers or numeric strings
/// (the schema rules report the string form); keys with whitespace are read trimmed.
pub fn parse_envelope(payload: bytes::Bytes) -> Result<Envelope, PayloadError> {
    parse_envelope_into(payload, json::Buffers::default())
}

/// [`parse_envelope`] into the buffers of an earlier document ([`Doc::into_buffers`]).
pub fn parse_envelope_into(
    payload: bytes::Bytes,
    mut bufs: json::Buffers,
) -> Result<Envelope, PayloadError> {
    let mut type_buf = bufs.take_type();
    let (text, mut deviations) = tolerated_edges(&payload);
    let mut doc = match Doc::parse_into(text, bufs) {
        Ok(d) => d,
        Err(e) if deviations.is_empty() || is_depth_error(&e) => return Err(json_error(text, e)),
        // Not JSON even without the tolerated edges: serde_json's message about
        // the payload as sent.
        Err(e) => {
            return Err(PayloadError::InvalidJson(
                Doc::parse(payload).err().unwrap_or(e).to_string(),
            ))
        }
    };
    let root = doc.root();
    let Some(members) = root.as_object() else {
        return Err(PayloadError::NotObject(root.type_name()));
    };
    // One pass over the members: the fields every message needs, and keys with
    // surrounding whitespace ("type ", read as "type" unless a "type" is there too).
    let (mut msg_type, mut mid, mut code, mut timestamp) = (None, None, None, None);
    let mut spaced = vec![];
    let (mut param, mut expire) = (None, None);
    for (k, v) in members {
        let key = k.trim();
        if key.len() != k.len() {
            spaced.push((k, v));
            continue;
        }
        // The last of repeated names counts, as in serde_json (and `Members::get`).
        match k {
            "type" => msg_type = Some(v),
            "mid" => mid = Some(v),
            "code" => code = Some(v),
            "timestamp" => timestamp = Some(v),
            "param" => param = Some(v),
            "expire" => expire = Some(v),
            _ => {}
        }
    }
    let mut trim = !spaced.is_empty();
    for (seen, v) in spaced {
        let key = seen.trim();
        if members.clone().any(|(k, _)| k == key) {
            trim = false;
        }
        match key {
            "type" if msg_type.is_none() => msg_type = Some(v),
            "mid" if mid.is_none() => mid = Some(v),
            "code" if code.is_none() => code = Some(v),
            _ => {}
        }
        deviations.push(Deviation::KeyWhitespace {
            seen: seen.to_string(),
            key: key.to_string(),
        });
    }
    duplicate_keys(None, members, &mut deviations);
    if let Some(p) = param.and_then(|v| v.as_object()) {
        duplicate_keys(Some("param"), p, &mut deviations);
    }
    let msg_type = msg_type.and_then(|v| v.as_str()).map(|s| {
        let t = s.trim();
        if t.len() != s.len() {
            deviations.push(Deviation::TypeWhitespace {
                seen: s.to_string(),
            });
        }
        let mut own = type_buf.take().unwrap_or_default();
        own.clear();
        own.push_str(t);
        own
    });
    for (field, v) in [("mid", mid), ("code", code)] {
        if let Some(s) = v.and_then(|v| v.as_str()) {
            if s.trim().parse::<i64>().is_ok() || s.trim().parse::<u64>().is_ok() {
                deviations.push(Deviation::StringNumber {
                    field,
                    seen: format!("\"{s}\""),
                });
            }
        }
    }
    let mid = mid.and_then(|v| as_u64_lenient(&v));
    let code = code.and_then(|v| as_i64_lenient(&v));
    if let Some(ts) = timestamp {
        if timestamp_form_deviates(&ts) {
            deviations.push(Deviation::TimestampForm {
                seen: ts.to_serde().to_string(),
            });
        }
    }
    let (mut param, mut expire, mut timestamp) = (
        param.map(Val::index),
        expire.map(Val::index),
        timestamp.map(Val::index),
    );
    doc.set_trim_root_keys(trim);
    if trim {
        // Root names are read trimmed: a spaced name is found under its trimmed name
        // (the last member of each name counts).
        let root = doc.root();
        param = root.get("param").map(Val::index);
        expire = root.get("expire").map(Val::index);
        timestamp = root.get("timestamp").map(Val::index);
    }
    Ok(Envelope {
        doc,
        msg_type,
        mid,
        code,
        deviations,
        param,
        expire,
        timestamp,
    })
}

/// Names given more than once among `members` (the envelope's, or `param.x`),
/// each reported once.
fn duplicate_keys(prefix: Option<&str>, members: json::Members<'_>, out: &mut Vec<Deviation>) {
    let path = |k: &str| match prefix {
        Some(p) => format!("{p}.{k}"),
        None => k.to_string(),
    };
    if members.len() < 2 {
        return;
    }
    // A param of a few members (most): the names side by side on the stack, each
    // against the others, nothing allocated. Each repeated name is reported once, in
    // the order of its first appearance.
    if members.len() <= 16 {
        let mut names = [""; 16];
        for (slot, (k, _)) in names.iter_mut().zip(members) {
            *slot = k;
        }
        let names = &names[..members.len().min(16)];
        for (i, &k) in names.iter().enumerate() {
            let same = |x: &&str| json::same_name(x, k);
            // Later names first: only a repeated name goes on to the earlier ones.
            if names[i + 1..].iter().any(same) && !names[..i].iter().any(same) {
                out.push(Deviation::DuplicateKey { path: path(k) });
            }
        }
        return;
    }
    // Sorted names side by side: one allocation per object, no hashing.
    let mut names: Vec<&str> = members.map(|(k, _)| k).collect();
    names.sort_unstable();
    let mut last_reported = None;
    for pair in names.windows(2) {
        if pair[0] == pair[1] && last_reported != Some(pair[0]) {
            last_reported = Some(pair[0]);
            out.push(Deviation::DuplicateKey {
                path: path(pair[0]),
            });
        }
    }
}

/// A timestamp edgetap reads ([`timestamp_us`]) in a form other than the standard's
/// `yyyy-MM-dd HH:mm:ss`: epoch seconds or milliseconds, ISO 8601.
/// Checks the shape only (cheap, once per message): whether a string of the
/// standard's shape is a real date-time is the schema's `datetime` format check.
fn timestamp_form_deviates(v: &Val<'_>) -> bool {
    let standard_shape = v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        b.len() == 19
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
    });
    !standard_shape && timestamp_us(v).is_some()
}
