//! `proxy --judge-cpu`: the live judge's CPU cap. The test measures the CPU time of
//! the judge thread of its process, so that thread must be the only one: the test
//! binary runs other tests' proxies beside it, so the test runs itself again in a
//! process of its own (the test binary, only this test selected).

use crate::common;

use common::{assert_reports_complete, publish_lines, temp_dir, Mosquitto, Proxy};
use std::sync::Arc;

use edgetap::proxy::ProxySettings;
use edgetap::rules::RuleSet;
use edgetap::store::Store;

/// CPU time of this process's judge thread (`edgetap-judge`), in ms.
fn judge_cpu_ms() -> u64 {
    let mut ms = None;
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let t = t.unwrap().path();
        if std::fs::read_to_string(t.join("comm"))
            .unwrap_or_default()
            .trim()
            != "edgetap-judge"
        {
            continue;
        }
        let stat = std::fs::read_to_string(t.join("stat")).unwrap();
        // After the command name in parentheses: fields 3.. ; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(ms.is_none(), "more than one judge thread");
        // Clock ticks of 10 ms (USER_HZ is 100 on Linux).
        ms = Some((f[0] + f[1]) * 10);
    }
    ms.expect("the judge thread is running")
}

/// Set in the process that runs the test alone.
const ALONE: &str = "EDGETAP_TEST_JUDGE_CPU_ALONE";

/// Runs `test` (a test of this module) in a process of its own, the test binary with
/// only it selected; fails with that process's output when it fails.
async fn in_a_process_of_its_own(test: &str) {
    let name = format!("{}::{test}", module_path!());
    // The test harness names tests by their path inside the crate.
    let name = name.split_once("::").map_or(name.as_str(), |(_, n)| n);
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .await
        .expect("run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} alone:\n{text}");
    assert!(
        text.contains("1 passed"),
        "{name} did not run alone:\n{text}"
    );
}

/// A judge held to a tiny CPU share (`--judge-cpu`) falls behind a burst and skips
/// (the live view says how many); recording and forwarding are not held back, and
/// the final report, judged again from the store, still has every finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_judge_skips_live_and_the_final_report_is_complete() {
    if std::env::var_os(ALONE).is_none() {
        in_a_process_of_its_own("capped_judge_skips_live_and_the_final_report_is_complete").await;
        return;
    }
    let broker = Mosquitto::start();
    let dir = temp_dir("judge-cpu");
    let view = edgetap::proxy::judge::View::default();
    let live = Arc::new(edgetap::proxy::live::LiveView::new(Arc::new(
        RuleSet::builtin(),
    )));
    let px = Proxy::start(
        ProxySettings {
            // 0.1 % of a core: after its first 20 ms the judge gets 1 µs a ms.
            judge_cpu: Some(0.001),
            view: view.clone(),
            live: Some(live.clone()),
            upstream: format!("127.0.0.1:{}", broker.port),
            name: "judge-cpu".into(),
            ..ProxySettings::default()
        },
        Some(Store::open(&dir.join("store")).unwrap()),
    )
    .await;
    // 30,000 reports of ~1 KB: more than the judge's backlog limit (16 MiB counted).
    let n = 30_000;
    let topic = "/v1/CAPPED1/device/data";
    let pad = "x".repeat(900);
    let lines: String = (1..=n)
        .map(|mid| {
            format!(
                "{{\"type\":\"REP_SYS_STATUS\",\"mid\":{mid},\"timestamp\":\"2026-11-26 10:00:00\",\
                 \"param\":{{\"note\":\"{pad}\"}}}}\n"
            )
        })
        .collect();
    let port = px.addr.port();
    tokio::task::spawn_blocking(move || publish_lines(port, &["-q", "1"], topic, &lines))
        .await
        .unwrap();
    // While the devices published, the judge took its share and no more: its
    // first 20 ms, 1 µs a ms after that, and a slice of 64 messages over (a few ms
    // in a debug build; the bound leaves room for a slow machine). Uncapped, the
    // same judge took 660 ms here.
    let spent = judge_cpu_ms();
    assert!(
        spent <= 250,
        "the judge took {spent} ms of CPU time, capped at 0.1 %"
    );
    let (out, _live) = px.finish().await;
    let snap = view.snapshot();
    assert!(
        snap.skipped > 0,
        "the capped judge skipped nothing: {snap:?}"
    );
    // The live view's /metrics says so too.
    let metrics = live.metrics();
    let skipped = format!("edgetap_judge_skipped_total {}\n", snap.skipped);
    assert!(metrics.contains(&skipped), "{metrics}");
    assert_reports_complete(out, n);
}
