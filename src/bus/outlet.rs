//! `watch --bus`: the watcher's deliveries go to the bus instead of a judge. The
//! subscriber is `watch`'s own ([`crate::watch::subscriber`]); this outlet takes
//! its events at the same seam the judging outlet does ([`Outlet`]) and publishes
//! each delivery as a record ([`Publisher`]). Nothing is judged here.

use std::future::Future;

use super::publish::Publisher;
use super::BusError;
use crate::watch::subscriber::Subscriber;
use crate::watch::{drain, Delivery, Event, Outlet, WatchSettings};

/// What a watch onto the bus comes to.
#[derive(Debug, Default)]
pub struct Published {
    /// Deliveries received.
    pub received: u64,
    /// Records the stream acknowledged.
    pub stored: u64,
    /// Of them, repeats the stream recognised (not stored twice).
    pub duplicates: u64,
    /// The watcher's own outages (from, to, cause).
    pub outages: Vec<String>,
    /// The first failure of the bus: what came after it was not published.
    pub error: Option<BusError>,
}

struct ToBus {
    rt: tokio::runtime::Handle,
    publisher: Publisher,
    out: Published,
}

impl ToBus {
    fn publish(&mut self, d: Delivery) {
        self.out.received += 1;
        if self.out.error.is_some() {
            return;
        }
        let r = self
            .rt
            .block_on(self.publisher.send(d.topic, d.payload, d.time_us, d.retain));
        if let Err(e) = r {
            self.out.error = Some(e);
        }
    }
}

impl Outlet for ToBus {
    fn event(&mut self, ev: Event) {
        match ev {
            Event::Delivery(d) => self.publish(d),
            Event::Down { at_us, cause } => self.out.outages.push(format!(
                "the connection to the broker was lost at {} ({cause}): what was published until it came back was not seen",
                crate::report::rfc3339(at_us, 0).unwrap_or_default()
            )),
            Event::Up { .. } | Event::Tick => {}
        }
    }

    fn idle(&mut self) {
        if self.out.error.is_none() {
            if let Err(e) = self.rt.block_on(self.publisher.flush()) {
                self.out.error = Some(e);
            }
        }
    }
}

/// Subscribes as `settings` says and publishes every delivery to the bus at `url`
/// until `shutdown` completes; the watcher id in each record is the client id.
pub async fn watch_to_bus(
    settings: &WatchSettings,
    url: &str,
    on_up: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<Published, BusError> {
    let publisher = Publisher::connect(url, &settings.client_id).await?;
    let sub = Subscriber::start(settings)
        .await
        .map_err(|e| BusError::new(format!("subscribing at {}", settings.source()), e))?;
    on_up();
    let (events, ticks, stop) = sub.split();
    // No ticks: the channel closes (and the thread ends) once the subscriber stops.
    drop(ticks);
    let mut outlet = ToBus {
        rt: tokio::runtime::Handle::current(),
        publisher,
        out: Published::default(),
    };
    let thread = std::thread::Builder::new()
        .name("edgetap-bus".into())
        .spawn(move || {
            drain(events, &mut outlet);
            outlet.out.stored = outlet.publisher.stored;
            outlet.out.duplicates = outlet.publisher.duplicates;
            outlet.out
        })
        .map_err(|e| BusError::new("starting the publishing thread", e))?;
    shutdown.await;
    stop.stop().await;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| BusError::new("the publishing thread", e))?
        .map_err(|_| BusError::new("the publishing thread", "panicked"))
}
