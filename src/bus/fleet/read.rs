//! Reading what the judges published: everything the streams hold, then what comes,
//! until the caller's `until` completes (or at once when caught up, without it).
//! [`read_into`] keeps the [`Fleet`] where others can look at it meanwhile
//! (`fleet --http`): each batch is taken under its lock, never held across a wait.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::Fleet;
use crate::bus::wire::{BusFinding, EdgeCount, PartitionState};
use crate::bus::{subject, BusError, COUNT_STREAM, FINDING_STREAM};

/// Reads the bus at `url` into a [`Fleet`]: what is stored, then, with `until`,
/// what the judges publish until it completes. `on_caught_up` is called once what
/// was stored has been read.
pub async fn read(
    url: &str,
    until: Option<impl Future<Output = ()>>,
    on_caught_up: impl FnOnce(&Fleet),
) -> Result<Fleet, BusError> {
    let fleet = Mutex::new(Fleet::default());
    read_into(url, &fleet, until, on_caught_up).await?;
    Ok(fleet.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// [`read`] into `fleet`, shared.
pub async fn read_into(
    url: &str,
    fleet: &Mutex<Fleet>,
    until: Option<impl Future<Output = ()>>,
    on_caught_up: impl FnOnce(&Fleet),
) -> Result<(), BusError> {
    let js = crate::bus::open(url, crate::bus::DEFAULT_RETENTION).await?;
    let mut findings = reader(&js, FINDING_STREAM).await?;
    let mut counts = reader(&js, COUNT_STREAM).await?;
    // Caught up: each reader is past what its stream held at the start (the judges
    // keep publishing; an empty read is not the test).
    for r in [&mut findings, &mut counts] {
        while r.seen < r.last_at_start {
            if fetch(r, fleet).await? == 0 {
                break;
            }
        }
    }
    on_caught_up(&lock(fleet));
    let Some(until) = until else {
        return Ok(());
    };
    tokio::pin!(until);
    loop {
        let a = fetch(&mut findings, fleet).await?;
        let b = fetch(&mut counts, fleet).await?;
        if a == 0 && b == 0 {
            // Nothing new: look again shortly.
            tokio::select! {
                _ = &mut until => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        } else if futures_util::FutureExt::now_or_never(&mut until).is_some() {
            break;
        }
    }
    // What came meanwhile belongs to the report.
    for r in [&mut findings, &mut counts] {
        let last = r.last_now().await;
        while r.seen < last {
            if fetch(r, fleet).await? == 0 {
                break;
            }
        }
    }
    Ok(())
}

fn lock(fleet: &Mutex<Fleet>) -> MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(|e| e.into_inner())
}

/// One stream read from its start.
struct Reader {
    stream: jetstream::stream::Stream,
    consumer: consumer::Consumer<consumer::pull::Config>,
    /// The stream's last sequence when reading began.
    last_at_start: u64,
    /// The last stream sequence read.
    seen: u64,
}

impl Reader {
    async fn last_now(&self) -> u64 {
        self.stream
            .get_info()
            .await
            .map_or(self.seen, |i| i.state.last_sequence)
    }
}

async fn reader(js: &jetstream::Context, name: &str) -> Result<Reader, BusError> {
    let stream = js
        .get_stream(name)
        .await
        .map_err(|e| BusError::new(format!("opening the stream {name}"), e))?;
    let last_at_start = stream
        .get_info()
        .await
        .map_err(|e| BusError::new(format!("reading the stream {name}"), e))?
        .state
        .last_sequence;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::new(format!("reading the stream {name}"), e))?;
    Ok(Reader {
        stream,
        consumer,
        last_at_start,
        seen: 0,
    })
}

/// Takes what is there now (up to a batch); how many.
async fn fetch(r: &mut Reader, fleet: &Mutex<Fleet>) -> Result<usize, BusError> {
    let mut batch = r
        .consumer
        .fetch()
        .max_messages(1000)
        .messages()
        .await
        .map_err(|e| BusError::new("reading the judges' output", e))?;
    let mut got = vec![];
    while let Some(m) = batch.next().await {
        let m = m.map_err(|e| BusError::new("reading the judges' output", e))?;
        if let Ok(i) = m.info() {
            r.seen = r.seen.max(i.stream_sequence);
        }
        got.push(m);
    }
    let mut fleet = lock(fleet);
    for m in &got {
        take(&mut fleet, m.subject.as_str(), &m.payload);
    }
    Ok(got.len())
}

fn take(fleet: &mut Fleet, subject: &str, body: &[u8]) {
    let ok = if subject.starts_with(subject::FINDING_PREFIX) {
        serde_json::from_slice::<BusFinding>(body)
            .map(|f| fleet.finding(f))
            .is_ok()
    } else if subject.starts_with(subject::COUNT_PREFIX) {
        serde_json::from_slice::<EdgeCount>(body)
            .map(|c| fleet.count(c))
            .is_ok()
    } else if subject.starts_with(subject::COVERAGE_PREFIX) {
        serde_json::from_slice::<PartitionState>(body)
            .map(|s| fleet.partition(s))
            .is_ok()
    } else {
        true
    };
    if !ok {
        tracing::warn!("{subject}: a message that is not the judges' JSON; left out");
        fleet.unreadable += 1;
    }
}
