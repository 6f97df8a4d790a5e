//! The severity policy: one reading of the standard's words for every rule, the
//! field tables' and the detection items' and sequence figures' alike.
//!
//! - `error` where normative text is broken: 应/须 (shall), a table's 是 (required)
//!   column, an explicit type, range, enum, length, code or topic, and order where the
//!   text orders it ("先…之后", a sequence figure such as 图6).
//! - `warning` where the text gives an example or a typical value (如, 例如, 典型,
//!   可以, 宜, an open list), or implies an order it does not state.
//! - `info` for timing, heuristics, outcomes and what edgetap cannot know.
//!
//! A rule may declare its [`Reading`]; [`check`] (run by `rules lint` and by every
//! load) holds its severity to it, and holds the words of its basis to its severity:
//!
//! 1. a declared reading fixes the severity (`shall` → error, `example` and
//!    `implied` → warning, `timing`, `heuristic`, `outcome`, `unknowable` → info),
//!    and a reading other than `shall` or `example` needs a `review` saying why;
//! 2. an error whose basis has permissive words and no normative ones rests on an
//!    example or a permission: it must not be an error;
//! 3. a warning or info whose basis has normative words and no permissive ones must
//!    declare the reading that makes it one (an order only implied, a heuristic, a
//!    timing, an outcome, history edgetap cannot know): without that, normative words
//!    make an error, as they do in the field tables.
//!
//! The words are matched on the basis as written (the verbatim Chinese sentence):
//! 应 counts unless it starts 应答 (reply) or 应用 (app); 如 counts unless it starts
//! 如表/如图/如下/如果/如有/如何 (a reference or an "if").

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

use super::model::RuleDef;
use crate::finding::Severity;

/// How a rule reads the sentence it cites: what makes its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// Normative: 应/须, a 是 column, an explicit value, an order the text states.
    Shall,
    /// An example, a typical value, a permission (如, 例如, 典型, 可以, 宜).
    Example,
    /// An order or a duty the text implies (a test step, a figure that does not draw
    /// the message at hand) without stating it.
    Implied,
    /// Timing against a limit the standard does not set.
    Timing,
    /// A heuristic: the text does not say it, edgetap infers it.
    Heuristic,
    /// An outcome (a refusal, a failed job): conforming protocol, reported.
    Outcome,
    /// What edgetap cannot know from the input (history before it, a clock).
    Unknowable,
}

impl Reading {
    pub fn as_str(self) -> &'static str {
        match self {
            Reading::Shall => "shall",
            Reading::Example => "example",
            Reading::Implied => "implied",
            Reading::Timing => "timing",
            Reading::Heuristic => "heuristic",
            Reading::Outcome => "outcome",
            Reading::Unknowable => "unknowable",
        }
    }

    /// The severity this reading gives.
    pub fn severity(self) -> Severity {
        match self {
            Reading::Shall => Severity::Error,
            Reading::Example | Reading::Implied => Severity::Warning,
            Reading::Timing | Reading::Heuristic | Reading::Outcome | Reading::Unknowable => {
                Severity::Info
            }
        }
    }
}

fn normative() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        // 应 (compounds such as 应答 removed first, see [`plain`]), 须, 不得, a 是 column after a JSON type, 先…之后/然后, a
        // figure, a code the text names ("CODE字段为202", "code 值为 202", "code 代码返回
        // 202").
        Regex::new(
            r"(?i)应|须|不得|(number|string|object|array)\s*是|先.*(之后|然后|再)|图\s*\d|code\s*(字段|代码|值)\s*(为|返回)?\s*\d{3}",
        )
        .expect("valid regex")
    })
}

fn permissive() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r"例如|典型|可以|宜|尽量|可不|如[^表图下果有何]").expect("valid regex")
    })
}

/// Words where 应 is no "shall": 应答 (reply), 应用 (app), 响应 (response), 对应 and
/// 相应 (corresponding).
const NOT_SHALL: &[&str] = &["应答", "应用", "响应", "对应", "相应"];

/// The basis with the compounds of [`NOT_SHALL`] blanked out.
fn plain(basis: &str) -> String {
    NOT_SHALL
        .iter()
        .fold(basis.to_string(), |b, w| b.replace(w, "··"))
}

/// The normative words of a basis, if any (the first match, for the message).
pub fn normative_words(basis: &str) -> Option<String> {
    let plain = plain(basis);
    let m = normative().find(&plain)?;
    // The blanking keeps the count of characters: the same span of the original.
    let start = plain[..m.start()].chars().count();
    let len = m.as_str().chars().count();
    Some(basis.chars().skip(start).take(len).collect())
}

/// The permissive words of a basis, if any.
pub fn permissive_words(basis: &str) -> Option<&str> {
    permissive().find(basis).map(|m| m.as_str())
}

/// The policy's complaints about one rule (empty: it follows the policy).
pub fn check(def: &RuleDef) -> Vec<String> {
    let mut e = vec![];
    let basis = def.basis.as_deref().unwrap_or("");
    let norm = normative_words(basis);
    let perm = permissive_words(basis);
    if let Some(r) = def.reading {
        if r.severity() != def.severity {
            e.push(format!(
                "reading \"{}\" makes a{} {}, not a{} {} (severity policy)",
                r.as_str(),
                article(r.severity()),
                r.severity().as_str(),
                article(def.severity),
                def.severity.as_str()
            ));
        }
        let says_why = def.review.as_deref().is_some_and(|t| !t.trim().is_empty());
        if !matches!(r, Reading::Shall | Reading::Example) && !says_why {
            e.push(format!(
                "reading \"{}\" needs a \"review\" saying why the words do not make an error",
                r.as_str()
            ));
        }
    }
    match (def.severity, norm, perm) {
        (Severity::Error, None, Some(p)) => e.push(format!(
            "an error rule whose basis only gives an example or a permission (\"{p}\"): \
             make it a warning, or cite the normative sentence (severity policy)"
        )),
        (Severity::Warning | Severity::Info, Some(n), None) if def.reading.is_none() => {
            e.push(format!(
                "the basis has normative wording (\"{n}\"), which makes an error: make it \
                 one, or declare the \"reading\" (implied, timing, heuristic, outcome, \
                 unknowable) and say why in \"review\" (severity policy)"
            ))
        }
        _ => {}
    }
    e
}

fn article(s: Severity) -> &'static str {
    match s {
        Severity::Error | Severity::Info => "n",
        Severity::Warning => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(severity: &str, basis: &str, extra: &str) -> RuleDef {
        serde_json::from_str(&format!(
            r#"{{"id": "x.y", "severity": "{severity}", "basis": {}, {extra} "message": "m",
                "check": {{"kind": "reply_orphan"}}}}"#,
            serde_json::to_string(basis).unwrap()
        ))
        .unwrap()
    }

    #[test]
    fn the_words_are_read_as_the_house_reads_them() {
        assert_eq!(
            normative_words("所有应答报文应与请求报文的 type 字段相同"),
            Some("应".into())
        );
        assert_eq!(
            normative_words("边设备在收到应用安装命令后，向平台回发应答"),
            None
        );
        assert!(normative_words("表9 \"jobId number 是\"").is_some());
        assert!(
            normative_words("6.2.1.2 \"先对容器安装命令应答，之后进行应用下载与安装\"").is_some()
        );
        assert!(normative_words("6.1.2.2 \"返回结果CODE字段为202\"").is_some());
        assert!(normative_words("6.3.1.1.2 c) \"code 代码返回 202 或其他错误信息\"").is_some());
        assert_eq!(normative_words("\"type 字段为自定义字段\""), None);
        assert!(permissive_words("断开原因，如“Power Off”等").is_some());
        assert_eq!(permissive_words("param 字段定义如表 4 所示"), None);
        assert!(permissive_words("可以对升级命令做出应答").is_some());
    }

    #[test]
    fn an_example_is_no_error_and_a_shall_is_no_info_unless_the_rule_says_why() {
        assert!(check(&rule("error", "表4 \"dev object 是\"", "")).is_empty());
        assert!(!check(&rule("error", "表10 \"CPU 负载（例如 50 表示 50%）\"", "")).is_empty());
        assert!(!check(&rule(
            "warning",
            "6.2.1.2 \"先对容器安装命令应答，之后进行\"",
            ""
        ))
        .is_empty());
        assert!(!check(&rule("info", "表9 \"jobId number 是\"", "")).is_empty());
        // A declared reading needs its review, and fixes the severity.
        let info = r#""reading": "heuristic","#;
        assert!(!check(&rule("info", "表9 \"jobId number 是\"", info)).is_empty());
        let why = r#""reading": "heuristic", "review": "no sentence says one","#;
        assert!(check(&rule("info", "表9 \"jobId number 是\"", why)).is_empty());
        assert!(!check(&rule("warning", "表9 \"jobId number 是\"", why)).is_empty());
        // Words of both kinds: the rule's severity stands.
        assert!(check(&rule("error", "表5 \"reason string 是 如“Power Off”\"", "")).is_empty());
        assert!(check(&rule(
            "warning",
            "表10 \"cpuRate number 是（例如 50）\"",
            ""
        ))
        .is_empty());
    }
}
