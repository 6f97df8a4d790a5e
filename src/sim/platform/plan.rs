//! The plan's exchanges: a command sent and its reply judged (presence, type, code),
//! a job's result awaited, what the edge starts itself awaited until its deadline;
//! each recorded as a step of its item.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sim::package::FileRef;
use crate::sim::{next_mid, request, topic};

use super::items::{Step, ONLINE_HINT};
use super::receiver::{quoted, Seen};
use super::Plan;

/// Reply codes of table 3 by which an edge refuses a command.
const REFUSALS: [i64; 5] = [400, 401, 403, 404, 600];

impl Plan {
    pub(super) fn add(
        &mut self,
        item: &'static str,
        status: &str,
        what: &str,
        detail: String,
        latency: Option<Duration>,
    ) {
        self.steps.entry(item).or_default().push(Step {
            what: what.into(),
            status: status.into(),
            detail,
            latency_ms: latency.map(|d| d.as_secs_f64() * 1000.0),
            edge_started: false,
        });
    }

    /// Marks the last step of `item` as one the edge starts itself.
    fn mark_edge_started(&mut self, item: &'static str) {
        if let Some(st) = self.steps.get_mut(item).and_then(|v| v.last_mut()) {
            st.edge_started = true;
        }
    }

    /// The `file` object of an upgrade or install command.
    pub(super) fn file(&self, placeholder: &str) -> Value {
        self.file
            .clone()
            .unwrap_or_else(|| FileRef::placeholder(placeholder))
            .to_json()
    }

    pub(super) fn next_job(&mut self) -> u64 {
        self.job += 1;
        self.job
    }

    /// Sends a command and judges its reply's presence, type and code.
    pub(super) async fn command(
        &mut self,
        item: &'static str,
        channel: &str,
        t: &str,
        param: Value,
        codes: &[i64],
    ) -> Option<Seen> {
        self.command_as(item, "", channel, t, param, codes).await
    }

    /// [`Plan::command`] with a `label` after the type in the step's name.
    pub(super) async fn command_as(
        &mut self,
        item: &'static str,
        label: &str,
        channel: &str,
        t: &str,
        param: Value,
        codes: &[i64],
    ) -> Option<Seen> {
        let mid = next_mid();
        let v = request(Some(mid), t, Some(param));
        let sent = Instant::now();
        let expected = codes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join("/");
        let what = format!("{t}{label} → {expected}");
        if let Some(why) = self.log.stopped() {
            self.add(
                item,
                "not exercised",
                &what,
                format!("not sent: {why}"),
                None,
            );
            return None;
        }
        if let Err(e) = self
            .link
            .publish(
                &topic(&self.s.edge_id, channel, "command"),
                serde_json::to_vec(&v).unwrap_or_default(),
            )
            .await
        {
            self.add(item, "fail", &what, e.to_string(), None);
            return None;
        }
        let ch = channel.to_string();
        let got = self
            .log
            .wait(self.s.wait, |s| {
                s.role == "reply" && s.channel == ch && s.mid == Some(mid)
            })
            .await;
        let Some(r) = got else {
            if let Some(why) = self.log.stopped() {
                let d = format!("no reply before the plan was {why}");
                self.add(item, "not exercised", &what, d, None);
                return None;
            }
            let d = format!(
                "no reply with mid {mid} on {channel}/reply within {} ms",
                self.s.wait.as_millis()
            );
            self.add(item, "fail", &what, d, None);
            return None;
        };
        let lat = r.at.saturating_duration_since(sent);
        if r.msg_type != t {
            self.add(
                item,
                "fail",
                &what,
                format!("reply type {} is not {t}", r.msg_type),
                Some(lat),
            );
        } else if let Some(d) = unexpected_code(&r, t, codes, &expected) {
            self.add(item, "fail", &what, d, Some(lat));
        } else {
            self.add(
                item,
                "pass",
                &what,
                format!("code {}", r.code().unwrap_or(0)),
                Some(lat),
            );
        }
        Some(r)
    }

    /// Waits for the REP_JOB_RESULT of `job` on `{channel}/data`; `field` is "result" or "code".
    pub(super) async fn job_result(
        &mut self,
        item: &'static str,
        channel: &str,
        job: u64,
        field: &str,
        accepted: bool,
    ) {
        let what = format!("REP_JOB_RESULT of job {job} on {channel}/data");
        if !accepted {
            self.add(
                item,
                "not exercised",
                &what,
                "the job was not accepted".into(),
                None,
            );
            return;
        }
        let ch = channel.to_string();
        let sent = Instant::now();
        let got = self
            .log
            .wait(self.s.job_timeout, |s| {
                s.msg_type == "REP_JOB_RESULT"
                    && s.channel == ch
                    && s.param("jobId").and_then(Value::as_u64) == Some(job)
            })
            .await;
        match got {
            None if self.log.stopped().is_some() => {
                let why = self.log.stopped().unwrap_or_default();
                let d = format!("no result before the plan was {why}");
                self.add(item, "not exercised", &what, d, None)
            }
            None => {
                let d = format!(
                    "timed out: no REP_JOB_RESULT of job {job} within {} of the reply (--job-timeout)",
                    seconds(self.s.job_timeout)
                );
                self.add(item, "fail", &what, d, None)
            }
            Some(r) => {
                let lat = Some(r.at.saturating_duration_since(sent));
                match job_outcome(&r, field) {
                    Ok(d) => self.add(item, "pass", &what, d, lat),
                    Err(d) => self.add(item, "fail", &what, d, lat),
                }
            }
        }
    }

    /// Waits (until the edge-started deadline) for an edge-started message; absent →
    /// "not exercised".
    pub(super) async fn edge_started(
        &mut self,
        item: &'static str,
        what: &str,
        f: impl Fn(&Seen) -> bool,
    ) -> bool {
        let deadline = self.edge_deadline;
        self.edge_started_until(item, what, deadline, f).await
    }

    pub(super) async fn edge_started_until(
        &mut self,
        item: &'static str,
        what: &str,
        deadline: tokio::time::Instant,
        f: impl Fn(&Seen) -> bool,
    ) -> bool {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = self.log.wait(left, f).await.is_some();
        if got {
            self.add(item, "pass", what, "seen".into(), None);
        } else if let Some(why) = self.log.stopped() {
            let d = format!("not seen before the plan was {why}");
            self.add(item, "not exercised", what, d, None);
        } else {
            let d = format!(
                "not sent by the edge within {} ms",
                self.s.edge_wait.as_millis()
            );
            self.add(item, "not exercised", what, d, None);
        }
        self.mark_edge_started(item);
        got
    }

    /// 6.1.1.2: waits for the edge's first message. EVENT_LINKUP: the edge links up
    /// now, and the edge-started deadline counts from it. Another message first: the
    /// edge was already online and its link-up is past.
    pub(super) async fn link_up(&mut self) {
        let what = "EVENT_LINKUP on device/request";
        let first = self.log.wait(self.s.edge_wait, |_| true).await;
        match first {
            Some(m) if m.msg_type == "EVENT_LINKUP" => {
                self.saw_linkup = true;
                self.edge_deadline = tokio::time::Instant::from_std(m.at) + self.s.edge_wait;
                self.add("6.1.1.2", "pass", what, "seen".into(), None);
            }
            Some(m) => {
                let d = format!(
                    "the edge sent {} on {}/{} with no EVENT_LINKUP before it",
                    m.msg_type, m.channel, m.role
                );
                self.add("6.1.1.2", "not exercised", what, d, None);
            }
            None => {
                let d = match self.log.stopped() {
                    Some(why) => format!("not seen before the plan was {why}"),
                    None => format!(
                        "not sent by the edge within {} ms",
                        self.s.edge_wait.as_millis()
                    ),
                };
                self.add("6.1.1.2", "not exercised", what, d, None);
            }
        }
        self.mark_edge_started("6.1.1.2");
    }

    /// When the edge answered commands but its link-up was not seen, it was online
    /// before the plan: the first edge-started step not seen of each item gets [`ONLINE_HINT`].
    pub(super) fn hint_already_online(&mut self) {
        let answered = self.log.count(|m| m.role == "reply") > 0;
        if self.saw_linkup || !answered {
            return;
        }
        // Once per item: on its first edge-started step not seen.
        for steps in self.steps.values_mut() {
            let unseen = steps
                .iter_mut()
                .find(|st| st.edge_started && st.status == "not exercised");
            if let Some(st) = unseen {
                st.detail = format!("{}; {ONLINE_HINT}", st.detail);
            }
        }
    }
}

/// The failure of a reply whose code is not one of `codes`; `None` when it is.
fn unexpected_code(r: &Seen, t: &str, codes: &[i64], expected: &str) -> Option<String> {
    match r.code() {
        Some(c) if codes.contains(&c) => None,
        Some(c) if REFUSALS.contains(&c) => {
            Some(format!("{t} refused: code {c}, {}", r.msg_text()))
        }
        Some(c) => Some(format!(
            "reply code {c}, expected {expected} ({})",
            r.msg_text()
        )),
        None => Some("reply without a code".into()),
    }
}

/// A job result's verdict: `field` ("result" or "code") 200 passes; anything else
/// fails with the edge's own description (`info` beside `result`, `msg` beside `code`).
fn job_outcome(r: &Seen, field: &str) -> Result<String, String> {
    let text = if field == "result" { "info" } else { "msg" };
    match r.param(field).and_then(Value::as_i64) {
        Some(200) => Ok(format!("{field} 200")),
        Some(v) => Err(format!(
            "job failed: {field} {v}, {}",
            quoted(text, r.param(text))
        )),
        None => Err(format!("job result without a numeric {field}")),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}
