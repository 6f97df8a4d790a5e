//! The context a message is judged in, and the one builder of the engine's findings.

use super::*;

#[derive(Clone)]
pub(super) struct Ctx<'m> {
    pub(super) class: Class,
    /// The message's type (borrowed from it: no copy per message).
    pub(super) msg_type: Option<&'m str>,
    pub(super) typedef: Option<Arc<TypeDef>>,
    /// The clause it is judged in (borrowed from the rule set, as is `table`).
    pub(super) clause: Option<&'m str>,
    pub(super) job_of: Option<String>,
    /// The table the message's content is defined in: its type's, or for a job
    /// result the table of its job's result.
    pub(super) table: Option<&'m str>,
}

impl Ctx<'_> {
    pub(super) fn vars(&self, m: &Message) -> Vars {
        vec![
            (
                "type",
                self.msg_type.map_or_else(|| "?".into(), str::to_string),
            ),
            ("mid", m.mid().map_or_else(|| "-".into(), |x| x.to_string())),
            ("edge_id", m.topic.edge_id.clone()),
            ("topic", m.topic_name.clone()),
            ("channel", m.topic.channel.clone()),
            ("role", m.topic.role.clone()),
            ("class", self.class.as_str().to_string()),
        ]
    }

    pub(super) fn finding(&self, rule: &Rule, m: &Message, vars: Vars) -> Finding {
        let msg_type = vars
            .iter()
            .find(|(k, _)| *k == "type")
            .map(|(_, v)| v.clone())
            .filter(|v| v != "?");
        let cites = Cites {
            clause: rule
                .def
                .clause
                .clone()
                .or_else(|| self.clause.map(str::to_string))
                .unwrap_or_else(|| "5.3".into()),
            // A rule of its own clause (an envelope, payload or topic rule) cites
            // its own table or none; one judged in the type's clause, the type's.
            table: rule.def.table.clone().or_else(|| {
                rule.def
                    .clause
                    .is_none()
                    .then_some(self.table)
                    .flatten()
                    .map(str::to_string)
            }),
            msg_type,
            mid: m.mid(),
            from: Some(m.topic.publisher),
        };
        let place = Place {
            conn: Some(m.conn),
            side: Some(m.side),
            packet: Some(m.packet),
            time_us: Some(m.time_us),
            offset: None,
            edge_id: Some(m.topic.edge_id.clone()),
            topic: Some(m.topic_name.clone()),
        };
        build(rule, cites, place, &vars)
    }

    pub(super) fn selects(&self, when: &Selector, m: &Message) -> bool {
        let t = self.msg_type.unwrap_or("");
        when.types.as_ref().map_or(true, |x| x.contains(t))
            && when
                .class
                .as_ref()
                .map_or(true, |x| x.contains(self.class.as_str()))
            && when
                .channel
                .as_ref()
                .map_or(true, |x| x.contains(&m.topic.channel))
            && when.job_of.as_ref().map_or(true, |x| {
                self.job_of.as_deref().is_some_and(|j| x.contains(j))
            })
            && when.param.as_ref().map_or(true, |want| {
                let param = m.envelope().and_then(|e| e.param());
                want.iter().all(|(k, v)| {
                    param.and_then(|p| p.get(k)).is_some_and(|x| {
                        x.as_str() == Some(v.as_str())
                            || protocol::as_i64_lenient(&x).is_some_and(|n| n.to_string() == *v)
                    })
                })
            })
    }

    /// The expected "channel/role" when the message travels elsewhere.
    pub(super) fn topic_mismatch(&self, m: &Message) -> Option<String> {
        let def = self.typedef.as_ref()?;
        let role = match self.class {
            Class::Reply => protocol::reply_role(&def.role)?,
            _ => def.role.as_str(),
        };
        let ok = def.channels.iter().any(|c| same_name(c, &m.topic.channel))
            && same_name(&m.topic.role, role);
        (!ok).then(|| format!("{}/{}", def.channels.join("|"), role))
    }
}

/// What a finding cites besides its rule and its place.
pub(super) struct Cites {
    pub(super) clause: String,
    pub(super) table: Option<String>,
    pub(super) msg_type: Option<String>,
    pub(super) mid: Option<u64>,
    pub(super) from: Option<Actor>,
}

/// The one builder of the engine's findings: the rule's id, severity, basis and
/// message (its template filled with `vars`), what it cites, and where.
pub(super) fn build(rule: &Rule, cites: Cites, place: Place, vars: &Vars) -> Finding {
    Finding {
        rule: rule.def.id.clone(),
        clause: cites.clause,
        table: cites.table,
        severity: rule.def.severity,
        edge_id: place.edge_id,
        msg_type: cites.msg_type,
        topic: place.topic,
        mid: cites.mid,
        packet: place.packet,
        time: place.time_us,
        message: fill(&rule.def.message, vars),
        conn: place.conn,
        side: place.side,
        offset: place.offset,
        basis: rule.def.basis.clone(),
        from: cites.from,
    }
}
