//! `edgetap broker`, `sim edge`, `sim platform` and `demo`: arguments to settings
//! here, the runs and their output in [`run`].

pub mod run;

use std::io::Write;
use std::sync::Arc;

use super::{load_rules, shown};
use crate::cli;

pub fn broker(a: cli::BrokerArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let mut s = edgetap::broker::BrokerSettings::on(a.listen);
    if let Some(v5) = a.listen_v5 {
        s.v5 = v5;
    }
    Ok(run::broker(s, stdout)?)
}

pub fn edge(a: cli::SimEdgeArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    use run::{ms, protocol};
    let mut s = edgetap::sim::edge::EdgeSettings::new(&a.broker, &a.edge_id);
    s.count = a.count;
    s.protocol = protocol(a.mqtt5);
    s.period = ms(a.period_ms);
    s.job_time = ms(a.job_ms);
    s.policy_second = ms(a.policy_ms);
    s.alarm_after = (a.alarm_ms > 0).then(|| ms(a.alarm_ms));
    s.topo = !a.no_topo;
    s.run_for = a.duration_ms.map(ms);
    for f in &a.faults {
        s.faults.push(edgetap::sim::edge::Fault::parse(f)?);
    }
    Ok(run::edge(s, stdout)?)
}

pub fn platform(a: cli::SimPlatformArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    use run::{ms, protocol};
    let rules = Arc::new(load_rules(&a.rules)?);
    let shown = shown(&a.shown, &rules)?;
    let edge = a.edge_id.clone().unwrap_or_default();
    let mut s = edgetap::sim::platform::PlatformSettings::new(&a.broker, &edge);
    s.protocol = protocol(a.mqtt5);
    s.wait = ms(a.wait_ms);
    s.edge_wait = ms(a.edge_wait_ms);
    // The plan needs a limit to fail an item; the rules' own stays
    // off unless the user set --job-timeout.
    s.job_timeout = std::time::Duration::from_secs_f64(a.rules.job_timeout.unwrap_or(60.0));
    s.package = package_source(&a);
    s.capture = a.capture;
    Ok(run::platform(
        s,
        rules,
        a.respond_only,
        a.format,
        &shown,
        stdout,
    )?)
}

pub fn demo(a: cli::DemoArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let s = edgetap::demo::DemoSettings {
        fault: edgetap::sim::edge::Fault::parse(&a.fault)?,
        protocol: run::protocol(a.mqtt5),
    };
    Ok(run::demo(s, a.format, stdout)?)
}

/// `--package` / `--package-url` of `sim platform`.
fn package_source(a: &cli::SimPlatformArgs) -> edgetap::sim::package::PackageSource {
    use edgetap::sim::package::PackageSource;
    if let Some(path) = &a.package {
        PackageSource::Serve {
            path: path.clone(),
            listen: a
                .http_listen
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            advertise: a.http_advertise.clone(),
            md5: a.package_md5.clone(),
        }
    } else if let Some(url) = &a.package_url {
        PackageSource::Url {
            url: url.clone(),
            md5: a.package_md5.clone().unwrap_or_default(),
            size: a.package_size,
        }
    } else {
        PackageSource::Placeholder
    }
}
