//! The platform's MQTT loop: what the edge sends is received here; its requests
//! (EVENT_LINKUP, topo) are answered at once, and every message is logged for the
//! plan to wait on ([`Log`]). [`respond`] runs the loop alone, with no plan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::sim::{reply, topic, Incoming, Link, Protocol, SimError};

/// A message the platform received from the edge.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) at: Instant,
    pub(super) channel: String,
    pub(super) role: String,
    pub(super) msg_type: String,
    pub(super) mid: Option<u64>,
    env: Value,
}

impl Seen {
    pub(super) fn param(&self, k: &str) -> Option<&Value> {
        self.env.get("param").and_then(|p| p.get(k))
    }
    pub(super) fn code(&self) -> Option<i64> {
        self.env.get("code").and_then(Value::as_i64)
    }
    /// `msg "…"` of a reply, or `no msg`.
    pub(super) fn msg_text(&self) -> String {
        quoted("msg", self.env.get("msg"))
    }
}

/// `name "text"`, or `no name` when absent or not a string.
pub(super) fn quoted(name: &str, v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(t) => format!("{name} {t:?}"),
        None => format!("no {name}"),
    }
}

#[derive(Default)]
pub(super) struct Log {
    seen: Mutex<Vec<Seen>>,
    notify: Notify,
    /// Why the plan stopped early (interrupted): no wait lasts beyond it.
    stopped: Mutex<Option<String>>,
}

impl Log {
    /// Waits until a message satisfying `f` arrives (or was already seen); `None`
    /// at once once the plan is stopped ([`Log::stop`]).
    pub(super) async fn wait(&self, limit: Duration, f: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if let Some(s) = self.find(&f) {
                return Some(s);
            }
            if self.stopped().is_some() {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.find(&f);
            }
        }
    }
    /// Stops the plan: every wait ends, and nothing more is sent.
    pub(super) fn stop(&self, why: String) {
        if let Ok(mut s) = self.stopped.lock() {
            s.get_or_insert(why);
        }
        self.notify.notify_waiters();
    }

    /// Why the plan stopped early, if it did.
    pub(super) fn stopped(&self) -> Option<String> {
        self.stopped.lock().ok()?.clone()
    }

    fn find(&self, f: &impl Fn(&Seen) -> bool) -> Option<Seen> {
        self.seen.lock().ok()?.iter().find(|s| f(s)).cloned()
    }
    pub(super) fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
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
pub(super) fn spawn_receiver(
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
                let rejected = crate::sim::rejection(&m.topic, &m.payload).and_then(|why| {
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
