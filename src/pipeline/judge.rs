//! The judging stage: the rule engine over what the [`Framer`](super::Framer) staged,
//! in order. It may run on the framer's thread ([`Analyzer`](super::Analyzer)) or on
//! another (`analyze`, the proxy): the staged items are the one way between them.

use std::sync::Arc;

pub use super::framer::Unparsed;
use super::{Sink, Stats, Summary};
use crate::finding::Finding;
use crate::protocol::Message;
use crate::rules::engine::Coverage;
use crate::rules::{Engine, RuleSet};

/// What the framer hands the judge, in input order.
#[derive(Debug)]
pub enum Staged {
    /// A protocol message, its payload parsed.
    Message(Message),
    /// A protocol message whose payload the judge parses (from a framer that must
    /// stay light: [`Framer::leaving_payloads`](super::Framer::leaving_payloads)).
    Unparsed(Unparsed),
    /// A transport finding (malformed packet, capture gap, bad frame…): already
    /// judged, passed on in its place among the messages.
    Finding(Finding),
    /// Bytes of the input were lost here (a capture gap, an unreadable frame): a
    /// request or an answer may have been among them.
    Lost,
    /// The input ended: what is still open is judged against its end.
    End(Box<Ended>),
}

/// What the framer knows at the end of the input.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// The time of the last input (µs).
    pub time_us: i64,
    pub stats: Stats,
    /// The clauses the framer exercised (5.2: MQTT packets decoded).
    pub coverage: Coverage,
}

pub struct Judge {
    engine: Engine,
    findings: Vec<Finding>,
    ended: Option<Box<Ended>>,
    /// Buffers of documents this thread parsed and judged, for the next it parses.
    spare: Vec<crate::protocol::json::Buffers>,
}

/// Documents' buffers a judge keeps for reuse.
const SPARE: usize = 256;

impl Judge {
    pub fn new(rules: Arc<RuleSet>) -> Judge {
        Judge {
            engine: Engine::new(rules),
            findings: vec![],
            ended: None,
            spare: vec![],
        }
    }

    /// Judges one staged item. The item stays in place (its batch is dropped on the
    /// thread that allocated it), except `End`, which is taken, and the document of
    /// a message whose payload this thread parsed: its buffers are kept here (the
    /// message is left without its body).
    pub fn take(&mut self, s: &mut Staged, sink: &mut dyn Sink) {
        let parsed_here = matches!(s, Staged::Unparsed(_));
        if parsed_here {
            if let Staged::Unparsed(raw) = std::mem::replace(s, Staged::Lost) {
                *s = Staged::Message(raw.parse_into(self.spare.pop().unwrap_or_default()));
            }
        }
        match s {
            Staged::Unparsed(_) => unreachable!("parsed above"),
            Staged::Lost => self.engine.note_lost(),
            Staged::End(_) => {
                let Staged::End(e) = std::mem::replace(s, Staged::Lost) else {
                    unreachable!("matched above")
                };
                self.engine.input_ends(e.time_us);
                self.ended = Some(e);
            }
            Staged::Finding(f) => sink.finding(f),
            Staged::Message(m) => {
                self.engine.on_message(m, &mut self.findings);
                sink.message(m);
                for f in self.findings.drain(..) {
                    sink.finding(&f);
                }
                // The document goes back to this thread's buffers; the rest of the
                // message (its topic's strings) goes back with the batch.
                if parsed_here && self.spare.len() < SPARE {
                    let gone = Err(crate::protocol::PayloadError::NotObject("judged"));
                    if let Ok(env) = std::mem::replace(&mut m.body, gone) {
                        self.spare.extend(env.into_buffers());
                    }
                }
            }
        }
    }

    /// The clauses exercised so far (for a live view).
    pub fn exercised(&self) -> &Coverage {
        self.engine.exercised()
    }

    /// The engine so far (a live view's clause table reads it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// End of input: unanswered requests, unfinished jobs. The summary holds the
    /// framer's counters and the clauses both stages exercised.
    pub fn finish(mut self, sink: &mut dyn Sink) -> Summary {
        self.engine.finish(&mut self.findings);
        for f in self.findings.drain(..) {
            sink.finding(&f);
        }
        let ended = self.ended.take().map(|e| *e).unwrap_or_default();
        let mut coverage = ended.coverage;
        coverage.merge(self.engine.exercised());
        Summary {
            stats: ended.stats,
            coverage,
        }
    }
}
