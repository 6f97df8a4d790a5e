//! `edgetap rules`: list, lint, print.

use std::io::Write;

use super::{load_rules, print_rows};
use crate::cli::{ListFormat, RulesCommand, RulesListFormat};
use edgetap::rules::{policy, RuleSet};

pub fn run(command: RulesCommand, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    match command {
        RulesCommand::List { rules, format } => {
            let set = load_rules(&rules)?;
            match format {
                RulesListFormat::Md => write!(stdout, "{}", rules_page(&set))?,
                RulesListFormat::Table => list_rules(&set, ListFormat::Table, stdout)?,
                RulesListFormat::Json => list_rules(&set, ListFormat::Json, stdout)?,
            }
            Ok(0)
        }
        RulesCommand::Lint { dir, alone } => match RuleSet::load(Some(&dir), alone) {
            Ok(set) => {
                writeln!(
                    stdout,
                    "{}: {} rules, {} message types: OK",
                    dir.display(),
                    set.rules.len(),
                    set.types.len()
                )?;
                Ok(0)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s)", errors.len());
                Ok(2)
            }
        },
        RulesCommand::Schema { rules, topic, emqx } => {
            let set = load_rules(&rules)?;
            schema(&set, topic.as_deref(), emqx, stdout)
        }
        RulesCommand::Print => {
            for (name, text) in edgetap::rules::DEFAULT_FILES {
                writeln!(stdout, "// ---- {name}\n{text}")?;
            }
            Ok(0)
        }
    }
}

/// `rules schema`: every topic's schema with what they cannot check, one topic's
/// schema alone, or the EMQX configuration.
fn schema(
    set: &RuleSet,
    topic: Option<&str>,
    emqx: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    use edgetap::rules::json_schema;
    let e = json_schema::export(set);
    if emqx {
        out.write_all(json_schema::emqx_config(&e).as_bytes())?;
        return Ok(0);
    }
    if let Some(f) = topic {
        let Some(t) = e.topics.iter().find(|t| t.filter == f) else {
            let known: Vec<&str> = e.topics.iter().map(|t| t.filter.as_str()).collect();
            anyhow::bail!(
                "--topic {f}: no message type travels there; topics: {}",
                known.join(", ")
            );
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&t.schema)?)?;
        return Ok(0);
    }
    let mut topics = serde_json::Map::new();
    for t in &e.topics {
        topics.insert(t.filter.clone(), t.schema.clone());
    }
    let doc = serde_json::json!({
        "$comment": "T/YQDEIF 003-2022 tables as JSON Schema (draft-06), one per topic, from edgetap's error rules. A schema sees one message at a time: see cannot_check; `edgetap watch` judges those.",
        "cannot_check": e.cannot_check,
        "left_out": e.left_out,
        "topics": topics,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    Ok(0)
}

fn list_rules(set: &RuleSet, format: ListFormat, out: &mut dyn Write) -> anyhow::Result<()> {
    #[derive(tabled::Tabled, serde::Serialize)]
    struct Row {
        id: String,
        /// "on", or "disabled" (--disable or a rule file's `disable`).
        state: &'static str,
        clause: String,
        table: String,
        severity: String,
        /// The declared reading of the basis (severity policy), when it has one.
        #[tabled(skip)]
        #[serde(skip_serializing_if = "Option::is_none")]
        reading: Option<&'static str>,
        check: String,
        file: String,
        /// The sentence of the standard the rule enforces.
        basis: String,
        #[tabled(skip)]
        #[serde(skip_serializing_if = "Option::is_none")]
        review: Option<String>,
    }
    // The table shows the start of the basis; --format json shows it whole.
    let table = format == ListFormat::Table;
    let on = set.rules.iter().map(|r| (r, "on"));
    let off = set.disabled.iter().map(|r| (r, "disabled"));
    let rows: Vec<Row> = on
        .chain(off)
        .map(|(r, state)| Row {
            id: r.def.id.clone(),
            state,
            clause: r.def.clause.clone().unwrap_or_else(|| "(type's)".into()),
            table: r.def.table.clone().unwrap_or_default(),
            severity: r.def.severity.as_str().into(),
            reading: r.def.reading.map(policy::Reading::as_str),
            check: check_name(&r.def.check),
            file: r.file.clone(),
            basis: match (&r.def.basis, table) {
                (None, _) => "—".into(),
                (Some(b), true) if b.chars().count() > 40 => {
                    format!("{}…", b.chars().take(40).collect::<String>())
                }
                (Some(b), _) => b.to_string(),
            },
            review: r.def.review.clone(),
        })
        .collect();
    print_rows(rows, format, out)
}

/// Every rule on one Markdown page, for a reviewer to check severities against the
/// sentences they rest on: id, clause, table, severity, reading and the whole basis.
/// docs/rules.md is this page for the built-in rules (a test keeps them equal).
fn rules_page(set: &RuleSet) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut page = String::from(
        "# Rules\n\n\
         Every rule of edgetap, with the sentence of T/YQDEIF 003—2022 it enforces. \
         Generated by `edgetap rules list --format md` (a test keeps this page equal to \
         its output: regenerate it, do not edit it).\n\n\
         One severity policy (`src/rules/policy.rs`, checked by `edgetap rules lint`):\n\n\
         - **error** where normative text is broken: 应/须 (shall), a table's 是 \
         (required) column, an explicit type, range, enum, length, code or topic, and \
         order where the text orders it (\"先…之后\", a sequence figure);\n\
         - **warning** where the text gives an example or a typical value (如, 例如, \
         典型, 可以, 宜, an open list), or implies an order it does not state;\n\
         - **info** for timing, heuristics, outcomes and what edgetap cannot know.\n\n\
         The reading column names a rule's declared reading where its severity alone \
         does not say why: `implied` (warning), `timing`, `heuristic`, `outcome`, \
         `unknowable` (info); blank, the reading its severity names. Lint refuses an error whose basis only gives an example or \
         a permission, and a warning or info whose basis has normative words unless \
         the rule declares its reading and says why in its review (`rules list --format \
         json` shows the review).\n\n\
         | id | clause | table | severity | reading | basis |\n\
         |---|---|---|---|---|---|\n",
    );
    let on = set.rules.iter().map(|r| (r, ""));
    let off = set.disabled.iter().map(|r| (r, " (disabled)"));
    for (r, state) in on.chain(off) {
        let d = &r.def;
        page.push_str(&format!(
            "| `{}`{state} | {} | {} | {} | {} | {} |\n",
            d.id,
            d.clause.as_deref().unwrap_or("(type's)"),
            d.table.as_deref().unwrap_or(""),
            d.severity.as_str(),
            d.reading.map_or("", policy::Reading::as_str),
            cell(d.basis.as_deref().unwrap_or("—")),
        ));
    }
    page
}

fn check_name(c: &edgetap::rules::model::Check) -> String {
    let dbg = format!("{c:?}");
    let name: String = dbg.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut snake = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(ch.to_ascii_lowercase());
    }
    snake
}
