//! The rule model: what a file under `rules/` may contain.
//!
//! A rule file holds clause titles, a catalog of message types, and rules. Every rule
//! has an id, a clause (or inherits the clause of the message type it fires on), a
//! table, a severity and a message template, and exactly one `check`: a generic
//! primitive parameterised by data (a schema, a selector, a path), never a hand-written
//! function per message type. Unknown keys are load errors (`deny_unknown_fields`), so a
//! typo in a user's rule file is reported with file and rule id instead of ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::finding::Severity;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub description: Option<String>,
    /// Clauses of the standard, in report order, with their titles.
    #[serde(default)]
    pub clauses: Vec<ClauseDef>,
    /// Message types: where they travel, which clause and table define them, how
    /// they are answered.
    #[serde(default)]
    pub types: BTreeMap<String, TypeDef>,
    #[serde(default)]
    pub rules: Vec<RuleDef>,
    /// Rule ids switched off (an id, or a prefix ending in `.` such as `naming.`):
    /// they do not run and `rules list` shows them as disabled. An id that names no
    /// rule is a load error.
    #[serde(default)]
    pub disable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClauseDef {
    pub clause: String,
    pub title: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    pub clause: String,
    #[serde(default)]
    pub table: Option<String>,
    /// Topic channels the type travels on (`device`, `topo`, `container`, `app`).
    pub channels: Vec<String>,
    /// Topic role the sender publishes on (`request`, `command`, `data`).
    pub role: String,
    /// Codes a correct reply carries; empty when the type expects no reply. The first
    /// entry whose condition holds applies.
    #[serde(default)]
    pub reply_codes: Vec<ReplyCodes>,
    /// Seconds within which a reply must come (default: the `reply_late` rule's).
    #[serde(default)]
    pub deadline_s: Option<f64>,
    /// The request opens a job, identified by `param.jobId`.
    #[serde(default)]
    pub job: Option<JobDef>,
    /// For a job result type: per channel, the request types whose jobs it can end.
    #[serde(default)]
    pub ends_jobs: BTreeMap<String, Vec<String>>,
    /// A status query of a job (`param.jobId`), answered with progress and state.
    #[serde(default)]
    pub queries_job: Option<JobQueryDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyCodes {
    /// Applies only when this param field is present.
    #[serde(default)]
    pub if_param: Option<String>,
    pub codes: Vec<i64>,
    /// The sentence that sets these codes; a reply.code finding quotes it.
    #[serde(default)]
    pub basis: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    /// Channel whose `data` topic must carry the job result.
    pub result_channel: String,
    /// Type of the result message.
    #[serde(default = "default_result_type")]
    pub result_type: String,
    /// Reply codes after which exactly one result must follow.
    #[serde(default = "default_result_after")]
    pub result_after: Vec<i64>,
    /// The text makes the reply to the command optional (6.1.2.2, 6.3.3.2 "可以对升级
    /// 命令做出应答"): a result without a reply before it is no finding.
    #[serde(default)]
    pub reply_optional: bool,
    /// The reply precedes the result only when the command carries this `param`
    /// member; without it the result may come first (6.2.1.2: without `withAPP` the
    /// edge "直接安装一个空容器，并对容器安装命令进行应答", installs, then answers).
    #[serde(default)]
    pub reply_first_if_param: Option<String>,
    /// The table of the job's result (9, 35, 40, 43): what a finding about the
    /// result cites, rather than the result type's own table.
    #[serde(default)]
    pub result_table: Option<String>,
}

fn default_result_fields() -> Vec<String> {
    vec!["result".into(), "code".into()]
}
fn default_result_text() -> Vec<String> {
    vec!["info".into(), "msg".into()]
}
fn default_success() -> Vec<i64> {
    vec![200]
}

fn default_result_type() -> String {
    "REP_JOB_RESULT".into()
}
fn default_result_after() -> Vec<i64> {
    vec![202]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQueryDef {
    /// Reply param paths that must not decrease between two queries of one job.
    pub monotonic: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    /// The standard's clause; absent: the clause of the message type it fires on.
    #[serde(default)]
    pub clause: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    pub severity: Severity,
    /// The clause or table and the sentence of the standard (verbatim, Chinese) the
    /// rule enforces. Required of every `error` rule (`rules lint`): an error is an
    /// accusation against a device or platform and must be grounded in the text.
    #[serde(default)]
    pub basis: Option<std::sync::Arc<str>>,
    /// Why the rule has this severity and scope, when the text leaves room (a
    /// review note: what changed and why).
    #[serde(default)]
    pub review: Option<String>,
    /// How the rule reads its basis (shall, example, implied, timing, heuristic,
    /// outcome, unknowable): what makes its severity, held by the severity policy
    /// ([`super::policy`]). Absent: the reading its severity implies.
    #[serde(default)]
    pub reading: Option<super::policy::Reading>,
    /// Template; `{name}` is replaced by the finding's variables (`type`, `path`,
    /// `expected`, `seen`, `detail`, …).
    pub message: String,
    pub check: Check,
}

/// The primitives. Each rule names one.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Field presence, JSON types, enumerations, ranges, lengths, formats, nested
    /// objects and arrays, on the param (default) or on the whole message.
    Schema {
        when: Selector,
        #[serde(default)]
        target: Target,
        fields: Fields,
    },
    // --- transport and payload ---
    MqttMalformed,
    /// A connection whose start the input saw, whose client did not open with a
    /// CONNECT: not MQTT (an HTTP request, a PROXY header, random bytes…).
    MqttConnectFirst,
    MqttOversized,
    CaptureGap,
    /// The input ended (the capture stopped, not the connection: no FIN or RST
    /// seen) inside a packet: its bytes were not all captured.
    CaptureEnded,
    /// A capture frame that could not be read (truncated headers, link type…).
    BadFrame,
    NotDecodable,
    InvalidJson,
    NotObject,
    /// JSON nested deeper than edgetap parses (`protocol::PARSE_DEPTH`).
    TooDeep,
    KeyWhitespace,
    /// Payload deviations the parser tolerated (`trailing_bytes`, `bom`,
    /// `string_number`, `timestamp_form`, `key_whitespace`): reported once per
    /// connection and kind, then the message is judged as the sender meant it.
    Dialect {
        deviations: Vec<String>,
        /// Only deviations of these envelope members (empty: any)…
        #[serde(default)]
        keys: Vec<String>,
        /// …and none of these.
        #[serde(default)]
        except_keys: Vec<String>,
    },
    /// A PUBLISH that is no protocol message (a topic outside the standard, an
    /// unknown MQTT 5 topic alias): counted and reported, never dropped silently.
    TopicUnattributed,
    /// A message of the standard (its `type` in the catalog) on a topic outside
    /// `/v1/{edgeId}/{channel}/{role}`.
    TopicShape,
    // --- topics and naming (5.3.3) ---
    TopicMissingSlash,
    TopicPlaceholder,
    TopicMismatch,
    TypeUnknown,
    TypeNaming {
        /// Regex each class's type must match, e.g. {"request": "^(CMD|EVENT)_"}.
        patterns: BTreeMap<String, String>,
    },
    TypeWordLength {
        max: usize,
    },
    KeyNaming {
        pattern: String,
    },
    Expired,
    // --- request/reply pairing ---
    /// A request still unanswered `after_s` seconds later while the capture went
    /// on. No deadline of its own: the standard sets none; `--reply-timeout` sets it.
    ReplyMissing {
        #[serde(default)]
        after_s: Option<f64>,
    },
    /// A request unanswered when the input ended, no deadline passed: pending.
    ReplyPending,
    /// A reply later than `deadline_s` (none by default; `--reply-timeout`).
    ReplyLate {
        #[serde(default)]
        deadline_s: Option<f64>,
    },
    ReplyDuplicate,
    ReplyOrphan,
    /// A reply on one edge's topic that answers an open request of another edge.
    ReplyWrongEdge,
    ReplyType,
    ReplyCode,
    ReplySuccessToInvalid {
        success: Vec<i64>,
    },
    ReplyErrorToValid {
        errors: Vec<i64>,
    },
    // --- sequences of clause 6 ---
    /// The first message an edge publishes must be of this type.
    FirstMessage {
        #[serde(rename = "type")]
        msg_type: String,
    },
    /// On a connection whose start was seen, the edge published before a message of
    /// this type (its access request) that then followed on that connection.
    AccessFirst {
        #[serde(rename = "type")]
        msg_type: String,
    },
    /// After a message of `type`, the edge publishes nothing until `until`.
    SilentAfter {
        #[serde(rename = "type")]
        msg_type: String,
        until: String,
    },
    /// An accepted job without its result `after_s` seconds after it was due (the
    /// command's time plus its `policy` delay); `--job-timeout` sets it, off by default.
    JobResultMissing {
        #[serde(default)]
        after_s: Option<f64>,
    },
    /// A job still running when the input ended.
    JobPending,
    /// A job result that reports failure: an outcome, not a protocol violation.
    JobFailed {
        /// Param members holding the result code, the first present counts.
        #[serde(default = "default_result_fields")]
        code: Vec<String>,
        /// Param members describing a failure.
        #[serde(default = "default_result_text")]
        text: Vec<String>,
        #[serde(default = "default_success")]
        success: Vec<i64>,
    },
    JobResultDuplicate,
    JobResultEarly,
    /// A success result for a job whose command was refused (an error code).
    JobResultRefused,
    JobResultOrphan,
    JobResultChannel,
    JobStatusMismatch,
    JobStatusRegress,
    /// Values at `uses` must have been produced earlier at one of `assigns`.
    IdAssigned {
        assigns: Vec<PathSel>,
        uses: Vec<PathSel>,
    },
    /// A recovery event must follow the event it recovers (per edge).
    RecoveryFollows {
        #[serde(rename = "type")]
        msg_type: String,
        path: String,
        /// recovery value → the value it recovers.
        pairs: BTreeMap<String, String>,
    },
    /// Spacing of periodic reports against a period announced elsewhere.
    ReportPeriod {
        #[serde(rename = "type")]
        msg_type: String,
        period: PathSel,
        /// Allowed relative deviation (0.5 = ±50 %).
        tolerance: f64,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Param,
    Message,
}

/// Which messages a rule applies to. Absent keys match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, rename = "type")]
    pub types: Option<OneOrMany>,
    #[serde(default)]
    pub class: Option<OneOrMany>,
    #[serde(default)]
    pub channel: Option<OneOrMany>,
    /// For job results: the request type of the job the result ends.
    #[serde(default)]
    pub job_of: Option<OneOrMany>,
    /// Param members and the value each must have (as text: `{"event": "3010"}`
    /// matches the string "3010" and the number 3010): a rule for one value.
    #[serde(default)]
    pub param: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn contains(&self, s: &str) -> bool {
        match self {
            OneOrMany::One(x) => x == s,
            OneOrMany::Many(v) => v.iter().any(|x| x == s),
        }
    }
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(x) => vec![x.as_str()],
            OneOrMany::Many(v) => v.iter().map(|s| s.as_str()).collect(),
        }
    }
}

/// A value location: messages of `type` (and `class`), at `path` such as
/// `param.data[].deviceId` (`[]` walks every element of an array).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSel {
    #[serde(rename = "type")]
    pub msg_type: String,
    #[serde(default)]
    pub class: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Any,
}

impl JsonType {
    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `yyyy-MM-dd HH:mm:ss`, a real date and time.
    Datetime,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(default, rename = "type")]
    pub ty: Option<JsonType>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min_len: Option<usize>,
    #[serde(default)]
    pub max_len: Option<usize>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub min_items: Option<usize>,
    #[serde(default)]
    pub max_items: Option<usize>,
    /// Members of an object.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Schema of every element of an array.
    #[serde(default)]
    pub items: Option<Box<FieldSpec>>,
    /// An object must hold at least one of these members.
    #[serde(default)]
    pub at_least_one_of: Option<Vec<String>>,
}

/// The member specs of an object, sorted by name. A sorted list rather than a map:
/// validation walks it once per object, and a list walks faster than a B-tree.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    specs: Vec<(String, FieldSpec)>,
    /// The names again, side by side: a lookup scans them without touching the specs.
    names: Vec<String>,
}

impl Fields {
    /// Index of the spec named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| crate::protocol::json::same_name(n, name))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &FieldSpec)> {
        self.specs.iter().map(|(k, v)| (k, v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }
    pub fn values(&self) -> impl Iterator<Item = &FieldSpec> {
        self.specs.iter().map(|(_, v)| v)
    }
    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        let map = BTreeMap::<String, FieldSpec>::deserialize(d)?;
        Ok(Fields {
            names: map.keys().cloned().collect(),
            specs: map.into_iter().collect(),
        })
    }
}
