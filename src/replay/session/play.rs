//! Our side of the recording, played in order: each message rewritten into the live
//! session's terms, sent once the answers recorded before it came (or their wait
//! ran out), paced as asked; our replies and reports go through their in-place
//! mutation when one targets them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::protocol::{Actor, Class};
use crate::replay::mutate::{self, Draft, Verdict};
use crate::replay::{Pacing, ReplayError};

use super::{secs, Session};

impl Session<'_> {
    /// Plays our side of the recording.
    pub(super) async fn replay(&mut self) -> Result<(), ReplayError> {
        let msgs = self.msgs;
        let t0 = Instant::now();
        let first_us = msgs.first().map_or(0, |m| m.time_us);
        let mut from = 0;
        // Periodic reports keep their recorded spacing even when the rest goes as
        // fast as the answers allow (a rule judges the period): type → (recorded µs,
        // sent at).
        let mut last_report: HashMap<String, (i64, Instant)> = HashMap::new();
        let factor = match self.s.pacing {
            Pacing::Speed(f) => f.max(1e-6),
            Pacing::Asap => 1.0,
        };
        // Playing the platform from a recording in which one of our commands comes
        // before any request of the edge's (taken after the edge came online): no
        // link-up to wait for, so before the first command wait, up to --edge-wait-ms, for the live
        // edge to publish anything: a command sent before it is online answers
        // nothing and would read as its missing reply.
        let ours_first = msgs.iter().position(|m| m.publisher() == self.us);
        let edge_first = (0..msgs.len()).find(|&i| self.edge_started(i));
        let unannounced = match (ours_first, edge_first) {
            (Some(o), Some(e)) => o < e,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.us == Actor::Platform && unannounced {
            let deadline = Instant::now() + self.s.edge_wait;
            if !self.wait_until(deadline, &|s| s.heard).await && !self.check_lost() {
                eprintln!(
                    "edgetap: replay: edge {} published nothing within {} (--edge-wait-ms); \
                     the first command goes out anyway: if the device is not online yet, its \
                     exchange reads as a missing reply",
                    self.rw.live_edge,
                    secs(self.s.edge_wait)
                );
            }
        }
        for (i, m) in msgs.iter().enumerate() {
            if m.publisher() != self.us || self.skip.contains(&i) {
                continue;
            }
            self.played = i;
            self.await_answers(from, i).await;
            if self.check_lost() {
                return Ok(());
            }
            if let Some(p) = &self.progress {
                p.inc(1);
            }
            from = i + 1;
            if let Pacing::Speed(f) = self.s.pacing {
                let at = t0
                    + Duration::from_micros(
                        ((m.time_us - first_us).max(0) as f64 / f.max(1e-6)) as u64,
                    );
                // Waits as the others do: an interruption ends it.
                self.wait_until(at, &|_| false).await;
                if self.check_lost() {
                    return Ok(());
                }
            }
            let Some(json) = m.json.clone() else {
                // A recorded payload that is no JSON object goes out as it was.
                let topic = self.rw.topic(&m.topic_name);
                self.publish(&topic, m.payload.clone()).await?;
                continue;
            };
            let topic = self.rw.topic(&m.topic_name);
            match m.class() {
                Class::Request => {
                    let mid = self.rw.next_mid();
                    let out = self.rw.outgoing(&json, m.mid().map(|_| mid));
                    if let Some(&x) = self.ex_of_request.get(&i) {
                        self.sent.insert(mid, x);
                    }
                    self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                        .await?;
                }
                Class::Reply => {
                    // Answer the live request this recorded reply answered.
                    let x = msgs[..i]
                        .iter()
                        .rev()
                        .find(|r| {
                            r.class() == Class::Request
                                && r.publisher() != self.us
                                && r.mid() == m.mid()
                                && r.topic.channel == m.topic.channel
                        })
                        .and_then(|r| self.ex_of_request.get(&r.index).copied());
                    let Some(x) = x else { continue };
                    // A request already waited for in vain is not waited for again.
                    let waited = self
                        .ex_of_request
                        .iter()
                        .any(|(i, &e)| e == x && self.gave_up.contains(i));
                    let wait = if waited {
                        Duration::ZERO
                    } else {
                        self.request_wait()
                    };
                    let deadline = Instant::now() + wait;
                    self.wait_until(deadline, &|s| s.their_mid.contains_key(&x))
                        .await;
                    let Some(&live_mid) = self.their_mid.get(&x) else {
                        self.inline_not_sent(i, x);
                        continue;
                    };
                    let out = self.rw.outgoing(&json, Some(live_mid));
                    if self.inline_at.contains_key(&i) {
                        self.send_inline(i, topic, out, Some(live_mid), Some(x))
                            .await?;
                    } else {
                        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                            .await?;
                    }
                }
                Class::Report => {
                    let t = m.msg_type().unwrap_or("").to_string();
                    // As edge: a job result only for a job the live platform started.
                    if t == "REP_JOB_RESULT"
                        && self.us == Actor::Edge
                        && m.job_id().is_some_and(|j| !self.rw.knows_job(j))
                    {
                        continue;
                    }
                    if t != "REP_JOB_RESULT" {
                        if let Some((rec, at)) = last_report.get(&t) {
                            let gap = (m.time_us - rec).max(0) as f64 / factor;
                            let due = *at + Duration::from_micros(gap as u64);
                            self.wait_until(due, &|_| false).await;
                        }
                        last_report.insert(t, (m.time_us, Instant::now()));
                    }
                    let mid = self.rw.next_mid();
                    let out = self.rw.outgoing(&json, m.mid().map(|_| mid));
                    if self.inline_at.contains_key(&i) {
                        self.send_inline(i, topic, out, None, None).await?;
                    } else {
                        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                            .await?;
                    }
                }
            }
        }
        self.played = msgs.len();
        self.await_answers(from, msgs.len()).await;
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
        Ok(())
    }

    /// Sends recorded message `i` of ours (already rewritten as `out`) through its
    /// in-place mutation. `x`: the exchange whose request it answers.
    async fn send_inline(
        &mut self,
        i: usize,
        topic: String,
        out: Map<String, Value>,
        their_mid: Option<u64>,
        x: Option<usize>,
    ) -> Result<(), ReplayError> {
        let k = self.inline_at[&i];
        let spec = self.inline[k].spec.clone();
        if let Some(m) = out.get("mid").and_then(crate::protocol::as_u64_lenient) {
            self.inline[k].mids.push(m);
        }
        self.inline[k].mids.extend(their_mid);
        let draft = Draft {
            topic,
            json: out,
            raw: None,
            copies: 1,
            delay_ms: 0,
            after_probe: false,
        };
        let Verdict::Send(d) = mutate::apply(&spec.steps, draft, &self.rw.live_edge) else {
            self.inline[k].target.push_str(" (dropped)");
            return Ok(());
        };
        if spec.steps.contains(&mutate::Step::JobResultFirst) {
            if let Some(j) = x.and_then(|x| self.job_result_of(x)) {
                let rec = &self.msgs[j];
                if let Some(json) = &rec.json {
                    let jm = self.rw.next_mid();
                    let early = self.rw.outgoing(json, rec.mid().map(|_| jm));
                    let t = self.rw.topic(&rec.topic_name);
                    let payload = serde_json::to_vec(&early).unwrap_or_default();
                    self.publish_injected(&t, payload, &spec.name).await?;
                    self.inline[k].mids.push(jm);
                    self.skip.insert(j);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
        for _ in 0..d.copies {
            self.publish_injected(&d.topic, d.payload(), &spec.name)
                .await?;
        }
        Ok(())
    }

    /// Our recorded job result for the job the request of exchange `x` started.
    fn job_result_of(&self, x: usize) -> Option<usize> {
        let (&req, _) = self.ex_of_request.iter().find(|(_, &e)| e == x)?;
        let job = self.msgs[req].job_id()?;
        self.msgs[req + 1..]
            .iter()
            .find(|r| {
                r.publisher() == self.us
                    && r.msg_type() == Some("REP_JOB_RESULT")
                    && r.job_id() == Some(job)
            })
            .map(|r| r.index)
    }

    /// Recorded reply `i` of ours was not sent: the counterpart's request of exchange
    /// `x` never came. Its in-place mutation, if any, is not exercised.
    fn inline_not_sent(&mut self, i: usize, x: usize) {
        let Some(&k) = self.inline_at.get(&i) else {
            return;
        };
        let who = match self.us {
            Actor::Platform => "edge",
            Actor::Edge => "platform",
        };
        self.inline[k].skipped = Some(format!(
            "not exercised: the reply it changes answers {}, which the {who} did not send",
            self.exchanges[x].request
        ));
    }
}
