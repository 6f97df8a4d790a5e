//! The arguments of `edgetap watch`.

use std::path::PathBuf;

use super::{Format, RulesArgs, ShownArgs};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Broker, HOST:PORT, or USER@HOST:PORT to log in (the password from the
    /// environment variable EDGETAP_MQTT_PASSWORD, never on the command line).
    #[arg(long)]
    pub broker: String,
    /// Publish each delivery to the NATS JetStream bus at URL (nats://HOST:PORT) for
    /// `edgetap judge`, and judge nothing here (the findings, the store and the live
    /// view are then the judges' and `fleet`'s).
    #[arg(long, value_name = "URL", conflicts_with_all = ["findings", "store", "http"])]
    pub bus: Option<String>,
    /// Topic filter to subscribe to (repeatable).
    #[arg(long = "topic", value_name = "FILTER", default_value = edgetap::watch::ALL_TOPICS)]
    pub topics: Vec<String>,
    /// Speak MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub mqtt5: bool,
    /// TLS toward the broker, trusting the CA certificates (PEM) in FILE.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The watcher's client id [default: edgetap-watch-PID].
    #[arg(long)]
    pub client_id: Option<String>,
    /// Stop after this long (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
    /// Write each finding as one JSON line (EVE style) to FILE, or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub findings: Option<PathBuf>,
    /// Record what was received as a capture of this store (`analyze --capture ID`,
    /// `captures show/export` read it).
    #[arg(long = "store", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Name of the capture in the store [default: watch BROKER].
    #[arg(long, requires = "store")]
    pub name: Option<String>,
    /// Serve the live view (the HTML record so far, a JSON API, /metrics) on this
    /// address, e.g. 127.0.0.1:8080. Loopback unless --http-token is given.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The token every live-view request must carry (required for a non-loopback
    /// --http).
    #[arg(long, value_name = "TOKEN", requires = "http")]
    pub http_token: Option<String>,
    /// Largest MQTT packet taken, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_packet_size: usize,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Format of the final report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub shown: ShownArgs,
}
