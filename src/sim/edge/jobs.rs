//! What the edge holds (containers and their apps) and its jobs: each advances with
//! time after its `policy` delay, downloads its package when it names a real URL,
//! and, when done, changes the state and reports its result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sim::package::{self, FileRef};
use crate::sim::{next_mid, request, topic};

use super::{Edge, Fault};

/// How long the reference edge gives one package download.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct App {
    pub(super) version: String,
    pub(super) running: bool,
    pub(super) enabled: bool,
}

#[derive(Debug, Default)]
pub(super) struct Container {
    pub(super) running: bool,
    pub(super) apps: BTreeMap<String, App>,
}

#[derive(Debug)]
pub(super) enum JobKind {
    SysUpgrade {
        version: String,
    },
    ConInstall {
        container: String,
        app: Option<(String, String)>,
    },
    AppInstall {
        container: String,
        app: String,
        version: String,
        enable: bool,
    },
    AppUpgrade {
        container: String,
        version: String,
    },
}

/// The download of a job's package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fetch {
    /// Nothing to download (no file, or a placeholder URL).
    None,
    Pending,
    Done(Result<(), String>),
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) kind: JobKind,
    pub(super) fetch: Fetch,
    /// Work starts here (acceptance plus the policy delay).
    pub(super) start: Instant,
    pub(super) time: Duration,
    pub(super) done: bool,
}

impl Job {
    pub(super) fn end(&self) -> Instant {
        self.start + self.time
    }

    /// Its time is over and its download (if any) has ended.
    pub(super) fn due(&self, now: Instant) -> bool {
        !self.done && self.fetch != Fetch::Pending && self.end() <= now
    }

    /// (progress %, state "1".."5") as table 8 defines them.
    pub(super) fn status(&self, now: Instant) -> (u64, &'static str) {
        if now < self.start {
            return (0, "1");
        }
        let f = ((now - self.start).as_secs_f64() / self.time.as_secs_f64().max(1e-3)).min(1.0);
        let p = (f * 100.0).floor() as u64;
        if self.fetch == Fetch::Pending {
            return (p.min(39), "2");
        }
        let state = match f {
            f if f >= 1.0 => "5",
            f if f >= 0.5 => "4",
            f if f >= 0.4 => "3",
            _ => "2",
        };
        (p, state)
    }
}

impl Edge {
    /// Starts downloading `file` when it names a real http:// URL, from the job's start.
    pub(super) fn start_fetch(&self, job: u64, file: Option<&Value>, start: Instant) -> Fetch {
        let Some(f) = file
            .and_then(FileRef::from_json)
            .filter(FileRef::downloadable)
        else {
            return Fetch::None;
        };
        let tx = self.fetched.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let outcome = package::download(&f, DOWNLOAD_LIMIT).await;
            let _ = tx.send((job, outcome));
        });
        Fetch::Pending
    }

    /// A download ended: record it, and finish the job if its time is over too.
    pub(super) async fn on_fetched(&mut self, job: u64, outcome: Result<u64, String>) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == job && !j.done) {
            j.fetch = Fetch::Done(outcome.map(|_| ()));
        }
        self.on_timers().await;
    }

    /// The result of a job whose download failed: (channel, param, publish).
    fn failed_job(&self, i: usize, why: &str) -> (&'static str, Value, bool) {
        let j = &self.jobs[i];
        let why: String = why.chars().take(256).collect();
        match &j.kind {
            JobKind::SysUpgrade { .. } => (
                "device",
                json!({"jobId": j.id, "result": 400, "info": why}),
                true,
            ),
            JobKind::AppUpgrade { .. } => (
                "app",
                json!({"jobId": j.id, "result": 400, "info": why}),
                true,
            ),
            JobKind::AppInstall { .. } => (
                "app",
                json!({"jobId": j.id, "code": 400, "msg": why}),
                !self.has(Fault::NoJobResult),
            ),
            JobKind::ConInstall { .. } => (
                "container",
                json!({"jobId": j.id, "code": 400, "msg": why}),
                true,
            ),
        }
    }

    /// Applies a finished job to the state and reports its result.
    pub(super) async fn finish_job(&mut self, i: usize) {
        let j = &self.jobs[i];
        let id = j.id;
        let failed = match &j.fetch {
            Fetch::Done(Err(why)) => Some(self.failed_job(i, why)),
            _ => None,
        };
        let (channel, param, publish) = if let Some(f) = failed {
            f
        } else {
            match &j.kind {
                JobKind::SysUpgrade { version } => (
                    "device",
                    json!({"jobId": id, "result": 200, "info": format!("upgraded to {version}")}),
                    true,
                ),
                JobKind::ConInstall { container, app } => {
                    let mut c = Container {
                        running: true,
                        ..Container::default()
                    };
                    if let Some((a, v)) = app {
                        c.apps.insert(
                            a.clone(),
                            App {
                                version: v.clone(),
                                running: true,
                                enabled: true,
                            },
                        );
                    }
                    let container = container.clone();
                    self.containers.insert(container.clone(), c);
                    (
                        "container",
                        json!({"jobId": id, "code": 200, "msg": format!("container {container} installed")}),
                        true,
                    )
                }
                JobKind::AppInstall {
                    container,
                    app,
                    version,
                    enable,
                } => {
                    let (container, app, version, enable) =
                        (container.clone(), app.clone(), version.clone(), *enable);
                    match self.containers.get_mut(&container) {
                        Some(c) => {
                            c.apps.insert(
                                app.clone(),
                                App {
                                    version,
                                    running: enable,
                                    enabled: enable,
                                },
                            );
                            (
                                "app",
                                json!({"jobId": id, "code": 200, "msg": format!("app {app} installed in {container}")}),
                                !self.has(Fault::NoJobResult),
                            )
                        }
                        None => (
                            "app",
                            json!({"jobId": id, "code": 404, "msg": format!("container {container} was removed")}),
                            !self.has(Fault::NoJobResult),
                        ),
                    }
                }
                JobKind::AppUpgrade { container, version } => {
                    let (container, version) = (container.clone(), version.clone());
                    match self.containers.get_mut(&container) {
                        Some(c) => {
                            for a in c.apps.values_mut() {
                                a.version = version.clone();
                            }
                            (
                                "app",
                                json!({"jobId": id, "result": 200, "info": format!("apps of {container} at {version}")}),
                                true,
                            )
                        }
                        None => (
                            "app",
                            json!({"jobId": id, "result": 404, "info": format!("container {container} was removed")}),
                            true,
                        ),
                    }
                }
            }
        };
        if !publish {
            return;
        }
        let dup = matches!(self.jobs[i].kind, JobKind::SysUpgrade { .. })
            && self.has(Fault::DuplicateResult);
        let t = topic(&self.id, channel, "data");
        for _ in 0..if dup { 2 } else { 1 } {
            let v = request(Some(next_mid()), "REP_JOB_RESULT", Some(param.clone()));
            self.send(&t, &v).await;
        }
    }
}
