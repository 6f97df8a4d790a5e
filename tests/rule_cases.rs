//! Every rule has a case that triggers it and one that stays silent.
//!
//! Each file in `tests/rule_cases/` holds cases: a session of protocol messages, each
//! published by the edge's or the platform's MQTT client connection, fed as real MQTT
//! bytes through the one pipeline, and the exact count of findings per rule expected.
//! Any other error or warning fails the case, so the silent cases prove the rule set
//! quiet on conforming traffic.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgetap::finding::{Severity, Side};
use edgetap::mqtt::encode;
use edgetap::pipeline::{Analyzer, Settings};

use crate::pipeline::Drive;
use edgetap::report::Collector;
use edgetap::rules::RuleSet;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    rule: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    messages: Vec<Msg>,
    fires: BTreeMap<String, usize>,
    #[serde(default)]
    allow: Vec<String>,
    /// The analyzer's maximum packet size (default: MQTT's own limit).
    #[serde(default)]
    max_packet: Option<usize>,
    /// The capture joined both connections after they opened: no CONNECT seen.
    #[serde(default)]
    joined: bool,
    /// The connections' start is seen, but the usual CONNECT is not sent: the first
    /// message's bytes open the connection.
    #[serde(default)]
    no_connect: bool,
    /// Seconds after t0 at which the input ends (a PINGREQ then), when later than
    /// the last message.
    #[serde(default)]
    end: Option<f64>,
    /// The user's --reply-timeout and --job-timeout.
    #[serde(default)]
    reply_timeout: Option<f64>,
    #[serde(default)]
    job_timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Msg {
    t: f64,
    /// The client that publishes it: "edge", "platform", or "edge2" (a second
    /// connection on the edge side, its CONNECT seen unless the case is `joined`).
    from: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    payload_raw: Option<String>,
    #[serde(default)]
    mqtt_raw_hex: Option<String>,
}

/// 2026-11-26 10:00:00 CST, the time the cases' envelope timestamps start at.
fn t0_us() -> i64 {
    edgetap::protocol::timestamp_us(&Value::from("2026-11-26 10:00:00")).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Runs a case through the pipeline and returns the findings per rule.
fn run(rules: &Arc<RuleSet>, case: &Case) -> (BTreeMap<String, usize>, Vec<String>) {
    let settings = Settings {
        max_packet: case.max_packet.unwrap_or(Settings::default().max_packet),
    };
    let rules = if case.reply_timeout.is_some() || case.job_timeout.is_some() {
        let mut r = (**rules).clone();
        r.set_limits(case.reply_timeout, case.job_timeout);
        Arc::new(r)
    } else {
        rules.clone()
    };
    let mut a = Analyzer::new(rules, settings);
    let mut sink = Collector::default();
    let t0 = t0_us();
    a.open(1, None, None, case.joined);
    a.open(2, None, None, case.joined);
    // A second connection of the edge side (another edge, or the edge reconnected),
    // opened only when a message uses it.
    let second = case.messages.iter().any(|m| m.from == "edge2");
    if second {
        a.open(3, None, None, case.joined);
    }
    if second && !case.joined && !case.no_connect {
        a.data(3, Side::Client, t0, 0, &encode::connect("edge2"), &mut sink);
    }
    if !case.joined && !case.no_connect {
        a.data(1, Side::Client, t0, 0, &encode::connect("edge"), &mut sink);
        a.data(
            2,
            Side::Client,
            t0,
            0,
            &encode::connect("platform"),
            &mut sink,
        );
    }
    for (i, m) in case.messages.iter().enumerate() {
        let conn = match m.from.as_str() {
            "edge" => 1,
            "platform" => 2,
            "edge2" => 3,
            other => panic!(
                "{}: from must be edge, edge2 or platform, not {other}",
                case.name
            ),
        };
        let bytes = if let Some(h) = &m.mqtt_raw_hex {
            hex(h)
        } else {
            let topic = m.topic.as_deref().expect("topic");
            let payload = match (&m.payload, &m.payload_raw) {
                (Some(v), _) => serde_json::to_vec(v).unwrap(),
                (None, Some(raw)) => raw.as_bytes().to_vec(),
                (None, None) => vec![],
            };
            encode::publish(topic, &payload)
        };
        let t = t0 + (m.t * 1e6) as i64;
        a.data(conn, Side::Client, t, i as u64 + 1, &bytes, &mut sink);
    }
    if let Some(end) = case.end {
        let n = case.messages.len() as u64 + 1;
        a.data(
            1,
            Side::Client,
            t0 + (end * 1e6) as i64,
            n,
            &encode::pingreq(),
            &mut sink,
        );
    }
    a.finish(&mut sink);
    let mut counts = BTreeMap::new();
    let mut lines = vec![];
    for f in &sink.findings {
        // Info findings count only where a case asks for them.
        if f.severity >= Severity::Warning || case.fires.contains_key(&f.rule) {
            *counts.entry(f.rule.clone()).or_default() += 1;
        }
        lines.push(edgetap::report::one_line(f));
    }
    (counts, lines)
}

/// Rules that need capture-level events (loss, TLS, a packet size limit): their
/// trigger and silent tests are in `tests/pipeline.rs`.
const COVERED_ELSEWHERE: &[&str] = &[
    "capture.gap",
    "capture.bad_frame",
    "capture.not_decodable",
    "mqtt.oversized",
];

#[test]
fn every_rule_triggers_and_stays_silent() {
    let rules = Arc::new(RuleSet::builtin());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule_cases");
    let mut triggered: BTreeMap<String, bool> = BTreeMap::new();
    let mut silent: BTreeMap<String, bool> = BTreeMap::new();
    let mut failures = vec![];
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/rule_cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file: CaseFile =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.cases {
            let (counts, lines) = run(&rules, case);
            let mut ok = true;
            for (rule, n) in &case.fires {
                if counts.get(rule).copied().unwrap_or(0) != *n {
                    ok = false;
                }
            }
            for (rule, _) in &counts {
                if !case.fires.contains_key(rule) && !case.allow.contains(rule) {
                    ok = false;
                }
            }
            if !ok {
                failures.push(format!(
                    "{} / {}: expected {:?}, got {:?}\n    {}",
                    path.file_name().unwrap().to_string_lossy(),
                    case.name,
                    case.fires,
                    counts,
                    lines.join("\n    ")
                ));
                continue;
            }
            if case.fires.get(&file.rule).copied().unwrap_or(0) > 0 {
                triggered.insert(file.rule.clone(), true);
            } else {
                silent.insert(file.rule.clone(), true);
            }
        }
    }
    let mut missing = vec![];
    for r in &rules.rules {
        let id = &r.def.id;
        if COVERED_ELSEWHERE.contains(&id.as_str()) {
            continue;
        }
        if !triggered.contains_key(id) {
            missing.push(format!("{id}: no passing case triggers it"));
        }
        if !silent.contains_key(id) {
            missing.push(format!("{id}: no passing case shows it silent"));
        }
    }
    assert!(
        failures.is_empty() && missing.is_empty(),
        "{} failing cases:\n{}\n\n{} rules without coverage:\n{}",
        failures.len(),
        failures.join("\n"),
        missing.len(),
        missing.join("\n")
    );
}
