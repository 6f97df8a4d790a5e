//! JUnit XML written from suites and cases, so that every count in the file
//! (`tests`, `failures`, `errors`, `skipped`, per suite and in total) is the count of
//! the cases it holds: a CI that reads only the totals sees what the cases say.
//! [`render`] writes a document this way: one suite per clause of its report, one for
//! an input that could not be read or judged, then the suites its front end adds.

use std::fmt::Write as _;

use crate::finding::Severity;
use crate::report::filter::within;
use crate::report::group::Group;
use crate::report::{Document, Report};

/// How one test case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// `<failure message="…">text</failure>`.
    Failed {
        message: String,
        text: String,
    },
    /// `<error message="…">text</error>`: the test could not be run to its end
    /// (a lost connection), which is neither the device's pass nor its fail.
    Error {
        message: String,
        text: String,
    },
    /// `<skipped message="…"/>`: not exercised.
    Skipped {
        message: String,
    },
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    pub classname: String,
    pub name: String,
    pub verdict: Verdict,
    /// `<system-out>`: what a reader should know about a case that passed too.
    pub out: Option<String>,
}

impl Case {
    pub fn new(classname: &str, name: &str, verdict: Verdict) -> Case {
        Case {
            classname: classname.into(),
            name: name.into(),
            verdict,
            out: None,
        }
    }

    pub fn with_out(mut self, out: Option<String>) -> Case {
        self.out = out.filter(|o| !o.is_empty());
        self
    }
}

/// One test suite.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

impl Suite {
    pub fn new(name: &str) -> Suite {
        Suite {
            name: name.into(),
            cases: vec![],
        }
    }

    fn count(&self, f: impl Fn(&Verdict) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.verdict)).count()
    }
    pub fn failures(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Failed { .. }))
    }
    pub fn errors(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Error { .. }))
    }
    pub fn skipped(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Skipped { .. }))
    }
}

/// The JUnit of a document: the report's clause suites, then the front end's suites
/// (or those alone, for a [`crate::report::Standalone`] document). Appended
/// documents' suites join the same `<testsuites>`, their names after the label of
/// their document: one `--format junit` run writes one XML document.
pub fn render(doc: &Document) -> String {
    let out = alone(doc);
    if doc.appended.is_empty() {
        return out;
    }
    let mut parts = vec![Parts::of(&out, None)];
    collect(doc, &mut parts);
    let total = |f: fn(&Parts) -> usize| parts.iter().map(f).sum::<usize>();
    let mut merged = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    for p in &parts {
        merged.push_str(&p.comments);
    }
    let _ = writeln!(
        merged,
        "<testsuites name=\"edgetap\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        total(|p| p.tests),
        total(|p| p.failures),
        total(|p| p.errors),
        total(|p| p.skipped)
    );
    for p in &parts {
        merged.push_str(&p.suites);
    }
    merged.push_str("</testsuites>\n");
    merged
}

/// The document alone (without what is appended to it).
fn alone(doc: &Document) -> String {
    match &doc.standalone {
        Some(s) => testsuites(&s.junit_name, None, &doc.suites),
        None => doc.report.junit_with(&doc.suites),
    }
}

/// The parts of every document appended to `doc`, depth first.
fn collect(doc: &Document, parts: &mut Vec<Parts>) {
    for a in &doc.appended {
        parts.push(Parts::of(&alone(&a.doc), Some(&a.label)));
        collect(&a.doc, parts);
    }
}

/// One rendered document taken apart to join another: its comments, its totals
/// and its `<testsuite>` elements. It reads only what [`alone`] wrote (one element
/// a line, attributes in a known order), never outside XML.
struct Parts {
    comments: String,
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    suites: String,
}

impl Parts {
    fn of(xml_doc: &str, label: Option<&str>) -> Parts {
        let mut p = Parts {
            comments: String::new(),
            tests: 0,
            failures: 0,
            errors: 0,
            skipped: 0,
            suites: String::new(),
        };
        for line in xml_doc.lines() {
            if line.starts_with("<?xml") || line == "</testsuites>" {
                continue;
            } else if line.starts_with("<!--") {
                p.comments.push_str(line);
                p.comments.push('\n');
            } else if line.starts_with("<testsuites ") {
                let n = |attr: &str| -> usize {
                    let key = format!(" {attr}=\"");
                    line.find(&key)
                        .and_then(|i| {
                            let rest = &line[i + key.len()..];
                            rest[..rest.find('"')?].parse().ok()
                        })
                        .unwrap_or(0)
                };
                p.tests = n("tests");
                p.failures = n("failures");
                p.errors = n("errors");
                p.skipped = n("skipped");
            } else {
                match (label, line.strip_prefix("  <testsuite name=\"")) {
                    (Some(l), Some(rest)) => {
                        let _ = writeln!(p.suites, "  <testsuite name=\"{}: {rest}", xml(l));
                    }
                    _ => {
                        p.suites.push_str(line);
                        p.suites.push('\n');
                    }
                }
            }
        }
        // A report's `<testsuites>` counts no skipped cases: its suites do.
        if !xml_doc
            .lines()
            .any(|l| l.starts_with("<testsuites ") && l.contains(" skipped=\""))
        {
            p.skipped = p
                .suites
                .lines()
                .filter_map(|l| {
                    let i = l.find(" skipped=\"")? + 10;
                    l[i..i + l[i..].find('"')?].parse::<usize>().ok()
                })
                .sum();
        }
        p
    }
}

/// `<testsuites name=…>` holding `suites`, after an optional comment.
pub fn testsuites(name: &str, comment: Option<&str>, suites: &[Suite]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    if let Some(c) = comment {
        // A comment cannot hold "--".
        let _ = writeln!(out, "<!-- {} -->", xml(&c.replace("--", "")));
    }
    let total = |f: fn(&Suite) -> usize| suites.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        xml(name),
        total(|s| s.cases.len()),
        total(Suite::failures),
        total(Suite::errors),
        total(Suite::skipped)
    );
    for s in suites {
        write_suite(&mut out, s);
    }
    out.push_str("</testsuites>\n");
    out
}

/// One `<testsuite>` element with its cases.
pub fn write_suite(out: &mut String, s: &Suite) {
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        xml(&s.name),
        s.cases.len(),
        s.failures(),
        s.errors(),
        s.skipped()
    );
    for c in &s.cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml(&c.classname),
            xml(&c.name)
        );
        match &c.verdict {
            Verdict::Passed => {}
            Verdict::Failed { message, text } => {
                let _ = write!(
                    out,
                    "<failure message=\"{}\">{}</failure>",
                    xml(message),
                    xml(text)
                );
            }
            Verdict::Error { message, text } => {
                let _ = write!(
                    out,
                    "<error message=\"{}\">{}</error>",
                    xml(message),
                    xml(text)
                );
            }
            Verdict::Skipped { message } => {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml(message));
            }
        }
        if let Some(o) = &c.out {
            let _ = write!(out, "<system-out>{}</system-out>", xml(o));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n");
}

/// Text made safe for an XML attribute or element.
pub fn xml(s: &str) -> String {
    // XML 1.0 admits no control character but tab and newlines, not even escaped.
    crate::finding::printable_text(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "1 exchange", "2 exchanges": a count and its noun, singular or plural.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

impl Report {
    /// One test suite per clause, one test case per clause (a failing clause lists its
    /// groups of error findings, one line per group), then the suites of `extra` (the
    /// detection items of `sim platform`), counted in the totals.
    fn junit_with(&self, extra: &[Suite]) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        if let Some(note) = &self.summary.filtered {
            // A comment cannot hold "--": the options are named without their dashes.
            let _ = writeln!(out, "<!-- {} -->", xml(&note.line().replace("--", "")));
        }
        let input = self.input_failures();
        let _ = writeln!(
            out,
            "<testsuites name=\"edgetap\" tests=\"{}\" failures=\"{}\">",
            self.clauses.len() + input.len() + extra.iter().map(|s| s.cases.len()).sum::<usize>(),
            self.clauses.iter().filter(|c| c.status == "fail").count()
                + input.len()
                + extra.iter().map(Suite::failures).sum::<usize>()
        );
        for (name, message, text) in &input {
            let _ = writeln!(
                out,
                "  <testsuite name=\"input\" tests=\"1\" failures=\"1\" skipped=\"0\">\n    \
                 <testcase classname=\"input\" name=\"{}\"><failure message=\"{}\">{}</failure></testcase>\n  \
                 </testsuite>",
                xml(name),
                xml(message),
                xml(text)
            );
        }
        for c in &self.clauses {
            let failures: Vec<&Group> = self
                .groups
                .iter()
                .filter(|g| g.severity == Severity::Error && within(&g.clause, &c.clause))
                .collect();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{} {}\" tests=\"1\" failures=\"{}\" skipped=\"{}\">",
                xml(&c.clause),
                xml(&c.title),
                u8::from(c.status == "fail"),
                u8::from(c.status == "not exercised" || c.status == "partly exercised")
            );
            let _ = write!(
                out,
                "    <testcase classname=\"clause {}\" name=\"{}\">",
                xml(&c.clause),
                xml(&c.title)
            );
            if c.status == "not exercised" {
                let why = if c.not_exercised.is_empty() {
                    "not exercised".to_string()
                } else {
                    format!("not exercised: {}", c.not_exercised.join("; "))
                };
                let _ = write!(out, "<skipped message=\"{}\"/>", xml(&why));
            } else if c.status == "partly exercised" {
                // Not shown to work in full (history outside the input, a job still
                // open): never a pass, so a CI page does not count it as one.
                let why = format!("partly exercised: {}", c.not_exercised.join("; "));
                let _ = write!(out, "<skipped message=\"{}\"/>", xml(&why));
                let said: Vec<String> = self
                    .groups
                    .iter()
                    .filter(|g| g.severity == Severity::Warning && within(&g.clause, &c.clause))
                    .map(|g| g.line())
                    .collect();
                if !said.is_empty() {
                    let _ = write!(out, "<system-out>{}</system-out>", xml(&said.join("\n")));
                }
            } else {
                if c.status == "fail" {
                    let text: Vec<String> = failures.iter().map(|g| g.line()).collect();
                    let _ = write!(
                        out,
                        "<failure message=\"{}\">{}</failure>",
                        count(c.errors as usize, "error finding", "error findings"),
                        xml(&text.join("\n"))
                    );
                }
                // What a reader should know of a clause that passes too: its
                // warnings (a CI page shows no exit code), and what was not judged.
                let mut said: Vec<String> = self
                    .groups
                    .iter()
                    .filter(|g| g.severity == Severity::Warning && within(&g.clause, &c.clause))
                    .map(|g| g.line())
                    .collect();
                if !c.not_exercised.is_empty() {
                    said.push(format!("partly exercised: {}", c.not_exercised.join("; ")));
                }
                if !said.is_empty() {
                    let _ = write!(out, "<system-out>{}</system-out>", xml(&said.join("\n")));
                }
            }
            out.push_str("</testcase>\n  </testsuite>\n");
        }
        for s in extra {
            write_suite(&mut out, s);
        }
        out.push_str("</testsuites>\n");
        out
    }
}

impl Report {
    /// JUnit failures about the input itself, so that CI goes red on a run that read
    /// nothing or judged nothing: (test case name, failure message, text).
    fn input_failures(&self) -> Vec<(&'static str, String, String)> {
        let s = &self.summary;
        let mut out = vec![];
        if !s.unreadable.is_empty() {
            out.push((
                "capture readable",
                "capture unreadable".to_string(),
                s.unreadable.join("\n"),
            ));
        }
        if !s.judged {
            out.push((
                "protocol messages judged",
                "nothing judged: no protocol message in the input".to_string(),
                s.not_judged_because.join("\n"),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_counts_of_the_cases_written() {
        let mut a = Suite::new("a");
        a.cases.push(Case::new("c", "one", Verdict::Passed));
        a.cases.push(Case::new(
            "c",
            "two",
            Verdict::Failed {
                message: "m".into(),
                text: "<t>".into(),
            },
        ));
        let mut b = Suite::new("b");
        b.cases.push(Case::new(
            "c",
            "three",
            Verdict::Skipped {
                message: "why".into(),
            },
        ));
        b.cases.push(Case::new(
            "c",
            "four",
            Verdict::Error {
                message: "lost".into(),
                text: String::new(),
            },
        ));
        let x = testsuites("n", None, &[a, b]);
        assert!(
            x.contains(
                "<testsuites name=\"n\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\">"
            ),
            "{x}"
        );
        assert!(
            x.contains("tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\""),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert!(x.contains("&lt;t&gt;"), "{x}");
    }

    #[test]
    fn counts_read_in_the_singular_for_one() {
        assert_eq!(count(1, "exchange", "exchanges"), "1 exchange");
        assert_eq!(count(0, "warning", "warnings"), "0 warnings");
        assert_eq!(count(2, "difference", "differences"), "2 differences");
    }
}
