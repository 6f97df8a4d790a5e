//! `edgetap demo`: the embedded broker, the edgetap proxy in front of it, the
//! reference platform and the reference edge, in one process with no network beyond
//! loopback. The edge connects through the proxy (as a device under test would in the
//! field); the platform connects to the broker directly and runs the clause 6 plan.
//! The plan runs twice: on a conforming edge (every clause passes), then on the same
//! edge with one fault injected (the failure it causes is shown).
//!
//! Each run shows two judgements: the platform's (its plan items plus its passive tap
//! on the broker) and the proxy's own (its analyzer, fed by the edge's connection
//! only: what a field engineer running `edgetap proxy` would see). The proxy records
//! nothing (no store). Timings are shortened (report period, job time, waits) so that
//! both runs finish well under 30 seconds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::broker::{self, BrokerSettings};
use crate::proxy::{self, ProxyError, ProxySettings};
use crate::report::{Appended, Document, Report};
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
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("demo proxy: {0}")]
    Io(#[from] std::io::Error),
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
    p.job_timeout = Duration::from_millis(2000);
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

/// One run of the demo: the platform's plan judgement and the proxy's own.
pub struct DemoRun {
    /// The platform's plan items and its tap's report.
    pub plan: PlanReport,
    /// The proxy's report on the edge's connection.
    pub proxy: Report,
    /// Findings the proxy reported live, as they happened.
    pub live_findings: u64,
    /// Where the proxy listened (the edge's "broker").
    pub proxy_addr: SocketAddr,
}

impl DemoRun {
    /// The run conforms by both judgements.
    pub fn passed(&self) -> bool {
        self.plan.passed() && !self.proxy.has_errors()
    }

    /// The run for the renderers: the platform's record, then the proxy's (on the
    /// page its clause table; its findings are `analyze --capture` away). `label`
    /// names the run ("run 1").
    pub fn document(&self, label: &str) -> Document<'_> {
        let mut doc = self.plan.document();
        doc.appended.push(Appended {
            label: format!("{label} proxy"),
            heading: format!(
                "What the edgetap proxy ({} → broker) judged on the edge's connection: {} live finding(s)",
                self.proxy_addr, self.live_findings
            ),
            doc: Document::of(&self.proxy),
        });
        doc
    }
}

/// One plan run with the edge behind a proxy on 127.0.0.1:0 whose upstream is
/// `broker`; the platform talks to `broker` directly.
pub async fn run_proxied(
    broker: &str,
    edge_id: &str,
    proto: Protocol,
    faults: Vec<Fault>,
    rules: Arc<RuleSet>,
) -> Result<DemoRun, DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let settings = ProxySettings {
        upstream: broker.to_string(),
        name: format!("demo-{edge_id}"),
        connect_timeout: Duration::from_secs(5),
        ..ProxySettings::default()
    };
    let live = Arc::new(AtomicU64::new(0));
    let counter = live.clone();
    let on_finding: proxy::LiveFindings = Box::new(move |_f| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let px = tokio::spawn(proxy::run(
        listener,
        settings,
        rules.clone(),
        None,
        on_finding,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let (mut e, p) = quick_settings(broker, edge_id, proto);
    e.broker = proxy_addr.to_string();
    e.faults = faults;
    let pair = run_pair(e, p, rules).await;
    // The edge has disconnected (the platform stopped it): close the proxy either way.
    let _ = stop_tx.send(());
    let outcome = px
        .await
        .map_err(|e| DemoError::Io(std::io::Error::other(e.to_string())))??;
    let (plan, _) = pair?;
    Ok(DemoRun {
        plan,
        proxy: outcome.report,
        live_findings: live.load(Ordering::Relaxed),
        proxy_addr,
    })
}

/// Both runs; the caller prints them.
pub async fn run(s: &DemoSettings) -> Result<(DemoRun, DemoRun), DemoError> {
    let b = broker::start(&BrokerSettings::loopback()?)?;
    let addr = match s.protocol {
        Protocol::V4 => b.v4,
        Protocol::V5 => b.v5,
    }
    .to_string();
    let rules = Arc::new(RuleSet::builtin());
    let clean = run_proxied(&addr, "EDGE-DEMO-1", s.protocol, vec![], rules.clone()).await?;
    let faulty = run_proxied(&addr, "EDGE-DEMO-2", s.protocol, vec![s.fault], rules).await?;
    Ok((clean, faulty))
}
