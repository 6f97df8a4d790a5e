//! The shape of a document: its brackets, the kinds of its values and its member
//! names, without the scalar values: the skeleton the fast path writes as it reads
//! (`lex::tape`), and the names on the tape. Two documents of one shape have the same tokens in the same places
//! and differ only in their strings', numbers' and booleans' values, so that what a
//! check found of one that depends on no value (a member present, a type, an
//! element count, a name) holds for the other. Devices send the same report again
//! and again, and the rule engine judges a repeated shape by its values alone
//! (`rules::engine::shapes`).

use super::{Doc, Tok, Val};

/// Longest skeleton kept as a [`Shape`]: bounds the memory shapes hold.
pub const MAX_SHAPE_BYTES: usize = 16 * 1024;

/// The shape of one document (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    skel: Box<[u8]>,
    /// Where the member names are on the tape (the same places in any document
    /// of this skeleton), and the names, one after another.
    keys: Box<[u32]>,
    names: Box<str>,
}

impl Doc {
    /// Its shape; `None` for a document the fast path did not read (serde_json
    /// did), one with an escape in a member name or a name of 256 bytes or more, or
    /// one with a skeleton longer than [`MAX_SHAPE_BYTES`].
    pub fn shape(&self) -> Option<Shape> {
        if self.skel.is_empty() || self.skel.len() > MAX_SHAPE_BYTES {
            return None;
        }
        let (mut keys, mut names) = (vec![], String::new());
        for (i, t) in self.toks.iter().enumerate() {
            if let Some(k) = self.key_at(*t) {
                keys.push(i as u32);
                names.push_str(k);
            }
        }
        Some(Shape {
            skel: self.skel.as_slice().into(),
            keys: keys.into(),
            names: names.into(),
        })
    }

    /// Whether it has the shape `s`: the same skeleton (brackets, kinds, name
    /// lengths), then the same names.
    pub fn has_shape(&self, s: &Shape) -> bool {
        if self.skel.is_empty() || *self.skel != *s.skel {
            return false;
        }
        // The same skeleton: the names are at the same tokens, of the same lengths,
        // and none has an escape (a skeleton is written only then): each is in the
        // text as written.
        let (text, names) = (self.text.as_bytes(), s.names.as_bytes());
        let mut from = 0;
        for &i in s.keys.iter() {
            let Some(&Tok::Str {
                at,
                len,
                owned: false,
                key: true,
            }) = self.toks.get(i as usize)
            else {
                return false;
            };
            let (at, len) = (at as usize, len as usize);
            let (Some(k), Some(name)) = (text.get(at..at + len), names.get(from..from + len))
            else {
                return false;
            };
            if !super::same_bytes(k, name) {
                return false;
            }
            from += len;
        }
        true
    }

    /// The member name a token is, as written (not trimmed).
    fn key_at(&self, t: Tok) -> Option<&str> {
        match t {
            Tok::Str {
                at,
                len,
                owned,
                key: true,
            } => Some(self.str_at(at, len, owned)),
            _ => None,
        }
    }
}

impl<'a> Val<'a> {
    /// The value `at` tokens after this one: an offset ([`Val::index`] difference)
    /// taken in a document of the same shape.
    pub(crate) fn offset(self, at: u32) -> Val<'a> {
        self.doc.at(self.i as u32 + at)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::doc;

    #[test]
    fn a_shape_is_brackets_kinds_and_names_not_values() {
        let a = doc(r#"{"x":1,"p":{"s":"a","l":[true,null,2.5]}}"#);
        let same = doc(r#"{ "x" : 9 , "p" : {"s":"z\"z","l":[false,null,-1.0]} }"#);
        let s = a.shape().unwrap();
        assert!(same.has_shape(&s));
        for other in [
            r#"{"x":-1,"p":{"s":"a","l":[true,null,2.5]}}"#, // i64, not u64
            r#"{"x":1,"p":{"s":"a","l":[true,null,2]}}"#,    // u64, not f64
            r#"{"y":1,"p":{"s":"a","l":[true,null,2.5]}}"#,  // a name
            r#"{"x":1,"p":{"s":"a","l":[true,null]}}"#,      // an element count
            r#"{"x":1,"p":{"s":"a","l":[true,2.5,null]}}"#,  // an order
            r#"{"x":1,"p":{"s":null,"l":[true,null,2.5]}}"#, // a null
            r#"{"x":1,"p":{"sl":"a","":[true,null,2.5]}}"#,  // names cut elsewhere
            r#"{"x":1,"p":{"s":"a","l":[true,null,2.5]},"q":{}}"#,
            r#"{"x":1,"p":{"s":"a","l":[[true],null,2.5]}}"#,
            r#"{"x ":1,"p":{"s":"a","l":[true,null,2.5]}}"#, // a spaced name
        ] {
            assert!(!doc(other).has_shape(&s), "{other}");
        }
        // Brackets in names do not make two shapes one.
        let s = doc(r#"{"p":{"a":1,"}":2}}"#).shape().unwrap();
        for other in [r#"{"p":{"a":1},"}":2}"#, r#"{"p":{"a":1},"":2}"#] {
            assert!(!doc(other).has_shape(&s), "{other}");
        }
    }

    #[test]
    fn documents_serde_json_read_or_with_escaped_names_have_none() {
        // An integer beyond 64 bits: serde_json reads the document.
        assert!(doc(r#"{"x":18446744073709551616}"#).shape().is_none());
        assert!(doc(r#"{"\u0078":1}"#).shape().is_none());
        let plain = doc(r#"{"x":1}"#);
        assert!(!doc(r#"{"\u0078":1}"#).has_shape(&plain.shape().unwrap()));
    }
}
