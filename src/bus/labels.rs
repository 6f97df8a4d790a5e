//! The user's map of edge id → labels (vendor, site, …) for `fleet --labels FILE`.
//!
//! JSON: an object `{"E1": {"vendor": "A", "site": "north"}, …}`. CSV: a header row
//! whose first column is the edge id and whose other columns are label names
//! (`edge,vendor,site`), then one row per edge; fields may be double-quoted (`""`
//! for a quote inside). The format is told by the first non-blank character: `{`
//! is JSON.

use std::collections::BTreeMap;
use std::path::Path;

/// Labels per edge id.
pub type Labels = BTreeMap<String, BTreeMap<String, String>>;

/// A labels file that cannot be read: which file, where, what.
#[derive(Debug, thiserror::Error)]
#[error("labels file {file}: {problem}")]
pub struct LabelsError {
    pub file: String,
    pub problem: String,
}

/// Largest labels file read (a map of a million edges is well under it).
pub const MAX_LABELS_BYTES: u64 = 256 << 20;

pub fn read(path: &Path) -> Result<Labels, LabelsError> {
    let err = |problem: String| LabelsError {
        file: path.display().to_string(),
        problem,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_LABELS_BYTES {
        return Err(err(format!(
            "{len} bytes, more than the {MAX_LABELS_BYTES} read"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

pub fn parse(text: &str) -> Result<Labels, String> {
    match text.trim_start().starts_with('{') {
        true => parse_json(text),
        false => parse_csv(text),
    }
}

fn parse_json(text: &str) -> Result<Labels, String> {
    let v: BTreeMap<String, BTreeMap<String, serde_json::Value>> = serde_json::from_str(text)
        .map_err(|e| {
            format!(
                "not an object of edge id → {{label: value}}: {e} (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
    Ok(v.into_iter()
        .map(|(edge, labels)| {
            let labels = labels
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
            (edge, labels)
        })
        .collect())
}

fn parse_csv(text: &str) -> Result<Labels, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Labels::new());
    };
    let names = fields(header).map_err(|e| format!("line 1: {e}"))?;
    if names.len() < 2 {
        return Err("line 1: a header `edge,LABEL,…` with at least one label column".into());
    }
    let mut out = Labels::new();
    for (i, line) in lines {
        let f = fields(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if f.len() != names.len() {
            return Err(format!(
                "line {}: {} fields, the header has {}",
                i + 1,
                f.len(),
                names.len()
            ));
        }
        let labels = names[1..]
            .iter()
            .cloned()
            .zip(f[1..].iter().cloned())
            .filter(|(_, v)| !v.is_empty())
            .collect();
        out.insert(f[0].clone(), labels);
    }
    Ok(out)
}

/// The fields of one CSV line.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                at_start = true;
                continue;
            }
            (_, c) => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur.trim().to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_give_the_same_map() {
        let j =
            parse(r#"{"E1": {"vendor": "A", "site": "north"}, "E,2": {"vendor": "B"}}"#).unwrap();
        let c = parse("edge,vendor,site\nE1,A,north\n\"E,2\",B,\n").unwrap();
        assert_eq!(j, c);
        assert_eq!(j["E1"]["site"], "north");
    }

    #[test]
    fn a_bad_row_names_its_line() {
        assert_eq!(
            parse("edge,vendor\nE1,A\nE2,B,extra\n").unwrap_err(),
            "line 3: 3 fields, the header has 2"
        );
        assert!(parse("edge\nE1\n").unwrap_err().starts_with("line 1"));
        assert!(parse("{\"E1\": 3}").is_err());
    }
}
