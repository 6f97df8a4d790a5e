//! edgetap: CLI → settings → run → exit code (0 clean, 1 error findings, 2 bad usage
//! or unreadable input).

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cli::{Cli, Command, Format, ListFormat, RulesArgs, RulesCommand};
use edgetap::analyze::{analyze_files, AnalyzeSettings};
use edgetap::pipeline::Sink;
use edgetap::rules::RuleSet;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGETAP_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`edgetap … | head`) is not an error.
            if e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("edgetap: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_rules(args: &RulesArgs) -> anyhow::Result<RuleSet> {
    RuleSet::load(args.dir.as_deref(), args.no_default_rules).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid rules:\n  {}", text.join("\n  "))
    })
}

/// Prints findings as they happen when stdout is a table on a terminal.
struct Quiet;
impl Sink for Quiet {}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Analyze(args) => {
            let rules = Arc::new(load_rules(&args.rules)?);
            let settings = AnalyzeSettings {
                files: args.files,
                ports: args.ports,
                max_packet: args.max_packet_size,
                progress: !args.no_progress,
            };
            let report = analyze_files(rules, &settings, &mut Quiet)?;
            let text = match args.format {
                Format::Table => report.to_table(),
                Format::Json => report.to_json() + "\n",
                Format::Junit => report.to_junit(),
            };
            stdout.write_all(text.as_bytes())?;
            Ok(u8::from(report.has_errors()))
        }
        Command::Rules { command } => match command {
            RulesCommand::List { rules, format } => {
                let set = load_rules(&rules)?;
                list_rules(&set, format, &mut stdout)?;
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
        },
    }
}

fn list_rules(set: &RuleSet, format: ListFormat, out: &mut dyn Write) -> anyhow::Result<()> {
    #[derive(tabled::Tabled, serde::Serialize)]
    struct Row {
        id: String,
        clause: String,
        table: String,
        severity: String,
        check: String,
        file: String,
    }
    let rows: Vec<Row> = set
        .rules
        .iter()
        .map(|r| Row {
            id: r.def.id.clone(),
            clause: r.def.clause.clone().unwrap_or_else(|| "(type's)".into()),
            table: r.def.table.clone().unwrap_or_default(),
            severity: r.def.severity.as_str().into(),
            check: check_name(&r.def.check),
            file: r.file.clone(),
        })
        .collect();
    match format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        ListFormat::Table => writeln!(
            out,
            "{}",
            tabled::Table::new(rows).with(tabled::settings::Style::sharp())
        )?,
    }
    Ok(())
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
