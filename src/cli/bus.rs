//! Command-line definitions of the scale-out bus: `bus nats-config`, `judge`,
//! `fleet`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Format, RulesArgs, ShownArgs};

#[derive(Subcommand, Debug)]
pub enum BusCommand {
    /// Print the nats-server configuration the bus commands expect: JetStream on,
    /// and the mapping of edgetap.msg.<edge>.<direction> to N partitions.
    #[command(after_help = "Examples:\n  \
        edgetap bus nats-config --partitions 64 > edgetap-nats.conf\n  \
        nats-server -c edgetap-nats.conf\n\n\
        Every record of one edge lands in one partition (the server hashes the escaped edge\n\
        id: `{{partition(N,1)}}`). Needs nats-server 2.8 or later (Debian 12: 2.9.10).")]
    NatsConfig(NatsConfigArgs),
}

#[derive(clap::Args, Debug)]
pub struct NatsConfigArgs {
    /// Partitions: the units judges share out (`judge --partitions K..M`).
    #[arg(long, default_value_t = 64)]
    pub partitions: u32,
    /// JetStream's store directory; - leaves it out (for `nats-server -js -sd DIR`,
    /// which refuses both).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nats")]
    pub store_dir: String,
    /// The server's client port.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
}

pub const JUDGE_HELP: &str = "Examples:\n  \
    edgetap judge --bus nats://127.0.0.1:4222 --partitions 0..21\n  \
    edgetap judge --bus nats://127.0.0.1:4222 --partitions 22..42 --duration-ms 60000\n\n\
    Each partition is read by a durable pull consumer (judge-p<K>) and judged through one\n\
    pipeline, in stream order; findings go to edgetap.finding.<edge>, message counts to\n\
    edgetap.count.<edge>, what was exercised to edgetap.coverage.p<K>. A judge killed and\n\
    started again rebuilds its edges' state from the stream and goes on after the last\n\
    record it applied (kept on the bus, edgetap.cursor.p<K>): nothing judged twice, nothing\n\
    lost. Requests never answered and jobs never finished stay pending (the stream has no\n\
    end), unless --finish: then a stopped judge judges them.\n\n\
    Exit codes: 0 stopped (Ctrl-C, SIGTERM, --duration-ms), 2 bad usage or the bus failed.";

#[derive(clap::Args, Debug)]
pub struct JudgeArgs {
    /// The bus, nats://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub bus: String,
    /// The partitions this judge takes: K..M (both included) or K.
    #[arg(long, value_name = "K..M", value_parser = parse_range)]
    pub partitions: std::ops::RangeInclusive<u32>,
    /// Stop after this long (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
    /// How often changed message counts are published.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub report_ms: u64,
    /// How long the streams keep records and findings, when the judge creates them
    /// (a restarted judge rebuilds its state from what they hold).
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    pub retention_h: u64,
    /// When stopped, judge the end of input (requests never answered, replies
    /// nothing explained, jobs never finished), as `watch` does: for a bounded run,
    /// once the watchers have stopped.
    #[arg(long)]
    pub finish: bool,
    #[command(flatten)]
    pub rules: RulesArgs,
}

pub const FLEET_HELP: &str = "Examples:\n  \
    edgetap fleet --bus nats://127.0.0.1:4222 --duration-ms 0\n  \
    edgetap fleet --bus nats://127.0.0.1:4222 --labels edges.csv --format html > fleet.html\n  \
    edgetap fleet --bus nats://127.0.0.1:4222 --format json --duration-ms 0 > fleet.json\n  \
    edgetap fleet --bus nats://127.0.0.1:4222 --http 127.0.0.1:8080\n\n\
    Reads what the judges published (every finding stored, the latest counts), then what\n\
    they publish until Ctrl-C, SIGTERM or --duration-ms (0: what is stored now), and writes\n\
    one report: summary, clause table, findings, edges with their message counts, and with\n\
    --labels the edges by label. --labels FILE maps edge ids to labels: JSON\n\
    {\"E1\": {\"vendor\": \"A\", \"site\": \"north\"}} or CSV with a header `edge,vendor,site`.\n\n\
    With --http ADDR it serves the report so far while it reads: / the HTML page (reloads\n\
    itself), /api/report the JSON, /metrics; loopback unless --http-token (then every\n\
    request sends `Authorization: Bearer TOKEN` or ?token=TOKEN).\n\n\
    Exit codes: as `analyze`: 1 error findings, 3 nothing judged, 2 bad usage or the bus\n\
    failed, 0 otherwise.";

#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// The bus, nats://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub bus: String,
    /// Edge id → labels (vendor, site, …), JSON or CSV.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Read what the judges publish for this long after what is stored (0: stop when
    /// caught up; default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
    /// Format of the report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Serve the report so far while reading (the HTML page, /api/report,
    /// /metrics) on this address, e.g. 127.0.0.1:8080. Loopback unless
    /// --http-token is given.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The token every request to --http must carry (required for a non-loopback
    /// --http).
    #[arg(long, value_name = "TOKEN", requires = "http")]
    pub http_token: Option<String>,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub shown: ShownArgs,
}

/// `K..M` (both included) or `K`.
fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{t:?} is not a partition number"))
    };
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => (num(s)?, num(s)?),
    };
    if a > b {
        return Err(format!("{s}: the first partition is after the last"));
    }
    Ok(a..=b)
}
