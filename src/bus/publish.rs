//! The watcher's side of the bus: [`Publisher`] turns each decoded message into a
//! [`Record`] stamped with the watcher's id and sequence and publishes it to
//! `edgetap.msg.<edge>.<direction>`. It judges nothing.
//!
//! Publishes are pipelined: up to [`IN_FLIGHT`] wait for the stream's ack at once
//! (a slow server slows the watcher, it does not grow memory); [`Publisher::flush`]
//! waits for all of them.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use super::record::{Record, Stamp};
use super::BusError;

/// Publishes awaiting their ack, at most.
pub const IN_FLIGHT: usize = 1024;

pub struct Publisher {
    js: jetstream::Context,
    url: String,
    watcher: String,
    run_us: i64,
    seq: u64,
    in_flight: VecDeque<PublishAckFuture>,
    /// Records the stream acknowledged.
    pub stored: u64,
    /// Of them, repeats the stream recognised by their `Nats-Msg-Id`.
    pub duplicates: u64,
}

impl Publisher {
    /// Connects to `url`, creates the streams when missing, starts a run of
    /// `watcher` (its id in every record).
    pub async fn connect(url: &str, watcher: &str) -> Result<Publisher, BusError> {
        let js = super::open(url, super::DEFAULT_RETENTION).await?;
        Ok(Publisher {
            js,
            url: url.to_string(),
            watcher: watcher.to_string(),
            run_us: crate::sim::now_us(),
            seq: 0,
            in_flight: VecDeque::new(),
            stored: 0,
            duplicates: 0,
        })
    }

    /// Records published so far (acked or not).
    pub fn published(&self) -> u64 {
        self.seq
    }

    /// Publishes one message the watcher received at `time_us`.
    pub async fn send(
        &mut self,
        topic: String,
        payload: Bytes,
        time_us: i64,
        retain: bool,
    ) -> Result<(), BusError> {
        self.seq += 1;
        let record = Record {
            topic,
            payload,
            time_us,
            retain,
            stamp: Stamp {
                watcher: self.watcher.clone(),
                run_us: self.run_us,
                seq: self.seq,
            },
        };
        self.send_record(&record).await
    }

    /// Publishes `record` as it is (its stamp included).
    pub async fn send_record(&mut self, record: &Record) -> Result<(), BusError> {
        if self.in_flight.len() >= IN_FLIGHT {
            self.settle_one().await?;
        }
        let subject = record.subject();
        let ack = self
            .js
            .publish_with_headers(subject.clone(), record.headers(), record.payload.clone())
            .await
            .map_err(|e| BusError::new(format!("publishing to {subject}"), e))?;
        self.in_flight.push_back(ack);
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), BusError> {
        let Some(ack) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(30), ack).await {
            Ok(Ok(a)) => {
                self.stored += 1;
                self.duplicates += u64::from(a.duplicate);
                Ok(())
            }
            Ok(Err(e)) => {
                let hint = match e.kind() {
                    jetstream::context::PublishErrorKind::StreamNotFound => format!(
                        ": no stream took edgetap.msg.*: is {} started with the configuration \
                         of `edgetap bus nats-config` (its mapping to edgetap.p.*)?",
                        self.url
                    ),
                    _ => String::new(),
                };
                Err(BusError::new("a record's ack", format!("{e}{hint}")))
            }
            Err(_) => Err(BusError::new("a record's ack", "none within 30 s")),
        }
    }

    /// Waits for every publish's ack.
    pub async fn flush(&mut self) -> Result<(), BusError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}
