//! One watch from start to end: connect and subscribe, judge on a thread of its
//! own until `shutdown`, then judge the end of input and hand back the report.

use std::future::Future;
use std::sync::Arc;

use super::judging::{Judging, Outputs, WatchOutcome};
use super::subscriber::Subscriber;
use super::{drain, Event, WatchSettings, TICK};
use crate::rules::RuleSet;
use crate::sim::SimError;

/// Watches until `shutdown` completes. Fails only when the first connection does
/// (refused, login refused, no CONNACK); later outages are retried and reported.
/// `on_up` is called once subscribed (the command says so on stderr).
pub async fn run(
    settings: &WatchSettings,
    rules: Arc<RuleSet>,
    outputs: Outputs,
    on_up: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<WatchOutcome, SimError> {
    let sub = Subscriber::start(settings).await?;
    on_up();
    let (events, ticks, stop) = sub.split();
    let mut judging = Judging::new(rules, &settings.source(), &settings.client_id, outputs);
    let judge = std::thread::Builder::new()
        .name("edgetap-judge".into())
        .spawn(move || {
            drain(events, &mut judging);
            judging.finish()
        })?;
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        loop {
            every.tick().await;
            // A full queue needs no tick: the judge is busy with deliveries.
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                ticks.try_send(Event::Tick)
            {
                break;
            }
        }
    });
    shutdown.await;
    stop.stop().await;
    ticker.abort();
    let _ = ticker.await;
    let joined = tokio::task::spawn_blocking(move || judge.join())
        .await
        .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?;
    joined.map_err(|_| SimError::Io(std::io::Error::other("the judge thread panicked")))
}
