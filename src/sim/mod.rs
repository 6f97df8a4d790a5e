//! Reference implementations of both actors of T/YQDEIF 003—2022: a conforming edge
//! ([`edge`]) and a conforming platform that runs the clause 6 test plan
//! ([`platform`]), plus the passive tap that feeds what the broker carries to the
//! shared [`crate::pipeline::Analyzer`] ([`tap`]).
//!
//! This module is the only tokio-networking user among the sims: [`Link`] wraps a
//! rumqttc client (MQTT 3.1.1 or 5) and turns its event loop into a channel of
//! [`Incoming`] messages. The sims build envelopes with [`request`] and [`reply`], so
//! every message they send carries a CST timestamp and a 64-bit mid.

pub mod edge;
pub mod package;
pub mod platform;
pub mod run;
pub mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("broker address {0:?} is not HOST:PORT")]
    BadAddress(String),
    #[error("MQTT client {client}: {detail}")]
    Client { client: String, detail: String },
    #[error("MQTT client {client} could not connect to {broker} within {waited_ms} ms")]
    ConnectTimeout {
        client: String,
        broker: String,
        waited_ms: u64,
    },
    #[error("unknown fault {0:?}; known: {1}")]
    UnknownFault(String, String),
    #[error("package file {path}: {detail}")]
    Package { path: String, detail: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// MQTT protocol version of a sim's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

/// A received PUBLISH.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: bytes::Bytes,
}

enum ClientKind {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One MQTT connection of a sim: publish with [`Link::publish`], receive from the
/// channel returned by [`Link::connect`].
pub struct Link {
    client: ClientKind,
    pub id: String,
}

/// Splits `HOST:PORT`.
pub fn host_port(broker: &str) -> Result<(String, u16), SimError> {
    let (h, p) = broker
        .rsplit_once(':')
        .ok_or_else(|| SimError::BadAddress(broker.into()))?;
    let port = p.parse().map_err(|_| SimError::BadAddress(broker.into()))?;
    Ok((h.trim_matches(|c| c == '[' || c == ']').to_string(), port))
}

impl Link {
    /// Connects, subscribes to `filters` (QoS 1) and returns once the broker has
    /// acknowledged the connection and every subscription, so that nothing published
    /// afterwards is missed.
    pub async fn connect(
        broker: &str,
        id: &str,
        proto: Protocol,
        filters: &[String],
        timeout: Duration,
    ) -> Result<(Link, mpsc::UnboundedReceiver<Incoming>), SimError> {
        let (host, port) = host_port(broker)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
        let client = match proto {
            Protocol::V4 => {
                let mut o = rumqttc::MqttOptions::new(id, host, port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(1 << 20, 1 << 20);
                o.set_inflight(200);
                let (c, mut el) = rumqttc::AsyncClient::new(o, 256);
                let cid = id.to_string();
                tokio::spawn(async move {
                    use rumqttc::{Event, Packet};
                    loop {
                        match el.poll().await {
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                let m = Incoming {
                                    topic: p.topic,
                                    payload: p.payload,
                                };
                                if tx.send(m).is_err() {
                                    break;
                                }
                            }
                            Ok(Event::Incoming(Packet::ConnAck(_)))
                            | Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                if tx.is_closed() {
                                    break;
                                }
                                tracing::debug!("{cid}: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                ClientKind::V4(c)
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(Some(1 << 20));
                let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 256);
                let cid = id.to_string();
                tokio::spawn(async move {
                    use rumqttc::v5::mqttbytes::v5::Packet;
                    use rumqttc::v5::Event;
                    loop {
                        match el.poll().await {
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                let m = Incoming {
                                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                    payload: p.payload,
                                };
                                if tx.send(m).is_err() {
                                    break;
                                }
                            }
                            Ok(Event::Incoming(Packet::ConnAck(_)))
                            | Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                if tx.is_closed() {
                                    break;
                                }
                                tracing::debug!("{cid}: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                ClientKind::V5(c)
            }
        };
        let link = Link {
            client,
            id: id.to_string(),
        };
        for f in filters {
            link.subscribe(f).await?;
        }
        // One ConnAck plus one SubAck per filter.
        let wait = async {
            for _ in 0..=filters.len() {
                if ready_rx.recv().await.is_none() {
                    break;
                }
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            return Err(SimError::ConnectTimeout {
                client: id.into(),
                broker: broker.into(),
                waited_ms: timeout.as_millis() as u64,
            });
        }
        Ok((link, rx))
    }

    fn err(&self, e: impl std::fmt::Display) -> SimError {
        SimError::Client {
            client: self.id.clone(),
            detail: e.to_string(),
        }
    }

    pub async fn subscribe(&self, filter: &str) -> Result<(), SimError> {
        match &self.client {
            ClientKind::V4(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| self.err(e)),
            ClientKind::V5(c) => c
                .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| self.err(e)),
        }
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), SimError> {
        match &self.client {
            ClientKind::V4(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| self.err(e)),
            ClientKind::V5(c) => c
                .publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .map_err(|e| self.err(e)),
        }
    }

    pub async fn disconnect(&self) {
        let _ = match &self.client {
            ClientKind::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            ClientKind::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

/// `yyyy-MM-dd HH:mm:ss` in China Standard Time (UTC+8), as 5.3 table 1 wants.
pub fn cst_now() -> String {
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    chrono::Utc::now()
        .with_timezone(&cst)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Microseconds since the Unix epoch (the analyzer's clock).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

static NEXT_MID: AtomicU64 = AtomicU64::new(1_000_000_000_020_000);

/// A process-wide unique mid; wider than 32 bits on purpose (defect 7).
pub fn next_mid() -> u64 {
    NEXT_MID.fetch_add(1, Ordering::Relaxed)
}

/// A request or report envelope (table 1).
pub fn request(mid: Option<u64>, msg_type: &str, param: Option<Value>) -> Value {
    let mut m = Map::new();
    if let Some(mid) = mid {
        m.insert("mid".into(), json!(mid));
    }
    m.insert("timestamp".into(), json!(cst_now()));
    m.insert("type".into(), json!(msg_type));
    if let Some(p) = param {
        m.insert("param".into(), p);
    }
    Value::Object(m)
}

/// A reply envelope (table 2).
pub fn reply(
    mid: u64,
    msg_type: &str,
    code: i64,
    msg: Option<&str>,
    param: Option<Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("mid".into(), json!(mid));
    m.insert("timestamp".into(), json!(cst_now()));
    m.insert("type".into(), json!(msg_type));
    m.insert("code".into(), json!(code));
    if let Some(s) = msg {
        m.insert("msg".into(), json!(s));
    }
    if let Some(p) = param {
        m.insert("param".into(), p);
    }
    Value::Object(m)
}

/// `/v1/{edgeId}/{channel}/{role}`.
pub fn topic(edge: &str, channel: &str, role: &str) -> String {
    format!("/v1/{edge}/{channel}/{role}")
}

/// Latency samples, summarised as p50/p99.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    pub samples_us: Vec<u64>,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.samples_us.push(d.as_micros() as u64);
    }
    pub fn extend(&mut self, o: &Latencies) {
        self.samples_us.extend_from_slice(&o.samples_us);
    }
    /// The `q` quantile (0..=1) in milliseconds, nearest rank.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.samples_us.is_empty() {
            return None;
        }
        let mut s = self.samples_us.clone();
        s.sort_unstable();
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        Some(s[rank - 1] as f64 / 1000.0)
    }
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Why a counterpart must reject a request, judged by the shared rule engine (the
/// built-in rules): the first error of its content checks, or its expiry. `None` for
/// a valid request. The reference sims reject exactly what the rules reject, so they
/// never answer 200 or 202 to an invalid command.
pub fn rejection(topic: &str, payload: &[u8]) -> Option<String> {
    static RULES: OnceLock<Arc<crate::rules::RuleSet>> = OnceLock::new();
    let rules = RULES.get_or_init(|| Arc::new(crate::rules::RuleSet::builtin()));
    let m = crate::protocol::Message {
        seq: 0,
        conn: 0,
        side: crate::finding::Side::Client,
        packet: 0,
        time_us: chrono::Utc::now().timestamp_micros(),
        topic_name: topic.to_string(),
        topic: crate::protocol::parse_topic(topic)?,
        body: crate::protocol::parse_envelope(bytes::Bytes::copy_from_slice(payload)),
        origin_seen: false,
        retained: false,
    };
    let findings = crate::rules::Engine::judge_alone(rules, &m);
    let why = findings
        .iter()
        .find(|f| f.severity == crate::Severity::Error || f.rule == "message.expired")?;
    // A reply's msg is at most 256 characters (table 2).
    Some(why.message.chars().take(256).collect())
}
