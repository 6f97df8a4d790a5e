//! The store as a user meets it around a running proxy: read while recording, a
//! typo in --store, a damaged chunk file, passwords at rest, a disk that fills up
//! mid-capture. Real proxy binary, real mosquitto and mosquitto clients.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use bytes::Bytes;
use common::{free_port, publish_lines, temp_dir, wait_exit, wait_until, Mosquitto};
use edgetap::finding::Side;
use edgetap::mqtt::encode;
use edgetap::store::{CaptureMeta, Event, EventKind, Store, WriteBatch};

pub(crate) fn edgetap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
}

pub(crate) fn run(args: &[&str], store: &Path) -> Output {
    edgetap()
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run edgetap")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgetap proxy` in front of a broker, as a child process.
pub(crate) struct ProxyProc {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// stdout and stderr go to files: a pipe nobody reads would stall the proxy.
    pub(crate) out: PathBuf,
    pub(crate) err: PathBuf,
}

impl ProxyProc {
    pub(crate) fn start(upstream: u16, store: &Path, extra: &[&str]) -> ProxyProc {
        let port = free_port();
        let logs = temp_dir("proxy-out");
        let (out, err) = (logs.join("stdout"), logs.join("stderr"));
        let child = edgetap()
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &format!("127.0.0.1:{upstream}")])
            .arg("--store")
            .arg(store)
            .args(extra)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        // The line it prints once bound (a connection to check would be one of the
        // capture).
        let listening = format!("edgetap proxy: 127.0.0.1:{port} ");
        wait_until(
            Duration::from_secs(10),
            &format!("the proxy to say it listens on {port}"),
            || std::fs::read_to_string(&err).is_ok_and(|e| e.contains(&listening)),
        );
        ProxyProc {
            child,
            port,
            out,
            err,
        }
    }

    /// Waits until its live lines say `n` connections closed.
    pub(crate) fn wait_closed(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("the proxy to see {n} connection(s) close"),
            || common::closed_lines(&std::fs::read_to_string(&self.out).unwrap()) >= n,
        );
    }

    /// SIGTERM, then (exit code, stdout, stderr).
    pub(crate) fn stop(mut self) -> (Option<i32>, String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let out = std::fs::read_to_string(&self.out).unwrap();
        let err = std::fs::read_to_string(&self.err).unwrap();
        (status.code(), out, err)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn status_reports(count: usize, pad: usize) -> String {
    let pad = "x".repeat(pad);
    (1..=count)
        .map(|mid| {
            format!(
                "{{\"type\":\"REP_SYS_STATUS\",\"mid\":{mid},\"timestamp\":\"2026-11-26 10:00:00\",\"param\":{{\"note\":\"{pad}\"}}}}\n"
            )
        })
        .collect()
}

pub(crate) const TOPIC: &str = "/v1/E1/device/data";

/// Every file under `dir`, recursively (`dir` must exist; a folder inside it that
/// the running store removed while it was listed is skipped, see [`grep_store`]).
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    fn under(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    assert!(dir.is_dir(), "{} is no folder", dir.display());
    let mut out = vec![];
    under(dir, &mut out);
    out
}

/// Files under `dir` that hold `needle`. A file the running store removed between
/// the listing and the reading (sled renames and drops its own files) is skipped:
/// callers that poll look again, and the checks after a stop see a still store.
pub(crate) fn grep_store(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| match std::fs::read(p) {
            Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("{}: {e}", p.display()),
        })
        .collect()
}

#[test]
fn captures_list_and_analyze_work_during_a_live_capture() {
    let broker = Mosquitto::start();
    let dir = temp_dir("live-read");
    let store = dir.join("store");
    let proxy = ProxyProc::start(broker.port, &store, &["--name", "live"]);
    publish_lines(proxy.port, &["-q", "1"], TOPIC, &status_reports(50, 10));
    // The proxy still runs: its store is read from outside.
    wait_until(
        Duration::from_secs(10),
        "the capture's packets in `captures list`",
        || {
            let o = run(&["captures", "list", "--format", "json"], &store);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v[0]["name"] == "live"
                && v[0]["ended"].is_null()
                && v[0]["packets"].as_u64() >= Some(50)
        },
    );
    let table = run(&["captures", "list"], &store);
    assert!(
        text(&table.stdout).contains("being recorded"),
        "{}",
        text(&table.stdout)
    );
    let o = run(&["analyze", "--capture", "1", "--format", "json"], &store);
    assert_eq!(
        o.status.code(),
        Some(1),
        "error findings: {}",
        text(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["summary"]["publishes"], 50, "{}", r["summary"]);
    // The aggregated findings are rewritten at most once a second.
    wait_until(
        Duration::from_secs(10),
        "the 50 reports' findings in `captures show`",
        || {
            let show = run(&["captures", "show", "1"], &store);
            assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
            text(&show.stdout).contains("×50")
        },
    );
    let pcap = dir.join("live.pcapng");
    let e = run(
        &[
            "captures",
            "export",
            "1",
            "--pcapng",
            pcap.to_str().unwrap(),
        ],
        &store,
    );
    assert_eq!(e.status.code(), Some(0), "{}", text(&e.stderr));
    assert!(std::fs::metadata(&pcap).unwrap().len() > 50 * 100);
    // Deleting the capture being recorded is refused (it would lose the recording
    // while the proxy reports it stored).
    let d = run(&["captures", "delete", "1"], &store);
    assert_eq!(d.status.code(), Some(2), "{}", text(&d.stdout));
    assert!(
        text(&d.stderr).contains("still be recording") && text(&d.stderr).contains("--force"),
        "{}",
        text(&d.stderr)
    );
    let (code, out, err) = proxy.stop();
    assert_eq!(code, Some(1), "error findings; {out}{err}");
    // Once the proxy has ended it, the capture is deleted as any other.
    let d = run(&["captures", "delete", "1"], &store);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stderr));
}

#[test]
fn a_store_path_that_does_not_exist_is_an_error_for_every_reading_command() {
    let dir = temp_dir("typo");
    let typo = dir.join("edgetap-stroe");
    for args in [
        &["captures", "list"][..],
        &["captures", "show", "1"],
        &["captures", "delete", "1"],
        &["captures", "export", "1", "--pcapng", "/dev/null"],
        &["analyze", "--capture", "1"],
    ] {
        let o = run(args, &typo);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("edgetap-stroe does not exist") && err.contains("--store"),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }
}

fn data(seq: u64, bytes: Vec<u8>) -> Event {
    Event {
        time_us: 1_795_687_200_000_000 + seq as i64,
        seq,
        conn: 1,
        kind: EventKind::Data {
            side: Side::Client,
            bytes: Bytes::from(bytes),
        },
    }
}

#[test]
fn a_truncated_chunk_file_still_shows_and_exports_the_intact_part() {
    let dir = temp_dir("truncated");
    let store = Store::open(&dir).unwrap();
    let mut meta = CaptureMeta {
        name: "cut".into(),
        ..CaptureMeta::default()
    };
    let cap = store.begin_capture(&mut meta).unwrap();
    let connect = encode::connect("E1");
    let open = Event {
        time_us: 1_795_687_200_000_000,
        seq: 1,
        conn: 1,
        kind: EventKind::Open {
            client: "127.0.0.1:5000".parse().unwrap(),
            server: "127.0.0.1:1883".parse().unwrap(),
        },
    };
    // Four batches: open + CONNECT, then one PUBLISH each.
    let mut ends = vec![];
    // One batch filled and taken in turn, as the recorder does: its credential
    // scanners follow each stream from batch to batch.
    let mut b = WriteBatch::default();
    for n in 0..4u64 {
        if n == 0 {
            b.event(cap, &open);
            b.event(cap, &data(2, connect.clone()));
        } else {
            b.event(cap, &data(2 + n, encode::publish(&format!("t/{n}"), b"{}")));
        }
        store.write(b.take(), &meta).unwrap();
        ends.push(std::fs::metadata(store.chunk_path(cap)).unwrap().len());
    }
    meta.ended_us = Some(1_795_687_201_000_000);
    store.put_meta(&meta).unwrap();
    drop(store);
    // Cut inside the last batch, as a crash of the disk or a careless copy would.
    let path = dir.join("chunks").join(format!("{cap}.bin"));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(ends[3] - 5).unwrap();

    let show = run(&["captures", "show", &cap.to_string()], &dir);
    let out = text(&show.stdout);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(
        out.contains(&format!("bytes {}–{}", ends[2], ends[3] - 5)) && out.contains("damaged"),
        "the damaged span is reported: {out}"
    );

    let pcap = dir.join("cut.pcapng");
    let e = run(
        &[
            "captures",
            "export",
            &cap.to_string(),
            "--pcapng",
            pcap.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(e.status.code(), Some(0), "{}", text(&e.stderr));
    assert!(text(&e.stdout).contains("damaged"), "{}", text(&e.stdout));
    let tshark = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-Y",
            "mqtt.msgtype == 3",
            "-T",
            "fields",
            "-e",
            "mqtt.topic",
        ])
        .output()
        .expect("tshark must be installed");
    assert_eq!(
        text(&tshark.stdout).split_whitespace().collect::<Vec<_>>(),
        ["t/1", "t/2"]
    );

    let a = run(
        &["analyze", "--capture", &cap.to_string(), "--format", "json"],
        &dir,
    );
    let r: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(r["summary"]["publishes"], 2, "{}", text(&a.stderr));
    assert!(
        r["summary"]["incomplete"].to_string().contains("damaged"),
        "{}",
        r["summary"]
    );
}

/// mosquitto_pub -u/-P through the proxy: the password and the user name are nowhere in the store
/// folder (any file, any byte), unless --store-secrets; files 0600, folders 0700.
#[test]
fn a_connect_password_never_reaches_the_disk_unless_asked() {
    const PASSWORD: &str = "Zq7-distinctive-pw-31";
    const USER: &str = "Kx4-distinctive-user";
    let broker = Mosquitto::start();
    for keep in [false, true] {
        let dir = temp_dir("secrets");
        let store = dir.join("store");
        let extra: &[&str] = if keep { &["--store-secrets"] } else { &[] };
        let proxy = ProxyProc::start(broker.port, &store, extra);
        publish_lines(
            proxy.port,
            &["-u", USER, "-P", PASSWORD, "-q", "1"],
            TOPIC,
            &status_reports(3, 10),
        );
        let (code, out, err) = proxy.stop();
        assert!(matches!(code, Some(0 | 1)), "{out}{err}");
        let found = grep_store(&store, PASSWORD.as_bytes());
        let user_found = grep_store(&store, USER.as_bytes());
        if keep {
            assert!(!found.is_empty(), "--store-secrets keeps the password");
            assert!(
                !user_found.is_empty(),
                "--store-secrets keeps the user name"
            );
            // An export hides them unless asked, found by framing as the recorder
            // finds them; with --show-secrets it keeps them.
            for show in [false, true] {
                let out = dir.join(format!("export-{show}.pcapng"));
                let mut args = vec!["captures", "export", "1", "--pcapng", out.to_str().unwrap()];
                if show {
                    args.push("--show-secrets");
                }
                let e = run(&args, &store);
                assert!(e.status.success(), "{}", text(&e.stderr));
                let bytes = std::fs::read(&out).unwrap();
                for secret in [PASSWORD.as_bytes(), USER.as_bytes()] {
                    let there = bytes.windows(secret.len()).any(|w| w == secret);
                    assert_eq!(there, show, "show_secrets={show}");
                }
            }
        } else {
            assert!(found.is_empty(), "password at rest in {found:?}");
            assert!(user_found.is_empty(), "user name at rest in {user_found:?}");
            // The capture still decodes: the CONNECT and the 3 reports are judged.
            let a = run(&["analyze", "--capture", "1", "--format", "json"], &store);
            let r: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
            assert_eq!(r["summary"]["publishes"], 3, "{}", text(&a.stderr));
            let show = run(&["captures", "show", "1", "--show-secrets"], &store);
            assert!(text(&show.stdout).contains("password=*********************"));
        }
        assert!(!files(&store).is_empty());
        for f in files(&store) {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        for d in [store.clone(), store.join("chunks")] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
    }
}

/// An MQTT 5 CONNECT with Authentication Data, a user name and a password, sent in two
/// pieces (the first piece goes to disk in a batch of its own, while the CONNECT is
/// still incomplete), then an AUTH packet: none of the three secrets is in the store
/// folder, neither half of any of them, and the capture still decodes to the CONNECT
/// with its client id. Both packets are written by hand: `edgetap::mqtt::encode`
/// writes MQTT 3.1.1, which has neither authentication properties nor AUTH.
#[test]
fn credentials_of_a_connect_sent_in_pieces_and_of_auth_never_reach_the_disk() {
    const AUTH_DATA: &[u8] = b"Qa1-auth-data-PART-Rb2-auth-data-END";
    const USER: &[u8] = b"Ux9-user-PART-Vy8-user-END";
    const PASSWORD: &[u8] = b"Pw3-pass-PART-Sw4-pass-END";
    const AUTH_AGAIN: &[u8] = b"Ta5-second-auth-data";
    fn prefixed(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut props = vec![0x15];
    prefixed(&mut props, b"SCRAM-SHA-1");
    props.push(0x16);
    prefixed(&mut props, AUTH_DATA);
    let mut body = b"\x00\x04MQTT\x05\xc2\x00\x3c".to_vec();
    body.push(props.len() as u8);
    body.extend(props);
    prefixed(&mut body, b"piecewise-dev");
    prefixed(&mut body, USER);
    prefixed(&mut body, PASSWORD);
    // The remaining length (a variable byte integer: the body is over 127 bytes).
    let mut connect = vec![0x10];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        connect.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    connect.extend(body);
    let mut auth_props = vec![0x15];
    prefixed(&mut auth_props, b"SCRAM-SHA-1");
    auth_props.push(0x16);
    prefixed(&mut auth_props, AUTH_AGAIN);
    let mut auth = vec![
        0xF0,
        (auth_props.len() + 2) as u8,
        0x18,
        auth_props.len() as u8,
    ];
    auth.extend(auth_props);
    // Cut in the middle of the auth data, of the user name and of the password in turn.
    let middle = |needle: &[u8]| {
        connect
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
            + needle.len() / 2
    };
    let broker = Mosquitto::start();
    for cut in [middle(AUTH_DATA), middle(USER), middle(PASSWORD)] {
        let dir = temp_dir("secrets-pieces");
        let store = dir.join("store");
        let proxy = ProxyProc::start(broker.port, &store, &[]);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.write_all(&connect[..cut]).unwrap();
        // The first piece is written (its protocol name is in the store) before the
        // rest is sent.
        wait_until(
            Duration::from_secs(10),
            &format!("the first piece (cut at {cut}) in the store"),
            || !grep_store(&store, b"\x00\x04MQTT\x05").is_empty(),
        );
        s.write_all(&connect[cut..]).unwrap();
        s.write_all(&auth).unwrap();
        // The broker answers (a CONNACK refusing the unknown method) or closes.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        drop(s);
        proxy.wait_closed(1);
        let (code, out, err) = proxy.stop();
        // No PUBLISH came through: nothing judged.
        assert_eq!(code, Some(3), "{out}{err}");
        for secret in [AUTH_DATA, USER, PASSWORD, AUTH_AGAIN] {
            let (a, b) = secret.split_at(secret.len() / 2);
            for part in [a, b] {
                let found = grep_store(&store, part);
                assert!(
                    found.is_empty(),
                    "cut at {cut}: {:?} at rest in {found:?}",
                    String::from_utf8_lossy(part)
                );
            }
        }
        let show = run(&["captures", "show", "1", "--payloads"], &store);
        let shown = text(&show.stdout) + &text(&show.stderr);
        assert!(shown.contains("piecewise-dev"), "cut at {cut}: {shown}");
    }
}

/// Mounts a tmpfs of `size` on `dir`; None (with the reason) when not permitted.
pub(crate) fn tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {}",
            text(&o.stderr)
        );
        return None;
    }
    Some(Tmpfs(dir.to_path_buf()))
}

pub(crate) struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file (until ENOSPC).
pub(crate) fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_store_that_fills_up_mid_capture_loses_no_forwarded_message_and_says_what_was_not_recorded() {
    let dir = temp_dir("full");
    let mnt = dir.join("mnt");
    let Some(_fs) = tmpfs(&mnt, "2m") else {
        return;
    };
    let store = mnt.join("store");
    let broker = Mosquitto::start();
    // A subscriber straight on the broker counts what the proxy forwarded.
    let first = 3000;
    let second = 20;
    // stdbuf: mosquitto_sub's stdout is a pipe here, line buffering shows its
    // SUBACK at once.
    let mut sub = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-p",
            &broker.port.to_string(),
            "-t",
            "/v1/+/device/data",
            "-q",
            "1",
            "-d",
        ])
        .args(["-C", &(first + second).to_string(), "-W", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub must be installed");
    // Its debug lines say when the subscription stands; messages are the lines
    // that start with '{'.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = sub.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut messages = 0usize;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with('{') {
                messages += 1;
            } else {
                let _ = tx.send(line);
            }
        }
        messages
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("mosquitto_sub subscribes");
        if line.contains("SUBACK") {
            break;
        }
    }
    let proxy = ProxyProc::start(broker.port, &store, &["--name", "full"]);
    // 1 MiB of the 2 MiB taken by another file, so the store fills up mid-capture.
    let filler = mnt.join("other-file");
    std::fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
    // ~3 MB of ~1 KB reports: more than the disk holds.
    publish_lines(
        proxy.port,
        &["-q", "1"],
        TOPIC,
        &status_reports(first, 1000),
    );
    // Space returns: recording resumes by itself, a new connection is recorded.
    std::fs::remove_file(&filler).unwrap();
    publish_lines(
        proxy.port,
        &["-q", "1"],
        "/v1/E2/device/data",
        &status_reports(second, 10),
    );
    wait_until(
        Duration::from_secs(10),
        "the second connection in the store",
        || {
            let o = run(&["captures", "show", "1"], &store);
            text(&o.stdout).contains("/v1/E2/device/data")
        },
    );
    let (code, out, err) = proxy.stop();
    let _ = sub.wait();
    let delivered = reader.join().unwrap();
    assert_eq!(delivered, first + second, "every message was forwarded");
    assert_eq!(
        code,
        Some(4),
        "exit code 4: not everything recorded\n{out}\n{err}"
    );
    assert!(out.contains("INCOMPLETE"), "final summary: {out}");
    assert!(err.contains("store write failed"), "{err}");
    assert!(err.contains("recording resumed"), "{err}");

    // The store opens for reading on a full disk.
    fill(&mnt.join("again"));
    let list = run(&["captures", "list", "--format", "json"], &store);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let nr = &v[0]["not_recorded"];
    assert!(nr["bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(nr["from_us"].as_i64() <= nr["to_us"].as_i64(), "{v}");
    assert!(
        v[0]["recorded"].as_str().unwrap().starts_with("INCOMPLETE"),
        "{v}"
    );
    let show = run(&["captures", "show", "1"], &store);
    let s = text(&show.stdout);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(
        s.contains("INCOMPLETE") && s.contains("not recorded"),
        "{s}"
    );
    let a = run(&["analyze", "--capture", "1", "--format", "json"], &store);
    let r: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert!(
        r["summary"]["incomplete"]
            .to_string()
            .contains("not recorded"),
        "{}",
        r["summary"]
    );
}

/// What a proxy stopped by a full disk left: its store (on a tmpfs mounted while
/// this lives), exit code, stdout and stderr.
pub(crate) struct FullStop {
    _fs: Tmpfs,
    pub store: PathBuf,
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

/// A proxy with `--on-store-error stop` on a 1 MiB tmpfs that another file fills,
/// fed QoS 1 reports by mosquitto_pub until it stops by itself. `None` where no
/// tmpfs can be mounted (not root).
pub(crate) fn proxy_stopped_by_a_full_disk(dir: &Path) -> Option<FullStop> {
    let mnt = dir.join("mnt");
    let fs = tmpfs(&mnt, "1m")?;
    let store = mnt.join("store");
    let broker = Mosquitto::start();
    let mut proxy = ProxyProc::start(broker.port, &store, &["--on-store-error", "stop"]);
    fill(&mnt.join("other-file"));
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-p", &proxy.port.to_string(), "-t", TOPIC, "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Fed from a thread: once the proxy is gone mosquitto_pub stops reading.
    let mut stdin = publisher.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(status_reports(2000, 1000).as_bytes());
    });
    let code = wait_exit(
        &mut proxy.child,
        Duration::from_secs(30),
        "the proxy to stop by itself",
    )
    .code();
    let _ = publisher.kill();
    let _ = publisher.wait();
    feeder.join().unwrap();
    let out = std::fs::read_to_string(&proxy.out).unwrap();
    let err = std::fs::read_to_string(&proxy.err).unwrap();
    Some(FullStop {
        _fs: fs,
        store,
        code,
        out,
        err,
    })
}

#[test]
fn with_on_store_error_stop_the_proxy_shuts_down_at_the_first_failed_write() {
    let Some(FullStop { code, out, err, .. }) =
        proxy_stopped_by_a_full_disk(&temp_dir("full-stop"))
    else {
        return;
    };
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(err.contains("--on-store-error stop"), "{err}");
    assert!(out.contains("INCOMPLETE"), "{out}");
}
