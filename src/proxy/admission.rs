//! Who may hold a connection to the live view (`--http`), and what its refusals
//! say: a cap of its own, the oldest connection that has not sent a request yet
//! given up for a new one, and one summary line per period instead of one warning
//! per bad request.
//!
//! Why: 1,100 half-sent requests without a token were held for ever and each logged
//! a warning; under an open-file limit of 1024 that stopped the MQTT side's accepts
//! (the MQTT side cannot be hurt by what the HTTP side holds: see
//! [`super::http`]). With a cap, a flood of silent connections cannot take
//! descriptors from the devices; with the oldest silent one evicted when the cap is
//! reached, it cannot lock out the operator either: a browser sends its request
//! within milliseconds of connecting, an attacker's connection that sends nothing
//! is the first to go.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One admitted connection, as its task holds it.
pub(crate) struct Ticket {
    id: u64,
    slots: Arc<Slots>,
    /// Set (and `evict` notified) when a newer connection took this one's place.
    evicted: Arc<(AtomicBool, Notify)>,
}

impl Ticket {
    /// Resolves when a newer connection took this one's place before it sent its
    /// request.
    pub(crate) async fn evicted(&self) {
        let (flag, notify) = &*self.evicted;
        loop {
            let woken = notify.notified();
            if flag.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// The request has come (its headers are read): the connection can no longer be
    /// given up for a newer one. False when it already was.
    pub(crate) fn requested(&self) -> bool {
        let mut s = self.slots.lock();
        match s.waiting.iter().position(|(id, _)| *id == self.id) {
            Some(i) => {
                s.waiting.remove(i);
                true
            }
            None => !self.evicted.0.load(Ordering::Acquire),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        if let Some(i) = s.waiting.iter().position(|(id, _)| *id == self.id) {
            s.waiting.remove(i);
        }
        // An evicted connection's slot went to the one that evicted it.
        if !self.evicted.0.load(Ordering::Acquire) {
            s.open -= 1;
        }
    }
}

struct SlotState {
    open: usize,
    next: u64,
    /// Connections admitted that have not sent a request yet, oldest first.
    waiting: VecDeque<(u64, Arc<(AtomicBool, Notify)>)>,
}

/// The live view's connection cap.
pub(crate) struct Slots {
    max: usize,
    state: Mutex<SlotState>,
}

/// What [`Slots::admit`] decided.
pub(crate) enum Admission {
    Admitted(Ticket),
    /// The older connection still without a request that was given up for this one.
    Evicting(Ticket),
    /// Every slot holds a connection whose request is being answered.
    Full,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            state: Mutex::new(SlotState {
                open: 0,
                next: 0,
                waiting: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections held now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }

    /// A slot for a new connection: a free one, else the slot of the oldest
    /// connection that has not sent its request (it is told to close), else none.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut s = self.lock();
        let evicting = if s.open < self.max {
            s.open += 1;
            false
        } else if let Some((_, victim)) = s.waiting.pop_front() {
            victim.0.store(true, Ordering::Release);
            victim.1.notify_one();
            true
        } else {
            return Admission::Full;
        };
        let id = s.next;
        s.next += 1;
        let evicted = Arc::new((AtomicBool::new(false), Notify::new()));
        s.waiting.push_back((id, evicted.clone()));
        let t = Ticket {
            id,
            slots: self.clone(),
            evicted,
        };
        match evicting {
            true => Admission::Evicting(t),
            false => Admission::Admitted(t),
        }
    }
}

/// What the live view refused or dropped, for [`HttpLog`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dropped {
    /// Refused at once: every slot answering a request.
    Full,
    /// Given up for a newer connection before sending a request.
    Evicted,
    /// No complete request head within the header timeout.
    HeaderTimeout,
    /// Not answered within the request deadline.
    Deadline,
    /// A request without the right token.
    Unauthorized,
    /// `accept` failed (out of descriptors and the like).
    Accept,
}

const KINDS: usize = 6;

/// The live view's refusals, counted and said at most once per [`HttpLog::EVERY`]
/// in one line (a summary count, not one warning per bad request).
pub(crate) struct HttpLog {
    counts: [AtomicU64; KINDS],
    last: Mutex<Option<Instant>>,
    header_timeout: Duration,
}

impl HttpLog {
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn new(header_timeout: Duration) -> HttpLog {
        HttpLog {
            counts: Default::default(),
            last: Mutex::new(None),
            header_timeout,
        }
    }

    /// Counts one; logs the summary when the period is over (the first at once).
    pub(crate) fn note(&self, what: Dropped) {
        self.counts[what as usize].fetch_add(1, Ordering::Relaxed);
        let due = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|l| l.elapsed() >= Self::EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.flush();
        }
    }

    /// Logs what was counted since the last summary, if anything.
    pub(crate) fn flush(&self) {
        if let Some(line) = self.summary() {
            tracing::warn!("{line}");
        }
    }

    /// The summary of what was counted since the last one (and resets the counts).
    pub(crate) fn summary(&self) -> Option<String> {
        let n: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect();
        let t = self.header_timeout.as_secs_f64();
        let parts: Vec<String> = [
            (
                Dropped::HeaderTimeout,
                format!("closed without a complete request within {t} s"),
            ),
            (
                Dropped::Evicted,
                "given up for newer ones before sending a request".to_string(),
            ),
            (
                Dropped::Full,
                "refused (503: every slot answering a request)".to_string(),
            ),
            (
                Dropped::Unauthorized,
                "refused without the token (401)".to_string(),
            ),
            (
                Dropped::Deadline,
                "closed at the request deadline".to_string(),
            ),
            (Dropped::Accept, "accept failures".to_string()),
        ]
        .into_iter()
        .filter(|(k, _)| n[*k as usize] > 0)
        .map(|(k, what)| format!("{} {what}", n[k as usize]))
        .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "live view (--http): {} (counted, at most one such line per {} s)",
                parts.join(", "),
                Self::EVERY.as_secs()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_gives_way() {
        let slots = Slots::new(2);
        let Admission::Admitted(a) = slots.admit() else {
            panic!()
        };
        let Admission::Admitted(b) = slots.admit() else {
            panic!()
        };
        // b has sent its request: it cannot be given up any more.
        assert!(b.requested());
        let Admission::Evicting(c) = slots.admit() else {
            panic!("a is evicted")
        };
        assert!(a.evicted.0.load(Ordering::Acquire));
        assert!(!a.requested(), "an evicted connection is not served");
        drop(a);
        assert_eq!(slots.open(), 2);
        assert!(c.requested());
        // Both slots answer requests: a new connection is refused.
        assert!(matches!(slots.admit(), Admission::Full));
        drop((b, c));
        assert_eq!(slots.open(), 0);
        assert!(matches!(slots.admit(), Admission::Admitted(_)));
    }

    #[test]
    fn refusals_are_summed_in_one_line() {
        let log = HttpLog::new(Duration::from_secs(5));
        for _ in 0..1100 {
            log.counts[Dropped::HeaderTimeout as usize].fetch_add(1, Ordering::Relaxed);
        }
        log.counts[Dropped::Unauthorized as usize].fetch_add(3, Ordering::Relaxed);
        let line = log.summary().unwrap();
        assert!(
            line.contains("1100 closed without a complete request within 5 s")
                && line.contains("3 refused without the token"),
            "{line}"
        );
        assert_eq!(log.summary(), None, "counts reset after a summary");
    }
}
