//! `edgetap demo`: the embedded broker, a passive tap on it, the reference platform
//! and the reference edge, in one process with no network beyond loopback. The plan
//! runs twice: on a conforming edge (every clause passes), then on the same edge with
//! one fault injected (the failure it causes is shown).
//!
//! The tap stands where the proxy will stand once it exists; timings are shortened
//! (report period, job time, waits) so that both runs finish well under 30 seconds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::{self, BrokerSettings};
use crate::rules::RuleSet;
use crate::sim::edge::{self, EdgeSettings, EdgeStats, Fault};
use crate::sim::platform::{self, PlanReport, PlatformSettings};
use crate::sim::{Protocol, SimError};

#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub fault: Fault,
    pub protocol: Protocol,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Short timings for one in-process run.
pub fn quick_settings(
    broker: &str,
    edge_id: &str,
    proto: Protocol,
) -> (EdgeSettings, PlatformSettings) {
    let mut e = EdgeSettings::new(broker, edge_id);
    e.protocol = proto;
    e.period = Duration::from_millis(500);
    e.job_time = Duration::from_millis(300);
    e.policy_second = Duration::from_millis(100);
    e.alarm_after = Some(Duration::from_millis(300));
    let mut p = PlatformSettings::new(broker, edge_id);
    p.protocol = proto;
    p.wait = Duration::from_millis(1500);
    p.edge_wait = Duration::from_millis(1500);
    (e, p)
}

/// One plan run: the platform (with its tap) first, then the edge, which the
/// platform stops at the end to see its EVENT_LINKDOWN.
pub async fn run_pair(
    e: EdgeSettings,
    p: PlatformSettings,
    rules: Arc<RuleSet>,
) -> Result<(PlanReport, EdgeStats), SimError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let plan = tokio::spawn(platform::run_plan(p, rules, Some(stop_tx), Some(ready_tx)));
    // The platform's failure to connect shows in its result below.
    let _ = ready_rx.await;
    let edge = tokio::spawn(edge::run(e, stop_rx));
    let report = plan
        .await
        .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))??;
    let stats = edge
        .await
        .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?;
    Ok((report, stats))
}

/// Both runs; the caller prints them.
pub async fn run(s: &DemoSettings) -> Result<(PlanReport, PlanReport), DemoError> {
    let b = broker::start(&BrokerSettings::loopback()?)?;
    let addr = match s.protocol {
        Protocol::V4 => b.v4,
        Protocol::V5 => b.v5,
    }
    .to_string();
    let rules = Arc::new(RuleSet::builtin());
    let (e, p) = quick_settings(&addr, "EDGE-DEMO-1", s.protocol);
    let (clean, _) = run_pair(e, p, rules.clone()).await?;
    let (mut e, p) = quick_settings(&addr, "EDGE-DEMO-2", s.protocol);
    e.faults = vec![s.fault];
    let (faulty, _) = run_pair(e, p, rules).await?;
    Ok((clean, faulty))
}
