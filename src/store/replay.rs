//! Feeding recorded events to the one pipeline. The proxy's live analysis and
//! `edgetap analyze --capture ID` (`analyze::stored`) both go through [`feed`], so
//! a stored capture yields the findings the proxy printed while it ran.

use super::{Event, EventKind};
use crate::pipeline::{Analyzer, Sink};

/// Why the proxy recorded a flow's bytes without analysing them.
pub const OPAQUE_REASON: &str = "TLS (not terminated: no --tls-cert/--tls-key)";

/// Hands one event to the analyzer. `seq` is the `packet` number of findings.
pub fn feed(a: &mut Analyzer, ev: &Event, sink: &mut dyn Sink) {
    match &ev.kind {
        EventKind::Open { client, server } => a.open(ev.conn, Some(*client), Some(*server), false),
        EventKind::Data { side, bytes } => a.data(ev.conn, *side, ev.time_us, ev.seq, bytes, sink),
        EventKind::Opaque { .. } => a.opaque(ev.conn, ev.time_us, ev.seq, OPAQUE_REASON, sink),
        // The analyzer judges each direction's bytes; a half-close changes nothing
        // until the connection ends.
        EventKind::Fin { .. } => {}
        EventKind::End { .. } => a.close(ev.conn, ev.time_us, ev.seq, sink),
    }
}
