//! Per-edge sequences of clause 6: link-up first, silence after link-down, assigned
//! ids, alarm recovery, report spacing; each judged only on history seen.

use super::*;

#[derive(Debug, Default)]
pub(super) struct EdgeState {
    /// Rule indexes of `first_message` rules already judged for this edge.
    pub(super) first_judged: HashSet<usize>,
    /// An EVENT_LINKUP of this edge was seen: its session began inside the input.
    pub(super) linked_up: bool,
    /// The first message of this edge in the input (from either side) was its
    /// EVENT_LINKUP: every request and job of its session since is in the input
    /// (unless bytes were lost: [`Engine::lost`]). Set at its first message.
    pub(super) began_with_linkup: Option<bool>,
    /// Rule ids of `silent_after` rules currently in force.
    pub(super) silenced: HashSet<String>,
    /// Per rule id: ids assigned so far.
    pub(super) assigned: HashMap<String, HashSet<String>>,
    /// Per rule id: active alarm values.
    pub(super) alarms: HashMap<String, HashSet<String>>,
    /// Per rule id: (announced period in seconds, time of the last report).
    pub(super) period: HashMap<String, (Option<f64>, Option<i64>)>,
    /// The edge published first, before any EVENT_LINKUP, on a connection whose
    /// start was seen: judged when its link-up follows on that connection, or at
    /// the end of input.
    pub(super) pre_access: Option<PreAccess>,
}

/// What an edge published before its access request, on a connection whose start
/// was seen: the findings of each outcome, built at that message.
#[derive(Debug)]
pub(super) struct PreAccess {
    pub(super) conn: ConnId,
    /// `access_first` findings: out when the link-up follows on `conn`.
    pub(super) access: Vec<Finding>,
    /// `first_message` findings: out at the end of input when it does not.
    pub(super) first: Vec<Finding>,
}

impl Engine {
    /// `edge`'s session is in the input from its EVENT_LINKUP (its first message
    /// here) with no byte lost since. Not proof that no request or job came before
    /// (a device re-links without the optional EVENT_LINKDOWN): what a job result on
    /// another channel's topic needs besides its job still awaiting it, before it is
    /// called that job's result (see `Wants::JobOf`).
    pub(super) fn whole_session(&self, edge: &str) -> bool {
        !self.lost
            && self
                .edges
                .get(edge)
                .is_some_and(|e| e.began_with_linkup == Some(true))
    }

    /// Per-edge sequences: link up/down, assigned ids, alarms, report spacing.
    pub(super) fn sequences(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let Some(t) = ctx.msg_type else {
            return;
        };
        let edge = edge_state(&mut self.edges, &m.topic.edge_id);
        let by_edge = m.topic.publisher == Actor::Edge;
        if edge.began_with_linkup.is_none() {
            edge.began_with_linkup = Some(by_edge && t == SESSION_START && !m.retained);
        }
        let clause = ctx.clause.unwrap_or("5.3");
        let mut unseen: Vec<(String, String)> = vec![];
        for (index, rule) in self.plan.sequence.iter().map(|&i| (i, &rules.rules[i])) {
            let id = &rule.def.id;
            match &rule.def.check {
                Check::FirstMessage { msg_type } | Check::AccessFirst { msg_type } if by_edge => {
                    // The edge's first message in the input only: a later connection
                    // is a reconnect, not a power-on.
                    let first = edge.first_judged.insert(index);
                    if !first || t == msg_type {
                        continue;
                    }
                    let rule_clause = || {
                        rule.def
                            .clause
                            .clone()
                            .unwrap_or_else(|| clause.to_string())
                    };
                    let access = matches!(rule.def.check, Check::AccessFirst { .. });
                    if ctx.class == Class::Reply {
                        // Its first message answers a command: the edge was online,
                        // so it linked up before the input began.
                        if !access {
                            unseen.push((
                                rule_clause(),
                                format!(
                                    "edge {}: its first message in the input is a reply to \
                                     {t}: it was online, linked up before the input began",
                                    m.topic.edge_id
                                ),
                            ));
                        }
                    } else if !m.origin_seen {
                        // The connection began before the input: what the edge
                        // sent first is not known.
                        if !edge.linked_up && !access {
                            unseen.push((
                                rule_clause(),
                                format!(
                                    "edge {}: the input starts after its connection opened \
                                     (no CONNECT seen), so whether it sent {msg_type} first is \
                                     not known; start edgetap before the device powers on, or \
                                     restart the device",
                                    m.topic.edge_id
                                ),
                            ));
                        }
                    } else if !edge.linked_up {
                        // A reconnect of an edge already linked up is no power-on.
                        // Which finding it is depends on whether the link-up follows
                        // on this connection: held until then.
                        let held = edge.pre_access.get_or_insert_with(|| PreAccess {
                            conn: m.conn,
                            access: vec![],
                            first: vec![],
                        });
                        let f = ctx.finding(rule, m, ctx.vars(m));
                        if access {
                            held.access.push(f);
                        } else {
                            held.first.push(f);
                        }
                    }
                }
                Check::SilentAfter { msg_type, until } if by_edge => {
                    if t == *until {
                        edge.silenced.remove(id);
                    } else if edge.silenced.contains(id) {
                        out.push(ctx.finding(rule, m, ctx.vars(m)));
                    }
                    if t == *msg_type {
                        edge.silenced.insert(id.clone());
                    }
                }
                Check::IdAssigned { uses, .. } => {
                    let linked_up = edge.linked_up;
                    let known = slot(&mut edge.assigned, id);
                    for sel in uses.iter().filter(|s| path_sel_matches(s, &t, ctx.class)) {
                        for value in values_at(m, &sel.path) {
                            if known.contains(&value) {
                                continue;
                            }
                            if !linked_up {
                                unseen.push(before_input(
                                    rule,
                                    clause,
                                    &m.topic.edge_id,
                                    "ids assigned",
                                    &sel.path,
                                ));
                                continue;
                            }
                            let mut v = ctx.vars(m);
                            v.push(("seen", value));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                }
                Check::RecoveryFollows {
                    msg_type,
                    path,
                    pairs,
                } if t == *msg_type => {
                    let linked_up = edge.linked_up;
                    let active = edge.alarms.entry(id.clone()).or_default();
                    for value in values_at(m, path) {
                        if let Some(recovers) = pairs.get(&value) {
                            if active.remove(recovers) {
                                continue;
                            }
                            if !linked_up {
                                unseen.push(before_input(
                                    rule,
                                    clause,
                                    &m.topic.edge_id,
                                    "alarms raised",
                                    &format!("recovery {value}"),
                                ));
                            } else {
                                let mut v = ctx.vars(m);
                                v.push(("seen", value.clone()));
                                v.push(("expected", recovers.clone()));
                                out.push(ctx.finding(rule, m, v));
                            }
                        } else {
                            active.insert(value);
                        }
                    }
                }
                Check::ReportPeriod {
                    msg_type,
                    period,
                    tolerance,
                } => {
                    let slot = slot(&mut edge.period, id);
                    if path_sel_matches(period, &t, ctx.class) {
                        if let Some(p) = values_at_json(m, &period.path)
                            .iter()
                            .find_map(|v| number_lenient(*v))
                        {
                            slot.0 = Some(p);
                        }
                    }
                    if t == *msg_type && ctx.class == Class::Report {
                        if let (Some(p), Some(last)) = (slot.0, slot.1) {
                            let dt = (m.time_us - last) as f64 / 1e6;
                            if p > 0.0 && (dt - p).abs() > tolerance * p {
                                let mut v = ctx.vars(m);
                                v.push(("seen", format!("{dt:.1}")));
                                v.push(("expected", format!("{p}")));
                                out.push(ctx.finding(rule, m, v));
                            }
                        }
                        slot.1 = Some(m.time_us);
                    }
                }
                _ => {}
            }
        }
        // A retained link-up replayed at subscription is history, not a session start.
        if by_edge && t == SESSION_START && !m.retained {
            edge.linked_up = true;
            // What the edge published before it on this connection came before its
            // access request.
            if let Some(held) = edge.pre_access.take_if(|h| h.conn == m.conn) {
                let at: Vars = vec![("detail", m.packet.to_string())];
                out.extend(held.access.into_iter().map(|mut f| {
                    f.message = fill(&f.message, &at);
                    f
                }));
            }
            self.jobs_relinked(&m.topic.edge_id);
        }
        for (clause, reason) in unseen {
            self.unseen(&clause, reason);
        }
    }

    /// End of input: the edges that published first on a connection with no link-up
    /// following on it.
    pub(super) fn finish_sequences(&mut self, out: &mut Vec<Finding>) {
        let mut held: Vec<Finding> = self
            .edges
            .values_mut()
            .filter_map(|e| e.pre_access.take())
            .flat_map(|h| h.first)
            .collect();
        held.sort_by_key(|f| f.packet);
        out.extend(held);
    }

    /// Records ids produced by a reply (e.g. deviceIds assigned by CMD_TOPO_ADD).
    pub(super) fn collect_assignments(&mut self, m: &Message, msg_type: &str, class: Class) {
        let rules = Arc::clone(&self.rules);
        let edge = edge_state(&mut self.edges, &m.topic.edge_id);
        for rule in &rules.rules {
            if let Check::IdAssigned { assigns, .. } = &rule.def.check {
                for sel in assigns
                    .iter()
                    .filter(|s| path_sel_matches(s, msg_type, class))
                {
                    let set = slot(&mut edge.assigned, &rule.def.id);
                    set.extend(values_at(m, &sel.path));
                }
            }
        }
    }
}

/// The per-edge state, created on first sight without cloning the id each time.
/// The edges' states by edge id.
pub(super) type EdgeMap = HashMap<String, EdgeState, ahash::RandomState>;

pub(super) fn edge_state<'a>(edges: &'a mut EdgeMap, edge: &str) -> &'a mut EdgeState {
    if !edges.contains_key(edge) {
        edges.insert(edge.to_string(), EdgeState::default());
    }
    edges.get_mut(edge).expect("inserted above")
}

/// A per-rule slot of an edge's state, created on first use.
pub(super) fn slot<'a, T: Default>(map: &'a mut HashMap<String, T>, id: &str) -> &'a mut T {
    if !map.contains_key(id) {
        map.insert(id.to_string(), T::default());
    }
    map.get_mut(id).expect("inserted above")
}

pub(super) fn path_sel_matches(sel: &PathSel, msg_type: &str, class: Class) -> bool {
    sel.msg_type == msg_type && sel.class.as_deref().map_or(true, |c| c == class.as_str())
}

/// A check that needs what an edge did before the input began: its clause, and the
/// reason the clause table gives.
pub(super) fn before_input(
    rule: &Rule,
    clause: &str,
    edge: &str,
    what: &str,
    unchecked: &str,
) -> (String, String) {
    (
        rule.def
            .clause
            .clone()
            .unwrap_or_else(|| clause.to_string()),
        format!(
            "edge {edge}: {what} before the input began are not known (no EVENT_LINKUP \
             seen), so {unchecked} was not checked"
        ),
    )
}
