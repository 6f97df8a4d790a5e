//! The field tables as JSON Schema (draft-06), for a broker that validates each
//! message on its own (EMQX Schema Validation): one schema per protocol topic
//! (`/v1/+/{channel}/{role}`), built from the same `schema` rules the engine runs.
//!
//! What goes in: the enabled `schema` rules of severity `error` (the tables' 是
//! columns, types, enumerations, ranges and lengths the text states). Warnings
//! (values the text gives by example) stay out: a broker would flag conforming
//! devices. A topic carries several message types, so its schema dispatches on
//! `type` with `oneOf` + `const` (draft-06 has no `if`/`then`): one branch per type
//! of the catalog that travels there, and one for types outside the catalog
//! (judged by the envelope only, as the engine does). A catalog type on a topic
//! that is not its own matches no branch: rejected, as `topic.mismatch` (an error)
//! rejects it. Reply param tables describe successful answers only: their
//! constraints hold unless `code` is a number outside 200-299 (written as
//! `anyOf` [error reply, the table]). A job result whose job the schema cannot know
//! (REP_JOB_RESULT on `app/data` ends an install or an upgrade) passes when it fits
//! any candidate's table, as the engine judges it by the candidate that fits best.
//!
//! What a per-message schema cannot check is listed in [`Export::cannot_check`]:
//! pairing, jobs, sequences, timing, the calendar of a date-time, and the tolerated
//! deviations the engine reports once per connection (a schema rejects every such
//! message). The rules it leaves out are in [`Export::left_out`], each with why.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::model::{Check, FieldSpec, Fields, Format, JsonType, RuleDef, Selector, Target};
use super::RuleSet;
use crate::finding::Severity;
use crate::protocol::{reply_role, Class};

/// The draft every schema declares (the widest supported by EMQX).
pub const DRAFT: &str = "http://json-schema.org/draft-06/schema#";

/// Topic roles, in the order schemas are listed.
const ROLES: [&str; 5] = ["request", "command", "response", "reply", "data"];

/// `yyyy-MM-dd HH:mm:ss` with each part in range (not the calendar: 2022-02-30
/// passes here, the engine rejects it).
pub const DATETIME_PATTERN: &str =
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$";

/// One topic's schema.
#[derive(Debug, Clone)]
pub struct TopicSchema {
    /// The MQTT topic filter it validates, `/v1/+/device/data`.
    pub filter: String,
    /// A name for the broker's schema registry, `edgetap_device_data`.
    pub name: String,
    /// The catalog types that travel on it.
    pub types: Vec<String>,
    pub schema: Value,
}

/// Every topic's schema, and what they leave to edgetap.
#[derive(Debug, Clone)]
pub struct Export {
    pub topics: Vec<TopicSchema>,
    /// Rules of the tables not in the schemas, each with why.
    pub left_out: Vec<String>,
    pub cannot_check: Vec<String>,
}

/// What no per-message schema checks: edgetap's part.
pub const CANNOT_CHECK: [&str; 7] = [
    "request/reply pairing: a reply's mid, type and code against its request (reply.*)",
    "jobs: a job's result after its accepted command, its channel, duplicates, status queries (job.*)",
    "sequences of clause 6: link-up first, silence after link-down, recovery after alarm, report periods, ids assigned before use (seq.*, alarm.*, report.*, topo.*)",
    "timing: expire, reply and job deadlines",
    "the calendar of a date-time (2022-02-30 has the right form; the engine rejects it)",
    "tolerated deviations the engine reports once per connection (a numeric string, another timestamp form, a BOM, trailing bytes, duplicate keys, whitespace in keys): a schema rejects every such message, or cannot see them",
    "the MQTT session (CONNECT, QoS, topic aliases) and topics outside /v1/{edgeId}/{channel}/{role}",
];

fn class_of(role: &str) -> Class {
    match role {
        "request" | "command" => Class::Request,
        "response" | "reply" => Class::Reply,
        _ => Class::Report,
    }
}

/// The schema rules that go in, with the selector and target of each.
struct SchemaRule<'a> {
    def: &'a RuleDef,
    when: &'a Selector,
    target: Target,
    fields: &'a Fields,
}

impl SchemaRule<'_> {
    fn class_ok(&self, class: Class) -> bool {
        self.when
            .class
            .as_ref()
            .is_none_or(|c| c.contains(class.as_str()))
    }
    fn channel_ok(&self, channel: &str) -> bool {
        self.when
            .channel
            .as_ref()
            .is_none_or(|c| c.contains(channel))
    }
    fn type_ok(&self, t: &str) -> bool {
        self.when.types.as_ref().is_none_or(|x| x.contains(t))
    }
}

/// The schemas of `rules`.
pub fn export(rules: &RuleSet) -> Export {
    let mut left_out = vec![];
    let mut chosen = vec![];
    for r in &rules.rules {
        let Check::Schema {
            when,
            target,
            fields,
        } = &r.def.check
        else {
            continue;
        };
        if r.def.severity != Severity::Error {
            continue;
        }
        if when.param.is_some() {
            left_out.push(format!(
                "{}: applies to one value of a field only (draft-06 has no if/then)",
                r.def.id
            ));
            continue;
        }
        chosen.push(SchemaRule {
            def: &r.def,
            when,
            target: *target,
            fields,
        });
    }
    let catalog: Vec<&String> = rules.types.keys().collect();
    let channels: BTreeSet<&String> = rules.types.values().flat_map(|d| &d.channels).collect();
    let mut topics = vec![];
    for channel in channels {
        for role in ROLES {
            let class = class_of(role);
            let types: Vec<String> = rules
                .types
                .iter()
                .filter(|(_, d)| d.channels.contains(channel))
                .filter(|(_, d)| match class {
                    Class::Reply => reply_role(&d.role) == Some(role),
                    _ => d.role == role,
                })
                .map(|(t, _)| t.clone())
                .collect();
            if types.is_empty() {
                continue;
            }
            let schema = topic_schema(rules, &chosen, channel, role, class, &types, &catalog);
            topics.push(TopicSchema {
                filter: format!("/v1/+/{channel}/{role}"),
                name: format!("edgetap_{channel}_{role}"),
                types,
                schema,
            });
        }
    }
    Export {
        topics,
        left_out,
        cannot_check: CANNOT_CHECK.iter().map(|s| s.to_string()).collect(),
    }
}

fn topic_schema(
    rules: &RuleSet,
    chosen: &[SchemaRule<'_>],
    channel: &str,
    role: &str,
    class: Class,
    types: &[String],
    catalog: &[&String],
) -> Value {
    let mut definitions = Map::new();
    let mut branches = vec![];
    for t in types {
        let mut all = vec![];
        for r in chosen.iter().filter(|r| r.when.types.is_some()) {
            if r.when.job_of.is_none() && r.type_ok(t) && r.class_ok(class) && r.channel_ok(channel)
            {
                all.push(rule_schema(r, class));
            }
        }
        // A job result: the table of the job it ends, any candidate of the channel.
        let def = &rules.types[t];
        if let Some(candidates) = def.ends_jobs.get(channel) {
            let per_job: Vec<Value> = candidates
                .iter()
                .map(|job| {
                    let parts: Vec<Value> = chosen
                        .iter()
                        .filter(|r| r.when.job_of.as_ref().is_some_and(|j| j.contains(job)))
                        .filter(|r| r.type_ok(t) && r.class_ok(class) && r.channel_ok(channel))
                        .map(|r| rule_schema(r, class))
                        .collect();
                    json!({"allOf": parts, "description": format!("a result of {job}")})
                })
                .collect();
            if !per_job.is_empty() {
                all.push(json!({ "anyOf": per_job }));
            }
        }
        let mut d = json!({
            "description": format!(
                "{t}: clause {}{}",
                def.clause,
                def.table.as_ref().map(|x| format!(", table {x}")).unwrap_or_default()
            ),
            "properties": {"type": {"const": t}},
            "required": ["type"],
        });
        if !all.is_empty() {
            d["allOf"] = Value::Array(all);
        }
        definitions.insert(t.clone(), d);
        branches.push(json!({ "$ref": format!("#/definitions/{t}") }));
    }
    definitions.insert(
        "other".into(),
        json!({
            "description": "a type outside the catalog (the envelope is checked, its content is not)",
            "properties": {"type": {"not": {"enum": catalog}}},
        }),
    );
    branches.push(json!({"$ref": "#/definitions/other"}));
    // Rules for every message of the topic (the envelope tables).
    let mut all: Vec<Value> = chosen
        .iter()
        .filter(|r| r.when.types.is_none() && r.when.job_of.is_none())
        .filter(|r| r.class_ok(class) && r.channel_ok(channel))
        .map(|r| rule_schema(r, class))
        .collect();
    all.push(json!({ "oneOf": branches }));
    json!({
        "$schema": DRAFT,
        "title": format!("/v1/+/{channel}/{role}"),
        "description": format!(
            "T/YQDEIF 003-2022 messages on /v1/{{edgeId}}/{channel}/{role} ({}): the tables' \
             error rules of edgetap, one message at a time. Pairing, jobs, sequences and \
             timing are edgetap's part (`edgetap watch`).",
            types.join(", ")
        ),
        "type": "object",
        "definitions": definitions,
        "allOf": all,
    })
}

/// One rule as a schema of the whole message.
fn rule_schema(r: &SchemaRule<'_>, class: Class) -> Value {
    let body = object(r.fields);
    let mut s = match r.target {
        Target::Message => body,
        Target::Param => {
            let required = r.fields.values().any(|f| f.required);
            match required {
                true => json!({"properties": {"param": body}, "required": ["param"]}),
                false => json!({"properties": {"param": {"anyOf": [{"type": "null"}, body]}}}),
            }
        }
    };
    if r.target == Target::Param && class == Class::Reply {
        // The tables describe successful answers: an error reply (a number code
        // outside 200-299) carries what it likes.
        let error_reply = json!({
            "properties": {"code": {"type": "number",
                "not": {"minimum": 200, "exclusiveMaximum": 300}}},
            "required": ["code"],
        });
        s = json!({ "anyOf": [error_reply, s] });
    }
    if let Value::Object(m) = &mut s {
        m.insert(
            "description".into(),
            Value::String(format!(
                "{}: {}",
                r.def.id,
                r.def.basis.as_deref().unwrap_or("")
            )),
        );
    }
    s
}

/// An object's members: properties, the required ones, null taken as absent.
fn object(fields: &Fields) -> Value {
    let mut props = Map::new();
    let mut required = vec![];
    for (name, spec) in fields.iter() {
        let s = field(spec);
        if spec.required {
            required.push(Value::String(name.clone()));
            props.insert(name.clone(), s);
        } else if s.as_object().is_some_and(|m| !m.is_empty()) {
            // An optional member may be null (the engine reads null as absent).
            props.insert(name.clone(), json!({"anyOf": [{"type": "null"}, s]}));
        }
    }
    let mut o = Map::new();
    o.insert("type".into(), json!("object"));
    if !props.is_empty() {
        o.insert("properties".into(), Value::Object(props));
    }
    if !required.is_empty() {
        o.insert("required".into(), Value::Array(required));
    }
    Value::Object(o)
}

fn field(spec: &FieldSpec) -> Value {
    let mut o = Map::new();
    let ty = match spec.ty {
        Some(JsonType::Any) | None => None,
        Some(t) => Some(t.as_str()),
    };
    if let Some(t) = ty {
        o.insert("type".into(), json!(t));
    } else if spec.required {
        // Required, any type but null.
        o.insert("not".into(), json!({"type": "null"}));
    }
    if let Some(allowed) = &spec.allowed {
        o.insert(
            "enum".into(),
            Value::Array(enum_values(allowed, ty.is_some())),
        );
    }
    if let Some(x) = spec.min {
        o.insert("minimum".into(), json!(x));
    }
    if let Some(x) = spec.max {
        o.insert("maximum".into(), json!(x));
    }
    if let Some(x) = spec.min_len {
        o.insert("minLength".into(), json!(x));
    }
    if let Some(x) = spec.max_len {
        o.insert("maxLength".into(), json!(x));
    }
    if let Some(x) = spec.min_items {
        o.insert("minItems".into(), json!(x));
    }
    if let Some(x) = spec.max_items {
        o.insert("maxItems".into(), json!(x));
    }
    // The engine checks formats and patterns on strings only.
    let mut patterns = vec![];
    if spec.format == Some(Format::Datetime) {
        patterns.push(DATETIME_PATTERN.to_string());
    }
    if let Some(p) = &spec.pattern {
        patterns.push(p.clone());
    }
    match patterns.len() {
        0 => {}
        1 => {
            o.insert("pattern".into(), json!(patterns[0]));
        }
        _ => {
            let all: Vec<Value> = patterns.iter().map(|p| json!({"pattern": p})).collect();
            o.insert("allOf".into(), Value::Array(all));
        }
    }
    if let Some(fields) = &spec.fields {
        if let Value::Object(m) = object(fields) {
            for (k, v) in m {
                if k != "type" {
                    o.insert(k, v);
                }
            }
        }
    }
    if let Some(items) = &spec.items {
        o.insert("items".into(), field(items));
    }
    if let Some(names) = &spec.at_least_one_of {
        let any: Vec<Value> = names
            .iter()
            .map(|n| json!({"properties": {n: {"not": {"type": "null"}}}, "required": [n]}))
            .collect();
        o.insert("anyOf".into(), Value::Array(any));
    }
    Value::Object(o)
}

/// An enumeration's values. Without a type the engine takes `1001` and `"1001"` as
/// the same value: both spellings are listed.
fn enum_values(allowed: &[Value], typed: bool) -> Vec<Value> {
    let mut out: Vec<Value> = allowed.to_vec();
    if !typed {
        for a in allowed {
            match a {
                Value::Number(n) => out.push(Value::String(n.to_string())),
                Value::String(s) => {
                    if let Ok(n) = s.trim().parse::<i64>() {
                        out.push(json!(n));
                    }
                }
                _ => {}
            }
        }
    }
    let mut seen = BTreeMap::new();
    out.retain(|v| seen.insert(v.to_string(), ()).is_none());
    out
}

/// The EMQX 5.7+ configuration (HOCON) that registers each schema and validates
/// its topic with `failure_action = ignore`: failures are logged and counted, no
/// message is dropped.
pub fn emqx_config(e: &Export) -> String {
    let mut out = String::new();
    out.push_str("# T/YQDEIF 003-2022 message tables as EMQX Schema Validation (EMQX 5.7+),\n");
    out.push_str("# written by `edgetap rules schema --emqx`. failure_action = ignore: a\n");
    out.push_str("# failure is logged ($events/schema_validation_failed) and counted, the\n");
    out.push_str("# message goes on. A schema sees one message at a time; it cannot check:\n");
    for c in &e.cannot_check {
        out.push_str(&format!("#   - {c}\n"));
    }
    out.push_str("# That is edgetap's part: `edgetap watch --broker HOST:PORT`.\n");
    for l in &e.left_out {
        out.push_str(&format!("# Left out: {l}\n"));
    }
    out.push_str("\nschema_registry.schemas {\n");
    for t in &e.topics {
        out.push_str(&format!(
            "  {} {{\n    type = json\n    source = \"\"\"{}\"\"\"\n  }}\n",
            t.name, t.schema
        ));
    }
    out.push_str("}\n\nschema_validation.validations = [\n");
    for (i, t) in e.topics.iter().enumerate() {
        out.push_str(&format!(
            "  {{\n    name = {}\n    description = \"{}\"\n    topics = [\"{}\"]\n    \
             strategy = all_pass\n    failure_action = ignore\n    \
             log_failure.level = warning\n    checks = [{{type = json, schema = {}}}]\n  }}{}\n",
            t.name,
            t.types.join(", "),
            t.filter,
            t.name,
            if i + 1 < e.topics.len() { "," } else { "" }
        ));
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_dispatches_on_type_with_draft_06_words_only() {
        let e = export(&RuleSet::builtin());
        let data = e
            .topics
            .iter()
            .find(|t| t.filter == "/v1/+/device/data")
            .expect("device/data");
        assert!(data.types.contains(&"REP_SYS_STATUS".to_string()));
        assert!(data.types.contains(&"EVENT_SYS_ALARM".to_string()));
        let text = data.schema.to_string();
        assert!(text.contains("\"const\":\"REP_SYS_STATUS\""));
        for word in ["$defs", "\"if\"", "\"then\"", "$dynamicRef"] {
            for t in &e.topics {
                assert!(
                    !t.schema.to_string().contains(word),
                    "{word} in {}",
                    t.filter
                );
            }
        }
        assert_eq!(data.schema["$schema"], DRAFT);
        let hocon = emqx_config(&e);
        assert!(hocon.contains("failure_action = ignore"));
        assert!(hocon.contains("topics = [\"/v1/+/device/data\"]"));
        assert!(hocon.contains("pairing"));
    }
}
