//! `edgetap rules`: list, lint, print.

use std::io::Write;

use super::{load_rules, print_rows};
use crate::cli::{ListFormat, RulesCommand};
use edgetap::rules::RuleSet;

pub fn run(command: RulesCommand, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    match command {
        RulesCommand::List { rules, format } => {
            let set = load_rules(&rules)?;
            list_rules(&set, format, stdout)?;
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
        RulesCommand::Print => {
            for (name, text) in edgetap::rules::DEFAULT_FILES {
                writeln!(stdout, "// ---- {name}\n{text}")?;
            }
            Ok(0)
        }
    }
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
