//! The commands: each turns its parsed arguments into settings, runs, prints its
//! output and returns the exit code. `main.rs` parses and dispatches.

pub mod analyze;
pub mod bus;
pub mod captures;
pub mod fleet;
pub mod judge;
pub mod proxy;
pub mod replay;
pub mod rules;
pub mod sim;
pub mod watch;

use std::io::Write;

use crate::cli::{self, ListFormat, RulesArgs};
use edgetap::rules::RuleSet;

/// The rule set of `--rules`, `--no-default-rules`, the time limits, `--tz` and
/// `--disable`.
pub fn load_rules(args: &RulesArgs) -> anyhow::Result<RuleSet> {
    let mut set = RuleSet::load(args.dir.as_deref(), args.no_default_rules).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid rules:\n  {}", text.join("\n  "))
    })?;
    for (flag, v) in [
        ("--reply-timeout", args.reply_timeout),
        ("--job-timeout", args.job_timeout),
    ] {
        if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            anyhow::bail!("{flag} takes a number of seconds, 0 or more");
        }
    }
    set.set_limits(args.reply_timeout, args.job_timeout);
    set.tz_offset_s = args.tz;
    for id in &args.disable {
        set.disable(id)
            .map_err(|e| anyhow::anyhow!("--disable {id}: {e}"))?;
    }
    Ok(set)
}

/// The findings a report shows (`analyze`, and the final reports of `proxy` and `sim
/// platform`): --edge, --severity, --rule, --clause, and --each. A --rule or
/// --clause that names nothing of `rules` is refused (it would pass a CI gate).
pub fn shown(a: &cli::ShownArgs, rules: &RuleSet) -> anyhow::Result<edgetap::report::Shown> {
    use edgetap::Severity;
    let shown = edgetap::report::Shown {
        filter: edgetap::report::filter::Filter {
            edges: a.edges.clone(),
            min_severity: a.severity.map(|s| match s {
                cli::SeverityArg::Info => Severity::Info,
                cli::SeverityArg::Warning => Severity::Warning,
                cli::SeverityArg::Error => Severity::Error,
            }),
            rules: a.rules_shown.clone(),
            clauses: a.clauses.clone(),
        },
        listing: match a.each {
            true => edgetap::report::Listing::Each,
            false => edgetap::report::Listing::Grouped,
        },
    };
    shown.filter.check(rules).map_err(anyhow::Error::msg)?;
    Ok(shown)
}

/// `--http ADDR` of `proxy` and `watch`: checks the address (loopback, or a token)
/// and binds it.
pub fn bind_http(addr: &str, token: Option<&str>) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context as _;
    use std::net::ToSocketAddrs as _;
    let addrs: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| {
            format!("--http {addr}: not an address (use HOST:PORT, e.g. 127.0.0.1:8080)")
        })?
        .collect();
    for a in &addrs {
        edgetap::proxy::http::check_bind(a, token).map_err(anyhow::Error::msg)?;
    }
    std::net::TcpListener::bind(&addrs[..]).with_context(|| format!("--http {addr}: cannot listen"))
}

/// A listing as a table for people or a JSON array for scripts.
pub fn print_rows<T: tabled::Tabled + serde::Serialize>(
    rows: Vec<T>,
    format: ListFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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

/// The exit code of `analyze` and `proxy` (2 unreadable input, 1 error findings, 3
/// nothing judged, 0), with the reason on stderr when it is not 0: the report on
/// stdout may be going to a file CI does not show.
pub fn analyze_exit_code(report: &edgetap::report::Report) -> u8 {
    let s = &report.summary;
    for m in &s.unreadable {
        eprintln!("edgetap: unreadable capture: {m}");
    }
    for m in s.incomplete.iter().filter(|m| !s.unreadable.contains(m)) {
        eprintln!("edgetap: warning: capture not read in full: {m}");
    }
    let code = report.exit_code();
    if !s.judged {
        // The code said is the code returned: errors (1) or an unreadable input (2)
        // come first.
        let said = match code {
            1 => "exit code 1: error findings come first",
            2 => "exit code 2: an unreadable input comes first",
            _ => "exit code 3",
        };
        eprintln!("edgetap: nothing judged: no protocol message in the input ({said})");
        for r in &s.not_judged_because {
            eprintln!("  {r}");
        }
    }
    code
}

/// A watch that turns to the signal's name on the first SIGINT (Ctrl-C) or SIGTERM:
/// the run stops and the report of what ran is written. A second signal exits at once (`replay`, `sim platform`).
pub fn interrupt() -> tokio::sync::watch::Receiver<Option<String>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for n in 0.. {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if n > 0 {
                eprintln!("edgetap: {name} again: exiting without a report");
                std::process::exit(edgetap::replay::EXIT_INTERRUPTED.into());
            }
            let _ = tx.send(Some(name.to_string()));
        }
    });
    rx
}

/// Ctrl-C, SIGTERM, or `duration` after the first poll (the future counts from
/// then): how `watch`, `watch --bus`, `judge` and `fleet` end.
pub fn shutdown(
    duration: Option<std::time::Duration>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
            _ = timer => {}
        }
    })
}
