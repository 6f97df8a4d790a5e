use super::envelope::nesting_depth;
use super::*;
use bytes::Bytes;
use serde_json::Value;

#[test]
fn topics_canonical_and_deviant() {
    let t = parse_topic("/v1/E1/device/command").unwrap();
    assert_eq!((t.class, t.publisher), (Class::Request, Actor::Platform));
    assert!(!t.missing_slash && !t.placeholder);
    let t = parse_topic("v1/E1/device/reply").unwrap();
    assert!(t.missing_slash);
    assert_eq!(t.class, Class::Reply);
    for placeholder in ["${edgeId}", "{edgeId}", "\\${edgeId}", "${deviceId}"] {
        let t = parse_topic(&format!("/v1/{placeholder}/device/data")).unwrap();
        assert!(t.placeholder, "{placeholder}");
    }
    // Ids with `$` or braces are ids: the standard does not restrict them.
    for id in ["E$1", "$E1", "ZB{01}", "edge{1}", "{01}", "{}"] {
        let t = parse_topic(&format!("/v1/{id}/device/data")).unwrap();
        assert!(!t.placeholder, "{id}");
    }
    assert_eq!(parse_topic("/v1/E1/device"), None);
    assert_eq!(parse_topic("/v2/E1/device/data"), None);
    assert_eq!(parse_topic("sensors/temp"), None);
    assert_eq!(parse_topic("/v1/E1/device/data/extra"), None);
}

#[test]
fn mid_stays_exact_beyond_32_and_53_bits() {
    let e = parse_envelope(bytes::Bytes::from_static(
        br#"{"mid":9007199254740993,"type":"CMD_X"}"#,
    ))
    .unwrap();
    assert_eq!(e.mid, Some(9_007_199_254_740_993));
    let e = parse_envelope(bytes::Bytes::from_static(
        br#"{"mid":"1000000000020034","code":"200"}"#,
    ))
    .unwrap();
    assert_eq!(e.mid, Some(1_000_000_000_020_034));
    assert_eq!(e.code, Some(200));
}

#[test]
fn type_key_with_trailing_space_is_recognised_and_recorded() {
    let e = parse_envelope(bytes::Bytes::from_static(
        br#"{"type ":"EVENT_LINKUP","mid":1}"#,
    ))
    .unwrap();
    assert_eq!(e.msg_type.as_deref(), Some("EVENT_LINKUP"));
    assert_eq!(
        e.deviations,
        vec![Deviation::KeyWhitespace {
            seen: "type ".into(),
            key: "type".into()
        }]
    );
}

#[test]
fn dialects_are_read_as_meant_and_recorded() {
    let kinds_of = |p: &[u8]| -> Vec<&'static str> {
        parse_envelope(bytes::Bytes::copy_from_slice(p))
            .unwrap()
            .deviations
            .iter()
            .map(|d| d.kind())
            .collect()
    };
    let kinds = |p: &'static [u8]| -> Vec<&'static str> {
        parse_envelope(bytes::Bytes::from_static(p))
            .unwrap()
            .deviations
            .iter()
            .map(|d| d.kind())
            .collect()
    };
    let e = parse_envelope(bytes::Bytes::from_static(b"{\"mid\":3,\"type\":\"X\"}\0")).unwrap();
    assert_eq!((e.mid, e.msg_type.as_deref()), (Some(3), Some("X")));
    assert_eq!(kinds(b"{\"type\":\"X\"}\0"), vec!["trailing_bytes"]);
    assert_eq!(kinds(b"\xEF\xBB\xBF{\"type\":\"X\"}"), vec!["bom"]);
    // Trailing JSON whitespace is JSON: no deviation.
    assert!(kinds(b"{\"type\":\"X\"}\r\n ").is_empty());
    assert_eq!(
        kinds(br#"{"mid":"7","code":"200"}"#),
        vec!["string_number", "string_number"]
    );
    assert_eq!(
        kinds(br#"{"timestamp":1795687200}"#),
        vec!["timestamp_form"]
    );
    assert_eq!(
        kinds(br#"{"timestamp":"2026-11-26T10:00:00Z"}"#),
        vec!["timestamp_form"]
    );
    for form in [
        &br#"{"timestamp":"2026-11-26 10:00:00.123"}"#[..],
        br#"{"timestamp":"2026/11/26 10:00:00"}"#,
    ] {
        assert_eq!(kinds_of(form), vec!["timestamp_form"]);
    }
    assert!(kinds(br#"{"timestamp":"2026-11-26 10:00:00"}"#).is_empty());
    // Not a date at all: the schema's format check, not a dialect.
    assert!(kinds(br#"{"timestamp":"yesterday"}"#).is_empty());
    // A NUL inside the JSON is no tolerated edge.
    assert!(matches!(
        parse_envelope(bytes::Bytes::from_static(b"{\"type\":\0\"X\"}")),
        Err(PayloadError::InvalidJson(_))
    ));
}

#[test]
fn nesting_beyond_the_parser_is_too_deep_not_invalid() {
    let deep = |n: usize, close: usize| {
        let body = format!("{}1{}", "[".repeat(n), "]".repeat(close));
        parse_envelope(Bytes::from(format!(r#"{{"type":"X","p":{body}}}"#)))
    };
    assert_eq!(
        deep(1000, 1000).err(),
        Some(PayloadError::TooDeep {
            depth: 1001,
            checked: true
        })
    );
    assert!(matches!(deep(1000, 999), Err(PayloadError::InvalidJson(_))));
    // Beyond what is validated: said so, and no stack or memory taken for it.
    let n = MAX_VALIDATED_DEPTH + 10;
    assert_eq!(
        deep(n, n).err(),
        Some(PayloadError::TooDeep {
            depth: n + 1,
            checked: false
        })
    );
    // Brackets inside strings do not count.
    assert_eq!(nesting_depth(br#"{"a":"[[[[\"[[","b":[1]}"#), 2);
}

#[test]
fn invalid_json_names_the_position() {
    match parse_envelope(bytes::Bytes::from_static(b"{\"mid\": 1,\n \"type\": }")) {
        Err(PayloadError::InvalidJson(m)) => assert!(m.contains("line 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse_envelope(bytes::Bytes::from_static(b"[1]")).unwrap_err(),
        PayloadError::NotObject("array")
    );
    // Not UTF-8 inside a string: still serde_json's message, with its position.
    match parse_envelope(bytes::Bytes::from_static(
        b"{\"mid\": 1,\n \"a\": \"\xff\"}",
    )) {
        Err(PayloadError::InvalidJson(m)) => assert!(m.contains("line 2"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn timestamps_in_every_accepted_form() {
    let std = timestamp_us(&Value::from("2026-11-26 18:00:00")).unwrap();
    assert_eq!(std, 1_795_687_200 * 1_000_000); // 10:00:00 UTC
    assert_eq!(timestamp_us(&Value::from(1_795_687_200i64)), Some(std));
    assert_eq!(timestamp_us(&Value::from(1_795_687_200_000i64)), Some(std));
    assert_eq!(
        timestamp_us(&Value::from("2026-11-26T10:00:00Z")),
        Some(std)
    );
    assert_eq!(timestamp_us(&Value::from("2026-02-30 10:00:00")), None);
    assert_eq!(
        timestamp_us(&Value::from("2026-11-26 18:00:00.250")),
        Some(std + 250_000)
    );
    assert_eq!(timestamp_us(&Value::from("2026/11/26 18:00:00")), Some(std));
    assert_eq!(timestamp_us(&Value::from("2026-11-26T18:00:00")), Some(std));
}
