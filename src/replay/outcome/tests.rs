//! The outcome's tests: its table, JUnit and exit code, and its comparison with a
//! saved one.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::finding::Severity;
use crate::replay::judge::{self, Exchange};
use crate::replay::session::not_exercised_reason;
use crate::replay::Role;
use crate::report::Format;

fn show(o: &Outcome, e: Option<&Expectation>, format: Format) -> String {
    crate::report::render(&o.document(e), format, &Default::default())
}

fn exchange(index: usize, from: &str, request: &str) -> Exchange {
    Exchange {
        index,
        from: from.into(),
        request: request.into(),
        topic: format!("/v1/E/device/{from}"),
        recorded: judge::Answer::default(),
        // Answered: an outcome of silence is no expectation (tested on its own).
        live: judge::Answer {
            reply: Some(serde_json::json!({"code": 200})),
            ..Default::default()
        },
        diffs: vec![],
        skipped: None,
        late: vec![],
    }
}

fn outcome(exchanges: Vec<Exchange>) -> Outcome {
    Outcome {
        source: "session.pcap".into(),
        role: Role::Platform,
        seed: 1,
        recorded_edge: "E".into(),
        recorded_edges: vec![],
        live_edge: "E".into(),
        exchanges,
        mutations: vec![],
        new_findings: vec![],
        orphan_replies: vec![],
        live_findings: vec![],
        broker_lost: None,
        interrupted: None,
        injected_findings: vec![],
        counterpart_silent: false,
        unexpected_requests: vec![],
        record: None,
    }
}

fn skipped_linkup() -> Exchange {
    let mut x = exchange(0, "edge", "EVENT_LINKUP");
    x.skipped = Some(not_exercised_reason(
        "EVENT_LINKUP",
        "EVENT_LINKUP",
        Duration::from_secs(10),
    ));
    x
}

#[test]
fn the_reason_names_the_wait_and_the_remedy() {
    let first = not_exercised_reason("EVENT_LINKUP", "EVENT_LINKUP", Duration::from_secs(10));
    assert!(first.starts_with(
        "not exercised: the edge did not send EVENT_LINKUP within 10 s — it was probably already online"
    ));
    assert!(first.ends_with("start the replay before the device powers on, or restart it"));
    let topo = not_exercised_reason("CMD_TOPO_ADD", "EVENT_LINKUP", Duration::from_millis(1500));
    assert!(topo.contains("CMD_TOPO_ADD by itself"), "{topo}");
    assert!(topo.contains("no EVENT_LINKUP within 1.5 s"), "{topo}");
}

#[test]
fn a_skipped_exchange_is_neither_pass_nor_fail() {
    let o = outcome(vec![
        skipped_linkup(),
        exchange(1, "platform", "CMD_SYS_STATUS"),
    ]);
    assert!(!o.failed());
    let table = show(&o, None, Format::Table);
    assert!(
        table.contains("1 compared, 1 as recorded, 0 different, 1 not exercised"),
        "{table}"
    );
    assert!(table.contains("SKIP  edge"), "{table}");
    assert!(
        table.contains("RESULT: as recorded (1 exchange started by the edge not exercised"),
        "{table}"
    );
    let junit = show(&o, None, Format::Junit);
    assert!(
        junit.contains("failures=\"0\" errors=\"0\" skipped=\"1\""),
        "{junit}"
    );
    assert!(
        junit.contains(
            "<skipped message=\"not exercised: the edge did not send EVENT_LINKUP within 10 s"
        ),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
}

#[test]
fn the_json_report_carries_the_result_and_the_expectation() {
    let o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    let e = Expectation {
        divergences: vec!["exchange 0 CMD_SYS_STATUS: reply.code: expected 200, got 404".into()],
        ..Expectation::default()
    };
    let v: Value = serde_json::from_str(&show(&o, Some(&e), Format::Json)).unwrap();
    assert_eq!(v["result"], "1 divergence from the expectation", "{v}");
    assert_eq!(
        v["expectation"]["divergences"][0],
        "exchange 0 CMD_SYS_STATUS: reply.code: expected 200, got 404"
    );
    let v: Value = serde_json::from_str(&show(&o, None, Format::Json)).unwrap();
    assert_eq!(v["result"], "as recorded", "{v}");
    assert!(v.get("expectation").is_none());
    // What --save-expect writes reads back as an outcome.
    let _: Outcome = serde_json::from_str(&o.to_json()).unwrap();
}

#[test]
fn requests_beyond_the_recording_are_listed() {
    let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    o.unexpected_requests = vec!["EVENT_LINKUP at 6.5 s into the replay (mid 9)".into()];
    let t = show(&o, None, Format::Table);
    assert!(
        t.contains("Requests of the edge the recording does not hold"),
        "{t}"
    );
    assert!(
        t.contains("  EVENT_LINKUP at 6.5 s into the replay (mid 9)"),
        "{t}"
    );
    let v: Value = serde_json::from_str(&o.to_json()).unwrap();
    assert_eq!(
        v["unexpected_requests"][0],
        "EVENT_LINKUP at 6.5 s into the replay (mid 9)"
    );
}

#[test]
fn a_silent_counterpart_is_named_as_the_one_cause() {
    let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    assert!(!show(&o, None, Format::Table).contains("published nothing"));
    o.counterpart_silent = true;
    let t = show(&o, None, Format::Table);
    assert!(
        t.contains("The edge (--edge-id E) published nothing during the replay"),
        "{t}"
    );
}

#[test]
fn a_replay_that_exercised_nothing_exits_3_not_0() {
    let none = outcome(vec![]);
    assert_eq!(
        none.exit_code(None, false),
        crate::report::EXIT_NOTHING_JUDGED
    );
    assert!(show(&none, None, Format::Table).contains("RESULT: nothing exercised"));
    let skipped = outcome(vec![skipped_linkup()]);
    assert_eq!(
        skipped.exit_code(None, false),
        crate::report::EXIT_NOTHING_JUDGED
    );
    let one = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    assert_eq!(one.exit_code(None, false), 0);
}

#[test]
fn a_skipped_exchange_is_no_divergence_from_an_expectation_that_passed_it() {
    let expected = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
    let got = outcome(vec![skipped_linkup()]);
    let e = check_expected(&expected, &got);
    assert!(e.divergences.is_empty(), "{e:#?}");
    assert_eq!(e.notes.len(), 1);
    assert!(
        e.notes[0].contains("has it passed: not counted as a divergence"),
        "{e:#?}"
    );
    let junit = show(&got, Some(&e), Format::Junit);
    assert!(
        junit.contains("<system-out>exchange 0 EVENT_LINKUP: not exercised"),
        "{junit}"
    );
}

#[test]
fn an_exchange_skipped_in_the_expectation_still_fails_when_it_differs_now() {
    let expected = outcome(vec![skipped_linkup()]);
    let clean = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
    let e = check_expected(&expected, &clean);
    assert!(e.divergences.is_empty() && e.notes.len() == 1, "{e:#?}");
    let mut differs = exchange(0, "edge", "EVENT_LINKUP");
    differs.diffs = vec!["request.param.dev: missing".into()];
    let e = check_expected(&expected, &outcome(vec![differs]));
    assert_eq!(e.divergences.len(), 1, "{e:#?}");
    assert!(e.divergences[0].contains("request.param.dev: missing"));
}

fn differing(index: usize, request: &str, diff: &str) -> Exchange {
    let mut x = exchange(index, "platform", request);
    x.diffs = vec![diff.into()];
    x
}

/// The report: `--expect` matched, exit 0, yet the JUnit said
/// `failures="20"` and its `tests` disagreed with its cases.
#[test]
fn recorded_differences_the_expectation_holds_are_no_junit_failures() {
    let o = outcome(vec![
        differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
        exchange(1, "platform", "CMD_INFO_QUERY"),
        differing(2, "CMD_CON_START", "missing job result"),
    ]);
    let e = check_expected(&o.clone(), &o);
    assert!(e.divergences.is_empty(), "{e:#?}");
    let junit = show(&o, Some(&e), Format::Junit);
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains("failures=\"0\""), "{junit}");
    let cases = junit.matches("<testcase ").count();
    assert!(
        junit.contains(&format!(
            "<testsuites name=\"edgetap replay\" tests=\"{cases}\""
        )),
        "{junit}"
    );
    assert!(
        junit.contains("as the expectation holds:\nreply code: recorded 200, live 400"),
        "{junit}"
    );
    assert_eq!(o.exit_code(Some(&e), false), 0);
    let table = show(&o, Some(&e), Format::Table);
    assert!(!table.contains("differences found"), "{table}");
    assert!(table.contains("Expectation: 0 divergences"), "{table}");
    assert!(
        table.contains(
            "RESULT: as expected (2 exchanges differ from the recording, as the expectation holds)"
        ),
        "{table}"
    );
    assert!(table.contains("known platform CMD_SYS_STATUS"), "{table}");
}

#[test]
fn only_the_exchange_that_diverges_from_the_expectation_fails() {
    let expected = outcome(vec![
        differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
        exchange(1, "platform", "CMD_INFO_QUERY"),
    ]);
    let got = outcome(vec![
        differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
        differing(1, "CMD_INFO_QUERY", "missing reply"),
    ]);
    let e = check_expected(&expected, &got);
    assert_eq!(e.exchanges, BTreeSet::from([1]), "{e:#?}");
    let junit = show(&got, Some(&e), Format::Junit);
    // The diverging exchange and the whole-outcome case.
    assert_eq!(junit.matches("<failure").count(), 2, "{junit}");
    assert!(
        junit.contains(
            "<failure message=\"1 divergence from the expectation\">exchange 1 CMD_INFO_QUERY"
        ),
        "{junit}"
    );
    assert_eq!(got.exit_code(Some(&e), false), 1);
    let table = show(&got, Some(&e), Format::Table);
    assert!(table.contains("Expectation: 1 divergence\n"), "{table}");
    assert!(
        table.contains("RESULT: 1 divergence from the expectation"),
        "{table}"
    );
}

#[test]
fn without_an_expectation_differences_fail_and_save_expect_exits_0() {
    let o = outcome(vec![differing(0, "CMD_SYS_STATUS", "missing reply")]);
    let junit = show(&o, None, Format::Junit);
    assert!(
        junit.contains("<failure message=\"1 difference\">missing reply</failure>"),
        "{junit}"
    );
    assert_eq!(o.exit_code(None, false), 1);
    assert_eq!(o.exit_code(None, true), 0);
    assert!(show(&o, None, Format::Table).contains("RESULT: differences found"));
}

#[test]
fn a_lost_broker_is_an_error_case_and_exit_code_2() {
    let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    o.broker_lost = Some("the connection to the broker B was lost 3 s into the replay".into());
    let junit = show(&o, None, Format::Junit);
    assert!(junit.contains("errors=\"1\""), "{junit}");
    assert!(
        junit.contains(
            "<error message=\"broker connection lost\">the connection to the broker B was lost 3 s"
        ),
        "{junit}"
    );
    assert_eq!(o.exit_code(None, true), 2);
    let e = check_expected(&o.clone(), &o);
    assert_eq!(o.exit_code(Some(&e), false), 2);
    let table = show(&o, None, Format::Table);
    assert!(
        table.contains("BROKER CONNECTION LOST: the connection"),
        "{table}"
    );
    assert!(table.contains("RESULT: broker connection lost"), "{table}");
}

#[test]
fn new_rules_are_a_test_case_of_their_own() {
    let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    o.new_findings.push(FindingBrief {
        rule: "envelope.request".into(),
        severity: Severity::Error,
        line: "error 5.3 [envelope.request]".into(),
        mutation: None,
    });
    let junit = show(&o, None, Format::Junit);
    assert!(junit.contains("name=\"no rule beyond the recording's\"><failure message=\"1 rule raised by the replay and not by the recording\""), "{junit}");
    let e = check_expected(&o.clone(), &o);
    assert!(!show(&o, Some(&e), Format::Junit).contains("<failure"));
}

#[test]
fn an_expectation_file_without_skips_still_loads() {
    let v = serde_json::to_value(outcome(vec![exchange(0, "edge", "EVENT_LINKUP")])).unwrap();
    assert!(v["exchanges"][0].get("skipped").is_none());
    let o: Outcome = serde_json::from_value(v).unwrap();
    assert!(o.exchanges[0].skipped.is_none());
}

/// An exchange the counterpart answered.
fn answered(index: usize) -> Exchange {
    let mut x = exchange(index, "platform", "CMD_SYS_STATUS");
    x.live.reply = Some(serde_json::json!({"code": 200}));
    x
}

#[test]
fn an_expectation_of_silence_never_passes() {
    let mut silent = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
    silent.exchanges[0].live = judge::Answer::default();
    assert!(silent.answered_nothing());
    // Even a run as silent as the expectation diverges from it.
    let e = check_expected(&silent, &silent.clone());
    assert!(
        e.divergences[0].starts_with("expectation: saved while the edge E answered nothing"),
        "{e:?}"
    );
    assert_eq!(silent.exit_code(Some(&e), false), 1);
    let heard = outcome(vec![answered(0)]);
    assert!(!heard.answered_nothing());
    assert!(check_expected(&heard, &heard.clone())
        .divergences
        .is_empty());
}

#[test]
fn the_html_expectation_section_is_never_an_empty_table() {
    let o = outcome(vec![answered(0)]);
    let page = show(&o, None, Format::Html);
    assert!(page.contains("Expectation: none"), "no expectation said");
    assert!(page.contains("no --expect file"));
    let e = check_expected(&o.clone(), &o);
    let page = show(&o, Some(&e), Format::Html);
    let section = &page[page.find("Expectation (--expect)").unwrap()..];
    let section = &section[..section.find("</table>").unwrap()];
    assert!(section.contains("exchange 0 CMD_SYS_STATUS"), "{section}");
    assert!(section.contains("as recorded"), "{section}");
    assert!(
        section.contains("rules raised beyond the recording"),
        "{section}"
    );
}

#[test]
fn injected_findings_are_the_tests_not_the_counterparts() {
    let mut o = outcome(vec![answered(0)]);
    o.injected_findings.push(FindingBrief {
        rule: "payload.invalid_json".into(),
        severity: Severity::Error,
        line: "error 5.3 [payload.invalid_json] packet 56".into(),
        mutation: Some("invalid-json".into()),
    });
    assert!(!o.failed());
    let v: Value = serde_json::from_str(&show(&o, None, Format::Json)).unwrap();
    assert_eq!(v["injected_findings"][0]["mutation"], "invalid-json", "{v}");
    assert_eq!(v["live_findings"], serde_json::json!([]), "{v}");
    let page = show(&o, None, Format::Html);
    let section = &page[page.find("Injected by the test").unwrap()..];
    assert!(section.contains("payload.invalid_json"), "{section}");
    assert!(!show(&o, None, Format::Junit).contains("<failure"));
}

#[test]
fn an_interrupted_replay_says_so_in_every_format() {
    let mut o = outcome(vec![answered(0)]);
    o.interrupted = Some("interrupted by SIGINT 1.2 s into the replay".into());
    assert_eq!(o.exit_code(None, false), EXIT_INTERRUPTED);
    let t = show(&o, None, Format::Table);
    assert!(t.contains("INTERRUPTED by SIGINT 1.2 s"), "{t}");
    assert!(t.contains("RESULT: interrupted"), "{t}");
    let j = show(&o, None, Format::Junit);
    assert!(j.contains("<error message=\"replay interrupted\""), "{j}");
    let v: Value = serde_json::from_str(&show(&o, None, Format::Json)).unwrap();
    assert_eq!(
        v["interrupted"],
        "interrupted by SIGINT 1.2 s into the replay"
    );
}
