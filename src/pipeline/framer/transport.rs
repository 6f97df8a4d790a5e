//! What the framer judges itself: connections that do not open with a CONNECT or
//! are not MQTT, lost bytes, unreadable frames, flows it cannot decode, packets cut
//! by the end of a connection or of the input.

use std::net::SocketAddr;

use super::Framer;
use crate::finding::{ConnId, Side};
use crate::pipeline::{Ended, Staged};
use crate::rules::engine::{transport_findings, Place};
use crate::rules::model::Check;

impl Framer {
    /// `mqtt.connect_first`: the client opened with `what` instead of a CONNECT.
    pub(super) fn opened_without_connect(
        &mut self,
        conn: ConnId,
        time_us: i64,
        packet: u64,
        what: String,
    ) {
        // The opening is the start of the client's stream.
        let place = Place::frame(packet, time_us).on(conn, Some(Side::Client), Some(0));
        transport_findings(
            &self.rules,
            |c| matches!(c, Check::MqttConnectFirst),
            &place,
            vec![("what", what)],
            &mut self.findings,
        );
    }

    /// The client opened with `what`, which is not MQTT: said once, and neither
    /// direction is decoded any further (its bytes would only make noise).
    pub(super) fn not_mqtt(&mut self, conn: ConnId, time_us: i64, packet: u64, what: String) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.not_mqtt = true;
            c.unopened = None;
        }
        let what = format!("{what}: the connection is not MQTT and was not decoded further");
        self.opened_without_connect(conn, time_us, packet, what);
        self.flush();
    }

    /// `lost` bytes of one direction never arrived.
    pub(super) fn gap(&mut self, conn: ConnId, side: Side, time_us: i64, packet: u64, lost: u64) {
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
        self.staged.push(Staged::Lost);
        if let Some(nc) = unopened {
            let what = format!("its first bytes are {}", nc.shown);
            self.opened_without_connect(conn, time_us, packet, what);
        }
        let place = Place::frame(packet, time_us).on(conn, Some(side), Some(offset));
        transport_findings(
            &self.rules,
            |c| matches!(c, Check::CaptureGap),
            &place,
            vec![("lost", lost.to_string()), ("side", side.arrow().into())],
            &mut self.findings,
        );
        self.flush();
    }

    /// A capture frame that could not be read; reading went on after it.
    pub(super) fn bad_frame(&mut self, time_us: i64, packet: u64, detail: &str) {
        let place = Place::frame(packet, time_us);
        self.staged.push(Staged::Lost);
        transport_findings(
            &self.rules,
            |c| matches!(c, Check::BadFrame),
            &place,
            vec![("detail", detail.to_string())],
            &mut self.findings,
        );
        self.flush();
    }

    /// A flow that cannot be decoded (TLS).
    pub(super) fn not_decodable(
        &mut self,
        conn: ConnId,
        client: SocketAddr,
        server: SocketAddr,
        time_us: i64,
        packet: u64,
        reason: &str,
    ) {
        let place = Place::frame(packet, time_us).on(conn, None, None);
        transport_findings(
            &self.rules,
            |c| matches!(c, Check::NotDecodable),
            &place,
            vec![
                ("client", client.to_string()),
                ("server", server.to_string()),
                ("reason", reason.to_string()),
            ],
            &mut self.findings,
        );
        self.flush();
    }

    /// Bytes of a connection that the front end forwarded without being able to
    /// read them (TLS it does not terminate): the first of a connection reports the
    /// flow as not decodable; the bytes are not decoded.
    pub(super) fn opaque(&mut self, conn: ConnId, time_us: i64, packet: u64, reason: &str) {
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
        self.not_decodable(conn, client, server, time_us, packet, reason);
    }

    /// `closed`: the connection ended (FIN, RST, the proxy's end of it); else the
    /// input ended with the connection still open.
    pub(super) fn end_conn(&mut self, conn: ConnId, time_us: i64, packet: u64, closed: bool) {
        // A client that opened with bytes that are no CONNECT and ended before they
        // made a packet: not MQTT (an HTTP request is shorter than the length its
        // first bytes would announce).
        let unopened = self.conns.get_mut(&conn).and_then(|c| c.unopened.take());
        if let Some(nc) = unopened {
            let what = format!("its first bytes are {}", nc.shown);
            self.not_mqtt(conn, time_us, packet, what);
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
                transport_findings(&self.rules, check, &place, vars, &mut self.findings);
            }
        }
        self.flush();
    }

    /// End of input: unanswered requests, unfinished jobs.
    /// End of input: connections still open end with it; the judge is told (an
    /// `End` item, staged last, with the counters and the clauses exercised).
    pub fn finish(&mut self) {
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        let t = self.last_time_us;
        for c in open {
            self.end_conn(c, t, 0, false);
        }
        self.flush();
        self.staged.push(Staged::End(Box::new(Ended {
            time_us: t,
            stats: self.stats.clone(),
            coverage: self.coverage.clone(),
        })));
    }
}
