//! An `edgetap proxy` for tests: in this process ([`Proxy`]) or as a child process
//! ([`ProxyProcess`]), and its output as the tests read it. (Moved from mod.rs,
//! unchanged.)

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgetap::finding::Finding;
use edgetap::proxy::judge::{ConnNote, Live};
use edgetap::proxy::{ProxyOutcome, ProxySettings};
use edgetap::rules::RuleSet;
use edgetap::store::Store;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::*;
/// An `edgetap proxy` running in this process on 127.0.0.1:0, collecting its live
/// findings and counting the connections it saw close.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<ProxyOutcome>,
    live: Arc<Mutex<Vec<Finding>>>,
    closed: watch::Receiver<usize>,
}

/// The proxy's live output as the tests see it: the findings, and each connection's
/// close (told after everything the connection carried).
struct Observed {
    live: Arc<Mutex<Vec<Finding>>>,
    closed: watch::Sender<usize>,
}

impl Live for Observed {
    fn finding(&mut self, f: &Finding) {
        self.live.lock().unwrap().push(f.clone())
    }
    fn connection(&mut self, n: &ConnNote) {
        if let ConnNote::Closed { .. } = n {
            self.closed.send_modify(|c| *c += 1);
        }
    }
}

impl Proxy {
    pub async fn start(settings: ProxySettings, store: Option<Store>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let live = Arc::new(Mutex::new(vec![]));
        let (closed_tx, closed) = watch::channel(0);
        let observed = Observed {
            live: live.clone(),
            closed: closed_tx,
        };
        let done = tokio::spawn(async move {
            edgetap::proxy::run_live(
                listener,
                settings,
                Arc::new(RuleSet::builtin()),
                store,
                Box::new(observed),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .expect("proxy runs")
        });
        Proxy {
            addr,
            stop,
            done,
            live,
            closed,
        }
    }

    /// Waits until the proxy has seen `n` connections close: everything they carried
    /// has been forwarded, recorded and judged. (Stopping the proxy closes the
    /// connections still open: a test waits for this first when their ends count.)
    pub async fn wait_closed(&self, n: usize) {
        let mut closed = self.closed.clone();
        let limit = Duration::from_secs(30);
        let seen = tokio::time::timeout(limit, closed.wait_for(|c| *c >= n)).await;
        assert!(
            seen.is_ok(),
            "timed out after {limit:?} waiting for the proxy to see {n} connection(s) close \
             ({} did)",
            *self.closed.borrow()
        );
    }

    /// Stops the proxy (as on SIGTERM) and returns its outcome and live findings.
    pub async fn finish(self) -> (ProxyOutcome, Vec<Finding>) {
        let _ = self.stop.send(());
        // A hang guard, not a speed target: a stop whose live judge skipped judges
        // the capture again from the store, 8-9 s for 30,000 reports in a debug build.
        let out = tokio::time::timeout(Duration::from_secs(60), self.done)
            .await
            .expect("proxy stops within 60 s")
            .unwrap();
        let live = self.live.lock().unwrap().clone();
        (out, live)
    }
}

/// What a child process writes on a pipe, read by a thread as it comes, so that a
/// test can wait for a line (and a pipe nobody reads never stalls the child).
pub struct Output(Arc<Pipe>);

/// What came so far and whether the pipe closed; the condvar tells of each read.
type Pipe = (Mutex<(Vec<u8>, bool)>, std::sync::Condvar);

impl Output {
    pub fn read(mut pipe: impl std::io::Read + Send + 'static) -> Output {
        let shared = Arc::new((Mutex::new((vec![], false)), std::sync::Condvar::new()));
        let s2 = shared.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let mut g = s2.0.lock().unwrap();
                g.0.extend_from_slice(&buf[..n]);
                g.1 = n == 0;
                s2.1.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Output(shared)
    }

    /// What came so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0 .0.lock().unwrap().0).into_owned()
    }

    /// Waits until `cond` holds for what came so far; panics naming `what`, with
    /// the text, after `limit` or when the pipe closed without it.
    pub fn wait_for(&self, limit: Duration, what: &str, mut cond: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + limit;
        let mut g = self.0 .0.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&g.0);
            if cond(&text) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !g.1 && !left.is_zero(),
                "{} waiting for {what}; the output:\n{text}",
                if g.1 {
                    "the pipe closed".to_string()
                } else {
                    format!("timed out after {limit:?}")
                }
            );
            g = self.0 .1.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Everything, once the writer closed the pipe.
    pub fn all(&self) -> String {
        let (lock, cv) = &*self.0;
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        let mut g = lock.lock().unwrap();
        while !g.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for the pipe to close"
            );
            g = cv.wait_timeout(g, left).unwrap().0;
        }
        String::from_utf8_lossy(&g.0).into_owned()
    }
}

/// The number of connections the live lines of `edgetap proxy` say closed
/// ("… conn 3 (127.0.0.1:40000, client \"x\") closed after 0.2 s: …").
pub fn closed_lines(live: &str) -> usize {
    live.lines()
        .filter(|l| {
            l.split_once(' ').is_some_and(|(_, l)| {
                l.starts_with("conn ") && (l.contains(" closed after ") || l.contains(" closed: "))
            })
        })
        .count()
}

/// `edgetap proxy --listen 127.0.0.1:PORT` and the arguments `args` adds, the real
/// binary, once it says it listens; its stdout (the live lines, then the final
/// report) and stderr are read as they come. Killed on drop.
pub struct ProxyProcess {
    child: Child,
    pub port: u16,
    pub stdout: Output,
    pub stderr: Output,
}

impl ProxyProcess {
    pub fn start(args: impl FnOnce(&mut Command)) -> ProxyProcess {
        Self::start_in(Command::new(env!("CARGO_BIN_EXE_edgetap")), args)
    }

    /// [`ProxyProcess::start`] after the shell command `setup` (e.g. `ulimit -n
    /// 1024`): `sh -c 'SETUP; exec edgetap proxy …'`, so the proxy is the child.
    pub fn start_after(setup: &str, args: impl FnOnce(&mut Command)) -> ProxyProcess {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("{setup}; exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_edgetap"));
        Self::start_in(c, args)
    }

    fn start_in(mut c: Command, args: impl FnOnce(&mut Command)) -> ProxyProcess {
        let port = free_port();
        c.args(["proxy", "--listen", &format!("127.0.0.1:{port}")]);
        args(&mut c);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgetap proxy");
        let stdout = Output::read(child.stdout.take().unwrap());
        let stderr = Output::read(child.stderr.take().unwrap());
        let p = ProxyProcess {
            child,
            port,
            stdout,
            stderr,
        };
        // The line it prints once bound. (A connect() that succeeds is no such
        // proof, and would be a connection of the capture.)
        let listening = format!("edgetap proxy: 127.0.0.1:{port} ");
        p.stderr.wait_for(
            Duration::from_secs(30),
            &format!("the proxy to say it listens on {port}"),
            |t| t.lines().any(|l| l.starts_with(&listening)),
        );
        p
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until its live lines say `n` connections closed: everything they
    /// carried is forwarded, recorded and judged. (SIGTERM closes the connections
    /// still open: a test waits for this first when their ends count.)
    pub fn wait_closed(&self, n: usize) {
        self.stdout.wait_for(
            Duration::from_secs(30),
            &format!("the proxy to see {n} connection(s) close"),
            |t| closed_lines(t) >= n,
        );
    }

    /// SIGTERM, as a service manager stops it: its exit status, stdout and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_exit(
            &mut self.child,
            Duration::from_secs(60),
            "the proxy to stop after SIGTERM",
        );
        (status, self.stdout.all(), self.stderr.all())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
