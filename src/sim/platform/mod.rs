//! The reference platform and the clause 6 test plan.
//!
//! The platform answers EVENT_LINKUP and the topo requests (assigning deviceIds),
//! then sends each command of the detection items 6.1.1.2 … 6.3.3.2 to the edge,
//! waits for its reply and job result, and records a [`Step`]. The verdict of an item
//! is its steps plus the findings the shared rule engine (fed by the [`Tap`]) raised
//! on the item's clause or message types: the plan checks that the exchange happened,
//! the rules check that it was right. Items the edge starts itself (topo, alarms) are
//! waited for `edge_wait` and are "not exercised" when they do not come.
//!
//! Outcomes decide items: a command refused (400/401/403/404/600) fails its item with
//! the edge's own code and msg, a job that ends in failure fails it with the edge's
//! own info/msg, and a job result that does not come within `job_timeout` fails it
//! as timed out. The rule engine adds protocol errors (wrong code, missing fields…).
//!
//! An edge that is already online when the plan starts sent its EVENT_LINKUP (and
//! its topo requests, alarms) before edgetap listened: those items are "not
//! exercised", with a hint to start edgetap first, and nothing fails for it.

//!
//! Files: this one holds the settings and the run ([`run_plan`]); `plan` the plan's
//! exchanges (a command and its reply, a job and its result, what the edge starts),
//! `commands` the commands of each item in order, `items` the detection items and
//! their verdicts, `receiver` the platform's MQTT loop (it answers the edge's
//! requests and logs the rest for the plan), `report` the test record
//! ([`PlanReport`]).

mod commands;
mod items;
mod plan;
mod receiver;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::package::{self, FileRef, PackageNote, PackageSource};
use super::tap::{write_pcap, Tap};
use super::{next_mid, topic, Incoming, Link, Protocol, SimError};
use crate::report::Report;
use crate::rules::RuleSet;

pub use items::{Item, Step, ITEMS, ONLINE_HINT};
pub use receiver::respond;
pub use report::PlanReport;

use items::{judge, with_plan_findings};
use receiver::{spawn_receiver, Log};

#[derive(Debug, Clone)]
pub struct PlatformSettings {
    pub broker: String,
    pub edge_id: String,
    pub protocol: Protocol,
    /// How long to wait for a reply.
    pub wait: Duration,
    /// How long to wait for what the edge must start itself (link-up, topo, alarms).
    pub edge_wait: Duration,
    /// How long to wait for a job's REP_JOB_RESULT after the edge accepted the job.
    pub job_timeout: Duration,
    /// The file the upgrade and install commands point at.
    pub package: PackageSource,
    /// Write what the tap saw as a pcap.
    pub capture: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Turns to the signal's name ("SIGINT") when the run is interrupted: the plan
    /// stops, the steps it did not finish are not exercised, and the report of what
    /// ran is written.
    pub interrupt: Option<watch::Receiver<Option<String>>>,
}

impl PlatformSettings {
    pub fn new(broker: &str, edge_id: &str) -> PlatformSettings {
        PlatformSettings {
            broker: broker.into(),
            edge_id: edge_id.into(),
            protocol: Protocol::V4,
            wait: Duration::from_secs(10),
            edge_wait: Duration::from_secs(15),
            job_timeout: Duration::from_secs(60),
            package: PackageSource::Placeholder,
            capture: None,
            connect_timeout: Duration::from_secs(10),
            interrupt: None,
        }
    }
}

struct Plan {
    s: PlatformSettings,
    link: Arc<Link>,
    log: Arc<Log>,
    steps: HashMap<&'static str, Vec<Step>>,
    job: u64,
    /// The file object of upgrade and install commands; `None`: placeholders.
    file: Option<FileRef>,
    /// The edge's EVENT_LINKUP was seen by this run.
    saw_linkup: bool,
    /// Edge-started messages are waited for until then (edge_wait after the link-up,
    /// or after the plan's start when no link-up came).
    edge_deadline: tokio::time::Instant,
}

/// Runs the whole plan against one edge. When `stop_edge` is given, the edge is
/// stopped after the plan and its EVENT_LINKDOWN is part of 6.1.1.2.
pub async fn run_plan(
    s: PlatformSettings,
    rules: Arc<RuleSet>,
    stop_edge: Option<watch::Sender<bool>>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<PlanReport, SimError> {
    let e = s.edge_id.clone();
    let pid = std::process::id();
    // The package first: a missing file stops the run before anything is sent.
    let (file, server) = package::prepare(&s.package, &s.broker).await?;
    let tap = Tap::start(
        &s.broker,
        &format!("edgetap-tap-{e}-{pid}"),
        s.protocol,
        &format!("/v1/{e}/#"),
        rules.clone(),
        s.connect_timeout,
    )
    .await?;
    let (link, rx) = connect_platform(&s).await?;
    let link = Arc::new(link);
    let log = Arc::new(Log::default());
    let receiver = spawn_receiver(link.clone(), rx, log.clone());
    if let Some(mut interrupt) = s.interrupt.clone() {
        let (log, began) = (log.clone(), Instant::now());
        tokio::spawn(async move {
            let signal = match interrupt.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or_default(),
                Err(_) => return,
            };
            log.stop(format!(
                "interrupted by {signal} {:.1} s into the plan",
                began.elapsed().as_secs_f64()
            ));
        });
    }
    if let Some(r) = ready {
        let _ = r.send(());
    }
    let mut p = Plan {
        s: s.clone(),
        link: link.clone(),
        log: log.clone(),
        steps: HashMap::new(),
        job: first_job_id(),
        file: file.clone(),
        saw_linkup: false,
        edge_deadline: tokio::time::Instant::now() + s.edge_wait,
    };

    p.link_up().await;
    let jobs = p.run_commands().await;
    p.edge_started_items().await;
    // Each job result exactly once: count after a short settling time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.one_result_per_job(&jobs);
    if let Some(stop) = stop_edge {
        let _ = stop.send(true);
        let until = tokio::time::Instant::now() + s.edge_wait;
        p.edge_started_until("6.1.1.2", "EVENT_LINKDOWN on device/data", until, |m| {
            m.msg_type == "EVENT_LINKDOWN"
        })
        .await;
    }
    p.hint_already_online();

    // Let the tap drain what the broker still holds, then judge the end of input.
    let settle = Instant::now();
    let mut last = tap.seen();
    while settle.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = tap.seen();
        if now == last {
            break;
        }
        last = now;
    }
    let tr = tap.finish().await?;
    receiver.abort();
    link.disconnect().await;
    if let Some(path) = &s.capture {
        write_pcap(path, &tr.frames)?;
    }

    // The engine judges a session joined late itself (history-aware rules).
    let tap_findings = tr.findings.clone();
    let items = judge(&p.steps, &tap_findings, &e);
    let findings = with_plan_findings(tap_findings, &items, &e);
    let report = Report::build(
        vec![format!(
            "sim platform: edge {e} via {} ({:?})",
            s.broker, s.protocol
        )],
        &tr.summary.stats,
        &tr.summary.coverage,
        &rules,
        findings,
    )
    .with_timeline(tr.timeline);
    let package = package_note(file, server.as_ref());
    Ok(PlanReport {
        report,
        items,
        package: Some(package),
        interrupted: log.stopped(),
    })
}

/// The platform's own connection, subscribed to everything the edge sends.
async fn connect_platform(
    s: &PlatformSettings,
) -> Result<(Link, tokio::sync::mpsc::UnboundedReceiver<Incoming>), SimError> {
    let e = &s.edge_id;
    let filters: Vec<String> = [
        ("device", "request"),
        ("topo", "request"),
        ("device", "reply"),
        ("container", "reply"),
        ("app", "reply"),
        ("device", "data"),
        ("container", "data"),
        ("app", "data"),
    ]
    .iter()
    .map(|(c, r)| topic(e, c, r))
    .collect();
    Link::connect(
        &s.broker,
        &format!("edgetap-platform-{e}-{}", std::process::id()),
        s.protocol,
        &filters,
        s.connect_timeout,
    )
    .await
}

/// Job ids unlikely to repeat across runs against one long-running edge (which
/// refuses a jobId it already holds).
fn first_job_id() -> u64 {
    let ms = (super::now_us() / 1000).max(0) as u64;
    (ms % 1_000_000_000) * 100 + next_mid() % 100
}

fn package_note(file: Option<FileRef>, server: Option<&package::PackageServer>) -> PackageNote {
    match (file, server) {
        (Some(f), Some(srv)) => PackageNote {
            source: "served".into(),
            file: f,
            downloads: Some(srv.downloads()),
        },
        (Some(f), None) => PackageNote {
            source: "url".into(),
            file: f,
            downloads: None,
        },
        (None, _) => PackageNote {
            source: "placeholder".into(),
            file: FileRef::placeholder("edge-2.0.1.bin"),
            downloads: None,
        },
    }
}
