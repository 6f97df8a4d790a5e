//! `edgetap proxy`: settings, the live view, serve until Ctrl-C or SIGTERM, the
//! final report and exit code.

use std::io::Write;
use std::sync::Arc;

use super::{analyze_exit_code, load_rules, shown};
use crate::cli;
use edgetap::proxy::console::Console;
use edgetap::proxy::judge::{ConnNote, Live, Snapshot};
use edgetap::rules::RuleSet;

/// A listening live-view server.
type LiveHttp = Option<(std::net::TcpListener, Arc<edgetap::proxy::live::LiveView>)>;

/// `--http`: checks the address (loopback, or a token), binds it, and gives the
/// proxy the live view to keep up to date.
fn live_view(
    mut settings: edgetap::proxy::ProxySettings,
    args: &cli::ProxyArgs,
    rules: &Arc<RuleSet>,
) -> anyhow::Result<(edgetap::proxy::ProxySettings, LiveHttp)> {
    let Some(addr) = &args.http else {
        return Ok((settings, None));
    };
    let listener = super::bind_http(addr, args.http_token.as_deref())?;
    let view =
        Arc::new(edgetap::proxy::live::LiveView::new(rules.clone()).with_store(&args.store.dir));
    settings.live = Some(view.clone());
    Ok((settings, Some((listener, view))))
}

/// The proxy's TLS settings from --tls-cert/--tls-key/--upstream-tls/--upstream-ca.
fn proxy_tls(args: &cli::ProxyArgs) -> anyhow::Result<edgetap::proxy::tls::TlsSettings> {
    use edgetap::proxy::tls;
    let accept = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let upstream = match args.upstream_tls {
        true => Some(tls::upstream_config(
            &args.upstream,
            args.upstream_ca.as_deref(),
        )?),
        false => None,
    };
    Ok(tls::TlsSettings { accept, upstream })
}

/// The live console, and every finding as an EVE line (`--findings`).
struct Logged {
    console: Console,
    log: edgetap::eve::FindingLog,
}

impl Live for Logged {
    fn finding(&mut self, f: &edgetap::Finding) {
        self.console.finding(f);
        self.log.write(f, None, None);
    }
    fn grouped(&mut self, f: &edgetap::Finding, group: Option<usize>, first: bool) {
        self.console.grouped(f, group, first);
        self.log.write(f, None, None);
    }
    fn connection(&mut self, n: &ConnNote) {
        self.console.connection(n);
    }
    fn tick(&mut self, s: &Snapshot) {
        self.console.tick(s);
        self.log.flush();
    }
    fn skipped(&mut self, messages: u64) {
        self.console.skipped(messages);
    }
    fn finish(&mut self, s: &Snapshot) {
        self.console.finish(s);
        self.log.flush();
        if let Some(e) = &self.log.error {
            eprintln!("edgetap proxy: --findings: writing failed: {e}");
        }
    }
}

/// The proxy's exit code when something it forwarded was not recorded.
const EXIT_NOT_RECORDED: u8 = 4;

/// `edgetap proxy`: serves until Ctrl-C or SIGTERM, then prints the clause table.
pub fn run(args: cli::ProxyArgs) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    edgetap::proxy::limit_malloc_arenas();
    let rules = Arc::new(load_rules(&args.rules)?);
    let shown = shown(&args.shown, &rules)?;
    let store = edgetap::store::Store::open(&args.store.dir)?;
    store.set_keep_secrets(args.store_secrets);
    let stop_on_error = args.on_store_error == cli::OnStoreError::Stop;
    let failures = store.failures();
    let tls = proxy_tls(&args)?;
    let settings = edgetap::proxy::ProxySettings {
        upstream: args.upstream.clone(),
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{} → {}", args.listen, args.upstream)),
        max_connections: args.max_connections,
        max_buffered: args.max_buffered,
        max_packet: args.max_packet_size,
        websocket: args.websocket,
        tls,
        live: None,
        idle_timeout: args.idle_timeout.map(std::time::Duration::from_secs),
        judge_cpu: (args.judge_cpu < 100).then(|| f64::from(args.judge_cpu) / 100.0),
        ..Default::default()
    };
    let (settings, http) = live_view(settings, &args, &rules)?;
    let findings_log = match &args.findings {
        Some(p) => Some((
            edgetap::eve::FindingLog::open(
                p,
                "proxy",
                &format!("{} → {}", args.listen, args.upstream),
            )
            .with_context(|| format!("--findings {}", p.display()))?,
            p.as_os_str() == "-",
        )),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, view)) = http {
            eprintln!(
                "edgetap proxy: live view on http://{}/ (JSON under /api, /metrics)",
                listener.local_addr()?
            );
            let token = args.http_token.clone();
            tokio::spawn(async move {
                let stop = async {
                    let _ = http_stopped.await;
                };
                if let Err(e) = edgetap::proxy::http::serve(listener, view, token, stop).await {
                    eprintln!("edgetap proxy: live view stopped: {e}");
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
                _ = failures.notified(), if stop_on_error => {
                    eprintln!("edgetap proxy: store write failed; stopping (--on-store-error stop)");
                }
            }
        };
        eprintln!(
            "edgetap proxy: {} → {} (store {})",
            listener.local_addr()?,
            args.upstream,
            args.store.dir.display()
        );
        // First occurrence of each (edge, rule, field path), then "+N more" lines;
        // with --findings, every finding as an EVE line too.
        let live: Box<dyn Live> = match findings_log {
            Some((log, on_stdout)) => {
                let console = match on_stdout {
                    true => Console::new(Box::new(std::io::stderr())),
                    false => Console::stdout(),
                };
                Box::new(Logged { console, log })
            }
            None => Box::new(Console::stdout()),
        };
        let outcome =
            edgetap::proxy::run_live(listener, settings, rules, Some(store), live, shutdown).await?;
        let _ = http_stop.send(());
        anyhow::Ok(outcome)
    })?;
    // With --findings -, stdout carries the finding lines only.
    let mut stdout: Box<dyn Write> = match args.findings.as_deref() {
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stderr().lock()),
        _ => Box::new(std::io::stdout().lock()),
    };
    writeln!(stdout)?;
    let mut report = outcome.report;
    // One numbering: findings cite the frames of the capture's `captures export`,
    // as `captures show` and `analyze --capture` do (the judge counted events).
    if let (Some(id), Some(store)) = (outcome.capture, outcome.store.as_ref()) {
        match edgetap::store::export::frame_numbers(store, id) {
            Ok(frames) => {
                report.renumber(|f| frames.frame_of(f));
                report.renumber_chart(|f| frames.frame_of(f), |p| frames.frame_of_event(p));
                report.renumber_groups(|p| frames.frame_of_event(p));
            }
            Err(e) => eprintln!(
                "edgetap proxy: findings cite stored event numbers, not export frames: {e}"
            ),
        }
    }
    report.apply(&shown.filter);
    // A run that judged no protocol message proves nothing (exit 3, as `analyze`).
    let hint = (report.summary.connections == 0).then(|| {
        format!(
            "no connection came through the proxy: devices (or the platform) connect to \
             --listen {}, the proxy to --upstream {}",
            args.listen, args.upstream
        )
    });
    report.check_judged(hint.into_iter().collect());
    let text = edgetap::report::render(
        &edgetap::report::Document::of(&report),
        edgetap::report::Format::Table,
        &edgetap::report::Options::listing(shown.listing),
    );
    stdout.write_all(text.as_bytes())?;
    let lost = outcome
        .capture
        .zip(outcome.store.as_ref())
        .and_then(|(id, s)| s.not_recorded(id));
    if let Some(id) = outcome.capture {
        writeln!(
            stdout,
            "capture {id} stored in {}",
            args.store.dir.display()
        )?;
    }
    if let Some(lost) = &lost {
        writeln!(stdout, "{}", lost.line())?;
        eprintln!(
            "edgetap proxy: capture incomplete: {} (exit code 4)",
            lost.line()
        );
        return Ok(EXIT_NOT_RECORDED);
    }
    Ok(analyze_exit_code(&report))
}
