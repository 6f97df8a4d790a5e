//! Judging a replay against its recording, exchange by exchange, with noise rules in
//! the spirit of Keploy's: a noisy field must be present with the same JSON type, but
//! its value is not compared. Noise by default: `timestamp`, `mid`, and the measured
//! values of status reports (`cpuRate`, `memUsed`, `diskUsed`, `tempValue`,
//! `devDateTime`, `devStDateTime`, `devRunTime`, `progress`, `state`); the user adds
//! field names (`--noise NAME`, matched at any depth) or dotted paths (`param.info`).
//!
//! Rule findings are not judged here: the live session goes through the one
//! [`crate::pipeline::Analyzer`], and its findings are compared by rule id with the
//! recording's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::source::Recorded;
use crate::protocol::Class;

/// Fields whose values are not compared.
pub const DEFAULT_NOISE: &[&str] = &[
    "timestamp",
    "mid",
    "cpuRate",
    "memUsed",
    "diskUsed",
    "tempValue",
    "devDateTime",
    "devStDateTime",
    "devRunTime",
    "progress",
    "state",
];

#[derive(Debug, Clone)]
pub struct Noise {
    names: Vec<String>,
}

impl Noise {
    pub fn new(extra: &[String]) -> Noise {
        let mut names: Vec<String> = DEFAULT_NOISE.iter().map(|s| s.to_string()).collect();
        names.extend(extra.iter().cloned());
        Noise { names }
    }

    fn is_noise(&self, path: &str, key: &str) -> bool {
        self.names.iter().any(|n| n == key || n == path)
    }

    /// The comparable form of a value: noisy fields become `"<type>"`.
    pub fn normalize(&self, v: &Value) -> Value {
        self.walk(v, "")
    }

    fn walk(&self, v: &Value, path: &str) -> Value {
        match v {
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, x) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let nv = if self.is_noise(&p, k) {
                        Value::from(format!("<{}>", crate::protocol::json_type_name(x)))
                    } else {
                        self.walk(x, &p)
                    };
                    out.insert(k.clone(), nv);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.walk(x, path)).collect()),
            other => other.clone(),
        }
    }
}

/// The differences between an expectation's value and this run's, one line per
/// path: "expected …, live …" (the expectation may hold other values than the
/// recording).
pub fn diff_expected(path: &str, expected: &Value, live: &Value, out: &mut Vec<String>) {
    diff_labelled(
        path,
        expected,
        live,
        &|a, b| a == b,
        ("expected", "live"),
        out,
    )
}

/// The differences between a recorded value and a live one, leaf values compared
/// by `same`: one line per path ("reply.code: recorded 200, live 404").
fn diff_values(
    path: &str,
    recorded: &Value,
    live: &Value,
    same: &dyn Fn(&Value, &Value) -> bool,
    out: &mut Vec<String>,
) {
    diff_labelled(path, recorded, live, same, ("recorded", "live"), out)
}

fn diff_labelled(
    path: &str,
    before: &Value,
    after: &Value,
    same: &dyn Fn(&Value, &Value) -> bool,
    (was, now): (&str, &str),
    out: &mut Vec<String>,
) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, x) in a {
                let p = join(path, k);
                match b.get(k) {
                    Some(y) => diff_labelled(&p, x, y, same, (was, now), out),
                    None => out.push(format!("{p}: missing ({was} {})", short(x))),
                }
            }
            for (k, y) in b {
                if !a.contains_key(k) {
                    out.push(format!("{}: extra ({now} {})", join(path, k), short(y)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_labelled(&format!("{path}[{i}]"), x, y, same, (was, now), out);
            }
        }
        (x, y) if same(x, y) => {}
        (x, y) => out.push(format!("{path}: {was} {}, {now} {}", short(x), short(y))),
    }
}

/// Leaf values equal once the edge ids are mapped: the live answer comes back in the
/// recording's form (its live edge id replaced by the recorded one), which also
/// rewrites a value that merely equals the live id (a device model "M1" when the
/// live edge is M1). Two strings are the same when they are in the live form too.
pub fn same_across_edges<'a>(
    recorded_edge: &'a str,
    live_edge: &'a str,
) -> impl Fn(&Value, &Value) -> bool + 'a {
    move |a, b| match (a, b) {
        (Value::String(x), Value::String(y)) => {
            x == y
                || crate::replay::rewrite::swap_token(x, recorded_edge, live_edge)
                    == crate::replay::rewrite::swap_token(y, recorded_edge, live_edge)
        }
        _ => a == b,
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let t: String = s.chars().take(57).collect();
        format!("{t}...")
    } else {
        s
    }
}

/// What came back for one request: the reply and, for a job, its result; normalized.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    /// For a request of the counterpart: the request itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub job_result: Option<Value>,
    /// More than one reply or job result came.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub extra: Vec<Value>,
}

/// One request of the recording with its recorded answer, and (after the run) the live one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub index: usize,
    /// "platform" or "edge": who sent the request.
    pub from: String,
    pub request: String,
    /// The topic of the request: the recorded one, then (in a replay's outcome) the
    /// live one, with the live edge id.
    pub topic: String,
    pub recorded: Answer,
    pub live: Answer,
    pub diffs: Vec<String>,
    /// Why the exchange was not exercised (neither passed nor failed): a request the
    /// edge sends by itself, sent before the replayer joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Answers that came after the replay had stopped waiting for them
    /// (--timeout-ms): a difference, whether or not the replay still ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<String>,
}

/// Recorded exchanges: each request with the first reply of the same mid on the
/// matching topic, and for a job (a `jobId` in a request that is not a status query)
/// the first REP_JOB_RESULT of that job.
pub fn recorded_exchanges(
    msgs: &[Recorded],
    us: crate::protocol::Actor,
    noise: &Noise,
) -> Vec<(usize, Exchange)> {
    let mut out = vec![];
    for (i, m) in msgs.iter().enumerate() {
        if m.class() != Class::Request {
            continue;
        }
        let Some(t) = m.msg_type() else { continue };
        let reply_role = crate::protocol::reply_role(&m.topic.role);
        let reply = m.mid().and_then(|mid| {
            msgs[i + 1..].iter().find(|r| {
                r.class() == Class::Reply
                    && r.mid() == Some(mid)
                    && r.topic.channel == m.topic.channel
                    && Some(r.topic.role.as_str()) == reply_role
            })
        });
        let job = match (m.job_id(), t) {
            (Some(_), "CMD_STATUS_QUERY") | (None, _) => None,
            (Some(j), _) => msgs[i + 1..]
                .iter()
                .find(|r| r.msg_type() == Some("REP_JOB_RESULT") && r.job_id() == Some(j)),
        };
        let norm = |r: &Recorded| {
            r.json
                .as_ref()
                .map(|j| noise.normalize(&Value::Object(j.clone())))
        };
        // A request of the counterpart: its request is compared; the answer is ours.
        let theirs = m.publisher() != us;
        out.push((
            i,
            Exchange {
                index: out.len(),
                from: format!("{:?}", m.publisher()).to_lowercase(),
                request: t.to_string(),
                topic: m.topic_name.clone(),
                recorded: Answer {
                    request: if theirs { norm(m) } else { None },
                    reply: if theirs { None } else { reply.and_then(norm) },
                    job_result: if theirs { None } else { job.and_then(norm) },
                    extra: vec![],
                },
                live: Answer::default(),
                diffs: vec![],
                skipped: None,
                late: vec![],
            },
        ));
    }
    out
}

/// Fills `diffs` from the recorded and live answers, leaf values compared by `same`
/// (see [`same_across_edges`]). A skipped exchange gets no differences: it was not
/// exercised.
pub fn judge_exchange(x: &mut Exchange, same: &dyn Fn(&Value, &Value) -> bool) {
    let diff =
        |p: &str, r: &Value, l: &Value, out: &mut Vec<String>| diff_values(p, r, l, same, out);
    if x.skipped.is_some() {
        x.diffs.clear();
        return;
    }
    let mut d = vec![];
    if let Some(r) = &x.recorded.request {
        match &x.live.request {
            None => d.push("missing request of the counterpart".to_string()),
            Some(l) => diff("request", r, l, &mut d),
        }
    }
    match (&x.recorded.reply, &x.live.reply) {
        (Some(_), None) => d.push("missing reply".to_string()),
        (None, Some(l)) => d.push(format!("extra reply (live {})", short(l))),
        (Some(r), Some(l)) => {
            let code = |v: &Value| v.get("code").cloned();
            if code(r) != code(l) {
                d.push(format!(
                    "reply code: recorded {}, live {}",
                    code(r).map_or("none".into(), |c| c.to_string()),
                    code(l).map_or("none".into(), |c| c.to_string())
                ));
            }
            let mut rest = vec![];
            diff("reply", r, l, &mut rest);
            d.extend(rest.into_iter().filter(|s| !s.starts_with("reply.code:")));
        }
        (None, None) => {}
    }
    match (&x.recorded.job_result, &x.live.job_result) {
        (Some(_), None) => d.push("missing job result".to_string()),
        (None, Some(l)) => d.push(format!("extra job result (live {})", short(l))),
        (Some(r), Some(l)) => diff("job_result", r, l, &mut d),
        (None, None) => {}
    }
    for e in &x.live.extra {
        d.push(format!("extra answer (live {})", short(e)));
    }
    d.extend(x.late.iter().cloned());
    x.diffs = d;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `mid` is noise everywhere: in the reply, in the job result, and nested.
    #[test]
    fn a_divergence_from_an_expectation_says_expected_not_recorded() {
        let mut d = vec![];
        diff_expected("live", &json!({"code": 404}), &json!({"code": 200}), &mut d);
        assert_eq!(d, ["live.code: expected 404, live 200"]);
    }

    #[test]
    fn a_late_answer_is_a_difference_even_when_it_matches() {
        let mut x = Exchange {
            index: 0,
            from: "platform".into(),
            request: "CMD_SYS_STATUS".into(),
            topic: "/v1/E1/device/command".into(),
            recorded: Answer {
                reply: Some(json!({"code": 200})),
                ..Answer::default()
            },
            live: Answer {
                reply: Some(json!({"code": 200})),
                ..Answer::default()
            },
            diffs: vec![],
            skipped: None,
            late: vec![],
        };
        judge_exchange(&mut x, &|a, b| a == b);
        assert!(x.diffs.is_empty(), "{:?}", x.diffs);
        x.late.push(
            "late reply: it came after the replay stopped waiting (2000 ms, --timeout-ms)".into(),
        );
        judge_exchange(&mut x, &|a, b| a == b);
        assert_eq!(x.diffs.len(), 1, "{:?}", x.diffs);
        assert!(x.diffs[0].starts_with("late reply"));
    }

    #[test]
    fn a_value_equal_to_the_live_edge_id_is_no_difference() {
        // Live edge M1, recorded GOLD1: the live answer comes back with "M1" read as
        // the edge id everywhere, also in a model named "M1".
        let same = same_across_edges("GOLD1", "M1");
        let recorded = serde_json::json!({"model": "M1", "deviceId": "GOLD1-d1"});
        let live_back = serde_json::json!({"model": "GOLD1", "deviceId": "GOLD1-d1"});
        let mut d = vec![];
        diff_values("", &recorded, &live_back, &same, &mut d);
        assert!(d.is_empty(), "{d:?}");
        // A real difference stays one.
        let live_back = serde_json::json!({"model": "M2", "deviceId": "GOLD1-d2"});
        diff_values("", &recorded, &live_back, &same, &mut d);
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn mid_is_noise_in_replies_and_job_results() {
        let n = Noise::new(&[]);
        let answer = |mid: u64, nested: u64| Answer {
            request: None,
            reply: Some(n.normalize(&json!({"mid": mid, "code": 202, "type": "CMD_APP_INSTALL"}))),
            job_result: Some(
                n.normalize(&json!({"mid": mid + 1, "type": "REP_JOB_RESULT",
                "param": {"jobId": 7, "result": {"mid": nested, "code": 200}}})),
            ),
            extra: vec![],
        };
        let mut x = Exchange {
            index: 0,
            from: "platform".into(),
            request: "CMD_APP_INSTALL".into(),
            topic: "/v1/E/app/command".into(),
            recorded: answer(1, 5),
            live: answer(1_000_000_000_020_000, 9),
            diffs: vec![],
            skipped: None,
            late: vec![],
        };
        judge_exchange(&mut x, &|a, b| a == b);
        assert!(x.diffs.is_empty(), "{:?}", x.diffs);
    }

    #[test]
    fn noise_keeps_presence_and_type_but_not_value() {
        let n = Noise::new(&["info".into()]);
        let a = n.normalize(&json!({"mid": 1, "code": 200, "param": {"cpuRate": 12.5, "tempValue": 40, "info": "x"}}));
        let b = n.normalize(&json!({"mid": 2, "code": 200, "param": {"cpuRate": 99.0, "tempValue": 41, "info": "y"}}));
        let mut d = vec![];
        diff_values("", &a, &b, &|x, y| x == y, &mut d);
        assert!(d.is_empty(), "{d:?}");
        let c =
            n.normalize(&json!({"mid": 2, "code": 200, "param": {"cpuRate": 99.0, "info": "y"}}));
        diff_values("", &a, &c, &|x, y| x == y, &mut d);
        assert_eq!(d, vec!["param.tempValue: missing (recorded \"<number>\")"]);
    }
}
