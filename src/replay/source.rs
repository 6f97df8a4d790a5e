//! Where a replay's recorded session comes from: a pcap/pcapng file (read by
//! [`crate::analyze::analyze_files`]) or a capture of the store (fed by
//! [`crate::store::replay::feed`]). Either way the one pipeline decodes it, so the
//! recorded messages are exactly the ones `edgetap analyze` judges, each counted once
//! (a broker delivery of a message already seen is not a message of its own), and the
//! recording's own findings come with them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::ReplayError;
use crate::finding::Finding;
use crate::mqtt::Packet;
use crate::pipeline::{Analyzer, PacketEvent, Settings, Sink};
use crate::protocol::{Actor, Class, Message, Topic};
use crate::redact::redact_payload;
use crate::rules::RuleSet;

/// Where the recorded session is.
#[derive(Debug, Clone)]
pub enum Source {
    Pcap(PathBuf),
    Stored { store: PathBuf, id: u64 },
}

impl Source {
    /// `SOURCE` on the command line: an existing file is a capture file; otherwise a
    /// number is the id of a capture in `store`.
    pub fn parse(arg: &str, store: &Path) -> Result<Source, ReplayError> {
        let p = PathBuf::from(arg);
        if p.is_file() {
            return Ok(Source::Pcap(p));
        }
        match arg.parse::<u64>() {
            Ok(id) => Ok(Source::Stored {
                store: store.to_path_buf(),
                id,
            }),
            Err(_) => Err(ReplayError::Source(format!(
                "{arg}: no such capture file, and not a capture id of the store"
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Pcap(p) => p.display().to_string(),
            Source::Stored { store, id } => format!("capture {id} of {}", store.display()),
        }
    }
}

/// One recorded protocol message, with its payload exactly as it was on the wire.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub index: usize,
    pub time_us: i64,
    pub topic_name: String,
    pub topic: Topic,
    pub payload: Vec<u8>,
    /// The envelope, when the payload is a JSON object.
    pub json: Option<Map<String, Value>>,
}

impl Recorded {
    pub fn msg_type(&self) -> Option<&str> {
        self.json.as_ref()?.get("type")?.as_str()
    }
    pub fn mid(&self) -> Option<u64> {
        self.json
            .as_ref()?
            .get("mid")
            .and_then(crate::protocol::as_u64_lenient)
    }
    pub fn class(&self) -> Class {
        self.topic.class
    }
    pub fn publisher(&self) -> Actor {
        self.topic.publisher
    }
    pub fn param(&self) -> Option<&Value> {
        self.json.as_ref()?.get("param")
    }
    pub fn job_id(&self) -> Option<u64> {
        self.param()?
            .get("jobId")
            .and_then(crate::protocol::as_u64_lenient)
    }
}

/// The recorded session: its messages in order and what the rules found in it.
#[derive(Debug, Clone)]
pub struct Recording {
    pub messages: Vec<Recorded>,
    pub findings: Vec<Finding>,
}

/// Collects messages with their raw payloads: the pipeline reports a PUBLISH through
/// `packet` just before the `message` it carries, so the last publish seen is the
/// message's payload.
#[derive(Default)]
struct Collect {
    last_publish: Option<(String, Vec<u8>)>,
    messages: Vec<Recorded>,
    findings: Vec<Finding>,
}

impl Sink for Collect {
    fn packet(&mut self, p: &PacketEvent<'_>) {
        if let Packet::Publish(pb) = p.mqtt {
            self.last_publish = Some((pb.topic.clone(), pb.payload.to_vec()));
        }
    }
    fn message(&mut self, m: &Message) {
        let payload = match self.last_publish.take() {
            Some((t, p)) if t == m.topic_name => p,
            // Not expected: fall back to the parsed envelope.
            _ => m
                .envelope()
                .map(|e| serde_json::to_vec(&e.to_serde()).unwrap_or_default())
                .unwrap_or_default(),
        };
        self.messages.push(Recorded {
            index: self.messages.len(),
            time_us: m.time_us,
            topic_name: m.topic_name.clone(),
            topic: m.topic.clone(),
            json: m.envelope().map(|e| e.to_serde()),
            payload,
        });
    }
    fn finding(&mut self, f: &Finding) {
        self.findings.push(f.clone());
    }
}

/// Loads the recorded session through the pipeline.
pub fn load(source: &Source, rules: Arc<RuleSet>, ports: &[u16]) -> Result<Recording, ReplayError> {
    let mut c = Collect::default();
    match source {
        Source::Pcap(path) => {
            let s = crate::analyze::AnalyzeSettings {
                files: vec![path.clone()],
                ports: ports.to_vec(),
                max_packet: crate::mqtt::MQTT_MAX_REMAINING,
                progress: false,
            };
            crate::analyze::analyze_files(rules, &s, &mut c)
                .map_err(|e| ReplayError::Source(format!("{}: {e}", path.display())))?;
        }
        Source::Stored { store, id } => {
            let st = crate::store::Store::open_existing(store)
                .map_err(|e| ReplayError::Source(e.to_string()))?;
            // A capture id the store does not hold is named as such, with the ids
            // it holds (not "no protocol messages").
            st.capture(*id).map_err(|e| {
                let ids: Vec<String> = st
                    .captures()
                    .map(|c| c.iter().map(|m| m.id.to_string()).collect())
                    .unwrap_or_default();
                let held = match ids.is_empty() {
                    true => "no capture".to_string(),
                    false => format!("capture ids {}", ids.join(", ")),
                };
                ReplayError::Source(format!("{e}: the store {} holds {held}", store.display()))
            })?;
            let mut a = Analyzer::new(rules, Settings::default());
            for ev in st.events(*id) {
                let ev = ev.map_err(|e| ReplayError::Source(e.to_string()))?;
                if let Some((at, input)) = crate::store::replay::input(&ev) {
                    a.push(at, input, &mut c);
                }
            }
            a.finish(&mut c);
        }
    }
    if c.messages.is_empty() {
        return Err(ReplayError::Source(format!(
            "{}: no protocol messages",
            source.describe()
        )));
    }
    Ok(Recording {
        messages: c.messages,
        findings: c.findings,
    })
}

/// One protocol message of a stored capture, for `captures show --payloads`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredMessage {
    pub conn: u64,
    /// The client id of the connection's CONNECT, when it was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub side: crate::finding::Side,
    /// The store's chunk number the message ended in.
    pub chunk: u64,
    pub time_us: i64,
    pub topic: String,
    /// The payload as text (lossy UTF-8), credentials redacted unless asked for.
    pub payload: String,
}

/// Every protocol message of stored capture `id`, decoded by the one pipeline, with
/// its connection's client id; values of credential-like JSON keys (password,
/// token, secret…) and the user info of URLs are redacted unless `show_secrets`.
pub fn stored_messages(
    store: &crate::store::Store,
    id: u64,
    rules: Arc<RuleSet>,
    show_secrets: bool,
) -> Result<Vec<StoredMessage>, ReplayError> {
    #[derive(Default)]
    struct Messages {
        clients: std::collections::HashMap<u64, String>,
        last_publish: Option<(String, Vec<u8>)>,
        out: Vec<StoredMessage>,
    }
    impl Sink for Messages {
        fn packet(&mut self, p: &PacketEvent<'_>) {
            match p.mqtt {
                Packet::Connect(c) => {
                    self.clients.insert(p.conn, c.client_id.clone());
                }
                Packet::Publish(pb) => {
                    self.last_publish = Some((pb.topic.clone(), pb.payload.to_vec()));
                }
                _ => {}
            }
        }
        fn message(&mut self, m: &Message) {
            let payload = match self.last_publish.take() {
                Some((t, p)) if t == m.topic_name => p,
                _ => vec![],
            };
            self.out.push(StoredMessage {
                conn: m.conn,
                client_id: self.clients.get(&m.conn).cloned(),
                side: m.side,
                chunk: m.packet,
                time_us: m.time_us,
                topic: m.topic_name.clone(),
                payload: String::from_utf8_lossy(&payload).into_owned(),
            });
        }
    }
    let mut c = Messages::default();
    let mut a = Analyzer::new(rules, Settings::default());
    for ev in store.events(id) {
        let ev = ev.map_err(|e| ReplayError::Source(e.to_string()))?;
        if let Some((at, input)) = crate::store::replay::input(&ev) {
            a.push(at, input, &mut c);
        }
    }
    a.finish(&mut c);
    if !show_secrets {
        for m in &mut c.out {
            m.payload = redact_payload(&m.payload);
        }
    }
    Ok(c.out)
}
