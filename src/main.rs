//! edgetap: CLI → settings → run → exit code (0 clean, 1 error findings, 2 bad usage
//! or unreadable input; `analyze` and `proxy` also 3: nothing judged; `proxy` 4:
//! something forwarded was not recorded). The commands live in `cmd/`.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGETAP_LOG")
                // rustls warns for each device that sends an IP address as SNI:
                // accepted (as no SNI), not news.
                .unwrap_or_else(|_| "warn,rumqttd=off,rustls=error".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("edgetap: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: a message that already
/// quotes its cause (`cannot open: No such file…`) does not get it a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Analyze(args) => cmd::analyze::run(args, &mut stdout),
        Command::Broker(a) => cmd::sim::broker(a, &mut stdout),
        Command::Sim { command } => match command {
            cli::SimCommand::Edge(a) => cmd::sim::edge(a, &mut stdout),
            cli::SimCommand::Platform(a) => cmd::sim::platform(a, &mut stdout),
        },
        Command::Demo(a) => cmd::sim::demo(a, &mut stdout),
        Command::Proxy(args) => {
            // The live findings print from the analysis thread.
            drop(stdout);
            cmd::proxy::run(args)
        }
        Command::Captures { command } => cmd::captures::run(command, &mut stdout),
        Command::Replay(a) => cmd::replay::run(a, &mut stdout),
        Command::Rules { command } => cmd::rules::run(command, &mut stdout),
        Command::Watch(a) => {
            // The live console prints from the judge's thread.
            drop(stdout);
            cmd::watch::run(a)
        }
        Command::Bus { command } => cmd::bus::run(command, &mut stdout),
        Command::Judge(a) => cmd::judge::run(a),
        Command::Fleet(a) => cmd::fleet::run(a, &mut stdout),
    }
}
