//! The fast path of [`Doc::parse`](super::Doc::parse): one loop over the bytes that
//! appends the tape's tokens directly, for the JSON real devices send.
//!
//! Why a lexer of our own beside serde_json: the tape is built for every message,
//! and serde_json's visitor (a call per value through `deserialize_any`, a seed per
//! key) was about a quarter of `analyze`'s CPU. The crates that lex faster were
//! measured and dropped (simd-json and sonic-rs, see `json/mod.rs`). This loop
//! handles the common subset exactly as serde_json reads it and gives up
//! ([`Bail`]) on anything else: an error, a depth beyond [`MAX_DEPTH`], an integer
//! beyond 64 bits. serde_json then parses the payload as before, so its errors (with
//! line and column), its limits and its numbers stay the only ones edgetap reports.
//! Decimals are read by serde_json itself, from the number's text, so a value is
//! the same bits on either path. `fuzzcheck::json_tape` checks that both paths give
//! the same tape.

use super::Tok;

/// The fast path declined the document: serde_json decides.
#[derive(Debug)]
pub(super) struct Bail;

/// Deepest nesting the fast path reads (serde_json reads 128 levels).
pub(super) const MAX_DEPTH: usize = 64;

/// Appends the tokens of `text`, strings with escapes decoded into `side`, as the
/// serde_json visitor would, and the document's skeleton to `skel` (see
/// [`Shape`](super::Shape)): its brackets, a `:` and the length (one byte) of
/// each member name, and a letter per scalar (`s`tring, `u`64, `i`64, `f`64,
/// `b`oolean, `n`ull). It reads back one way only: in an object the next byte is
/// `}` or a name's `:`, always followed by one length byte. The names themselves are
/// compared on the tape ([`Doc::has_shape`](super::Doc::has_shape)), off this
/// thread. The skeleton is left empty when a name has an escape or 256 bytes or
/// more. `Err(Bail)` leaves all three to be cleared.
pub(super) fn tape(
    text: &str,
    toks: &mut Vec<Tok>,
    side: &mut String,
    skel: &mut Vec<u8>,
) -> Result<(), Bail> {
    let b = text.as_bytes();
    let mut lx = Lexer {
        text,
        b,
        i: 0,
        toks,
        side,
        skel,
        skel_whole: true,
    };
    // Open containers: token index (low half) and members so far (high half), and
    // a bit per level for an object (one word each: clearing them costs little).
    let mut open = [0u64; MAX_DEPTH];
    let mut objs = 0u64;
    let mut depth = 0usize;
    'value: loop {
        // A value starts here.
        lx.ws();
        match lx.peek()? {
            c @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return Err(Bail);
                }
                let obj = c == b'{';
                open[depth] = lx.toks.len() as u64;
                objs = objs & !(1 << depth) | (obj as u64) << depth;
                depth += 1;
                lx.toks.push(Tok::Null);
                lx.skel.push(c);
                lx.i += 1;
                lx.ws();
                let close = if obj { b'}' } else { b']' };
                if lx.peek()? == close {
                    lx.i += 1;
                    depth -= 1;
                    lx.close(open[depth], obj);
                } else {
                    if obj {
                        lx.key()?;
                    }
                    continue 'value;
                }
            }
            b'"' => {
                lx.string(false)?;
                lx.skel.push(b's');
            }
            b't' => lx.literal(b"true", Tok::Bool(true), b'b')?,
            b'f' => lx.literal(b"false", Tok::Bool(false), b'b')?,
            b'n' => lx.literal(b"null", Tok::Null, b'n')?,
            b'-' | b'0'..=b'9' => lx.number()?,
            _ => return Err(Bail),
        }
        // A value ended: the next member, or the end of its container(s).
        loop {
            lx.ws();
            if depth == 0 {
                if lx.i != b.len() {
                    return Err(Bail);
                }
                if !lx.skel_whole {
                    lx.skel.clear();
                }
                return Ok(());
            }
            open[depth - 1] += 1 << 32;
            let obj = objs >> (depth - 1) & 1 == 1;
            match lx.peek()? {
                b',' => {
                    lx.i += 1;
                    if obj {
                        lx.ws();
                        lx.key()?;
                    }
                    continue 'value;
                }
                b'}' if obj => {}
                b']' if !obj => {}
                _ => return Err(Bail),
            }
            lx.i += 1;
            depth -= 1;
            lx.close(open[depth], obj);
        }
    }
}

/// Length of the run of bytes at the start of `b` that need no look in a string: no
/// quote, no backslash, no control character. Eight bytes at a time (the classic
/// "has a zero byte" and "has a byte less than n" word tricks: the lowest flagged
/// byte is exact, which is the only one read), then one by one.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |x: u64| {
        let quote = x ^ (ONES * b'"' as u64);
        let slash = x ^ (ONES * b'\\' as u64);
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        (zero(quote) | zero(slash) | (x.wrapping_sub(ONES * 0x20) & !x)) & HIGH
    };
    let mut n = 0;
    while let Some(word) = b.get(n..n + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([b'"'; 8]));
        let m = special(x);
        if m != 0 {
            return n + (m.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while let Some(&c) = b.get(n) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        n += 1;
    }
    n
}

struct Lexer<'a, 'p> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    toks: &'p mut Vec<Tok>,
    side: &'p mut String,
    skel: &'p mut Vec<u8>,
    /// No member name so far had an escape.
    skel_whole: bool,
}

impl Lexer<'_, '_> {
    #[inline]
    fn peek(&self) -> Result<u8, Bail> {
        self.b.get(self.i).copied().ok_or(Bail)
    }

    /// JSON whitespace (what serde_json skips).
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    /// Closes the container whose `open` word (token index, member count) is `at_len`.
    fn close(&mut self, at_len: u64, obj: bool) {
        let (at, len) = (at_len as u32, (at_len >> 32) as u32);
        self.skel.push(if obj { b'}' } else { b']' });
        let end = self.toks.len() as u32;
        self.toks[at as usize] = if obj {
            Tok::Obj { end, len }
        } else {
            Tok::Arr { end, len }
        };
    }

    /// A member name and its colon.
    #[inline]
    fn key(&mut self) -> Result<(), Bail> {
        if self.peek()? != b'"' {
            return Err(Bail);
        }
        match self.string(true)? {
            Some(len) if len < 256 => {
                self.skel.push(b':');
                self.skel.push(len as u8);
            }
            _ => self.skel_whole = false,
        }
        self.ws();
        if self.peek()? != b':' {
            return Err(Bail);
        }
        self.i += 1;
        Ok(())
    }

    #[inline]
    fn literal(&mut self, word: &[u8], tok: Tok, letter: u8) -> Result<(), Bail> {
        if !self.b[self.i..].starts_with(word) {
            return Err(Bail);
        }
        self.i += word.len();
        self.toks.push(tok);
        self.skel.push(letter);
        Ok(())
    }

    /// A string at the opening quote: borrowed when it has no escape, as serde_json
    /// hands it over (then `Some(its length)`), else decoded into `side` (`None`).
    #[inline]
    fn string(&mut self, key: bool) -> Result<Option<u32>, Bail> {
        let start = self.i + 1;
        let j = start + plain_run(&self.b[start..]);
        // The run stops at the first quote, backslash or control byte.
        match *self.b.get(j).ok_or(Bail)? {
            b'"' => {
                let len = (j - start) as u32;
                self.toks.push(Tok::Str {
                    at: start as u32,
                    len,
                    owned: false,
                    key,
                });
                self.i = j + 1;
                Ok(Some(len))
            }
            b'\\' => self.escaped(start, j, key).map(|()| None),
            _ => Err(Bail),
        }
    }

    /// The rest of a string with an escape at `j` (it began at `start`).
    #[cold]
    fn escaped(&mut self, start: usize, mut j: usize, key: bool) -> Result<(), Bail> {
        // Escapes: the decoded text goes to the side buffer.
        let at = self.side.len();
        let text = self.text;
        let mut run = start; // start of the unescaped run being copied
        loop {
            match *self.b.get(j).ok_or(Bail)? {
                b'"' => {
                    self.side.push_str(text.get(run..j).ok_or(Bail)?);
                    self.toks.push(Tok::Str {
                        at: at as u32,
                        len: (self.side.len() - at) as u32,
                        owned: true,
                        key,
                    });
                    self.i = j + 1;
                    return Ok(());
                }
                b'\\' => {
                    self.side.push_str(text.get(run..j).ok_or(Bail)?);
                    let c = match *self.b.get(j + 1).ok_or(Bail)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\x08',
                        b'f' => '\x0c',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let (c, used) = self.unicode(j + 2)?;
                            j += used;
                            c
                        }
                        _ => return Err(Bail),
                    };
                    self.side.push(c);
                    j += 2;
                    run = j;
                }
                c if c < 0x20 => return Err(Bail),
                _ => j += 1,
            }
        }
    }

    /// The character of `\uXXXX` whose first hex digit is at `at` (with the
    /// `\uXXXX` of its low surrogate), and the bytes read past `\u`. A lone
    /// surrogate gives up: serde_json refuses it.
    fn unicode(&self, at: usize) -> Result<(char, usize), Bail> {
        let hi = self.hex4(at)?;
        if (0xDC00..0xE000).contains(&hi) {
            return Err(Bail);
        }
        if !(0xD800..0xDC00).contains(&hi) {
            return Ok((char::from_u32(hi).ok_or(Bail)?, 4));
        }
        if self.b.get(at + 4) != Some(&b'\\') || self.b.get(at + 5) != Some(&b'u') {
            return Err(Bail);
        }
        let lo = self.hex4(at + 6)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Err(Bail);
        }
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        Ok((char::from_u32(c).ok_or(Bail)?, 10))
    }

    fn hex4(&self, at: usize) -> Result<u32, Bail> {
        let digits = self.b.get(at..at + 4).ok_or(Bail)?;
        let mut x = 0u32;
        for &d in digits {
            x = x * 16 + (d as char).to_digit(16).ok_or(Bail)?;
        }
        Ok(x)
    }

    /// A number: integers as serde_json reads them (`u64`, negative `i64`, `-0` as a
    /// float); a decimal or exponent read by serde_json from the number's text.
    fn number(&mut self) -> Result<(), Bail> {
        let start = self.i;
        let neg = self.b[start] == b'-';
        let mut j = start + neg as usize;
        let first = *self.b.get(j).ok_or(Bail)?;
        if !first.is_ascii_digit() {
            return Err(Bail);
        }
        let mut x: u64 = 0;
        if first == b'0' {
            j += 1;
            if let Some(b'0'..=b'9') = self.b.get(j) {
                return Err(Bail); // a leading zero
            }
        } else {
            while let Some(&d @ b'0'..=b'9') = self.b.get(j) {
                x = x
                    .checked_mul(10)
                    .and_then(|x| x.checked_add((d - b'0') as u64))
                    .ok_or(Bail)?;
                j += 1;
            }
        }
        if let Some(b'.' | b'e' | b'E') = self.b.get(j) {
            j += 1;
            while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.b.get(j) {
                j += 1;
            }
            let x: f64 =
                serde_json::from_str(self.text.get(start..j).ok_or(Bail)?).map_err(|_| Bail)?;
            self.toks.push(Tok::F64(x));
            self.skel.push(b'f');
            self.i = j;
            return Ok(());
        }
        let (tok, letter) = if !neg {
            (Tok::U64(x), b'u')
        } else {
            // serde_json's reading: a negative beyond i64, and -0, become floats.
            let n = (x as i64).wrapping_neg();
            if n >= 0 {
                (Tok::F64(-(x as f64)), b'f')
            } else {
                (Tok::I64(n), b'i')
            }
        };
        self.toks.push(tok);
        self.skel.push(letter);
        self.i = j;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(text: &str) -> bool {
        let (mut toks, mut side, mut skel) = (vec![], String::new(), vec![]);
        tape(text, &mut toks, &mut side, &mut skel).is_ok()
    }

    #[test]
    fn reads_what_devices_send_as_serde_json_does() {
        for text in [
            r#"{"mid":1000000000020000,"type":"REP_SYS_STATUS","param":{"cpuRate":12,"memUsed":{"phy":41},"linkState":[{"name":"eth0","status":"up"}]}}"#,
            " {\n\t\"a\" : [ 1 , -2 , 3.5 , 1e3 , -0 , -0.0 , 0 , true , false , null , { } , [ ] ] } \r\n",
            r#"{"s":"a\"b\\c\/d\b\f\n\r\t\u0041\u4e2d\ud83d\ude00","k\u0020":"名称"}"#,
            r#"{"big":18446744073709551615,"min":-9223372036854775808,"beyond":-9223372036854775809}"#,
            r#"[{"a":{"b":{"c":[[[]]]}}}]"#,
            r#""just a string""#,
            "42",
        ] {
            assert!(fast(text), "the fast path declined {text}");
            crate::protocol::json::check_fast_path(text);
        }
    }

    #[test]
    fn plain_runs_stop_at_the_first_byte_a_string_must_look_at() {
        for (text, n) in [
            ("", 0),
            ("abc", 3),
            ("abcdefgh", 8),
            ("abcdefghijk\"", 11),
            ("abcdefg\\h", 7),
            ("名称名称\"", 12),
            ("\x1fabc", 0),
            ("abcdefgh\x7f\x20\"", 10),
            ("a\"bcdefgh\"", 1),
        ] {
            assert_eq!(plain_run(text.as_bytes()), n, "{text:?}");
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_read_so_serde_json_decides() {
        for text in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "[1,]",
            "01",
            "-",
            "1.",
            "1e",
            "18446744073709551616",
            "1e400",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\x\"",
            "\"a\u{1}b\"",
            "tru",
            "nul",
            "{} x",
            "{}}",
            "[}",
            &"[".repeat(MAX_DEPTH + 1),
        ] {
            assert!(!fast(text), "the fast path read {text:?}");
            crate::protocol::json::check_fast_path(text);
        }
        // Deep but within the limit: read.
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(fast(&deep));
    }
}
