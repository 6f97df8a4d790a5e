//! The JSON of a document: the report (the contract of `edgetap analyze --format
//! json`, see [`crate::report`]) with the front end's members beside it, or the
//! members alone for a [`crate::report::Standalone`] document; appended documents
//! follow, one JSON document a line apart.

use serde_json::Value;

use crate::report::Document;

pub fn render(doc: &Document) -> String {
    let mut out = match (&doc.standalone, doc.members.is_empty()) {
        // The report alone keeps the order of its fields.
        (None, true) => serde_json::to_string_pretty(&*doc.report).expect("report serialises"),
        // With members the document goes through a `Value`, whose maps sort their
        // keys (the plan's JSON always has: kept byte for byte).
        (standalone, _) => {
            let mut v = match standalone {
                Some(_) => Value::Object(Default::default()),
                None => serde_json::to_value(&*doc.report).unwrap_or(Value::Null),
            };
            if let Value::Object(o) = &mut v {
                o.extend(doc.members.clone());
            }
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
    };
    out.push('\n');
    for a in &doc.appended {
        out.push_str(&render(&a.doc));
    }
    out
}
