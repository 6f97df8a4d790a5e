//! `proxy --judge-cpu`: the live judge's CPU cap. A test binary of its own, so that
//! the only judge thread in the process is this test's.

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

/// A judge held to a tiny CPU share (`--judge-cpu`) falls behind a burst and skips
/// (the live view says how many); recording and forwarding are not held back, and
/// the final report, judged again from the store, still has every finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_judge_skips_live_and_the_final_report_is_complete() {
    let broker = Mosquitto::start();
    let dir = temp_dir("judge-cpu");
    let view = edgetap::proxy::judge::View::default();
    let live = Arc::new(edgetap::live::LiveView::new(Arc::new(RuleSet::builtin())));
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
