//! `watch --store DIR`: what the watcher received, recorded as a capture of the
//! store, so that `analyze --capture ID`, `captures show` and `captures export` work
//! on it as on a proxy's.
//!
//! The capture is one connection, the watcher's own: its CONNECT (client → broker),
//! then each delivery as the PUBLISH bytes a broker sends (QoS 0, the retain flag
//! kept), in the order received, each at its receive time. The bytes are written
//! for the store only; the judge takes the decoded packets. Batches are written
//! (and synced) every [`WRITE_EVERY`] or [`WRITE_BYTES`], whichever comes first. A
//! batch that cannot be written (disk full) is counted by the store as not recorded
//! and said once; watching goes on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Delivery;
use crate::finding::{Finding, Side};
use crate::store::{CaptureMeta, ConnMeta, Event, EventKind, Store, StoreError, WriteBatch};

/// Pending events are written at least this often…
pub const WRITE_EVERY: Duration = Duration::from_millis(500);
/// …or once this many bytes of deliveries are pending.
pub const WRITE_BYTES: usize = 1 << 20;
/// The watcher's connection in the capture.
const CONN: u64 = 1;

/// Records one watch into a store.
pub struct Recorder {
    store: Store,
    meta: CaptureMeta,
    batch: WriteBatch,
    conn: ConnMeta,
    /// The last event's number.
    seq: u64,
    last_write: Instant,
    /// The first write error, said once.
    pub error: Option<String>,
}

/// Where the store's events say the broker is: its address when `addr` is an IP
/// address and port, else the unspecified address with the port.
fn server_addr(addr: &str) -> SocketAddr {
    addr.parse().unwrap_or_else(|_| {
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(1883);
        SocketAddr::from(([0, 0, 0, 0], port))
    })
}

impl Recorder {
    /// Opens (or creates) the store in `dir` and begins a capture named `name`;
    /// `broker` is the address without the login.
    pub fn start(
        dir: &std::path::Path,
        name: &str,
        broker: &str,
        client_id: &str,
        rules_version: &str,
    ) -> Result<Recorder, StoreError> {
        let store = Store::open(dir)?;
        let now = crate::sim::now_us();
        let mut meta = CaptureMeta {
            name: name.to_string(),
            started_us: now,
            listen: "watch (an MQTT subscription)".into(),
            upstream: broker.to_string(),
            rules_version: rules_version.to_string(),
            connections: 1,
            ..CaptureMeta::default()
        };
        store.begin_capture(&mut meta)?;
        let server = server_addr(broker);
        let client = SocketAddr::from(([0, 0, 0, 0], 0));
        let conn = ConnMeta {
            conn: CONN,
            client: client.to_string(),
            server: server.to_string(),
            opened_us: now,
            ended_us: None,
            end: None,
        };
        let mut r = Recorder {
            store,
            meta,
            batch: WriteBatch::with_secrets(false),
            conn,
            seq: 0,
            last_write: Instant::now(),
            error: None,
        };
        r.batch.conn(r.meta.id, &r.conn);
        r.event(now, EventKind::Open { client, server });
        let connect = Bytes::from(crate::mqtt::encode::connect(client_id));
        r.event(
            now,
            EventKind::Data {
                side: Side::Client,
                bytes: connect,
            },
        );
        r.meta.packets += 1;
        Ok(r)
    }

    /// The capture's id in the store.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    fn event(&mut self, time_us: i64, kind: EventKind) {
        self.seq += 1;
        if let EventKind::Data { bytes, .. } = &kind {
            self.meta.bytes += bytes.len() as u64;
        }
        self.meta.chunks += 1;
        let ev = Event {
            time_us,
            seq: self.seq,
            conn: CONN,
            kind,
        };
        self.batch.event(self.meta.id, &ev);
    }

    /// Records one delivery as the broker's PUBLISH.
    pub fn delivery(&mut self, d: &Delivery) {
        let mut p = rumqttc::mqttbytes::v4::Publish::from_bytes(
            d.topic.as_str(),
            rumqttc::mqttbytes::QoS::AtMostOnce,
            d.payload.clone(),
        );
        p.retain = d.retain;
        let mut b = bytes::BytesMut::new();
        // A PUBLISH the client decoded within its packet limit encodes again.
        if p.write(&mut b).is_err() {
            return;
        }
        self.event(
            d.time_us,
            EventKind::Data {
                side: Side::Server,
                bytes: b.freeze(),
            },
        );
        self.meta.packets += 1;
        if self.batch.data_bytes >= WRITE_BYTES {
            self.write();
        }
    }

    /// Keeps a finding with the capture (`captures show` lists them).
    pub fn finding(&mut self, f: &Finding) {
        self.meta.findings += 1;
        self.batch.finding(self.meta.id, self.meta.findings, f);
    }

    /// Writes what is pending when [`WRITE_EVERY`] has passed.
    pub fn tick(&mut self) {
        if !self.batch.is_empty() && self.last_write.elapsed() >= WRITE_EVERY {
            self.write();
        }
    }

    fn write(&mut self) {
        self.last_write = Instant::now();
        let batch = self.batch.take();
        if let Err(e) = self.store.write(batch, &self.meta) {
            if self.error.is_none() {
                tracing::warn!(
                    "watch --store: capture {} not written in full: {e}",
                    self.meta.id
                );
                self.error = Some(e.to_string());
            }
        }
    }

    /// Ends the capture: the connection's end, the meta, everything written.
    pub fn finish(mut self) -> (u64, Option<String>) {
        let now = crate::sim::now_us();
        self.event(
            now,
            EventKind::End {
                how: "the watch stopped".into(),
            },
        );
        self.conn.ended_us = Some(now);
        self.conn.end = Some("the watch stopped".into());
        self.batch.conn(self.meta.id, &self.conn);
        self.meta.ended_us = Some(now);
        self.write();
        if let Err(e) = self.store.flush() {
            self.error.get_or_insert(e.to_string());
        }
        (self.meta.id, self.error)
    }
}
