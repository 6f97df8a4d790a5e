//! `edgetap judge`: judge partitions of the bus until Ctrl-C, SIGTERM or
//! --duration-ms.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::load_rules;
use crate::cli::bus::JudgeArgs;
use edgetap::bus::judge::{JudgeSettings, Progress};

pub fn run(args: JudgeArgs) -> anyhow::Result<u8> {
    let rules = Arc::new(load_rules(&args.rules)?);
    let mut settings = JudgeSettings::new(&args.bus, args.partitions.clone());
    settings.report_every = Duration::from_millis(args.report_ms.max(10));
    settings.retention = Duration::from_secs(args.retention_h.max(1) * 3600);
    settings.finish = args.finish;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = Arc::new(Progress::default());
    let outcome = rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = super::shutdown(args.duration_ms.map(Duration::from_millis))?;
        eprintln!(
            "edgetap judge: partitions {}..{} of {}",
            settings.partitions.start(),
            settings.partitions.end(),
            settings.url
        );
        let judging = edgetap::bus::judge::run(&settings, rules, progress.clone(), rx);
        tokio::pin!(judging);
        // A failing partition ends the judge at once; a stop lets every partition
        // finish its batch and publish its counts.
        let r = tokio::select! {
            r = &mut judging => r,
            _ = stop => {
                let _ = tx.send(true);
                judging.await
            }
        };
        anyhow::Ok(r?)
    })?;
    let p = &progress;
    eprintln!(
        "edgetap judge: {} records judged, {} rebuilt at start, {} deliveries already applied left alone, {} findings published",
        p.judged.load(Ordering::Relaxed),
        p.rebuilt.load(Ordering::Relaxed),
        p.skipped.load(Ordering::Relaxed),
        p.findings.load(Ordering::Relaxed)
    );
    for s in &outcome.partitions {
        tracing::info!(
            "partition {}: applied up to stream sequence {} ({} records)",
            s.partition,
            s.applied,
            s.records
        );
    }
    Ok(0)
}
