//! What a replay is asked to do: the side it plays, the broker, pacing, mutations,
//! noise and the waits.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::Source;
use crate::protocol::Actor;
use crate::sim::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Platform,
    Edge,
}

impl Role {
    pub(super) fn actor(self) -> Actor {
        match self {
            Role::Platform => Actor::Platform,
            Role::Edge => Actor::Edge,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// The recorded offsets divided by the factor (and never before the answers).
    Speed(f64),
    /// As fast as the answers allow.
    Asap,
}

#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub source: Source,
    pub role: Role,
    pub broker: String,
    /// The live edge id; the recorded one when `None`.
    pub edge_id: Option<String>,
    /// The recorded edge to play, of a capture that holds several; the first one
    /// seen when `None`.
    pub pick_edge: Option<String>,
    pub pacing: Pacing,
    /// Named mutations or mutation files, in order.
    pub mutations: Vec<String>,
    pub seed: u64,
    /// More noise fields (names or dotted paths).
    pub noise: Vec<String>,
    /// Send fresh job ids instead of the recorded ones.
    pub fresh_jobs: bool,
    pub protocol: Protocol,
    /// How long to wait for each awaited answer.
    pub answer_timeout: Duration,
    /// How long to watch the counterpart after a mutated message.
    pub mutation_window: Duration,
    /// Broker ports of the capture file.
    pub ports: Vec<u16>,
    /// Write the live session as a pcap.
    pub capture: Option<PathBuf>,
    /// As platform: how long to wait for the edge's first own request (EVENT_LINKUP)
    /// before concluding that the edge was already online; the exchanges the edge
    /// starts by itself are then not exercised (skipped, neither pass nor fail).
    pub edge_wait: Duration,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Turns to the signal's name ("SIGINT") when the run is interrupted: the
    /// replay stops sending, and its outcome covers what ran.
    pub interrupt: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

/// The default of [`ReplaySettings::edge_wait`].
pub const DEFAULT_EDGE_WAIT: Duration = Duration::from_secs(10);

impl ReplaySettings {
    pub fn new(source: Source, role: Role, broker: &str) -> ReplaySettings {
        ReplaySettings {
            source,
            role,
            broker: broker.into(),
            edge_id: None,
            pick_edge: None,
            pacing: Pacing::Speed(1.0),
            mutations: vec![],
            seed: 0,
            noise: vec![],
            fresh_jobs: true,
            protocol: Protocol::V4,
            answer_timeout: Duration::from_secs(5),
            mutation_window: Duration::from_secs(2),
            ports: vec![1883],
            capture: None,
            edge_wait: DEFAULT_EDGE_WAIT,
            progress: false,
            interrupt: None,
        }
    }
}
