//! The proxy's live console: one line per connection opening, CONNECT and close;
//! the first finding of each (edge, rule, field path) in full, naming its
//! connection; then, every [`SUMMARY_EVERY`], one "+N more" line per group that
//! grew, and how far the judge runs behind when it does. Every line starts with its
//! time (UTC). A device repeating the same fault 100,000 times gives one line and a
//! few summaries, not 100,000 lines; `analyze --capture` lists every occurrence.
//!
//! The console is never what the judge waits on: lines go through a bounded queue
//! ([`CONSOLE_QUEUE`]) to a writer thread of their own ([`LineSink`]); when the
//! reader of stdout does not keep up (a terminal over a slow link, a pipe nobody
//! reads), lines are dropped and counted, and one line says how many once the queue
//! has room again. (24,000 short connections once had the judge print 72,028 lines,
//! each a write and a flush on its own thread, minutes behind the traffic.)

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::judge::{ConnNote, Live, Snapshot};
use crate::finding::{ConnId, Finding};

/// How often grown groups are summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Summary lines at most per summary; the rest are counted in one line.
const SUMMARY_LINES: usize = 20;
/// Closed connections whose labels are kept for findings judged after the close.
const CLOSED_LABELS: usize = 4096;
/// Lag of the judge worth a line.
const LAG_WORTH_SAYING_US: i64 = 2_000_000;

struct Group {
    /// Occurrences not yet summarised.
    pending: u64,
    total: u64,
    /// The group's first line, shortened, for its summaries.
    label: String,
}

struct Label {
    peer: SocketAddr,
    client_id: Option<String>,
    opened_us: i64,
}

/// Lines queued for the writer thread at most; more are dropped and counted.
pub const CONSOLE_QUEUE: usize = 4096;
/// How long [`Console`]'s end waits for the writer to write what is queued.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Lines written by a thread of their own, so that a slow reader never holds up the
/// caller: [`LineSink::send`] never waits; past [`CONSOLE_QUEUE`] queued lines it
/// drops and counts them.
pub struct LineSink {
    tx: Option<std::sync::mpsc::SyncSender<String>>,
    done: std::sync::mpsc::Receiver<()>,
    /// Lines dropped since the last notice.
    dropped: u64,
    dropped_total: u64,
}

impl LineSink {
    pub fn new(out: Box<dyn Write + Send>) -> LineSink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(CONSOLE_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("edgetap-console".into())
            .spawn(move || {
                // Buffered, flushed whenever the queue is empty: one write for a
                // burst of lines instead of one per line.
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                }
                let _ = out.flush();
                let _ = done_tx.send(());
            })
            .expect("the console thread starts");
        LineSink {
            tx: Some(tx),
            done,
            dropped: 0,
            dropped_total: 0,
        }
    }

    fn notice(&self) -> String {
        format!(
            "{} {} console lines dropped: stdout did not keep up, and the proxy does \
             not wait for it (`edgetap analyze --capture ID` lists every finding)\n",
            time(now_us()),
            self.dropped
        )
    }

    /// Queues `line` (with its newline), or counts it when the queue is full.
    pub fn send(&mut self, line: String) {
        let Some(tx) = &self.tx else { return };
        if self.dropped > 0 {
            if tx.try_send(self.notice()).is_err() {
                self.dropped += 1;
                self.dropped_total += 1;
                return;
            }
            self.dropped = 0;
        }
        if tx.try_send(line).is_err() {
            self.dropped += 1;
            self.dropped_total += 1;
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped_total
    }

    /// Writes what is queued and the count of lines dropped last (waiting at most
    /// [`DRAIN_WAIT`] for the reader).
    pub fn close(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let deadline = Instant::now() + DRAIN_WAIT;
        let mut notice = (self.dropped > 0).then(|| self.notice());
        while let Some(n) = notice.take() {
            match tx.try_send(n) {
                Err(std::sync::mpsc::TrySendError::Full(n)) if Instant::now() < deadline => {
                    notice = Some(n);
                    // Polled: std's bounded channel has no send with a timeout.
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => self.dropped = 0,
            }
        }
        drop(tx);
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes the live console to `out` (stdout for `edgetap proxy`).
pub struct Console {
    out: LineSink,
    /// By the judge's group index.
    groups: Vec<Group>,
    /// Groups with pending occurrences, in the order they first grew.
    grown: Vec<usize>,
    /// Findings past the judge's group limit, not yet summarised.
    ungrouped: u64,
    conns: HashMap<ConnId, Label>,
    closed: VecDeque<(ConnId, Label)>,
    last_summary: Instant,
}

impl Console {
    pub fn new(out: Box<dyn Write + Send>) -> Console {
        Console {
            out: LineSink::new(out),
            groups: vec![],
            grown: vec![],
            ungrouped: 0,
            conns: HashMap::new(),
            closed: VecDeque::new(),
            last_summary: Instant::now(),
        }
    }

    pub fn stdout() -> Console {
        Console::new(Box::new(std::io::stdout()))
    }

    fn line(&mut self, time_us: Option<i64>, text: &str) {
        let t = time_us.unwrap_or_else(now_us);
        self.out
            .send(format!("{} {}\n", time(t), crate::finding::printable(text)));
    }

    fn label(&self, conn: ConnId) -> String {
        let l = self
            .conns
            .get(&conn)
            .or_else(|| self.closed.iter().find(|(c, _)| *c == conn).map(|(_, l)| l));
        match l {
            Some(Label {
                peer,
                client_id: Some(id),
                ..
            }) => format!("conn {conn} ({peer}, client {id:?})"),
            Some(Label { peer, .. }) => format!("conn {conn} ({peer})"),
            None => format!("conn {conn}"),
        }
    }

    fn summarise(&mut self, force: bool) {
        if !force && self.last_summary.elapsed() < SUMMARY_EVERY {
            return;
        }
        self.last_summary = Instant::now();
        let grown = std::mem::take(&mut self.grown);
        let mut lines = vec![];
        let mut rest = (0u64, 0usize);
        for (i, k) in grown.iter().enumerate() {
            let Some(g) = self.groups.get_mut(*k) else {
                continue;
            };
            let n = std::mem::take(&mut g.pending);
            if n == 0 {
                continue;
            }
            if i < SUMMARY_LINES {
                lines.push(format!("+{n} more ({} in all): {}", g.total, g.label));
            } else {
                rest.0 += n;
                rest.1 += 1;
            }
        }
        let ungrouped = std::mem::take(&mut self.ungrouped);
        if ungrouped > 0 {
            lines.push(format!(
                "+{ungrouped} more findings in groups past the first {}",
                super::judge::MAX_GROUPS
            ));
        }
        if rest.1 > 0 {
            lines.push(format!(
                "+{} more findings in {} other groups (edgetap analyze --capture lists each)",
                rest.0, rest.1
            ));
        }
        for l in lines {
            self.line(None, &l);
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `2026-12-01T12:15:39.630Z`
pub fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| us.to_string())
}

impl Console {
    fn finding_line(&self, f: &Finding) -> String {
        let mut text = String::new();
        if let Some(c) = f.conn {
            text.push_str(&self.label(c));
            text.push(' ');
        }
        text.push_str(&crate::report::one_line(f));
        text
    }
}

impl Live for Console {
    fn finding(&mut self, f: &Finding) {
        // Not grouped by the judge (only `grouped` is called by it): print it.
        let text = self.finding_line(f);
        self.line(f.time, &text);
    }

    fn grouped(&mut self, f: &Finding, group: Option<usize>, first: bool) {
        let Some(i) = group else {
            self.ungrouped += 1;
            return;
        };
        if first {
            let mut label = format!("[{}]", f.rule);
            if let Some(e) = &f.edge_id {
                label.push_str(&crate::finding::edge_label(e, f.from));
            }
            label.push_str(&format!(": {}", f.message));
            if self.groups.len() <= i {
                self.groups.resize_with(i + 1, || Group {
                    pending: 0,
                    total: 0,
                    label: String::new(),
                });
            }
            self.groups[i] = Group {
                pending: 0,
                total: 1,
                label,
            };
            let text = self.finding_line(f);
            self.line(f.time, &text);
            return;
        }
        let Some(g) = self.groups.get_mut(i) else {
            return;
        };
        g.total += 1;
        if g.pending == 0 {
            self.grown.push(i);
        }
        g.pending += 1;
    }

    fn skipped(&mut self, n: u64) {
        self.line(
            None,
            &format!(
                "judging skipped {n} messages: the judge had fallen more than {} MiB or {} s \
                 behind (it takes at most the --judge-cpu share of a core), and forwarding \
                 and recording do not wait for it; live findings miss them (and may \
                 misjudge replies to them); they are recorded, and the final report \
                 re-judges the whole capture from the store",
                super::judge::MAX_BACKLOG_BYTES >> 20,
                super::judge::MAX_BACKLOG_AGE.as_secs()
            ),
        );
    }

    fn hidden(&mut self, n: u64) {
        self.line(
            None,
            &format!(
                "{n} connections opened while judging was behind are not shown (their \
                 open, CONNECT and close lines); they are recorded (`edgetap captures \
                 show ID`)"
            ),
        );
    }

    fn connection(&mut self, n: &ConnNote) {
        match n {
            ConnNote::Open {
                conn,
                time_us,
                client,
                server,
            } => {
                self.conns.insert(
                    *conn,
                    Label {
                        peer: *client,
                        client_id: None,
                        opened_us: *time_us,
                    },
                );
                self.line(
                    Some(*time_us),
                    &format!("conn {conn} open: {client} → {server}"),
                );
            }
            ConnNote::Connect {
                conn,
                time_us,
                client_id,
                version,
                keep_alive,
            } => {
                if let Some(l) = self.conns.get_mut(conn) {
                    l.client_id = Some(client_id.clone());
                }
                let who = self.label(*conn);
                self.line(
                    Some(*time_us),
                    &format!("{who} CONNECT: MQTT {version}, keep-alive {keep_alive} s"),
                );
            }
            ConnNote::Closed { conn, time_us, how } => {
                let who = self.label(*conn);
                let after = self
                    .conns
                    .get(conn)
                    .map(|l| format!(" after {:.1} s", (time_us - l.opened_us) as f64 / 1e6))
                    .unwrap_or_default();
                let how = match how.as_str() {
                    "closed" => "both sides closed (FIN)",
                    "shutdown" => "the proxy stopped",
                    h => h,
                };
                self.line(Some(*time_us), &format!("{who} closed{after}: {how}"));
                if let Some(l) = self.conns.remove(conn) {
                    if self.closed.len() >= CLOSED_LABELS {
                        self.closed.pop_front();
                    }
                    self.closed.push_back((*conn, l));
                }
            }
        }
    }

    fn tick(&mut self, s: &Snapshot) {
        let due = self.last_summary.elapsed() >= SUMMARY_EVERY;
        self.summarise(false);
        if due && s.lag_us >= LAG_WORTH_SAYING_US {
            self.line(
                None,
                &format!(
                    "judging runs {:.1} s behind ({} items queued); forwarding and recording do not wait for it",
                    s.lag_us as f64 / 1e6,
                    s.backlog
                ),
            );
        }
    }

    fn finish(&mut self, s: &Snapshot) {
        self.summarise(true);
        self.line(
            None,
            &format!(
                "judged {} messages: {} findings ({} errors, {} warnings) in {} groups",
                s.judged,
                s.findings,
                s.errors,
                s.warnings,
                s.groups.len()
            ),
        );
        self.out.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn finding(mid: u64) -> Finding {
        Finding {
            rule: "t10.REP_SYS_STATUS".into(),
            clause: "6.1.3".into(),
            table: Some("10".into()),
            severity: Severity::Error,
            edge_id: Some("E1".into()),
            msg_type: Some("REP_SYS_STATUS".into()),
            topic: None,
            mid: Some(mid),
            packet: Some(mid),
            time: Some(1_764_590_000_000_000 + mid as i64),
            message: "param.diskUsed: expected required number, seen absent".into(),
            conn: Some(3),
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }

    /// A writer that takes nothing until `open` is set: stdout nobody reads.
    #[derive(Clone, Default)]
    struct Stuck {
        open: Arc<std::sync::atomic::AtomicBool>,
        got: Shared,
    }
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            while !self.open.load(std::sync::atomic::Ordering::Acquire) {
                // (The test's reader, stuck until it is let go.)
                std::thread::sleep(Duration::from_millis(1));
            }
            self.got.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stdout_that_does_not_read_never_holds_up_the_judge_lines_are_counted() {
        let out = Stuck::default();
        let mut c = Console::new(Box::new(out.clone()));
        let n = 3 * CONSOLE_QUEUE as u64;
        let (done_tx, done) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            for conn in 0..n {
                c.connection(&ConnNote::Open {
                    conn,
                    time_us: 1_764_590_000_000_000,
                    client: "10.0.0.7:5000".parse().unwrap(),
                    server: "10.0.0.1:1883".parse().unwrap(),
                });
            }
            let _ = done_tx.send(());
            c
        });
        // (With a write per line on the caller's thread, this waits for ever.)
        done.recv_timeout(Duration::from_secs(20))
            .expect("the console's callers never wait for stdout");
        let mut c = t.join().unwrap();
        // (The writer holds what its buffer took before the reader stuck.)
        assert!(c.out.dropped() >= n - 2 * CONSOLE_QUEUE as u64);
        out.open.store(true, std::sync::atomic::Ordering::Release);
        c.finish(&Snapshot::default());
        let text = String::from_utf8(out.got.0.lock().unwrap().clone()).unwrap();
        // Every line (n opens, then "judged …") is written or counted in a notice.
        let counted: u64 = text
            .lines()
            .filter_map(|l| l.split_once(" console lines dropped: stdout did not keep up"))
            .map(|(head, _)| head.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        let written = text
            .lines()
            .filter(|l| l.contains(" open: ") || l.contains("judged 0 messages"))
            .count() as u64;
        assert!(counted > 0, "the drop is said");
        assert_eq!(
            written + counted,
            n + 1,
            "{written} written, {counted} counted"
        );
        assert_eq!(counted, c.out.dropped());
    }

    #[test]
    fn first_finding_of_a_group_in_full_then_one_summary_line() {
        let out = Shared::default();
        let mut c = Console::new(Box::new(out.clone()));
        c.connection(&ConnNote::Open {
            conn: 3,
            time_us: 1_764_590_000_000_000,
            client: "10.0.0.7:5000".parse().unwrap(),
            server: "10.0.0.1:1883".parse().unwrap(),
        });
        c.connection(&ConnNote::Connect {
            conn: 3,
            time_us: 1_764_590_000_000_001,
            client_id: "dev1".into(),
            version: "3.1.1",
            keep_alive: 60,
        });
        c.grouped(&finding(1), Some(0), true);
        for mid in 2..=1000 {
            c.grouped(&finding(mid), Some(0), false);
        }
        c.finish(&Snapshot::default());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with("2025-12-01T") && lines[0].contains("conn 3 open: 10.0.0.7:5000")
        );
        assert!(lines[1].contains("conn 3 (10.0.0.7:5000, client \"dev1\") CONNECT: MQTT 3.1.1"));
        assert!(lines[2].contains("conn 3 (10.0.0.7:5000, client \"dev1\") error"));
        assert!(lines[2].contains("mid 1:"));
        assert!(lines[3].contains("+999 more (1000 in all): [t10.REP_SYS_STATUS] edge E1"));
        assert!(lines[4].contains("judged 0 messages"));
    }
}
