//! The nats-server configuration the bus commands expect (`edgetap bus
//! nats-config`): JetStream on, and the subject mapping that puts every record of
//! one edge in one partition.
//!
//! The mapping is the server's, not the watchers': `edgetap.msg.<edge>.<direction>`
//! becomes `edgetap.p.{{partition(N,1)}}.<edge>.<direction>`, the partition a hash
//! of the first wildcard token (the escaped edge id) modulo N. So watchers need not
//! know N, and every watcher puts an edge in the same partition. `partition()` in
//! `mappings` exists since nats-server 2.8.0; checked with Debian 12's 2.9.10 (the
//! tests start it from this text). Per-stream subject transforms would do the same
//! inside the stream definition, but only from 2.10.

/// Partitions a configuration may have: each is a durable consumer and a judge's
/// unit of work.
pub const MAX_PARTITIONS: u32 = 1024;

/// What `edgetap bus nats-config` writes.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub partitions: u32,
    /// JetStream's store directory; `None` leaves it to the server's `-sd DIR`
    /// (nats-server refuses both).
    pub store_dir: Option<String>,
    /// Client port (the server's `-p` overrides it).
    pub port: u16,
    /// Largest message the server takes, in bytes (a record is the MQTT payload
    /// plus about 200 bytes of headers).
    pub max_payload: u32,
}

impl ServerConfig {
    pub fn new(partitions: u32) -> Result<ServerConfig, String> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(format!(
                "--partitions takes 1 to {MAX_PARTITIONS}, not {partitions}"
            ));
        }
        Ok(ServerConfig {
            partitions,
            store_dir: Some("/var/lib/nats".into()),
            port: 4222,
            max_payload: 8 << 20,
        })
    }

    /// The configuration file's text.
    pub fn text(&self) -> String {
        let ServerConfig {
            partitions: n,
            store_dir,
            port,
            max_payload,
        } = self;
        let jetstream = match store_dir {
            Some(d) => format!(
                "jetstream {{\n  store_dir: \"{}\"\n}}\n",
                d.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            None => {
                "# JetStream's store directory: the server's -js -sd DIR.\njetstream {}\n".into()
            }
        };
        format!(
            "# nats-server configuration for the edgetap bus (nats-server 2.8 or later;\n\
             # written for Debian 12's 2.9.10): `nats-server -c THIS_FILE`.\n\
             # Watchers publish edgetap.msg.<edge>.<direction>; the mapping stores each\n\
             # record as edgetap.p.<partition>.<edge>.<direction>, every record of one\n\
             # edge in one of {n} partitions. Judges take partitions 0..{last}:\n\
             #   edgetap judge --bus nats://HOST:{port} --partitions 0..{last}\n\
             # The partition count is part of the data: change it only on an empty bus.\n\
             port: {port}\n\
             max_payload: {max_payload}\n\
             {jetstream}\
             mappings = {{\n  \"edgetap.msg.*.*\": \"edgetap.p.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}\"\n}}\n",
            last = n - 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_partitions_by_the_edge_token() {
        let t = ServerConfig::new(64).unwrap().text();
        assert!(
            t.contains(
                "\"edgetap.msg.*.*\": \"edgetap.p.{{partition(64,1)}}.{{wildcard(1)}}.{{wildcard(2)}}\""
            ),
            "{t}"
        );
        assert!(t.contains("store_dir: \"/var/lib/nats\""), "{t}");
        let mut c = ServerConfig::new(2).unwrap();
        c.store_dir = None;
        assert!(!c.text().contains("store_dir"), "{}", c.text());
        assert!(ServerConfig::new(0).is_err());
        assert!(ServerConfig::new(MAX_PARTITIONS + 1).is_err());
    }
}
