//! Keeping a replayed session consistent: what must be fresh is rewritten the same way
//! everywhere, and what comes back is mapped into the recording's terms so that it can
//! be compared with the recorded answer.
//!
//! - `mid`: every request sent gets a fresh mid; a reply sent takes the mid of the live
//!   request it answers.
//! - `timestamp`: now, in CST.
//! - the edge id: the recorded one is replaced by the live one in topics and in every
//!   string field where it stands as a whole token (`E1`, `E1.node-1`, `SN-E1`), and
//!   back again in what the counterpart sends.
//! - `jobId` (when asked): each recorded job id maps to one fresh id, the same in the
//!   command that starts the job and in every query of it; a job result's id maps back.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// The mappings of one replay.
#[derive(Debug, Clone)]
pub struct Rewriter {
    pub recorded_edge: String,
    pub live_edge: String,
    pub fresh_jobs: bool,
    /// Recorded jobId → live jobId.
    jobs: HashMap<u64, u64>,
    next_job: u64,
}

impl Rewriter {
    pub fn new(recorded_edge: &str, live_edge: &str, fresh_jobs: bool) -> Rewriter {
        Rewriter {
            recorded_edge: recorded_edge.into(),
            live_edge: live_edge.into(),
            fresh_jobs,
            jobs: HashMap::new(),
            // Away from the sims' job numbers, and different in every run.
            next_job: 7_000_000 + (crate::sim::next_mid() % 1_000) * 1_000,
        }
    }

    pub fn topic(&self, recorded: &str) -> String {
        swap_token(recorded, &self.recorded_edge, &self.live_edge)
    }

    /// The live form of a recorded envelope: fresh timestamp, `mid` as given, edge id
    /// and (when asked) job ids mapped.
    pub fn outgoing(
        &mut self,
        recorded: &Map<String, Value>,
        mid: Option<u64>,
    ) -> Map<String, Value> {
        let mut v = Value::Object(recorded.clone());
        swap_strings(&mut v, &self.recorded_edge, &self.live_edge);
        let Value::Object(mut m) = v else {
            unreachable!("an object stays an object")
        };
        if let Some(mid) = mid {
            m.insert("mid".into(), Value::from(mid));
        }
        if m.contains_key("timestamp") {
            m.insert("timestamp".into(), Value::from(crate::sim::cst_now()));
        }
        if let Some(p) = m.get_mut("param").and_then(Value::as_object_mut) {
            if let Some(j) = p.get("jobId").and_then(crate::protocol::as_u64_lenient) {
                let live = match self.jobs.get(&j) {
                    Some(l) => Some(*l),
                    None if self.fresh_jobs => Some(self.live_job(j)),
                    None => None,
                };
                if let Some(l) = live {
                    p.insert("jobId".into(), Value::from(l));
                }
            }
        }
        m
    }

    fn live_job(&mut self, recorded: u64) -> u64 {
        if let Some(j) = self.jobs.get(&recorded) {
            return *j;
        }
        self.next_job += 1;
        self.jobs.insert(recorded, self.next_job);
        self.next_job
    }

    /// The recording's form of a live envelope (edge id and job ids mapped back).
    pub fn incoming(&self, live: &Map<String, Value>) -> Map<String, Value> {
        let mut v = Value::Object(live.clone());
        swap_strings(&mut v, &self.live_edge, &self.recorded_edge);
        let Value::Object(mut m) = v else {
            unreachable!("an object stays an object")
        };
        if let Some(p) = m.get_mut("param").and_then(Value::as_object_mut) {
            if let Some(j) = p.get("jobId").and_then(crate::protocol::as_u64_lenient) {
                if let Some((rec, _)) = self.jobs.iter().find(|(_, l)| **l == j) {
                    p.insert("jobId".into(), Value::from(*rec));
                }
            }
        }
        m
    }

    /// The next message of the recorded job `recorded` starts a new live job (a
    /// mutation re-sends a command whose job already ran).
    pub fn renew_job(&mut self, recorded: u64) {
        if self.fresh_jobs {
            self.jobs.remove(&recorded);
        }
    }

    /// The counterpart chose `live` for the recorded job `recorded`.
    pub fn learn_job(&mut self, recorded: u64, live: u64) {
        self.jobs.insert(recorded, live);
    }

    /// A live job id in the recording's terms.
    pub fn recorded_job(&self, live: u64) -> u64 {
        self.jobs
            .iter()
            .find(|(_, l)| **l == live)
            .map(|(r, _)| *r)
            .unwrap_or(live)
    }
}

/// Replaces `from` by `to` where it stands as a whole token: bounded by the string's
/// ends or by characters that are not letters, digits, `_` or `-` continuing a name
/// (`E1` in `/v1/E1/device`, `E1.node-1`, `SN-E1`, but not in `E12`).
pub fn swap_token(s: &str, from: &str, to: &str) -> String {
    if from.is_empty() || from == to || !s.contains(from) {
        return s.to_string();
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(from) {
        let before = rest[..i]
            .chars()
            .last()
            .or(if i == 0 { prev } else { None });
        let after = rest[i + from.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_none_or(|c| !is_word(c)) && after.is_none_or(|c| !is_word(c)) {
            out.push_str(to);
        } else {
            out.push_str(from);
        }
        prev = from.chars().last();
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

fn swap_strings(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) => *s = swap_token(s, from, to),
        Value::Array(a) => a.iter_mut().for_each(|x| swap_strings(x, from, to)),
        Value::Object(o) => o.values_mut().for_each(|x| swap_strings(x, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edge_id_swaps_as_a_token_only() {
        assert_eq!(
            swap_token("/v1/E1/device/reply", "E1", "X9"),
            "/v1/X9/device/reply"
        );
        assert_eq!(swap_token("E1.node-1", "E1", "X9"), "X9.node-1");
        assert_eq!(swap_token("SN-E1", "E1", "X9"), "SN-X9");
        assert_eq!(swap_token("E12", "E1", "X9"), "E12");
        assert_eq!(swap_token("E1E1", "E1", "X9"), "E1E1");
    }

    #[test]
    fn job_ids_map_consistently_and_back() {
        let mut r = Rewriter::new("E1", "L1", true);
        let cmd =
            json!({"mid": 5, "timestamp": "x", "type": "CMD_SYS_UPGRADE", "param": {"jobId": 42}});
        let a = r.outgoing(cmd.as_object().unwrap(), Some(77));
        let q = json!({"mid": 6, "type": "CMD_STATUS_QUERY", "param": {"jobId": 42}});
        let b = r.outgoing(q.as_object().unwrap(), Some(78));
        assert_eq!(a["param"]["jobId"], b["param"]["jobId"]);
        assert_ne!(a["param"]["jobId"], json!(42));
        assert_eq!(a["mid"], json!(77));
        let back = r.incoming(&b);
        assert_eq!(back["param"]["jobId"], json!(42));
    }
}
