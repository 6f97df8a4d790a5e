//! The counterpart's answers: the wait for them (until a condition holds, a deadline
//! passes or the broker connection is lost), each live message matched to the
//! recorded exchange it answers, and, as platform, whether the edge's own session
//! start came.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::protocol::{Actor, Class};
use crate::sim::Incoming;

use super::{late_start_reason, not_exercised_reason, secs, EdgeStart, Session};

/// Who sent a live message.
fn sender(topic: &crate::protocol::Topic) -> Actor {
    topic.publisher
}

/// Resolves when the run is interrupted (never without an interrupt to watch).
async fn interrupted(r: &mut Option<tokio::sync::watch::Receiver<Option<String>>>) {
    match r {
        Some(r) => {
            if r.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

impl Session<'_> {
    /// Handles what arrived, until `done` holds or `deadline` passes; true when done.
    pub(super) async fn wait_until(
        &mut self,
        deadline: Instant,
        done: &(dyn Fn(&Session<'_>) -> bool + Sync),
    ) -> bool {
        loop {
            while let Ok(m) = self.rx.try_recv() {
                self.incoming(m);
            }
            self.send_due().await;
            if done(self) {
                return true;
            }
            // Nothing more can come once the broker connection is lost.
            if self.check_lost() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Waits on `self.state` itself: `changed` marks the new state seen. (A
            // clone made here kept the version of the first state, so its `changed`
            // was ready at once after any change, and this loop spun a core until
            // the deadline. A closed link, `Err`, is seen by `check_lost`.)
            let state = &mut self.state;
            let interrupt = &mut self.interrupt;
            let got = tokio::select! {
                // An interruption ends the wait; `check_lost` then sees it.
                _ = interrupted(interrupt) => None,
                got = tokio::time::timeout(left, self.rx.recv()) => Some(got),
                changed = state.changed() => {
                    if changed.is_err() {
                        // The link's task ended: nothing will change again; wait for
                        // messages alone.
                        Some(tokio::time::timeout(left, self.rx.recv()).await)
                    } else {
                        None
                    }
                }
            };
            match got {
                Some(Ok(Some(m))) => self.incoming(m),
                Some(Ok(None) | Err(_)) => return done(self),
                None => {}
            }
        }
    }

    fn incoming(&mut self, m: Incoming) {
        self.judge_live(&m.topic, &m.payload);
        let Some(topic) = crate::protocol::parse_topic(&m.topic) else {
            return;
        };
        if sender(&topic) == self.us {
            return;
        }
        self.heard = true;
        let json = match serde_json::from_slice::<Value>(&m.payload) {
            Ok(Value::Object(o)) => o,
            _ => {
                if let Some(w) = &mut self.watch {
                    w.push((None, None, "a payload that is no JSON object".into()));
                }
                return;
            }
        };
        let mid = json.get("mid").and_then(crate::protocol::as_u64_lenient);
        let t = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match topic.class {
            Class::Reply => {
                if let Some(w) = &mut self.watch {
                    if mid.is_some_and(|m| self.mutation_mids.contains(&m)) || mid.is_none() {
                        let code = json.get("code").and_then(crate::protocol::as_i64_lenient);
                        let msg = json.get("msg").and_then(Value::as_str).unwrap_or("");
                        w.push((mid, code, msg.to_string()));
                        return;
                    }
                }
                let norm = self.norm(&json);
                match mid.and_then(|m| self.sent.get(&m).copied()) {
                    Some(x) => {
                        if t == "CMD_TOPO_ADD" {
                            // The deviceIds the live platform assigned go into the
                            // messages that follow.
                            let rec = self
                                .ex_reply
                                .iter()
                                .find(|(_, &e)| e == x)
                                .and_then(|(&i, _)| self.msgs[i].json.as_ref());
                            if let Some(rec) = rec {
                                self.rw.learn_devices(rec, &json);
                            }
                        }
                        let norm = self.norm(&json);
                        let timeout = self.s.answer_timeout;
                        let ex = &mut self.exchanges[x];
                        if ex.live.reply.is_none() {
                            ex.live.reply = Some(norm);
                            if let Some((&i, _)) = self.ex_reply.iter().find(|(_, &e)| e == x) {
                                self.seen.insert(i);
                                // The replay gave up on it: late, wherever it sits
                                // in the recording.
                                if self.gave_up.contains(&i) {
                                    ex.late.push(format!(
                                        "late reply: it came after the replay stopped \
                                         waiting ({} ms, --timeout-ms)",
                                        timeout.as_millis()
                                    ));
                                }
                            }
                        } else {
                            ex.live.extra.push(norm);
                        }
                    }
                    None if mid.is_some_and(|m| self.mutation_mids.contains(&m)) => {}
                    None => {
                        // A reply to nothing we sent: the first open exchange of its
                        // type shows it, so the difference is reported where it belongs.
                        let open = self.exchanges.iter().position(|x| {
                            x.request == t && x.from == self.us_str() && x.live.reply.is_none()
                        });
                        match open {
                            Some(x) => self.exchanges[x].live.extra.push(norm),
                            None => self.orphans.push(norm),
                        }
                    }
                }
            }
            Class::Report if t == "REP_JOB_RESULT" => {
                let live_job = json
                    .get("param")
                    .and_then(|p| p.get("jobId"))
                    .and_then(crate::protocol::as_u64_lenient);
                if let Some(j) = live_job.filter(|j| self.mutation_jobs.contains(j)) {
                    self.mutation_results.push(j);
                    return;
                }
                let norm = self.norm(&json);
                let Some(j) = live_job.map(|j| self.rw.recorded_job(j)) else {
                    return;
                };
                let x = self.exchanges.iter().enumerate().position(|(n, _)| {
                    self.ex_of_request.iter().any(|(&i, &e)| {
                        e == n
                            && self.msgs[i].job_id() == Some(j)
                            && self.msgs[i].msg_type() != Some("CMD_STATUS_QUERY")
                    })
                });
                if let Some(x) = x {
                    let timeout = self.s.answer_timeout;
                    let ex = &mut self.exchanges[x];
                    if ex.live.job_result.is_none() {
                        ex.live.job_result = Some(norm);
                        if let Some((&i, _)) = self.ex_job.iter().find(|(_, &e)| e == x) {
                            self.seen.insert(i);
                            if self.gave_up.contains(&i) {
                                ex.late.push(format!(
                                    "late job result: it came after the replay stopped \
                                     waiting ({} ms, --timeout-ms)",
                                    timeout.as_millis()
                                ));
                            }
                        }
                    } else {
                        ex.live.extra.push(norm);
                    }
                }
            }
            Class::Request => {
                // The n-th live request of a type is the n-th recorded one (not
                // while a mutation is watched: what comes then is no exchange's).
                let next = self
                    .ex_of_request
                    .iter()
                    .filter(|(&i, &x)| {
                        self.msgs[i].publisher() != self.us
                            && self.msgs[i].msg_type() == Some(t.as_str())
                            && !self.their_mid.contains_key(&x)
                    })
                    .map(|(&i, &x)| (i, x))
                    .min()
                    .filter(|_| self.watch.is_none());
                let Some((i, x)) = next else {
                    // Beyond the recording (a device that restarted and sent
                    // EVENT_LINKUP again): answered as the recording answered the
                    // first of its type, and said in the report, as the likely cause
                    // of the differences that follow (a restart loses the device's
                    // state).
                    let first = self
                        .ex_of_request
                        .keys()
                        .filter(|&&i| {
                            self.msgs[i].publisher() != self.us
                                && self.msgs[i].msg_type() == Some(t.as_str())
                        })
                        .min()
                        .copied();
                    let answered = first.is_some_and(|f| self.answer_again(f, &m.topic, mid));
                    if self.unexpected.len() < 100 {
                        self.unexpected.push(format!(
                            "{t} at {} into the replay (mid {}): {}",
                            secs(self.began.elapsed()),
                            mid.map_or("none".into(), |m| m.to_string()),
                            if answered {
                                "answered as the recording answered the first"
                            } else {
                                "not answered: the recording holds no answer to it"
                            }
                        ));
                    }
                    return;
                };
                // A request that comes after its recorded answer was played (the
                // edge came online late): answered now, as recorded.
                if self.answer_of(i).is_some_and(|r| r < self.played) {
                    self.answer_again(i, &m.topic, mid);
                }
                if let (Some(rec), Some(live)) = (
                    self.msgs[i].job_id(),
                    json.get("param")
                        .and_then(|p| p.get("jobId"))
                        .and_then(crate::protocol::as_u64_lenient),
                ) {
                    self.rw.learn_job(rec, live);
                }
                let norm = self.norm(&json);
                self.exchanges[x].live.request = Some(norm);
                self.their_mid.insert(x, mid.unwrap_or(0));
                self.seen.insert(i);
            }
            Class::Report => {}
        }
    }

    /// Our recorded reply to the counterpart's recorded request `i`.
    fn answer_of(&self, i: usize) -> Option<usize> {
        let req = &self.msgs[i];
        self.msgs[i + 1..]
            .iter()
            .find(|r| {
                r.publisher() == self.us
                    && r.class() == Class::Reply
                    && r.mid() == req.mid()
                    && r.topic.channel == req.topic.channel
            })
            .map(|r| r.index)
    }

    /// Queues our recorded reply to the counterpart's recorded request `i` as the
    /// answer to a live request (on `live_topic`, with `mid`); false when the
    /// recording holds none. Sent by the next wait ([`Session::send_due`]).
    ///
    /// As platform only: the edge's own requests (EVENT_LINKUP, topo) are answered
    /// alike whenever they come; as edge, a command beyond the recording may start
    /// a job whose result the recording cannot give, and stays unanswered.
    fn answer_again(&mut self, i: usize, live_topic: &str, mid: Option<u64>) -> bool {
        if self.us != Actor::Platform {
            return false;
        }
        let Some(r) = self.answer_of(i) else {
            return false;
        };
        let rec = &self.msgs[r];
        let Some(json) = &rec.json else { return false };
        let out = self.rw.outgoing(json, mid);
        // The reply topic of the live request's channel (its edge id as it came).
        let topic = match crate::protocol::parse_topic(live_topic) {
            Some(t) => crate::sim::topic(&t.edge_id, &t.channel, &rec.topic.role),
            None => self.rw.topic(&rec.topic_name),
        };
        self.due
            .push((topic, serde_json::to_vec(&out).unwrap_or_default()));
        true
    }

    /// Sends the answers queued by [`Session::answer_again`].
    pub(super) async fn send_due(&mut self) {
        for (topic, payload) in std::mem::take(&mut self.due) {
            // A lost broker is seen by the caller's `check_lost`.
            let _ = self.publish(&topic, payload).await;
        }
    }

    fn us_str(&self) -> String {
        format!("{:?}", self.us).to_lowercase()
    }

    fn norm(&self, live: &Map<String, Value>) -> Value {
        self.noise.normalize(&Value::Object(self.rw.incoming(live)))
    }

    /// Waits for the live counterparts of the recorded answers in `msgs[from..to]`.
    pub(super) async fn await_answers(&mut self, from: usize, to: usize) {
        let mut awaited: Vec<usize> = (from..to)
            .filter(|&i| {
                self.ex_reply.contains_key(&i)
                    || self.ex_job.contains_key(&i)
                    || (self.ex_of_request.contains_key(&i) && self.msgs[i].publisher() != self.us)
            })
            .filter(|&i| self.msgs[i].publisher() != self.us)
            .collect();
        if let Some(&first) = awaited.iter().find(|&&i| self.edge_started(i)) {
            self.await_edge_start(first).await;
            if self.edge_was_online() {
                awaited.retain(|&i| !self.edge_started(i));
            }
        }
        if awaited.is_empty() {
            while let Ok(m) = self.rx.try_recv() {
                self.incoming(m);
            }
            self.send_due().await;
            return;
        }
        let deadline = Instant::now() + self.s.answer_timeout;
        self.wait_until(deadline, &|s| awaited.iter().all(|i| s.seen.contains(i)))
            .await;
        // Given up only when the answer window closed: a wait the lost broker cut
        // short is the loss's, not the counterpart's missing answer.
        if self.check_lost() {
            return;
        }
        let missed: Vec<usize> = awaited
            .into_iter()
            .filter(|i| !self.seen.contains(i))
            .collect();
        self.gave_up.extend(missed);
    }

    /// Recorded message `i` is the request of an exchange the edge starts by itself
    /// (EVENT_LINKUP, topo requests), and we play the platform.
    pub(super) fn edge_started(&self, i: usize) -> bool {
        self.us == Actor::Platform
            && self.ex_of_request.contains_key(&i)
            && self.msgs[i].publisher() != self.us
    }

    /// The edge's first own request did not come within `edge_wait`.
    fn edge_was_online(&self) -> bool {
        matches!(self.edge_start, EdgeStart::Missed { .. })
    }

    /// Once: waits up to `edge_wait` for the edge's first own request, recorded
    /// message `first`, and so learns whether the edge was already online.
    async fn await_edge_start(&mut self, first: usize) {
        if self.edge_start != EdgeStart::Pending {
            return;
        }
        let deadline = Instant::now() + self.s.edge_wait;
        let seen = self
            .wait_until(deadline, &|s| s.seen.contains(&first))
            .await;
        // A wait cut short (broker lost, run interrupted) tells nothing of the edge.
        if !seen && self.check_lost() {
            return;
        }
        self.edge_start = if seen {
            EdgeStart::Seen
        } else {
            EdgeStart::Missed {
                msg_type: self.msgs[first].msg_type().unwrap_or("?").to_string(),
            }
        };
    }

    /// How long to wait for the counterpart's request a recorded reply of ours
    /// answers: not at all from an edge that was already online (its own requests
    /// were sent before the replay; one sent anyway has arrived or is not answered).
    pub(super) fn request_wait(&self) -> Duration {
        if self.edge_was_online() {
            Duration::ZERO
        } else {
            self.s.answer_timeout
        }
    }

    /// With an edge already online: each exchange the edge starts by itself that
    /// never came is skipped, with why.
    pub(super) fn mark_not_exercised(&mut self) {
        let EdgeStart::Missed { msg_type: first } = &self.edge_start else {
            return;
        };
        let us = self.us_str();
        let came_late = self
            .exchanges
            .iter()
            .any(|x| x.from != us && &x.request == first && x.live.request.is_some());
        for x in self
            .exchanges
            .iter_mut()
            .filter(|x| x.from != us && x.live.request.is_none())
        {
            x.skipped = Some(if came_late {
                late_start_reason(first, self.s.edge_wait)
            } else {
                not_exercised_reason(&x.request, first, self.s.edge_wait)
            });
        }
    }
}
