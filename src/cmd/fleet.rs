//! `edgetap fleet`: one report from what the judges published, and with `--http` the
//! report so far while it reads.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{analyze_exit_code, load_rules, shown};
use crate::cli::bus::FleetArgs;
use edgetap::bus::fleet::{self, page::FleetPages, Fleet, View};
use edgetap::report::Options;

pub fn run(args: FleetArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let rules = load_rules(&args.rules)?;
    let shown = shown(&args.shown, &rules)?;
    let labels = match &args.labels {
        Some(p) => Some(edgetap::bus::labels::read(p)?),
        None => None,
    };
    let http = match &args.http {
        Some(_) if args.duration_ms == Some(0) => anyhow::bail!(
            "--duration-ms 0 stops once caught up: with --http give a duration, or none \
             (until Ctrl-C or SIGTERM)"
        ),
        Some(addr) => Some(super::bind_http(addr, args.http_token.as_deref())?),
        None => None,
    };
    let view = Arc::new(View {
        source: args.bus.clone(),
        rules,
        filter: shown.filter.clone(),
        labels,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shared = Arc::new(Mutex::new(Fleet::default()));
    rt.block_on(async {
        let until = match args.duration_ms {
            Some(0) => None,
            d => Some(super::bus::shutdown(d.map(Duration::from_millis))?),
        };
        let caught_up = |f: &Fleet| {
            eprintln!(
                "edgetap fleet: {} findings and {} edges stored on {}",
                f.findings,
                f.edges().count(),
                args.bus
            )
        };
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let pages = Arc::new(FleetPages {
            fleet: shared.clone(),
            view: view.clone(),
            listing: shown.listing,
        });
        let served = match http {
            Some(listener) => {
                eprintln!(
                    "edgetap fleet: live page on http://{}/ (JSON /api/report, /metrics)",
                    listener.local_addr()?
                );
                let token = args.http_token.clone();
                let stop = async {
                    let _ = http_stopped.await;
                };
                let serving = edgetap::proxy::http::serve(
                    listener,
                    pages.clone(),
                    token,
                    edgetap::proxy::http::HttpLimits::default(),
                    stop,
                );
                Some(tokio::spawn(serving))
            }
            None => None,
        };
        let read = fleet::read_into(&args.bus, &shared, until, caught_up).await;
        let _ = http_stop.send(());
        if let Some(s) = served {
            if let Ok(Err(e)) = s.await {
                eprintln!("edgetap fleet: live page stopped: {e}");
            }
        }
        anyhow::Ok(read?)
    })?;
    let fleet = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    let report = view.report(fleet);
    let doc = view.document(&report);
    let text = edgetap::report::render(&doc, args.format, &Options::listing(shown.listing));
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(analyze_exit_code(&report))
}
