//! The reference edge: a conforming edge IoT agent of T/YQDEIF 003—2022 clause 6.
//!
//! On connect it sends EVENT_LINKUP; once the platform answers it reports
//! REP_SYS_STATUS every `period`, asks for topo add → update → delete, raises an alarm
//! (3003) and recovers it (3004); it answers every device, container and app command
//! from real state (the containers and apps it holds, jobs whose progress and state
//! advance with time after their `policy` delay) and sends EVENT_LINKDOWN on exit.
//! Bad commands get 400 (a field missing or of the wrong type) or 404 (no such job,
//! container or app) with a `msg`, never 200.
//!
//! A job whose command names a `file` with a real `http://` URL downloads it (while
//! the job runs) and checks its md5 and size; a failed download or check fails the
//! job, with the reason in the job result's `info` / `msg`. The placeholder URLs
//! (`http://repo.local/…`) are not fetched: the job pretends, as a quick sim should.
//!
//! A [`Fault`] makes it break exactly one rule on purpose, to test testers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::package::{self, FileRef};

use super::{next_mid, reply, request, topic, Incoming, Latencies, Link, Protocol, SimError};

/// A rule the edge breaks on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// CMD_SYS_UPGRADE answered 200 instead of 202.
    WrongCode,
    /// CMD_SYS_STATUS reply without the required `tempValue`.
    MissingField,
    /// No REP_JOB_RESULT after an accepted CMD_APP_INSTALL.
    NoJobResult,
    /// CMD_INFO_QUERY answered with a mid that is not the request's.
    WrongMid,
    /// CMD_CON_START answered with another type.
    WrongType,
    /// REP_SYS_STATUS with a timestamp that is no real date-time.
    BadTimestamp,
    /// Two REP_JOB_RESULT for one device upgrade.
    DuplicateResult,
    /// A valid CMD_APP_STOP answered 404.
    ErrorToValid,
}

/// How long the reference edge gives one package download.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::WrongCode,
        Fault::MissingField,
        Fault::NoJobResult,
        Fault::WrongMid,
        Fault::WrongType,
        Fault::BadTimestamp,
        Fault::DuplicateResult,
        Fault::ErrorToValid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::WrongCode => "wrong-code",
            Fault::MissingField => "missing-field",
            Fault::NoJobResult => "no-job-result",
            Fault::WrongMid => "wrong-mid",
            Fault::WrongType => "wrong-type",
            Fault::BadTimestamp => "bad-timestamp",
            Fault::DuplicateResult => "duplicate-result",
            Fault::ErrorToValid => "error-to-valid",
        }
    }

    /// The rule of the shared rule set that must catch this fault.
    pub fn caught_by(self) -> &'static str {
        match self {
            Fault::WrongCode => "reply.code",
            Fault::MissingField => "t13.CMD_SYS_STATUS.reply",
            // No deadline in the standard: a job without result is pending (info).
            Fault::NoJobResult => "job.pending",
            Fault::WrongMid => "reply.orphan",
            Fault::WrongType => "reply.type",
            Fault::BadTimestamp => "envelope.request",
            Fault::DuplicateResult => "job.result_duplicate",
            Fault::ErrorToValid => "reply.error_to_valid",
        }
    }

    /// The detection item of the plan that must fail.
    pub fn item(self) -> &'static str {
        match self {
            Fault::WrongCode | Fault::DuplicateResult => "6.1.2.2",
            Fault::MissingField | Fault::WrongMid | Fault::BadTimestamp => "6.1.3.2",
            Fault::NoJobResult => "6.3.1.2",
            Fault::WrongType => "6.2.2.2",
            Fault::ErrorToValid => "6.3.2.2",
        }
    }

    /// The fault shows as an outcome (a refusal, a job result that never comes), which
    /// the plan judges itself; the rule engine reports it as information at most, not
    /// as a protocol error.
    pub fn outcome(self) -> bool {
        matches!(self, Fault::NoJobResult | Fault::ErrorToValid)
    }

    pub fn parse(s: &str) -> Result<Fault, SimError> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                SimError::UnknownFault(s.into(), known.join(", "))
            })
    }
}

#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub broker: String,
    pub edge_id: String,
    /// Edges to run; more than one get ids `{edge_id}-{n}`.
    pub count: usize,
    pub protocol: Protocol,
    /// REP_SYS_STATUS period, announced as repPeriod.devPeriod.
    pub period: Duration,
    /// How long a job takes once its policy delay is over.
    pub job_time: Duration,
    /// What one second of `policy` lasts (shortened in tests).
    pub policy_second: Duration,
    /// Raise alarm 3003 this long after link-up, recover it as long again later.
    pub alarm_after: Option<Duration>,
    /// Ask for topo add / update / delete after link-up.
    pub topo: bool,
    pub faults: Vec<Fault>,
    /// Stop after this long (benchmarks); otherwise run until shutdown.
    pub run_for: Option<Duration>,
    pub connect_timeout: Duration,
}

impl EdgeSettings {
    pub fn new(broker: &str, edge_id: &str) -> EdgeSettings {
        EdgeSettings {
            broker: broker.into(),
            edge_id: edge_id.into(),
            count: 1,
            protocol: Protocol::V4,
            period: Duration::from_secs(5),
            job_time: Duration::from_secs(2),
            policy_second: Duration::from_secs(1),
            alarm_after: Some(Duration::from_secs(1)),
            topo: true,
            faults: vec![],
            run_for: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Edge ids of the run.
    pub fn edge_ids(&self) -> Vec<String> {
        if self.count <= 1 {
            vec![self.edge_id.clone()]
        } else {
            (1..=self.count)
                .map(|n| format!("{}-{n}", self.edge_id))
                .collect()
        }
    }
}

/// What a run of edges did.
#[derive(Debug, Default, Clone)]
pub struct EdgeStats {
    pub edges: usize,
    pub connected: usize,
    pub sent: u64,
    pub received: u64,
    /// Responses received to the edge's own requests (EVENT_LINKUP, topo).
    pub replies: u64,
    /// Request → response time of those.
    pub latency: Latencies,
    pub elapsed: Duration,
    pub errors: Vec<String>,
}

impl EdgeStats {
    pub fn merge(&mut self, o: EdgeStats) {
        self.edges += o.edges;
        self.connected += o.connected;
        self.sent += o.sent;
        self.received += o.received;
        self.replies += o.replies;
        self.latency.extend(&o.latency);
        self.errors.extend(o.errors);
    }

    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let q = |x| {
            self.latency
                .quantile_ms(x)
                .map_or("-".to_string(), |v| format!("{v:.2} ms"))
        };
        format!(
            "edges {}/{} connected, {} messages sent ({:.0}/s), {} received, {} replies, reply latency p50 {} p99 {}, {:.1} s",
            self.connected,
            self.edges,
            self.sent,
            self.sent as f64 / secs,
            self.received,
            self.replies,
            q(0.50),
            q(0.99),
            secs
        )
    }
}

/// Runs `settings.count` edges until `shutdown` turns true (or `run_for` passes).
pub async fn run(settings: EdgeSettings, shutdown: watch::Receiver<bool>) -> EdgeStats {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let many = settings.count > 1;
    for id in settings.edge_ids() {
        let mut s = settings.clone();
        if many {
            // A fleet connects over a ramp, not in one burst, and may wait longer.
            s.connect_timeout = s.connect_timeout.max(Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Trying to connect is part of the run: --duration-ms bounds it too.
        if let Some(d) = s.run_for {
            s.connect_timeout = s.connect_timeout.min(d);
        }
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move { run_one(s, id, sd).await }));
    }
    let mut stats = EdgeStats::default();
    for t in tasks {
        match t.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.errors.push(e.to_string()),
        }
    }
    stats.elapsed = t0.elapsed();
    stats
}

#[derive(Debug)]
struct App {
    version: String,
    running: bool,
    enabled: bool,
}

#[derive(Debug, Default)]
struct Container {
    running: bool,
    apps: BTreeMap<String, App>,
}

#[derive(Debug)]
enum JobKind {
    SysUpgrade {
        version: String,
    },
    ConInstall {
        container: String,
        app: Option<(String, String)>,
    },
    AppInstall {
        container: String,
        app: String,
        version: String,
        enable: bool,
    },
    AppUpgrade {
        container: String,
        version: String,
    },
}

/// The download of a job's package.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetch {
    /// Nothing to download (no file, or a placeholder URL).
    None,
    Pending,
    Done(Result<(), String>),
}

#[derive(Debug)]
struct Job {
    id: u64,
    kind: JobKind,
    fetch: Fetch,
    /// Work starts here (acceptance plus the policy delay).
    start: Instant,
    time: Duration,
    done: bool,
}

impl Job {
    fn end(&self) -> Instant {
        self.start + self.time
    }

    /// Its time is over and its download (if any) has ended.
    fn due(&self, now: Instant) -> bool {
        !self.done && self.fetch != Fetch::Pending && self.end() <= now
    }

    /// (progress %, state "1".."5") as table 8 defines them.
    fn status(&self, now: Instant) -> (u64, &'static str) {
        if now < self.start {
            return (0, "1");
        }
        let f = ((now - self.start).as_secs_f64() / self.time.as_secs_f64().max(1e-3)).min(1.0);
        let p = (f * 100.0).floor() as u64;
        if self.fetch == Fetch::Pending {
            return (p.min(39), "2");
        }
        let state = match f {
            f if f >= 1.0 => "5",
            f if f >= 0.5 => "4",
            f if f >= 0.4 => "3",
            _ => "2",
        };
        (p, state)
    }
}

/// One edge's state.
struct Edge {
    id: String,
    s: EdgeSettings,
    link: Link,
    booted: Instant,
    booted_at: String,
    containers: BTreeMap<String, Container>,
    jobs: Vec<Job>,
    /// Our requests awaiting a response: mid → (sent, type).
    asked: HashMap<u64, (Instant, String)>,
    linked_at: Option<Instant>,
    next_status: Option<Instant>,
    alarm_step: u8,
    /// deviceIds the platform assigned.
    devices: Vec<String>,
    stats: EdgeStats,
    /// Downloads report here: (jobId, outcome).
    fetched: mpsc::UnboundedSender<(u64, Result<u64, String>)>,
}

async fn run_one(s: EdgeSettings, id: String, mut shutdown: watch::Receiver<bool>) -> EdgeStats {
    // Two wildcard filters cover the five topics the edge receives on (device, container
    // and app commands; device and topo responses): fewer filters, lighter brokers.
    let filters = vec![topic(&id, "+", "command"), topic(&id, "+", "response")];
    let mut stats = EdgeStats {
        edges: 1,
        ..EdgeStats::default()
    };
    let (link, mut rx) =
        match Link::connect(&s.broker, &id, s.protocol, &filters, s.connect_timeout).await {
            Ok(x) => x,
            Err(e) => {
                stats.errors.push(e.to_string());
                return stats;
            }
        };
    stats.connected = 1;
    let (fetched, mut fetched_rx) = mpsc::unbounded_channel();
    let mut e = Edge {
        fetched,
        id: id.clone(),
        booted: Instant::now(),
        booted_at: super::cst_now(),
        s: s.clone(),
        link,
        containers: BTreeMap::new(),
        jobs: vec![],
        asked: HashMap::new(),
        linked_at: None,
        next_status: None,
        alarm_step: 0,
        devices: vec![],
        stats,
    };
    e.ask("device", "EVENT_LINKUP", e.linkup_param()).await;
    let stop_at = s.run_for.map(|d| Instant::now() + d);
    loop {
        let wake = e.next_wake(stop_at);
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => { e.stats.received += 1; e.on_message(m).await }
                None => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if stop_at.is_some_and(|t| Instant::now() >= t) { break; }
                e.on_timers().await;
            }
            Some((job, outcome)) = fetched_rx.recv() => e.on_fetched(job, outcome).await,
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
        }
    }
    let down = request(
        Some(next_mid()),
        "EVENT_LINKDOWN",
        Some(json!({"reason": "Restart Link"})),
    );
    e.send(&topic(&e.id, "device", "data"), &down).await;
    // Let the event loop flush the last messages before the DISCONNECT.
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.link.disconnect().await;
    e.stats
}

fn missing(field: &str) -> String {
    format!("param.{field} is missing or of the wrong type")
}

impl Edge {
    fn has(&self, f: Fault) -> bool {
        self.s.faults.contains(&f)
    }

    async fn send(&mut self, topic: &str, v: &Value) {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        match self.link.publish(topic, bytes).await {
            Ok(()) => self.stats.sent += 1,
            Err(e) => self.stats.errors.push(e.to_string()),
        }
    }

    /// Sends a request on `{channel}/request` and remembers it for its response.
    async fn ask(&mut self, channel: &str, msg_type: &str, param: Value) {
        let mid = next_mid();
        self.asked.insert(mid, (Instant::now(), msg_type.into()));
        let v = request(Some(mid), msg_type, Some(param));
        self.send(&topic(&self.id, channel, "request"), &v).await;
    }

    fn next_wake(&self, stop_at: Option<Instant>) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut w = stop_at.unwrap_or(far);
        if let Some(t) = self.next_status {
            w = w.min(t);
        }
        if let Some(t) = self.alarm_due() {
            w = w.min(t);
        }
        for j in self
            .jobs
            .iter()
            .filter(|j| !j.done && j.fetch != Fetch::Pending)
        {
            w = w.min(j.end());
        }
        w
    }

    fn alarm_due(&self) -> Option<Instant> {
        let (Some(l), Some(a)) = (self.linked_at, self.s.alarm_after) else {
            return None;
        };
        match self.alarm_step {
            0 => Some(l + a),
            1 => Some(l + a * 2),
            _ => None,
        }
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        if self.next_status.is_some_and(|t| t <= now) {
            self.next_status = Some(now + self.s.period);
            let mut v = request(
                Some(next_mid()),
                "REP_SYS_STATUS",
                Some(self.status_param()),
            );
            if self.has(Fault::BadTimestamp) {
                v["timestamp"] = json!("2022-02-30 25:61:00");
            }
            self.send(&topic(&self.id, "device", "data"), &v).await;
        }
        if self.alarm_due().is_some_and(|t| t <= now) {
            let (event, msg) = if self.alarm_step == 0 {
                ("3003", "uplink eth0 lost")
            } else {
                ("3004", "uplink eth0 restored")
            };
            self.alarm_step += 1;
            let v = request(
                Some(next_mid()),
                "EVENT_SYS_ALARM",
                Some(json!({"event": event, "msg": msg})),
            );
            self.send(&topic(&self.id, "device", "data"), &v).await;
        }
        let mut finished = vec![];
        for (i, j) in self.jobs.iter_mut().enumerate() {
            if j.due(now) {
                j.done = true;
                finished.push(i);
            }
        }
        for i in finished {
            self.finish_job(i).await;
        }
    }

    /// Starts downloading `file` when it names a real http:// URL, from the job's start.
    fn start_fetch(&self, job: u64, file: Option<&Value>, start: Instant) -> Fetch {
        let Some(f) = file
            .and_then(FileRef::from_json)
            .filter(FileRef::downloadable)
        else {
            return Fetch::None;
        };
        let tx = self.fetched.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let outcome = package::download(&f, DOWNLOAD_LIMIT).await;
            let _ = tx.send((job, outcome));
        });
        Fetch::Pending
    }

    /// A download ended: record it, and finish the job if its time is over too.
    async fn on_fetched(&mut self, job: u64, outcome: Result<u64, String>) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job && !j.done) {
            j.fetch = Fetch::Done(outcome.map(|_| ()));
        }
        self.on_timers().await;
    }

    /// The result of a job whose download failed: (channel, param, publish).
    fn failed_job(&self, i: usize, why: &str) -> (&'static str, Value, bool) {
        let j = &self.jobs[i];
        let why: String = why.chars().take(256).collect();
        match &j.kind {
            JobKind::SysUpgrade { .. } => (
                "device",
                json!({"jobId": j.id, "result": 400, "info": why}),
                true,
            ),
            JobKind::AppUpgrade { .. } => (
                "app",
                json!({"jobId": j.id, "result": 400, "info": why}),
                true,
            ),
            JobKind::AppInstall { .. } => (
                "app",
                json!({"jobId": j.id, "code": 400, "msg": why}),
                !self.has(Fault::NoJobResult),
            ),
            JobKind::ConInstall { .. } => (
                "container",
                json!({"jobId": j.id, "code": 400, "msg": why}),
                true,
            ),
        }
    }

    /// Applies a finished job to the state and reports its result.
    async fn finish_job(&mut self, i: usize) {
        let j = &self.jobs[i];
        let id = j.id;
        let failed = match &j.fetch {
            Fetch::Done(Err(why)) => Some(self.failed_job(i, why)),
            _ => None,
        };
        let (channel, param, publish) = if let Some(f) = failed {
            f
        } else {
            match &j.kind {
                JobKind::SysUpgrade { version } => (
                    "device",
                    json!({"jobId": id, "result": 200, "info": format!("upgraded to {version}")}),
                    true,
                ),
                JobKind::ConInstall { container, app } => {
                    let mut c = Container {
                        running: true,
                        ..Container::default()
                    };
                    if let Some((a, v)) = app {
                        c.apps.insert(
                            a.clone(),
                            App {
                                version: v.clone(),
                                running: true,
                                enabled: true,
                            },
                        );
                    }
                    let container = container.clone();
                    self.containers.insert(container.clone(), c);
                    (
                        "container",
                        json!({"jobId": id, "code": 200, "msg": format!("container {container} installed")}),
                        true,
                    )
                }
                JobKind::AppInstall {
                    container,
                    app,
                    version,
                    enable,
                } => {
                    let (container, app, version, enable) =
                        (container.clone(), app.clone(), version.clone(), *enable);
                    match self.containers.get_mut(&container) {
                        Some(c) => {
                            c.apps.insert(
                                app.clone(),
                                App {
                                    version,
                                    running: enable,
                                    enabled: enable,
                                },
                            );
                            (
                                "app",
                                json!({"jobId": id, "code": 200, "msg": format!("app {app} installed in {container}")}),
                                !self.has(Fault::NoJobResult),
                            )
                        }
                        None => (
                            "app",
                            json!({"jobId": id, "code": 404, "msg": format!("container {container} was removed")}),
                            !self.has(Fault::NoJobResult),
                        ),
                    }
                }
                JobKind::AppUpgrade { container, version } => {
                    let (container, version) = (container.clone(), version.clone());
                    match self.containers.get_mut(&container) {
                        Some(c) => {
                            for a in c.apps.values_mut() {
                                a.version = version.clone();
                            }
                            (
                                "app",
                                json!({"jobId": id, "result": 200, "info": format!("apps of {container} at {version}")}),
                                true,
                            )
                        }
                        None => (
                            "app",
                            json!({"jobId": id, "result": 404, "info": format!("container {container} was removed")}),
                            true,
                        ),
                    }
                }
            }
        };
        if !publish {
            return;
        }
        let dup = matches!(self.jobs[i].kind, JobKind::SysUpgrade { .. })
            && self.has(Fault::DuplicateResult);
        let t = topic(&self.id, channel, "data");
        for _ in 0..if dup { 2 } else { 1 } {
            let v = request(Some(next_mid()), "REP_JOB_RESULT", Some(param.clone()));
            self.send(&t, &v).await;
        }
    }

    async fn on_message(&mut self, m: Incoming) {
        let Some(t) = crate::protocol::parse_topic(&m.topic) else {
            return;
        };
        let Ok(Value::Object(env)) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        let Some(mid) = env.get("mid").and_then(Value::as_u64) else {
            return;
        };
        let msg_type = env
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let empty = json!({});
        let param = env.get("param").unwrap_or(&empty).clone();
        match t.role.as_str() {
            "response" => self.on_response(mid, &param, &env).await,
            "command" => {
                let (code, msg, out) = match super::rejection(&m.topic, &m.payload) {
                    Some(why) => (400, Some(why), None),
                    None => self.command(&t.channel, &msg_type, &param),
                };
                let mut msg = msg;
                let mut reply_type = msg_type.clone();
                let mut reply_mid = mid;
                let mut code = code;
                let mut out = out;
                match msg_type.as_str() {
                    "CMD_SYS_UPGRADE" if self.has(Fault::WrongCode) && code == 202 => code = 200,
                    "CMD_SYS_STATUS" if self.has(Fault::MissingField) => {
                        if let Some(o) = out.as_mut().and_then(Value::as_object_mut) {
                            o.remove("tempValue");
                        }
                    }
                    "CMD_INFO_QUERY" if self.has(Fault::WrongMid) => {
                        reply_mid = mid + 1_000_000_000
                    }
                    "CMD_CON_START" if self.has(Fault::WrongType) => {
                        reply_type = "CMD_CON_STARTED".into()
                    }
                    "CMD_APP_STOP" if self.has(Fault::ErrorToValid) && code == 200 => {
                        code = 404;
                        out = None;
                        msg = Some("app not found".into());
                    }
                    _ => {}
                }
                let v = reply(reply_mid, &reply_type, code, msg.as_deref(), out);
                self.send(&topic(&self.id, &t.channel, "reply"), &v).await;
                // A container installed at once still reports its job.
                if msg_type == "CMD_CON_INSTALL" && code == 200 {
                    let job = param.get("jobId").and_then(Value::as_u64);
                    if let Some(i) = self.jobs.iter().position(|j| !j.done && Some(j.id) == job) {
                        self.jobs[i].done = true;
                        self.finish_job(i).await;
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_response(&mut self, mid: u64, param: &Value, env: &serde_json::Map<String, Value>) {
        let Some((sent, asked)) = self.asked.remove(&mid) else {
            return;
        };
        self.stats.replies += 1;
        self.stats.latency.push(sent.elapsed());
        let ok = env.get("code").and_then(Value::as_i64) == Some(200);
        match asked.as_str() {
            "EVENT_LINKUP" if ok => {
                let now = Instant::now();
                self.linked_at = Some(now);
                self.next_status = Some(now + self.s.period);
                if self.s.topo {
                    let infos = json!({"deviceInfos": [
                        {"nodeId": "node-1", "name": "meter 1", "description": "three-phase meter", "mfgInfo": "edgetap", "model": "M1", "modelId": "m1"},
                        {"nodeId": "node-2", "name": "meter 2", "description": "three-phase meter", "mfgInfo": "edgetap", "model": "M1"}
                    ]});
                    self.ask("topo", "CMD_TOPO_ADD", infos).await;
                }
            }
            "CMD_TOPO_ADD" => {
                self.devices = param
                    .get("data")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|d| d.get("code").and_then(Value::as_i64) == Some(200))
                            .filter_map(|d| {
                                d.get("deviceId").and_then(Value::as_str).map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !self.devices.is_empty() {
                    let st: Vec<Value> = self
                        .devices
                        .iter()
                        .map(|d| json!({"deviceId": d, "deviceStatus": "ONLINE"}))
                        .collect();
                    self.ask("topo", "CMD_TOPO_UPDATE", json!({"deviceStatuses": st}))
                        .await;
                }
            }
            "CMD_TOPO_UPDATE" => {
                if let Some(d) = self.devices.first().cloned() {
                    self.ask("topo", "CMD_TOPO_DEL", json!({"deviceIds": [d]}))
                        .await;
                }
            }
            _ => {}
        }
    }

    /// Answers one command: (code, msg, param).
    fn command(
        &mut self,
        channel: &str,
        t: &str,
        p: &Value,
    ) -> (i64, Option<String>, Option<Value>) {
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(String::from);
        let n = |k: &str| p.get(k).and_then(Value::as_u64);
        let obj = |k: &str| p.get(k).is_some_and(Value::is_object);
        let bad = |m: String| (400, Some(m), None);
        let nf = |m: String| (404, Some(m), None);
        let policy = p
            .get("policy")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .max(0.0);
        let start = Instant::now() + self.s.policy_second.mul_f64(policy);
        let job_time = self.s.job_time;
        match (channel, t) {
            ("device", "CMD_SYS_UPGRADE") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !matches!(n("upgradeType"), Some(0..=2)) {
                    return bad("param.upgradeType must be 0, 1 or 2".into());
                }
                if !obj("file") {
                    return bad(missing("file"));
                }
                if self.jobs.iter().any(|j| j.id == job) {
                    return bad(format!("job {job} exists"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::SysUpgrade { version },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            ("device", "CMD_STATUS_QUERY") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(j) = self.jobs.iter().find(|j| j.id == job) else {
                    return nf(format!("job {job} not found"));
                };
                let (progress, state) = j.status(Instant::now());
                (
                    200,
                    None,
                    Some(json!({"jobId": job, "progress": progress, "state": state})),
                )
            }
            ("device", "CMD_SYS_STATUS") => (200, None, Some(self.status_param())),
            ("device", "CMD_INFO_QUERY") => (200, None, Some(self.info_param())),
            ("container", "CMD_CON_INSTALL") => {
                let Some(name) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                if self.containers.contains_key(&name) {
                    return bad(format!("container {name} exists"));
                }
                let app = p.get("withAPP").filter(|v| v.is_object()).map(|w| {
                    let a = w
                        .get("app")
                        .and_then(Value::as_str)
                        .unwrap_or("app")
                        .to_string();
                    let v = w
                        .get("version")
                        .and_then(Value::as_str)
                        .unwrap_or("1.0")
                        .to_string();
                    (a, v)
                });
                let with_app = app.is_some();
                let time = if with_app { job_time } else { Duration::ZERO };
                let start = if with_app { start } else { Instant::now() };
                self.jobs.push(Job {
                    id: job,
                    fetch: Fetch::None,
                    kind: JobKind::ConInstall {
                        container: name,
                        app,
                    },
                    start,
                    time,
                    done: false,
                });
                if with_app {
                    (202, None, None)
                } else {
                    (200, None, None)
                }
            }
            ("container", "CMD_CON_START" | "CMD_CON_STOP" | "CMD_CON_REMOVE") => {
                let Some(name) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(c) = self.containers.get_mut(&name) else {
                    return nf(format!("container {name} not found"));
                };
                match t {
                    "CMD_CON_START" => c.running = true,
                    "CMD_CON_STOP" => {
                        c.running = false;
                        for a in c.apps.values_mut() {
                            a.running = false;
                        }
                    }
                    _ => {
                        self.containers.remove(&name);
                    }
                }
                (200, None, None)
            }
            ("app", "CMD_APP_INSTALL") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(app) = s("app") else {
                    return bad(missing("app"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !obj("file") {
                    return bad(missing("file"));
                }
                let enable = match s("enable").as_deref() {
                    Some("1") => true,
                    Some("0") => false,
                    _ => return bad("param.enable must be \"1\" or \"0\"".into()),
                };
                let Some(c) = self.containers.get(&container) else {
                    return nf(format!("container {container} not found"));
                };
                if c.apps.contains_key(&app) {
                    return bad(format!("app {app} exists in {container}"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::AppInstall {
                        container,
                        app,
                        version,
                        enable,
                    },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            (
                "app",
                "CMD_APP_START" | "CMD_APP_STOP" | "CMD_APP_REMOVE" | "CMD_APP_ENABLE"
                | "CMD_APP_UNENABLE",
            ) => {
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(app) = s("app") else {
                    return bad(missing("app"));
                };
                let Some(c) = self.containers.get_mut(&container) else {
                    return nf(format!("container {container} not found"));
                };
                let Some(a) = c.apps.get_mut(&app) else {
                    return nf(format!("app {app} not found in {container}"));
                };
                match t {
                    "CMD_APP_START" => a.running = true,
                    "CMD_APP_STOP" => a.running = false,
                    "CMD_APP_ENABLE" => a.enabled = true,
                    "CMD_APP_UNENABLE" => a.enabled = false,
                    _ => {
                        c.apps.remove(&app);
                    }
                }
                (200, None, None)
            }
            ("app", "CMD_APP_UPGRADE") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !obj("file") {
                    return bad(missing("file"));
                }
                let Some(c) = self.containers.get(&container) else {
                    return nf(format!("container {container} not found"));
                };
                if c.apps.is_empty() {
                    return nf(format!("container {container} holds no app"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::AppUpgrade { container, version },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            _ => bad(format!("{t} is not a command of the {channel} channel")),
        }
    }

    fn linkup_param(&self) -> Value {
        json!({
            "dev": {"devSN": format!("SN-{}", self.id), "devType": "edge-agent", "devName": self.id,
                    "mfgInfo": "edgetap reference edge", "devStatus": "online"},
            "cpu": {"cpus": 4, "frequency": 1.5, "arch": "aarch64"},
            "mem": {"phy": 2048, "virt": 4096},
            "disk": {"disk": 32768},
            "os": {"distro": "Debian", "version": "12", "kernel": "6.1"},
            "links": [{"name": "eth0", "type": "ethernet", "mac": "02:00:00:00:00:01"}]
        })
    }

    fn status_param(&self) -> Value {
        let running = self.containers.values().filter(|c| c.running).count() as f64;
        json!({
            "cpuRate": (12.5 + running).min(100.0),
            "memUsed": {"phy": 41.0, "virt": 12.0},
            "diskUsed": 23.0,
            "tempValue": 47.5,
            "devDateTime": super::cst_now(),
            "devStDateTime": self.booted_at,
            "devRunTime": self.booted.elapsed().as_secs(),
            "linkState": [{"name": "eth0", "status": "up"}],
            "longitude": "116.397",
            "latitude": "39.908"
        })
    }

    fn info_param(&self) -> Value {
        let mut v = self.linkup_param();
        v["temperature"] = json!({"temLow": -20, "temHigh": 70});
        v["repPeriod"] = json!({"devPeriod": self.s.period.as_secs_f64()});
        v
    }
}
