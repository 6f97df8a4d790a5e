//! `edgetap watch`: settings, subscribe, judge until Ctrl-C, SIGTERM or
//! --duration-ms, then the final report and exit code (as `analyze`).

use std::io::Write;
use std::sync::Arc;

use super::{analyze_exit_code, load_rules, shown};
use crate::cli;
use edgetap::watch::judging::Outputs;
use edgetap::watch::WatchSettings;

pub fn run(args: cli::WatchArgs) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    let rules = Arc::new(load_rules(&args.rules)?);
    let shown = shown(&args.shown, &rules)?;
    let mut settings = WatchSettings::new(&args.broker);
    settings.filters = args.topics.clone();
    settings.protocol = match args.mqtt5 {
        true => edgetap::sim::Protocol::V5,
        false => edgetap::sim::Protocol::V4,
    };
    settings.tls_ca = args.tls_ca.clone();
    settings.max_packet = args.max_packet_size;
    if let Some(id) = &args.client_id {
        settings.client_id = id.clone();
    }
    if let Some(url) = &args.bus {
        return super::bus::watch(&settings, url, args.duration_ms);
    }
    let source = settings.source();
    // With --findings -, stdout carries the finding lines only.
    let lines_on_stdout = args.findings.as_deref() == Some(std::path::Path::new("-"));
    let log = match &args.findings {
        Some(p) => Some(
            edgetap::eve::FindingLog::open(p, "watch", &source)
                .with_context(|| format!("--findings {}", p.display()))?,
        ),
        None => None,
    };
    // The live console shares stdout with the table only: a JSON, JUnit or HTML
    // report (or the finding lines) on stdout stays whole.
    let live = match lines_on_stdout || args.format != cli::Format::Table {
        true => edgetap::proxy::console::Console::new(Box::new(std::io::stderr())),
        false => edgetap::proxy::console::Console::stdout(),
    };
    let store = match &args.store {
        Some(dir) => {
            let addr = args
                .broker
                .rsplit_once('@')
                .map_or(args.broker.as_str(), |(_, a)| a);
            let name = args.name.clone().unwrap_or_else(|| format!("watch {addr}"));
            let version = format!(
                "edgetap {} ({})",
                env!("CARGO_PKG_VERSION"),
                rules.files.join(", ")
            );
            Some(
                edgetap::watch::record::Recorder::start(
                    dir,
                    &name,
                    addr,
                    &settings.client_id,
                    &version,
                )
                .with_context(|| format!("--store {}", dir.display()))?,
            )
        }
        None => None,
    };
    // --http: the proxy's live view, kept up to date by the judge.
    let http = match &args.http {
        Some(addr) => {
            let listener = super::bind_http(addr, args.http_token.as_deref())?;
            let mut view = edgetap::proxy::live::LiveView::new(rules.clone());
            if let Some(dir) = &args.store {
                view = view.with_store(dir);
            }
            Some((listener, Arc::new(view)))
        }
        None => None,
    };
    let outputs = Outputs {
        live: Box::new(live),
        log,
        chart: args.format.charts(),
        store,
        view: http.as_ref().map(|(_, v)| v.clone()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let duration = args.duration_ms.map(std::time::Duration::from_millis);
    let outcome = rt.block_on(async {
        // The duration counts from the subscription (the future is first polled then).
        let shutdown = super::shutdown(duration)?;
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, view)) = http {
            eprintln!(
                "edgetap watch: live view on http://{}/ (JSON under /api, /metrics)",
                listener.local_addr()?
            );
            let token = args.http_token.clone();
            tokio::spawn(async move {
                let stop = async {
                    let _ = http_stopped.await;
                };
                if let Err(e) = edgetap::proxy::http::serve(
                    listener,
                    view,
                    token,
                    edgetap::proxy::http::HttpLimits::default(),
                    stop,
                )
                .await
                {
                    eprintln!("edgetap watch: live view stopped: {e}");
                }
            });
        }
        let up = || {
            eprintln!(
                "edgetap watch: subscribed to {source} as {}",
                settings.client_id
            )
        };
        let outcome = edgetap::watch::run(&settings, rules, outputs, up, shutdown).await?;
        let _ = http_stop.send(());
        anyhow::Ok(outcome)
    })?;
    let mut out: Box<dyn Write> = match lines_on_stdout {
        true => Box::new(std::io::stderr().lock()),
        false => Box::new(std::io::stdout().lock()),
    };
    if args.format == cli::Format::Table {
        writeln!(out)?;
    }
    let mut report = outcome.report;
    report.apply(&shown.filter);
    report.check_judged(vec![format!(
        "the broker delivered no message on a protocol topic (/v1/{{edgeId}}/{{channel}}/{{role}}) \
         to the subscription {}: do the edges publish to this broker?",
        args.topics.join(", ")
    )]);
    let text = edgetap::report::render(
        &edgetap::report::Document::of(&report),
        args.format,
        &edgetap::report::Options::listing(shown.listing),
    );
    out.write_all(text.as_bytes())?;
    out.flush()?;
    eprintln!(
        "edgetap watch: judged {} deliveries; lag from arrival to judging: mean {:.1} ms, max {:.1} ms",
        outcome.deliveries,
        outcome.lag_mean_us as f64 / 1e3,
        outcome.lag_max_us as f64 / 1e3
    );
    if let Some((id, error)) = &outcome.capture {
        let dir = args
            .store
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
            .display();
        eprintln!("edgetap watch: recorded as capture {id} in {dir} (edgetap analyze --capture {id} --store {dir})");
        if let Some(e) = error {
            eprintln!("edgetap watch: the capture is incomplete: {e}");
        }
    }
    for o in &outcome.outages {
        eprintln!("edgetap watch: {o}");
    }
    if let Some(e) = &outcome.log_error {
        eprintln!(
            "edgetap watch: --findings: writing failed after {} lines: {e}",
            outcome.logged
        );
        return Ok(edgetap::report::EXIT_UNREADABLE);
    }
    Ok(analyze_exit_code(&report))
}
