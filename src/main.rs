//! edgetap: CLI → settings → run → exit code (0 clean, 1 error findings, 2 bad usage
//! or unreadable input; `analyze` and `proxy` also 3: nothing judged; `proxy` 4:
//! something forwarded was not recorded).

mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cli::{Cli, Command, Format, ListFormat, RulesArgs, RulesCommand};
use edgetap::analyze::{analyze_files, AnalyzeSettings};
use edgetap::pipeline::Sink;

struct NoSink;
impl Sink for NoSink {}
use edgetap::rules::RuleSet;

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

fn load_rules(args: &RulesArgs) -> anyhow::Result<RuleSet> {
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

/// Prints findings as they happen when stdout is a table on a terminal.

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Analyze(args) => {
            let rules = Arc::new(load_rules(&args.rules)?);
            let edgetap::report::Shown { filter, listing } = shown(&args.shown, &rules)?;
            let settings = AnalyzeSettings {
                files: args.files,
                ports: args.ports,
                max_packet: args.max_packet_size,
                progress: !args.no_progress,
            };
            // The HTML record charts the message sequence of each edge.
            let chart = args.format == Format::Html;
            let mut report = match args.capture {
                Some(id) => {
                    analyze_capture(&args.store_dir, id, rules, args.max_packet_size, chart)?
                }
                // EDGETAP_THREADS=1: one thread (the benchmark compares both).
                None if std::env::var("EDGETAP_THREADS").as_deref() == Ok("1") => {
                    let mut timeline = edgetap::report::timeline::Timeline::new();
                    let sink: &mut dyn Sink = match chart {
                        true => &mut timeline,
                        false => &mut NoSink,
                    };
                    let report = analyze_files(rules, &settings, sink)?;
                    report.with_timeline(chart.then_some(timeline))
                }
                None => {
                    // Every finding is listed only where the output lists them: the
                    // JSON, --each, and the HTML record's charts. The table and JUnit
                    // show groups, so they keep the first findings and count the rest
                    // (memory flat however many findings a capture holds).
                    let lists_all = matches!(args.format, Format::Json | Format::Html)
                        || listing == edgetap::report::Listing::Each;
                    let keep = (!lists_all).then_some(edgetap::report::LISTED_FINDINGS);
                    edgetap::analyze::analyze_files_parallel_charted(rules, &settings, chart, keep)?
                }
            };
            report.apply(&filter);
            let text = match args.format {
                Format::Table => report.table(listing),
                Format::Json => report.to_json() + "\n",
                Format::Junit => report.to_junit(),
                Format::Html => report.to_html(),
            };
            stdout.write_all(text.as_bytes())?;
            Ok(analyze_exit_code(&report))
        }
        Command::Broker(a) => {
            let mut s = edgetap::broker::BrokerSettings::on(a.listen);
            if let Some(v5) = a.listen_v5 {
                s.v5 = v5;
            }
            Ok(edgetap::sim::run::broker(s, &mut stdout)?)
        }
        Command::Sim { command } => {
            use edgetap::sim::run::{ms, protocol};
            match command {
                cli::SimCommand::Edge(a) => {
                    let mut s = edgetap::sim::edge::EdgeSettings::new(&a.broker, &a.edge_id);
                    s.count = a.count;
                    s.protocol = protocol(a.mqtt5);
                    s.period = ms(a.period_ms);
                    s.job_time = ms(a.job_ms);
                    s.policy_second = ms(a.policy_ms);
                    s.alarm_after = (a.alarm_ms > 0).then(|| ms(a.alarm_ms));
                    s.topo = !a.no_topo;
                    s.run_for = a.duration_ms.map(ms);
                    for f in &a.faults {
                        s.faults.push(edgetap::sim::edge::Fault::parse(f)?);
                    }
                    Ok(edgetap::sim::run::edge(s, &mut stdout)?)
                }
                cli::SimCommand::Platform(a) => {
                    let rules = Arc::new(load_rules(&a.rules)?);
                    let shown = shown(&a.shown, &rules)?;
                    let edge = a.edge_id.clone().unwrap_or_default();
                    let mut s = edgetap::sim::platform::PlatformSettings::new(&a.broker, &edge);
                    s.protocol = protocol(a.mqtt5);
                    s.wait = ms(a.wait_ms);
                    s.edge_wait = ms(a.edge_wait_ms);
                    // The plan needs a limit to fail an item; the rules' own stays
                    // off unless the user set --job-timeout.
                    s.job_timeout =
                        std::time::Duration::from_secs_f64(a.rules.job_timeout.unwrap_or(60.0));
                    s.package = package_source(&a);
                    s.capture = a.capture;
                    let out = sim_output(a.format);
                    Ok(edgetap::sim::run::platform(
                        s,
                        rules,
                        a.respond_only,
                        out,
                        &shown,
                        &mut stdout,
                    )?)
                }
            }
        }
        Command::Demo(a) => {
            let s = edgetap::demo::DemoSettings {
                fault: edgetap::sim::edge::Fault::parse(&a.fault)?,
                protocol: edgetap::sim::run::protocol(a.mqtt5),
            };
            Ok(edgetap::sim::run::demo(
                s,
                sim_output(a.format),
                &mut stdout,
            )?)
        }
        Command::Proxy(args) => {
            // The live findings print from the analysis thread.
            drop(stdout);
            run_proxy(args)
        }
        Command::Captures { command } => run_captures(command, &mut stdout),
        Command::Replay(a) => run_replay(a, &mut stdout),
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

/// The findings a report shows (`analyze`, and the final reports of `proxy` and `sim
/// platform`): --edge, --severity, --rule, --clause, and --each. A --rule or
/// --clause that names nothing of `rules` is refused (it would pass a CI gate).
fn shown(a: &cli::ShownArgs, rules: &RuleSet) -> anyhow::Result<edgetap::report::Shown> {
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

/// A listing as a table for people or a JSON array for scripts.
fn print_rows<T: tabled::Tabled + serde::Serialize>(
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

/// `--package` / `--package-url` of `sim platform`.
fn package_source(a: &cli::SimPlatformArgs) -> edgetap::sim::package::PackageSource {
    use edgetap::sim::package::PackageSource;
    if let Some(path) = &a.package {
        PackageSource::Serve {
            path: path.clone(),
            listen: a
                .http_listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            advertise: a.http_advertise.clone(),
            md5: a.package_md5.clone(),
        }
    } else if let Some(url) = &a.package_url {
        PackageSource::Url {
            url: url.clone(),
            md5: a.package_md5.clone().unwrap_or_default(),
            size: a.package_size,
        }
    } else {
        PackageSource::Placeholder
    }
}

fn sim_output(f: Format) -> edgetap::sim::run::Output {
    match f {
        Format::Table => edgetap::sim::run::Output::Table,
        Format::Json => edgetap::sim::run::Output::Json,
        Format::Junit => edgetap::sim::run::Output::Junit,
        Format::Html => edgetap::sim::run::Output::Html,
    }
}

/// The exit code of `analyze` and `proxy` (2 unreadable input, 1 error findings, 3
/// nothing judged, 0), with the reason on stderr when it is not 0: the report on
/// stdout may be going to a file CI does not show.
fn analyze_exit_code(report: &edgetap::report::Report) -> u8 {
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

fn analyze_capture(
    dir: &std::path::Path,
    id: u64,
    rules: Arc<RuleSet>,
    max_packet: usize,
    chart: bool,
) -> anyhow::Result<edgetap::report::Report> {
    let store = edgetap::store::Store::open_existing(dir)?;
    let settings = edgetap::pipeline::Settings { max_packet };
    let mut report =
        edgetap::store::replay::analyze_capture_charted(&store, id, rules, settings, chart)?;
    // Findings cite the frame numbers `captures export` gives, not the store's chunks.
    let frames = edgetap::store::export::frame_numbers(&store, id)?;
    report.renumber(|f| frames.frame_of(f));
    // What is not in the store: never recorded (disk full) or damaged since.
    report
        .summary
        .incomplete
        .extend(edgetap::store::replay::gaps(&store, id)?);
    report.check_judged(vec![]);
    Ok(report)
}

/// A listening live-view server.
type LiveHttp = Option<(std::net::TcpListener, Arc<edgetap::live::LiveView>)>;

/// `--http`: checks the address (loopback, or a token), binds it, and gives the
/// proxy the live view to keep up to date.
fn live_view(
    mut settings: edgetap::proxy::ProxySettings,
    args: &cli::ProxyArgs,
    rules: &Arc<RuleSet>,
) -> anyhow::Result<(edgetap::proxy::ProxySettings, LiveHttp)> {
    use anyhow::Context as _;
    use std::net::ToSocketAddrs as _;
    let Some(addr) = &args.http else {
        return Ok((settings, None));
    };
    let addrs: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| {
            format!("--http {addr}: not an address (use HOST:PORT, e.g. 127.0.0.1:8080)")
        })?
        .collect();
    for a in &addrs {
        edgetap::proxy::http::check_bind(a, args.http_token.as_deref())
            .map_err(anyhow::Error::msg)?;
    }
    let listener = std::net::TcpListener::bind(&addrs[..])
        .with_context(|| format!("--http {addr}: cannot listen"))?;
    let view = Arc::new(edgetap::live::LiveView::new(rules.clone()).with_store(&args.store.dir));
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

/// The proxy's exit code when something it forwarded was not recorded.
const EXIT_NOT_RECORDED: u8 = 4;

/// `edgetap proxy`: serves until Ctrl-C or SIGTERM, then prints the clause table.
fn run_proxy(args: cli::ProxyArgs) -> anyhow::Result<u8> {
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
        // First occurrence of each (edge, rule, field path), then "+N more" lines.
        let live = Box::new(edgetap::proxy::console::Console::stdout());
        let outcome =
            edgetap::proxy::run_live(listener, settings, rules, Some(store), live, shutdown).await?;
        let _ = http_stop.send(());
        anyhow::Ok(outcome)
    })?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout)?;
    let mut report = outcome.report;
    // One numbering: findings cite the frames of the capture's `captures export`,
    // as `captures show` and `analyze --capture` do (the judge counted events).
    if let (Some(id), Some(store)) = (outcome.capture, outcome.store.as_ref()) {
        match edgetap::store::export::frame_numbers(store, id) {
            Ok(frames) => {
                report.renumber(|f| frames.frame_of(f));
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
    stdout.write_all(report.table(shown.listing).as_bytes())?;
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

fn run_captures(command: cli::CapturesCommand, out: &mut dyn Write) -> anyhow::Result<u8> {
    use cli::CapturesCommand as C;
    use edgetap::store::Store;
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| us.to_string())
    };
    match command {
        C::List { store, format } => {
            let store = Store::open_existing(&store.dir)?;
            #[derive(serde::Serialize, tabled::Tabled)]
            struct Row {
                id: u64,
                name: String,
                started: String,
                #[tabled(display_with = "show_ended")]
                ended: Option<String>,
                connections: u64,
                packets: u64,
                findings: u64,
                bytes: u64,
                /// "complete", or what the proxy could not record.
                recorded: String,
                #[tabled(skip)]
                not_recorded: Option<edgetap::store::NotRecorded>,
                #[tabled(skip)]
                listen: String,
                #[tabled(skip)]
                upstream: String,
                #[tabled(skip)]
                rules_version: String,
            }
            fn show_ended(e: &Option<String>) -> String {
                e.clone().unwrap_or_else(|| "(running or killed)".into())
            }
            let rows: Vec<Row> = store
                .captures()?
                .into_iter()
                .map(|m| Row {
                    id: m.id,
                    name: m.name,
                    started: time(m.started_us),
                    ended: m.ended_us.map(time),
                    connections: m.connections,
                    packets: m.packets,
                    findings: m.findings,
                    bytes: m.bytes,
                    recorded: match &m.not_recorded {
                        None => "complete".into(),
                        Some(n) => format!("INCOMPLETE: {} bytes not recorded", n.bytes),
                    },
                    not_recorded: m.not_recorded,
                    listen: m.listen,
                    upstream: m.upstream,
                    rules_version: m.rules_version,
                })
                .collect();
            print_rows(rows, format, out)?;
            Ok(0)
        }
        C::Show {
            id,
            store,
            format,
            show_secrets,
            payloads,
        } => {
            let store = Store::open_existing(&store.dir)?;
            let meta = store.capture(id)?;
            let conns = store.conns(id)?;
            let packets: Vec<edgetap::store::PacketRecord> = store
                .packets(id)
                .map(|p| p.map(|p| if show_secrets { p } else { p.redacted() }))
                .collect::<Result<_, _>>()?;
            let mut groups = store.finding_groups(id)?;
            let gaps = edgetap::store::replay::gaps(&store, id)?;
            // Findings cite the frame numbers of `captures export`.
            let frames = edgetap::store::export::frame_numbers(&store, id)?;
            groups.renumber(&frames);
            // The client id of each connection, from its CONNECT.
            let client_ids: std::collections::BTreeMap<u64, String> = packets
                .iter()
                .filter_map(|p| Some((p.conn, p.client_id.clone()?)))
                .collect();
            let messages = match payloads {
                true => edgetap::replay::source::stored_messages(
                    &store,
                    id,
                    Arc::new(RuleSet::builtin()),
                    show_secrets,
                )?,
                false => vec![],
            };
            match format {
                ListFormat::Json => {
                    let mut v = serde_json::json!({
                        "gaps": gaps,
                        "finding_groups": groups,
                        "capture": meta,
                        "connections": conns,
                        "client_ids": client_ids,
                        "packets": packets,
                        "findings": groups.examples(),
                    });
                    if payloads {
                        v["messages"] = serde_json::to_value(&messages)?;
                    }
                    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                }
                ListFormat::Table => {
                    writeln!(
                        out,
                        "capture {} \"{}\": {} → {}\nstarted {}, ended {}\nrules: {}\n{} connections, {} chunks, {} bytes, {} MQTT packets, {} findings\n",
                        meta.id,
                        meta.name,
                        meta.listen,
                        meta.upstream,
                        time(meta.started_us),
                        meta.ended_us.map(time).unwrap_or_else(|| "(running or killed)".into()),
                        meta.rules_version,
                        meta.connections,
                        meta.chunks,
                        meta.bytes,
                        meta.packets,
                        meta.findings
                    )?;
                    for g in &gaps {
                        writeln!(out, "{g}")?;
                    }
                    if !gaps.is_empty() {
                        writeln!(out)?;
                    }
                    for c in &conns {
                        writeln!(
                            out,
                            "conn {} {} → {}: {}, client id {}",
                            c.conn,
                            c.client,
                            c.server,
                            c.end.as_deref().unwrap_or("open"),
                            client_ids.get(&c.conn).map_or("(no CONNECT seen)", |s| s)
                        )?;
                    }
                    writeln!(out)?;
                    for p in &packets {
                        let mut line = format!(
                            "{} conn {} {} chunk {} {} len {}",
                            time(p.time_us),
                            p.conn,
                            p.side,
                            p.chunk,
                            p.packet_type,
                            p.len
                        );
                        for (k, v) in [
                            ("client_id", &p.client_id),
                            ("version", &p.version),
                            ("username", &p.username),
                            ("password", &p.password),
                            ("topic", &p.topic),
                        ] {
                            if let Some(v) = v {
                                line.push_str(&format!(" {k}={v}"));
                            }
                        }
                        writeln!(out, "{line}")?;
                    }
                    if payloads {
                        writeln!(out, "\nMessages ({}):", messages.len())?;
                        for m in &messages {
                            writeln!(
                                out,
                                "{} conn {} ({}) {} chunk {} {} {}",
                                time(m.time_us),
                                m.conn,
                                m.client_id.as_deref().unwrap_or("?"),
                                m.side.arrow(),
                                m.chunk,
                                m.topic,
                                m.payload
                            )?;
                        }
                    }
                    if !groups.groups.is_empty() {
                        writeln!(
                            out,
                            "\nFindings: {} in {} groups by edge, rule and field path (every occurrence: edgetap analyze --capture {id}):",
                            groups.total,
                            groups.groups.len()
                        )?;
                    }
                    for g in &groups.groups {
                        writeln!(out, "  {}", g.line())?;
                    }
                    if groups.ungrouped > 0 {
                        writeln!(
                            out,
                            "  … and {} findings of further groups (not kept)",
                            groups.ungrouped
                        )?;
                    }
                }
            }
            Ok(0)
        }
        C::Delete { id, store } => {
            let store = Store::open_existing(&store.dir)?;
            store.delete(id)?;
            writeln!(out, "capture {id} deleted")?;
            Ok(0)
        }
        C::Export {
            id,
            pcapng,
            store,
            show_secrets,
        } => {
            use anyhow::Context as _;
            let store = Store::open_existing(&store.dir)?;
            let file = std::fs::File::create(&pcapng)
                .with_context(|| format!("create {}", pcapng.display()))?;
            let s = edgetap::store::export::export_pcapng(
                &store,
                id,
                std::io::BufWriter::new(file),
                show_secrets,
            )?;
            writeln!(
                out,
                "{}: {} frames, {} finding comments",
                pcapng.display(),
                s.frames,
                s.comments
            )?;
            for g in edgetap::store::replay::gaps(&store, id)? {
                writeln!(out, "{g}")?;
            }
            Ok(0)
        }
    }
}

/// `edgetap replay`: settings, run, report, exit code (1 on differences).
fn run_replay(a: cli::ReplayArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    use edgetap::replay::{self, Pacing, ReplaySettings, Role};
    if a.list_mutations {
        out.write_all(replay::list_mutations().as_bytes())?;
        return Ok(0);
    }
    let (Some(src), Some(role), Some(broker)) = (a.source, a.role, a.broker) else {
        anyhow::bail!("SOURCE, --as and --broker are required");
    };
    let rules = Arc::new(load_rules(&a.rules)?);
    let role = match role {
        cli::ReplayRole::Platform => Role::Platform,
        cli::ReplayRole::Edge => Role::Edge,
    };
    let source = replay::source::Source::parse(&src, &a.store_dir)?;
    let mut s = ReplaySettings::new(source, role, &broker);
    s.edge_id = a.edge_id;
    s.pick_edge = a.edge;
    s.progress = true;
    s.pacing = if a.asap {
        Pacing::Asap
    } else {
        Pacing::Speed(a.speed)
    };
    s.mutations = a.mutations;
    s.seed = a.seed.unwrap_or_else(|| edgetap::sim::now_us() as u64);
    s.noise = a.noise;
    s.fresh_jobs = !a.keep_job_ids;
    s.protocol = edgetap::sim::run::protocol(a.mqtt5);
    s.answer_timeout = std::time::Duration::from_millis(a.timeout_ms);
    s.mutation_window = std::time::Duration::from_millis(a.mutation_window_ms);
    s.edge_wait = std::time::Duration::from_millis(a.edge_wait_ms);
    s.ports = a.ports;
    s.capture = a.capture;
    let expected = a.expect.as_deref().map(replay::load_expected).transpose()?;
    let outcome = replay::run_blocking(s, rules)?;
    if let Some(lost) = &outcome.broker_lost {
        eprintln!("edgetap: {lost} (exit code 2)");
    }
    // An outcome cut short by the broker is no expectation to keep.
    let saved = match (&a.save_expect, &outcome.broker_lost) {
        (Some(p), None) => {
            use anyhow::Context as _;
            std::fs::write(p, outcome.to_json())
                .with_context(|| format!("--save-expect {}", p.display()))?;
            eprintln!("edgetap: expectation saved to {}", p.display());
            true
        }
        _ => false,
    };
    let expectation = expected.map(|e| replay::check_expected(&e, &outcome));
    match a.format {
        Format::Table => out.write_all(outcome.to_table_with(expectation.as_ref()).as_bytes())?,
        Format::Json => writeln!(out, "{}", outcome.to_json())?,
        Format::Junit => out.write_all(outcome.to_junit(expectation.as_ref()).as_bytes())?,
        Format::Html => out.write_all(outcome.to_html(expectation.as_ref()).as_bytes())?,
    }
    Ok(outcome.exit_code(expectation.as_ref(), saved))
}
