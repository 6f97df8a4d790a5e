//! `edgetap replay`: plays one side of a recorded session, as a real MQTT client of a
//! real broker, to a real counterpart, and waits for the counterpart's real answers in
//! place of the recorded ones.
//!
//! - [`source`]: the recorded session, decoded by the one pipeline (pcap or store).
//! - [`rewrite`]: fresh mids and timestamps, the live edge id, fresh job ids; the
//!   counterpart's answers mapped back into the recording's terms.
//! - pacing: before each message of ours, the answers the recording shows before it
//!   (replies, job results, the counterpart's requests) are awaited (up to
//!   `answer_timeout`); with `Pacing::Speed(f)` the recorded offsets divided by `f`
//!   are kept too.
//! - [`judge`]: each exchange compared with its recorded counterpart, with noise rules;
//!   the live session goes through a fresh [`Analyzer`](crate::pipeline::Analyzer) (the one rule engine) and its
//!   rules are compared with the recording's.
//! - [`mutate`]: a mutation of one of our requests is sent after the replay, watched
//!   for `mutation_window`, then a liveness probe (a valid request of the recording)
//!   must still be answered; a mutation of one of our replies or reports (a missing
//!   reply, a job result before its reply) is made in place during the replay and
//!   judged by the rules it must raise and the probe after the replay.
//!
//! The counterpart must be subscribed-to before it starts: start the replay, then
//! (re)start the device, so that its EVENT_LINKUP is part of the session. As platform,
//! the first request the edge starts by itself (EVENT_LINKUP) is awaited up to
//! `edge_wait`; when it does not come, the edge was already online: the exchanges the
//! edge starts by itself that never come are *not exercised* ([`Exchange::skipped`](judge::Exchange::skipped),
//! neither pass nor fail, JUnit `<skipped>`), its own later requests are not waited
//! for, and rules that judge an edge's session from its start stay silent (the
//! engine judges only history it saw). The platform's commands and their job results are
//! judged as always.
//!
//! The ids the replayed platform assigns (job ids, mids) are drawn anew for each run
//! ([`rewrite`]), so a replay runs again against a device that kept the first run's
//! jobs. A request of the edge beyond the recording (a restarted device's second
//! EVENT_LINKUP) is answered as the recording answered the first of its type. An
//! interruption (`ReplaySettings::interrupt`: Ctrl-C) ends the run like a lost
//! broker: nothing more is sent, the exchanges cut off are not exercised, and the
//! outcome covers what ran. What the rule engine finds in the messages a mutation made
//! is the test's doing (`Outcome::injected_findings`), never the counterpart's.
//!
//! A CI job: the README's example (`tests/replay_cli.rs` runs it as written) replays
//! `captures/replay/golden.pcap` against the device and compares the outcome with
//! `captures/replay/golden.expect.json`.
//!
//! Modules: [`settings`](ReplaySettings) what is asked; `session` the driver (connect,
//! play, await, mutate; a broker that refuses or loses the connection ends the run
//! with its cause); [`Outcome`] what was found, its table, JUnit and exit code, and
//! [`Expectation`] its comparison with a saved one.
//!
//! The outcome serializes to JSON; `--save-expect` writes it and `--expect` compares a
//! later run with it beyond the noise rules (regression mode).

pub mod judge;
pub mod mutate;
mod outcome;
pub mod rewrite;
mod session;
mod settings;
pub mod source;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::rules::RuleSet;
use crate::sim::SimError;

pub use outcome::{
    check_expected, compare_expected, load_expected, Expectation, FindingBrief, MutationResult,
    Outcome, EXIT_INTERRUPTED,
};
pub use session::run_ready;
pub use settings::{Pacing, ReplaySettings, Role, DEFAULT_EDGE_WAIT};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay source: {0}")]
    Source(String),
    #[error("mutation: {0}")]
    Mutation(String),
    #[error("expectation file: {0}")]
    Expect(String),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `edgetap replay --list-mutations`.
pub fn list_mutations() -> String {
    let mut s =
        String::from("Built-in mutations (--mutate NAME; --mutate FILE.json for custom ones):\n");
    for n in mutate::LIBRARY {
        let _ = writeln!(
            s,
            "  {:<24} {:<22} {}\n  {:<24} {:<22} expects: {}",
            n.name,
            n.roles,
            n.about,
            "",
            "",
            n.expect.describe()
        );
    }
    s
}

/// Runs a replay in a runtime of its own.
pub fn run_blocking(s: ReplaySettings, rules: Arc<RuleSet>) -> Result<Outcome, ReplayError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(s, rules))
}

/// Loads the source, replays it, runs the mutations.
pub async fn run(s: ReplaySettings, rules: Arc<RuleSet>) -> Result<Outcome, ReplayError> {
    run_ready(s, rules, None).await
}
