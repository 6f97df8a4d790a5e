//! The table of TCP flows: which flows are MQTT, their two reassembled directions, and
//! the events that describe them.
//!
//! Guarantees:
//! * A flow is keyed by its address/port pair, whatever the direction. A SYN that does
//!   not repeat the client's initial sequence number starts a new flow (new `ConnId`)
//!   on the same key, finishing the old one.
//! * Classification happens once, on the first client payload bytes (buffered, at most
//!   a few bytes, until the sniffers can tell): a TLS ClientHello, or server port 8883,
//!   makes the flow `NotDecodable`; a flow on an MQTT port, or whose first client bytes
//!   are a CONNECT, is MQTT; any other flow is ignored and its bytes are never kept.
//!   A flow that carries no payload byte at all (a refused connection, a health
//!   check's connect-and-close) is not reported.
//! * `ConnId`s are given in the order flows are reported (`Open` or `NotDecodable`),
//!   from 1; ignored flows get none.
//! * Closed flows leave a small tombstone for a minute of capture time, so that their
//!   last ACKs and retransmitted FINs do not look like a new mid-stream flow; ignored
//!   or undecided flows idle for five minutes are forgotten. Memory thus follows the
//!   number of open flows.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::finding::{ConnId, Side};
use crate::mqtt::{looks_like_connect, looks_like_tls};

use super::link::{self, linktype, Sliced, TcpSegment};
use super::reassembly::{Chunk, Reassembler};
use super::{CaptureOptions, FlowEvent, Stats, MQTT_TLS_PORT};

/// How long (capture time) a closed flow's tombstone absorbs stray segments.
const TOMBSTONE_US: i64 = 60_000_000;
/// How long an ignored or undecided flow may stay idle before it is forgotten.
const IDLE_US: i64 = 300_000_000;
/// How often (capture time) the table is swept for the two cases above.
const SWEEP_EVERY_US: i64 = 10_000_000;
/// More first client bytes than any sniffer needs: past this, decide anyway.
const SNIFF_MAX: usize = 64;

type EventSink<'s> = dyn FnMut(FlowEvent<'_>) + 's;

/// The same key for both directions: the lower endpoint first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey(SocketAddr, SocketAddr);

impl FlowKey {
    fn of(a: SocketAddr, b: SocketAddr) -> FlowKey {
        if a <= b {
            FlowKey(a, b)
        } else {
            FlowKey(b, a)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not classified yet: waiting for the first client bytes.
    Undecided,
    Mqtt,
    /// Reported as `NotDecodable`; its segments are dropped.
    Tls,
    /// Not MQTT; its segments are dropped.
    Ignored,
    /// Finished; the entry is a tombstone.
    Closed,
}

/// Where and when an event happens.
#[derive(Clone, Copy, Debug)]
struct At {
    time_us: i64,
    frame: u64,
}

/// Everything about a flow except its two byte streams (kept apart so that the
/// reassemblers can call back into this while they deliver).
struct FlowMeta {
    state: State,
    conn: ConnId,
    client: SocketAddr,
    server: SocketAddr,
    /// An MQTT port is involved: MQTT unless proven TLS.
    by_port: bool,
    midstream: bool,
    /// The capture started mid-stream on ports none of which is a server port: `server`
    /// is the higher-port side's peer, a guess.
    server_guessed: bool,
    client_isn: Option<u32>,
    first: At,
    last_seen_us: i64,
    /// First client bytes, kept only while too few to classify the flow.
    sniff: Vec<u8>,
    /// FIN seen per side, for flows whose bytes are not followed.
    fin_seen: [bool; 2],
}

struct Flow {
    meta: FlowMeta,
    /// Indexed by `Side::index()`.
    dirs: [Reassembler; 2],
}

/// What events need besides the flow: the callback, counters and the ConnId source.
struct Emit<'e, 's> {
    f: &'e mut EventSink<'s>,
    stats: &'e mut Stats,
    next_conn: &'e mut ConnId,
}

pub(crate) struct FlowTable {
    opts: CaptureOptions,
    /// The capture's name, for messages.
    file: String,
    flows: HashMap<FlowKey, Flow, ahash::RandomState>,
    next_conn: ConnId,
    last_sweep_us: i64,
    /// Interfaces (by link type) whose unsupported link type was already reported.
    reported_links: Vec<u32>,
    pub(crate) stats: Stats,
}

impl FlowTable {
    pub(crate) fn new(opts: CaptureOptions, file: String) -> FlowTable {
        FlowTable {
            opts,
            file,
            flows: HashMap::default(),
            next_conn: 1,
            last_sweep_us: i64::MIN,
            reported_links: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Reports a frame that cannot be read.
    pub(crate) fn bad_frame(
        &mut self,
        frame: u64,
        time_us: i64,
        message: String,
        f: &mut EventSink<'_>,
    ) {
        self.stats.bad_frames += 1;
        f(FlowEvent::BadFrame {
            frame,
            time_us,
            message,
        });
    }

    /// One captured frame: slice it, and give its TCP segment to its flow.
    pub(crate) fn on_frame(
        &mut self,
        frame: u64,
        offset: u64,
        link: u32,
        time_us: i64,
        data: &[u8],
        f: &mut EventSink<'_>,
    ) {
        let file = &self.file;
        if !linktype::is_supported(link) {
            // One report per link type, not one per frame: a whole capture of an
            // unsupported type would drown everything else.
            self.stats.unsupported_frames += 1;
            if !self.reported_links.contains(&link) {
                let message = format!("{file}: frame {frame} at byte offset {offset}: unsupported link type {link}; frames of this link type are skipped");
                self.reported_links.push(link);
                self.bad_frame(frame, time_us, message, f);
            }
            return;
        }
        match link::slice_frame(link, data) {
            Ok(Sliced::Tcp(segment)) => self.on_segment(&segment, At { time_us, frame }, f),
            Ok(Sliced::NotTcp) => {}
            Ok(Sliced::Fragment) => self.stats.ip_fragments += 1,
            Err(what) => {
                let message = format!("{file}: frame {frame} at byte offset {offset}: {what}");
                self.bad_frame(frame, time_us, message, f);
            }
        }
        self.sweep(time_us);
    }

    fn on_segment(&mut self, seg: &TcpSegment<'_>, at: At, f: &mut EventSink<'_>) {
        self.stats.tcp_segments += 1;
        let key = FlowKey::of(seg.src, seg.dst);
        let opening_syn = seg.flag_syn && !seg.flag_ack;
        let Self {
            opts,
            flows,
            next_conn,
            stats,
            ..
        } = self;
        let mut emit = Emit {
            f,
            stats,
            next_conn,
        };

        let start_new = match flows.get_mut(&key) {
            None => !seg.flag_rst,
            Some(flow) => match flow.meta.state {
                State::Closed if !opening_syn => {
                    flow.meta.last_seen_us = at.time_us;
                    return;
                }
                State::Closed => true,
                // A SYN that is not a retransmission of the flow's own: the addresses
                // and ports were reused by a new connection.
                _ => opening_syn && flow.meta.client_isn != Some(seg.seq),
            },
        };
        if start_new {
            if let Some(mut old) = flows.remove(&key) {
                old.finish(at, false, false, &mut emit);
            }
            let flow = Flow::new(seg, at, opts);
            emit.stats.flows += 1;
            for port in traffic_ports(&flow.meta) {
                emit.stats.ports.entry(port).or_default().flows += 1;
            }
            let flow = flows.entry(key).or_insert(flow);
            if flow.meta.state == State::Tls {
                flow.meta.not_decodable(&mut emit);
            }
        }
        if let Some(flow) = flows.get_mut(&key) {
            count_port_bytes(emit.stats, &flow.meta, seg.payload.len());
            flow.on_segment(seg, at, opts.max_reorder_bytes, &mut emit);
        }
    }

    /// End of the capture: every open flow is flushed and closed, oldest first.
    pub(crate) fn finish(&mut self, last_frame: u64, last_time_us: i64, f: &mut EventSink<'_>) {
        let at = At {
            time_us: last_time_us,
            frame: last_frame,
        };
        let mut open: Vec<(FlowKey, u64)> = self
            .flows
            .iter()
            .filter(|(_, fl)| matches!(fl.meta.state, State::Undecided | State::Mqtt))
            .map(|(k, fl)| (*k, fl.meta.first.frame))
            .collect();
        open.sort_by_key(|&(_, first_frame)| first_frame);
        let Self {
            flows,
            next_conn,
            stats,
            ..
        } = self;
        let mut emit = Emit {
            f,
            stats,
            next_conn,
        };
        for (key, _) in open {
            if let Some(mut flow) = flows.remove(&key) {
                flow.finish(at, false, true, &mut emit);
            }
        }
        flows.clear();
    }

    /// Takes over the flows of the previous file of a rotation: the open ones get
    /// this file's connection ids (a `Continued` event each, so that findings name
    /// this file), their reassembly goes on where it stopped.
    pub(crate) fn continue_from(&mut self, prev: FlowTable, f: &mut EventSink<'_>) {
        let mut flows: Vec<(FlowKey, Flow)> = prev.flows.into_iter().collect();
        flows.sort_by_key(|(_, fl)| fl.meta.first.frame);
        for (key, mut flow) in flows {
            match flow.meta.state {
                State::Mqtt => {
                    let from = flow.meta.conn;
                    flow.meta.conn = self.next_conn;
                    self.next_conn += 1;
                    f(FlowEvent::Continued {
                        from,
                        conn: flow.meta.conn,
                    });
                }
                // Not yet classified, not decodable, or a tombstone: carried as is
                // (a TLS flow is not reported again, a finished one not reopened).
                _ => {}
            }
            self.flows.insert(key, flow);
        }
    }

    /// Forgets tombstones and long-idle flows that will never emit anything.
    fn sweep(&mut self, now_us: i64) {
        if now_us.saturating_sub(self.last_sweep_us) < SWEEP_EVERY_US {
            return;
        }
        self.last_sweep_us = now_us;
        self.flows.retain(|_, flow| {
            let idle = now_us.saturating_sub(flow.meta.last_seen_us);
            match flow.meta.state {
                State::Closed => idle < TOMBSTONE_US,
                State::Ignored => idle < IDLE_US,
                // Undecided flows off the MQTT ports emit nothing if dropped (a port
                // scan leaves many).
                State::Undecided if !flow.meta.by_port => idle < IDLE_US,
                _ => true,
            }
        });
    }
}

/// Payload bytes per server port, for the hint naming the busiest ports. Bounded: at
/// most one entry per port number.
fn count_port_bytes(stats: &mut Stats, meta: &FlowMeta, payload: usize) {
    if payload > 0 && meta.state != State::Closed {
        for port in traffic_ports(meta) {
            stats.ports.entry(port).or_default().bytes += payload as u64;
        }
    }
}

/// The ports a flow's traffic is counted on: its server port, or both ports when which
/// side serves is only a guess (a capture started after the connection, off the MQTT
/// ports): the real server port then adds up the traffic of all its flows.
fn traffic_ports(meta: &FlowMeta) -> impl Iterator<Item = u16> {
    let client = meta.server_guessed.then_some(meta.client.port());
    std::iter::once(meta.server.port()).chain(client)
}

impl Flow {
    /// A flow starting with this segment: who is the client, and is it worth a look.
    fn new(seg: &TcpSegment<'_>, at: At, opts: &CaptureOptions) -> Flow {
        let is_mqtt_port = |port: u16| opts.ports.contains(&port);
        let is_server_port = |port: u16| is_mqtt_port(port) || port == MQTT_TLS_PORT;
        let (client, server, midstream) = if seg.flag_syn && !seg.flag_ack {
            (seg.src, seg.dst, false)
        } else if seg.flag_syn {
            // SYN-ACK: its sender is the server.
            (seg.dst, seg.src, false)
        } else if is_server_port(seg.dst.port()) != is_server_port(seg.src.port()) {
            if is_server_port(seg.dst.port()) {
                (seg.src, seg.dst, true)
            } else {
                (seg.dst, seg.src, true)
            }
        } else if seg.src.port() >= seg.dst.port() {
            (seg.src, seg.dst, true)
        } else {
            (seg.dst, seg.src, true)
        };
        // Mid-stream with no known server port: which side serves is a guess.
        let server_guessed =
            midstream && !is_server_port(client.port()) && !is_server_port(server.port());
        let by_port = is_mqtt_port(client.port()) || is_mqtt_port(server.port());
        let state = if server.port() == MQTT_TLS_PORT && !is_mqtt_port(MQTT_TLS_PORT) {
            State::Tls
        } else {
            State::Undecided
        };
        Flow {
            meta: FlowMeta {
                state,
                conn: 0,
                client,
                server,
                by_port,
                midstream,
                server_guessed,
                client_isn: None,
                first: at,
                last_seen_us: at.time_us,
                sniff: Vec::new(),
                fin_seen: [false; 2],
            },
            dirs: Default::default(),
        }
    }

    fn on_segment(&mut self, seg: &TcpSegment<'_>, at: At, limit: usize, emit: &mut Emit<'_, '_>) {
        let Flow { meta, dirs } = self;
        meta.last_seen_us = at.time_us;
        let side = if seg.src == meta.client {
            Side::Client
        } else {
            Side::Server
        };
        match meta.state {
            State::Undecided | State::Mqtt => {}
            State::Tls | State::Ignored => {
                // Only the end of the connection matters, to free its entry.
                meta.fin_seen[side.index()] |= seg.flag_fin;
                if seg.flag_rst || meta.fin_seen == [true; 2] {
                    meta.state = State::Closed;
                }
                return;
            }
            State::Closed => return,
        }
        // The client's initial sequence number tells a retransmitted SYN from a new
        // connection on the same ports; a SYN-ACK acknowledges it.
        if seg.flag_syn && !seg.flag_ack && side == Side::Client {
            meta.client_isn.get_or_insert(seg.seq);
        } else if seg.flag_syn && seg.flag_ack && side == Side::Server {
            meta.client_isn.get_or_insert(seg.ack.wrapping_sub(1));
        }
        let (this, peer) = match side {
            Side::Client => (0, 1),
            Side::Server => (1, 0),
        };
        // With the handshake seen, an acknowledgement tells where the peer's stream
        // starts, should its SYN(-ACK) be missing from the capture: a lost first
        // segment then shows as a gap. (Mid-stream, each side's first segment starts
        // its stream instead.)
        if seg.flag_ack && !meta.midstream && !dirs[peer].is_started() {
            dirs[peer].start_at(seg.ack);
        }
        dirs[this].segment(
            seg.seq,
            seg.flag_syn,
            seg.flag_fin,
            seg.payload,
            seg.missing,
            limit,
            &mut |chunk| meta.on_chunk(side, chunk, at, emit),
        );
        if seg.flag_ack {
            let peer_side = match side {
                Side::Client => Side::Server,
                Side::Server => Side::Client,
            };
            dirs[peer].acked(seg.ack, &mut |chunk| {
                meta.on_chunk(peer_side, chunk, at, emit)
            });
        }
        if matches!(meta.state, State::Tls | State::Ignored) {
            dirs[0].clear();
            dirs[1].clear();
        } else if seg.flag_rst {
            self.finish(at, true, false, emit);
        } else if dirs[0].is_finished() && dirs[1].is_finished() {
            self.finish(at, false, false, emit);
        }
    }

    /// The flow ends: deliver what is held, emit `Close` if it was opened, and keep
    /// only a tombstone.
    fn finish(&mut self, at: At, reset: bool, input_ended: bool, emit: &mut Emit<'_, '_>) {
        let Flow { meta, dirs } = self;
        if matches!(meta.state, State::Undecided | State::Mqtt) {
            for side in [Side::Client, Side::Server] {
                dirs[side.index()].flush(&mut |chunk| meta.on_chunk(side, chunk, at, emit));
            }
            // A few first client bytes too short to classify: MQTT by its port. A flow
            // that carried no byte at all (a refused connection, a health check's
            // connect-and-close) has nothing to decode and is not reported.
            if meta.state == State::Undecided && meta.by_port && !meta.sniff.is_empty() {
                meta.open(emit);
                let sniffed = std::mem::take(&mut meta.sniff);
                meta.emit_chunk(Side::Client, Chunk::Data(&sniffed), at, emit);
            }
            if meta.state == State::Mqtt {
                emit_event(
                    emit,
                    FlowEvent::Close {
                        conn: meta.conn,
                        time_us: at.time_us,
                        frame: at.frame,
                        reset,
                        input_ended,
                    },
                );
            }
        }
        meta.state = State::Closed;
        meta.last_seen_us = at.time_us;
        meta.sniff = Vec::new();
        *dirs = Default::default();
    }
}

/// The TLS sniffer's answer on the first client bytes: `None` while they could still
/// become a ClientHello.
fn tls_verdict(first: &[u8]) -> Option<bool> {
    match first {
        [] => None,
        _ if first.len() >= 6 => Some(looks_like_tls(first)),
        [0x16] | [0x16, 0x03, ..] => None,
        _ => Some(false),
    }
}

enum Verdict {
    Mqtt,
    Tls,
    Ignore,
    NeedMore,
}

fn classify(first: &[u8], by_port: bool) -> Verdict {
    let tls = tls_verdict(first);
    if tls == Some(true) {
        return Verdict::Tls;
    }
    let verdict = if by_port {
        match tls {
            Some(_) => Verdict::Mqtt,
            None => Verdict::NeedMore,
        }
    } else {
        match (looks_like_connect(first), tls) {
            (Some(true), _) => Verdict::Mqtt,
            (Some(false), Some(_)) => Verdict::Ignore,
            _ => Verdict::NeedMore,
        }
    };
    match verdict {
        // The sniffers need far fewer bytes; do not buffer without end.
        Verdict::NeedMore if first.len() >= SNIFF_MAX => {
            if by_port {
                Verdict::Mqtt
            } else {
                Verdict::Ignore
            }
        }
        v => v,
    }
}

fn emit_event(emit: &mut Emit<'_, '_>, event: FlowEvent<'_>) {
    if let FlowEvent::Gap { lost, .. } = event {
        emit.stats.gaps += 1;
        emit.stats.lost_bytes += lost;
    }
    (emit.f)(event);
}

impl FlowMeta {
    /// A piece of one direction's stream, in order.
    fn on_chunk(&mut self, side: Side, chunk: Chunk<'_>, at: At, emit: &mut Emit<'_, '_>) {
        match self.state {
            State::Mqtt => self.emit_chunk(side, chunk, at, emit),
            State::Undecided => self.classify_with(side, chunk, at, emit),
            State::Tls | State::Ignored | State::Closed => {}
        }
    }

    fn emit_chunk(&mut self, side: Side, chunk: Chunk<'_>, at: At, emit: &mut Emit<'_, '_>) {
        let (conn, time_us, frame) = (self.conn, at.time_us, at.frame);
        let event = match chunk {
            Chunk::Data(data) => FlowEvent::Data {
                conn,
                side,
                time_us,
                frame,
                data,
            },
            Chunk::Gap(lost) => FlowEvent::Gap {
                conn,
                side,
                time_us,
                frame,
                lost,
            },
        };
        emit_event(emit, event);
    }

    /// Decides what the flow is from its first bytes; then passes them on.
    fn classify_with(&mut self, side: Side, chunk: Chunk<'_>, at: At, emit: &mut Emit<'_, '_>) {
        let verdict = match (side, &chunk) {
            (Side::Client, Chunk::Data(data)) => {
                // Usually the first segment says it all and is looked at in place;
                // only a tiny first segment is buffered.
                if self.sniff.is_empty() {
                    classify(data, self.by_port)
                } else {
                    self.sniff.extend_from_slice(data);
                    classify(&self.sniff, self.by_port)
                }
            }
            // Bytes lost before the client's first bytes, or the server speaking
            // first: no sniffing possible. Only the port can make it MQTT.
            _ if self.by_port => Verdict::Mqtt,
            _ => Verdict::Ignore,
        };
        match verdict {
            Verdict::NeedMore => {
                if self.sniff.is_empty() {
                    if let Chunk::Data(data) = chunk {
                        self.sniff.extend_from_slice(data);
                    }
                }
            }
            Verdict::Tls => {
                self.not_decodable(emit);
                self.sniff = Vec::new();
            }
            Verdict::Ignore => {
                self.state = State::Ignored;
                self.sniff = Vec::new();
            }
            Verdict::Mqtt => {
                self.open(emit);
                let sniffed = std::mem::take(&mut self.sniff);
                if sniffed.is_empty() {
                    self.emit_chunk(side, chunk, at, emit);
                } else {
                    // The buffered client bytes include this chunk if it came from
                    // the client.
                    self.emit_chunk(Side::Client, Chunk::Data(&sniffed), at, emit);
                    if side == Side::Server || matches!(chunk, Chunk::Gap(_)) {
                        self.emit_chunk(side, chunk, at, emit);
                    }
                }
            }
        }
    }

    fn take_conn(&mut self, emit: &mut Emit<'_, '_>) {
        self.conn = *emit.next_conn;
        *emit.next_conn += 1;
    }

    /// Reports the flow as MQTT. Any sniffed bytes are the caller's to emit.
    fn open(&mut self, emit: &mut Emit<'_, '_>) {
        self.take_conn(emit);
        self.state = State::Mqtt;
        emit.stats.mqtt_flows += 1;
        emit.stats.midstream_flows += u64::from(self.midstream);
        let FlowMeta {
            conn,
            client,
            server,
            first,
            midstream,
            ..
        } = *self;
        emit_event(
            emit,
            FlowEvent::Open {
                conn,
                client,
                server,
                time_us: first.time_us,
                frame: first.frame,
                midstream,
            },
        );
    }

    fn not_decodable(&mut self, emit: &mut Emit<'_, '_>) {
        self.take_conn(emit);
        self.state = State::Tls;
        emit.stats.not_decodable_flows += 1;
        let (conn, client, server, first) = (self.conn, self.client, self.server, self.first);
        emit_event(
            emit,
            FlowEvent::NotDecodable {
                conn,
                client,
                server,
                time_us: first.time_us,
                frame: first.frame,
                reason: "TLS".to_string(),
            },
        );
    }
}
