//! The embedded broker: rumqttd in this process, one MQTT 3.1.1 and one MQTT 5
//! listener, for `edgetap broker`, the demo and the tests.
//!
//! rumqttd binds its own sockets from its config and `Broker::start` blocks, so the
//! broker runs on a std thread and [`start`] returns once both listeners accept TCP
//! connections. rumqttd cannot take an already bound listener; tests that want a free
//! port ask [`free_port`] (bind port 0, read it, release it) and accept the small race.
//! The broker lives until the process ends: rumqttd has no shutdown.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker configuration: {0}")]
    Config(String),
    #[error("broker did not accept connections on {addr} within {waited_ms} ms")]
    NotListening { addr: SocketAddr, waited_ms: u64 },
    #[error("cannot listen on {addr}: {source} (is another broker or edgetap running there? choose another port with --listen / --listen-v5)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Where the two listeners go.
#[derive(Debug, Clone, Copy)]
pub struct BrokerSettings {
    /// MQTT 3.1.1 listener.
    pub v4: SocketAddr,
    /// MQTT 5 listener.
    pub v5: SocketAddr,
    /// Connections the router accepts (the benchmark runs 1000 edges and more).
    pub max_connections: usize,
}

impl BrokerSettings {
    /// v3.1.1 on `addr`, v5 on the next port.
    pub fn on(addr: SocketAddr) -> BrokerSettings {
        let mut v5 = addr;
        v5.set_port(addr.port().wrapping_add(1));
        BrokerSettings {
            v4: addr,
            v5,
            max_connections: 20_000,
        }
    }

    /// Both listeners on free loopback ports.
    pub fn loopback() -> Result<BrokerSettings, BrokerError> {
        let ip = std::net::Ipv4Addr::LOCALHOST;
        Ok(BrokerSettings {
            v4: SocketAddr::from((ip, free_port()?)),
            v5: SocketAddr::from((ip, free_port()?)),
            max_connections: 20_000,
        })
    }
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    pub v4: SocketAddr,
    pub v5: SocketAddr,
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16, BrokerError> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The rumqttd configuration, built as JSON and read by rumqttd's own serde types so
/// that a wrong key fails here, with its name, not inside rumqttd.
pub fn config(s: &BrokerSettings) -> Result<rumqttd::Config, BrokerError> {
    let conn = serde_json::json!({
        "connection_timeout_ms": 60000,
        "max_payload_size": 1 << 20,
        "max_inflight_count": 500,
        "dynamic_filters": true
    });
    let server = |name: &str, addr: SocketAddr| {
        serde_json::json!({
            "name": name,
            "listen": addr.to_string(),
            "next_connection_delay_ms": 0,
            "connections": conn.clone()
        })
    };
    let cfg = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": s.max_connections,
            "max_outgoing_packet_count": 500,
            "max_segment_size": 104857600,
            "max_segment_count": 10
        },
        "v4": {"1": server("v4-1", s.v4)},
        "v5": {"1": server("v5-1", s.v5)}
    });
    serde_json::from_value(cfg).map_err(|e| BrokerError::Config(e.to_string()))
}

/// Starts the broker on a std thread; returns when both listeners accept connections.
pub fn start(s: &BrokerSettings) -> Result<EmbeddedBroker, BrokerError> {
    let cfg = config(s)?;
    // rumqttd binds on its own thread and only logs a failure; whatever else holds
    // the port would then answer the readiness probe below. Bind each address once
    // here first, so a port in use is an error that names it.
    for addr in [s.v4, s.v5] {
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    }
    std::thread::Builder::new()
        .name("edgetap-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(cfg);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })?;
    wait_mqtt(s.v4, false, Duration::from_secs(5))?;
    wait_mqtt(s.v5, true, Duration::from_secs(5))?;
    Ok(EmbeddedBroker { v4: s.v4, v5: s.v5 })
}

/// MQTT 3.1.1 CONNECT, client id "edgetap-probe", clean session, keep-alive 60 s.
const PROBE_V4: &[u8] = &[
    0x10, 0x19, // CONNECT, remaining length 25
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // flags: clean session
    0x00, 0x3c, // keep-alive 60 s
    0x00, 0x0d, b'e', b'd', b'g', b'e', b't', b'a', b'p', b'-', b'p', b'r', b'o', b'b', b'e',
];

/// Connects, and when the listener answers an MQTT CONNECT, disconnects cleanly so the
/// broker logs no aborted connection. Returns whether a TCP connection was made.
fn probe(addr: SocketAddr, v5: bool) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut c = PROBE_V4.to_vec();
    if v5 {
        c[8] = 5; // protocol level 5
        c.insert(12, 0x00); // empty properties after the keep-alive
        c[1] += 1;
    }
    let mut ack = [0u8; 64];
    if s.write_all(&c).is_ok() && s.read(&mut ack).is_ok_and(|n| n > 0 && ack[0] == 0x20) {
        let _ = s.write_all(&[0xe0, 0x00]); // DISCONNECT
                                            // The broker closes first after a DISCONNECT.
        while s.read(&mut ack).is_ok_and(|n| n > 0) {}
    }
    true
}

/// Polls `addr` until a TCP connection succeeds.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), BrokerError> {
    wait_mqtt(addr, false, limit)
}

fn wait_mqtt(addr: SocketAddr, v5: bool, limit: Duration) -> Result<(), BrokerError> {
    let t0 = Instant::now();
    while !probe(addr, v5) {
        if t0.elapsed() > limit {
            return Err(BrokerError::NotListening {
                addr,
                waited_ms: limit.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_accepted_by_rumqttd_types() {
        let s = BrokerSettings::on("127.0.0.1:1883".parse().unwrap());
        let c = config(&s).unwrap();
        assert_eq!(c.v4.unwrap()["1"].listen, s.v4);
        assert_eq!(c.v5.unwrap()["1"].listen.port(), 1884);
    }
}
