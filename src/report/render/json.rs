//! The JSON of a document: the report (the contract of `edgetap analyze --format
//! json`, see [`crate::report`]) with the front end's members beside it, or the
//! members alone for a [`crate::report::Standalone`] document. Appended documents
//! go in the member `appended` [{`heading`, `label`, `document`}]: one `--format
//! json` run writes one JSON document.

use serde_json::Value;

use crate::report::Document;

pub fn render(doc: &Document) -> String {
    let mut out = if doc.appended.is_empty() {
        text(doc)
    } else {
        serde_json::to_string_pretty(&value(doc)).unwrap_or_default()
    };
    out.push('\n');
    out
}

/// The document alone (without what is appended to it), as text.
fn text(doc: &Document) -> String {
    match (&doc.standalone, doc.members.is_empty()) {
        // The report alone keeps the order of its fields.
        (None, true) => serde_json::to_string_pretty(&*doc.report).expect("report serialises"),
        // With members the document goes through a `Value`, whose maps sort their
        // keys (the plan's JSON always has: kept byte for byte).
        _ => serde_json::to_string_pretty(&alone(doc)).unwrap_or_default(),
    }
}

/// The document alone as a value: the report and the members, or the members.
fn alone(doc: &Document) -> Value {
    let mut v = match &doc.standalone {
        Some(_) => Value::Object(Default::default()),
        None => serde_json::to_value(&*doc.report).unwrap_or(Value::Null),
    };
    if let Value::Object(o) = &mut v {
        o.extend(doc.members.clone());
    }
    v
}

/// The document and those appended to it, nested under `appended`.
fn value(doc: &Document) -> Value {
    let mut v = alone(doc);
    if doc.appended.is_empty() {
        return v;
    }
    let appended: Vec<Value> = doc
        .appended
        .iter()
        .map(|a| {
            serde_json::json!({
                "heading": a.heading,
                "label": a.label,
                "document": value(&a.doc),
            })
        })
        .collect();
    if let Value::Object(o) = &mut v {
        o.insert("appended".into(), Value::Array(appended));
    }
    v
}
