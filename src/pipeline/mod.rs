//! The one pipeline: TCP bytes → MQTT packets → protocol messages → rule engine →
//! findings, with no I/O inside. A front end (capture reader, stored capture, proxy,
//! sims, replayer) hands every input to [`Analyzer::push`] with where and when it
//! happened ([`At`], [`Input`]), and takes the [`Summary`] from
//! [`Analyzer::finish`]; what the pipeline emits on the way (packets, messages,
//! findings) reaches the front end's [`Sink`].
//!
//! Two stages make it: the [`Framer`] (connections, MQTT decoding, broker copies,
//! payload parsing: each payload is parsed once, there) stages messages and
//! transport findings in order; the [`Judge`] (the rule engine) takes them. An
//! [`Analyzer`] runs both on one thread; a front end with cores to spare runs the
//! framer on its reading thread and the judge on another, passing [`Staged`] items
//! between them (`analyze`, the proxy).
//!
//! Broker captures hold each message more than once: the publisher's PUBLISH to the
//! broker, then the broker's PUBLISH to each subscriber. The publisher's leg (client →
//! server) is the message; a broker delivery (server → client) whose topic and payload
//! match a message seen within [`DELIVERY_WINDOW_US`] is a delivery of it and is not
//! judged again. A capture holding one leg only (taken at the device or through the
//! proxy) has no match, so each delivery there is a message of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::finding::{ConnId, Finding, Side};
use crate::mqtt::{Packet, MQTT_MAX_REMAINING};
use crate::protocol::Message;
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;

pub mod framer;
mod judge;

pub use framer::Framer;
pub use judge::{Ended, Judge, Staged};

/// What the pipeline emits. Every method has a default so a sink takes only what it
/// needs.
pub trait Sink {
    fn packet(&mut self, _p: &PacketEvent<'_>) {}
    fn message(&mut self, _m: &Message) {}
    fn finding(&mut self, _f: &Finding) {}
}

/// One decoded MQTT control packet.
#[derive(Debug)]
pub struct PacketEvent<'a> {
    pub conn: ConnId,
    pub side: Side,
    pub packet: u64,
    pub time_us: i64,
    pub offset: u64,
    pub len: usize,
    pub mqtt: &'a Packet,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub connections: u64,
    pub mqtt_packets: u64,
    pub publishes: u64,
    pub messages: u64,
    pub deliveries: u64,
    pub malformed: u64,
    /// PUBLISH packets that could not be attributed to a protocol message: a topic
    /// outside `/v1/{edgeId}/{channel}/{role}`, or an MQTT 5 topic alias never set.
    pub unattributed: u64,
    /// Protocol messages per edge id (of the topic), with the first and last time.
    #[serde(skip)]
    pub edges: std::collections::BTreeMap<String, EdgeTraffic>,
}

/// The messages of one edge: how many, and when the first and the last came (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EdgeTraffic {
    pub messages: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
}

impl EdgeTraffic {
    /// Counts one message at `time_us`.
    pub fn note(&mut self, time_us: i64) {
        self.messages += 1;
        self.first_us = Some(self.first_us.map_or(time_us, |t| t.min(time_us)));
        self.last_us = Some(self.last_us.map_or(time_us, |t| t.max(time_us)));
    }
}

/// Edges counted one by one; the messages of any further edge count under
/// [`OTHER_EDGES`], so a capture of random edge ids cannot grow memory without end.
pub const MAX_COUNTED_EDGES: usize = 100_000;
pub const OTHER_EDGES: &str = "(other edges)";

impl Stats {
    /// Counts one protocol message of `edge` at `time_us`.
    pub(crate) fn note_message(&mut self, edge: &str, time_us: i64) {
        self.messages += 1;
        let edge = if self.edges.len() >= MAX_COUNTED_EDGES && !self.edges.contains_key(edge) {
            OTHER_EDGES
        } else {
            edge
        };
        match self.edges.get_mut(edge) {
            Some(e) => e.note(time_us),
            None => {
                let mut e = EdgeTraffic::default();
                e.note(time_us);
                self.edges.insert(edge.to_string(), e);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_packet: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_packet: MQTT_MAX_REMAINING,
        }
    }
}

/// Where and when an input happened: its connection, its time (µs) and the front
/// end's unit number (capture frame, store record), which findings cite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub conn: ConnId,
    pub time_us: i64,
    pub frame: u64,
}

impl At {
    pub fn new(conn: ConnId, time_us: i64, frame: u64) -> At {
        At {
            conn,
            time_us,
            frame,
        }
    }
}

/// Everything a front end can hand the pipeline.
#[derive(Debug)]
pub enum Input<'a> {
    /// A new connection. `midstream`: its start was not seen, so both directions
    /// may begin inside a packet.
    Open {
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        midstream: bool,
    },
    /// Bytes of one direction, in stream order.
    Data { side: Side, bytes: &'a [u8] },
    /// An MQTT packet a client library already decoded (the sims' and replay's own
    /// subscriptions, a broker's bridge): judged as if its bytes had come.
    Packet { side: Side, packet: Packet },
    /// `lost` bytes of one direction never arrived.
    Gap { side: Side, lost: u64 },
    /// The connection ended; bytes left in its buffers are an unfinished packet.
    Close,
    /// The input ended with the connection still open (a capture that stopped): a
    /// packet cut by it is the capture's fact.
    InputEnded,
    /// A flow that cannot be decoded (TLS).
    NotDecodable {
        client: SocketAddr,
        server: SocketAddr,
        reason: &'a str,
    },
    /// Bytes the front end forwarded without being able to read them (TLS it does
    /// not terminate): the first of a connection reports it as not decodable.
    Opaque { reason: &'a str },
    /// A capture frame that could not be read (`At::conn` is not used); reading went
    /// on after it.
    BadFrame { detail: &'a str },
    /// The connection goes on from `from` (the next file of a rotated capture): its
    /// decoders, CONNECT and state carry on.
    Continued { from: ConnId },
}

/// The one way in, of both an [`Analyzer`] and a [`Framer`] (whose judge runs
/// elsewhere): a front end that reads inputs feeds either.
pub trait Push {
    fn push(&mut self, at: At, input: Input<'_>, sink: &mut dyn Sink);
}

impl Push for Analyzer {
    fn push(&mut self, at: At, input: Input<'_>, sink: &mut dyn Sink) {
        Analyzer::push(self, at, input, sink)
    }
}

impl Push for Framer {
    fn push(&mut self, at: At, input: Input<'_>, sink: &mut dyn Sink) {
        Framer::push(self, at, input, sink)
    }
}

/// What a run of the pipeline comes to: the framer's counters and every clause it
/// exercised (or could not, and why).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub stats: Stats,
    pub coverage: Coverage,
}

/// Both stages on one thread: each input is framed, and what it staged judged at
/// once.
pub struct Analyzer {
    framer: Framer,
    judge: Option<Judge>,
    staged: Vec<Staged>,
    summary: Option<Summary>,
}

impl Analyzer {
    pub fn new(rules: Arc<RuleSet>, settings: Settings) -> Analyzer {
        Analyzer {
            judge: Some(Judge::new(rules.clone())),
            framer: Framer::new(rules, settings),
            staged: vec![],
            summary: None,
        }
    }

    /// The one way in.
    pub fn push(&mut self, at: At, input: Input<'_>, sink: &mut dyn Sink) {
        self.framer.push(at, input, sink);
        self.judge_staged(sink);
    }

    /// The one way out: the end of input is judged (unanswered requests, unfinished
    /// jobs, packets cut by the end). Asked again, the same summary.
    pub fn finish(&mut self, sink: &mut dyn Sink) -> Summary {
        if self.judge.is_some() {
            self.framer.finish();
            self.judge_staged(sink);
        }
        if let Some(judge) = self.judge.take() {
            self.summary = Some(judge.finish(sink));
        }
        self.summary.clone().unwrap_or_default()
    }

    fn judge_staged(&mut self, sink: &mut dyn Sink) {
        self.framer.take_staged(&mut self.staged);
        if let Some(judge) = &mut self.judge {
            for mut s in self.staged.drain(..) {
                judge.take(&mut s, sink);
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        self.framer.stats()
    }

    pub fn rules(&self) -> &RuleSet {
        self.framer.rules()
    }

    /// The clauses exercised so far (for a live view).
    pub fn exercised(&self) -> Coverage {
        match (&self.judge, &self.summary) {
            (Some(j), _) => {
                let mut c = self.framer.coverage().clone();
                c.merge(j.exercised());
                c
            }
            (None, Some(s)) => s.coverage.clone(),
            (None, None) => Coverage::default(),
        }
    }

    /// The framing stage (what it holds of unfinished packets, for the proxy's
    /// credential masking).
    pub fn framer(&self) -> &Framer {
        &self.framer
    }
}
