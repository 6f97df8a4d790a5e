//! `edgetap bus nats-config`, and `watch --bus` (the watch front end publishing
//! instead of judging).

use std::io::Write;
use std::time::Duration;

use crate::cli::bus::BusCommand;
use edgetap::bus::config::ServerConfig;
use edgetap::watch::WatchSettings;

pub fn run(command: BusCommand, out: &mut dyn Write) -> anyhow::Result<u8> {
    match command {
        BusCommand::NatsConfig(a) => {
            let mut c = ServerConfig::new(a.partitions).map_err(anyhow::Error::msg)?;
            c.store_dir = (a.store_dir != "-").then_some(a.store_dir);
            c.port = a.port;
            out.write_all(c.text().as_bytes())?;
            Ok(0)
        }
    }
}

pub use super::shutdown;

/// `watch --bus URL`: subscribe, publish every delivery to the bus, judge nothing.
/// Exit codes: 0, or 2 when the broker or the bus failed.
pub fn watch(settings: &WatchSettings, url: &str, duration_ms: Option<u64>) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let source = settings.source();
    let published = rt.block_on(async {
        let stop = shutdown(duration_ms.map(Duration::from_millis))?;
        let up = || {
            eprintln!(
                "edgetap watch: subscribed to {source} as {}, publishing to {url}",
                settings.client_id
            )
        };
        anyhow::Ok(edgetap::bus::outlet::watch_to_bus(settings, url, up, stop).await?)
    })?;
    eprintln!(
        "edgetap watch: {} deliveries received, {} records stored on the bus ({} repeats recognised)",
        published.received, published.stored, published.duplicates
    );
    for o in &published.outages {
        eprintln!("edgetap watch: {o}");
    }
    match published.error {
        Some(e) => {
            eprintln!("edgetap watch: the bus failed: {e}; what came after was not published");
            Ok(edgetap::report::EXIT_UNREADABLE)
        }
        None => Ok(0),
    }
}
