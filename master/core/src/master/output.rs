//! What the core sends ([`Outgoing`], [`Transmit`]) and the helpers that queue it: to an agent, to a
//! framework (held while it is disconnected), to a client, and the kill and error messages.

use agent_nostd_core::frame::{encode_sealed, Binding, Direction};
use agent_nostd_core::topic::{self, AgentTopic, QoS};
use agent_nostd_core::wire::{
    KillTask, MasterEnvelope, MasterMsg, WireMessage, MAX_DOWN_FRAME_LEN,
};
use bramble_proto::{self as proto, ErrorCode, Event, OfferId};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;

/// What the master sends: to an agent or to a framework.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A message on the agent wire, in its envelope with the master's epoch (boxed: a RunTask is
    /// over 5 KiB).
    Agent(Box<MasterEnvelope>),
    /// An event on the framework protocol, with the master's epoch when it was queued (a
    /// framework ignores an event of an older epoch than one it has seen).
    Framework {
        /// The epoch of the master that queued it.
        epoch: u64,
        /// The event.
        event: Event,
    },
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The topic.
    pub topic: String,
    /// The MQTT QoS.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
    /// The message.
    pub message: Outgoing,
    /// How an agent message is sealed as a frame (its agent's key and boot, its number); `None`
    /// for the hello and a hint, which are not frames, and for framework events.
    pub seal: Option<Seal>,
}

impl Transmit {
    /// The encoded payload (version byte + postcard, sealed as a frame for its agent; an event's
    /// with the epoch it was queued under).
    pub fn payload(&self) -> Vec<u8> {
        match &self.message {
            Outgoing::Agent(msg) => {
                let mut buf = vec![0u8; MAX_DOWN_FRAME_LEN];
                // Cannot fail: the buffer holds the largest envelope as a frame.
                let len = match (&self.seal, topic::parse(&self.topic)) {
                    (Some(seal), Some(topic::Topic::Agent { id, .. })) => {
                        let binding = Binding {
                            direction: Direction::Down,
                            agent_id: id,
                            boot: seal.boot,
                        };
                        encode_sealed(msg.as_ref(), &seal.key, &binding, seal.seq, &mut buf)
                            .unwrap_or(0)
                    }
                    _ => msg.encode(&mut buf).unwrap_or(0),
                };
                buf.truncate(len);
                buf
            }
            Outgoing::Framework { epoch, event } => {
                let encoded = event.encode_from(*epoch);
                match (&self.seal, proto::parse_topic(&self.topic)) {
                    (Some(seal), Some((_, client))) => proto::frame::seal(
                        encoded,
                        &seal.key,
                        Direction::FrameworkDown,
                        client,
                        seal.boot,
                        seal.seq,
                    ),
                    _ => encoded,
                }
            }
        }
    }
}

impl MasterCore {
    pub(super) fn send_kill(
        &mut self,
        agent: AgentIdx,
        fi: FrameworkIdx,
        tid: &str,
        grace_ms: u32,
    ) {
        let (Some(a), Some(f)) = (self.agents.get(agent), self.frameworks.get(fi)) else {
            return;
        };
        let (Ok(framework_id), Ok(task_id)) = (
            agent_nostd_core::ids::id(&f.id),
            agent_nostd_core::ids::id(tid),
        ) else {
            return;
        };
        let agent_id = a.id.clone();
        self.send_agent(
            &agent_id,
            MasterMsg::KillTask(KillTask {
                framework_id,
                task_id,
                grace_ms,
            }),
        );
    }

    pub(super) fn send_agent(&mut self, agent_id: &str, msg: MasterMsg) {
        self.agent_id_changed(agent_id);
        if let (Some(ev), MasterMsg::RunTask(r)) = (self.events.as_mut(), &msg) {
            ev.task(&r.framework_id, &r.task_id);
        }
        let Some(seal) = self.auth.next_seal(agent_id) else {
            // No session: nothing this master seals would be taken; the agent hears a hint when
            // it next speaks.
            self.stats.unknown_agent_messages += 1;
            return;
        };
        self.outbox.push_back(Transmit {
            topic: topic::agent(agent_id, AgentTopic::Cmd).as_str().to_owned(),
            qos: QoS::AtLeastOnce,
            retain: false,
            message: Outgoing::Agent(Box::new(msg.from_epoch(self.epoch))),
            seal: Some(seal),
        });
    }

    /// Tells agent `agent_id`, which this master has no session with, to register: an unframed
    /// hello on its command topic (nothing else can be made for a boot the master has not heard).
    pub(super) fn send_hint(&mut self, agent_id: &str) {
        self.stats.hints_sent += 1;
        self.outbox.push_back(Transmit {
            topic: topic::agent(agent_id, AgentTopic::Cmd).as_str().to_owned(),
            qos: QoS::AtLeastOnce,
            retain: false,
            message: Outgoing::Agent(Box::new(MasterMsg::Hello.from_epoch(self.epoch))),
            seal: None,
        });
    }

    /// Sends an event to a framework, or holds it while the framework is not connected.
    pub(super) fn send_framework(&mut self, fi: FrameworkIdx, event: Event) {
        let max = self.config.max_held_events;
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        if let Some(ev) = self.events.as_mut() {
            match &event {
                Event::Update(u) => {
                    ev.task(&f.id, &u.task_id);
                    if let Some(a) = &u.agent_id {
                        ev.agent(a);
                    }
                    ev.update(&f.id, u);
                }
                Event::Rescind { offer_id } => ev.offer(*offer_id),
                _ => {}
            }
            ev.framework(&f.id);
        }
        if let (FrameworkState::Active, Some(client)) = (f.state, &f.client) {
            let topic = proto::event_topic(client);
            self.outbox.push_back(Transmit {
                topic,
                qos: QoS::AtLeastOnce,
                retain: false,
                message: Outgoing::Framework {
                    epoch: self.epoch,
                    event,
                },
                seal: None,
            });
        } else {
            if matches!(event, Event::Offers(_) | Event::Rescind { .. }) {
                return; // a disconnected framework holds no offers
            }
            if matches!(&event, Event::Update(u) if u.update_id.is_some()) {
                return; // kept with its task until acknowledged, and resent on re-registration
            }
            if f.held.len() >= max {
                f.held.pop_front();
                self.stats.held_events_dropped += 1;
            }
            f.held.push_back(event);
        }
    }

    pub(super) fn send_client(&mut self, client: &str, event: Event) {
        self.outbox.push_back(Transmit {
            topic: proto::event_topic(client),
            qos: QoS::AtLeastOnce,
            retain: false,
            message: Outgoing::Framework {
                epoch: self.epoch,
                event,
            },
            seal: None,
        });
    }

    pub(super) fn call_error(
        &mut self,
        fi: FrameworkIdx,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        self.send_framework(
            fi,
            Event::Error {
                code,
                offer_id,
                message: message.to_owned(),
            },
        );
    }
}
