//! `edgetap replay`.

use std::io::Write;
use std::sync::Arc;

use super::load_rules;
use crate::cli;

/// `edgetap replay`: settings, run, report, exit code (1 on differences).
pub fn run(a: cli::ReplayArgs, out: &mut dyn Write) -> anyhow::Result<u8> {
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
    s.protocol = super::sim::run::protocol(a.mqtt5);
    s.answer_timeout = std::time::Duration::from_millis(a.timeout_ms);
    s.mutation_window = std::time::Duration::from_millis(a.mutation_window_ms);
    s.edge_wait = std::time::Duration::from_millis(a.edge_wait_ms);
    s.ports = a.ports;
    s.capture = a.capture;
    let expected = a.expect.as_deref().map(replay::load_expected).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        s.interrupt = Some(super::interrupt());
        replay::run(s, rules).await
    })?;
    if let Some(why) = &outcome.interrupted {
        eprintln!("edgetap: replay {why}; the report covers what ran (exit code 130)");
    }
    if let Some(lost) = &outcome.broker_lost {
        eprintln!("edgetap: {lost} (exit code 2)");
    }
    // An outcome cut short by the broker is no expectation to keep; nor is one of
    // a counterpart that answered nothing (it would pass with no device at all).
    let mut refused = false;
    let saved = match (&a.save_expect, &outcome.broker_lost) {
        (Some(p), None) if outcome.interrupted.is_some() => {
            eprintln!(
                "edgetap: --save-expect {}: not saved: the replay was interrupted",
                p.display()
            );
            false
        }
        (Some(p), None) if outcome.answered_nothing() => {
            eprintln!(
                "edgetap: --save-expect {}: not saved: the {} answered nothing during the \
                 replay, and an expectation of silence would pass with no device at all; \
                 check that it is online, on this broker, under this id, then run again \
                 (exit code 2)",
                p.display(),
                outcome.counterpart()
            );
            refused = true;
            false
        }
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
    let doc = outcome.document(expectation.as_ref());
    out.write_all(edgetap::report::render(&doc, a.format, &Default::default()).as_bytes())?;
    if refused {
        return Ok(edgetap::report::EXIT_UNREADABLE);
    }
    Ok(outcome.exit_code(expectation.as_ref(), saved))
}
