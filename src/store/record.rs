//! The records a store holds, as the rest of edgetap sees them: a capture's meta
//! (with what could not be recorded), its connections, its events (the chunks of
//! bytes as forwarded) and the packet records decoded from them.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::chunk::{LostSpan, PacketFields};
use crate::finding::Side;
use crate::mqtt::Packet;
use crate::pipeline::PacketEvent;
use crate::redact::REDACTED;

/// What the recorder could not write into a capture (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NotRecorded {
    /// Chunk bytes forwarded but not recorded.
    pub bytes: u64,
    pub events: u64,
    /// MQTT packets decoded from those events ([`CaptureMeta::packets`] counts
    /// only the others).
    #[serde(default)]
    pub packets: u64,
    /// µs since the Unix epoch: the first and the last event not recorded.
    pub from_us: i64,
    pub to_us: i64,
    /// Each failed write, oldest first (at most [`MAX_SPANS`]; later ones are
    /// merged into the last).
    pub spans: Vec<LostSpan>,
}

/// Lost spans listed one by one in a capture's meta.
pub const MAX_SPANS: usize = 100;

impl NotRecorded {
    pub(super) fn add(&mut self, s: LostSpan) {
        if self.events == 0 && self.bytes == 0 && self.spans.is_empty() {
            self.from_us = s.from_us;
        }
        self.from_us = self.from_us.min(s.from_us);
        self.to_us = self.to_us.max(s.to_us);
        self.bytes += s.bytes;
        self.events += s.events;
        self.packets += s.packets;
        if self.spans.len() < MAX_SPANS {
            self.spans.push(s);
        } else if let Some(last) = self.spans.last_mut() {
            last.to_us = last.to_us.max(s.to_us);
            last.bytes += s.bytes;
            last.events += s.events;
            last.packets += s.packets;
            last.error = s.error;
        }
    }

    /// One line for people: "12345 bytes (67 events) not recorded between … and …: ENOSPC".
    pub fn line(&self) -> String {
        let time = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| us.to_string())
        };
        format!(
            "INCOMPLETE: {} bytes ({} events, {} MQTT packets) forwarded but not recorded, between {} and {} ({} spans; last: {})",
            self.bytes,
            self.events,
            self.packets,
            time(self.from_us),
            time(self.to_us),
            self.spans.len(),
            self.spans.last().map_or("?", |s| s.error.as_str())
        )
    }
}

/// One proxy run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CaptureMeta {
    pub id: u64,
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub started_us: i64,
    /// None while running, or when the proxy was killed.
    pub ended_us: Option<i64>,
    pub listen: String,
    pub upstream: String,
    /// The rules the live analysis used: edgetap version and rule files.
    pub rules_version: String,
    pub connections: u64,
    /// Events (chunks) forwarded, recorded or not.
    pub chunks: u64,
    /// Bytes forwarded, recorded or not (`not_recorded` says what is missing).
    pub bytes: u64,
    /// MQTT control packets decoded and recorded (those of events not recorded are
    /// counted in `not_recorded`).
    pub packets: u64,
    pub findings: u64,
    /// Set when the capture is incomplete: what was forwarded but could not be
    /// written (disk full, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_recorded: Option<NotRecorded>,
}

/// One proxied connection: the client's address and the upstream's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnMeta {
    pub conn: u64,
    pub client: String,
    pub server: String,
    pub opened_us: i64,
    pub ended_us: Option<i64>,
    /// "closed", "reset by client", "upstream refused: …", …
    pub end: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Open {
        client: SocketAddr,
        server: SocketAddr,
    },
    Data {
        side: Side,
        bytes: Bytes,
    },
    /// Bytes forwarded but not analysed: a TLS flow the proxy does not terminate. Kept
    /// so that the store holds everything forwarded (and the export shows it).
    Opaque {
        side: Side,
        bytes: Bytes,
    },
    /// That side finished sending (FIN), mirrored to the other.
    Fin {
        side: Side,
    },
    /// The connection is over; `how` says why.
    End {
        how: String,
    },
}

/// One recorded event of a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_us: i64,
    pub seq: u64,
    pub conn: u64,
    pub kind: EventKind,
}

/// One decoded MQTT packet, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PacketRecord {
    pub conn: u64,
    pub side: String,
    /// The event (chunk) `seq` in which the packet ended.
    pub chunk: u64,
    pub time_us: i64,
    /// Stream offset of the packet's first byte on its side.
    pub offset: u64,
    pub len: u64,
    #[serde(rename = "type")]
    pub packet_type: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_len: Option<u64>,
}

/// The byte that overwrites a password in the stored chunk bytes and records.
pub const FILLER: u8 = b'*';
pub(super) const FILLER_STR: &str = "*";

impl PacketRecord {
    /// The record with CONNECT credentials replaced, for output.
    pub fn redacted(&self) -> PacketRecord {
        let mut r = self.clone();
        if r.username.is_some() {
            r.username = Some(REDACTED.into());
        }
        if r.password.is_some() {
            r.password = Some(REDACTED.into());
        }
        r
    }
}

/// The fields of a decoded packet as stored, borrowed from it.
pub(crate) fn packet_fields<'a>(p: &'a PacketEvent<'a>) -> PacketFields<'a> {
    let mut f = PacketFields {
        conn: p.conn,
        side: match p.side {
            Side::Client => "client",
            Side::Server => "server",
        },
        chunk: p.packet,
        time_us: p.time_us,
        offset: p.offset,
        len: p.len as u64,
        packet_type: p.mqtt.name(),
        client_id: None,
        version: None,
        username: None,
        password: None,
        topic: None,
        payload_len: None,
    };
    match p.mqtt {
        Packet::Connect(c) => {
            f.client_id = Some(&c.client_id);
            f.version = Some(c.version.as_str());
            f.username = c.username.as_deref();
            f.password = c.password.as_deref();
        }
        Packet::Publish(p) => {
            f.topic = Some(&p.topic);
            f.payload_len = Some(p.payload.len() as u64);
        }
        _ => {}
    }
    f
}

/// The stored form of a decoded packet.
pub fn packet_record(p: &PacketEvent<'_>) -> PacketRecord {
    let mut r = PacketRecord {
        conn: p.conn,
        side: match p.side {
            Side::Client => "client",
            Side::Server => "server",
        }
        .to_string(),
        chunk: p.packet,
        time_us: p.time_us,
        offset: p.offset,
        len: p.len as u64,
        packet_type: p.mqtt.name().to_string(),
        ..PacketRecord::default()
    };
    match p.mqtt {
        Packet::Connect(c) => {
            r.client_id = Some(c.client_id.clone());
            r.version = Some(c.version.as_str().into());
            r.username = c.username.clone();
            r.password = c.password.clone();
        }
        Packet::Publish(p) => {
            r.topic = Some(p.topic.clone());
            r.payload_len = Some(p.payload.len() as u64);
        }
        _ => {}
    }
    r
}
