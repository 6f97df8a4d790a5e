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
//!   As edge, the live platform's job ids are learnt from its commands.
//! - `deviceId`s the live platform assigns in its CMD_TOPO_ADD reply replace the
//!   recorded ones in every later message (matched by `nodeId`), and map back in what
//!   comes in.

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
    /// Recorded deviceId → the live one, in the recording's terms (edge id swapped
    /// back): assigned by the live platform.
    devices: HashMap<String, String>,
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
            devices: HashMap::new(),
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
        swap_values(&mut v, &self.devices);
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
        if !self.devices.is_empty() {
            let back: HashMap<String, String> = self
                .devices
                .iter()
                .map(|(r, l)| (l.clone(), r.clone()))
                .collect();
            swap_values(&mut v, &back);
        }
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

    /// The live platform started the recorded job `recorded` (as edge: a command
    /// of it came), so its result may be sent.
    pub fn knows_job(&self, recorded: u64) -> bool {
        self.jobs.contains_key(&recorded)
    }

    /// Learns the deviceIds the live platform assigned: `recorded` and `live` are the
    /// recorded and live replies to CMD_TOPO_ADD (`param.data[]` with `nodeId` and
    /// `deviceId`); entries pair by `nodeId`, else by position.
    pub fn learn_devices(&mut self, recorded: &Map<String, Value>, live: &Map<String, Value>) {
        let data = |m: &Map<String, Value>| -> Vec<Value> {
            m.get("param")
                .and_then(|p| p.get("data"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        // The live reply in the recording's terms (edge id swapped back).
        let live = self.incoming(live);
        let (rec, live) = (data(recorded), data(&live));
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        for (n, r) in rec.iter().enumerate() {
            let Some(rec_dev) = text(r, "deviceId") else {
                continue;
            };
            let node = text(r, "nodeId");
            let l = match &node {
                Some(node) => live
                    .iter()
                    .find(|l| text(l, "nodeId").as_ref() == Some(node)),
                None => live.get(n),
            };
            if let Some(live_dev) = l.and_then(|l| text(l, "deviceId")) {
                if live_dev != rec_dev && !live_dev.is_empty() {
                    self.devices.insert(rec_dev, live_dev);
                }
            }
        }
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

/// Replaces every string equal to a key of `map` by its value.
fn swap_values(v: &mut Value, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| swap_values(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| swap_values(x, map)),
        _ => {}
    }
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
    fn device_ids_the_live_platform_assigns_replace_the_recorded_ones() {
        let mut r = Rewriter::new("E1", "L1", true);
        let rec = json!({"type": "CMD_TOPO_ADD", "code": 200, "param": {"data": [
            {"nodeId": "n1", "deviceId": "E1.dev-100", "code": 200},
            {"nodeId": "n2", "deviceId": "dev-200", "code": 200}]}});
        // The live platform answers in another order, with ids of its own; one of
        // them holds the live edge id.
        let live = json!({"type": "CMD_TOPO_ADD", "code": 200, "param": {"data": [
            {"nodeId": "n2", "deviceId": "L1-uuid-9", "code": 200},
            {"nodeId": "n1", "deviceId": "x-77", "code": 200}]}});
        r.learn_devices(rec.as_object().unwrap(), live.as_object().unwrap());
        let update = json!({"type": "CMD_TOPO_UPDATE", "param": {"deviceStatuses": [
            {"deviceId": "E1.dev-100", "status": "online"}, {"deviceId": "dev-200"}]}});
        let out = r.outgoing(update.as_object().unwrap(), Some(1));
        assert_eq!(out["param"]["deviceStatuses"][0]["deviceId"], json!("x-77"));
        assert_eq!(
            out["param"]["deviceStatuses"][1]["deviceId"],
            json!("L1-uuid-9")
        );
        let back = r.incoming(&out);
        assert_eq!(
            back["param"]["deviceStatuses"][0]["deviceId"],
            json!("E1.dev-100")
        );
        assert_eq!(
            back["param"]["deviceStatuses"][1]["deviceId"],
            json!("dev-200")
        );
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
