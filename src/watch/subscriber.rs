//! The watcher's MQTT client: an ordinary subscriber (MQTT 3.1.1 or 5, a login as
//! `USER@HOST:PORT` with the password from [`crate::sim::PASSWORD_ENV`], TLS with
//! `--tls-ca`), whose deliveries leave as [`Event`]s through a bounded channel.
//!
//! The channel is bounded on purpose: when whatever takes the deliveries (the judge,
//! later a bus publisher) falls behind, the client stops reading, TCP pushes back
//! and the broker queues (or, past its own limits, drops: what a subscriber cannot
//! see). Memory stays bounded here whatever the fleet sends.
//!
//! A connection lost after it was up is retried every [`RETRY`] and the filters are
//! subscribed again on each CONNACK (a clean session forgets them); the outage is an
//! [`Event::Down`] then [`Event::Up`], which the report states: what was published
//! in between was not seen.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Delivery, Event, WatchSettings};
use crate::sim::{broker_login, host_port, now_us, Protocol, SimError};

/// Deliveries in flight between the client and the judge.
pub const QUEUE: usize = 8192;
/// How long a lost connection waits before the next try.
pub const RETRY: Duration = Duration::from_secs(1);

/// A connected subscriber: its events, and a handle to stop it.
pub struct Subscriber {
    pub events: mpsc::Receiver<Event>,
    /// Another way into the same channel (the ticker's).
    sender: mpsc::Sender<Event>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `settings.filters` (QoS 1) and returns once the broker
    /// acknowledged the connection and every subscription. The first connection
    /// fails fast with its cause (refused, login refused, closed, no CONNACK).
    pub async fn start(settings: &WatchSettings) -> Result<Subscriber, SimError> {
        let (login, addr) = broker_login(&settings.broker)?;
        let (host, port) = host_port(addr)?;
        let ca = match &settings.tls_ca {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| SimError::Usage(format!("--tls-ca {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let (tx, events) = mpsc::channel(QUEUE);
        let tx2 = tx.clone();
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let filters = settings.filters.clone();
        let task = match settings.protocol {
            Protocol::V4 => {
                let mut o = rumqttc::MqttOptions::new(&settings.client_id, host, port);
                if let Some((user, password)) = &login {
                    o.set_credentials(user, password);
                }
                if let Some(ca) = ca {
                    o.set_transport(rumqttc::Transport::tls(ca, None, None));
                }
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(settings.max_packet, settings.max_packet);
                let (c, el) = rumqttc::AsyncClient::new(o, 64);
                tokio::spawn(v4_loop(c, el, filters, tx, ready_tx, stop_rx))
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(&settings.client_id, host, port);
                if let Some((user, password)) = &login {
                    o.set_credentials(user, password);
                }
                if let Some(ca) = ca {
                    o.set_transport(rumqttc::Transport::tls(ca, None, None));
                }
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(Some(settings.max_packet as u32));
                let (c, el) = rumqttc::v5::AsyncClient::new(o, 64);
                tokio::spawn(v5_loop(c, el, filters, tx, ready_tx, stop_rx))
            }
        };
        let sub = Subscriber {
            events,
            sender: tx2,
            stop,
            task,
        };
        let waited = tokio::time::timeout(settings.connect_timeout, ready_rx.recv()).await;
        let cause = match waited {
            Ok(Some(Ok(()))) => return Ok(sub),
            Ok(Some(Err(cause))) => Some(cause),
            Ok(None) => Some("the client stopped".to_string()),
            Err(_) => None,
        };
        sub.stop().await;
        Err(match cause {
            Some(cause) => SimError::Connect {
                client: settings.client_id.clone(),
                broker: settings.broker.clone(),
                cause,
            },
            None => SimError::ConnectTimeout {
                client: settings.client_id.clone(),
                broker: settings.broker.clone(),
                waited_ms: settings.connect_timeout.as_millis() as u64,
            },
        })
    }

    /// Disconnects; the events already queued stay readable, then the channel ends.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Splits off the events and a sender into their channel (for ticks), keeping a
    /// handle that stops the client. The channel ends once the client stopped and
    /// every sender is dropped.
    pub fn split(self) -> (mpsc::Receiver<Event>, mpsc::Sender<Event>, StopHandle) {
        (
            self.events,
            self.sender,
            StopHandle {
                stop: self.stop,
                task: self.task,
            },
        )
    }
}

/// Stops a subscriber whose events are read elsewhere.
pub struct StopHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StopHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What the event loops share: the first CONNACK and SUBACKs (or the first failure)
/// are told once through `ready`.
struct Ready {
    tx: Option<mpsc::UnboundedSender<Result<(), String>>>,
    acks_left: usize,
    up: bool,
    /// Set after the first connection was up: later failures are outages.
    was_up_once: bool,
}

impl Ready {
    fn new(tx: mpsc::UnboundedSender<Result<(), String>>, filters: usize) -> Ready {
        Ready {
            tx: Some(tx),
            acks_left: filters + 1,
            up: false,
            was_up_once: false,
        }
    }
    fn ack(&mut self) {
        self.acks_left = self.acks_left.saturating_sub(1);
        if self.acks_left == 0 {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Ok(()));
            }
        }
    }
    /// A failure: the first connection's is the start's error; a later one an
    /// outage to report (returns whether it is).
    fn failed(&mut self, cause: String) -> bool {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(cause));
            return false;
        }
        std::mem::replace(&mut self.up, false)
    }
    /// A CONNACK: up again (an outage ended, after the first), one of the acks the
    /// start waits for.
    async fn connected(&mut self, tx: &mpsc::Sender<Event>) {
        if self.was_up_once {
            let _ = tx.send(Event::Up { at_us: now_us() }).await;
        }
        self.up = true;
        self.was_up_once = true;
        self.ack();
    }
    /// The connection failed with `cause`: reported as an outage (after the first
    /// connection) and retried; returns true when the watcher gives up (the first
    /// connection never came up).
    async fn lost(&mut self, cause: String, tx: &mpsc::Sender<Event>) -> bool {
        if self.failed(cause.clone()) {
            let _ = tx
                .send(Event::Down {
                    at_us: now_us(),
                    cause,
                })
                .await;
        }
        if self.tx.is_none() && !self.was_up_once {
            return true;
        }
        tokio::time::sleep(RETRY).await;
        false
    }
}

async fn v4_loop(
    client: rumqttc::AsyncClient,
    mut el: rumqttc::EventLoop,
    filters: Vec<String>,
    tx: mpsc::Sender<Event>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    use rumqttc::{Event as E, Packet};
    let mut ready = Ready::new(ready, filters.len());
    let mut n = 0u64;
    loop {
        let polled = tokio::select! {
            p = el.poll() => p,
            _ = stop.changed() => break,
        };
        match polled {
            Ok(E::Incoming(Packet::Publish(p))) => {
                n += 1;
                let d = Delivery {
                    n,
                    time_us: now_us(),
                    topic: p.topic,
                    payload: p.payload,
                    retain: p.retain,
                    qos: p.qos as u8,
                };
                if tx.send(Event::Delivery(d)).await.is_err() {
                    break;
                }
            }
            Ok(E::Incoming(Packet::ConnAck(_))) => {
                ready.connected(&tx).await;
                for f in &filters {
                    let _ = client.try_subscribe(f.as_str(), rumqttc::QoS::AtLeastOnce);
                }
            }
            Ok(E::Incoming(Packet::SubAck(_))) => ready.ack(),
            Ok(_) => {}
            Err(e) => {
                let cause = crate::sim::v4_cause(&e, ready.up);
                if ready.lost(cause, &tx).await {
                    break;
                }
            }
        }
    }
    // A DISCONNECT, so the broker ends the session at once (deliveries that come
    // meanwhile are after the stop: not judged).
    let _ = client.try_disconnect();
    let bye = async {
        while let Ok(e) = el.poll().await {
            if matches!(e, E::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}

async fn v5_loop(
    client: rumqttc::v5::AsyncClient,
    mut el: rumqttc::v5::EventLoop,
    filters: Vec<String>,
    tx: mpsc::Sender<Event>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::Event as E;
    let mut ready = Ready::new(ready, filters.len());
    let mut n = 0u64;
    loop {
        let polled = tokio::select! {
            p = el.poll() => p,
            _ = stop.changed() => break,
        };
        match polled {
            Ok(E::Incoming(Packet::Publish(p))) => {
                n += 1;
                let d = Delivery {
                    n,
                    time_us: now_us(),
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    retain: p.retain,
                    qos: p.qos as u8,
                };
                if tx.send(Event::Delivery(d)).await.is_err() {
                    break;
                }
            }
            Ok(E::Incoming(Packet::ConnAck(_))) => {
                ready.connected(&tx).await;
                for f in &filters {
                    let _ =
                        client.try_subscribe(f.as_str(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
                }
            }
            Ok(E::Incoming(Packet::SubAck(_))) => ready.ack(),
            Ok(_) => {}
            Err(e) => {
                let cause = crate::sim::v5_cause(&e, ready.up);
                if ready.lost(cause, &tx).await {
                    break;
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let bye = async {
        while let Ok(e) = el.poll().await {
            if matches!(e, E::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}
