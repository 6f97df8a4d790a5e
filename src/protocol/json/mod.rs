//! A parsed JSON payload as a tape: the payload bytes, and one token per value in
//! document order, strings kept as offsets into the payload.
//!
//! Why not `serde_json::Value`: every message is parsed and walked by the schema and
//! naming rules, and serde_json's tree (a `String` and a B-tree node per member) made
//! building, walking and dropping it over half of `analyze`'s time. Why not sonic-rs
//! (tried): it parses fast but its tree decodes every node on each access, and the
//! walks cost more than the parse saved. serde_json stays the reference reader (its
//! errors, with line and column, are part of the report), driven by a visitor that
//! appends tokens: on the benchmark's 903-byte REP_SYS_STATUS, 200,000 parses take
//! 1.39 s into serde_json's tree and 0.38 s into this tape, and a walk over the tape
//! reads an array in order. The tapes of the JSON devices send are built by a fast
//! path (`lex`) that gives up to serde_json on anything else (see there). Why not simd-json (tried 2026-12-07, version 0.19, AVX2): its
//! tape has our layout, but on those 903-byte payloads its two stages, the copy it
//! parses in place and the conversion to this tape cost more than serde_json's
//! visitor: `analyze` of 200,000 reports took 1.15 CPU-s against 1.00 (farm-bench, 5
//! pairs), and decimals and `-0` would have had to be read again by serde_json to
//! give the same values.

use std::fmt;

mod lex;
mod shape;

pub use shape::{Shape, MAX_SHAPE_BYTES};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Clone, Copy, Debug)]
enum Tok {
    /// `end`: index of the first token after the object; `len`: member count.
    Obj {
        end: u32,
        len: u32,
    },
    Arr {
        end: u32,
        len: u32,
    },
    /// A string (or key) at `at..at+len` of the payload, or of `side` when `owned`
    /// (strings with escapes, which serde_json hands over decoded).
    Str {
        at: u32,
        len: u32,
        owned: bool,
        /// A member name.
        key: bool,
    },
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
}

/// A parsed document (its own copy of the text, its tape and its skeleton).
#[derive(Clone)]
pub struct Doc {
    /// The payload; a document serde_json accepted is UTF-8 throughout.
    text: String,
    toks: Vec<Tok>,
    side: String,
    /// The skeleton the fast path wrote ([`Shape`]); empty when it has none.
    skel: Vec<u8>,
    /// Root keys are read trimmed (`"type "` is `type`): see `protocol::Deviation`.
    trim_root_keys: bool,
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Doc({})", self.root())
    }
}

/// The buffers of a document no longer needed, for the next one to fill: a reader
/// that parses a message after a message (`analyze`) allocates a document's text
/// and tape once, not per message (their malloc and free were a tenth of its CPU).
#[derive(Default)]
pub struct Buffers {
    text: String,
    toks: Vec<Tok>,
    side: String,
    skel: Vec<u8>,
    /// The envelope's `type`, kept apart from the document (`Envelope::msg_type`).
    ty: Option<String>,
}

impl Buffers {
    /// The buffer of a message type, if these buffers hold one.
    pub(crate) fn take_type(&mut self) -> Option<String> {
        self.ty.take()
    }

    /// Keeps a message type's buffer (a short one: a hostile long type is dropped).
    pub(crate) fn put_type(&mut self, ty: Option<String>) {
        self.ty = ty.filter(|t| t.capacity() <= 256);
    }

    /// Buffers larger than this are dropped, not kept for another document: a
    /// framer keeps at most 512 (8 MiB), a judge 256.
    const KEEP_BYTES: usize = 16 * 1024;

    /// The bytes they hold, about.
    fn bytes(&self) -> usize {
        self.text.capacity()
            + self.toks.capacity() * std::mem::size_of::<Tok>()
            + self.side.capacity()
            + self.skel.capacity()
    }
}

impl Doc {
    /// Parses `payload`; the error is serde_json's, with line and column.
    pub fn parse(payload: bytes::Bytes) -> Result<Doc, serde_json::Error> {
        Doc::parse_into(&payload, Buffers::default())
    }

    /// [`Doc::parse`] into the buffers of an earlier document ([`Doc::into_buffers`]).
    pub fn parse_into(payload: &[u8], bufs: Buffers) -> Result<Doc, serde_json::Error> {
        // UTF-8 is checked once for the whole payload (fast), so that the lexer reads
        // text and checks no string again. A payload that is not UTF-8 is read as
        // bytes, for serde_json's own error with its position.
        let text = match simdutf8::basic::from_utf8(payload) {
            Ok(t) => t,
            Err(_) => {
                let e = serde_json::from_slice::<serde_json::Value>(payload)
                    .err()
                    .unwrap_or_else(|| serde::de::Error::custom("payload is not UTF-8"));
                return Err(e);
            }
        };
        let Buffers {
            text: mut own,
            mut toks,
            mut side,
            mut skel,
            ty: _,
        } = bufs;
        own.clear();
        toks.clear();
        side.clear();
        skel.clear();
        own.push_str(text);
        // About one token per 7 bytes of the devices' JSON: one allocation, no
        // regrowth. The skeleton is never longer than the text.
        toks.reserve(payload.len() / 6 + 8);
        skel.reserve(text.len());
        if lex::tape(text, &mut toks, &mut side, &mut skel).is_err() {
            toks.clear();
            side.clear();
            skel.clear();
            serde_tape(text, &mut toks, &mut side)?;
        }
        Ok(Doc {
            text: own,
            toks,
            side,
            skel,
            trim_root_keys: false,
        })
    }

    /// Its buffers, for [`Doc::parse_into`]; `None` when they are too large to keep.
    pub fn into_buffers(self) -> Option<Buffers> {
        let b = Buffers {
            text: self.text,
            toks: self.toks,
            side: self.side,
            skel: self.skel,
            ty: None,
        };
        (b.bytes() <= Buffers::KEEP_BYTES).then_some(b)
    }

    /// The JSON text as received (the tolerated edges cut off).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn root(&self) -> Val<'_> {
        Val { doc: self, i: 0 }
    }

    /// The value at token `i`, an index [`Val::index`] gave for this document.
    pub(crate) fn at(&self, i: u32) -> Val<'_> {
        debug_assert!((i as usize) < self.toks.len());
        Val {
            doc: self,
            i: i as usize,
        }
    }

    pub(crate) fn set_trim_root_keys(&mut self, on: bool) {
        self.trim_root_keys = on;
    }

    fn str_at(&self, at: u32, len: u32, owned: bool) -> &str {
        let (at, len) = (at as usize, len as usize);
        if owned {
            &self.side[at..at + len]
        } else {
            self.text.get(at..at + len).unwrap_or_default()
        }
    }

    /// Every member name of the document, at any depth, in document order: one pass
    /// over the tape, no tree walk. (Root names read trimmed as [`Members`] reads
    /// them, when the envelope had names with surrounding whitespace.)
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.toks.iter().filter_map(move |t| match *t {
            Tok::Str {
                at,
                len,
                owned,
                key: true,
            } => {
                let k = self.str_at(at, len, owned);
                Some(if self.trim_root_keys { k.trim() } else { k })
            }
            _ => None,
        })
    }

    /// Index of the token after the value at `i`.
    fn skip(&self, i: usize) -> usize {
        match self.toks[i] {
            Tok::Obj { end, .. } | Tok::Arr { end, .. } => end as usize,
            _ => i + 1,
        }
    }
}

/// The tape through serde_json's visitor: the reading of every document the fast
/// path declines, and the one that gives errors.
fn serde_tape(text: &str, toks: &mut Vec<Tok>, side: &mut String) -> Result<(), serde_json::Error> {
    let mut d = serde_json::Deserializer::from_str(text);
    let mut b = Builder {
        base: text.as_ptr() as usize,
        key: false,
        toks,
        side,
    };
    d.deserialize_any(Value(&mut b))?;
    d.end()
}

/// Panics unless the fast path and serde_json read `text` alike: where the fast path
/// accepts a document, serde_json accepts it with the same tokens (floats to the
/// bit) and the same decoded strings. For `fuzzcheck::json_tape`.
pub(crate) fn check_fast_path(text: &str) {
    let (mut toks, mut side, mut skel) = (vec![], String::new(), vec![]);
    if lex::tape(text, &mut toks, &mut side, &mut skel).is_err() {
        return;
    }
    let (mut want, mut want_side) = (vec![], String::new());
    if let Err(e) = serde_tape(text, &mut want, &mut want_side) {
        panic!("the fast path accepted what serde_json refuses ({e}): {text:?}");
    }
    let bits = |t: &Tok| match *t {
        Tok::F64(x) => format!("F64({:#x})", x.to_bits()),
        t => format!("{t:?}"),
    };
    let a: Vec<String> = toks.iter().map(bits).collect();
    let b: Vec<String> = want.iter().map(bits).collect();
    assert_eq!(a, b, "tokens differ for {text:?}");
    assert_eq!(side, want_side, "decoded strings differ for {text:?}");
}

/// One value of a document.
#[derive(Clone, Copy)]
pub struct Val<'a> {
    doc: &'a Doc,
    i: usize,
}

/// A value's kind, with what it holds.
pub enum View<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Arr(Items<'a>),
    Obj(Members<'a>),
}

impl<'a> Val<'a> {
    /// Its token's index in the document, for [`Doc::at`].
    pub(crate) fn index(self) -> u32 {
        self.i as u32
    }

    pub fn view(self) -> View<'a> {
        match self.doc.toks[self.i] {
            Tok::Null => View::Null,
            Tok::Bool(b) => View::Bool(b),
            Tok::U64(x) => View::U64(x),
            Tok::I64(x) => View::I64(x),
            Tok::F64(x) => View::F64(x),
            Tok::Str { at, len, owned, .. } => View::Str(self.doc.str_at(at, len, owned)),
            Tok::Arr { end, len } => View::Arr(Items {
                doc: self.doc,
                i: self.i + 1,
                end: end as usize,
                len: len as usize,
            }),
            Tok::Obj { end, len } => View::Obj(Members {
                doc: self.doc,
                i: self.i + 1,
                end: end as usize,
                len: len as usize,
                trim: self.i == 0 && self.doc.trim_root_keys,
            }),
        }
    }

    pub fn is_null(self) -> bool {
        matches!(self.doc.toks[self.i], Tok::Null)
    }
    pub fn is_number(self) -> bool {
        matches!(
            self.doc.toks[self.i],
            Tok::U64(_) | Tok::I64(_) | Tok::F64(_)
        )
    }
    pub fn is_object(self) -> bool {
        matches!(self.doc.toks[self.i], Tok::Obj { .. })
    }
    pub fn as_str(self) -> Option<&'a str> {
        match self.view() {
            View::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_u64(self) -> Option<u64> {
        match self.doc.toks[self.i] {
            Tok::U64(x) => Some(x),
            Tok::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }
    pub fn as_i64(self) -> Option<i64> {
        match self.doc.toks[self.i] {
            Tok::U64(x) => i64::try_from(x).ok(),
            Tok::I64(x) => Some(x),
            _ => None,
        }
    }
    pub fn as_f64(self) -> Option<f64> {
        match self.doc.toks[self.i] {
            Tok::U64(x) => Some(x as f64),
            Tok::I64(x) => Some(x as f64),
            Tok::F64(x) => Some(x),
            _ => None,
        }
    }
    pub fn as_object(self) -> Option<Members<'a>> {
        match self.view() {
            View::Obj(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_array(self) -> Option<Items<'a>> {
        match self.view() {
            View::Arr(a) => Some(a),
            _ => None,
        }
    }
    /// The member `key` of an object (the last one, if repeated, as serde_json reads it).
    pub fn get(self, key: &str) -> Option<Val<'a>> {
        self.as_object()?.get(key)
    }

    pub fn type_name(self) -> &'static str {
        match self.doc.toks[self.i] {
            Tok::Null => "null",
            Tok::Bool(_) => "boolean",
            Tok::U64(_) | Tok::I64(_) | Tok::F64(_) => "number",
            Tok::Str { .. } => "string",
            Tok::Arr { .. } => "array",
            Tok::Obj { .. } => "object",
        }
    }

    /// The value as a serde_json tree, for code that edits or compares documents.
    pub fn to_serde(self) -> serde_json::Value {
        use serde_json::Value;
        match self.view() {
            View::Null => Value::Null,
            View::Bool(b) => Value::Bool(b),
            View::U64(x) => Value::from(x),
            View::I64(x) => Value::from(x),
            View::F64(x) => Value::from(x),
            View::Str(s) => Value::from(s),
            View::Arr(a) => Value::Array(a.map(Val::to_serde).collect()),
            View::Obj(m) => Value::Object(m.map(|(k, v)| (k.to_string(), v.to_serde())).collect()),
        }
    }
}

impl fmt::Display for Val<'_> {
    /// Compact JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_serde())
    }
}

/// The members of an object, in document order.
#[derive(Clone, Copy)]
pub struct Members<'a> {
    doc: &'a Doc,
    i: usize,
    end: usize,
    len: usize,
    trim: bool,
}

impl<'a> Members<'a> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn get(self, key: &str) -> Option<Val<'a>> {
        self.filter(|(k, _)| same_name(k, key))
            .last()
            .map(|(_, v)| v)
    }

    /// The value at token `i` of their document ([`Val::index`]).
    pub(crate) fn at(&self, i: u32) -> Val<'a> {
        self.doc.at(i)
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Val<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.end {
            return None;
        }
        let Tok::Str { at, len, owned, .. } = self.doc.toks[self.i] else {
            return None;
        };
        let mut key = self.doc.str_at(at, len, owned);
        if self.trim {
            key = key.trim();
        }
        let v = Val {
            doc: self.doc,
            i: self.i + 1,
        };
        self.i = self.doc.skip(self.i + 1);
        Some((key, v))
    }
}

/// The elements of an array.
#[derive(Clone, Copy)]
pub struct Items<'a> {
    doc: &'a Doc,
    i: usize,
    end: usize,
    len: usize,
}

impl Items<'_> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Val<'a>;
    fn next(&mut self) -> Option<Val<'a>> {
        if self.i >= self.end {
            return None;
        }
        let v = Val {
            doc: self.doc,
            i: self.i,
        };
        self.i = self.doc.skip(self.i);
        Some(v)
    }
}

/// Equality of two short strings such as field names, compared in place: a call to
/// the library's compare costs more than the comparison of a few bytes.
pub fn same_name(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_name`] of bytes.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Whole words, the last one overlapping the one before: no byte-by-byte tail.
    let w8 = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
    };
    let w4 = |s: &[u8], i: usize| {
        s.get(i..i + 4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap_or([0; 4])))
    };
    match n {
        0..=3 => a == b,
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if w8(a, i) != w8(b, i) {
                    return false;
                }
                i += 8;
            }
            w8(a, n - 8) == w8(b, n - 8)
        }
    }
}

/// Appends the tokens of one document; serde_json drives it.
struct Builder<'p> {
    base: usize,
    /// The next string is a member name.
    key: bool,
    toks: &'p mut Vec<Tok>,
    side: &'p mut String,
}

impl Builder<'_> {
    fn string(&mut self, s: &str, borrowed: bool) {
        let key = std::mem::take(&mut self.key);
        let tok = if borrowed {
            Tok::Str {
                at: (s.as_ptr() as usize - self.base) as u32,
                len: s.len() as u32,
                owned: false,
                key,
            }
        } else {
            let at = self.side.len() as u32;
            self.side.push_str(s);
            Tok::Str {
                at,
                len: s.len() as u32,
                owned: true,
                key,
            }
        };
        self.toks.push(tok);
    }
}

struct Value<'a, 'p>(&'a mut Builder<'p>);
struct Key<'a, 'p>(&'a mut Builder<'p>);

impl<'de> DeserializeSeed<'de> for Value<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.key = true;
        d.deserialize_str(Value(self.0))
    }
}

impl<'de> Visitor<'de> for Value<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.toks.push(Tok::Null);
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.0.toks.push(Tok::Bool(b));
        Ok(())
    }
    fn visit_i64<E>(self, x: i64) -> Result<(), E> {
        self.0.toks.push(Tok::I64(x));
        Ok(())
    }
    fn visit_u64<E>(self, x: u64) -> Result<(), E> {
        self.0.toks.push(Tok::U64(x));
        Ok(())
    }
    fn visit_f64<E>(self, x: f64) -> Result<(), E> {
        self.0.toks.push(Tok::F64(x));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        self.0.string(s, true);
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.string(s, false);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let at = self.0.toks.len();
        self.0.toks.push(Tok::Null);
        let mut len = 0u32;
        while let Some(()) = a.next_element_seed(Value(&mut *self.0))? {
            len += 1;
        }
        let end = self.0.toks.len() as u32;
        self.0.toks[at] = Tok::Arr { end, len };
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let at = self.0.toks.len();
        self.0.toks.push(Tok::Null);
        let mut len = 0u32;
        while let Some(()) = a.next_key_seed(Key(&mut *self.0))? {
            a.next_value_seed(Value(&mut *self.0))?;
            len += 1;
        }
        let end = self.0.toks.len() as u32;
        self.0.toks[at] = Tok::Obj { end, len };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document of `s` (also for `shape`'s tests).
    pub(super) fn doc(s: &str) -> Doc {
        Doc::parse(bytes::Bytes::from(s.to_string())).unwrap()
    }

    #[test]
    fn round_trips_through_serde_json() {
        let text = r#"{"a":[1,-2,3.5,"x\"y",true,null,{}],"b":{"c":[]},"mid":9007199254740993}"#;
        let d = doc(text);
        let want: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(d.root().to_serde(), want);
        assert_eq!(
            d.root().get("mid").unwrap().as_u64(),
            Some(9_007_199_254_740_993)
        );
        let a = d.root().get("a").unwrap().as_array().unwrap();
        assert_eq!(a.len(), 7);
        assert_eq!(a.clone().nth(3).unwrap().as_str(), Some("x\"y"));
        assert!(d
            .root()
            .get("b")
            .unwrap()
            .get("c")
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty());
        assert!(d.root().get("zz").is_none());
    }

    #[test]
    fn a_document_parsed_into_reused_buffers_is_the_fresh_one() {
        let first = doc(r#"{"a\u0041":"x\ny","l":[1,2,3,{"z":null}],"t":"long text here"}"#);
        let bufs = first.into_buffers().expect("small buffers are kept");
        let text = r#"{"b":[true],"c":"d"}"#;
        let again = Doc::parse_into(text.as_bytes(), bufs).unwrap();
        let fresh = doc(text);
        assert_eq!(again.root().to_serde(), fresh.root().to_serde());
        assert_eq!(again.text(), fresh.text());
        assert_eq!(again.shape(), fresh.shape());
        assert_eq!(again.keys().collect::<Vec<_>>(), ["b", "c"]);
        // Large buffers are not kept.
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(Buffers::KEEP_BYTES));
        assert!(doc(&big).into_buffers().is_none());
    }

    #[test]
    fn utf8_is_judged_as_std_judges_it_at_every_place_of_a_long_payload() {
        // Long enough for the vector path of the UTF-8 check (64 bytes and more),
        // each sequence at every offset across a block boundary.
        let bad: [&[u8]; 6] = [
            b"\xff",             // never in UTF-8
            b"\xc0\xaf",         // overlong
            b"\xed\xa0\x80",     // a surrogate
            b"\xf4\x90\x80\x80", // beyond U+10FFFF
            b"\xe4\xb8",         // cut short
            b"\x80",             // a lone continuation byte
        ];
        // Two CJK characters (3 bytes each) and a 4-byte character.
        let good: [&[u8]; 2] = ["\u{4e2d}\u{6587}".as_bytes(), "\u{1d11e}".as_bytes()];
        for (seq, valid) in bad
            .iter()
            .map(|s| (s, false))
            .chain(good.iter().map(|s| (s, true)))
        {
            for at in 0..80 {
                let mut p = br#"{"a":""#.to_vec();
                p.extend(std::iter::repeat(b'x').take(at));
                p.extend_from_slice(seq);
                p.extend(std::iter::repeat(b'y').take(100));
                p.extend_from_slice(br#""}"#);
                assert_eq!(std::str::from_utf8(&p).is_ok(), valid);
                let parsed = Doc::parse(bytes::Bytes::from(p));
                assert_eq!(parsed.is_ok(), valid, "{seq:x?} at {at}");
            }
        }
    }

    #[test]
    fn names_compare_equal_only_when_equal() {
        for (a, b, eq) in [
            ("", "", true),
            ("devPeriod", "devPeriod", true),
            ("devPeriod", "devPeriot", false),
            ("devPeriod", "xevPeriod", false),
            ("linkStateOfEth0", "linkStateOfEth0", true),
            ("linkStateOfEth0", "linkStateOfEth1", false),
            ("mid", "mids", false),
            ("名称", "名称", true),
            ("a", "b", false),
            ("abcd", "abce", false),
            ("abcdefg", "xbcdefg", false),
            ("abcdefgh", "abcdefgx", false),
            ("abcdefghi", "abcdefghj", false),
            ("abcdefghijklmnopq", "abcdefghijklmnopq", true),
            ("abcdefghijklmnopq", "abcdefghXjklmnopq", false),
        ] {
            assert_eq!(same_name(a, b), eq, "{a} / {b}");
        }
    }

    #[test]
    fn member_names_are_read_off_the_tape_in_order() {
        let d = doc(r#"{"a":{"b":[{"c":1},{"d":"e"}]},"f":["g"]}"#);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "b", "c", "d", "f"]);
    }

    #[test]
    fn last_duplicate_wins_and_errors_carry_position() {
        assert_eq!(
            doc(r#"{"a":1,"a":2}"#).root().get("a").unwrap().as_u64(),
            Some(2)
        );
        let e = Doc::parse(bytes::Bytes::from_static(b"{\"a\":\n }")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(Doc::parse(bytes::Bytes::from_static(b"{} x")).is_err());
    }
}
