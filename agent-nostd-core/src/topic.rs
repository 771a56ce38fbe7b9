//! MQTT topic names. Every Bramble topic sits under [`PREFIX`] (`bramble/v1/`).
//!
//! Per agent `{id}`:
//!
//! | topic | direction | QoS | retain | payload |
//! |---|---|---|---|---|
//! | `bramble/v1/agent/{id}/register` | agent → master | 1 | no | `AgentMsg::Register` / `ReRegister` |
//! | `bramble/v1/agent/{id}/report` | agent → master | 0 | no | `AgentMsg::Report` |
//! | `bramble/v1/agent/{id}/status` | agent → master | 1 | no | `AgentMsg::Status` |
//! | `bramble/v1/agent/{id}/pong` | agent → master | 0 | no | `AgentMsg::Pong` |
//! | `bramble/v1/agent/{id}/will` | agent → master | 1 | no | `AgentMsg::Gone` (MQTT last will) |
//! | `bramble/v1/agent/{id}/cmd` | master → agent | 1 | no | any `MasterMsg` but `Hello` |
//! | `bramble/v1/master/hello` | master → all | 1 | yes | `MasterMsg::Hello` |
//!
//! `PROTOCOL.md` at the repository root is the full spec.

use heapless::String;

/// The prefix of every Bramble topic.
pub const PREFIX: &str = "bramble/v1/";
/// The master's retained announcement.
pub const MASTER_HELLO: &str = "bramble/v1/master/hello";
/// The longest topic this module builds.
pub const MAX_TOPIC_LEN: usize = 64;

/// A topic name built without allocation.
pub type TopicBuf = String<MAX_TOPIC_LEN>;

/// The per-agent topics, each the last level of `bramble/v1/agent/{id}/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentTopic {
    /// `register`: registrations and re-registrations.
    Register,
    /// `report`: resource reports.
    Report,
    /// `status`: task status updates.
    Status,
    /// `pong`: answers to pings.
    Pong,
    /// `will`: the agent's last will (and clean-shutdown notice).
    Will,
    /// `cmd`: everything the master sends one agent.
    Cmd,
}

impl AgentTopic {
    /// Every per-agent topic.
    pub const ALL: [AgentTopic; 6] = [
        AgentTopic::Register,
        AgentTopic::Report,
        AgentTopic::Status,
        AgentTopic::Pong,
        AgentTopic::Will,
        AgentTopic::Cmd,
    ];

    /// The topic's last level.
    pub const fn suffix(self) -> &'static str {
        match self {
            AgentTopic::Register => "register",
            AgentTopic::Report => "report",
            AgentTopic::Status => "status",
            AgentTopic::Pong => "pong",
            AgentTopic::Will => "will",
            AgentTopic::Cmd => "cmd",
        }
    }

    /// The MQTT QoS its messages are published with: 0 for the periodic and the answered, 1 for the rest.
    pub const fn qos(self) -> QoS {
        match self {
            AgentTopic::Report | AgentTopic::Pong => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    /// The subscription filter matching this topic for every agent, e.g. `bramble/v1/agent/+/status`.
    pub fn filter(self) -> TopicBuf {
        build("+", self)
    }
}

/// The MQTT quality of service of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QoS {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
}

/// `bramble/v1/agent/{agent_id}/{kind}`. `agent_id` must be a valid id (see [`crate::ids`]).
pub fn agent(agent_id: &str, kind: AgentTopic) -> TopicBuf {
    build(agent_id, kind)
}

fn build(level: &str, kind: AgentTopic) -> TopicBuf {
    let mut t = TopicBuf::new();
    // Cannot overflow: 17 + 32 + 1 + 8 bytes at most.
    for part in [PREFIX, "agent/", level, "/", kind.suffix()] {
        let _ = t.push_str(part);
    }
    t
}

/// A topic recognised by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `bramble/v1/agent/{id}/{kind}`.
    Agent {
        /// The agent's id (already checked to be a valid id).
        id: &'a str,
        /// Which per-agent topic.
        kind: AgentTopic,
    },
    /// `bramble/v1/master/hello`.
    MasterHello,
}

/// Recognises an agent↔master topic, or returns `None` for anything else.
pub fn parse(topic: &str) -> Option<Topic<'_>> {
    if topic == MASTER_HELLO {
        return Some(Topic::MasterHello);
    }
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix("agent/")?;
    let (id, suffix) = rest.split_once('/')?;
    crate::ids::validate_id(id).ok()?;
    let kind = AgentTopic::ALL.into_iter().find(|k| k.suffix() == suffix)?;
    Some(Topic::Agent { id, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_topics_are_built_under_the_v1_prefix() {
        assert_eq!(
            agent("pi4", AgentTopic::Status).as_str(),
            "bramble/v1/agent/pi4/status"
        );
        assert_eq!(
            AgentTopic::Register.filter().as_str(),
            "bramble/v1/agent/+/register"
        );
    }

    #[test]
    fn every_built_topic_parses_back() {
        for kind in AgentTopic::ALL {
            let t = agent("0123456789abcdef0123456789abcdef", kind);
            assert_eq!(
                parse(&t),
                Some(Topic::Agent {
                    id: "0123456789abcdef0123456789abcdef",
                    kind
                })
            );
        }
        assert_eq!(parse(MASTER_HELLO), Some(Topic::MasterHello));
    }

    #[test]
    fn foreign_and_malformed_topics_are_not_recognised() {
        for t in [
            "",
            "bramble/v2/agent/a/status",
            "bramble/v1/agent/a/status/extra",
            "bramble/v1/agent/a+b/status",
            "bramble/v1/agent//status",
            "bramble/v1/agent/a/unknown",
            "homeassistant/sensor/x/config",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }
}
