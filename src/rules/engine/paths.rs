//! Values at paths such as `param.data[].deviceId`, read leniently.

use super::*;

/// Values at a path like `param.data[].deviceId`, as strings.
pub(super) fn values_at(m: &Message, path: &str) -> Vec<String> {
    values_at_json(m, path)
        .into_iter()
        .filter_map(|v| match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => v.is_number().then(|| v.to_string()),
        })
        .collect()
}

pub(super) fn values_at_json<'m>(m: &'m Message, path: &str) -> Vec<Val<'m>> {
    let Some(env) = m.envelope() else {
        return vec![];
    };
    let mut segs = path.split('.');
    let Some(first) = segs.next() else {
        return vec![];
    };
    let step = |v: Val<'m>, each: bool, out: &mut Vec<Val<'m>>| {
        if each {
            out.extend(v.as_array().into_iter().flatten());
        } else {
            out.push(v);
        }
    };
    // The first segment is a member of the envelope itself.
    let (name, each) = first
        .strip_suffix("[]")
        .map_or((first, false), |n| (n, true));
    let mut cur = vec![];
    if let Some(v) = env.get(name) {
        step(v, each, &mut cur);
    }
    for seg in segs {
        let (name, each) = seg.strip_suffix("[]").map_or((seg, false), |n| (n, true));
        let mut next = vec![];
        for v in &cur {
            if let Some(x) = v.get(name) {
                step(x, each, &mut next);
            }
        }
        cur = next;
    }
    cur
}

pub(super) fn param_u64(param: Option<Val<'_>>, name: &str) -> Option<u64> {
    param
        .and_then(|p| p.get(name))
        .and_then(|v| protocol::as_u64_lenient(&v))
}

pub(super) fn number_lenient(v: Val<'_>) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
}
