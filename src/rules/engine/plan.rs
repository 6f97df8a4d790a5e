//! Which step of the engine applies each rule: found once per engine, so that a
//! message is matched against the few rules of each step, not against every rule
//! of the set at every step (three walks over some ninety rules per message).
//!
//! [`step`] matches [`Check`] exhaustively: a new kind of rule does not compile until
//! it is given its step, and the step's code is where the compiler sends you next.

use super::*;

/// The engine's steps, in the order a message goes through them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Step {
    /// Judged by the pipeline on MQTT and capture events, not on messages.
    Transport,
    /// Payload, envelope and schema checks ([`ContentIndex`]).
    Content,
    /// Tolerated deviations, once per connection.
    Dialect,
    /// The topic's form.
    Topic,
    /// The type's name and topic, member names, expiry.
    Typed,
    /// Per-edge sequences: first message, silence, assigned ids, recoveries, periods.
    Sequence,
    /// Requests and their replies, jobs and their results.
    Pairing,
}

/// The step that applies a check.
pub(super) fn step(check: &Check) -> Step {
    match check {
        Check::MqttMalformed
        | Check::MqttConnectFirst
        | Check::MqttOversized
        | Check::CaptureGap
        | Check::CaptureEnded
        | Check::BadFrame
        | Check::NotDecodable
        | Check::TopicUnattributed
        | Check::TopicShape => Step::Transport,
        Check::Schema { .. } | Check::InvalidJson | Check::NotObject | Check::TooDeep => {
            Step::Content
        }
        Check::KeyWhitespace | Check::Dialect { .. } => Step::Dialect,
        Check::TopicMissingSlash | Check::TopicPlaceholder => Step::Topic,
        Check::TopicMismatch
        | Check::TypeUnknown
        | Check::TypeNaming { .. }
        | Check::TypeWordLength { .. }
        | Check::KeyNaming { .. }
        | Check::Expired => Step::Typed,
        Check::FirstMessage { .. }
        | Check::AccessFirst { .. }
        | Check::SilentAfter { .. }
        | Check::IdAssigned { .. }
        | Check::RecoveryFollows { .. }
        | Check::ReportPeriod { .. } => Step::Sequence,
        Check::ReplyMissing { .. }
        | Check::ReplyPending
        | Check::ReplyLate { .. }
        | Check::ReplyDuplicate
        | Check::ReplyOrphan
        | Check::ReplyWrongEdge
        | Check::ReplyType
        | Check::ReplyCode
        | Check::ReplySuccessToInvalid { .. }
        | Check::ReplyErrorToValid { .. }
        | Check::JobResultMissing { .. }
        | Check::JobPending
        | Check::JobFailed { .. }
        | Check::JobResultDuplicate
        | Check::JobResultEarly
        | Check::JobResultRefused
        | Check::JobResultOrphan
        | Check::JobResultChannel
        | Check::JobStatusMismatch
        | Check::JobStatusRegress => Step::Pairing,
    }
}

/// Indices of the rules of each per-message step, in rule order (the order of their
/// findings).
#[derive(Default)]
pub(super) struct Plan {
    pub(super) dialect: Vec<usize>,
    pub(super) topic: Vec<usize>,
    pub(super) typed: Vec<usize>,
    pub(super) sequence: Vec<usize>,
}

impl Plan {
    pub(super) fn of(rules: &RuleSet) -> Plan {
        let mut plan = Plan::default();
        for (i, r) in rules.rules.iter().enumerate() {
            let list = match step(&r.def.check) {
                Step::Dialect => &mut plan.dialect,
                Step::Topic => &mut plan.topic,
                Step::Typed => &mut plan.typed,
                Step::Sequence => &mut plan.sequence,
                Step::Transport | Step::Content | Step::Pairing => continue,
            };
            list.push(i);
        }
        plan
    }
}
