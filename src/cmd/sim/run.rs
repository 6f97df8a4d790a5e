//! The sims' front ends for the CLI: settings in, text out, an exit code back
//! (0 conforming, 1 a failed item or error finding). Each builds its own tokio runtime.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::Format;
use edgetap::broker::{BrokerError, BrokerSettings};
use edgetap::demo::{DemoError, DemoSettings};
use edgetap::report::{render, Options};
use edgetap::rules::RuleSet;
use edgetap::sim::edge::{EdgeSettings, EdgeStats};
use edgetap::sim::platform::PlatformSettings;
use edgetap::sim::{Protocol, SimError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A watch that turns true on Ctrl-C.
fn ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}

/// `edgetap broker`: runs until Ctrl-C.
pub fn broker(s: BrokerSettings, w: &mut dyn Write) -> Result<u8, RunError> {
    let b = edgetap::broker::start(&s)?;
    writeln!(
        w,
        "edgetap broker: MQTT 3.1.1 on {}, MQTT 5 on {} (Ctrl-C stops)",
        b.v4, b.v5
    )?;
    w.flush()?;
    runtime()?.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(0)
}

/// `edgetap sim edge`: runs until Ctrl-C or `run_for`, then prints the statistics.
pub fn edge(s: EdgeSettings, w: &mut dyn Write) -> Result<u8, RunError> {
    let stats: EdgeStats = runtime()?.block_on(async {
        let stop = ctrl_c();
        edgetap::sim::edge::run(s, stop).await
    });
    writeln!(w, "{}", stats.summary())?;
    if let Some(kib) = edgetap::sim::peak_rss_kib() {
        writeln!(w, "peak RSS {:.1} MiB", kib as f64 / 1024.0)?;
    }
    // Errors on stderr, as every command's; an edge that never connected is an
    // unreachable broker (2, as `replay` and `sim platform` say it), not findings (1).
    for e in stats.errors.iter().take(5) {
        eprintln!("edgetap: {e}");
    }
    Ok(if stats.connected < stats.edges {
        edgetap::report::EXIT_UNREADABLE
    } else {
        0
    })
}

/// `edgetap sim platform`: the plan against one edge, or `respond_only` for any edge.
pub fn platform(
    s: PlatformSettings,
    rules: Arc<RuleSet>,
    respond_only: bool,
    out: Format,
    shown: &edgetap::report::Shown,
    w: &mut dyn Write,
) -> Result<u8, RunError> {
    let rt = runtime()?;
    if respond_only {
        let n = rt.block_on(async {
            let stop = ctrl_c();
            edgetap::sim::platform::respond(&s.broker, s.protocol, stop).await
        })?;
        writeln!(w, "answered requests of {n} messages")?;
        return Ok(0);
    }
    let mut s = s;
    let mut r = rt.block_on(async {
        s.interrupt = Some(crate::cmd::interrupt());
        edgetap::sim::platform::run_plan(s, rules, None, None).await
    })?;
    if let Some(why) = &r.interrupted {
        eprintln!("edgetap: sim platform {why}; the report covers what ran (exit code 130)");
    }
    // Filters shape the report; the detection items are the plan's, whole.
    r.report.apply(&shown.filter);
    w.write_all(render(&r.document(), out, &Options::listing(shown.listing)).as_bytes())?;
    if r.interrupted.is_some() {
        return Ok(edgetap::replay::EXIT_INTERRUPTED);
    }
    Ok(u8::from(!r.passed()))
}

/// `edgetap demo`.
pub fn demo(s: DemoSettings, out: Format, w: &mut dyn Write) -> Result<u8, RunError> {
    let t0 = std::time::Instant::now();
    let (clean, faulty) = runtime()?.block_on(edgetap::demo::run(&s))?;
    let run1 =
        "=== Run 1: reference platform vs reference edge behind the edgetap proxy (conforming) ===";
    let run2 = format!(
        "=== Run 2: the same edge with fault \"{}\" (breaks {}, item {}) ===",
        s.fault.name(),
        s.fault.caught_by(),
        s.fault.item()
    );
    if out == Format::Table {
        writeln!(w, "{run1}\n")?;
        w.write_all(render(&clean.document("run 1"), out, &Options::default()).as_bytes())?;
        writeln!(w, "\n{run2}\n")?;
        w.write_all(render(&faulty.document("run 2"), out, &Options::default()).as_bytes())?;
    } else {
        // One document per format on stdout (a script parses it whole): the second
        // run appended to the first; the people's lines go to stderr.
        let mut doc = clean.document("run 1").titled("edgetap demo record");
        doc.appended.push(edgetap::report::Appended {
            heading: run2.trim_matches(|c| c == '=' || c == ' ').to_string(),
            label: "run 2".into(),
            doc: faulty.document("run 2"),
        });
        w.write_all(render(&doc, out, &Options::default()).as_bytes())?;
    }
    let caught = !faulty.plan.passed();
    // An outcome fault (a refusal, a missing job result) is conforming protocol: the
    // proxy reports it (info), the plan decides the item.
    let proxy_caught = faulty
        .proxy
        .findings
        .iter()
        .any(|f| f.rule == s.fault.caught_by());
    let result = format!(
        "run 1: {}; run 2: {}, {} ({:.1} s)",
        if clean.passed() {
            "every clause passes (plan and proxy)"
        } else {
            "FAILED"
        },
        if caught {
            "the plan catches the fault"
        } else {
            "the plan did NOT catch the fault"
        },
        match (proxy_caught, s.fault.outcome()) {
            (true, false) => "the proxy catches it too",
            (true, true) => "the proxy reports it as an outcome (info)",
            (false, _) => "the proxy did NOT catch it",
        },
        t0.elapsed().as_secs_f64()
    );
    if out == Format::Table {
        writeln!(w, "\n{result}")?;
    } else {
        eprintln!("edgetap demo: {result}");
    }
    Ok(u8::from(!clean.passed() || !caught))
}

pub fn protocol(mqtt5: bool) -> Protocol {
    if mqtt5 {
        Protocol::V5
    } else {
        Protocol::V4
    }
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
