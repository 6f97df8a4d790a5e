//! `edgetap captures`: list, show, delete and export stored captures.

use std::io::Write;
use std::sync::Arc;

use super::print_rows;
use crate::cli::{self, ListFormat};
use edgetap::rules::RuleSet;

pub fn run(command: cli::CapturesCommand, out: &mut dyn Write) -> anyhow::Result<u8> {
    use cli::CapturesCommand as C;
    use edgetap::store::Store;
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| us.to_string())
    };
    match command {
        C::List { store, format } => {
            let store = Store::open_existing(&store.dir)?;
            #[derive(serde::Serialize, tabled::Tabled)]
            struct Row {
                id: u64,
                name: String,
                started: String,
                #[tabled(display_with = "show_ended")]
                ended: Option<String>,
                connections: u64,
                packets: u64,
                findings: u64,
                bytes: u64,
                /// "complete", or what the proxy could not record.
                recorded: String,
                #[tabled(skip)]
                not_recorded: Option<edgetap::store::NotRecorded>,
                #[tabled(skip)]
                listen: String,
                #[tabled(skip)]
                upstream: String,
                #[tabled(skip)]
                rules_version: String,
            }
            fn show_ended(e: &Option<String>) -> String {
                e.clone().unwrap_or_else(|| "(none)".into())
            }
            let rows: Vec<Row> = store
                .captures()?
                .into_iter()
                .map(|m| Row {
                    id: m.id,
                    name: m.name.clone(),
                    started: time(m.started_us),
                    ended: m.ended_us.map(time),
                    connections: m.connections,
                    packets: m.packets,
                    findings: m.findings,
                    bytes: m.bytes,
                    recorded: recorded(&store, &m),
                    not_recorded: m.not_recorded,
                    listen: m.listen,
                    upstream: m.upstream,
                    rules_version: m.rules_version,
                })
                .collect();
            print_rows(rows, format, out)?;
            Ok(0)
        }
        C::Show {
            id,
            store,
            format,
            show_secrets,
            payloads,
        } => {
            let store = Store::open_existing(&store.dir)?;
            let meta = store.capture(id)?;
            let conns = store.conns(id)?;
            let packets: Vec<edgetap::store::PacketRecord> = store
                .packets(id)
                .map(|p| p.map(|p| if show_secrets { p } else { p.redacted() }))
                .collect::<Result<_, _>>()?;
            let mut groups = store.finding_groups(id)?;
            let gaps = edgetap::analyze::stored::gaps(&store, id)?;
            // Findings cite the frame numbers of `captures export`.
            let frames = edgetap::store::export::frame_numbers(&store, id)?;
            groups.renumber(&frames);
            // The client id of each connection, from its CONNECT.
            let client_ids: std::collections::BTreeMap<u64, String> = packets
                .iter()
                .filter_map(|p| Some((p.conn, p.client_id.clone()?)))
                .collect();
            let messages = match payloads {
                true => edgetap::replay::source::stored_messages(
                    &store,
                    id,
                    Arc::new(RuleSet::builtin()),
                    show_secrets,
                )?,
                false => vec![],
            };
            match format {
                ListFormat::Json => {
                    let mut v = serde_json::json!({
                        "gaps": gaps,
                        "finding_groups": groups,
                        "capture": meta,
                        "connections": conns,
                        "client_ids": client_ids,
                        "packets": packets,
                        "findings": groups.examples(),
                    });
                    if payloads {
                        v["messages"] = serde_json::to_value(&messages)?;
                    }
                    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                }
                ListFormat::Table => {
                    writeln!(
                        out,
                        "capture {} \"{}\": {} → {}\nstarted {}, ended {}\nrules: {}\n{} connections, {} chunks, {} bytes, {} MQTT packets, {} findings\n",
                        meta.id,
                        meta.name,
                        meta.listen,
                        meta.upstream,
                        time(meta.started_us),
                        meta.ended_us.map(time).unwrap_or_else(|| match store.recorder(&meta) {
                            edgetap::store::Recorder::Recording => "(not yet: being recorded)".into(),
                            _ => "(never: the recorder stopped without closing it)".into(),
                        }),
                        meta.rules_version,
                        meta.connections,
                        meta.chunks,
                        meta.bytes,
                        meta.packets,
                        meta.findings
                    )?;
                    for g in &gaps {
                        writeln!(out, "{g}")?;
                    }
                    if !gaps.is_empty() {
                        writeln!(out)?;
                    }
                    for c in &conns {
                        writeln!(
                            out,
                            "conn {} {} → {}: {}, client id {}",
                            c.conn,
                            c.client,
                            c.server,
                            c.end.as_deref().unwrap_or("open"),
                            client_ids.get(&c.conn).map_or("(no CONNECT seen)", |s| s)
                        )?;
                    }
                    writeln!(out)?;
                    for p in &packets {
                        let mut line = format!(
                            "{} conn {} {} chunk {} {} len {}",
                            time(p.time_us),
                            p.conn,
                            p.side,
                            p.chunk,
                            p.packet_type,
                            p.len
                        );
                        for (k, v) in [
                            ("client_id", &p.client_id),
                            ("version", &p.version),
                            ("username", &p.username),
                            ("password", &p.password),
                            ("topic", &p.topic),
                        ] {
                            if let Some(v) = v {
                                line.push_str(&format!(" {k}={v}"));
                            }
                        }
                        writeln!(out, "{line}")?;
                    }
                    if payloads {
                        writeln!(out, "\nMessages ({}):", messages.len())?;
                        for m in &messages {
                            writeln!(
                                out,
                                "{} conn {} ({}) {} chunk {} {} {}",
                                time(m.time_us),
                                m.conn,
                                m.client_id.as_deref().unwrap_or("?"),
                                m.side.arrow(),
                                m.chunk,
                                m.topic,
                                m.payload
                            )?;
                        }
                    }
                    if !groups.groups.is_empty() {
                        writeln!(
                            out,
                            "\nFindings: {} in {} groups by edge, rule and field path (every occurrence: edgetap analyze --capture {id}):",
                            groups.total,
                            groups.groups.len()
                        )?;
                    }
                    for g in &groups.groups {
                        writeln!(out, "  {}", g.line())?;
                    }
                    if groups.ungrouped > 0 {
                        writeln!(
                            out,
                            "  … and {} findings of further groups (not kept)",
                            groups.ungrouped
                        )?;
                    }
                }
            }
            Ok(0)
        }
        C::Delete { id, store, force } => {
            let store = Store::open_existing(&store.dir)?;
            // A capture being recorded: deleting it would lose what the proxy
            // records, while the proxy reports it stored. One whose recorder is gone
            // (killed) goes without --force.
            let meta = store.capture(id)?;
            if !force && store.recorder(&meta) == edgetap::store::Recorder::Recording {
                anyhow::bail!(
                    "capture {id} is being recorded: a proxy may still be recording it (it \
                     holds chunks/{id}.recording locked); stop it first, or --force deletes \
                     it anyway"
                );
            }
            store.delete(id)?;
            writeln!(out, "capture {id} deleted")?;
            Ok(0)
        }
        C::Export {
            id,
            pcapng,
            store,
            show_secrets,
        } => {
            use anyhow::Context as _;
            let store = Store::open_existing(&store.dir)?;
            // What devices sent is the owner's alone, like the store it comes from:
            // created 0600, and an older file written over is made 0600 first.
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pcapng)
                .and_then(|f| {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    Ok(f)
                })
                .with_context(|| format!("create {}", pcapng.display()))?;
            let s = edgetap::store::export::export_pcapng(
                &store,
                id,
                std::io::BufWriter::new(file),
                show_secrets,
            )?;
            writeln!(
                out,
                "{}: {} frames, {} finding comments",
                pcapng.display(),
                s.frames,
                s.comments
            )?;
            for g in edgetap::analyze::stored::gaps(&store, id)? {
                writeln!(out, "{g}")?;
            }
            Ok(0)
        }
    }
}

/// The `recorded` column of `captures list`: whether the capture is whole, and if
/// not what is missing (its recorder gone without closing it, bytes and packets
/// not recorded).
fn recorded(store: &edgetap::store::Store, m: &edgetap::store::CaptureMeta) -> String {
    use edgetap::store::Recorder;
    let lost = m.not_recorded.as_ref().map(|n| {
        format!(
            "{} bytes ({} MQTT packets) not recorded",
            n.bytes, n.packets
        )
    });
    match (store.recorder(m), lost) {
        (Recorder::Gone, None) => "INCOMPLETE: the recorder stopped without closing it".into(),
        (Recorder::Gone, Some(l)) => {
            format!("INCOMPLETE: the recorder stopped without closing it; {l}")
        }
        (Recorder::Recording, None) => "being recorded".into(),
        (Recorder::Recording, Some(l)) => format!("being recorded; INCOMPLETE: {l}"),
        (Recorder::Closed, None) => "complete".into(),
        (Recorder::Closed, Some(l)) => format!("INCOMPLETE: {l}"),
    }
}
