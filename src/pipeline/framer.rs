//! The one pipeline: TCP bytes → MQTT packets → protocol messages → rule engine →
//! findings, with no I/O inside. Front ends (capture reader, proxy, replayer) call
//! [`Analyzer::open`], [`Analyzer::data`], [`Analyzer::gap`], [`Analyzer::close`] and
//! [`Analyzer::finish`] with timestamps, and receive events through a [`Sink`].
//!
//! Broker captures hold each message more than once: the publisher's PUBLISH to the
//! broker, then the broker's PUBLISH to each subscriber. The publisher's leg (client →
//! server) is the message; a broker delivery (server → client) whose topic and payload
//! match a message seen within [`DELIVERY_WINDOW_US`] is a delivery of it and is not
//! judged again. A capture holding one leg only (taken at the device or through the
//! proxy) has no match, so each delivery there is a message of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::finding::{ConnId, Finding, Side};
use crate::mqtt::{Decoded, Packet, StreamDecoder, Version, MQTT_MAX_REMAINING};
use crate::protocol::{self, Message};
use crate::rules::engine::Place;
use crate::rules::model::Check;
use crate::rules::{Engine, RuleSet};

/// How long after a publisher's leg a broker delivery is recognised as its copy.
pub const DELIVERY_WINDOW_US: i64 = 10 * 1_000_000;

/// The newest publisher legs a DUP resend is looked up among.
const DUP_SCAN: usize = 100_000;

/// Payloads on a topic outside the standard are read for a standard `type` up to
/// this size.
const STANDARD_TYPE_SNIFF_MAX: usize = 64 << 10;

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
    fn note_message(&mut self, edge: &str, time_us: i64) {
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

struct Conn {
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    decoders: [StreamDecoder; 2],
    version: Option<Version>,
    client_id: Option<String>,
    /// The client's CONNECT credentials; kept for the store, never printed unredacted.
    username: Option<String>,
    /// Reported as not decodable ([`Analyzer::opaque`]).
    opaque: bool,
    /// The client's first bytes, until they show a CONNECT or not; `None` when the
    /// input did not see the connection start (or lost bytes before it could tell).
    opening: Option<crate::mqtt::Opening>,
    /// The client did not open with a CONNECT: what it opened with, until its first
    /// packet says whether it speaks MQTT without a CONNECT or not MQTT at all.
    unopened: Option<crate::mqtt::NotConnect>,
    /// Not MQTT (`mqtt.connect_first`): neither direction is decoded any further.
    not_mqtt: bool,
    /// MQTT 5 topic aliases per direction (client→server, server→client).
    aliases: [HashMap<u16, String>; 2],
    /// Topics already reported as unattributed on this connection (bounded).
    unattributed: Vec<String>,
    /// Packet ids of QoS>0 PUBLISH in flight per direction: seen, not yet
    /// acknowledged (PUBACK, PUBREC), so a set stays as small as the peer's window.
    pkids: [HashSet<u16>; 2],
}

/// How many distinct unattributed topics a connection reports; the count goes on.
const UNATTRIBUTED_REPORTED_MAX: usize = 16;

/// What an analyzer that defers judging ([`Analyzer::deferred`]) hands to a
/// [`Judge`], in order.
#[derive(Debug)]
pub enum Staged {
    Message(Message),
    /// A message whose payload the judge parses (see [`Analyzer::parse_payloads`]).
    Unparsed(Unparsed),
    /// A transport finding (gap, malformed packet, bad frame…): already judged.
    Finding(Finding),
    /// Left behind by [`Judge::take`] while it parses an `Unparsed` in place.
    Taken,
    /// The input ended at this time (µs): what is still open is judged against it.
    End(i64),
}

/// A message before its payload is parsed.
#[derive(Debug)]
pub struct Unparsed {
    seq: u64,
    conn: ConnId,
    side: Side,
    packet: u64,
    time_us: i64,
    topic_name: String,
    topic: protocol::Topic,
    payload: bytes::Bytes,
    origin_seen: bool,
    retained: bool,
}

impl Unparsed {
    /// Bytes of payload it holds.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    pub fn parse(self) -> Message {
        Message {
            seq: self.seq,
            conn: self.conn,
            side: self.side,
            packet: self.packet,
            time_us: self.time_us,
            body: protocol::parse_envelope(self.payload),
            topic_name: self.topic_name,
            topic: self.topic,
            origin_seen: self.origin_seen,
            retained: self.retained,
        }
    }
}

pub struct Analyzer {
    settings: Settings,
    /// Messages and findings wait in `staged` for a [`Judge`] instead of going to the
    /// engine and the sink.
    defer: bool,
    /// Deferred only: parse payloads here (true) or leave them to the judge.
    parse_here: bool,
    staged: Vec<Staged>,
    engine: Engine,
    conns: HashMap<ConnId, Conn, ahash::RandomState>,
    /// Publisher legs recently seen: (topic+payload hash, time), oldest first.
    recent: VecDeque<(u64, i64)>,
    /// How many of `recent` have each hash; built only once a PUBLISH from a server
    /// is seen (`None` before). A capture or proxy that carries only the devices'
    /// own publishing never needs it, and keeping it costs a random access into a
    /// table of every message of the last [`DELIVERY_WINDOW_US`] per PUBLISH (at
    /// 125,000 messages a second through the proxy, 1.25 million entries: the
    /// recorder's most costly line in `perf`, cache misses).
    recent_count: Option<HashMap<u64, u32, ahash::RandomState>>,
    /// Deliveries judged as messages for want of their publisher's leg (the
    /// publisher on a listener the capture does not see, a will): by hash, the
    /// connection and time of the first, so that the broker's copy of it to
    /// another subscriber is not a second message. Expired with `lone_order`.
    lone: HashMap<u64, (ConnId, i64), ahash::RandomState>,
    lone_order: VecDeque<(u64, i64)>,
    stats: Stats,
    seq: u64,
    findings: Vec<Finding>,
    last_time_us: i64,
}

impl Analyzer {
    pub fn new(rules: Arc<RuleSet>, settings: Settings) -> Analyzer {
        Analyzer {
            settings,
            defer: false,
            parse_here: true,
            staged: vec![],
            engine: Engine::new(rules),
            conns: HashMap::default(),
            recent: VecDeque::new(),
            recent_count: None,
            lone: HashMap::default(),
            lone_order: VecDeque::new(),
            stats: Stats::default(),
            seq: 0,
            findings: vec![],
            last_time_us: 0,
        }
    }

    /// An analyzer that frames, decodes and parses, but leaves the judging of
    /// messages to a [`Judge`], which may run on another thread: messages and
    /// findings are staged in order and taken with [`Analyzer::take_staged`]. The
    /// sink then sees packets only.
    pub fn deferred(rules: Arc<RuleSet>, settings: Settings) -> Analyzer {
        Analyzer {
            defer: true,
            ..Analyzer::new(rules, settings)
        }
    }

    /// Deferred only: whether messages staged from now on carry their payload
    /// parsed (the default) or raw, for the judge to parse. A front end running the
    /// judge on another thread balances the two threads' work with it.
    pub fn parse_payloads(&mut self, here: bool) {
        self.parse_here = here;
    }

    /// Moves what is staged so far to the end of `out`.
    pub fn take_staged(&mut self, out: &mut Vec<Staged>) {
        out.append(&mut self.staged);
    }

    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn rules(&self) -> &RuleSet {
        self.engine.rules()
    }

    /// Connection `from` goes on as `conn` (the next file of a rotated capture):
    /// its decoders, CONNECT and state carry on.
    pub fn continued(&mut self, from: ConnId, conn: ConnId) {
        if let Some(c) = self.conns.remove(&from) {
            self.conns.insert(conn, c);
        }
    }

    /// A new connection. `midstream`: the capture did not see its start, so both
    /// directions may begin inside a packet.
    pub fn open(
        &mut self,
        conn: ConnId,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        midstream: bool,
    ) {
        let mk = || {
            if midstream {
                StreamDecoder::mid_stream(self.settings.max_packet)
            } else {
                StreamDecoder::new(self.settings.max_packet)
            }
        };
        self.conns.insert(
            conn,
            Conn {
                client,
                server,
                decoders: [mk(), mk()],
                version: None,
                client_id: None,
                username: None,
                opaque: false,
                opening: (!midstream).then(Default::default),
                unopened: None,
                not_mqtt: false,
                aliases: [HashMap::new(), HashMap::new()],
                unattributed: vec![],
                pkids: [HashSet::new(), HashSet::new()],
            },
        );
        self.stats.connections += 1;
    }

    /// Bytes of one direction, in stream order. `packet` is the front end's unit
    /// number (capture frame, store chunk) given to findings.
    pub fn data(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        packet: u64,
        bytes: &[u8],
        sink: &mut dyn Sink,
    ) {
        self.last_time_us = self.last_time_us.max(time_us);
        if !self.conns.contains_key(&conn) {
            self.open(conn, None, None, true);
        }
        let c = self.conns.get_mut(&conn).expect("opened above");
        if c.not_mqtt {
            return;
        }
        if side == Side::Client {
            if let Some(nc) = c.opening.as_mut().and_then(|o| o.feed(bytes)) {
                if let Some(other) = nc.other_protocol {
                    // Another protocol: nothing edgetap judges (info), not a fault of
                    // the client's it could prove.
                    c.not_mqtt = true;
                    let reason = format!("{}, {other}", nc.shown);
                    self.opaque(conn, time_us, packet, &reason, sink);
                    return;
                }
                c.unopened = Some(nc);
            }
        }
        let c = self.conns.get_mut(&conn).expect("present");
        c.decoders[side.index()].feed(bytes);
        loop {
            let c = self.conns.get_mut(&conn).expect("present");
            let version = c.version;
            let Some(d) = c.decoders[side.index()].next(version) else {
                break;
            };
            if side == Side::Client {
                if let Some(nc) = c.unopened.take() {
                    // The first thing the client sent that is not a CONNECT: an MQTT
                    // packet (judged on), or bytes that are not MQTT at all.
                    match &d {
                        Decoded::Packet { packet: p, .. } => {
                            let what = format!("its first packet is a {} ({})", p.name(), nc.shown);
                            self.opened_without_connect(conn, time_us, packet, what);
                        }
                        Decoded::Malformed { .. } | Decoded::Oversized { .. } => {
                            let what = format!("its first bytes are {}", nc.shown);
                            self.not_mqtt(conn, time_us, packet, what, sink);
                            return;
                        }
                        Decoded::Skipped { .. } => c.unopened = Some(nc),
                    }
                }
            }
            self.decoded(conn, side, time_us, packet, d, sink);
        }
        self.flush(sink);
    }

    /// `mqtt.connect_first`: the client opened with `what` instead of a CONNECT.
    fn opened_without_connect(&mut self, conn: ConnId, time_us: i64, packet: u64, what: String) {
        // The opening is the start of the client's stream.
        let place = Place::frame(packet, time_us).on(conn, Some(Side::Client), Some(0));
        self.engine.emit_at(
            |c| matches!(c, Check::MqttConnectFirst),
            &place,
            vec![("what", what)],
            &mut self.findings,
        );
    }

    /// The client opened with `what`, which is not MQTT: said once, and neither
    /// direction is decoded any further (its bytes would only make noise).
    fn not_mqtt(
        &mut self,
        conn: ConnId,
        time_us: i64,
        packet: u64,
        what: String,
        sink: &mut dyn Sink,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.not_mqtt = true;
            c.unopened = None;
        }
        let what = format!("{what}: the connection is not MQTT and was not decoded further");
        self.opened_without_connect(conn, time_us, packet, what);
        self.flush(sink);
    }

    /// `lost` bytes of one direction never arrived.
    pub fn gap(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        packet: u64,
        lost: u64,
        sink: &mut dyn Sink,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let offset = c.decoders[side.index()].stream_offset();
        let mut unopened = None;
        if side == Side::Client {
            // Bytes lost before the opening could tell: it is not seen (a CONNECT the
            // capture missed is no fault of the client's).
            c.opening = None;
            // Its first bytes were seen and were no CONNECT; what comes after the gap
            // is not its first packet, so only the bytes are named.
            unopened = c.unopened.take();
        }
        c.decoders[side.index()].gap(lost);
        self.engine.note_lost();
        if let Some(nc) = unopened {
            let what = format!("its first bytes are {}", nc.shown);
            self.opened_without_connect(conn, time_us, packet, what);
        }
        let place = Place::frame(packet, time_us).on(conn, Some(side), Some(offset));
        self.engine.emit_at(
            |c| matches!(c, Check::CaptureGap),
            &place,
            vec![("lost", lost.to_string()), ("side", side.arrow().into())],
            &mut self.findings,
        );
        self.flush(sink);
    }

    /// A capture frame that could not be read; reading went on after it.
    pub fn bad_frame(&mut self, time_us: i64, packet: u64, detail: &str, sink: &mut dyn Sink) {
        let place = Place::frame(packet, time_us);
        self.engine.note_lost();
        self.engine.emit_at(
            |c| matches!(c, Check::BadFrame),
            &place,
            vec![("detail", detail.to_string())],
            &mut self.findings,
        );
        self.flush(sink);
    }

    /// A flow that cannot be decoded (TLS).
    pub fn not_decodable(
        &mut self,
        conn: ConnId,
        client: SocketAddr,
        server: SocketAddr,
        time_us: i64,
        packet: u64,
        reason: &str,
        sink: &mut dyn Sink,
    ) {
        let place = Place::frame(packet, time_us).on(conn, None, None);
        self.engine.emit_at(
            |c| matches!(c, Check::NotDecodable),
            &place,
            vec![
                ("client", client.to_string()),
                ("server", server.to_string()),
                ("reason", reason.to_string()),
            ],
            &mut self.findings,
        );
        self.flush(sink);
    }

    /// Bytes of a connection that the front end forwarded without being able to
    /// read them (TLS it does not terminate): the first of a connection reports the
    /// flow as not decodable; the bytes are not decoded.
    pub fn opaque(
        &mut self,
        conn: ConnId,
        time_us: i64,
        packet: u64,
        reason: &str,
        sink: &mut dyn Sink,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if std::mem::replace(&mut c.opaque, true) {
            return;
        }
        let unknown = || SocketAddr::from(([0, 0, 0, 0], 0));
        let (client, server) = (
            c.client.unwrap_or_else(unknown),
            c.server.unwrap_or_else(unknown),
        );
        self.not_decodable(conn, client, server, time_us, packet, reason, sink);
    }

    /// The connection ended; bytes left in its buffers are an unfinished packet.
    pub fn close(&mut self, conn: ConnId, time_us: i64, packet: u64, sink: &mut dyn Sink) {
        self.end_conn(conn, time_us, packet, true, sink);
    }

    /// The input ended with the connection still open (a capture that stopped):
    /// a packet cut by it is the capture's fact ([`Check::CaptureEnded`]).
    pub fn input_ended(&mut self, conn: ConnId, time_us: i64, packet: u64, sink: &mut dyn Sink) {
        self.end_conn(conn, time_us, packet, false, sink);
    }

    /// `closed`: the connection ended (FIN, RST, the proxy's end of it); else the
    /// input ended with the connection still open.
    fn end_conn(
        &mut self,
        conn: ConnId,
        time_us: i64,
        packet: u64,
        closed: bool,
        sink: &mut dyn Sink,
    ) {
        // A client that opened with bytes that are no CONNECT and ended before they
        // made a packet: not MQTT (an HTTP request is shorter than the length its
        // first bytes would announce).
        let unopened = self.conns.get_mut(&conn).and_then(|c| c.unopened.take());
        if let Some(nc) = unopened {
            let what = format!("its first bytes are {}", nc.shown);
            self.not_mqtt(conn, time_us, packet, what, sink);
        }
        if let Some(c) = self.conns.remove(&conn).filter(|c| !c.not_mqtt) {
            for side in [Side::Client, Side::Server] {
                let d = &c.decoders[side.index()];
                if d.buffered() == 0 {
                    continue;
                }
                let offset = d.stream_offset() - d.buffered() as u64;
                let place = Place::frame(packet, time_us).on(conn, Some(side), Some(offset));
                let len = ("len", d.buffered().to_string());
                let (check, vars): (fn(&Check) -> bool, _) = if closed {
                    let detail = "the connection ended inside this packet".to_string();
                    let kind = ("packet_type", "unfinished".to_string());
                    (
                        |c| matches!(c, Check::MqttMalformed),
                        vec![kind, len, ("detail", detail)],
                    )
                } else {
                    let side = ("side", side.arrow().to_string());
                    (|c| matches!(c, Check::CaptureEnded), vec![len, side])
                };
                self.engine.emit_at(check, &place, vars, &mut self.findings);
            }
        }
        self.flush(sink);
    }

    /// End of input: unanswered requests, unfinished jobs.
    pub fn finish(&mut self, sink: &mut dyn Sink) {
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        let t = self.last_time_us;
        for c in open {
            self.end_conn(c, t, 0, false, sink);
        }
        if self.defer {
            self.flush(sink);
            self.staged.push(Staged::End(t));
        } else {
            self.engine.input_ends(t);
            self.engine.finish(&mut self.findings);
        }
        self.flush(sink);
    }

    fn flush(&mut self, sink: &mut dyn Sink) {
        if self.defer {
            self.staged
                .extend(self.findings.drain(..).map(Staged::Finding));
            return;
        }
        for f in self.findings.drain(..) {
            sink.finding(&f);
        }
    }

    fn decoded(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        packet: u64,
        d: Decoded,
        sink: &mut dyn Sink,
    ) {
        let place = |offset| Place::frame(packet, time_us).on(conn, Some(side), Some(offset));
        match d {
            Decoded::Packet {
                offset,
                len,
                packet: p,
            } => {
                self.stats.mqtt_packets += 1;
                self.engine.note_exercised("5.2");
                sink.packet(&PacketEvent {
                    conn,
                    side,
                    packet,
                    time_us,
                    offset,
                    len,
                    mqtt: &p,
                });
                match p {
                    Packet::Connect(c) => {
                        let st = self.conns.get_mut(&conn).expect("present");
                        st.version = Some(c.version);
                        st.client_id = Some(c.client_id);
                        st.username = c.username;
                    }
                    Packet::Publish(p) => {
                        self.stats.publishes += 1;
                        self.publish(conn, side, time_us, packet, p, sink);
                    }
                    // Acknowledged: the other side's PUBLISH with this id is no longer
                    // in flight, and the id may come again for a new message.
                    Packet::PubAck(id) | Packet::PubRec(id) => {
                        let other = match side {
                            Side::Client => Side::Server,
                            Side::Server => Side::Client,
                        };
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.pkids[other.index()].remove(&id);
                        }
                    }
                    _ => {}
                }
            }
            Decoded::Malformed {
                offset,
                len,
                header,
                error,
            } => {
                self.stats.malformed += 1;
                // A malformed PUBLISH is still a PUBLISH on the wire.
                if header >> 4 == 3 {
                    self.stats.publishes += 1;
                }
                self.engine.emit_at(
                    |c| matches!(c, Check::MqttMalformed),
                    &place(offset),
                    vec![
                        (
                            "packet_type",
                            crate::mqtt::packet::type_name(header >> 4).into(),
                        ),
                        ("len", len.to_string()),
                        ("detail", error),
                    ],
                    &mut self.findings,
                );
            }
            Decoded::Oversized {
                offset,
                announced,
                limit,
                header,
                topic,
            } => {
                let kind = crate::mqtt::packet::type_name(header >> 4);
                let what = match &topic {
                    Some(t) => format!("{kind} on {t}"),
                    None => kind.to_string(),
                };
                let from = self.findings.len();
                self.engine.emit_at(
                    |c| matches!(c, Check::MqttOversized),
                    &place(offset),
                    vec![
                        ("announced", announced.to_string()),
                        ("limit", limit.to_string()),
                        ("packet", what),
                    ],
                    &mut self.findings,
                );
                // Who the packet concerns, from the topic read before the limit.
                if let Some(t) = topic {
                    let edge = crate::protocol::parse_topic(&t).map(|t| t.edge_id);
                    for f in &mut self.findings[from..] {
                        f.edge_id = f.edge_id.take().or_else(|| edge.clone());
                        f.topic = Some(t.clone());
                    }
                }
            }
            Decoded::Skipped { .. } => {}
        }
    }

    fn publish(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        packet: u64,
        p: crate::mqtt::Publish,
        sink: &mut dyn Sink,
    ) {
        let mut p = p;
        let origin_seen =
            side == Side::Client && self.conns.get(&conn).is_some_and(|c| c.client_id.is_some());
        if let Err(alias) = self.resolve_alias(conn, side, &mut p) {
            self.unattributed(
                conn,
                side,
                time_us,
                packet,
                format!("alias {alias}"),
                format!(
                    "MQTT 5 topic alias {alias} was not set earlier on this connection ({}); \
                     the capture probably started after the PUBLISH that set it",
                    side.arrow()
                ),
            );
            return;
        }
        // A retransmitted QoS>0 PUBLISH (dup flag) is the same message again, when
        // its first sending was seen; a broker redelivering on a new connection what
        // it sent before the capture (or before the proxy was inserted) is news here.
        if p.qos > 0 {
            if let Some(c) = self.conns.get_mut(&conn) {
                let first = c.pkids[side.index()].insert(p.pkid);
                if p.dup && !first {
                    return;
                }
            }
        }
        let topic = protocol::parse_topic(&p.topic);
        let key = leg_key(&p.topic, &p.payload);
        self.expire_legs(time_us);
        // A client's DUP resend on a new connection (its link dropped before the
        // PUBACK) of a PUBLISH seen within the delivery window: the same message,
        // sent again as MQTT's at-least-once requires, not a second one. (Rare: the
        // recent legs are scanned, newest first, only for a DUP.)
        if p.dup
            && side == Side::Client
            && self
                .recent
                .iter()
                .rev()
                .take(DUP_SCAN)
                .any(|&(k, _)| k == key)
        {
            return;
        }
        match side {
            Side::Client => {
                self.recent.push_back((key, time_us));
                if let Some(counts) = &mut self.recent_count {
                    *counts.entry(key).or_default() += 1;
                }
            }
            Side::Server => {
                let recent = &self.recent;
                let counts = self.recent_count.get_or_insert_with(|| {
                    let mut m = HashMap::default();
                    for &(k, _) in recent {
                        *m.entry(k).or_default() += 1;
                    }
                    m
                });
                let copy = counts.get(&key).copied().unwrap_or(0) > 0
                    || match self.lone.get(&key) {
                        // The same message delivered to another subscriber.
                        Some(&(first, _)) => first != conn,
                        None => {
                            self.lone.insert(key, (conn, time_us));
                            self.lone_order.push_back((key, time_us));
                            false
                        }
                    };
                if copy {
                    if topic.is_some() {
                        self.stats.deliveries += 1;
                    }
                    return;
                }
            }
        }
        // A zero-length retained PUBLISH deletes the topic's retained message (MQTT
        // 3.1.1 §3.3.1.3): MQTT housekeeping, not a protocol message. (Its deliveries
        // to subscribers matched the publisher's leg above.)
        if p.retain && p.payload.is_empty() {
            self.unattributed(
                conn,
                side,
                time_us,
                packet,
                p.topic.clone(),
                "a zero-length retained PUBLISH clears the retained message of the topic \
                 (MQTT 3.1.1 §3.3.1.3)"
                    .into(),
            );
            return;
        }
        let Some(topic) = topic else {
            let name = p.topic.clone();
            let near = name.trim_start().trim_start_matches('/').get(..3);
            let in_tree = near.is_some_and(|v| v.eq_ignore_ascii_case("v1/"));
            if let Some((t, expected)) =
                in_tree.then(|| self.standard_type_of(&p.payload)).flatten()
            {
                // A message of the standard on a topic of its tree (/v1/…) that is
                // none of its topics (wrong case, a trailing slash, an unknown role):
                // the counterpart subscribed to the standard's topic never receives
                // it. (Outside /v1/, a copy on a system's own topic accuses no one.)
                self.stats.unattributed += 1;
                let mut place = Place::frame(packet, time_us).on(conn, Some(side), None);
                place.topic = Some(name.clone());
                self.engine.emit_at(
                    |c| matches!(c, Check::TopicShape),
                    &place,
                    vec![("type", t), ("topic", name), ("expected", expected)],
                    &mut self.findings,
                );
                return;
            }
            self.unattributed(
                conn,
                side,
                time_us,
                packet,
                name,
                "the topic is not /v1/{edgeId}/{channel}/{role} of the standard".into(),
            );
            return;
        };
        self.stats.note_message(&topic.edge_id, time_us);
        let raw = Unparsed {
            seq: self.seq,
            conn,
            side,
            packet,
            time_us,
            topic_name: p.topic,
            topic,
            retained: p.retain && side == Side::Server,
            payload: p.payload,
            origin_seen,
        };
        self.seq += 1;
        if self.defer {
            self.flush(sink);
            self.staged.push(if self.parse_here {
                Staged::Message(raw.parse())
            } else {
                Staged::Unparsed(raw)
            });
            return;
        }
        let m = raw.parse();
        self.engine.on_message(&m, &mut self.findings);
        sink.message(&m);
        self.flush(sink);
    }

    /// Resolves an MQTT 5 topic alias: a PUBLISH with a topic and an alias sets it,
    /// one with an empty topic uses it. `Err(alias)` when the alias is unknown.
    fn resolve_alias(
        &mut self,
        conn: ConnId,
        side: Side,
        p: &mut crate::mqtt::Publish,
    ) -> Result<(), u16> {
        let Some(alias) = p.topic_alias else {
            return Ok(());
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let map = &mut c.aliases[side.index()];
        if p.topic.is_empty() {
            match map.get(&alias) {
                Some(t) => p.topic = t.clone(),
                None => return Err(alias),
            }
        } else {
            map.insert(alias, p.topic.clone());
        }
        Ok(())
    }

    /// The standard's message type a payload names (a JSON object whose `type` the
    /// catalog defines), with the topic the standard puts it on. Only asked for a
    /// PUBLISH whose topic is none of the standard's.
    /// (Read by [`protocol::parse_envelope`], so with the same tolerance as any
    /// message: a BOM, a trailing NUL, a spaced key.)
    fn standard_type_of(&self, payload: &bytes::Bytes) -> Option<(String, String)> {
        if payload.len() > STANDARD_TYPE_SNIFF_MAX {
            return None;
        }
        let env = protocol::parse_envelope(payload.clone()).ok()?;
        let t = env.msg_type?;
        let def = self.engine.rules().types.get(&t)?;
        let expected = format!("/v1/{{edgeId}}/{}/{}", def.channels.join("|"), def.role);
        Some((t, expected))
    }

    /// A PUBLISH that is no protocol message: counted, and reported once per
    /// connection and topic (up to [`UNATTRIBUTED_REPORTED_MAX`] topics).
    fn unattributed(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        packet: u64,
        topic: String,
        why: String,
    ) {
        self.stats.unattributed += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.unattributed.len() >= UNATTRIBUTED_REPORTED_MAX || c.unattributed.contains(&topic) {
            return;
        }
        c.unattributed.push(topic.clone());
        let mut place = Place::frame(packet, time_us).on(conn, Some(side), None);
        place.topic = Some(topic.clone());
        self.engine.emit_at(
            |c| matches!(c, Check::TopicUnattributed),
            &place,
            vec![("topic", topic), ("detail", why)],
            &mut self.findings,
        );
    }

    fn expire_legs(&mut self, now: i64) {
        while let Some(&(k, t)) = self.lone_order.front() {
            if now - t <= DELIVERY_WINDOW_US {
                break;
            }
            self.lone_order.pop_front();
            if self.lone.get(&k).is_some_and(|&(_, first)| first == t) {
                self.lone.remove(&k);
            }
        }
        while let Some(&(k, t)) = self.recent.front() {
            if now - t <= DELIVERY_WINDOW_US {
                break;
            }
            self.recent.pop_front();
            let Some(counts) = &mut self.recent_count else {
                continue;
            };
            if let Some(n) = counts.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&k);
                }
            }
        }
    }

    /// Each connection whose client side holds the first bytes of a packet not yet
    /// complete: (connection, stream offset of its first byte, the bytes so far).
    /// The proxy's recorder looks at these for credentials before a batch is stored.
    pub fn pending_client_packets(&self) -> impl Iterator<Item = (ConnId, u64, &[u8])> + '_ {
        self.conns.iter().filter_map(|(&id, c)| {
            let (at, b) = c.decoders[Side::Client.index()].pending()?;
            Some((id, at, b))
        })
    }

    /// [`Self::pending_client_packets`] of one connection.
    pub fn pending_client(&self, conn: ConnId) -> Option<(u64, &[u8])> {
        self.conns.get(&conn)?.decoders[Side::Client.index()].pending()
    }

    /// Client identifier and version of a connection, when its CONNECT was seen.
    pub fn connection_info(&self, conn: ConnId) -> Option<(Option<Version>, Option<&str>)> {
        self.conns
            .get(&conn)
            .map(|c| (c.version, c.client_id.as_deref()))
    }

    /// Addresses of a connection, for reports.
    pub fn addresses(&self, conn: ConnId) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        self.conns.get(&conn).map(|c| (c.client, c.server))
    }
}

/// Hash of a leg: every payload byte goes through it, so a fast hash (SipHash took
/// 5 % of `analyze` on 900-byte reports); fixed keys, as a run must be reproducible.
/// The judging half of a deferred analyzer: the rule engine over staged messages.
pub struct Judge {
    engine: Engine,
    findings: Vec<Finding>,
}

impl Judge {
    pub fn new(rules: Arc<RuleSet>) -> Judge {
        Judge {
            engine: Engine::new(rules),
            findings: vec![],
        }
    }

    /// Judges one staged item; an `Unparsed` one is parsed and left in `s` as a
    /// `Message`, to be dropped with its batch.
    pub fn take(&mut self, s: &mut Staged, sink: &mut dyn Sink) {
        if let Staged::Unparsed(_) = s {
            if let Staged::Unparsed(raw) = std::mem::replace(s, Staged::Taken) {
                *s = Staged::Message(raw.parse());
            }
        }
        match s {
            Staged::Taken | Staged::Unparsed(_) => {}
            Staged::End(t) => self.engine.input_ends(*t),
            Staged::Finding(f) => {
                self.engine.note_transport(f);
                sink.finding(f)
            }
            Staged::Message(m) => {
                self.engine.on_message(m, &mut self.findings);
                sink.message(m);
                for f in self.findings.drain(..) {
                    sink.finding(&f);
                }
            }
        }
    }

    /// The engine so far (its exercised clauses, for a live view).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// End of input: unanswered requests, unfinished jobs. Returns the engine, whose
    /// exercised clauses the report needs.
    pub fn finish(mut self, sink: &mut dyn Sink) -> Engine {
        self.engine.finish(&mut self.findings);
        for f in self.findings.drain(..) {
            sink.finding(&f);
        }
        self.engine
    }
}

fn leg_key(topic: &str, payload: &[u8]) -> u64 {
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}
