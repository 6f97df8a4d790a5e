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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::package::{self, FileRef, PackageNote, PackageSource};
use super::tap::{write_pcap, Tap};
use super::{next_mid, reply, request, topic, Incoming, Link, Protocol, SimError};
use crate::finding::{Finding, Severity};
use crate::report::Report;
use crate::rules::RuleSet;

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
        }
    }
}

/// One exchange of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    /// "pass", "fail" or "not exercised".
    pub status: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The edge starts this exchange itself (link-up, topo, alarms, reports).
    #[serde(skip)]
    pub edge_started: bool,
}

impl Step {
    /// "what: detail", or the detail alone when it names the message itself.
    pub fn line(&self) -> String {
        let head = self.what.split_whitespace().next().unwrap_or("");
        if !head.is_empty() && self.detail.starts_with(head) {
            self.detail.clone()
        } else {
            format!("{}: {}", self.what, self.detail)
        }
    }
}

/// Reply codes of table 3 by which an edge refuses a command.
const REFUSALS: [i64; 5] = [400, 401, 403, 404, 600];

/// Why the plan could not see what an edge starts itself, when it was already online.
pub const ONLINE_HINT: &str =
    "the edge was already online: start edgetap before the device powers on, or restart the device";

/// One detection item of clause 6.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub item: String,
    pub clause: String,
    pub title: String,
    pub status: String,
    pub detail: String,
    pub steps: Vec<Step>,
    /// Rule findings (error or warning) attributed to the item.
    pub findings: Vec<String>,
}

/// The detection items: (item, clause, title, message types).
pub const ITEMS: &[(&str, &str, &str, &[&str])] = &[
    (
        "6.1.1.2",
        "6.1.1",
        "Device access test",
        &["EVENT_LINKUP", "EVENT_LINKDOWN"],
    ),
    (
        "6.1.2.2",
        "6.1.2",
        "Device upgrade test",
        &["CMD_SYS_UPGRADE", "CMD_STATUS_QUERY"],
    ),
    (
        "6.1.3.2",
        "6.1.3",
        "Device monitoring test",
        &[
            "REP_SYS_STATUS",
            "CMD_SYS_STATUS",
            "CMD_INFO_QUERY",
            "EVENT_SYS_ALARM",
        ],
    ),
    (
        "6.1.4.2",
        "6.1.4",
        "End-device management test",
        &["CMD_TOPO_ADD", "CMD_TOPO_DEL", "CMD_TOPO_UPDATE"],
    ),
    (
        "6.2.1.2",
        "6.2.1",
        "Container creation test",
        &["CMD_CON_INSTALL"],
    ),
    (
        "6.2.2.2",
        "6.2.2",
        "Container start test",
        &["CMD_CON_START"],
    ),
    ("6.2.3.2", "6.2.3", "Container stop test", &["CMD_CON_STOP"]),
    (
        "6.2.4.2",
        "6.2.4",
        "Container removal test",
        &["CMD_CON_REMOVE"],
    ),
    (
        "6.3.1.2",
        "6.3.1",
        "App installation test",
        &["CMD_APP_INSTALL"],
    ),
    (
        "6.3.2.2",
        "6.3.2",
        "App control test",
        &[
            "CMD_APP_START",
            "CMD_APP_STOP",
            "CMD_APP_REMOVE",
            "CMD_APP_ENABLE",
            "CMD_APP_UNENABLE",
        ],
    ),
    ("6.3.3.2", "6.3.3", "App upgrade test", &["CMD_APP_UPGRADE"]),
];

/// The test record of a plan run: the analyzer's report (clause table, findings,
/// the `analyze` JSON contract) plus the detection items.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub report: Report,
    pub items: Vec<Item>,
    /// The file the upgrade and install commands pointed at.
    pub package: Option<PackageNote>,
}

impl PlanReport {
    pub fn passed(&self) -> bool {
        !self.report.has_errors() && self.items.iter().all(|i| i.status != "fail")
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.item == id)
    }

    pub fn to_table(&self) -> String {
        self.table(crate::report::Listing::Grouped)
    }

    /// The table, its findings listed as `listing` says.
    pub fn table(&self, listing: crate::report::Listing) -> String {
        #[derive(tabled::Tabled)]
        struct Row<'a> {
            item: &'a str,
            title: &'a str,
            status: String,
            detail: &'a str,
        }
        let rows: Vec<Row> = self
            .items
            .iter()
            .map(|i| Row {
                item: &i.item,
                title: &i.title,
                status: i.status.to_uppercase(),
                detail: &i.detail,
            })
            .collect();
        let package = self
            .package
            .as_ref()
            .map(|p| format!("{}\n", p.line()))
            .unwrap_or_default();
        format!(
            "{}\nDetection items (test plan of clause 6):\n{}\n{package}",
            self.report.table(listing),
            tabled::Table::new(rows).with(tabled::settings::Style::sharp())
        )
    }

    /// The `analyze` JSON (summary, clauses, findings, rules) with `plan` added.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(&self.report).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert(
                "plan".into(),
                serde_json::to_value(&self.items).unwrap_or(Value::Null),
            );
            if let Some(p) = &self.package {
                o.insert(
                    "package".into(),
                    serde_json::to_value(p).unwrap_or(Value::Null),
                );
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The clause suites of the report, then one suite of the detection items
    /// (6.x.x.2), one case each: a failed item fails with its detail and steps, an
    /// item not exercised is skipped with why.
    pub fn to_junit(&self) -> String {
        use crate::report::junit::{Case, Suite, Verdict};
        let mut suite = Suite::new("detection items (test plan of clause 6)");
        for i in &self.items {
            let steps: Vec<String> = i.steps.iter().map(Step::line).collect();
            let mut text = steps.join("\n");
            if !i.findings.is_empty() {
                text.push_str("\nrules: ");
                text.push_str(&i.findings.join("; "));
            }
            let verdict = match i.status.as_str() {
                "fail" => Verdict::Failed {
                    message: i.detail.clone(),
                    text: text.clone(),
                },
                "not exercised" => Verdict::Skipped {
                    message: format!("not exercised: {}", i.detail),
                },
                _ => Verdict::Passed,
            };
            let out = (i.status != "fail").then_some(text);
            suite.cases.push(
                Case::new(
                    &format!("plan.{}", i.clause),
                    &format!("{} {}", i.item, i.title),
                    verdict,
                )
                .with_out(out),
            );
        }
        self.report.to_junit_with(&[suite])
    }
}

/// A message the platform received from the edge.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    channel: String,
    role: String,
    msg_type: String,
    mid: Option<u64>,
    env: Value,
}

impl Seen {
    fn param(&self, k: &str) -> Option<&Value> {
        self.env.get("param").and_then(|p| p.get(k))
    }
    fn code(&self) -> Option<i64> {
        self.env.get("code").and_then(Value::as_i64)
    }
    /// `msg "…"` of a reply, or `no msg`.
    fn msg_text(&self) -> String {
        quoted("msg", self.env.get("msg"))
    }
}

/// `name "text"`, or `no name` when absent or not a string.
fn quoted(name: &str, v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(t) => format!("{name} {t:?}"),
        None => format!("no {name}"),
    }
}

#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    notify: Notify,
}

impl Log {
    /// Waits until a message satisfying `f` arrives (or was already seen).
    async fn wait(&self, limit: Duration, f: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if let Some(s) = self.find(&f) {
                return Some(s);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.find(&f);
            }
        }
    }
    fn find(&self, f: &impl Fn(&Seen) -> bool) -> Option<Seen> {
        self.seen.lock().ok()?.iter().find(|s| f(s)).cloned()
    }
    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen
            .lock()
            .map(|v| v.iter().filter(|s| f(s)).count())
            .unwrap_or(0)
    }
}

/// Answers edge requests: EVENT_LINKUP and the topo requests. `assigned` maps
/// (edge, deviceId) → nodeId.
fn answer(
    edge: &str,
    t: &str,
    env: &Value,
    assigned: &mut HashMap<(String, String), String>,
) -> Option<Value> {
    let mid = env.get("mid")?.as_u64()?;
    let p = env.get("param").cloned().unwrap_or(json!({}));
    let data: Vec<Value> = match t {
        "EVENT_LINKUP" => return Some(reply(mid, t, 200, None, None)),
        "CMD_TOPO_ADD" => p
            .get("deviceInfos")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.get("nodeId").and_then(Value::as_str))
                    .map(|node| {
                        let dev = format!("{edge}.{node}");
                        assigned.insert((edge.into(), dev.clone()), node.into());
                        json!({"code": 200, "statusDesc": "added", "deviceId": dev, "nodeId": node})
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "CMD_TOPO_DEL" => p
            .get("deviceIds")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|dev| match assigned.remove(&(edge.into(), dev.into())) {
                        Some(node) => json!({"code": 200, "statusDesc": "deleted", "nodeId": node, "deviceId": dev}),
                        None => json!({"code": 404, "statusDesc": "unknown deviceId", "nodeId": "", "deviceId": dev}),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "CMD_TOPO_UPDATE" => p
            .get("deviceStatuses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.get("deviceId").and_then(Value::as_str))
                    .map(|dev| {
                        let code = if assigned.contains_key(&(edge.into(), dev.into())) { 200 } else { 404 };
                        json!({"code": code, "statusDesc": "updated", "deviceId": dev})
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => return Some(reply(mid, t, 400, Some("not a request the platform serves"), None)),
    };
    Some(reply(mid, t, 200, None, Some(json!({"data": data}))))
}

/// Receives from the edge(s), answers requests at once, logs the rest for the plan.
fn spawn_receiver(
    link: Arc<Link>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    log: Arc<Log>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut assigned = HashMap::new();
        while let Some(m) = rx.recv().await {
            let Some(t) = crate::protocol::parse_topic(&m.topic) else {
                continue;
            };
            let Ok(env) = serde_json::from_slice::<Value>(&m.payload) else {
                continue;
            };
            let msg_type = env
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if t.role == "request" {
                let rejected = super::rejection(&m.topic, &m.payload).and_then(|why| {
                    let mid = env.get("mid")?.as_u64()?;
                    Some(reply(mid, &msg_type, 400, Some(&why), None))
                });
                if let Some(r) =
                    rejected.or_else(|| answer(&t.edge_id, &msg_type, &env, &mut assigned))
                {
                    let resp = topic(&t.edge_id, &t.channel, "response");
                    let _ = link
                        .publish(&resp, serde_json::to_vec(&r).unwrap_or_default())
                        .await;
                }
            }
            let s = Seen {
                at: Instant::now(),
                channel: t.channel,
                role: t.role,
                mid: env.get("mid").and_then(Value::as_u64),
                msg_type,
                env,
            };
            if let Ok(mut v) = log.seen.lock() {
                v.push(s);
            }
            log.notify.notify_waiters();
        }
    })
}

/// Answers EVENT_LINKUP and topo requests of every edge until `shutdown`; no plan.
/// The benchmark's counterpart of `sim edge --count N`.
pub async fn respond(
    broker: &str,
    proto: Protocol,
    mut shutdown: watch::Receiver<bool>,
) -> Result<u64, SimError> {
    let filters = vec![
        "/v1/+/device/request".to_string(),
        "/v1/+/topo/request".to_string(),
    ];
    let id = format!("edgetap-platform-{}", std::process::id());
    let (link, rx) = Link::connect(broker, &id, proto, &filters, Duration::from_secs(10)).await?;
    let link = Arc::new(link);
    let log = Arc::new(Log::default());
    let task = spawn_receiver(link.clone(), rx, log.clone());
    let _ = shutdown.changed().await;
    task.abort();
    link.disconnect().await;
    let n = log.count(|_| true) as u64;
    Ok(n)
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

impl Plan {
    fn add(
        &mut self,
        item: &'static str,
        status: &str,
        what: &str,
        detail: String,
        latency: Option<Duration>,
    ) {
        self.steps.entry(item).or_default().push(Step {
            what: what.into(),
            status: status.into(),
            detail,
            latency_ms: latency.map(|d| d.as_secs_f64() * 1000.0),
            edge_started: false,
        });
    }

    /// Marks the last step of `item` as one the edge starts itself.
    fn mark_edge_started(&mut self, item: &'static str) {
        if let Some(st) = self.steps.get_mut(item).and_then(|v| v.last_mut()) {
            st.edge_started = true;
        }
    }

    /// The `file` object of an upgrade or install command.
    fn file(&self, placeholder: &str) -> Value {
        self.file
            .clone()
            .unwrap_or_else(|| FileRef::placeholder(placeholder))
            .to_json()
    }

    fn next_job(&mut self) -> u64 {
        self.job += 1;
        self.job
    }

    /// Sends a command and judges its reply's presence, type and code.
    async fn command(
        &mut self,
        item: &'static str,
        channel: &str,
        t: &str,
        param: Value,
        codes: &[i64],
    ) -> Option<Seen> {
        self.command_as(item, "", channel, t, param, codes).await
    }

    /// [`Plan::command`] with a `label` after the type in the step's name.
    async fn command_as(
        &mut self,
        item: &'static str,
        label: &str,
        channel: &str,
        t: &str,
        param: Value,
        codes: &[i64],
    ) -> Option<Seen> {
        let mid = next_mid();
        let v = request(Some(mid), t, Some(param));
        let sent = Instant::now();
        let expected = codes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join("/");
        let what = format!("{t}{label} → {expected}");
        if let Err(e) = self
            .link
            .publish(
                &topic(&self.s.edge_id, channel, "command"),
                serde_json::to_vec(&v).unwrap_or_default(),
            )
            .await
        {
            self.add(item, "fail", &what, e.to_string(), None);
            return None;
        }
        let ch = channel.to_string();
        let got = self
            .log
            .wait(self.s.wait, |s| {
                s.role == "reply" && s.channel == ch && s.mid == Some(mid)
            })
            .await;
        let Some(r) = got else {
            let d = format!(
                "no reply with mid {mid} on {channel}/reply within {} ms",
                self.s.wait.as_millis()
            );
            self.add(item, "fail", &what, d, None);
            return None;
        };
        let lat = r.at.saturating_duration_since(sent);
        if r.msg_type != t {
            self.add(
                item,
                "fail",
                &what,
                format!("reply type {} is not {t}", r.msg_type),
                Some(lat),
            );
        } else if let Some(d) = unexpected_code(&r, t, codes, &expected) {
            self.add(item, "fail", &what, d, Some(lat));
        } else {
            self.add(
                item,
                "pass",
                &what,
                format!("code {}", r.code().unwrap_or(0)),
                Some(lat),
            );
        }
        Some(r)
    }

    /// Waits for the REP_JOB_RESULT of `job` on `{channel}/data`; `field` is "result" or "code".
    async fn job_result(
        &mut self,
        item: &'static str,
        channel: &str,
        job: u64,
        field: &str,
        accepted: bool,
    ) {
        let what = format!("REP_JOB_RESULT of job {job} on {channel}/data");
        if !accepted {
            self.add(
                item,
                "not exercised",
                &what,
                "the job was not accepted".into(),
                None,
            );
            return;
        }
        let ch = channel.to_string();
        let sent = Instant::now();
        let got = self
            .log
            .wait(self.s.job_timeout, |s| {
                s.msg_type == "REP_JOB_RESULT"
                    && s.channel == ch
                    && s.param("jobId").and_then(Value::as_u64) == Some(job)
            })
            .await;
        match got {
            None => {
                let d = format!(
                    "timed out: no REP_JOB_RESULT of job {job} within {} of the reply (--job-timeout)",
                    seconds(self.s.job_timeout)
                );
                self.add(item, "fail", &what, d, None)
            }
            Some(r) => {
                let lat = Some(r.at.saturating_duration_since(sent));
                match job_outcome(&r, field) {
                    Ok(d) => self.add(item, "pass", &what, d, lat),
                    Err(d) => self.add(item, "fail", &what, d, lat),
                }
            }
        }
    }

    /// Waits (until the edge-started deadline) for an edge-started message; absent →
    /// "not exercised".
    async fn edge_started(
        &mut self,
        item: &'static str,
        what: &str,
        f: impl Fn(&Seen) -> bool,
    ) -> bool {
        let deadline = self.edge_deadline;
        self.edge_started_until(item, what, deadline, f).await
    }

    async fn edge_started_until(
        &mut self,
        item: &'static str,
        what: &str,
        deadline: tokio::time::Instant,
        f: impl Fn(&Seen) -> bool,
    ) -> bool {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = self.log.wait(left, f).await.is_some();
        if got {
            self.add(item, "pass", what, "seen".into(), None);
        } else {
            let d = format!(
                "not sent by the edge within {} ms",
                self.s.edge_wait.as_millis()
            );
            self.add(item, "not exercised", what, d, None);
        }
        self.mark_edge_started(item);
        got
    }

    /// 6.1.1.2: waits for the edge's first message. EVENT_LINKUP: the edge links up
    /// now, and the edge-started deadline counts from it. Another message first: the
    /// edge was already online and its link-up is past.
    async fn link_up(&mut self) {
        let what = "EVENT_LINKUP on device/request";
        let first = self.log.wait(self.s.edge_wait, |_| true).await;
        match first {
            Some(m) if m.msg_type == "EVENT_LINKUP" => {
                self.saw_linkup = true;
                self.edge_deadline = tokio::time::Instant::from_std(m.at) + self.s.edge_wait;
                self.add("6.1.1.2", "pass", what, "seen".into(), None);
            }
            Some(m) => {
                let d = format!(
                    "the edge sent {} on {}/{} with no EVENT_LINKUP before it",
                    m.msg_type, m.channel, m.role
                );
                self.add("6.1.1.2", "not exercised", what, d, None);
            }
            None => {
                let d = format!(
                    "not sent by the edge within {} ms",
                    self.s.edge_wait.as_millis()
                );
                self.add("6.1.1.2", "not exercised", what, d, None);
            }
        }
        self.mark_edge_started("6.1.1.2");
    }

    /// When the edge answered commands but its link-up was not seen, it was online
    /// before the plan: the first edge-started step not seen of each item gets [`ONLINE_HINT`].
    fn hint_already_online(&mut self) {
        let answered = self.log.count(|m| m.role == "reply") > 0;
        if self.saw_linkup || !answered {
            return;
        }
        // Once per item: on its first edge-started step not seen.
        for steps in self.steps.values_mut() {
            let unseen = steps
                .iter_mut()
                .find(|st| st.edge_started && st.status == "not exercised");
            if let Some(st) = unseen {
                st.detail = format!("{}; {ONLINE_HINT}", st.detail);
            }
        }
    }
}

/// The failure of a reply whose code is not one of `codes`; `None` when it is.
fn unexpected_code(r: &Seen, t: &str, codes: &[i64], expected: &str) -> Option<String> {
    match r.code() {
        Some(c) if codes.contains(&c) => None,
        Some(c) if REFUSALS.contains(&c) => {
            Some(format!("{t} refused: code {c}, {}", r.msg_text()))
        }
        Some(c) => Some(format!(
            "reply code {c}, expected {expected} ({})",
            r.msg_text()
        )),
        None => Some("reply without a code".into()),
    }
}

/// A job result's verdict: `field` ("result" or "code") 200 passes; anything else
/// fails with the edge's own description (`info` beside `result`, `msg` beside `code`).
fn job_outcome(r: &Seen, field: &str) -> Result<String, String> {
    let text = if field == "result" { "info" } else { "msg" };
    match r.param(field).and_then(Value::as_i64) {
        Some(200) => Ok(format!("{field} 200")),
        Some(v) => Err(format!(
            "job failed: {field} {v}, {}",
            quoted(text, r.param(text))
        )),
        None => Err(format!("job result without a numeric {field}")),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
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
        tr.analyzer.stats(),
        tr.analyzer.engine().exercised(),
        &rules,
        findings,
    )
    .with_timeline(tr.timeline);
    let package = package_note(file, server.as_ref());
    Ok(PlanReport {
        report,
        items,
        package: Some(package),
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

/// The jobs of a run: (item, channel, jobId).
type Jobs = Vec<(&'static str, &'static str, u64)>;

impl Plan {
    /// Every command-driven exchange of clause 6, in an order that builds the state
    /// each command needs (a container before its apps, an app before its control).
    async fn run_commands(&mut self) -> Jobs {
        let mut jobs = vec![];
        self.monitoring().await;
        jobs.push(("6.1.2.2", "device", self.device_upgrade().await));
        jobs.extend(self.container_installs().await);
        self.command(
            "6.2.2.2",
            "container",
            "CMD_CON_START",
            json!({"container": "c1"}),
            &[200],
        )
        .await;
        jobs.push(("6.3.1.2", "app", self.app_install().await));
        self.app_control(&[
            "CMD_APP_STOP",
            "CMD_APP_START",
            "CMD_APP_UNENABLE",
            "CMD_APP_ENABLE",
        ])
        .await;
        jobs.push(("6.3.3.2", "app", self.app_upgrade().await));
        self.app_control(&["CMD_APP_REMOVE"]).await;
        self.command(
            "6.2.3.2",
            "container",
            "CMD_CON_STOP",
            json!({"container": "c1"}),
            &[200],
        )
        .await;
        for c in ["c1", "c2"] {
            self.command(
                "6.2.4.2",
                "container",
                "CMD_CON_REMOVE",
                json!({"container": c}),
                &[200],
            )
            .await;
        }
        jobs
    }

    /// 6.1.3.2: status and information queries, and the periodic report.
    async fn monitoring(&mut self) {
        self.command("6.1.3.2", "device", "CMD_SYS_STATUS", json!({}), &[200])
            .await;
        self.command("6.1.3.2", "device", "CMD_INFO_QUERY", json!({}), &[200])
            .await;
        self.edge_started("6.1.3.2", "REP_SYS_STATUS on device/data", |m| {
            m.msg_type == "REP_SYS_STATUS"
        })
        .await;
    }

    /// 6.1.2.2: the upgrade job, a status query while it runs, its result.
    async fn device_upgrade(&mut self) -> u64 {
        let job = self.next_job();
        let up = json!({"jobId": job, "policy": 0, "version": "2.0.1", "upgradeType": 0,
                        "file": self.file("edge-2.0.1.bin")});
        let r = self
            .command("6.1.2.2", "device", "CMD_SYS_UPGRADE", up, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        if accepted {
            self.status_query(job).await;
        }
        self.job_result("6.1.2.2", "device", job, "result", accepted)
            .await;
        job
    }

    async fn status_query(&mut self, job: u64) {
        let q = self
            .command(
                "6.1.2.2",
                "device",
                "CMD_STATUS_QUERY",
                json!({"jobId": job}),
                &[200],
            )
            .await;
        if let Some(q) = q {
            if q.param("jobId").and_then(Value::as_u64) != Some(job) {
                self.add(
                    "6.1.2.2",
                    "fail",
                    "CMD_STATUS_QUERY jobId",
                    format!("reply names job {:?}", q.param("jobId")),
                    None,
                );
            }
        }
    }

    /// 6.2.1.2, both branches: container c1 with an app (202, then a job result on
    /// container/data) and container c2 empty (200 at once, or 202 and a job result).
    async fn container_installs(&mut self) -> Jobs {
        let cjob = self.next_job();
        let con = json!({"container": "c1", "image": {"name": "debian", "tag": "12"},
                         "withAPP": {"app": "a0", "version": "1.0.0"},
                         "cfgCpu": {"cpus": 1}, "cfgMem": {"memory": 256}, "port": "8080:80",
                         "jobId": cjob, "policy": 0, "networkMode": "bridge"});
        let r = self
            .command_as(
                "6.2.1.2",
                " with withAPP",
                "container",
                "CMD_CON_INSTALL",
                con,
                &[202],
            )
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.2.1.2", "container", cjob, "code", accepted)
            .await;

        let ejob = self.next_job();
        let empty = json!({"container": "c2", "image": {"name": "debian", "tag": "12"},
                           "jobId": ejob, "policy": 0});
        let r = self
            .command_as(
                "6.2.1.2",
                " without withAPP",
                "container",
                "CMD_CON_INSTALL",
                empty,
                &[200, 202],
            )
            .await;
        if r.as_ref().and_then(Seen::code) == Some(202) {
            self.job_result("6.2.1.2", "container", ejob, "code", true)
                .await;
        }
        vec![
            ("6.2.1.2", "container", cjob),
            ("6.2.1.2", "container", ejob),
        ]
    }

    /// 6.3.1.2: the app installation job.
    async fn app_install(&mut self) -> u64 {
        let job = self.next_job();
        let app = json!({"jobId": job, "policy": 0, "container": "c1", "version": "1.0.0",
                         "file": self.file("a1-1.0.0.tar"), "cpu": {"cpus": 1}, "mem": {"memory": 128},
                         "enable": "1", "app": "a1"});
        let r = self
            .command("6.3.1.2", "app", "CMD_APP_INSTALL", app, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.3.1.2", "app", job, "code", accepted)
            .await;
        job
    }

    /// 6.3.2.2: control commands on app a1 of c1.
    async fn app_control(&mut self, types: &[&str]) {
        for t in types {
            self.command(
                "6.3.2.2",
                "app",
                t,
                json!({"container": "c1", "app": "a1"}),
                &[200],
            )
            .await;
        }
    }

    /// 6.3.3.2: the app upgrade job.
    async fn app_upgrade(&mut self) -> u64 {
        let job = self.next_job();
        let upg = json!({"version": "1.1.0", "container": "c1", "file": self.file("a1-1.1.0.tar"),
                         "jobId": job, "policy": 0});
        let r = self
            .command("6.3.3.2", "app", "CMD_APP_UPGRADE", upg, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.3.3.2", "app", job, "result", accepted)
            .await;
        job
    }

    /// What the edge starts itself, given the rest of its time: topo requests
    /// (6.1.4.2), an alarm and its recovery (6.1.3.2).
    async fn edge_started_items(&mut self) {
        for t in ["CMD_TOPO_ADD", "CMD_TOPO_UPDATE", "CMD_TOPO_DEL"] {
            self.edge_started("6.1.4.2", &format!("{t} on topo/request"), |m| {
                m.msg_type == t
            })
            .await;
        }
        let recovery = |m: &Seen| {
            m.param("event")
                .and_then(Value::as_str)
                .map(|e| matches!(e, "1002" | "1004" | "3004" | "3006"))
        };
        self.edge_started("6.1.3.2", "EVENT_SYS_ALARM raised", |m| {
            m.msg_type == "EVENT_SYS_ALARM" && recovery(m) == Some(false)
        })
        .await;
        self.edge_started("6.1.3.2", "EVENT_SYS_ALARM recovered", |m| {
            m.msg_type == "EVENT_SYS_ALARM" && recovery(m) == Some(true)
        })
        .await;
    }

    /// Fails an item whose job was reported more than once.
    fn one_result_per_job(&mut self, jobs: &Jobs) {
        for (item, ch, j) in jobs {
            let n = self.log.count(|m| {
                m.msg_type == "REP_JOB_RESULT"
                    && m.channel == *ch
                    && m.param("jobId").and_then(Value::as_u64) == Some(*j)
            });
            if n > 1 {
                self.add(
                    item,
                    "fail",
                    "one REP_JOB_RESULT per job",
                    format!("{n} results for job {j}"),
                    None,
                );
            }
        }
    }
}

/// The tap's findings plus one per failed step (error) and per step not exercised (info).
fn with_plan_findings(mut findings: Vec<Finding>, items: &[Item], edge: &str) -> Vec<Finding> {
    for i in items {
        if i.status == "fail" {
            for st in i.steps.iter().filter(|st| st.status == "fail") {
                findings.push(plan_finding(edge, i, Severity::Error, st.line()));
            }
        }
        for st in i.steps.iter().filter(|st| st.status == "not exercised") {
            findings.push(plan_finding(
                edge,
                i,
                Severity::Info,
                format!("{}: not exercised, {}", st.what, st.detail),
            ));
        }
    }
    findings
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

fn plan_finding(edge: &str, i: &Item, severity: Severity, message: String) -> Finding {
    Finding {
        rule: format!("plan.{}", i.item),
        clause: i.clause.clone(),
        table: None,
        severity,
        edge_id: Some(edge.into()),
        msg_type: None,
        topic: None,
        mid: None,
        packet: None,
        time: None,
        message,
        conn: None,
        side: None,
        offset: None,
        basis: None,
        from: None,
    }
}

/// Folds steps and rule findings into one verdict per detection item.
fn judge(steps: &HashMap<&'static str, Vec<Step>>, findings: &[Finding], edge: &str) -> Vec<Item> {
    ITEMS
        .iter()
        .map(|(item, clause, title, types)| {
            let steps = steps.get(item).cloned().unwrap_or_default();
            let mine: Vec<&Finding> = findings
                .iter()
                .filter(|f| f.severity >= Severity::Warning)
                .filter(|f| f.edge_id.as_deref().is_none_or(|x| x == edge))
                .filter(|f| {
                    f.clause == *clause
                        || f.clause.starts_with(&format!("{clause}."))
                        || f.msg_type.as_deref().is_some_and(|t| types.contains(&t))
                })
                .collect();
            let errors = mine
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let failed: Vec<&Step> = steps.iter().filter(|s| s.status == "fail").collect();
            let passed = steps.iter().filter(|s| s.status == "pass").count();
            let (status, detail) = if !failed.is_empty() || errors > 0 {
                let mut d: Vec<String> = failed.iter().map(|s| s.line()).collect();
                d.extend(
                    mine.iter()
                        .filter(|f| f.severity == Severity::Error)
                        .map(|f| format!("[{}] {}", f.rule, f.message)),
                );
                ("fail", d.join("; "))
            } else if passed == 0 {
                let why: Vec<String> = steps.iter().map(Step::line).collect();
                (
                    "not exercised",
                    if why.is_empty() {
                        "no step ran".into()
                    } else {
                        why.join("; ")
                    },
                )
            } else {
                let skipped: Vec<String> = steps
                    .iter()
                    .filter(|s| s.status == "not exercised")
                    .map(|s| format!("{} not exercised ({})", s.what, s.detail))
                    .collect();
                let mut d = format!(
                    "{} as expected",
                    crate::report::junit::count(passed, "exchange", "exchanges")
                );
                if !skipped.is_empty() {
                    d = format!("{d}; {}", skipped.join("; "));
                }
                ("pass", d)
            };
            Item {
                item: item.to_string(),
                clause: clause.to_string(),
                title: title.to_string(),
                status: status.into(),
                detail,
                steps,
                findings: mine.iter().map(|f| crate::report::one_line(f)).collect(),
            }
        })
        .collect()
}
