//! The commands of each detection item, in an order that builds the state each
//! needs (a container before its apps, an app before its control), then what the
//! edge starts itself, and one result per job.

use serde_json::{json, Value};

use super::receiver::Seen;
use super::Plan;

/// The jobs of a run: (item, channel, jobId).
type Jobs = Vec<(&'static str, &'static str, u64)>;

impl Plan {
    /// Every command-driven exchange of clause 6, in an order that builds the state
    /// each command needs (a container before its apps, an app before its control).
    pub(super) async fn run_commands(&mut self) -> Jobs {
        let mut jobs = vec![];
        self.monitoring().await;
        jobs.push(("6.1.2.2", "device", self.device_upgrade().await));
        jobs.extend(self.container_installs().await);
        self.command(
            "6.2.2.2",
            "container",
            "CMD_CON_START",
            json!({"container": "c1"}),
            &[200],
        )
        .await;
        jobs.push(("6.3.1.2", "app", self.app_install().await));
        self.app_control(&[
            "CMD_APP_STOP",
            "CMD_APP_START",
            "CMD_APP_UNENABLE",
            "CMD_APP_ENABLE",
        ])
        .await;
        jobs.push(("6.3.3.2", "app", self.app_upgrade().await));
        self.app_control(&["CMD_APP_REMOVE"]).await;
        self.command(
            "6.2.3.2",
            "container",
            "CMD_CON_STOP",
            json!({"container": "c1"}),
            &[200],
        )
        .await;
        for c in ["c1", "c2"] {
            self.command(
                "6.2.4.2",
                "container",
                "CMD_CON_REMOVE",
                json!({"container": c}),
                &[200],
            )
            .await;
        }
        jobs
    }

    /// 6.1.3.2: status and information queries, and the periodic report.
    async fn monitoring(&mut self) {
        self.command("6.1.3.2", "device", "CMD_SYS_STATUS", json!({}), &[200])
            .await;
        self.command("6.1.3.2", "device", "CMD_INFO_QUERY", json!({}), &[200])
            .await;
        self.edge_started("6.1.3.2", "REP_SYS_STATUS on device/data", |m| {
            m.msg_type == "REP_SYS_STATUS"
        })
        .await;
    }

    /// 6.1.2.2: the upgrade job, a status query while it runs, its result.
    async fn device_upgrade(&mut self) -> u64 {
        let job = self.next_job();
        let up = json!({"jobId": job, "policy": 0, "version": "2.0.1", "upgradeType": 0,
                        "file": self.file("edge-2.0.1.bin")});
        let r = self
            .command("6.1.2.2", "device", "CMD_SYS_UPGRADE", up, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        if accepted {
            self.status_query(job).await;
        }
        self.job_result("6.1.2.2", "device", job, "result", accepted)
            .await;
        job
    }

    async fn status_query(&mut self, job: u64) {
        let q = self
            .command(
                "6.1.2.2",
                "device",
                "CMD_STATUS_QUERY",
                json!({"jobId": job}),
                &[200],
            )
            .await;
        if let Some(q) = q {
            if q.param("jobId").and_then(Value::as_u64) != Some(job) {
                self.add(
                    "6.1.2.2",
                    "fail",
                    "CMD_STATUS_QUERY jobId",
                    format!("reply names job {:?}", q.param("jobId")),
                    None,
                );
            }
        }
    }

    /// 6.2.1.2, both branches: container c1 with an app (202, then a job result on
    /// container/data) and container c2 empty (200 at once, or 202 and a job result).
    async fn container_installs(&mut self) -> Jobs {
        let cjob = self.next_job();
        let con = json!({"container": "c1", "image": {"name": "debian", "tag": "12"},
                         "withAPP": {"app": "a0", "version": "1.0.0"},
                         "cfgCpu": {"cpus": 1}, "cfgMem": {"memory": 256}, "port": "8080:80",
                         "jobId": cjob, "policy": 0, "networkMode": "bridge"});
        let r = self
            .command_as(
                "6.2.1.2",
                " with withAPP",
                "container",
                "CMD_CON_INSTALL",
                con,
                &[202],
            )
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.2.1.2", "container", cjob, "code", accepted)
            .await;

        let ejob = self.next_job();
        let empty = json!({"container": "c2", "image": {"name": "debian", "tag": "12"},
                           "jobId": ejob, "policy": 0});
        let r = self
            .command_as(
                "6.2.1.2",
                " without withAPP",
                "container",
                "CMD_CON_INSTALL",
                empty,
                &[200, 202],
            )
            .await;
        if r.as_ref().and_then(Seen::code) == Some(202) {
            self.job_result("6.2.1.2", "container", ejob, "code", true)
                .await;
        }
        vec![
            ("6.2.1.2", "container", cjob),
            ("6.2.1.2", "container", ejob),
        ]
    }

    /// 6.3.1.2: the app installation job.
    async fn app_install(&mut self) -> u64 {
        let job = self.next_job();
        let app = json!({"jobId": job, "policy": 0, "container": "c1", "version": "1.0.0",
                         "file": self.file("a1-1.0.0.tar"), "cpu": {"cpus": 1}, "mem": {"memory": 128},
                         "enable": "1", "app": "a1"});
        let r = self
            .command("6.3.1.2", "app", "CMD_APP_INSTALL", app, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.3.1.2", "app", job, "code", accepted)
            .await;
        job
    }

    /// 6.3.2.2: control commands on app a1 of c1.
    async fn app_control(&mut self, types: &[&str]) {
        for t in types {
            self.command(
                "6.3.2.2",
                "app",
                t,
                json!({"container": "c1", "app": "a1"}),
                &[200],
            )
            .await;
        }
    }

    /// 6.3.3.2: the app upgrade job.
    async fn app_upgrade(&mut self) -> u64 {
        let job = self.next_job();
        let upg = json!({"version": "1.1.0", "container": "c1", "file": self.file("a1-1.1.0.tar"),
                         "jobId": job, "policy": 0});
        let r = self
            .command("6.3.3.2", "app", "CMD_APP_UPGRADE", upg, &[202])
            .await;
        let accepted = r.as_ref().and_then(Seen::code) == Some(202);
        self.job_result("6.3.3.2", "app", job, "result", accepted)
            .await;
        job
    }

    /// What the edge starts itself, given the rest of its time: topo requests
    /// (6.1.4.2), an alarm and its recovery (6.1.3.2).
    pub(super) async fn edge_started_items(&mut self) {
        for t in ["CMD_TOPO_ADD", "CMD_TOPO_UPDATE", "CMD_TOPO_DEL"] {
            self.edge_started("6.1.4.2", &format!("{t} on topo/request"), |m| {
                m.msg_type == t
            })
            .await;
        }
        let recovery = |m: &Seen| {
            m.param("event")
                .and_then(Value::as_str)
                .map(|e| matches!(e, "1002" | "1004" | "3004" | "3006"))
        };
        self.edge_started("6.1.3.2", "EVENT_SYS_ALARM raised", |m| {
            m.msg_type == "EVENT_SYS_ALARM" && recovery(m) == Some(false)
        })
        .await;
        self.edge_started("6.1.3.2", "EVENT_SYS_ALARM recovered", |m| {
            m.msg_type == "EVENT_SYS_ALARM" && recovery(m) == Some(true)
        })
        .await;
    }

    /// Fails an item whose job was reported more than once.
    pub(super) fn one_result_per_job(&mut self, jobs: &Jobs) {
        for (item, ch, j) in jobs {
            let n = self.log.count(|m| {
                m.msg_type == "REP_JOB_RESULT"
                    && m.channel == *ch
                    && m.param("jobId").and_then(Value::as_u64) == Some(*j)
            });
            if n > 1 {
                self.add(
                    item,
                    "fail",
                    "one REP_JOB_RESULT per job",
                    format!("{n} results for job {j}"),
                    None,
                );
            }
        }
    }
}
