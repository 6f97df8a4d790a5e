//! The recorder's store writer: a thread that writes batches in order, and what the
//! proxy says when the store keeps failing.

use super::*;

/// Finished batches waiting for the writer.
const WRITER_QUEUE: usize = 8;

/// A batch for the writer thread, with the permits of its chunks.
type Job = (WriteBatch, CaptureMeta, Vec<OwnedSemaphorePermit>);

/// The thread that writes and syncs batches, in order.
pub(super) struct Writer {
    pub(super) jobs: std::sync::mpsc::SyncSender<Job>,
    pub(super) done: std::thread::JoinHandle<Option<Store>>,
}

impl Writer {
    pub(super) fn spawn(store: Store) -> Writer {
        // Batches queue while one is written and synced; the writer then takes all
        // of them at once, with one sync (group commit). When the queue is full the
        // analysis task waits (and with it the tap queue and, in the end,
        // forwarding: lossless). Memory stays bounded by the connections' budgets.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(WRITER_QUEUE);
        let done = std::thread::Builder::new()
            .name("edgetap-store".into())
            .spawn(move || {
                background_priority();
                let mut failing = StoreFailing::default();
                loop {
                    let (mut batch, mut meta, mut permits) =
                        match rx.recv_timeout(Duration::from_secs(1)) {
                            Ok(job) => job,
                            // Quiet: what the store held back (the findings file is
                            // rewritten at most once a second) is written now, so
                            // readers of the live capture see every finding stored.
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                if let Err(e) = store.catch_up() {
                                    tracing::debug!("store summary not rewritten: {e}");
                                }
                                continue;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        };
                    while let Ok((b, m, p)) = rx.try_recv() {
                        batch.append(b);
                        meta = m;
                        permits.extend(p);
                    }
                    let bytes = batch.data_bytes;
                    match store.write(batch, &meta) {
                        Ok(()) => failing.recovered(),
                        // The batch is counted as not recorded in the capture (the
                        // store does it); the next batch is tried as usual, so
                        // recording resumes by itself when space returns.
                        Err(e) => {
                            failing.failed(&e, bytes);
                            store.signal_failure();
                        }
                    }
                    // Released either way: a write error never stops forwarding
                    // (with --on-store-error stop the proxy shuts down instead).
                    drop(permits);
                }
                Some(store)
            })
            .expect("the store writer thread starts");
        Writer { jobs, done }
    }
}

/// Store write errors as the log shows them: the first one, then one line per
/// [`FAILING_REPORT`] with the count, and the recovery.
#[derive(Default)]
pub(super) struct StoreFailing {
    since: Option<Instant>,
    last_report: Option<Instant>,
    batches: u64,
    bytes: usize,
}

const FAILING_REPORT: Duration = Duration::from_secs(10);

impl StoreFailing {
    pub(super) fn failed(&mut self, e: &StoreError, bytes: usize) {
        self.batches += 1;
        self.bytes += bytes;
        let now = Instant::now();
        if self.since.is_none() {
            self.since = Some(now);
            self.last_report = Some(now);
            tracing::error!(
                "store write failed: {e}; {bytes} bytes not recorded (forwarding goes on; recording is retried with every batch)"
            );
        } else if self.last_report.is_some_and(|t| now - t >= FAILING_REPORT) {
            self.last_report = Some(now);
            tracing::error!(
                "store still failing: {} batches ({} bytes) not recorded so far: {e}",
                self.batches,
                self.bytes
            );
        }
    }

    pub(super) fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                "store writable again after {:.1} s: recording resumed ({} batches, {} bytes were not recorded; the capture says so)",
                since.elapsed().as_secs_f64(),
                self.batches,
                self.bytes
            );
            self.batches = 0;
            self.bytes = 0;
        }
    }
}
