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
pub mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

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
    /// The broker refused, closed or ignored the connection: `cause` says which.
    #[error("MQTT client {client} could not connect to {broker}: {cause}")]
    Connect {
        client: String,
        broker: String,
        cause: String,
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
/// channel returned by [`Link::connect`], learn of a lost connection from
/// [`Link::state`].
pub struct Link {
    client: ClientKind,
    pub id: String,
    state: watch::Receiver<LinkState>,
}

/// Where a [`Link`]'s connection stands, as its event loop last saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    /// No CONNACK yet.
    Connecting,
    /// The broker accepted the connection (CONNACK 0).
    Up,
    /// The connection failed or was lost; `was_up`: it had been accepted first.
    Down {
        cause: String,
        at_us: i64,
        was_up: bool,
    },
}

/// The error kind inside a client error, if it is an I/O error.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = x.source();
    }
    None
}

/// Why a connection to `broker` failed or ended, in words a tester acts on: refused
/// (nothing listens), login refused (the CONNACK code), accepted and closed, accepted
/// and silent (no CONNACK), or lost after it was up.
fn connection_cause(
    io: Option<std::io::ErrorKind>,
    refused_code: Option<(u8, String)>,
    timeout: bool,
    was_up: bool,
    text: &str,
) -> String {
    use std::io::ErrorKind as K;
    if let Some((code, name)) = refused_code {
        return format!(
            "the broker refused the connection: CONNACK return code {code} ({name}); check the user name, password and client id the broker accepts"
        );
    }
    match (io, was_up) {
        (Some(K::ConnectionRefused), _) => {
            "connection refused: nothing listens on that address (is the broker running?)".into()
        }
        (
            Some(K::ConnectionAborted | K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe),
            false,
        ) => "the broker accepted the TCP connection and closed it without a CONNACK".into(),
        (
            Some(K::ConnectionAborted | K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe),
            true,
        ) => "the broker closed the connection".into(),
        (_, false) if timeout => {
            "the broker accepted the TCP connection but sent no CONNACK within 5 s".into()
        }
        (_, true) if timeout => "the broker stopped answering (network timeout)".into(),
        (_, false) => format!("connection failed: {text}"),
        (_, true) => format!("connection lost: {text}"),
    }
}

/// A CONNACK return code of MQTT 3.1.1 (3.2.2.3), by name.
fn v4_code(c: rumqttc::ConnectReturnCode) -> (u8, String) {
    use rumqttc::ConnectReturnCode as C;
    let name = match c {
        C::Success => "accepted",
        C::RefusedProtocolVersion => "unacceptable protocol version",
        C::BadClientId => "identifier rejected",
        C::ServiceUnavailable => "server unavailable",
        C::BadUserNamePassword => "bad user name or password",
        C::NotAuthorized => "not authorized",
    };
    (c as u8, name.into())
}

pub(crate) fn v4_cause(e: &rumqttc::ConnectionError, was_up: bool) -> String {
    use rumqttc::ConnectionError as E;
    let code = match e {
        E::ConnectionRefused(c) => Some(v4_code(*c)),
        _ => None,
    };
    let timeout = matches!(e, E::NetworkTimeout | E::FlushTimeout);
    connection_cause(io_kind(e), code, timeout, was_up, &e.to_string())
}

pub(crate) fn v5_cause(e: &rumqttc::v5::ConnectionError, was_up: bool) -> String {
    use rumqttc::v5::ConnectionError as E;
    let code = match e {
        E::ConnectionRefused(c) => {
            // The wire code (table 3-1 of MQTT 5) is private to rumqttc; a CONNACK
            // written with it carries it as its fourth byte.
            let mut b = bytes::BytesMut::new();
            let ack = rumqttc::v5::mqttbytes::v5::ConnAck {
                session_present: false,
                code: *c,
                properties: None,
            };
            let wire = ack.write(&mut b).ok().and_then(|_| b.get(3).copied());
            Some((wire.unwrap_or(0), format!("{c:?}")))
        }
        _ => None,
    };
    let timeout = matches!(e, E::Timeout(_));
    connection_cause(io_kind(e), code, timeout, was_up, &e.to_string())
}

/// The environment variable that holds the password of a broker given as
/// `USER@HOST:PORT` (`--broker` of `replay` and the sims).
pub const PASSWORD_ENV: &str = "EDGETAP_MQTT_PASSWORD";

/// A user name and its password.
pub type Login = (String, String);

/// A broker address `[USER@]HOST:PORT`: the login (the password from
/// [`PASSWORD_ENV`], never from the address, where `ps`, the shell's history and
/// every message naming the broker would show it) and the address.
pub fn broker_login(broker: &str) -> Result<(Option<Login>, &str), SimError> {
    let Some((user, addr)) = broker.rsplit_once('@') else {
        return Ok((None, broker));
    };
    if user.contains(':') {
        // Not echoed: it holds a password.
        return Err(SimError::Usage(format!(
            "the broker address holds a password (USER:PASSWORD@HOST:PORT): give \
             USER@HOST:PORT and the password in the environment variable {PASSWORD_ENV}"
        )));
    }
    let password = std::env::var(PASSWORD_ENV).unwrap_or_default();
    Ok((Some((user.to_string(), password)), addr))
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
    /// afterwards is missed. With `fail_fast`, the first failure (refused, login
    /// refused, closed, no CONNACK) is the error, with its cause; without, the client
    /// retries until `timeout` and the error names the last cause.
    pub async fn connect_with(
        broker: &str,
        id: &str,
        proto: Protocol,
        filters: &[String],
        timeout: Duration,
        fail_fast: bool,
    ) -> Result<(Link, mpsc::UnboundedReceiver<Incoming>), SimError> {
        let (login, addr) = broker_login(broker)?;
        let (host, port) = host_port(addr)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
        let (state_tx, mut state_rx) = watch::channel(LinkState::Connecting);
        let client = match proto {
            Protocol::V4 => {
                let mut o = rumqttc::MqttOptions::new(id, host, port);
                if let Some((user, password)) = &login {
                    o.set_credentials(user, password);
                }
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(1 << 20, 1 << 20);
                o.set_inflight(200);
                let (c, mut el) = rumqttc::AsyncClient::new(o, 256);
                let cid = id.to_string();
                let state = state_tx.clone();
                tokio::spawn(async move {
                    use rumqttc::{Event, Packet};
                    let mut up = false;
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
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                up = true;
                                let _ = state.send(LinkState::Up);
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                if tx.is_closed() {
                                    break;
                                }
                                tracing::debug!("{cid}: {e}");
                                let _ = state.send(LinkState::Down {
                                    cause: v4_cause(&e, up),
                                    at_us: now_us(),
                                    was_up: up,
                                });
                                up = false;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                ClientKind::V4(c)
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
                if let Some((user, password)) = &login {
                    o.set_credentials(user, password);
                }
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(Some(1 << 20));
                let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 256);
                let cid = id.to_string();
                let state = state_tx.clone();
                tokio::spawn(async move {
                    use rumqttc::v5::mqttbytes::v5::Packet;
                    use rumqttc::v5::Event;
                    let mut up = false;
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
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                up = true;
                                let _ = state.send(LinkState::Up);
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.send(());
                            }
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                            Ok(_) => {}
                            Err(e) => {
                                if tx.is_closed() {
                                    break;
                                }
                                tracing::debug!("{cid}: {e}");
                                let _ = state.send(LinkState::Down {
                                    cause: v5_cause(&e, up),
                                    at_us: now_us(),
                                    was_up: up,
                                });
                                up = false;
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
            state: state_rx.clone(),
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
        // A failure before the CONNACK ends the wait at once when `fail_fast`;
        // otherwise the client retries (a broker still starting) until `timeout`.
        let failed = async {
            loop {
                if state_rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let st = state_rx.borrow_and_update().clone();
                if let LinkState::Down { cause, .. } = st {
                    if fail_fast {
                        return cause;
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = wait => None,
                cause = failed => Some(cause),
            }
        })
        .await;
        let last_cause = || match &*link.state.borrow() {
            LinkState::Down { cause, .. } => Some(cause.clone()),
            _ => None,
        };
        let cause = match outcome {
            Ok(None) => return Ok((link, rx)),
            Ok(Some(cause)) => Some(cause),
            Err(_) => last_cause(),
        };
        link.disconnect().await;
        Err(match cause {
            Some(cause) => SimError::Connect {
                client: id.into(),
                broker: broker.into(),
                cause,
            },
            None => SimError::ConnectTimeout {
                client: id.into(),
                broker: broker.into(),
                waited_ms: timeout.as_millis() as u64,
            },
        })
    }

    /// [`Link::connect_with`] retrying until `timeout` (a broker still starting).
    pub async fn connect(
        broker: &str,
        id: &str,
        proto: Protocol,
        filters: &[String],
        timeout: Duration,
    ) -> Result<(Link, mpsc::UnboundedReceiver<Incoming>), SimError> {
        Link::connect_with(broker, id, proto, filters, timeout, false).await
    }

    /// The connection's state, to learn when it is lost.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
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
        raw: None,
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
