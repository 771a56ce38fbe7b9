//! Broker addresses: `mqtt://host[:port]`, or a comma-separated list of them
//! (`mqtt://a:1883,mqtt://b:1883`), as the agent hands them to tasks in `BRAMBLE_BROKER`.
//!
//! The one parser is [`bramble_mqtt::brokers`]'s, re-exported here: a [`BrokerAddr`] is one broker,
//! [`Brokers`] the non-empty list a client fails over between.

pub use bramble_mqtt::brokers::{BrokerAddr, BrokerError, Brokers, DEFAULT_PORT};
