//! `rules schema`: the JSON Schemas exported from the rules are draft-06 documents
//! a real validator (the `jsonschema` crate) reads; they accept every message of
//! `captures/` the engine finds conforming, and reject every message of the rule
//! cases that breaks a table the schemas carry, as the engine does.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgetap::pipeline::Sink;
use edgetap::protocol::Message;
use edgetap::rules::json_schema::{export, Export};
use edgetap::rules::{Engine, RuleSet};
use edgetap::Severity;
use serde_json::Value;

struct Schemas {
    rules: Arc<RuleSet>,
    export: Export,
    validators: BTreeMap<String, jsonschema::Validator>,
    /// The rule ids the schemas carry.
    carried: Vec<String>,
}

impl Schemas {
    fn new() -> Schemas {
        let rules = Arc::new(RuleSet::builtin());
        let export = export(&rules);
        let mut validators = BTreeMap::new();
        for t in &export.topics {
            assert!(
                jsonschema::draft6::meta::is_valid(&t.schema),
                "{}: not a draft-06 schema",
                t.filter
            );
            let v =
                jsonschema::draft6::new(&t.schema).unwrap_or_else(|e| panic!("{}: {e}", t.filter));
            validators.insert(t.filter.clone(), v);
        }
        let text: String = export.topics.iter().map(|t| t.schema.to_string()).collect();
        let carried = rules
            .rules
            .iter()
            .map(|r| r.def.id.clone())
            .filter(|id| text.contains(&format!("\"{id}: ")))
            .collect();
        Schemas {
            rules,
            export,
            validators,
            carried,
        }
    }

    /// The validator of `topic` (`/v1/E1/device/data` → `/v1/+/device/data`).
    fn of(&self, topic: &str) -> Option<&jsonschema::Validator> {
        let parts: Vec<&str> = topic.split('/').collect();
        if parts.len() != 5 || !parts[0].is_empty() || parts[1] != "v1" {
            return None;
        }
        self.validators
            .get(&format!("/v1/+/{}/{}", parts[3], parts[4]))
    }
}

/// What the engine says of one message judged alone: its error findings, and those
/// of them that rules the schemas carry raised. A tolerated deviation (a numeric
/// string, an epoch timestamp, whitespace in a key) counts as an error here: the
/// engine reports it once per connection (`envelope.*`, `payload.*`), the message is
/// not conforming.
fn judged(s: &Schemas, m: &Message) -> (Vec<String>, Vec<String>) {
    let mut errors: Vec<String> = Engine::judge_alone(&s.rules, m)
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.rule, f.message))
        .collect();
    // topic.mismatch (an error) is judged with the session, not by judge_alone: a
    // catalog type on a topic that is not its own.
    if let Some(t) = m.msg_type().filter(|t| s.rules.types.contains_key(*t)) {
        let own = s.export.topics.iter().any(|x| {
            x.types.iter().any(|y| y == t)
                && s.of(&m.topic_name).is_some()
                && m.topic_name.ends_with(x.filter.trim_start_matches("/v1/+"))
        });
        if !own {
            errors.push(format!("topic.mismatch: {t} on {}", m.topic_name));
        }
    }
    if let Some(env) = m.envelope() {
        errors.extend(env.deviations.iter().map(|d| format!("deviation: {d:?}")));
    }
    let carried = errors
        .iter()
        .filter(|e| s.carried.iter().any(|id| e.starts_with(&format!("{id}: "))))
        .cloned()
        .collect();
    (errors, carried)
}

/// Collects each message of a capture, with the engine's verdict and the schema's.
struct Verdicts<'a> {
    s: &'a Schemas,
    /// (topic, payload, engine errors, schema valid)
    seen: Vec<(String, Value, Vec<String>, bool)>,
}

impl Sink for Verdicts<'_> {
    fn message(&mut self, m: &Message) {
        let Some(env) = m.envelope() else { return };
        let Some(v) = self.s.of(&m.topic_name) else {
            return;
        };
        let payload = Value::Object(env.to_serde());
        let (errors, _) = judged(self.s, m);
        let valid = v.is_valid(&payload);
        self.seen
            .push((m.topic_name.clone(), payload, errors, valid));
    }
}

#[test]
fn the_schemas_accept_every_message_of_the_captures_the_engine_finds_conforming() {
    let s = Schemas::new();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("captures")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut conforming = 0;
    for file in files {
        let mut sink = Verdicts {
            s: &s,
            seen: vec![],
        };
        let settings = edgetap::analyze::AnalyzeSettings {
            files: vec![file.clone()],
            ports: vec![1883],
            max_packet: edgetap::mqtt::MQTT_MAX_REMAINING,
            progress: false,
        };
        edgetap::analyze::analyze_files(s.rules.clone(), &settings, &mut sink).unwrap();
        for (topic, payload, errors, valid) in sink.seen {
            if errors.is_empty() {
                conforming += 1;
                let v = s.of(&topic).unwrap();
                let why: Vec<String> = v.iter_errors(&payload).map(|e| e.to_string()).collect();
                assert!(
                    valid,
                    "{}: a conforming message on {topic} rejected: {why:?}\n{payload}",
                    file.display()
                );
            }
        }
    }
    assert!(conforming >= 50, "only {conforming} conforming messages");
}

/// A rule case's message as the pipeline would hand it to the engine.
fn message(topic: &str, payload: &[u8], t: f64) -> Option<Message> {
    let t0 = edgetap::protocol::timestamp_us(&Value::from("2026-11-26 10:00:00")).unwrap();
    Some(Message {
        seq: 0,
        conn: 1,
        side: edgetap::finding::Side::Client,
        packet: 1,
        time_us: t0 + (t * 1e6) as i64,
        topic_name: topic.to_string(),
        topic: edgetap::protocol::parse_topic(topic)?,
        body: edgetap::protocol::parse_envelope(bytes::Bytes::copy_from_slice(payload)),
        raw: None,
        origin_seen: true,
        retained: false,
    })
}

#[test]
fn the_schemas_reject_each_table_violation_of_the_rule_cases() {
    let s = Schemas::new();
    assert!(s.carried.len() >= 30, "{:?}", s.carried);
    // Rules whose every finding rejects the message; per rule, how many did.
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted_conforming = 0;
    let mut dir: Vec<_> = std::fs::read_dir("tests/rule_cases")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    dir.sort();
    for file in dir {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for case in doc["cases"].as_array().unwrap() {
            for msg in case["messages"].as_array().unwrap() {
                let Some(topic) = msg["topic"].as_str() else {
                    continue;
                };
                let bytes = match (&msg["payload"], msg["payload_raw"].as_str()) {
                    (Value::Null, Some(raw)) => raw.as_bytes().to_vec(),
                    (Value::Null, None) => continue,
                    (p, _) => serde_json::to_vec(p).unwrap(),
                };
                let Ok(payload) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                let (Some(v), Some(m)) = (
                    s.of(topic),
                    message(topic, &bytes, msg["t"].as_f64().unwrap_or(0.0)),
                ) else {
                    continue;
                };
                let (errors, carried) = judged(&s, &m);
                let valid = v.is_valid(&payload);
                let why =
                    || -> Vec<String> { v.iter_errors(&payload).map(|e| e.to_string()).collect() };
                if errors.is_empty() {
                    assert!(
                        valid,
                        "{}: {}: conforming message rejected: {:?}\n{payload}",
                        file.display(),
                        case["name"],
                        why()
                    );
                    accepted_conforming += 1;
                }
                // The calendar of a date-time is no schema's: say so, not guess.
                let calendar_only = carried
                    .iter()
                    .all(|e| e.contains("date-time") && !e.contains("25:") && e.contains("-02-3"));
                if !carried.is_empty() && !calendar_only {
                    assert!(
                        !valid,
                        "{}: {}: the engine finds {carried:?}, the schema accepts\n{payload}",
                        file.display(),
                        case["name"]
                    );
                    for e in &carried {
                        let id = e.split(": ").next().unwrap().to_string();
                        *rejected.entry(id).or_default() += 1;
                    }
                }
            }
        }
    }
    assert!(accepted_conforming >= 50, "{accepted_conforming}");
    // Every rule the schemas carry that has a firing case saw a rejection.
    for id in [
        "envelope.request",
        "envelope.reply",
        "t10.REP_SYS_STATUS",
        "t19.EVENT_SYS_ALARM",
    ] {
        assert!(
            rejected.get(id).is_some_and(|n| *n > 0),
            "{id}: {rejected:?}"
        );
    }
    assert!(rejected.len() >= 15, "{rejected:?}");
    assert!(s.export.cannot_check.iter().any(|c| c.contains("pairing")));
}
