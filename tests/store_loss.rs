//! One truth about what a capture lacks (issue 21): the proxy's exit message and
//! every reader (`captures list`, `captures show`, `captures export`, `analyze
//! --capture`) say the same, whether the disk stayed full to the end, the proxy was
//! killed with SIGKILL, or it stopped itself (`--on-store-error stop`). Real proxy
//! binary, real mosquitto, a real full file system (a small tmpfs).

use std::path::Path;
use std::time::Duration;

use crate::common::{publish_lines, temp_dir, wait_until, Mosquitto};
use crate::store_files::{
    edgetap, fill, proxy_stopped_by_a_full_disk, run, status_reports, text, tmpfs, ProxyProc, TOPIC,
};
use edgetap::store::Store;

/// The number right after `INCOMPLETE: ` in `s` (the bytes not recorded).
fn lost_bytes(s: &str) -> Option<u64> {
    let at = s.find("INCOMPLETE: ")? + "INCOMPLETE: ".len();
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What each reader says of capture 1: list's JSON row, show's text, analyze's
/// `summary.incomplete` and export's lines.
struct Readers {
    row: serde_json::Value,
    show: String,
    analyze: String,
    export: String,
}

fn readers(store: &Path) -> Readers {
    let list = run(&["captures", "list", "--format", "json"], store);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let show = run(&["captures", "show", "1"], store);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    let a = run(&["analyze", "--capture", "1", "--format", "json"], store);
    let r: serde_json::Value =
        serde_json::from_slice(&a.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&a.stderr)));
    let out = store.parent().unwrap().join("export.pcapng");
    let e = edgetap()
        .args(["captures", "export", "1", "--pcapng"])
        .arg(&out)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    Readers {
        row: v[0].clone(),
        show: text(&show.stdout),
        analyze: r["summary"]["incomplete"].to_string(),
        export: text(&e.stdout) + &text(&e.stderr),
    }
}

/// The MQTT packets capture 1 holds.
fn stored_packets(store: &Path) -> u64 {
    Store::open_existing(store).unwrap().packets(1).count() as u64
}

#[test]
fn a_disk_full_until_the_proxy_stops_reads_the_same_loss_everywhere() {
    let dir = temp_dir("full-to-end");
    let mnt = dir.join("mnt");
    let Some(_fs) = tmpfs(&mnt, "2m") else {
        return;
    };
    let store = mnt.join("store");
    let broker = Mosquitto::start();
    let proxy = ProxyProc::start(broker.port, &store, &["--name", "full-to-end"]);
    // Full before the first report and until the proxy has stopped.
    fill(&mnt.join("other-file"));
    publish_lines(proxy.port, &["-q", "1"], TOPIC, &status_reports(500, 1000));
    let (code, out, err) = proxy.stop();
    assert_eq!(
        code,
        Some(4),
        "exit code 4: not everything recorded\n{out}\n{err}"
    );
    let said = lost_bytes(&err).unwrap_or_else(|| panic!("no loss in the exit message: {err}"));
    assert!(said > 500 * 1000, "every report lost: {said}");
    let r = readers(&store);
    assert_eq!(
        r.row["not_recorded"]["bytes"].as_u64(),
        Some(said),
        "{}",
        r.row
    );
    assert!(r.row["ended"].is_string(), "the end is recorded: {}", r.row);
    let recorded = r.row["recorded"].as_str().unwrap();
    assert_eq!(lost_bytes(recorded), Some(said), "{recorded}");
    assert_eq!(lost_bytes(&r.show), Some(said), "{}", r.show);
    assert_eq!(lost_bytes(&r.analyze), Some(said), "{}", r.analyze);
    assert_eq!(lost_bytes(&r.export), Some(said), "{}", r.export);
    // `list` counts the packets stored, and says how many were not.
    let packets = r.row["packets"].as_u64().unwrap();
    assert_eq!(packets, stored_packets(&store), "{}", r.row);
    let lost = r.row["not_recorded"]["packets"].as_u64().unwrap();
    assert!(
        lost >= 500,
        "the reports' PUBLISH packets are counted lost: {}",
        r.row
    );
    assert!(
        recorded.contains(&format!("{lost} MQTT packets")),
        "{recorded}"
    );
    // The reserve is gone with the capture closed.
    assert!(!store.join("chunks/1.recording").exists());
}

#[test]
fn a_capture_whose_proxy_was_killed_reads_incomplete_everywhere() {
    let dir = temp_dir("killed");
    let store = dir.join("store");
    let broker = Mosquitto::start();
    let mut proxy = ProxyProc::start(broker.port, &store, &["--name", "killed"]);
    publish_lines(proxy.port, &["-q", "1"], TOPIC, &status_reports(20, 10));
    wait_until(Duration::from_secs(10), "the reports in the store", || {
        text(&run(&["captures", "show", "1"], &store).stdout).contains("PUBLISH")
    });
    // While the proxy runs, readers see it recording.
    let list = run(&["captures", "list", "--format", "json"], &store);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["recorded"], "being recorded", "{v}");
    unsafe { libc::kill(proxy.child.id() as i32, libc::SIGKILL) };
    let _ = proxy.child.wait();
    let r = readers(&store);
    let gone = "the recorder stopped without closing it";
    let recorded = r.row["recorded"].as_str().unwrap();
    assert!(
        recorded.starts_with("INCOMPLETE") && recorded.contains(gone),
        "{recorded}"
    );
    assert!(r.show.contains(gone), "{}", r.show);
    assert!(r.analyze.contains(gone), "{}", r.analyze);
    assert!(r.export.contains(gone), "{}", r.export);
    // Nothing records it any more: it is deleted without --force, reserve and all.
    let d = run(&["captures", "delete", "1"], &store);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
    assert!(!store.join("chunks/1.recording").exists());
}

#[test]
fn a_proxy_stopped_by_on_store_error_stop_leaves_an_incomplete_capture() {
    // Kept whole: the tmpfs under the store is unmounted when it drops.
    let Some(stop) = proxy_stopped_by_a_full_disk(&temp_dir("stop-incomplete")) else {
        return;
    };
    let (store, code, err) = (&stop.store, stop.code, &stop.err);
    assert_eq!(code, Some(4), "{err}");
    let said = lost_bytes(err).unwrap_or_else(|| panic!("no loss in the exit message: {err}"));
    let r = readers(store);
    let recorded = r.row["recorded"].as_str().unwrap();
    assert!(recorded.starts_with("INCOMPLETE"), "{recorded}");
    assert_eq!(lost_bytes(recorded), Some(said), "{recorded}");
    assert_eq!(lost_bytes(&r.show), Some(said), "{}", r.show);
    assert_eq!(lost_bytes(&r.analyze), Some(said), "{}", r.analyze);
    assert_eq!(
        r.row["packets"].as_u64(),
        Some(stored_packets(store)),
        "{}",
        r.row
    );
}
