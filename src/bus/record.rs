//! The bus record: what a watcher publishes per decoded MQTT message, and how a
//! judge reads it back.
//!
//! The body is the payload, byte for byte (never re-encoded). Everything else
//! travels in headers, as text: the MQTT topic (escaped as subject tokens are,
//! [`super::subject::escape`], so any byte is safe in a header line), when the
//! watcher received it (µs since the Unix epoch), whether it was a retained message,
//! and the watcher's stamp (its id, the start of its run, its sequence number).
//! The stamp is also the `Nats-Msg-Id`, so a publish the watcher repeats (an ack
//! that timed out) is stored once within the stream's duplicate window; a restarted
//! watcher starts a new run, so its sequence numbers do not collide with the last.

use async_nats::HeaderMap;
use bytes::Bytes;

use super::subject::{escape, msg_subject, route, unescape, Direction};

pub const H_MSG_ID: &str = "Nats-Msg-Id";
pub const H_TOPIC: &str = "Edgetap-Topic";
pub const H_TIME: &str = "Edgetap-Time-Us";
pub const H_RETAIN: &str = "Edgetap-Retain";
pub const H_WATCHER: &str = "Edgetap-Watcher";
pub const H_RUN: &str = "Edgetap-Run";
pub const H_SEQ: &str = "Edgetap-Seq";

/// One message a watcher received.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub payload: Bytes,
    /// When the watcher received it (µs since the Unix epoch).
    pub time_us: i64,
    /// A retained message the broker replayed at subscription.
    pub retain: bool,
    pub stamp: Stamp,
}

/// Which watcher received a record, and its place in that watcher's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub watcher: String,
    /// When the watcher's run started (µs): a restarted watcher is a new run.
    pub run_us: i64,
    /// 1-based within the run.
    pub seq: u64,
}

impl Stamp {
    /// The de-duplication id.
    pub fn msg_id(&self) -> String {
        format!("{}.{}.{}", escape(&self.watcher), self.run_us, self.seq)
    }
}

/// A record that cannot be read back: which header, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bus record (stream sequence {seq}): header {header}: {problem}")]
pub struct RecordError {
    pub seq: u64,
    pub header: &'static str,
    pub problem: String,
}

impl Record {
    /// The edge id and direction of its topic.
    pub fn route(&self) -> (Option<String>, Direction) {
        route(&self.topic)
    }

    /// The subject a watcher publishes it on.
    pub fn subject(&self) -> String {
        let (edge, dir) = self.route();
        msg_subject(edge.as_deref(), dir)
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, self.stamp.msg_id().as_str());
        h.insert(H_TOPIC, escape(&self.topic).as_str());
        h.insert(H_TIME, self.time_us.to_string().as_str());
        if self.retain {
            h.insert(H_RETAIN, "1");
        }
        h.insert(H_WATCHER, escape(&self.stamp.watcher).as_str());
        h.insert(H_RUN, self.stamp.run_us.to_string().as_str());
        h.insert(H_SEQ, self.stamp.seq.to_string().as_str());
        h
    }

    /// The record of a stored message (`seq`: its stream sequence, for errors).
    pub fn read(
        headers: Option<&HeaderMap>,
        payload: Bytes,
        seq: u64,
    ) -> Result<Record, RecordError> {
        let err = |header: &'static str, problem: &str| RecordError {
            seq,
            header,
            problem: problem.to_string(),
        };
        let get = |name: &'static str| -> Result<&str, RecordError> {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
                .ok_or_else(|| err(name, "missing"))
        };
        let text = |name: &'static str| -> Result<String, RecordError> {
            unescape(get(name)?).ok_or_else(|| err(name, "not an escaped text"))
        };
        let number = |name: &'static str| -> Result<i64, RecordError> {
            get(name)?
                .parse()
                .map_err(|_| err(name, "not a whole number"))
        };
        let topic = text(H_TOPIC)?;
        let time_us = number(H_TIME)?;
        let retain = headers.and_then(|h| h.get(H_RETAIN)).is_some();
        let watcher = text(H_WATCHER)?;
        let run_us = number(H_RUN)?;
        let seq_w = number(H_SEQ)?;
        let seq_w = u64::try_from(seq_w).map_err(|_| err(H_SEQ, "negative"))?;
        Ok(Record {
            topic,
            payload,
            time_us,
            retain,
            stamp: Stamp {
                watcher,
                run_us,
                seq: seq_w,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str) -> Record {
        Record {
            topic: topic.into(),
            payload: Bytes::from_static(b"{\"mid\":1}\n\x00"),
            time_us: 1_800_000_000_123_456,
            retain: true,
            stamp: Stamp {
                watcher: "site A".into(),
                run_us: 42,
                seq: 7,
            },
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        for topic in [
            "/v1/E1/device/request",
            "/v1/E.1 x/service/command",
            "odd\n",
        ] {
            let r = record(topic);
            let h = r.headers();
            assert_eq!(Record::read(Some(&h), r.payload.clone(), 1), Ok(r));
        }
        let r = record("/v1/E.1/device/request");
        assert_eq!(r.subject(), "edgetap.msg.E%2E1.up");
        assert_eq!(r.stamp.msg_id(), "site%20A.42.7");
    }

    #[test]
    fn a_record_without_its_headers_names_the_one_missing() {
        let r = record("/v1/E1/device/request");
        let mut h = r.headers();
        h.insert(H_TIME, "soon");
        let e = Record::read(Some(&h), r.payload.clone(), 9).unwrap_err();
        assert_eq!((e.seq, e.header), (9, H_TIME));
        let e = Record::read(None, r.payload, 9).unwrap_err();
        assert_eq!(e.header, H_TOPIC);
        assert_eq!(e.problem, "missing");
    }
}
