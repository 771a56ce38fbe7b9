//! Framework topic names: where a framework registers, calls, leaves its last will and hears
//! events, and how the master recognises them.

use alloc::format;
use alloc::string::String;

use agent_nostd_core::ids::validate_id;

/// The prefix of every framework topic.
pub const FRAMEWORK_PREFIX: &str = "bramble/v1/framework/";

/// `bramble/v1/framework/register/{client}`: where a framework registers.
pub fn register_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}register/{client}")
}

/// `bramble/v1/framework/call/{client}`: the calls of a registered framework.
pub fn call_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}call/{client}")
}

/// `bramble/v1/framework/will/{client}`: the framework's MQTT last will.
pub fn will_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}will/{client}")
}

/// `bramble/v1/framework/event/{client}`: every event for the framework behind `client`.
pub fn event_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}event/{client}")
}

/// The subscriptions the master needs for framework traffic.
pub const MASTER_FILTERS: [&str; 3] = [
    "bramble/v1/framework/register/+",
    "bramble/v1/framework/call/+",
    "bramble/v1/framework/will/+",
];

/// Which framework topic, each the level before `{client}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameworkTopic {
    /// `register`: registrations.
    Register,
    /// `call`: every other call.
    Call,
    /// `will`: the last will.
    Will,
    /// `event`: events from the master.
    Event,
}

/// Recognises a framework topic, returning its kind and client name, or `None` for anything else
/// (including a client name that is not a valid id).
pub fn parse_topic(topic: &str) -> Option<(FrameworkTopic, &str)> {
    let rest = topic.strip_prefix(FRAMEWORK_PREFIX)?;
    let (kind, client) = rest.split_once('/')?;
    let kind = match kind {
        "register" => FrameworkTopic::Register,
        "call" => FrameworkTopic::Call,
        "will" => FrameworkTopic::Will,
        "event" => FrameworkTopic::Event,
        _ => return None,
    };
    validate_id(client).ok()?;
    Some((kind, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_under_the_framework_prefix_and_parse_back() {
        assert_eq!(register_topic("pi"), "bramble/v1/framework/register/pi");
        assert_eq!(call_topic("pi"), "bramble/v1/framework/call/pi");
        assert_eq!(will_topic("pi"), "bramble/v1/framework/will/pi");
        assert_eq!(event_topic("pi"), "bramble/v1/framework/event/pi");
        for (t, kind) in [
            (register_topic("pi"), FrameworkTopic::Register),
            (call_topic("pi"), FrameworkTopic::Call),
            (will_topic("pi"), FrameworkTopic::Will),
            (event_topic("pi"), FrameworkTopic::Event),
        ] {
            assert_eq!(parse_topic(&t), Some((kind, "pi")));
        }
    }

    #[test]
    fn malformed_framework_topics_are_not_recognised() {
        for t in [
            "bramble/v1/framework/register/a+b",
            "bramble/v1/framework/register/",
            "bramble/v1/framework/call/x/more",
            "bramble/v1/framework/unknown/x",
            "bramble/v1/framework/event",
            "bramble/v1/agent/a/status",
        ] {
            assert_eq!(parse_topic(t), None, "{t}");
        }
    }
}
