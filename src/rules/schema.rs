//! Validation of a JSON value against the field specs of a `schema` rule.
//!
//! Each violation names its path (`param.deviceInfos[3].nodeId`), what was expected
//! and what was seen, so a finding reads like a line of a test record.

use std::collections::BTreeMap;

use super::model::{FieldSpec, Fields, Format, JsonType};
use crate::protocol::{Members, Val, View};
use regex::Regex;

/// A path built only when a violation needs it: validating a conforming message
/// allocates nothing per field.
#[derive(Clone, Copy)]
enum PathRef<'a> {
    Root(&'a str),
    Field(&'a PathRef<'a>, &'a str),
    Index(&'a PathRef<'a>, usize),
    Items(&'a PathRef<'a>),
}

impl PathRef<'_> {
    fn render(&self) -> String {
        match self {
            PathRef::Root(s) => s.to_string(),
            PathRef::Field(p, name) => join(&p.render(), name),
            PathRef::Index(p, i) => format!("{}[{i}]", p.render()),
            PathRef::Items(p) => format!("{}[]", p.render()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub path: String,
    pub expected: String,
    pub seen: String,
}

impl Violation {
    /// "path: expected X, seen Y"
    pub fn detail(&self) -> String {
        format!(
            "{}: expected {}, seen {}",
            self.path, self.expected, self.seen
        )
    }
}

/// Validates the members of `obj` against `fields`. `prefix` is the path of `obj`.
/// `regexes` holds the compiled `pattern`s, keyed by field path (see [`lint_fields`]).
pub fn validate_object(
    prefix: &str,
    obj: Members<'_>,
    fields: &Fields,
    regexes: &BTreeMap<String, Regex>,
    spec_path: &str,
    out: &mut Vec<Violation>,
) {
    let mut w = Walk {
        regexes,
        out,
        leaves: None,
    };
    w.object(
        &PathRef::Root(prefix),
        obj,
        fields,
        &PathRef::Root(spec_path),
    )
}

/// [`validate_object`] of the object `target`, noting in `leaves` every value it
/// checked and the checks that depend on the value rather than on the document's
/// shape: what [`leaves_hold`] checks again on a document of the same shape.
pub fn validate_object_noting(
    prefix: &str,
    target: Val<'_>,
    fields: &Fields,
    regexes: &BTreeMap<String, Regex>,
    out: &mut Vec<Violation>,
    leaves: &mut Vec<Leaf>,
) {
    let Some(obj) = target.as_object() else {
        return;
    };
    let mut w = Walk {
        regexes,
        out,
        leaves: Some((target.index(), leaves)),
    };
    w.object(&PathRef::Root(prefix), obj, fields, &PathRef::Root(""))
}

/// A value a schema checked, by its token's place in the checked object, and what of
/// its spec depends on the value itself (enumeration, range, length, format,
/// pattern; with them the type, which stops them when wrong). The rest of a spec
/// (required members, nulls, types, element counts, nested specs) depends only on
/// the document's shape, and a value with no other check is no leaf.
#[derive(Debug, Clone)]
pub struct Leaf {
    at: u32,
    ty: Option<JsonType>,
    allowed: Option<Vec<serde_json::Value>>,
    min: Option<f64>,
    max: Option<f64>,
    min_len: Option<usize>,
    max_len: Option<usize>,
    datetime: bool,
    regex: Option<Regex>,
}

impl Leaf {
    fn scalar(&self) -> Scalar<'_> {
        Scalar {
            ty: self.ty,
            allowed: self.allowed.as_deref(),
            min: self.min,
            max: self.max,
            min_len: self.min_len,
            max_len: self.max_len,
            datetime: self.datetime,
            regex: self.regex.as_ref(),
        }
    }
}

/// Whether the values noted by [`validate_object_noting`] on a document found clean
/// pass again in `target`, an object of the same shape
/// ([`crate::protocol::json::Shape`]): then [`validate_object`] finds nothing there.
pub fn leaves_hold(target: Val<'_>, leaves: &[Leaf]) -> bool {
    leaves.iter().all(|leaf| {
        let v = target.offset(leaf.at);
        let mut ok = true;
        scalar(v, &v.view(), leaf.scalar(), &mut |_, _| ok = false);
        ok
    })
}

/// The value-dependent part of a field spec, borrowed from a rule or a [`Leaf`].
#[derive(Clone, Copy)]
struct Scalar<'s> {
    ty: Option<JsonType>,
    allowed: Option<&'s [serde_json::Value]>,
    min: Option<f64>,
    max: Option<f64>,
    min_len: Option<usize>,
    max_len: Option<usize>,
    datetime: bool,
    regex: Option<&'s Regex>,
}

impl<'s> Scalar<'s> {
    fn of(spec: &'s FieldSpec, regex: Option<&'s Regex>) -> Scalar<'s> {
        Scalar {
            ty: spec.ty,
            allowed: spec.allowed.as_deref(),
            min: spec.min,
            max: spec.max,
            min_len: spec.min_len,
            max_len: spec.max_len,
            datetime: spec.format == Some(Format::Datetime),
            regex,
        }
    }
}

/// One validation: where violations go, and where checked values are noted.
struct Walk<'r, 'o> {
    regexes: &'r BTreeMap<String, Regex>,
    out: &'o mut Vec<Violation>,
    /// The checked object's token index, and the leaves noted so far.
    leaves: Option<(u32, &'o mut Vec<Leaf>)>,
}

impl Walk<'_, '_> {
    fn object(
        &mut self,
        path: &PathRef<'_>,
        obj: Members<'_>,
        fields: &Fields,
        spec_path: &PathRef<'_>,
    ) {
        // One pass over the members, each matched to its field spec; then the specs
        // in order, so that violations come out in the rule file's field order. What
        // was found is kept as token indices (a few bytes each: this runs for every
        // object of every message, the items of arrays too).
        const INLINE: usize = 32;
        const NONE: u32 = u32::MAX;
        let mut found = [NONE; INLINE];
        let inline = fields.len() <= INLINE;
        if inline {
            for (k, v) in obj {
                if let Some(i) = fields.position(k) {
                    found[i] = v.index(); // the last of duplicate keys counts, as in serde_json
                }
            }
        }
        for (i, (name, spec)) in fields.iter().enumerate() {
            let p = PathRef::Field(path, name);
            let sp = PathRef::Field(spec_path, name);
            let member = if inline {
                (found[i] != NONE).then(|| obj.at(found[i]))
            } else {
                obj.get(name)
            };
            match member.filter(|v| !v.is_null()) {
                None if spec.required => self.out.push(Violation {
                    path: p.render(),
                    expected: format!("required {}", spec.ty.map_or("field", |t| t.as_str())),
                    seen: Self::absent(member, obj, name),
                }),
                None => {}
                Some(v) => self.value(&p, v, spec, &sp),
            }
        }
    }

    /// How a required member is missing: null, absent, or absent but present under a key
    /// with whitespace around the name (a reader looking the name up does not find it).
    fn absent(member: Option<Val<'_>>, obj: Members<'_>, name: &str) -> String {
        if member.is_some() {
            return "null".into();
        }
        for (k, _) in obj {
            if k != name && k.trim() == name {
                return format!(
                    "absent (a key {:?} is present: whitespace around the name)",
                    crate::finding::printable(k)
                );
            }
        }
        "absent".into()
    }

    fn value(&mut self, path: &PathRef<'_>, v: Val<'_>, spec: &FieldSpec, spec_path: &PathRef<'_>) {
        let regex = match spec.pattern {
            Some(_) => self.regexes.get(&spec_path.render()),
            None => None,
        };
        let checks = Scalar::of(spec, regex);
        // A type alone is the shape's (the token's kind), not the value's.
        let by_value = checks.allowed.is_some()
            || checks.min.is_some()
            || checks.max.is_some()
            || checks.min_len.is_some()
            || checks.max_len.is_some()
            || checks.datetime
            || checks.regex.is_some();
        if let (Some((base, leaves)), true) = (&mut self.leaves, by_value) {
            leaves.push(Leaf {
                at: v.index() - *base,
                ty: checks.ty,
                allowed: checks.allowed.map(<[_]>::to_vec),
                min: checks.min,
                max: checks.max,
                min_len: checks.min_len,
                max_len: checks.max_len,
                datetime: checks.datetime,
                regex: checks.regex.cloned(),
            });
        }
        let out = &mut *self.out;
        let mut push = |expected: String, seen: String| {
            out.push(Violation {
                path: path.render(),
                expected,
                seen,
            })
        };
        // The value's kind is read once: each accessor of the tree decodes it anew.
        let view = v.view();
        if !scalar(v, &view, checks, &mut push) {
            return;
        }
        match view {
            View::Arr(items) => {
                if let Some(min) = spec.min_items {
                    if items.len() < min {
                        push(
                            format!("at least {min} elements"),
                            format!("{}", items.len()),
                        );
                    }
                }
                if let Some(max) = spec.max_items {
                    if items.len() > max {
                        push(
                            format!("at most {max} elements"),
                            format!("{}", items.len()),
                        );
                    }
                }
                if let Some(item_spec) = &spec.items {
                    let isp = PathRef::Items(spec_path);
                    for (i, item) in items.enumerate() {
                        self.value(&PathRef::Index(path, i), item, item_spec, &isp);
                    }
                }
            }
            View::Obj(obj) => {
                if let Some(fields) = &spec.fields {
                    self.object(path, obj, fields, spec_path);
                }
                if let Some(names) = &spec.at_least_one_of {
                    if !names
                        .iter()
                        .any(|n| obj.get(n).is_some_and(|x| !x.is_null()))
                    {
                        self.out.push(Violation {
                            path: path.render(),
                            expected: format!("at least one of {}", names.join(", ")),
                            seen: "none".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// The checks of a value that depend on the value itself; each failure goes to
/// `push(expected, seen)`. False when the type is wrong (nothing else is checked).
fn scalar(
    v: Val<'_>,
    view: &View<'_>,
    spec: Scalar<'_>,
    push: &mut dyn FnMut(String, String),
) -> bool {
    if let Some(ty) = spec.ty {
        if !type_matches(ty, view) {
            push(ty.as_str().to_string(), describe(v));
            return false;
        }
    }
    if let Some(allowed) = spec.allowed {
        if !allowed.iter().any(|a| json_eq(a, v)) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            push(format!("one of {}", list.join(", ")), describe(v));
        }
    }
    match *view {
        View::U64(_) | View::I64(_) | View::F64(_) => {
            let Some(x) = v.as_f64() else { return true };
            if let Some(min) = spec.min {
                if x < min {
                    push(format!(">= {min}"), describe(v));
                }
            }
            if let Some(max) = spec.max {
                if x > max {
                    push(format!("<= {max}"), describe(v));
                }
            }
        }
        View::Str(s) => {
            if spec.min_len.is_some() || spec.max_len.is_some() {
                let n = s.chars().count();
                if let Some(min) = spec.min_len {
                    if n < min {
                        push(format!("at least {min} characters"), format!("{n}"));
                    }
                }
                if let Some(max) = spec.max_len {
                    if n > max {
                        push(format!("at most {max} characters"), format!("{n}"));
                    }
                }
            }
            if spec.datetime && !is_std_datetime(s) {
                push(
                    "a date-time \"yyyy-MM-dd HH:mm:ss\"".into(),
                    format!("{s:?}"),
                );
            }
            if let Some(r) = spec.regex {
                if !r.is_match(s) {
                    push(format!("to match /{}/", r.as_str()), format!("{s:?}"));
                }
            }
        }
        _ => {}
    }
    true
}

fn type_matches(ty: JsonType, v: &View<'_>) -> bool {
    match ty {
        JsonType::String => matches!(v, View::Str(_)),
        JsonType::Number => matches!(v, View::U64(_) | View::I64(_) | View::F64(_)),
        JsonType::Integer => matches!(v, View::U64(_) | View::I64(_)),
        JsonType::Boolean => matches!(v, View::Bool(_)),
        JsonType::Object => matches!(v, View::Obj(_)),
        JsonType::Array => matches!(v, View::Arr(_)),
        JsonType::Any => true,
    }
}

/// `a` from a rule file, `b` from a message. Numbers compare by value
/// (200 == 200.0); everything else structurally.
/// An enumeration judges the value, the field's type check its type: `1001` and
/// `"1001"` are the same value here (one fault, one finding).
fn json_eq(a: &serde_json::Value, b: Val<'_>) -> bool {
    use serde_json::Value;
    let number = |b: Val<'_>| b.as_f64().or_else(|| b.as_str()?.trim().parse().ok());
    match a {
        Value::Number(_) => number(b).is_some_and(|y| a.as_f64() == Some(y)),
        Value::String(x) => {
            b.as_str() == Some(x.as_str())
                || b.as_f64()
                    .is_some_and(|y| x.trim().parse::<f64>().ok() == Some(y))
        }
        Value::Bool(x) => matches!(b.view(), View::Bool(y) if y == *x),
        Value::Null => b.is_null(),
        Value::Array(_) | Value::Object(_) => *a == b.to_serde(),
    }
}

/// A short description of a value for "seen …": its type and, if short, the value.
pub fn describe(v: Val<'_>) -> String {
    match v.view() {
        View::Obj(_) => "object".into(),
        View::Arr(a) => format!("array of {}", a.len()),
        _ => {
            let s = v.to_string();
            if s.chars().count() > 40 {
                let cut: String = s.chars().take(40).collect();
                format!("{} {cut}…", v.type_name())
            } else {
                format!("{} {s}", v.type_name())
            }
        }
    }
}

/// `yyyy-MM-dd HH:mm:ss`, exactly, and a real date and time.
pub fn is_std_datetime(s: &str) -> bool {
    // Checked by position (hot path: every message has one); the calendar by chrono.
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    chrono::NaiveDate::from_ymd_opt(y as i32, mo, d).is_some()
        && chrono::NaiveTime::from_hms_opt(h, mi, se).is_some()
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Checks field specs at load time and compiles their patterns.
pub fn lint_fields(
    prefix: &str,
    fields: &Fields,
    errors: &mut Vec<String>,
    regexes: &mut BTreeMap<String, Regex>,
) {
    for (name, spec) in fields.iter() {
        lint_spec(&join(prefix, name), spec, errors, regexes);
    }
}

fn lint_spec(
    path: &str,
    spec: &FieldSpec,
    errors: &mut Vec<String>,
    regexes: &mut BTreeMap<String, Regex>,
) {
    let ty = spec.ty;
    let is = |t: JsonType| ty.is_none() || ty == Some(t) || ty == Some(JsonType::Any);
    let numeric = is(JsonType::Number) || is(JsonType::Integer);
    if (spec.min.is_some() || spec.max.is_some()) && !numeric {
        errors.push(format!("{path}: min/max apply to numbers only"));
    }
    if (spec.min_len.is_some() || spec.max_len.is_some() || spec.format.is_some())
        && !is(JsonType::String)
    {
        errors.push(format!(
            "{path}: min_len/max_len/format apply to strings only"
        ));
    }
    if (spec.min_items.is_some() || spec.max_items.is_some() || spec.items.is_some())
        && !is(JsonType::Array)
    {
        errors.push(format!(
            "{path}: min_items/max_items/items apply to arrays only"
        ));
    }
    if (spec.fields.is_some() || spec.at_least_one_of.is_some()) && !is(JsonType::Object) {
        errors.push(format!(
            "{path}: fields/at_least_one_of apply to objects only"
        ));
    }
    if let (Some(a), Some(b)) = (spec.min, spec.max) {
        if a > b {
            errors.push(format!("{path}: min {a} > max {b}"));
        }
    }
    if let Some(p) = &spec.pattern {
        match Regex::new(p) {
            Ok(r) => {
                regexes.insert(path.to_string(), r);
            }
            Err(e) => errors.push(format!("{path}: pattern: {e}")),
        }
    }
    if let Some(fields) = &spec.fields {
        lint_fields(path, fields, errors, regexes);
    }
    if let Some(items) = &spec.items {
        lint_spec(&format!("{path}[]"), items, errors, regexes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(fields: serde_json::Value, v: serde_json::Value) -> Vec<String> {
        let fields: Fields = serde_json::from_value(fields).unwrap();
        let mut regexes = BTreeMap::new();
        let mut errors = vec![];
        lint_fields("", &fields, &mut errors, &mut regexes);
        assert!(errors.is_empty(), "{errors:?}");
        let mut out = vec![];
        let doc = crate::protocol::Doc::parse(bytes::Bytes::from(v.to_string())).unwrap();
        validate_object(
            "param",
            doc.root().as_object().unwrap(),
            &fields,
            &regexes,
            "",
            &mut out,
        );
        out.iter().map(|v| v.detail()).collect()
    }

    #[test]
    fn every_primitive_reports_its_path() {
        let fields = json!({
            "jobId": {"type": "integer", "required": true},
            "state": {"type": "string", "enum": ["1", "2"]},
            "progress": {"type": "number", "min": 0, "max": 100},
            "msg": {"type": "string", "max_len": 3},
            "when": {"type": "string", "format": "datetime"},
            "ids": {"type": "array", "min_items": 1, "items": {"type": "string"}},
            "rep": {"type": "object", "at_least_one_of": ["a", "b"],
                    "fields": {"c": {"type": "number", "required": true}}}
        });
        let v = json!({"state": "9", "progress": 101, "msg": "long",
            "when": "2026-02-30 00:00:00", "ids": [1], "rep": {}});
        assert_eq!(
            check(fields, v),
            vec![
                "param.ids[0]: expected string, seen number 1",
                "param.jobId: expected required integer, seen absent",
                "param.msg: expected at most 3 characters, seen 4",
                "param.progress: expected <= 100, seen number 101",
                "param.rep.c: expected required number, seen absent",
                "param.rep: expected at least one of a, b, seen none",
                "param.state: expected one of \"1\", \"2\", seen string \"9\"",
                "param.when: expected a date-time \"yyyy-MM-dd HH:mm:ss\", seen \"2026-02-30 00:00:00\"",
            ]
        );
    }

    #[test]
    fn a_missing_member_says_whether_it_is_null_or_spaced() {
        let fields = json!({"cpuRate": {"type": "number", "required": true},
            "diskUsed": {"type": "number", "required": true},
            "tempValue": {"type": "number", "required": true}});
        let v = json!({"cpuRate ": 5, "diskUsed": null});
        assert_eq!(
            check(fields, v),
            vec![
                "param.cpuRate: expected required number, seen absent (a key \"cpuRate \" is present: whitespace around the name)",
                "param.diskUsed: expected required number, seen null",
                "param.tempValue: expected required number, seen absent",
            ]
        );
    }

    #[test]
    fn conforming_value_is_silent() {
        let fields = json!({"jobId": {"type": "integer", "required": true},
            "ids": {"type": "array", "min_items": 1, "max_items": 2, "items": {"type": "string", "pattern": "^d"}}});
        assert!(check(fields, json!({"jobId": 5, "ids": ["d1"]})).is_empty());
    }

    #[test]
    fn lint_rejects_mismatched_constraints() {
        let fields: Fields =
            serde_json::from_value(json!({"a": {"type": "string", "min": 1}})).unwrap();
        let mut errors = vec![];
        lint_fields("", &fields, &mut errors, &mut BTreeMap::new());
        assert_eq!(errors, vec!["a: min/max apply to numbers only"]);
    }
}
