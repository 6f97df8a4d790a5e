//! `edgetap watch`: judge a whole fleet from one ordinary MQTT subscription, with no
//! proxy inserted anywhere.
//!
//! Two parts meet at one seam:
//!
//! - the [`subscriber`] (the only networking here) subscribes to `/v1/#` and turns
//!   each delivery, as its client library decoded it, into an [`Event`];
//! - an [`Outlet`] takes the events in order. The one this module has is the
//!   [`judging`] outlet: the shared pipeline ([`crate::pipeline::Analyzer`], decoded
//!   PUBLISH in through `push(At, Input::Packet …)`, never re-encoded), the live
//!   console of the proxy, the findings stream and the final report. A bus
//!   publisher (`watch --bus`, scale-out) is another outlet: it takes the same
//!   events and judges nothing.
//!
//! What a subscriber cannot see, and the report says once (clause 5.2 "not
//! exercised"): the publishers' CONNECTs and client ids, the QoS they published
//! with, and what the broker dropped before delivering. Deliveries carry the QoS
//! of the watcher's subscription, so the pipeline is handed QoS 0 as the sims' tap
//! does; the retain flag is passed on (a retained message is history replayed at
//! subscription). An outage of the watcher's own connection is stated in the
//! report (`summary.incomplete`): what was published meanwhile was not seen.

pub mod judging;
pub mod record;
mod run;
pub mod subscriber;

pub use run::run;

use std::path::PathBuf;
use std::time::Duration;

use crate::sim::Protocol;

/// The filter of every protocol topic (`/v1/{edgeId}/{channel}/{role}`).
pub const ALL_TOPICS: &str = "/v1/#";

/// What `watch` connects to and how.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// `[USER@]HOST:PORT` (the password from [`crate::sim::PASSWORD_ENV`]).
    pub broker: String,
    /// Topic filters subscribed to (QoS 1).
    pub filters: Vec<String>,
    pub client_id: String,
    pub protocol: Protocol,
    /// TLS toward the broker, trusting the CA certificates (PEM) of this file.
    pub tls_ca: Option<PathBuf>,
    /// Largest packet the client takes, in bytes.
    pub max_packet: usize,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
}

impl WatchSettings {
    pub fn new(broker: &str) -> WatchSettings {
        WatchSettings {
            broker: broker.to_string(),
            filters: vec![ALL_TOPICS.to_string()],
            client_id: format!("edgetap-watch-{}", std::process::id()),
            protocol: Protocol::V4,
            tls_ca: None,
            max_packet: 16 << 20,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The broker without its login, for reports and logs.
    pub fn source(&self) -> String {
        let addr = self
            .broker
            .rsplit_once('@')
            .map_or(self.broker.as_str(), |(_, a)| a);
        format!("mqtt://{addr} ({})", self.filters.join(", "))
    }
}

/// One PUBLISH the broker delivered, as the client decoded it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// 1-based, in the order the client received them: the unit findings cite.
    pub n: u64,
    /// When the client received it (µs since the Unix epoch).
    pub time_us: i64,
    pub topic: String,
    pub payload: bytes::Bytes,
    /// A retained message the broker replayed at subscription.
    pub retain: bool,
    /// The QoS of the delivery (the subscription's, at most the publisher's).
    pub qos: u8,
}

/// What the subscriber tells its outlet, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Delivery(Delivery),
    /// The watcher's connection was lost (it retries).
    Down {
        at_us: i64,
        cause: String,
    },
    /// …and is back, subscribed again.
    Up {
        at_us: i64,
    },
    /// Time passes (every [`TICK`]), for summaries and flushing.
    Tick,
}

/// How often an outlet is ticked.
pub const TICK: Duration = Duration::from_millis(500);

/// Where decoded deliveries leave the subscriber: the seam between receiving and
/// judging (or publishing to a bus).
pub trait Outlet: Send {
    /// One event, in the order the subscriber saw them.
    fn event(&mut self, ev: Event);
    /// Nothing more is queued right now: push out what is buffered.
    fn idle(&mut self) {}
}

/// Feeds `outlet` every event of `rx` until the channel closes (the subscriber
/// stopped and the ticker with it); call on a thread of its own.
pub fn drain(mut rx: tokio::sync::mpsc::Receiver<Event>, outlet: &mut dyn Outlet) {
    loop {
        match rx.try_recv() {
            Ok(ev) => outlet.event(ev),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                outlet.idle();
                match rx.blocking_recv() {
                    Some(ev) => outlet.event(ev),
                    None => break,
                }
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
        }
    }
    outlet.idle();
}
