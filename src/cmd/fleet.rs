//! `edgetap fleet`: one report from what the judges published.

use std::io::Write;
use std::time::Duration;

use super::{analyze_exit_code, load_rules, shown};
use crate::cli::bus::FleetArgs;
use edgetap::bus::fleet;
use edgetap::report::{Document, Options};

pub fn run(args: FleetArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
    let rules = load_rules(&args.rules)?;
    let shown = shown(&args.shown, &rules)?;
    let labels = match &args.labels {
        Some(p) => Some(edgetap::bus::labels::read(p)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let fleet = rt.block_on(async {
        let until = match args.duration_ms {
            Some(0) => None,
            d => Some(super::bus::shutdown(d.map(Duration::from_millis))?),
        };
        let caught_up = |f: &fleet::Fleet| {
            eprintln!(
                "edgetap fleet: {} findings and {} edges stored on {}",
                f.findings,
                f.edges().count(),
                args.bus
            )
        };
        anyhow::Ok(fleet::read(&args.bus, until, caught_up).await?)
    })?;
    let mut report = fleet.report(&args.bus, &rules);
    report.apply(&shown.filter);
    report.check_judged(vec![format!(
        "no judge published a message count on {}: are `edgetap judge` and `watch --bus` running?",
        args.bus
    )]);
    let mut doc = Document::of(&report).titled("edgetap fleet record");
    if let Some(labels) = &labels {
        let section = fleet::label_section(&report, labels);
        doc.members
            .insert("labels".into(), fleet::label_rows(&section));
        doc.sections.push(section);
    }
    let text = edgetap::report::render(&doc, args.format, &Options::listing(shown.listing));
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(analyze_exit_code(&report))
}
