//! Recorded events as the one pipeline's inputs. The proxy's live analysis and
//! `edgetap analyze --capture ID` (`analyze::stored`) both go through [`input`], so
//! a stored capture yields the findings the proxy printed while it ran.

use super::{Event, EventKind};
use crate::pipeline::{At, Input};

/// Why the proxy recorded a flow's bytes without analysing them.
pub const OPAQUE_REASON: &str = "TLS (not terminated: no --tls-cert/--tls-key)";

/// The pipeline's input for one event (`seq` is the frame number of findings);
/// `None` for an event that changes nothing for it.
pub fn input(ev: &Event) -> Option<(At, Input<'_>)> {
    let at = At::new(ev.conn, ev.time_us, ev.seq);
    let input = match &ev.kind {
        EventKind::Open { client, server } => Input::Open {
            client: Some(*client),
            server: Some(*server),
            midstream: false,
        },
        EventKind::Data { side, bytes } => Input::Data { side: *side, bytes },
        EventKind::Opaque { .. } => Input::Opaque {
            reason: OPAQUE_REASON,
        },
        // The analyzer judges each direction's bytes; a half-close changes nothing
        // until the connection ends.
        EventKind::Fin { .. } => return None,
        EventKind::End { .. } => Input::Close,
    };
    Some((at, input))
}
