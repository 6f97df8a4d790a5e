//! The rules' own page and policy: `rules list --format md` is docs/rules.md, and
//! `rules lint` holds a rule's severity to the words of its basis.

use std::path::Path;
use std::process::{Command, Output};

fn edgetap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(args)
        .output()
        .expect("run edgetap")
}

#[test]
fn docs_rules_md_is_the_output_of_rules_list_format_md() {
    let out = edgetap(&["rules", "list", "--format", "md"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "docs/rules.md differs from `edgetap rules list --format md`: regenerate it with\n  \
         cargo run -- rules list --format md > docs/rules.md"
    );
    // Every rule is on the page with its severity.
    let rules = edgetap::rules::RuleSet::builtin();
    for r in &rules.rules {
        let row = format!("| `{}` |", r.def.id);
        let line = page.lines().find(|l| l.starts_with(&row));
        assert!(
            line.is_some_and(|l| l.contains(&format!(" {} |", r.def.severity.as_str()))),
            "{}",
            r.def.id
        );
    }
}

#[test]
fn lint_holds_rules_to_the_severity_policy() {
    let dir = std::env::temp_dir().join(format!("edgetap-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A warning resting on a 先…之后 sentence, and an error resting on an example.
    std::fs::write(
        dir.join("vendor.json"),
        r#"{"rules": [
            {"id": "vendor.order", "severity": "warning", "basis": "6.2.1.2 \"先对容器安装命令应答，之后进行应用下载与安装\"", "message": "m", "check": {"kind": "job_result_early"}},
            {"id": "vendor.example", "severity": "error", "basis": "表10 \"CPU 负载（例如 50 表示 50%）\"", "message": "m", "check": {"kind": "reply_orphan"}}]}"#,
    )
    .unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rule vendor.order: the basis has normative wording"),
        "{err}"
    );
    assert!(
        err.contains("rule vendor.example: an error rule whose basis only gives an example"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
