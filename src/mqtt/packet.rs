//! A version-independent view of the MQTT control packets, holding what the later
//! stages need (the codec's own types differ between 3.1.1 and 5).

use bytes::Bytes;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, level 4.
    V311,
    /// MQTT 5.0, level 5.
    V5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V31 => "3.1",
            Version::V311 => "3.1.1",
            Version::V5 => "5.0",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub keep_alive: u16,
    pub username: Option<String>,
    /// The password as sent. Reports redact it unless asked not to.
    pub password: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
    /// MQTT 5 Topic Alias (§3.3.2.3.4): a PUBLISH may carry it with an empty topic,
    /// meaning the topic last sent with this alias on the connection, that direction.
    pub topic_alias: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Connect(Connect),
    /// CONNACK with its return (3.1.1) or reason (5) code.
    ConnAck {
        code: u8,
    },
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    SubAck(u16),
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

impl Packet {
    /// The MQTT control packet type number (1 CONNECT … 15 AUTH).
    pub fn type_code(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck { .. } => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe { .. } => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe { .. } => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect => 14,
            Packet::Auth => 15,
        }
    }

    pub fn name(&self) -> &'static str {
        type_name(self.type_code())
    }

    pub(crate) fn from_v4(p: v4::Packet, _kind: u8) -> Packet {
        match p {
            v4::Packet::Connect(c) => Packet::Connect(Connect {
                version: Version::V311,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
            }),
            v4::Packet::ConnAck(a) => Packet::ConnAck { code: a.code as u8 },
            v4::Packet::Publish(p) => Packet::Publish(Publish {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos as u8,
                pkid: p.pkid,
                retain: p.retain,
                dup: p.dup,
                topic_alias: None,
            }),
            v4::Packet::PubAck(a) => Packet::PubAck(a.pkid),
            v4::Packet::PubRec(a) => Packet::PubRec(a.pkid),
            v4::Packet::PubRel(a) => Packet::PubRel(a.pkid),
            v4::Packet::PubComp(a) => Packet::PubComp(a.pkid),
            v4::Packet::Subscribe(s) => Packet::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| f.path).collect(),
            },
            v4::Packet::SubAck(a) => Packet::SubAck(a.pkid),
            v4::Packet::Unsubscribe(u) => Packet::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            v4::Packet::UnsubAck(a) => Packet::UnsubAck(a.pkid),
            v4::Packet::PingReq => Packet::PingReq,
            v4::Packet::PingResp => Packet::PingResp,
            v4::Packet::Disconnect => Packet::Disconnect,
        }
    }

    pub(crate) fn from_v5(p: v5::Packet) -> Packet {
        match p {
            v5::Packet::Connect(c, _will, login) => Packet::Connect(Connect {
                version: Version::V5,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| l.password),
            }),
            v5::Packet::ConnAck(a) => Packet::ConnAck { code: a.code as u8 },
            v5::Packet::Publish(p) => Packet::Publish(Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                qos: p.qos as u8,
                pkid: p.pkid,
                retain: p.retain,
                dup: p.dup,
                topic_alias: p.properties.and_then(|x| x.topic_alias),
            }),
            v5::Packet::PubAck(a) => Packet::PubAck(a.pkid),
            v5::Packet::PubRec(a) => Packet::PubRec(a.pkid),
            v5::Packet::PubRel(a) => Packet::PubRel(a.pkid),
            v5::Packet::PubComp(a) => Packet::PubComp(a.pkid),
            v5::Packet::Subscribe(s) => Packet::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| f.path).collect(),
            },
            v5::Packet::SubAck(a) => Packet::SubAck(a.pkid),
            v5::Packet::Unsubscribe(u) => Packet::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            },
            v5::Packet::UnsubAck(a) => Packet::UnsubAck(a.pkid),
            v5::Packet::PingReq(_) => Packet::PingReq,
            v5::Packet::PingResp(_) => Packet::PingResp,
            v5::Packet::Disconnect(_) => Packet::Disconnect,
        }
    }
}

pub fn type_name(code: u8) -> &'static str {
    [
        "RESERVED",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ][(code & 0x0f) as usize]
}
