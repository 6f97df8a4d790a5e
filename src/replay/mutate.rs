//! Mutations: a named library and JSON files of custom ones. A mutation selects one
//! recorded message the replayer sends and applies a chain of [`Step`]s to it; each
//! step returns a [`Verdict`] (send the draft on, or drop it), folded with `try_fold`.
//! Random choices (which message, which field) come from a `StdRng` seeded with the
//! run's seed, which the report prints, so a run can be repeated exactly.
//!
//! Each mutation carries the judgement it expects of the counterpart ([`Expect`]) and,
//! where the standard makes the mutated message wrong, the rule the engine must raise
//! on it. After every mutation a valid command (the liveness probe) must still be
//! answered.
//!
//! A mutation file:
//!
//! ```json
//! {"mutations": [
//!   {"name": "no-version", "select": {"type": "CMD_SYS_UPGRADE", "index": 0},
//!    "steps": [{"op": "remove", "path": "param.version"}],
//!    "expect": "reject", "rule": "t6.CMD_SYS_UPGRADE"}
//! ]}
//! ```
//!
//! Steps: `set` {path, value} (a string value `"$cst-3600"` is the CST time an hour
//! ago), `remove` {path}, `replace-raw` {raw}, `topic` {topic} (`{edgeId}` is the live
//! edge id), `duplicate`, `reorder` (sent after the liveness probe), `delay` {ms},
//! `drop`. Select: `type`, `index` (the n-th match, from 0), `topic` (a substring).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::source::Recorded;
use super::ReplayError;
use crate::protocol::{Actor, Class};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    Set {
        path: String,
        value: Value,
    },
    Remove {
        path: String,
    },
    ReplaceRaw {
        raw: String,
    },
    Topic {
        topic: String,
    },
    Duplicate,
    Reorder,
    Delay {
        ms: u64,
    },
    Drop,
    /// On a reply to a job command: the job's result is sent before the reply.
    JobResultFirst,
}

/// What the counterpart must do with the mutated message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Answer with an error code or not act at all; never 200 or 202.
    Reject,
    /// The first copy is answered as usual; a repeat is not acted on again.
    ActOnce,
    /// Anything but a crash: only the liveness probe is judged.
    Survive,
}

impl Expect {
    pub fn describe(self) -> &'static str {
        match self {
            Expect::Reject => "error code or no action; never 200/202",
            Expect::ActOnce => {
                "first answered; the repeat not acted on (its job reports once; answering the repeat is no action)"
            }
            Expect::Survive => "still answers the liveness probe",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Select {
    #[serde(rename = "type", default)]
    pub msg_type: Option<String>,
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub topic: Option<String>,
    /// "request" (default: sent after the replay, then the liveness probe), "reply" or
    /// "report" (mutated in place during the replay).
    #[serde(default)]
    pub class: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    pub name: String,
    #[serde(default)]
    pub about: String,
    #[serde(default)]
    pub select: Select,
    pub steps: Vec<Step>,
    pub expect: Expect,
    /// The rule the engine must raise on the mutated message.
    #[serde(default)]
    pub rule: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MutationFile {
    mutations: Vec<Mutation>,
}

/// A named mutation of the library.
pub struct Named {
    pub name: &'static str,
    pub about: &'static str,
    /// The role of the replayer it applies to ("platform", "edge" or "both").
    pub roles: &'static str,
    pub expect: Expect,
}

pub const LIBRARY: &[Named] = &[
    Named {
        name: "drop-field",
        about: "remove a required param field of one of our requests (seeded choice)",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "wrong-type",
        about:
            "a required param field of one of our requests with another JSON type (seeded choice)",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "out-of-range",
        about: "CMD_SYS_UPGRADE upgradeType 9 (0..2 allowed)",
        roles: "platform",
        expect: Expect::Reject,
    },
    Named {
        name: "unknown-enum",
        about: "CMD_APP_INSTALL enable \"7\" (\"1\"/\"0\" allowed)",
        roles: "platform",
        expect: Expect::Reject,
    },
    Named {
        name: "invalid-json",
        about: "the payload cut in the middle",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "long-msg",
        about: "a reply of ours with a msg of 300 characters (256 allowed)",
        roles: "both",
        expect: Expect::Survive,
    },
    Named {
        name: "unknown-type",
        about: "type CMD_EDGETAP_UNKNOWN",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "lower-case-type",
        about: "the type in lower case",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "other-edge-id",
        about: "the topic of another edgeId",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "expired",
        about: "timestamp an hour ago with expire 60 s",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "duplicate-mid",
        about: "a request (a job command when there is one) sent twice with one mid",
        roles: "both",
        expect: Expect::ActOnce,
    },
    Named {
        name: "late",
        about: "expire 1 s, held back 2 s before sending (past its deadline)",
        roles: "both",
        expect: Expect::Reject,
    },
    Named {
        name: "missing-reply",
        about: "our reply to the counterpart's last request not sent",
        roles: "both",
        expect: Expect::Survive,
    },
    Named {
        name: "job-result-before-reply",
        about: "our job result sent before our reply to the job command",
        roles: "edge",
        expect: Expect::Survive,
    },
];

/// Required param fields of requests, per the clause 6 tables.
fn required(t: &str) -> &'static [&'static str] {
    match t {
        "CMD_SYS_UPGRADE" => &["jobId", "version", "upgradeType", "file"],
        "CMD_STATUS_QUERY" => &["jobId"],
        "CMD_CON_INSTALL" => &["container", "jobId"],
        "CMD_CON_START" | "CMD_CON_STOP" | "CMD_CON_REMOVE" => &["container"],
        "CMD_APP_INSTALL" => &["jobId", "container", "version", "file", "enable", "app"],
        "CMD_APP_START" | "CMD_APP_STOP" | "CMD_APP_REMOVE" | "CMD_APP_ENABLE"
        | "CMD_APP_UNENABLE" => &["container", "app"],
        "CMD_APP_UPGRADE" => &["version", "container", "file", "jobId"],
        "EVENT_LINKUP" => &["dev", "cpu", "mem", "disk", "os", "links"],
        "CMD_TOPO_ADD" => &["deviceInfos"],
        "CMD_TOPO_DEL" => &["deviceIds"],
        "CMD_TOPO_UPDATE" => &["deviceStatuses"],
        _ => &[],
    }
}

/// Loads the mutations of a JSON file.
/// Whether the standard puts a job command's reply before its result (installs):
/// for upgrades the reply is optional (可以), so a result first is no finding and the
/// mutation would prove nothing. Read from the built-in type catalog.
fn reply_comes_first(msg_type: &str) -> bool {
    static RULES: std::sync::OnceLock<crate::rules::RuleSet> = std::sync::OnceLock::new();
    RULES
        .get_or_init(crate::rules::RuleSet::builtin)
        .types
        .get(msg_type)
        .and_then(|t| t.job.as_ref())
        .is_some_and(|j| !j.reply_optional)
}

pub fn load_file(path: &std::path::Path) -> Result<Vec<Mutation>, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Mutation(format!("{}: {e}", path.display())))?;
    let f: MutationFile = serde_json::from_str(&text)
        .map_err(|e| ReplayError::Mutation(format!("{}: {e}", path.display())))?;
    Ok(f.mutations)
}

/// The commands the replayer (as platform) sends, in order.
fn commands(msgs: &[Recorded], us: Actor) -> Vec<&Recorded> {
    msgs.iter()
        .filter(|m| m.publisher() == us && m.class() == Class::Request)
        .filter(|m| m.msg_type().is_some())
        .collect()
}

fn select_type(t: &str, i: usize) -> Select {
    Select {
        msg_type: Some(t.into()),
        index: Some(i),
        topic: None,
        class: None,
    }
}

/// Our first (or last) reply to a request of the counterpart that `want` accepts.
fn our_reply(
    msgs: &[Recorded],
    us: Actor,
    want: &dyn Fn(&Recorded) -> bool,
    last: bool,
) -> Option<Select> {
    let ours = |m: &&Recorded| m.publisher() == us && m.class() == Class::Reply;
    let replies: Vec<&Recorded> = msgs.iter().filter(ours).filter(|m| want(m)).collect();
    let r = if last {
        replies.last()
    } else {
        replies.first()
    }?;
    let t = r.msg_type()?;
    let nth = msgs
        .iter()
        .filter(ours)
        .filter(|m| m.msg_type() == Some(t))
        .position(|m| m.index == r.index)?;
    Some(Select {
        msg_type: Some(t.into()),
        index: Some(nth),
        topic: None,
        class: Some("reply".into()),
    })
}

/// Builds a named mutation for a recording; `Ok(None)` when the recording holds no
/// message it applies to.
pub fn named(
    name: &str,
    msgs: &[Recorded],
    us: Actor,
    rng: &mut StdRng,
) -> Result<Option<Mutation>, ReplayError> {
    let Some(n) = LIBRARY.iter().find(|n| n.name == name) else {
        let known: Vec<&str> = LIBRARY.iter().map(|n| n.name).collect();
        return Err(ReplayError::Mutation(format!(
            "unknown mutation {name:?} (and no such file); known: {}",
            known.join(", ")
        )));
    };
    let cmds = commands(msgs, us);
    let first_of = |t: &str| cmds.iter().any(|m| m.msg_type() == Some(t));
    // Any command without a job: its repeat or loss changes nothing lasting.
    let plain = cmds
        .iter()
        .find(|m| m.job_id().is_none())
        .or(cmds.first())
        .and_then(|m| m.msg_type().map(String::from));
    let mk = |select: Select, steps: Vec<Step>, rule: Option<&str>| Mutation {
        name: n.name.into(),
        about: n.about.into(),
        select,
        steps,
        expect: n.expect,
        rule: rule.map(String::from),
    };
    let m = match name {
        "drop-field" | "wrong-type" => {
            let with: Vec<&&Recorded> = cmds
                .iter()
                .filter(|m| !required(m.msg_type().unwrap_or("")).is_empty())
                .collect();
            let Some(target) = with.choose(rng) else {
                return Ok(None);
            };
            let t = target.msg_type().unwrap_or("").to_string();
            let nth = cmds
                .iter()
                .filter(|m| m.msg_type() == Some(&t))
                .position(|m| m.index == target.index)
                .unwrap_or(0);
            let field = *required(&t).choose(rng).expect("not empty");
            let path = format!("param.{field}");
            let step = if name == "drop-field" {
                Step::Remove { path }
            } else {
                let cur = target.param().and_then(|p| p.get(field)).cloned();
                Step::Set {
                    path,
                    value: other_type(cur.as_ref()),
                }
            };
            mk(select_type(&t, nth), vec![step], None)
        }
        "out-of-range" if first_of("CMD_SYS_UPGRADE") => mk(
            select_type("CMD_SYS_UPGRADE", 0),
            vec![Step::Set {
                path: "param.upgradeType".into(),
                value: Value::from(9),
            }],
            Some("t6.CMD_SYS_UPGRADE"),
        ),
        "unknown-enum" if first_of("CMD_APP_INSTALL") => mk(
            select_type("CMD_APP_INSTALL", 0),
            vec![Step::Set {
                path: "param.enable".into(),
                value: Value::from("7"),
            }],
            Some("t39.CMD_APP_INSTALL"),
        ),
        "out-of-range" | "unknown-enum" => return Ok(None),
        _ => {
            let Some(t) = plain else { return Ok(None) };
            let sel = select_type(&t, 0);
            match name {
                "invalid-json" => mk(
                    sel,
                    vec![Step::ReplaceRaw { raw: "$cut".into() }],
                    Some("payload.invalid_json"),
                ),
                "long-msg" => {
                    // A reply whose content nothing later depends on.
                    let skip = ["EVENT_LINKUP", "CMD_TOPO_ADD"];
                    let want = |m: &Recorded| !skip.contains(&m.msg_type().unwrap_or(""));
                    let Some(sel) = our_reply(msgs, us, &want, false) else {
                        return Ok(None);
                    };
                    let step = Step::Set {
                        path: "msg".into(),
                        value: Value::from("x".repeat(300)),
                    };
                    mk(sel, vec![step], Some("envelope.reply"))
                }
                "unknown-type" => mk(
                    sel,
                    vec![Step::Set {
                        path: "type".into(),
                        value: Value::from("CMD_EDGETAP_UNKNOWN"),
                    }],
                    Some("type.unknown"),
                ),
                "lower-case-type" => mk(
                    sel,
                    vec![Step::Set {
                        path: "type".into(),
                        value: Value::from(t.to_lowercase()),
                    }],
                    Some("naming.type"),
                ),
                "other-edge-id" => mk(
                    sel,
                    vec![Step::Topic {
                        topic: "{edgeId}-OTHER".into(),
                    }],
                    None,
                ),
                "expired" => mk(
                    sel,
                    vec![
                        Step::Set {
                            path: "timestamp".into(),
                            value: Value::from("$cst-3600"),
                        },
                        Step::Set {
                            path: "expire".into(),
                            value: Value::from(60),
                        },
                    ],
                    Some("message.expired"),
                ),
                "late" => mk(
                    sel,
                    vec![
                        Step::Set {
                            path: "expire".into(),
                            value: Value::from(1),
                        },
                        Step::Delay { ms: 2000 },
                    ],
                    Some("message.expired"),
                ),
                "duplicate-mid" => {
                    let job = cmds
                        .iter()
                        .find(|m| m.job_id().is_some() && m.msg_type() != Some("CMD_STATUS_QUERY"));
                    let sel = match job {
                        Some(j) => select_type(j.msg_type().unwrap_or(""), 0),
                        None => sel,
                    };
                    mk(sel, vec![Step::Duplicate], None)
                }
                "missing-reply" => {
                    let Some(sel) = our_reply(msgs, us, &|_| true, true) else {
                        return Ok(None);
                    };
                    mk(sel, vec![Step::Drop], Some("reply.pending"))
                }
                "job-result-before-reply" => {
                    let jobs: Vec<u64> = msgs
                        .iter()
                        .filter(|m| m.publisher() == us && m.msg_type() == Some("REP_JOB_RESULT"))
                        .filter_map(|m| m.job_id())
                        .collect();
                    let with_job = |r: &Recorded| {
                        msgs.iter().any(|q| {
                            q.publisher() != us
                                && q.class() == Class::Request
                                && q.mid() == r.mid()
                                && q.msg_type() != Some("CMD_STATUS_QUERY")
                                && q.msg_type().is_some_and(reply_comes_first)
                                && q.job_id().is_some_and(|j| jobs.contains(&j))
                        })
                    };
                    let Some(sel) = our_reply(msgs, us, &with_job, false) else {
                        return Ok(None);
                    };
                    mk(sel, vec![Step::JobResultFirst], Some("job.result_early"))
                }
                _ => return Ok(None),
            }
        }
    };
    Ok(Some(m))
}

fn other_type(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) => Value::from(n.to_string()),
        Some(Value::String(_)) => Value::from(12345),
        Some(Value::Bool(b)) => Value::from(b.to_string()),
        _ => Value::from("not-an-object"),
    }
}

/// The message a mutation works on: envelope (or raw bytes) and topic, plus how to
/// send it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub topic: String,
    pub json: Map<String, Value>,
    pub raw: Option<Vec<u8>>,
    pub copies: u32,
    pub delay_ms: u64,
    pub after_probe: bool,
}

impl Draft {
    pub fn payload(&self) -> Vec<u8> {
        self.raw
            .clone()
            .unwrap_or_else(|| serde_json::to_vec(&self.json).unwrap_or_default())
    }
}

pub enum Verdict {
    Send(Draft),
    Drop,
}

/// Applies the steps in order; `Drop` ends the chain.
pub fn apply(steps: &[Step], draft: Draft, live_edge: &str) -> Verdict {
    let r = steps
        .iter()
        .try_fold(draft, |d, s| match step(s, d, live_edge) {
            Verdict::Send(d) => Ok(d),
            Verdict::Drop => Err(()),
        });
    match r {
        Ok(d) => Verdict::Send(d),
        Err(()) => Verdict::Drop,
    }
}

fn step(s: &Step, mut d: Draft, live_edge: &str) -> Verdict {
    match s {
        Step::Set { path, value } => {
            let v = match value.as_str().and_then(|s| s.strip_prefix("$cst")) {
                Some(off) => Value::from(cst_offset(off.parse().unwrap_or(0))),
                None => value.clone(),
            };
            set_path(&mut d.json, path, Some(v));
        }
        Step::Remove { path } => set_path(&mut d.json, path, None),
        Step::ReplaceRaw { raw } => {
            d.raw = Some(if raw == "$cut" {
                let b = serde_json::to_vec(&d.json).unwrap_or_default();
                b[..b.len() / 2].to_vec()
            } else {
                raw.as_bytes().to_vec()
            });
        }
        Step::Topic { topic } => {
            let other = topic.replace("{edgeId}", live_edge);
            d.topic = match crate::protocol::parse_topic(&d.topic) {
                // A bare id: the same channel and role under another edge.
                Some(t) if !other.contains('/') => crate::sim::topic(&other, &t.channel, &t.role),
                _ => other,
            };
        }
        Step::Duplicate => d.copies += 1,
        Step::Reorder => d.after_probe = true,
        Step::Delay { ms } => d.delay_ms += ms,
        Step::Drop => return Verdict::Drop,
        // Carried out by the replayer, which knows the job's recorded result.
        Step::JobResultFirst => {}
    }
    Verdict::Send(d)
}

fn cst_offset(secs: i64) -> String {
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .with_timezone(&cst)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn set_path(m: &mut Map<String, Value>, path: &str, v: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = m;
    for p in parts {
        let next = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next.as_object_mut().expect("made an object");
    }
    match v {
        Some(v) => {
            cur.insert(last.to_string(), v);
        }
        None => {
            cur.remove(last);
        }
    }
}

/// The recorded message a selection picks among the replayer's commands.
pub fn pick<'a>(msgs: &'a [Recorded], s: &Select, role: Actor) -> Option<&'a Recorded> {
    let class = s.class.as_deref().unwrap_or("request");
    msgs.iter()
        .filter(|m| m.publisher() == role && m.class().as_str() == class)
        .filter(|m| {
            s.msg_type
                .as_deref()
                .is_none_or(|t| m.msg_type() == Some(t))
        })
        .filter(|m| s.topic.as_deref().is_none_or(|t| m.topic_name.contains(t)))
        .nth(s.index.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft() -> Draft {
        Draft {
            topic: "/v1/E1/device/command".into(),
            json: json!({"mid": 1, "type": "CMD_X", "param": {"a": 1}})
                .as_object()
                .unwrap()
                .clone(),
            raw: None,
            copies: 1,
            delay_ms: 0,
            after_probe: false,
        }
    }

    #[test]
    fn steps_fold_and_drop_ends_the_chain() {
        let steps = vec![
            Step::Remove {
                path: "param.a".into(),
            },
            Step::Set {
                path: "param.b.c".into(),
                value: json!(2),
            },
            Step::Topic {
                topic: "{edgeId}-OTHER".into(),
            },
            Step::Duplicate,
        ];
        let Verdict::Send(d) = apply(&steps, draft(), "L1") else {
            panic!()
        };
        assert_eq!(
            Value::Object(d.json.clone())["param"],
            json!({"b": {"c": 2}})
        );
        assert_eq!(d.topic, "/v1/L1-OTHER/device/command");
        assert_eq!(d.copies, 2);
        assert!(matches!(
            apply(&[Step::Drop, Step::Duplicate], draft(), "L1"),
            Verdict::Drop
        ));
    }

    #[test]
    fn mutation_file_is_strict() {
        let ok: MutationFile = serde_json::from_str(r#"{"mutations":[{"name":"x","select":{"type":"CMD_SYS_STATUS"},"steps":[{"op":"delay","ms":5},{"op":"replace-raw","raw":"{"}],"expect":"reject"}]}"#).unwrap();
        assert_eq!(ok.mutations[0].steps.len(), 2);
        assert!(serde_json::from_str::<MutationFile>(
            r#"{"mutations":[{"name":"x","steps":[{"op":"sett"}],"expect":"reject"}]}"#
        )
        .is_err());
    }
}
