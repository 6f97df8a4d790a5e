//! Command-line definitions. Thin: arguments become settings, then `run`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "edgetap",
    version,
    about = "Conformance checks for the MQTT protocol of T/YQDEIF 003-2022 (power IoT cloud-edge interaction)",
    long_about = "edgetap decodes MQTT traffic between edge IoT agents and IoT management platforms, \
and judges it against clause 5.3 and clause 6 of T/YQDEIF 003-2022. Its report reads like the \
standard's test record: each clause pass, fail or not exercised, each finding citing clause and table.\n\n\
Exit codes: 0 no error findings, 1 error findings, 2 bad usage or unreadable input."
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
        edgetap analyze --format junit session.pcap > junit.xml")]
    Analyze(AnalyzeArgs),
    /// List or lint the rule set.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng), analyzed in order as one session.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
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
}

#[derive(clap::Args, Debug, Clone)]
pub struct RulesArgs {
    /// Folder of rule files (*.json) that extend the built-in rules; a file with the
    /// name of a built-in file replaces it, a rule with an existing id replaces it.
    #[arg(long = "rules", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Use only the rules of --rules DIR, not the built-in ones.
    #[arg(long, requires = "dir")]
    pub no_default_rules: bool,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// List every rule: id, clause, table, severity, check.
    List {
        #[command(flatten)]
        rules: RulesArgs,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
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
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Junit,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}
