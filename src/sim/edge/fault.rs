//! The rules the reference edge breaks on purpose, one per [`Fault`], to test
//! testers: which rule must catch each, and which detection item must fail.

use crate::sim::SimError;

/// A rule the edge breaks on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// CMD_SYS_UPGRADE answered 200 instead of 202.
    WrongCode,
    /// CMD_SYS_STATUS reply without the required `tempValue`.
    MissingField,
    /// No REP_JOB_RESULT after an accepted CMD_APP_INSTALL.
    NoJobResult,
    /// CMD_INFO_QUERY answered with a mid that is not the request's.
    WrongMid,
    /// CMD_CON_START answered with another type.
    WrongType,
    /// REP_SYS_STATUS with a timestamp that is no real date-time.
    BadTimestamp,
    /// Two REP_JOB_RESULT for one device upgrade.
    DuplicateResult,
    /// A valid CMD_APP_STOP answered 404.
    ErrorToValid,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::WrongCode,
        Fault::MissingField,
        Fault::NoJobResult,
        Fault::WrongMid,
        Fault::WrongType,
        Fault::BadTimestamp,
        Fault::DuplicateResult,
        Fault::ErrorToValid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::WrongCode => "wrong-code",
            Fault::MissingField => "missing-field",
            Fault::NoJobResult => "no-job-result",
            Fault::WrongMid => "wrong-mid",
            Fault::WrongType => "wrong-type",
            Fault::BadTimestamp => "bad-timestamp",
            Fault::DuplicateResult => "duplicate-result",
            Fault::ErrorToValid => "error-to-valid",
        }
    }

    /// The rule of the shared rule set that must catch this fault.
    pub fn caught_by(self) -> &'static str {
        match self {
            Fault::WrongCode => "reply.code",
            Fault::MissingField => "t13.CMD_SYS_STATUS.reply",
            // No deadline in the standard: a job without result is pending (info).
            Fault::NoJobResult => "job.pending",
            Fault::WrongMid => "reply.orphan",
            Fault::WrongType => "reply.type",
            Fault::BadTimestamp => "envelope.request",
            Fault::DuplicateResult => "job.result_duplicate",
            Fault::ErrorToValid => "reply.error_to_valid",
        }
    }

    /// The detection item of the plan that must fail.
    pub fn item(self) -> &'static str {
        match self {
            Fault::WrongCode | Fault::DuplicateResult => "6.1.2.2",
            Fault::MissingField | Fault::WrongMid | Fault::BadTimestamp => "6.1.3.2",
            Fault::NoJobResult => "6.3.1.2",
            Fault::WrongType => "6.2.2.2",
            Fault::ErrorToValid => "6.3.2.2",
        }
    }

    /// The fault shows as an outcome (a refusal, a job result that never comes), which
    /// the plan judges itself; the rule engine reports it as information at most, not
    /// as a protocol error.
    pub fn outcome(self) -> bool {
        matches!(self, Fault::NoJobResult | Fault::ErrorToValid)
    }

    pub fn parse(s: &str) -> Result<Fault, SimError> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                SimError::UnknownFault(s.into(), known.join(", "))
            })
    }
}
