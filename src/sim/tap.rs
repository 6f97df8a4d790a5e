//! The passive tap: one more MQTT client, subscribed to the protocol topics, whose
//! deliveries go to the shared [`Analyzer`] as one broker → client stream, so the
//! sims are judged by exactly the rules `edgetap analyze` runs.
//!
//! Every delivery goes to the analyzer as the PUBLISH its client decoded, after a
//! CONNECT of the tap's own: the analyzer judges the protocol messages, and the tap
//! is not the device under test. The stream can be written as a pcap ([`write_pcap`],
//! MQTT 3.1.1 whatever the tap spoke to the broker) for `edgetap analyze`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{now_us, Link, Protocol, SimError};
use crate::finding::{ConnId, Side};
use crate::pipeline::{Analyzer, At, Input, Settings, Summary};
use crate::report::Collector;
use crate::rules::RuleSet;

const TAP_CONN: ConnId = 1;

/// What the tap saw and judged.
pub struct TapResult {
    /// The tap's counters and the clauses exercised.
    pub summary: Summary,
    pub findings: Vec<crate::Finding>,
    /// The message sequence per edge, for the HTML record's charts.
    pub timeline: Option<crate::report::timeline::Timeline>,
    /// (time µs, bytes, client → server?) in stream order: the CONNECT then each PUBLISH.
    pub frames: Vec<(i64, Vec<u8>, bool)>,
}

/// A delivery as the broker sent it, decoded already by the tap's client: the
/// pipeline takes the packet itself (its bytes are written only for `write_pcap`).
fn delivery(m: super::Incoming) -> Input<'static> {
    Input::Packet {
        side: Side::Server,
        packet: crate::mqtt::Packet::Publish(crate::mqtt::Publish {
            topic: m.topic,
            payload: m.payload,
            qos: 0,
            pkid: 0,
            retain: false,
            dup: false,
            topic_alias: None,
        }),
    }
}

pub struct Tap {
    stop: watch::Sender<bool>,
    seen: Arc<AtomicU64>,
    task: JoinHandle<TapResult>,
}

impl Tap {
    /// Subscribes to `filter` and starts judging; returns once the subscription holds.
    pub async fn start(
        broker: &str,
        id: &str,
        proto: Protocol,
        filter: &str,
        rules: Arc<RuleSet>,
        timeout: Duration,
    ) -> Result<Tap, SimError> {
        let (_link, mut rx) =
            Link::connect(broker, id, proto, &[filter.to_string()], timeout).await?;
        let (stop, mut stop_rx) = watch::channel(false);
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let mut analyzer = Analyzer::new(rules, Settings::default());
            // Charted always: a plan's run is short, and the timeline is bounded.
            let mut sink = Collector::charting(true);
            let mut frames = vec![];
            let t = now_us();
            let c = crate::mqtt::encode::connect(&id);
            let open = Input::Open {
                client: None,
                server: None,
                midstream: false,
            };
            analyzer.push(At::new(TAP_CONN, t, 1), open, &mut sink);
            analyzer.push(
                At::new(TAP_CONN, t, 1),
                Input::Data {
                    side: Side::Client,
                    bytes: &c,
                },
                &mut sink,
            );
            frames.push((t, c, true));
            let mut n = 1;
            loop {
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = stop_rx.changed() => None,
                };
                let Some(m) = m else { break };
                n += 1;
                let t = now_us();
                frames.push((t, crate::mqtt::encode::publish(&m.topic, &m.payload), false));
                analyzer.push(At::new(TAP_CONN, t, n), delivery(m), &mut sink);
                seen2.fetch_add(1, Ordering::Relaxed);
            }
            // Deliveries already queued belong to the run.
            while let Ok(m) = rx.try_recv() {
                n += 1;
                let t = now_us();
                frames.push((t, crate::mqtt::encode::publish(&m.topic, &m.payload), false));
                analyzer.push(At::new(TAP_CONN, t, n), delivery(m), &mut sink);
            }
            _link.disconnect().await;
            let summary = analyzer.finish(&mut sink);
            TapResult {
                summary,
                findings: sink.findings,
                timeline: sink.timeline,
                frames,
            }
        });
        Ok(Tap { stop, seen, task })
    }

    /// Deliveries received so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Stops, judges the end of input (unanswered requests, missing job results).
    pub async fn finish(self) -> Result<TapResult, SimError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))
    }
}

/// Writes the tap's stream as an Ethernet/IPv4/TCP pcap (client 10.0.0.2:50000,
/// broker 10.0.0.1:1883) with a handshake, so `edgetap analyze` reads it like a
/// capture taken at the tap's host.
pub fn write_pcap(path: &Path, frames: &[(i64, Vec<u8>, bool)]) -> Result<(), SimError> {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let io = |e: pcap_file::PcapError| SimError::Io(std::io::Error::other(e.to_string()));
    let file = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(std::io::BufWriter::new(file)).map_err(io)?;
    let (cip, sip, cport, sport) = ([10, 0, 0, 2], [10, 0, 0, 1], 50000u16, 1883u16);
    let (mut cseq, mut sseq) = (1000u32, 5000u32);
    let t0 = frames.first().map_or(0, |f| f.0);
    let mut put = |t: i64,
                   from_client: bool,
                   flags: &str,
                   seq: u32,
                   ack: u32,
                   payload: &[u8]|
     -> Result<(), SimError> {
        let b = if from_client {
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
                .ipv4(cip, sip, 64)
                .tcp(cport, sport, seq, 65535)
        } else {
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(sip, cip, 64)
                .tcp(sport, cport, seq, 65535)
        };
        let b = match flags {
            "S" => b.syn(),
            "SA" => b.syn().ack(ack),
            _ => b.ack(ack).psh(),
        };
        let mut buf = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut buf, payload)
            .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?;
        let ts = Duration::from_micros(t.max(0) as u64);
        w.write_packet(&PcapPacket::new(ts, buf.len() as u32, &buf))
            .map_err(io)?;
        Ok(())
    };
    put(t0, true, "S", cseq - 1, 0, &[])?;
    put(t0, false, "SA", sseq - 1, cseq, &[])?;
    put(t0, true, "A", cseq, sseq, &[])?;
    for (t, bytes, from_client) in frames {
        for seg in bytes.chunks(1400) {
            if *from_client {
                put(*t, true, "A", cseq, sseq, seg)?;
                cseq = cseq.wrapping_add(seg.len() as u32);
            } else {
                put(*t, false, "A", sseq, cseq, seg)?;
                sseq = sseq.wrapping_add(seg.len() as u32);
            }
        }
    }
    Ok(())
}
