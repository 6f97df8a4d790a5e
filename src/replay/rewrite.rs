//! Keeping a replayed session consistent: what must be fresh is rewritten the same way
//! everywhere, and what comes back is mapped into the recording's terms so that it can
//! be compared with the recorded answer.
//!
//! - `mid`: every request sent gets a fresh mid, from a base drawn anew for each run
//!   ([`Rewriter::next_mid`]); a reply sent takes the mid of the live request it answers.
//!   A fresh mid quoted in a string of what comes back ("mid 2000000000123 done")
//!   reads as the recorded one, as a job id does.
//! - `timestamp`: now, in CST.
//! - the edge id: the recorded one is replaced by the live one in topics and in every
//!   string field where it stands as a whole token (`E1`, `E1.node-1`, `SN-E1`), and
//!   back again in what the counterpart sends.
//! - `jobId` (when asked): each recorded job id maps to one fresh id, the same in the
//!   command that starts the job and in every query of it; a job result's id maps back,
//!   and so does the live id where it stands as a token in a string ("job 1000123001
//!   exists" reads "job 42 exists"). The fresh ids start from a base drawn anew for
//!   each run: a second run against a device that was not restarted never reuses a job
//!   id of the first (which a device refuses, 400 "job exists"). What comes back is so
//!   compared as "the id this run assigned to the recorded job", never by its value.
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
    /// The last mid sent; the next is one more.
    last_mid: u64,
    /// The first fresh mid of this run is one more than this.
    mid_base: u64,
    /// A fresh mid this run sent → the recorded request's mid.
    mids: HashMap<u64, u64>,
    /// Recorded deviceId → the live one, in the recording's terms (edge id swapped
    /// back): assigned by the live platform.
    devices: HashMap<String, String>,
}

impl Rewriter {
    pub fn new(recorded_edge: &str, live_edge: &str, fresh_jobs: bool) -> Rewriter {
        let mid_base = MID_BASE + rand::random::<u64>() % RUN_SLOTS * MID_SPAN;
        Rewriter {
            recorded_edge: recorded_edge.into(),
            live_edge: live_edge.into(),
            fresh_jobs,
            jobs: HashMap::new(),
            next_job: JOB_BASE + rand::random::<u64>() % RUN_SLOTS * JOB_SPAN,
            last_mid: mid_base,
            mid_base,
            mids: HashMap::new(),
            devices: HashMap::new(),
        }
    }

    /// A fresh mid of this run: unique within it and, as its base is drawn for each
    /// run, not one a previous run sent (a device may keep the mids it answered).
    pub fn next_mid(&mut self) -> u64 {
        self.last_mid += 1;
        self.last_mid
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
            // Only a mid of this run's own (not a live request's that a reply
            // answers, which may be any small number).
            let recorded_mid = recorded
                .get("mid")
                .and_then(crate::protocol::as_u64_lenient);
            if let (Some(rec), true) = (recorded_mid, self.is_fresh_mid(mid)) {
                self.mids.insert(mid, rec);
            }
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

    fn is_fresh_mid(&self, mid: u64) -> bool {
        mid > self.mid_base && mid <= self.last_mid
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
        for (rec, l) in self.jobs.iter().filter(|(r, l)| r != l) {
            swap_strings(&mut v, &l.to_string(), &rec.to_string());
        }
        swap_numbers(&mut v, &self.mids);
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

/// Fresh job ids of a run start at `JOB_BASE + k * JOB_SPAN`, k drawn from
/// `0..RUN_SLOTS`: below 2^31 (a device may keep a job id in 32 bits), away from the
/// sims' job numbers, and two runs share a base once in a million.
const JOB_BASE: u64 = 1_000_000_000;
const JOB_SPAN: u64 = 1_000;
const RUN_SLOTS: u64 = 1_000_000;
/// Mids of a run start at `MID_BASE + k * MID_SPAN`: wider than 32 bits as the sims'
/// (a device must take them), below 2^53 (exact in any JSON reader), away from the
/// sims' mids (from 1.00000000002e15).
const MID_BASE: u64 = 2_000_000_000_000_000;
const MID_SPAN: u64 = 1_000_000;

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

/// Replaces each run of digits standing as a whole token in a string (as
/// [`swap_token`] bounds one) whose number is a key of `map` by its value: one pass
/// per string whatever the size of the map.
fn swap_numbers(v: &mut Value, map: &HashMap<u64, u64>) {
    if map.is_empty() {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some(swapped) = swap_number_tokens(s, map) {
                *s = swapped;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| swap_numbers(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| swap_numbers(x, map)),
        _ => {}
    }
}

/// [`swap_numbers`] of one string: `None` when nothing is replaced.
fn swap_number_tokens(s: &str, map: &HashMap<u64, u64>) -> Option<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut copied = 0;
    let mut prev: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_ascii_digit() || prev.is_some_and(is_word) {
            prev = Some(c);
            continue;
        }
        let mut end = i + 1;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        let after = s[end..].chars().next();
        prev = s[..end].chars().last();
        if after.is_some_and(is_word) {
            continue;
        }
        let Some(to) = s[i..end].parse::<u64>().ok().and_then(|n| map.get(&n)) else {
            continue;
        };
        out.push_str(&s[copied..i]);
        out.push_str(&to.to_string());
        copied = end;
    }
    (copied > 0).then(|| out + &s[copied..])
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

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_fresh_mid_quoted_in_a_string_reads_as_the_recorded_one() {
        let mut r = Rewriter::new("E1", "E1", true);
        let mid = r.next_mid();
        let sent = r.outgoing(
            &obj(json!({"mid": 7, "type": "CMD_STATUS_QUERY"})),
            Some(mid),
        );
        assert_eq!(sent["mid"], json!(mid));
        // A reply answering a live request's own mid (any number) maps nothing.
        r.outgoing(&obj(json!({"mid": 3, "type": "CMD_X"})), Some(5));
        let back = r.incoming(&obj(json!({
            "mid": mid,
            "msg": format!("request {mid} done; {mid}x and x{mid} are not it, nor 5"),
            "param": {"ref": mid.to_string(), "list": [format!("({mid})")]}
        })));
        assert_eq!(
            back["msg"],
            json!(format!(
                "request 7 done; {mid}x and x{mid} are not it, nor 5"
            ))
        );
        assert_eq!(back["param"]["ref"], json!("7"));
        assert_eq!(back["param"]["list"][0], json!("(7)"));
        // The mid field itself is left to the answer's comparison.
        assert_eq!(back["mid"], json!(mid));
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

    #[test]
    fn each_run_draws_its_own_job_ids_and_mids_and_maps_them_back_in_strings() {
        let cmd = json!({"mid": 5, "type": "CMD_SYS_UPGRADE", "param": {"jobId": 42}});
        let (mut a, mut b) = (
            Rewriter::new("E1", "L1", true),
            Rewriter::new("E1", "L1", true),
        );
        let ja = a.outgoing(cmd.as_object().unwrap(), None)["param"]["jobId"].clone();
        let jb = b.outgoing(cmd.as_object().unwrap(), None)["param"]["jobId"].clone();
        // Two runs: two job ids (a device not restarted between them refuses a
        // job id it knows), and two mid ranges.
        assert_ne!(ja, jb);
        assert_ne!(a.next_mid(), b.next_mid());
        let m = a.next_mid();
        assert_eq!(a.next_mid(), m + 1);
        assert!(ja.as_u64().unwrap() < 1 << 31, "{ja}");
        // The device names the live id in a message: it reads as the recorded one.
        let live = json!({"type": "CMD_SYS_UPGRADE", "code": 400,
            "msg": format!("job {ja} exists"), "param": {"jobId": ja}});
        let back = a.incoming(live.as_object().unwrap());
        assert_eq!(back["msg"], json!("job 42 exists"));
        assert_eq!(back["param"]["jobId"], json!(42));
    }
}
