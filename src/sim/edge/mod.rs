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

//!
//! Files: this one holds the settings, the run and the edge's session (link-up,
//! periodic reports, alarms, topo requests); `commands` answers the platform's
//! commands, `jobs` holds the containers and apps and runs the jobs that change
//! them, `fault` the rules broken on purpose.

mod commands;
mod fault;
mod jobs;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::{next_mid, request, topic, Latencies, Link, Protocol};

pub use fault::Fault;

use jobs::{Container, Fetch, Job};

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
