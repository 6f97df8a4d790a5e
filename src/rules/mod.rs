//! Rules: the model ([`model`]), loading and lint ([`RuleSet`]), schema validation
//! ([`schema`]) and the stateful engine ([`engine`]).
//!
//! The default rule set is the `rules/` folder of the repository, embedded in the
//! binary. `--rules DIR` extends it: a file with the same name as a default file
//! replaces it, other files are added, and a rule whose id already exists replaces
//! the earlier one.

pub mod engine;
pub mod json_schema;
pub mod model;
pub mod policy;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

pub use engine::Engine;
use model::{Check, ClauseDef, RuleDef, RuleFile, TypeDef};

/// The rule files compiled into the binary.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("5-format.json", include_str!("../../rules/5-format.json")),
    (
        "6.1-device.json",
        include_str!("../../rules/6.1-device.json"),
    ),
    (
        "6.2-container.json",
        include_str!("../../rules/6.2-container.json"),
    ),
    ("6.3-app.json", include_str!("../../rules/6.3-app.json")),
    (
        "6-sequences.json",
        include_str!("../../rules/6-sequences.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: rule {rule}: {message}")]
    Rule {
        file: String,
        rule: String,
        message: String,
    },
    #[error("{file}: type {msg_type}: {message}")]
    Type {
        file: String,
        msg_type: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A rule with the file it came from and its compiled parts.
#[derive(Debug, Clone)]
pub struct Rule {
    pub def: RuleDef,
    pub file: String,
    /// Compiled regexes of `type_naming` and `key_naming`.
    pub regexes: BTreeMap<String, Regex>,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub clauses: Vec<ClauseDef>,
    /// The clock of the timestamps without a zone, seconds east of UTC (`--tz`);
    /// `None`: the standard's, China Standard Time (UTC+8).
    pub tz_offset_s: Option<i64>,
    /// Shared: the engine hands the same definition to every message of a type.
    pub types: BTreeMap<String, std::sync::Arc<TypeDef>>,
    /// In load order; ids are unique. Only the enabled rules: the engine runs these.
    pub rules: Vec<Rule>,
    /// Rules switched off by `--disable` or a rule file's `disable`: they never run.
    pub disabled: Vec<Rule>,
    /// Files that made the set, for the report ("rules version").
    pub files: Vec<String>,
}

impl RuleSet {
    /// The embedded default set.
    pub fn builtin() -> RuleSet {
        let files: Vec<(String, String)> = DEFAULT_FILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        // The embedded files are tested by `rules lint` in CI; failing here is a bug.
        Self::from_sources(files).expect("embedded rules are valid")
    }

    /// The default set extended or overridden by the `*.json` files of `dir`; with
    /// `replace`, only `dir`'s files.
    pub fn load(dir: Option<&Path>, replace: bool) -> Result<RuleSet, Vec<RuleError>> {
        let mut files: Vec<(String, String)> = if replace {
            vec![]
        } else {
            DEFAULT_FILES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect()
        };
        if let Some(dir) = dir {
            for (name, text) in read_dir_json(dir).map_err(|e| vec![e])? {
                let base = Path::new(&name)
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(slot) = files.iter_mut().find(|(n, _)| *n == base) {
                    *slot = (name, text);
                } else {
                    files.push((name, text));
                }
            }
        }
        Self::from_sources(files)
    }

    /// Builds a set from (file name, text) pairs, collecting every error.
    pub fn from_sources(files: Vec<(String, String)>) -> Result<RuleSet, Vec<RuleError>> {
        let mut set = RuleSet::default();
        let mut errors = vec![];
        let mut parsed = vec![];
        for (file, text) in files {
            match serde_json::from_str::<RuleFile>(&text) {
                Ok(rf) => parsed.push((file, rf)),
                Err(e) => errors.push(RuleError::Parse {
                    file,
                    message: e.to_string(),
                }),
            }
        }
        for (file, rf) in &parsed {
            set.files.push(file.clone());
            for c in &rf.clauses {
                if let Some(old) = set.clauses.iter_mut().find(|x| x.clause == c.clause) {
                    *old = c.clone();
                } else {
                    set.clauses.push(c.clone());
                }
            }
            for (name, t) in &rf.types {
                set.types
                    .insert(name.clone(), std::sync::Arc::new(t.clone()));
            }
        }
        let mut disables = vec![];
        for (file, rf) in parsed {
            disables.extend(rf.disable.iter().map(|id| (file.clone(), id.clone())));
            for (name, t) in &rf.types {
                for e in lint_type(name, t, &set) {
                    errors.push(RuleError::Type {
                        file: file.clone(),
                        msg_type: name.clone(),
                        message: e,
                    });
                }
            }
            for def in rf.rules {
                match compile_rule(&def, &set) {
                    Ok(regexes) => {
                        let rule = Rule {
                            def,
                            file: file.clone(),
                            regexes,
                        };
                        if let Some(old) = set.rules.iter_mut().find(|r| r.def.id == rule.def.id) {
                            *old = rule;
                        } else {
                            set.rules.push(rule);
                        }
                    }
                    Err(messages) => {
                        for message in messages {
                            errors.push(RuleError::Rule {
                                file: file.clone(),
                                rule: def.id.clone(),
                                message,
                            });
                        }
                    }
                }
            }
        }
        for (file, id) in disables {
            if let Err(message) = set.disable(&id) {
                errors.push(RuleError::Parse {
                    file,
                    message: format!("disable: {message}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Seconds east of UTC of the timestamps without a zone (default UTC+8, CST).
    pub fn tz(&self) -> i64 {
        self.tz_offset_s.unwrap_or(crate::protocol::CST_OFFSET_S)
    }

    /// Switches off the rules `pattern` names (an id, or a prefix ending in `.`): they
    /// move to [`RuleSet::disabled`]. Disabling a disabled rule again is no error; a
    /// pattern that names no rule at all is.
    pub fn disable(&mut self, pattern: &str) -> Result<(), String> {
        let known = self
            .rules
            .iter()
            .chain(&self.disabled)
            .any(|r| id_matches(pattern, &r.def.id));
        if !known {
            return Err(format!("no rule with id \"{pattern}\""));
        }
        let (off, on): (Vec<Rule>, Vec<Rule>) = std::mem::take(&mut self.rules)
            .into_iter()
            .partition(|r| id_matches(pattern, &r.def.id));
        self.rules = on;
        self.disabled.extend(off);
        Ok(())
    }

    /// Applies the user's time limits (`--reply-timeout`, `--job-timeout`) to the
    /// rules that judge timing; `None` leaves a rule's own setting.
    pub fn set_limits(&mut self, reply_timeout_s: Option<f64>, job_timeout_s: Option<f64>) {
        for r in &mut self.rules {
            match &mut r.def.check {
                Check::ReplyLate { deadline_s } if reply_timeout_s.is_some() => {
                    *deadline_s = reply_timeout_s
                }
                Check::ReplyMissing { after_s } if reply_timeout_s.is_some() => {
                    *after_s = reply_timeout_s
                }
                Check::JobResultMissing { after_s } if job_timeout_s.is_some() => {
                    *after_s = job_timeout_s
                }
                _ => {}
            }
        }
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.def.id == id)
    }

    pub fn clause_title(&self, clause: &str) -> Option<&str> {
        self.clauses
            .iter()
            .find(|c| c.clause == clause)
            .map(|c| c.title.as_str())
    }
}

/// A rule id `pattern` names `id`: the same id, or a prefix of it ending in `.`
/// (`t10.` names every table 10 rule).
pub fn id_matches(pattern: &str, id: &str) -> bool {
    pattern == id || (pattern.ends_with('.') && id.starts_with(pattern))
}

fn read_dir_json(dir: &Path) -> Result<Vec<(String, String)>, RuleError> {
    let io = |source| RuleError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = vec![];
    for p in names {
        let text = std::fs::read_to_string(&p).map_err(|source| RuleError::Io {
            path: p.clone(),
            source,
        })?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}

const CLASSES: &[&str] = &["request", "reply", "report"];
/// The deviations the payload reader tolerates ([`crate::protocol::Deviation`]).
const DIALECT_KINDS: &[&str] = &[
    "trailing_bytes",
    "bom",
    "string_number",
    "timestamp_form",
    "key_whitespace",
    "type_whitespace",
    "duplicate_key",
];
const ROLES: &[&str] = &["request", "command", "data"];

fn lint_type(name: &str, t: &TypeDef, set: &RuleSet) -> Vec<String> {
    let mut e = vec![];
    if !ROLES.contains(&t.role.as_str()) {
        e.push(format!("role \"{}\" is not one of {ROLES:?}", t.role));
    }
    if t.channels.is_empty() {
        e.push("channels is empty".into());
    }
    if !set.clauses.is_empty() && set.clause_title(&t.clause).is_none() {
        e.push(format!("clause \"{}\" is not a known clause", t.clause));
    }
    for (ch, kinds) in &t.ends_jobs {
        for k in kinds {
            match set.types.get(k) {
                Some(kt) if kt.job.is_some() => {}
                _ => e.push(format!(
                    "ends_jobs.{ch}: {k} is not a type that opens a job"
                )),
            }
        }
    }
    if !t.reply_codes.is_empty() && t.role == "data" {
        e.push(format!(
            "{name} travels on data topics, which are never answered"
        ));
    }
    e
}

fn compile_rule(def: &RuleDef, set: &RuleSet) -> Result<BTreeMap<String, Regex>, Vec<String>> {
    let mut errors = vec![];
    let mut regexes = BTreeMap::new();
    if def.id.trim().is_empty() {
        errors.push("empty rule id".into());
    }
    // An error finding accuses a device or platform: it must name the sentence of
    // the standard it enforces.
    if def.severity == crate::finding::Severity::Error
        && def.basis.as_deref().map_or(true, |b| b.trim().is_empty())
    {
        errors.push(
            "an error rule needs a \"basis\": the clause or table and the sentence of the \
             standard it enforces, verbatim (or make it a warning or info)"
                .into(),
        );
    }
    // One severity policy for every rule: the words of its basis and its reading.
    errors.extend(policy::check(def));
    if let Some(c) = &def.clause {
        if !set.clauses.is_empty() && set.clause_title(c).is_none() && !is_sub_clause(c, set) {
            errors.push(format!("clause \"{c}\" is not a known clause"));
        }
    }
    let known_type = |t: &str, errors: &mut Vec<String>| {
        if !set.types.contains_key(t) {
            errors.push(format!("message type \"{t}\" is not in the type catalog"));
        }
    };
    match &def.check {
        Check::Schema { when, fields, .. } => {
            if let Some(ts) = &when.types {
                ts.values().iter().for_each(|t| known_type(t, &mut errors));
            }
            if let Some(ts) = &when.job_of {
                ts.values().iter().for_each(|t| known_type(t, &mut errors));
            }
            if let Some(cs) = &when.class {
                for c in cs.values() {
                    if !CLASSES.contains(&c) {
                        errors.push(format!("class \"{c}\" is not one of {CLASSES:?}"));
                    }
                }
            }
            schema::lint_fields("", fields, &mut errors, &mut regexes);
        }
        Check::TypeNaming { patterns } => {
            for (class, p) in patterns {
                if !CLASSES.contains(&class.as_str()) {
                    errors.push(format!("class \"{class}\" is not one of {CLASSES:?}"));
                }
                match Regex::new(p) {
                    Ok(r) => {
                        regexes.insert(class.clone(), r);
                    }
                    Err(e) => errors.push(format!("pattern for {class}: {e}")),
                }
            }
        }
        Check::KeyNaming { pattern } => match Regex::new(pattern) {
            Ok(r) => {
                regexes.insert(String::new(), r);
            }
            Err(e) => errors.push(format!("pattern: {e}")),
        },
        Check::FirstMessage { msg_type } | Check::AccessFirst { msg_type } => {
            known_type(msg_type, &mut errors)
        }
        Check::Dialect { deviations, .. } => {
            for d in deviations {
                if !DIALECT_KINDS.contains(&d.as_str()) {
                    errors.push(format!("deviation \"{d}\" is not one of {DIALECT_KINDS:?}"));
                }
            }
        }
        Check::SilentAfter { msg_type, until } => {
            known_type(msg_type, &mut errors);
            known_type(until, &mut errors);
        }
        Check::IdAssigned { assigns, uses } => {
            for p in assigns.iter().chain(uses) {
                known_type(&p.msg_type, &mut errors);
            }
        }
        Check::RecoveryFollows { msg_type, .. } => known_type(msg_type, &mut errors),
        Check::ReportPeriod {
            msg_type,
            period,
            tolerance,
        } => {
            known_type(msg_type, &mut errors);
            known_type(&period.msg_type, &mut errors);
            if !(*tolerance > 0.0) {
                errors.push("tolerance must be positive".into());
            }
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(regexes)
    } else {
        Err(errors)
    }
}

/// "5.3.3" is acceptable where "5.3" is a listed clause.
fn is_sub_clause(c: &str, set: &RuleSet) -> bool {
    set.clauses
        .iter()
        .any(|k| c.starts_with(&format!("{}.", k.clause)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load() {
        let set = RuleSet::builtin();
        assert!(set.types.contains_key("CMD_SYS_UPGRADE"));
        assert!(set.rule("reply.missing").is_some());
    }

    #[test]
    fn lint_names_file_and_rule() {
        let bad = r#"{"rules": [{"id": "x.bad", "severity": "error", "message": "m",
            "check": {"kind": "schema", "when": {"type": "NO_SUCH"}, "fields": {"a": {"type": "strin"}}}}]}"#;
        let err = RuleSet::from_sources(vec![("bad.json".into(), bad.into())]).unwrap_err();
        let text = err[0].to_string();
        assert!(text.starts_with("bad.json:"), "{text}");
        let good_type_bad_kind = r#"{"rules": [{"id": "x.bad", "severity": "warning", "message": "m",
            "check": {"kind": "schema", "when": {"type": "NO_SUCH"}, "fields": {}}}]}"#;
        let err =
            RuleSet::from_sources(vec![("b.json".into(), good_type_bad_kind.into())]).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "b.json: rule x.bad: message type \"NO_SUCH\" is not in the type catalog"
        );
    }

    #[test]
    fn an_error_rule_needs_a_basis() {
        let rule = |extra: &str| {
            format!(
                r#"{{"rules": [{{"id": "v.x", "severity": "error", {extra} "message": "m",
                "check": {{"kind": "schema", "when": {{"type": "CMD_SYS_UPGRADE"}}, "fields": {{}}}}}}]}}"#
            )
        };
        let files = |text: String| {
            let mut f: Vec<(String, String)> = DEFAULT_FILES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect();
            f.push(("vendor.json".into(), text));
            f
        };
        let err = RuleSet::from_sources(files(rule(""))).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0]
                .to_string()
                .starts_with("vendor.json: rule v.x: an error rule needs a \"basis\""),
            "{}",
            err[0]
        );
        assert!(RuleSet::from_sources(files(rule(r#""basis": "   ","#))).is_err());
        let ok =
            RuleSet::from_sources(files(rule(r#""basis": "表6 \"jobId number 是\"","#))).unwrap();
        assert!(ok.rule("v.x").unwrap().def.basis.is_some());
        // Every built-in error rule carries its sentence.
        for r in &RuleSet::builtin().rules {
            if r.def.severity == crate::Severity::Error {
                assert!(
                    r.def.basis.as_deref().is_some_and(|b| !b.is_empty()),
                    "{}",
                    r.def.id
                );
            }
        }
    }

    #[test]
    fn a_rule_file_disables_rules_and_an_unknown_id_is_an_error() {
        let mut files: Vec<(String, String)> = DEFAULT_FILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        files.push((
            "off.json".into(),
            r#"{"disable": ["naming.key", "t10."]}"#.into(),
        ));
        let set = RuleSet::from_sources(files.clone()).unwrap();
        assert!(set.rule("naming.key").is_none());
        assert!(set.disabled.iter().any(|r| r.def.id == "naming.key"));
        assert!(set
            .disabled
            .iter()
            .any(|r| r.def.id == "t10.REP_SYS_STATUS"));
        assert!(set.rules.iter().all(|r| !r.def.id.starts_with("t10.")));
        files.push(("typo.json".into(), r#"{"disable": ["naming.kee"]}"#.into()));
        let err = RuleSet::from_sources(files).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "typo.json: disable: no rule with id \"naming.kee\""
        );
    }

    #[test]
    fn user_rules_extend_and_override() {
        let dir = std::env::temp_dir().join(format!("edgetap-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("vendor.json"),
            r#"{"types": {"CMD_VENDOR_PING": {"clause": "6.1.3", "channels": ["device"], "role": "command", "reply_codes": [{"codes": [200]}]}},
                "rules": [{"id": "reply.late", "severity": "warning", "message": "late", "check": {"kind": "reply_late", "deadline_s": 5}}]}"#,
        )
        .unwrap();
        let set = RuleSet::load(Some(&dir), false).unwrap();
        assert!(set.types.contains_key("CMD_VENDOR_PING"));
        assert_eq!(
            set.rule("reply.late").unwrap().def.severity,
            crate::Severity::Warning
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
