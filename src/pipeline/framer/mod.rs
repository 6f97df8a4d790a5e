//! The framing stage: connections, MQTT decoding, broker copies, and each payload
//! parsed once. It judges transport faults itself (malformed packets, gaps, topics
//! outside the standard) and stages them, in order, with the protocol messages, for
//! the [`Judge`](super::Judge).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{At, Input, PacketEvent, Settings, Sink, Staged, Stats};
use crate::finding::{ConnId, Finding, Side};
use crate::mqtt::{Decoded, Packet, StreamDecoder, Version};
use crate::protocol::{self, Message};
use crate::rules::engine::{transport_findings, Coverage, Place};
use crate::rules::model::Check;
use crate::rules::RuleSet;

mod transport;

/// How long after a publisher's leg a broker delivery is recognised as its copy.
pub const DELIVERY_WINDOW_US: i64 = 10 * 1_000_000;

/// The newest publisher legs a DUP resend is looked up among.
const DUP_SCAN: usize = 100_000;

/// Payloads on a topic outside the standard are read for a standard `type` up to
/// this size.
const STANDARD_TYPE_SNIFF_MAX: usize = 64 << 10;

struct Conn {
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    decoders: [StreamDecoder; 2],
    version: Option<Version>,
    client_id: Option<String>,
    /// Reported as not decodable ([`Input::Opaque`]).
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

    /// The message, its payload parsed into the buffers of an earlier message's
    /// document (or new ones: `Buffers::default()`).
    pub fn parse_into(self, bufs: protocol::json::Buffers) -> Message {
        // A cheap handle on the bytes: their start is copied only when unreadable.
        let payload = self.payload.clone();
        let body = protocol::parse_envelope_into(self.payload, bufs);
        let raw = body.is_err().then(|| protocol::RawPayload::of(&payload));
        Message {
            seq: self.seq,
            conn: self.conn,
            side: self.side,
            packet: self.packet,
            time_us: self.time_us,
            body,
            raw,
            topic_name: self.topic_name,
            topic: self.topic,
            origin_seen: self.origin_seen,
            retained: self.retained,
        }
    }
}

pub struct Framer {
    settings: Settings,
    rules: Arc<RuleSet>,
    /// Messages and findings, in order, until the judge takes them.
    staged: Vec<Staged>,
    /// Messages are staged with their payload for the judge to parse.
    leave_payloads: bool,
    /// The clauses framing exercised (5.2: MQTT packets decoded).
    coverage: Coverage,
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
    /// Buffers of judged messages' documents ([`Framer::recycle`]), for the next.
    spare: Vec<protocol::json::Buffers>,
    /// Strings of judged messages' topics, for the next topics.
    spare_strings: Vec<String>,
}

/// Documents' buffers a framer keeps for reuse (the batches in flight).
const SPARE: usize = 512;
/// Longest topic part kept for reuse: a hostile long topic is not held.
const SPARE_STRING_BYTES: usize = 256;

impl Framer {
    pub fn new(rules: Arc<RuleSet>, settings: Settings) -> Framer {
        Framer {
            settings,
            rules,
            staged: vec![],
            leave_payloads: false,
            coverage: Coverage::default(),
            conns: HashMap::default(),
            recent: VecDeque::new(),
            recent_count: None,
            lone: HashMap::default(),
            lone_order: VecDeque::new(),
            stats: Stats::default(),
            seq: 0,
            findings: vec![],
            last_time_us: 0,
            spare: vec![],
            spare_strings: vec![],
        }
    }

    /// A framer that stages each message with its payload unparsed, for the judge
    /// to parse: for a front end whose framing thread must stay light (the proxy's
    /// recorder, which forwards and stores every byte and may fall behind the
    /// device otherwise; its judge may skip messages when it falls behind, unparsed).
    pub fn leaving_payloads(rules: Arc<RuleSet>, settings: Settings) -> Framer {
        Framer {
            leave_payloads: true,
            ..Framer::new(rules, settings)
        }
    }

    /// The one way in (see [`Input`]).
    pub fn push(&mut self, at: At, input: Input<'_>, sink: &mut dyn Sink) {
        let At {
            conn,
            time_us,
            frame,
        } = at;
        match input {
            Input::Open {
                client,
                server,
                midstream,
            } => self.open(conn, client, server, midstream),
            Input::Data { side, bytes } => self.data(conn, side, time_us, frame, bytes, sink),
            Input::Packet { side, packet } => self.packet(conn, side, time_us, frame, packet, sink),
            Input::Gap { side, lost } => self.gap(conn, side, time_us, frame, lost),
            Input::Close => self.end_conn(conn, time_us, frame, true),
            Input::InputEnded => self.end_conn(conn, time_us, frame, false),
            Input::NotDecodable {
                client,
                server,
                reason,
            } => self.not_decodable(conn, client, server, time_us, frame, reason),
            Input::Opaque { reason } => self.opaque(conn, time_us, frame, reason),
            Input::BadFrame { detail } => self.bad_frame(time_us, frame, detail),
            Input::Continued { from } => self.continued(from, conn),
        }
    }

    /// Whether the messages staged from now on carry their payload unparsed, for
    /// the judge to parse ([`Framer::leaving_payloads`]). A front end with the
    /// judge on another thread turns it on while that thread has little queued, so
    /// that the two share the parsing (the report is the same either way).
    pub fn set_leaving_payloads(&mut self, on: bool) {
        self.leave_payloads = on;
    }

    /// Moves what is staged so far to the end of `out`.
    pub fn take_staged(&mut self, out: &mut Vec<Staged>) {
        // Into an empty batch (the usual case): the two lists trade places, and no
        // message is moved.
        if out.is_empty() {
            std::mem::swap(out, &mut self.staged);
        } else {
            out.append(&mut self.staged);
        }
    }

    /// Empties a batch the judge is done with, keeping its documents' buffers for
    /// the messages to come (on this thread, which allocated them).
    pub fn recycle(&mut self, done: &mut Vec<Staged>) {
        for s in done.drain(..) {
            let Staged::Message(m) = s else { continue };
            if self.spare_strings.len() < 3 * SPARE {
                let t = m.topic;
                let short = [t.edge_id, t.channel, t.role];
                let short = short
                    .into_iter()
                    .filter(|x| x.capacity() <= SPARE_STRING_BYTES);
                self.spare_strings.extend(short);
            }
            if let (Ok(env), true) = (m.body, self.spare.len() < SPARE) {
                self.spare.extend(env.into_buffers());
            }
        }
    }

    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The clauses framing exercised so far.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// Connection `from` goes on as `conn` (the next file of a rotated capture):
    /// its decoders, CONNECT and state carry on.
    fn continued(&mut self, from: ConnId, conn: ConnId) {
        if let Some(c) = self.conns.remove(&from) {
            self.conns.insert(conn, c);
        }
    }

    /// A new connection. `midstream`: the capture did not see its start, so both
    /// directions may begin inside a packet.
    fn open(
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
    fn data(
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
                    self.opaque(conn, time_us, packet, &reason);
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
                            self.not_mqtt(conn, time_us, packet, what);
                            return;
                        }
                        Decoded::Skipped { .. } => c.unopened = Some(nc),
                    }
                }
            }
            self.decoded(conn, side, time_us, packet, d, sink);
        }
        self.flush();
    }

    /// Stages the transport findings made so far, in their place among the messages.
    fn flush(&mut self) {
        self.staged
            .extend(self.findings.drain(..).map(Staged::Finding));
    }

    /// An MQTT packet decoded by a client library: judged as its bytes would be.
    fn packet(
        &mut self,
        conn: ConnId,
        side: Side,
        time_us: i64,
        frame: u64,
        packet: Packet,
        sink: &mut dyn Sink,
    ) {
        self.last_time_us = self.last_time_us.max(time_us);
        if !self.conns.contains_key(&conn) {
            self.open(conn, None, None, true);
        }
        let d = Decoded::Packet {
            offset: 0,
            len: 0,
            packet,
        };
        self.decoded(conn, side, time_us, frame, d, sink);
        self.flush();
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
                self.coverage.count("5.2");
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
                    }
                    Packet::Publish(p) => {
                        self.stats.publishes += 1;
                        self.publish(conn, side, time_us, packet, p);
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
                transport_findings(
                    &self.rules,
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
                transport_findings(
                    &self.rules,
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
        let topic = protocol::parse_topic_with(&p.topic, &mut self.spare_strings);
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
                place.edge_id = crate::protocol::edge_id_named(&name).map(str::to_string);
                transport_findings(
                    &self.rules,
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
        self.flush();
        // The one parse of the payload (classification, the rules, the store and the
        // reports all read it): here, or on the judge's thread.
        self.staged.push(match self.leave_payloads {
            false => Staged::Message(raw.parse_into(self.spare.pop().unwrap_or_default())),
            true => Staged::Unparsed(raw),
        });
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
        let def = self.rules.types.get(&t)?;
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
        transport_findings(
            &self.rules,
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
}

/// Hash of a leg: every payload byte goes through it, so a fast hash (SipHash took
/// 5 % of `analyze` on 900-byte reports, ahash without AES instructions 1.6 %);
/// XXH3 reads 16 bytes a step with SSE2, which every x86-64 has. The payload's
/// hash is seeded with the topic's (two one-shot hashes, no streaming state): fixed,
/// as a run must be reproducible.
fn leg_key(topic: &str, payload: &[u8]) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(payload, xxh3_64(topic.as_bytes()))
}
