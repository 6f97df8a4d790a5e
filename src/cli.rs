//! Command-line definitions. Thin: arguments become settings, then `run`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod bus;
mod watch_args;
pub use watch_args::WatchArgs;

#[derive(Parser, Debug)]
#[command(
    name = "edgetap",
    version,
    about = "Conformance checks for the MQTT protocol of T/YQDEIF 003-2022 (power IoT cloud-edge interaction)",
    long_about = "edgetap decodes MQTT traffic between edge IoT agents and IoT management platforms, \
and judges it against clause 5.3 and clause 6 of T/YQDEIF 003-2022. Its report reads like the \
standard's test record: each clause pass, fail or not exercised, each finding citing clause and table.\n\n\
Exit codes: 0 no error findings, 1 error findings (for `analyze` with filters: of the \
findings shown), 2 bad usage or unreadable input; analyze: 3 nothing judged (see \
`edgetap analyze --help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check pcap/pcapng captures (tcpdump, Wireshark) against the standard.
    #[command(after_help = "Examples:\n  \
        edgetap analyze session.pcap\n  \
        edgetap analyze --format json capture-*.pcapng > report.json\n  \
        edgetap analyze --port 18830 --rules ./vendor-rules site.pcap\n  \
        edgetap analyze --format junit session.pcap > junit.xml\n  \
        edgetap analyze --format html session.pcap > record.html\n  \
        edgetap analyze --severity error --clause 6.1.3 session.pcap\n  \
        edgetap analyze --edge E1 --rule t10. --each session.pcap\n  \
        edgetap analyze --disable naming.key session.pcap\n\n\
        The table groups repeated findings (same rule, clause, edge and message but for\n\
        numbers and ids): one line with the count and the first and last packet. --each\n\
        lists every finding. The JSON keeps every finding in `findings` and adds `groups`\n\
        and `edges`.\n\n\
        Filters (--edge, --severity, --rule, --clause) change what is shown in every format:\n\
        the counts, the clause verdicts, the groups and the exit code are those of the\n\
        findings shown, and the summary says how many were left out. So a CI job can gate\n\
        on one clause: `edgetap analyze --clause 6.1.3 s.pcap` exits 1 only for errors of\n\
        6.1.3. --disable switches a rule off: it does not run at all.\n\n\
        Exit codes (the first that applies):\n  \
        2  bad usage, or unreadable input: not a capture, framing broken before the end of\n     \
           the file, or not a single frame read (the message names file, frame, byte offset)\n  \
        1  error findings (shown, when filtered)\n  \
        3  nothing judged: no protocol message in the input (no MQTT on the --port ports and\n     \
           no flow starting with a CONNECT, TLS only, no /v1/... topic, ...); the reason and a\n     \
           hint are printed, JSON has summary.judged false, JUnit has a failure\n  \
        0  protocol messages judged, no error finding\n\n\
        A capture cut inside its last record is read up to the cut and said so (summary.incomplete).")]
    Analyze(AnalyzeArgs),
    /// List or lint the rule set.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run an MQTT broker (3.1.1 and 5) in this process, for the sims and tests.
    #[command(after_help = "Examples:\n  \
        edgetap broker --listen 127.0.0.1:1883\n  \
        edgetap broker --listen 0.0.0.0:1883 --listen-v5 0.0.0.0:8883")]
    Broker(BrokerArgs),
    /// Reference edge and reference platform (the platform runs the clause 6 test plan).
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Embedded broker, the proxy in front of it, reference platform and edge in one process: the plan on a
    /// conforming edge, then on the same edge with one fault.
    #[command(after_help = "Examples:\n  \
        edgetap demo\n  \
        edgetap demo --fault no-job-result --mqtt5")]
    Demo(DemoArgs),
    /// Sit between an edge device and its broker or platform: forward bytes unchanged,
    /// print findings as they happen, record everything in the store, print the
    /// clause table on Ctrl-C or SIGTERM.
    #[command(after_help = "Examples:\n  \
        edgetap proxy --listen 0.0.0.0:1883 --upstream broker.example:1883 --name site-A\n  \
        edgetap proxy --listen 127.0.0.1:18830 --upstream 127.0.0.1:1883 --store /var/lib/edgetap\n\n\
        The store is written and fsynced every 100 ms or every 1 MiB of traffic (a quarter \
        of --max-buffered when that is less), whichever comes first; a killed proxy keeps \
        everything up to that window. When the store \
        falls behind, forwarding slows (recording is lossless). When it cannot write \
        (disk full), see --on-store-error. `captures list/show/export` and \
        `analyze --capture` read the store while the proxy records.\n\n\
        Live view (--http 127.0.0.1:8080): open http://127.0.0.1:8080/ for the test record \
        so far (it reloads itself); scripts read /api/captures, /api/clauses, /api/edges, \
        /api/findings, /api/report (filters: ?edge=E1&severity=error&rule=t10.&clause=6.1.3) \
        and Prometheus reads /metrics. A non-loopback --http needs --http-token; clients \
        then send `Authorization: Bearer TOKEN` or ?token=TOKEN.\n\n\
        Exit codes (the first that applies): 4 something forwarded was not recorded (store \
        write errors; the capture and the summary say what), 2 bad usage or a store that \
        cannot be opened, 1 error findings, 3 nothing judged (no protocol message came \
        through: the run proves nothing; stderr says why), 0 messages judged, no error \
        finding.")]
    Proxy(ProxyArgs),
    /// List, show, delete and export the captures recorded by `edgetap proxy`.
    Captures {
        #[command(subcommand)]
        command: CapturesCommand,
    },
    /// Play one side of a recorded session to a real counterpart, judge its answers
    /// against the recorded ones, send mutations; regression mode with --expect.
    #[command(after_help = "Examples:\n  \
        edgetap replay session.pcap --as platform --broker 127.0.0.1:1883 --asap\n  \
        edgetap replay session.pcap --as platform --broker 127.0.0.1:1883 --edge-id DUT1 \\\n      \
        --mutate drop-field --mutate invalid-json --seed 7 --format junit > replay.xml\n  \
        edgetap replay 3 --store ./edgetap-store --as platform --broker dut:1883 --expect golden.json\n  \
        edgetap replay --list-mutations\n\n\
        As platform, start the replay before the device powers on (or restart the device): \
        its EVENT_LINKUP and topo requests are then exercised too. A device already online \
        does not send them again; after --edge-wait-ms they are reported as not exercised \
        (SKIP, JUnit <skipped>), which neither passes nor fails the run.\n\n\
        Exit codes: 0 as recorded (as --expect with --expect; saved with --save-expect), \
        1 differences, 2 bad usage, unreadable input, or a broker that refused the \
        connection (refused, login refused, closed, no CONNACK) or lost it during the replay, \
        or --save-expect refused (the counterpart answered nothing), 3 nothing exercised (no \
        exchange of the edge to play in that role: the run proves nothing), 130 interrupted \
        (Ctrl-C or SIGTERM: the report covers what ran).")]
    Replay(ReplayArgs),
    /// Judge a whole fleet from one ordinary MQTT subscription to /v1/#: no proxy,
    /// no insertion; the live console, then the clause table per edge on Ctrl-C,
    /// SIGTERM or --duration-ms.
    #[command(after_help = "Examples:\n  \
        edgetap watch --broker 127.0.0.1:1883\n  \
        EDGETAP_MQTT_PASSWORD=secret edgetap watch --broker ops@broker.example:8883 --tls-ca ca.pem\n  \
        edgetap watch --broker 127.0.0.1:1883 --findings findings.eve.json --duration-ms 60000 --format json > report.json\n\n\
        What a subscriber cannot see (the devices' CONNECT and client ids, the QoS they\n\
        published with, what the broker dropped) is reported once, as clause 5.2 not\n\
        exercised. The live console shares stdout with the table; with another --format\n\
        it goes to stderr. With --findings -, stdout carries only the finding lines; the\n\
        live console and the final report go to stderr.\n\n\
        Exit codes: as `analyze`: 2 bad usage or the broker refused the first connection,\n\
        1 error findings, 3 nothing judged (no protocol message came), 0 otherwise.")]
    Watch(WatchArgs),
    /// The scale-out bus on NATS JetStream: the server configuration it expects.
    Bus {
        #[command(subcommand)]
        command: bus::BusCommand,
    },
    /// Judge partitions of the bus (what `watch --bus` publishes), publish the findings.
    #[command(after_help = bus::JUDGE_HELP)]
    Judge(bus::JudgeArgs),
    /// One report of the whole fleet from what the judges published.
    #[command(after_help = bus::FLEET_HELP)]
    Fleet(bus::FleetArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayRole {
    Platform,
    Edge,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A pcap/pcapng file, or the id of a capture in --store.
    #[arg(required_unless_present = "list_mutations")]
    pub source: Option<String>,
    /// The side edgetap plays.
    #[arg(long = "as", value_enum, required_unless_present = "list_mutations")]
    pub role: Option<ReplayRole>,
    /// Broker, HOST:PORT, or USER@HOST:PORT to log in (the password from the
    /// environment variable EDGETAP_MQTT_PASSWORD, never on the command line).
    #[arg(long, required_unless_present = "list_mutations")]
    pub broker: Option<String>,
    /// Live edge id (default: the recorded one); replaced in topics and fields.
    #[arg(long)]
    pub edge_id: Option<String>,
    /// The recorded edge to play, of a capture that holds several (default: the
    /// first one seen; the report lists them all).
    #[arg(long, value_name = "ID")]
    pub edge: Option<String>,
    /// Pace as recorded, scaled by this factor (2 = twice as fast; more than 0).
    #[arg(long, default_value_t = 1.0, conflicts_with = "asap", value_parser = parse_speed)]
    pub speed: f64,
    /// As fast as the answers allow.
    #[arg(long)]
    pub asap: bool,
    /// A built-in mutation or a JSON mutation file (repeatable).
    #[arg(long = "mutate", value_name = "NAME|FILE")]
    pub mutations: Vec<String>,
    /// Seed of the random choices (printed in the report) [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// A field name or dotted path whose value is not compared (repeatable).
    #[arg(long = "noise", value_name = "FIELD")]
    pub noise: Vec<String>,
    /// Send the recorded job ids instead of fresh ones.
    #[arg(long)]
    pub keep_job_ids: bool,
    /// Compare the outcome with a saved one: any divergence exits 1.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Save the outcome for --expect (exit code 0 once saved, whatever the
    /// differences from the recording: they are what later runs must match; refused,
    /// exit 2, when the counterpart answered nothing).
    #[arg(long, value_name = "FILE")]
    pub save_expect: Option<PathBuf>,
    /// How long to wait for each answer, in ms.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// How long to watch the counterpart after a mutated message, in ms.
    #[arg(long, default_value_t = 2000)]
    pub mutation_window_ms: u64,
    /// As platform: how long to wait for the edge's own EVENT_LINKUP, in ms. An edge
    /// already online does not send it again: the exchanges the edge starts by itself
    /// (EVENT_LINKUP, topo requests) are then reported as not exercised (skipped,
    /// neither pass nor fail) and the platform's commands are replayed and judged.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub edge_wait_ms: u64,
    /// Write the live session as a pcap.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// TCP port of the broker in the capture file (repeatable).
    #[arg(long = "port", default_value = "1883")]
    pub ports: Vec<u16>,
    /// The capture store, for a capture id SOURCE.
    #[arg(long = "store", value_name = "DIR", default_value = edgetap::store::DEFAULT_DIR)]
    pub store_dir: PathBuf,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Speak MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub mqtt5: bool,
    /// List the built-in mutations.
    #[arg(long)]
    pub list_mutations: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The capture store (a folder of plain files). `captures`, `analyze --capture` and
    /// `replay` read it while a proxy records into it.
    #[arg(long = "store", id = "store_dir", value_name = "DIR", default_value = edgetap::store::DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The final report's filters and listing (the live lines are every finding).
    #[command(flatten)]
    pub shown: ShownArgs,
    /// Address to accept device connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The real broker or platform, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: String,
    /// Name of this capture in the store.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Most connections served at once; more wait to be accepted. Lowered (with a
    /// warning) to what the open-file limit leaves, two descriptors a connection;
    /// the proxy first raises its soft limit to the hard one.
    #[arg(long, default_value_t = 2048)]
    pub max_connections: usize,
    /// Bytes per connection read but not yet on disk; when reached, forwarding on
    /// that connection waits. Also the analysis buffer: a larger packet is forwarded
    /// and recorded whole but judged from its header. (4 MiB: with 1 MiB, a
    /// connection at full speed waited for every fsync.)
    #[arg(long, default_value_t = 4 << 20)]
    pub max_buffered: usize,
    /// Largest MQTT packet accepted, in bytes; larger ones are reported and skipped.
    /// The proxy judges at most --max-buffered bytes of a packet: a larger one is
    /// forwarded byte for byte and judged from its header (an mqtt.oversized finding).
    #[arg(long, default_value_t = edgetap::mqtt::MQTT_MAX_REMAINING)]
    pub max_packet_size: usize,
    /// Close a connection after this many seconds without a byte either way
    /// [default: 3 × the keep-alive of its CONNECT, at least 10 s, at most 1800 s;
    /// 300 s before a CONNECT or with keep-alive 0].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: Option<u64>,
    /// MQTT over WebSocket (RFC 6455): the HTTP upgrade and the frames are forwarded
    /// untouched; MQTT is decoded from the binary frames.
    #[arg(long)]
    pub websocket: bool,
    /// Terminate the devices' TLS with this certificate chain (PEM, leaf first);
    /// the plaintext is analysed. Without it a TLS flow is forwarded untouched and
    /// reported as not decodable.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Speak TLS to the upstream; its certificate must name the --upstream host.
    #[arg(long)]
    pub upstream_tls: bool,
    /// CA certificates (PEM) the upstream's certificate must chain to
    /// [default: the system's roots].
    #[arg(long, value_name = "FILE", requires = "upstream_tls")]
    pub upstream_ca: Option<PathBuf>,
    /// Serve the live view (the HTML record so far, a JSON API, /metrics) on this
    /// address, e.g. 127.0.0.1:8080. Loopback unless --http-token is given.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The token every live-view request must carry (required for a non-loopback
    /// --http). Note that other local users can read a process's arguments.
    #[arg(long, value_name = "TOKEN", requires = "http")]
    pub http_token: Option<String>,
    /// Live-view connections held at once; when all are taken, the oldest one that
    /// has not sent its request yet gives way. A request head must be complete
    /// within 5 s, an answer within 30 s.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "http",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub http_max_connections: u64,
    /// What a store write error (a full disk above all) does. keep-forwarding: the
    /// devices are served on; what could not be written is counted (bytes, events,
    /// time span) in the capture, which `captures list/show`, every report and the
    /// final summary mark INCOMPLETE; every later batch is tried again, so recording
    /// resumes by itself when space returns. stop: the proxy shuts down at the first
    /// failed write. Either way the proxy exits 4 when something was not recorded.
    #[arg(
        long,
        value_enum,
        default_value = "keep-forwarding",
        value_name = "WHAT"
    )]
    pub on_store_error: OnStoreError,
    /// Store CONNECT passwords and user names (and MQTT 5 Authentication Data) as
    /// sent. By default they are overwritten before they reach the disk, in the raw
    /// bytes and in the decoded record, by as many '*' (the stream still decodes).
    #[arg(long)]
    pub store_secrets: bool,
    /// Write each finding as it is judged as one JSON line (EVE style) to FILE, or -
    /// for stdout (the live console then goes to stderr).
    #[arg(long, value_name = "FILE|-")]
    pub findings: Option<PathBuf>,
    /// The share of one CPU core, in percent, the live judge (the rule engine) may
    /// take while the proxy records into a store, so that judging never slows the
    /// devices on a machine short of cores. At the default, about 12,000 messages
    /// of 1 KB a second are judged live; past what the share allows, judging falls
    /// behind, skips (the console and live view say how many), and the final
    /// report judges the whole capture again from the store. 100: no cap. Without
    /// --store there is no cap: recording waits for the judge instead. With no
    /// traffic for 0.5 s, the judge works through its backlog at full speed.
    #[arg(long, value_name = "PERCENT", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    // 5 rather than 10: bench/proxy.sh's conforming QoS 1 run went from 0.65 to 0.69
    // of direct (HAProxy 0.71), medians of 9 turns.
    pub judge_cpu: u8,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreError {
    KeepForwarding,
    Stop,
}

#[derive(Subcommand, Debug)]
pub enum CapturesCommand {
    /// Every capture: id, name, start, end, connections, packets.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// One capture: its connections, packets and findings.
    Show {
        id: u64,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print CONNECT user names and passwords instead of <redacted> (with
        /// --payloads, also the credentials inside payloads).
        #[arg(long)]
        show_secrets: bool,
        /// Print every protocol message (topic and payload) with its connection's
        /// client id; credential values in payloads are redacted.
        #[arg(long)]
        payloads: bool,
    },
    /// Remove a capture and all it holds.
    Delete {
        id: u64,
        #[command(flatten)]
        store: StoreArgs,
        /// Delete a capture that has no end time: one a proxy is still recording
        /// (its recording is lost), or one whose proxy was killed.
        #[arg(long)]
        force: bool,
    },
    /// Write a capture as pcapng (synthesized Ethernet/IP/TCP headers, findings as
    /// packet comments).
    Export {
        /// Capture id, as `captures list` shows it.
        id: u64,
        /// The pcapng file to write; findings become comments on their packets.
        #[arg(long, value_name = "FILE")]
        pcapng: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Keep CONNECT user names and passwords in the exported bytes.
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng), analyzed in order as one session.
    #[arg(required_unless_present = "capture")]
    pub files: Vec<PathBuf>,
    /// Analyze a capture recorded by `edgetap proxy` instead of files.
    #[arg(long, value_name = "ID", conflicts_with = "files")]
    pub capture: Option<u64>,
    /// The capture store, with --capture.
    #[arg(long = "store", value_name = "DIR", default_value = edgetap::store::DEFAULT_DIR)]
    pub store_dir: PathBuf,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// TCP port of the MQTT broker (repeatable). A flow whose first client bytes are
    /// an MQTT CONNECT is decoded whatever its port.
    #[arg(long = "port", default_value = "1883")]
    pub ports: Vec<u16>,
    /// Largest MQTT packet accepted, in bytes; larger ones are reported and skipped.
    #[arg(long, default_value_t = edgetap::mqtt::MQTT_MAX_REMAINING)]
    pub max_packet_size: usize,
    /// Do not show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write each finding shown as one JSON line (EVE style) to FILE, or - for
    /// stdout (the report then goes to stderr).
    #[arg(long, value_name = "FILE|-")]
    pub findings: Option<PathBuf>,
    #[command(flatten)]
    pub shown: ShownArgs,
}

/// The filters and listing of a report: `analyze` and the final reports of `proxy`
/// and `sim platform`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShownArgs {
    /// List every finding on its own line instead of grouping repeated ones (table
    /// format; JSON always holds every finding, JUnit lists groups).
    #[arg(long)]
    pub each: bool,
    /// Show only the findings of this edge id (repeatable).
    #[arg(long = "edge", value_name = "ID", help_heading = "Filters")]
    pub edges: Vec<String>,
    /// Show only findings of this severity or above.
    #[arg(long, value_enum, value_name = "LEVEL", help_heading = "Filters")]
    pub severity: Option<SeverityArg>,
    /// Show only the findings of this rule id, or of every rule an id prefix ending in
    /// `.` names, such as `t10.` (repeatable).
    #[arg(long = "rule", value_name = "ID", help_heading = "Filters")]
    pub rules_shown: Vec<String>,
    /// Show only the findings of this clause and its sub-clauses: `6.1` holds 6.1.3
    /// (repeatable).
    #[arg(long = "clause", value_name = "C", help_heading = "Filters")]
    pub clauses: Vec<String>,
}

/// `--severity`: the lowest severity shown.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeverityArg {
    Info,
    Warning,
    Error,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RulesArgs {
    /// The clock of timestamps without a zone: +08:00 (China Standard Time, the
    /// standard's "CST 时间") by default; e.g. --tz Z for a device on UTC. Judges
    /// `expire`.
    #[arg(long, value_name = "OFFSET", value_parser = parse_tz)]
    pub tz: Option<i64>,
    /// Folder of rule files (*.json) that extend the built-in rules; a file with the
    /// name of a built-in file replaces it, a rule with an existing id replaces it.
    #[arg(long = "rules", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Use only the rules of --rules DIR, not the built-in ones.
    #[arg(long, requires = "dir")]
    pub no_default_rules: bool,
    /// Switch a rule off (repeatable): its id, or a prefix ending in `.` such as
    /// `naming.`. A rule file can do the same with {"disable": ["naming.key"]}. An id
    /// that names no rule is an error; `rules list` shows disabled rules as disabled.
    #[arg(long = "disable", value_name = "RULE")]
    pub disable: Vec<String>,
    /// Seconds a request may wait for its reply. The standard sets no deadline, so
    /// by default none applies: an unanswered request is "pending" (info). With a
    /// limit, a reply later than it is reply.late and a request unanswered that long
    /// while the input went on is reply.missing (warnings).
    #[arg(long, value_name = "SECONDS")]
    pub reply_timeout: Option<f64>,
    /// Seconds a job may run after it is due (its command's time plus its policy
    /// delay) before a missing REP_JOB_RESULT is job.result_missing (warning). Off by
    /// default: a job unfinished at the end of the input is "pending" (info). In `sim
    /// platform` it is also how long the plan waits for a job result (default 60),
    /// after which the detection item fails as timed out.
    #[arg(long, value_name = "SECONDS")]
    pub job_timeout: Option<f64>,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// List every rule: id, clause, table, severity, check; `--format md` prints
    /// every rule with its reading and its whole basis on one page (docs/rules.md).
    List {
        #[command(flatten)]
        rules: RulesArgs,
        #[arg(long, value_enum, default_value_t = RulesListFormat::Table)]
        format: RulesListFormat,
    },
    /// Check a folder of rule files; errors name the file and the rule id.
    Lint {
        /// The folder to check, on top of the built-in rules (use --alone to check it by itself).
        dir: PathBuf,
        /// Check the folder without the built-in rules.
        #[arg(long)]
        alone: bool,
    },
    /// Print the built-in rule files (a starting point for your own).
    Print,
    /// Print the tables' error rules as JSON Schema (draft-06), one per protocol
    /// topic, dispatching on `type`; with --emqx, the EMQX 5.7+ Schema Validation
    /// configuration that uses them (failure_action = ignore).
    #[command(after_help = "Examples:\n  \
        edgetap rules schema > schemas.json\n  \
        edgetap rules schema --topic /v1/+/device/data > device-data.schema.json\n  \
        edgetap rules schema --emqx > edgetap-validation.conf\n\n\
        A schema sees one message at a time: pairing, jobs, sequences and timing are not\n\
        in it (the output lists what it cannot check); `edgetap watch` judges those.")]
    Schema {
        #[command(flatten)]
        rules: RulesArgs,
        /// Only the schema of this topic filter (e.g. /v1/+/device/data), as a bare
        /// JSON Schema.
        #[arg(long, value_name = "FILTER", conflicts_with = "emqx")]
        topic: Option<String>,
        /// The EMQX configuration (HOCON) instead of the schemas.
        #[arg(long)]
        emqx: bool,
    },
}

/// The report formats are the renderers' (`report::render`): a new one is a file there.
pub use edgetap::report::Format;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

/// `rules list` formats: a list's, or one Markdown page for a reviewer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RulesListFormat {
    Table,
    Json,
    Md,
}

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Address of the MQTT 3.1.1 listener.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub listen: std::net::SocketAddr,
    /// Address of the MQTT 5 listener [default: the --listen port + 1].
    #[arg(long)]
    pub listen_v5: Option<std::net::SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// A conforming edge agent (or N of them); `--fault` breaks one rule on purpose.
    #[command(after_help = "Examples:\n  \
        edgetap sim edge --broker 127.0.0.1:1883 --edge-id E1\n  \
        edgetap sim edge --broker 127.0.0.1:1883 --edge-id E1 --fault wrong-code\n  \
        edgetap sim edge --broker 127.0.0.1:1883 --edge-id BENCH --count 1000 --duration-ms 20000\n\n\
        Faults: wrong-code, missing-field, no-job-result, wrong-mid, wrong-type, bad-timestamp,\n\
        duplicate-result, error-to-valid")]
    Edge(SimEdgeArgs),
    /// A conforming platform that runs the clause 6 test plan against one edge.
    #[command(after_help = "Examples:\n  \
        edgetap sim platform --broker 127.0.0.1:1883 --edge-id E1\n  \
        edgetap sim platform --broker 127.0.0.1:1883 --edge-id E1 --format junit > plan.xml\n  \
        edgetap sim platform --broker 192.168.1.10:1883 --edge-id E1 --package fw.bin\n  \
        edgetap sim platform --broker 127.0.0.1:1883 --edge-id E1 --package-url http://10.0.0.2/fw.bin --package-md5 HEX\n  \
        edgetap sim platform --broker 127.0.0.1:1883 --respond-only\n\n\
        Start the plan before the device powers on (or restart the device): its EVENT_LINKUP,\n\
        topo requests and first alarms come at boot. Against a device already online these\n\
        items are \"not exercised\" and nothing fails for it.\n\n\
        Without --package or --package-url, CMD_SYS_UPGRADE, CMD_APP_INSTALL and CMD_APP_UPGRADE\n\
        name a placeholder URL (http://repo.local/...) that no device can download: only the\n\
        exchange is tested. With --package FILE the plan serves FILE over HTTP (--http-listen,\n\
        default 0.0.0.0:0) and puts its URL, md5 and size in each command's file object; the URL's\n\
        host is --http-advertise, else the listen address, else this machine's address on the\n\
        route to the broker.\n\n\
        Exit code: 0 when no item fails, 1 when an item fails, 2 bad usage.")]
    Platform(SimPlatformArgs),
}

#[derive(clap::Args, Debug)]
pub struct SimEdgeArgs {
    /// Broker, HOST:PORT, or USER@HOST:PORT to log in (the password from the
    /// environment variable EDGETAP_MQTT_PASSWORD, never on the command line).
    #[arg(long)]
    pub broker: String,
    /// Edge id; with --count N the edges are ID-1 … ID-N.
    #[arg(long)]
    pub edge_id: String,
    /// Number of edges to run.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Break one rule on purpose (repeatable).
    #[arg(long = "fault", value_name = "NAME")]
    pub faults: Vec<String>,
    /// REP_SYS_STATUS period (announced as repPeriod.devPeriod).
    #[arg(long, default_value_t = 5000)]
    pub period_ms: u64,
    /// Time a job takes after its policy delay.
    #[arg(long, default_value_t = 2000)]
    pub job_ms: u64,
    /// Length of one second of a command's `policy` delay.
    #[arg(long, default_value_t = 1000)]
    pub policy_ms: u64,
    /// Raise an alarm this long after link-up and recover it as long again later (0: never).
    #[arg(long, default_value_t = 1000)]
    pub alarm_ms: u64,
    /// Do not ask for topo add/update/delete.
    #[arg(long)]
    pub no_topo: bool,
    /// Stop after this long (default: at Ctrl-C).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Speak MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub mqtt5: bool,
}

#[derive(clap::Args, Debug)]
pub struct SimPlatformArgs {
    /// The report's filters and listing.
    #[command(flatten)]
    pub shown: ShownArgs,
    /// Broker, HOST:PORT, or USER@HOST:PORT to log in (the password from the
    /// environment variable EDGETAP_MQTT_PASSWORD, never on the command line).
    #[arg(long)]
    pub broker: String,
    /// The edge under test.
    #[arg(long, required_unless_present = "respond_only")]
    pub edge_id: Option<String>,
    /// How long to wait for each reply (job results: --job-timeout, 60 s by default
    /// in the plan).
    #[arg(long, default_value_t = 10000)]
    pub wait_ms: u64,
    /// How long to wait for what the edge starts itself (link-up, topo, alarms).
    #[arg(long, default_value_t = 15000)]
    pub edge_wait_ms: u64,
    /// Serve FILE over HTTP as the package of upgrades and installs (its real md5 and size).
    #[arg(long, value_name = "FILE", group = "pkg")]
    pub package: Option<PathBuf>,
    /// Where --package is served [default: 0.0.0.0:0, any free port].
    #[arg(long, value_name = "ADDR", requires = "package")]
    pub http_listen: Option<std::net::SocketAddr>,
    /// Host (name or IP) the edge downloads --package from [default: the listen address,
    /// or when that is 0.0.0.0 this machine's address on the route to the broker].
    #[arg(long, value_name = "HOST", requires = "package")]
    pub http_advertise: Option<String>,
    /// The package on your own server, instead of --package.
    #[arg(long, value_name = "URL", group = "pkg", requires = "package_md5")]
    pub package_url: Option<String>,
    /// md5 of --package-url (32 hex digits); with --package it replaces the file's own
    /// md5, to check that the device verifies it.
    #[arg(long, value_name = "HEX", requires = "pkg")]
    pub package_md5: Option<String>,
    /// Size in bytes of --package-url.
    #[arg(long, value_name = "N", requires = "package_url")]
    pub package_size: Option<u64>,
    /// Write what the tap saw as a pcap, for `edgetap analyze`.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Only answer EVENT_LINKUP and topo requests of every edge, run no plan.
    #[arg(long)]
    pub respond_only: bool,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Speak MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub mqtt5: bool,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The fault of the second run.
    #[arg(long, default_value = "wrong-code")]
    pub fault: String,
    /// Run the sims over MQTT 5.
    #[arg(long)]
    pub mqtt5: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `+08:00`, `-0530`, `+8`, `Z` or `UTC` → seconds east of UTC.
/// `--speed`: a factor above 0 (0 would wait forever; `--asap` is the fastest).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err(format!(
            "{s}: the speed is a factor above 0 (2 = twice as fast); for no pauses at all use --asap"
        )),
        Err(_) => Err(format!("{s}: not a number (e.g. 1, 2, 0.5)")),
    }
}

pub fn parse_tz(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a UTC offset: use +08:00, -05:00, Z or UTC");
    let t = s.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m) = if digits.len() <= 2 {
        (digits.parse::<i64>().map_err(|_| bad())?, 0)
    } else {
        let (h, m) = digits.split_at(digits.len() - 2);
        (
            h.parse::<i64>().map_err(|_| bad())?,
            m.parse::<i64>().map_err(|_| bad())?,
        )
    };
    if h > 14 || m >= 60 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::{parse_speed, parse_tz};

    #[test]
    fn a_speed_is_a_factor_above_zero() {
        assert_eq!(parse_speed("2"), Ok(2.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_offsets_in_the_usual_spellings() {
        assert_eq!(parse_tz("+08:00"), Ok(8 * 3600));
        assert_eq!(parse_tz("+0800"), Ok(8 * 3600));
        assert_eq!(parse_tz("+8"), Ok(8 * 3600));
        assert_eq!(parse_tz("-05:30"), Ok(-(5 * 3600 + 30 * 60)));
        assert_eq!(parse_tz("Z"), Ok(0));
        assert_eq!(parse_tz("utc"), Ok(0));
        assert!(parse_tz("8").is_err());
        assert!(parse_tz("+25:00").is_err());
        assert!(parse_tz("+08:75").is_err());
    }
}
