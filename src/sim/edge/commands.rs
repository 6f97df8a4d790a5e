//! The platform's commands answered: each checked (400 for a field missing or of
//! the wrong type, 404 for no such job, container or app), applied to the state or
//! started as a job, and its reply sent, with the faults applied.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sim::{reply, topic, Incoming};

use super::jobs::{Fetch, Job, JobKind};
use super::{Edge, Fault};

fn missing(field: &str) -> String {
    format!("param.{field} is missing or of the wrong type")
}

impl Edge {
    pub(super) async fn on_message(&mut self, m: Incoming) {
        let Some(t) = crate::protocol::parse_topic(&m.topic) else {
            return;
        };
        let Ok(Value::Object(env)) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        let Some(mid) = env.get("mid").and_then(Value::as_u64) else {
            return;
        };
        let msg_type = env
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let empty = json!({});
        let param = env.get("param").unwrap_or(&empty).clone();
        match t.role.as_str() {
            "response" => self.on_response(mid, &param, &env).await,
            "command" => {
                let (code, msg, out) = match crate::sim::rejection(&m.topic, &m.payload) {
                    Some(why) => (400, Some(why), None),
                    None => self.command(&t.channel, &msg_type, &param),
                };
                let mut msg = msg;
                let mut reply_type = msg_type.clone();
                let mut reply_mid = mid;
                let mut code = code;
                let mut out = out;
                match msg_type.as_str() {
                    "CMD_SYS_UPGRADE" if self.has(Fault::WrongCode) && code == 202 => code = 200,
                    "CMD_SYS_STATUS" if self.has(Fault::MissingField) => {
                        if let Some(o) = out.as_mut().and_then(Value::as_object_mut) {
                            o.remove("tempValue");
                        }
                    }
                    "CMD_INFO_QUERY" if self.has(Fault::WrongMid) => {
                        reply_mid = mid + 1_000_000_000
                    }
                    "CMD_CON_START" if self.has(Fault::WrongType) => {
                        reply_type = "CMD_CON_STARTED".into()
                    }
                    "CMD_APP_STOP" if self.has(Fault::ErrorToValid) && code == 200 => {
                        code = 404;
                        out = None;
                        msg = Some("app not found".into());
                    }
                    _ => {}
                }
                let v = reply(reply_mid, &reply_type, code, msg.as_deref(), out);
                self.send(&topic(&self.id, &t.channel, "reply"), &v).await;
                // A container installed at once still reports its job.
                if msg_type == "CMD_CON_INSTALL" && code == 200 {
                    let job = param.get("jobId").and_then(Value::as_u64);
                    if let Some(i) = self.jobs.iter().position(|j| !j.done && Some(j.id) == job) {
                        self.jobs[i].done = true;
                        self.finish_job(i).await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Answers one command: (code, msg, param).
    fn command(
        &mut self,
        channel: &str,
        t: &str,
        p: &Value,
    ) -> (i64, Option<String>, Option<Value>) {
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(String::from);
        let n = |k: &str| p.get(k).and_then(Value::as_u64);
        let obj = |k: &str| p.get(k).is_some_and(Value::is_object);
        let bad = |m: String| (400, Some(m), None);
        let nf = |m: String| (404, Some(m), None);
        let policy = p
            .get("policy")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .max(0.0);
        let start = Instant::now() + self.s.policy_second.mul_f64(policy);
        let job_time = self.s.job_time;
        match (channel, t) {
            ("device", "CMD_SYS_UPGRADE") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !matches!(n("upgradeType"), Some(0..=2)) {
                    return bad("param.upgradeType must be 0, 1 or 2".into());
                }
                if !obj("file") {
                    return bad(missing("file"));
                }
                if self.jobs.iter().any(|j| j.id == job) {
                    return bad(format!("job {job} exists"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::SysUpgrade { version },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            ("device", "CMD_STATUS_QUERY") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(j) = self.jobs.iter().find(|j| j.id == job) else {
                    return nf(format!("job {job} not found"));
                };
                let (progress, state) = j.status(Instant::now());
                (
                    200,
                    None,
                    Some(json!({"jobId": job, "progress": progress, "state": state})),
                )
            }
            ("device", "CMD_SYS_STATUS") => (200, None, Some(self.status_param())),
            ("device", "CMD_INFO_QUERY") => (200, None, Some(self.info_param())),
            ("container", "CMD_CON_INSTALL") => {
                let Some(name) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                if self.containers.contains_key(&name) {
                    return bad(format!("container {name} exists"));
                }
                let app = p.get("withAPP").filter(|v| v.is_object()).map(|w| {
                    let a = w
                        .get("app")
                        .and_then(Value::as_str)
                        .unwrap_or("app")
                        .to_string();
                    let v = w
                        .get("version")
                        .and_then(Value::as_str)
                        .unwrap_or("1.0")
                        .to_string();
                    (a, v)
                });
                let with_app = app.is_some();
                let time = if with_app { job_time } else { Duration::ZERO };
                let start = if with_app { start } else { Instant::now() };
                self.jobs.push(Job {
                    id: job,
                    fetch: Fetch::None,
                    kind: JobKind::ConInstall {
                        container: name,
                        app,
                    },
                    start,
                    time,
                    done: false,
                });
                if with_app {
                    (202, None, None)
                } else {
                    (200, None, None)
                }
            }
            ("container", "CMD_CON_START" | "CMD_CON_STOP" | "CMD_CON_REMOVE") => {
                let Some(name) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(c) = self.containers.get_mut(&name) else {
                    return nf(format!("container {name} not found"));
                };
                match t {
                    "CMD_CON_START" => c.running = true,
                    "CMD_CON_STOP" => {
                        c.running = false;
                        for a in c.apps.values_mut() {
                            a.running = false;
                        }
                    }
                    _ => {
                        self.containers.remove(&name);
                    }
                }
                (200, None, None)
            }
            ("app", "CMD_APP_INSTALL") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(app) = s("app") else {
                    return bad(missing("app"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !obj("file") {
                    return bad(missing("file"));
                }
                let enable = match s("enable").as_deref() {
                    Some("1") => true,
                    Some("0") => false,
                    _ => return bad("param.enable must be \"1\" or \"0\"".into()),
                };
                let Some(c) = self.containers.get(&container) else {
                    return nf(format!("container {container} not found"));
                };
                if c.apps.contains_key(&app) {
                    return bad(format!("app {app} exists in {container}"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::AppInstall {
                        container,
                        app,
                        version,
                        enable,
                    },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            (
                "app",
                "CMD_APP_START" | "CMD_APP_STOP" | "CMD_APP_REMOVE" | "CMD_APP_ENABLE"
                | "CMD_APP_UNENABLE",
            ) => {
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(app) = s("app") else {
                    return bad(missing("app"));
                };
                let Some(c) = self.containers.get_mut(&container) else {
                    return nf(format!("container {container} not found"));
                };
                let Some(a) = c.apps.get_mut(&app) else {
                    return nf(format!("app {app} not found in {container}"));
                };
                match t {
                    "CMD_APP_START" => a.running = true,
                    "CMD_APP_STOP" => a.running = false,
                    "CMD_APP_ENABLE" => a.enabled = true,
                    "CMD_APP_UNENABLE" => a.enabled = false,
                    _ => {
                        c.apps.remove(&app);
                    }
                }
                (200, None, None)
            }
            ("app", "CMD_APP_UPGRADE") => {
                let Some(job) = n("jobId") else {
                    return bad(missing("jobId"));
                };
                let Some(container) = s("container") else {
                    return bad(missing("container"));
                };
                let Some(version) = s("version") else {
                    return bad(missing("version"));
                };
                if !obj("file") {
                    return bad(missing("file"));
                }
                let Some(c) = self.containers.get(&container) else {
                    return nf(format!("container {container} not found"));
                };
                if c.apps.is_empty() {
                    return nf(format!("container {container} holds no app"));
                }
                let fetch = self.start_fetch(job, p.get("file"), start);
                self.jobs.push(Job {
                    id: job,
                    fetch,
                    kind: JobKind::AppUpgrade { container, version },
                    start,
                    time: job_time,
                    done: false,
                });
                (202, None, None)
            }
            _ => bad(format!("{t} is not a command of the {channel} channel")),
        }
    }
}
