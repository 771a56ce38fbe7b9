//! [`StatusSnapshot`]: the retained status topics, each parsed into its topic's shape
//! ([`StatusEntry`]), with the JSON as published kept for `--json`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use bramble_master_core::status::{
    task_topic, AgentStatus, ClusterStatus, FrameworkStatus, MasterStatus, OfferStatus, TaskStatus,
    CLUSTER_TOPIC, MASTER_TOPIC, STATUS_PREFIX,
};

/// The most status topics a query keeps (beyond, the rest are ignored).
pub const MAX_ENTRIES: usize = 100_000;
/// The most topics holding garbage a query names (beyond, they are only counted).
pub const MAX_GARBAGE_NAMED: usize = 32;

/// One retained status topic's JSON, typed by the topic's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusEntry {
    /// `bramble/v1/status/cluster`.
    Cluster(ClusterStatus),
    /// `bramble/v1/status/master`.
    Master(MasterStatus),
    /// `bramble/v1/status/agent/{agent_id}`.
    Agent(AgentStatus),
    /// `bramble/v1/status/framework/{framework_id}`.
    Framework(FrameworkStatus),
    /// `bramble/v1/status/task/{framework_id}/{task_id}`.
    Task(TaskStatus),
    /// `bramble/v1/status/offer/{offer_id}`.
    Offer(OfferStatus),
}

/// Why a retained message is not a [`StatusEntry`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The topic is not one of the status topics' kinds (`cluster`, `agent`, `framework`, `task`,
    /// `offer`).
    #[error("{0} is not a status topic the master publishes")]
    UnknownTopic(String),
    /// The payload is not JSON, or not the shape of its topic.
    #[error("{} holds a payload that is not {what}: {source}", .topic.escape_debug())]
    Malformed {
        /// The topic.
        topic: String,
        /// What it should hold (`a cluster status`, `an agent status`, …).
        what: &'static str,
        /// What serde_json found.
        source: serde_json::Error,
    },
}

/// What the payload of `topic` should be, for the messages naming a garbage topic.
fn what(topic: &str) -> &'static str {
    if topic == CLUSTER_TOPIC {
        return "a cluster status";
    }
    if topic == MASTER_TOPIC {
        return "a master status";
    }
    match topic
        .strip_prefix(STATUS_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .map(|(kind, _)| kind)
    {
        Some("agent") => "an agent status",
        Some("framework") => "a framework status",
        Some("task") => "a task status",
        Some("offer") => "an offer status",
        _ => "a status",
    }
}

impl StatusEntry {
    /// Parses `json`, the payload of `topic`, as the shape of the topic's kind.
    pub fn parse(topic: &str, json: &Value) -> Result<StatusEntry, EntryError> {
        fn shape<T: DeserializeOwned>(topic: &str, json: &Value) -> Result<T, EntryError> {
            T::deserialize(json).map_err(|source| EntryError::Malformed {
                topic: topic.to_owned(),
                what: what(topic),
                source,
            })
        }
        if topic == CLUSTER_TOPIC {
            return shape(topic, json).map(StatusEntry::Cluster);
        }
        if topic == MASTER_TOPIC {
            return shape(topic, json).map(StatusEntry::Master);
        }
        let kind = topic
            .strip_prefix(STATUS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .map(|(kind, _)| kind);
        match kind {
            Some("agent") => shape(topic, json).map(StatusEntry::Agent),
            Some("framework") => shape(topic, json).map(StatusEntry::Framework),
            Some("task") => shape(topic, json).map(StatusEntry::Task),
            Some("offer") => shape(topic, json).map(StatusEntry::Offer),
            _ => Err(EntryError::UnknownTopic(topic.to_owned())),
        }
    }
}

/// The retained status topics, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    /// Topic → JSON as published (what `--json` prints), for every topic parsed into its shape.
    pub entries: BTreeMap<String, Value>,
    /// Payloads that were not JSON, or not the shape of their topic.
    pub malformed: usize,
    /// Topic → the same JSON, typed.
    typed: BTreeMap<String, StatusEntry>,
    /// Topic → why its retained payload is not its shape (at most [`MAX_GARBAGE_NAMED`]).
    garbage: BTreeMap<String, String>,
}

impl StatusSnapshot {
    /// Adds one message (an empty payload removes the topic, as the broker would). Topics outside
    /// the status topics' kinds are ignored.
    pub fn insert(&mut self, topic: &str, payload: &[u8]) {
        if !topic.starts_with(STATUS_PREFIX) {
            return;
        }
        self.garbage.remove(topic);
        if payload.is_empty() {
            self.entries.remove(topic);
            self.typed.remove(topic);
            return;
        }
        let parsed = serde_json::from_slice::<Value>(payload)
            .map_err(|source| EntryError::Malformed {
                topic: topic.to_owned(),
                what: what(topic),
                source,
            })
            .and_then(|json| Ok((StatusEntry::parse(topic, &json)?, json)));
        match parsed {
            Ok((entry, json))
                if self.entries.len() < MAX_ENTRIES || self.entries.contains_key(topic) =>
            {
                self.entries.insert(topic.to_owned(), json);
                self.typed.insert(topic.to_owned(), entry);
            }
            Ok(_) | Err(EntryError::UnknownTopic(_)) => {}
            Err(e @ EntryError::Malformed { .. }) => {
                self.malformed += 1;
                // What was there before is not there any more.
                self.entries.remove(topic);
                self.typed.remove(topic);
                if self.garbage.len() < MAX_GARBAGE_NAMED {
                    self.garbage.insert(topic.to_owned(), e.to_string());
                }
            }
        }
    }

    /// The topics (at most [`MAX_GARBAGE_NAMED`]) whose retained payload is not their shape, each
    /// with why (`bramble/v1/status/cluster holds a payload that is not a cluster status: …`), in
    /// topic order; `kind` (`cluster`, `agent`, `framework`, `task`, `offer`) picks one kind, or
    /// `None` all.
    pub fn garbage(&self, kind: Option<&str>) -> Vec<&str> {
        let prefix = match kind {
            Some("cluster") => CLUSTER_TOPIC.to_owned(),
            Some("master") => MASTER_TOPIC.to_owned(),
            Some(kind) => format!("{STATUS_PREFIX}{kind}/"),
            None => STATUS_PREFIX.to_owned(),
        };
        self.garbage
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .map(|(_, why)| why.as_str())
            .collect()
    }

    /// The cluster summary's JSON as published, if published.
    pub fn cluster(&self) -> Option<&Value> {
        self.entries.get(CLUSTER_TOPIC)
    }

    /// The master's availability (`online`, or `offline` from its last will), if published.
    pub fn master_status(&self) -> Option<&MasterStatus> {
        match self.typed.get(MASTER_TOPIC) {
            Some(StatusEntry::Master(m)) => Some(m),
            _ => None,
        }
    }

    /// The cluster summary, if published.
    pub fn cluster_status(&self) -> Option<&ClusterStatus> {
        match self.typed.get(CLUSTER_TOPIC) {
            Some(StatusEntry::Cluster(c)) => Some(c),
            _ => None,
        }
    }

    /// The JSON as published of the entries of one kind (`agent`, `framework`, `task`, `offer`),
    /// in the order of [`agents`](Self::agents), [`frameworks`](Self::frameworks),
    /// [`tasks`](Self::tasks) and [`offers`](Self::offers).
    pub fn kind(&self, kind: &str) -> Vec<&Value> {
        self.topics(kind)
            .iter()
            .filter_map(|t| self.entries.get(t))
            .collect()
    }

    /// The topics of one kind (`agent`, `framework`, `task`, `offer`), in the order of
    /// [`kind`](Self::kind).
    pub fn topics(&self, kind: &str) -> Vec<String> {
        let prefix = format!("{STATUS_PREFIX}{kind}/");
        let mut out: Vec<(&String, &StatusEntry)> = self
            .typed
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .collect();
        out.sort_by_key(|(_, e)| match e {
            StatusEntry::Offer(o) => o.offer_id,
            _ => 0,
        });
        out.into_iter().map(|(t, _)| t.clone()).collect()
    }

    /// The agents, by id.
    pub fn agents(&self) -> Vec<&AgentStatus> {
        self.typed
            .values()
            .filter_map(|e| match e {
                StatusEntry::Agent(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The frameworks, by id.
    pub fn frameworks(&self) -> Vec<&FrameworkStatus> {
        self.typed
            .values()
            .filter_map(|e| match e {
                StatusEntry::Framework(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// The tasks, by framework id and task id.
    pub fn tasks(&self) -> Vec<&TaskStatus> {
        self.typed
            .values()
            .filter_map(|e| match e {
                StatusEntry::Task(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The outstanding offers, by offer id.
    pub fn offers(&self) -> Vec<&OfferStatus> {
        let mut offers: Vec<&OfferStatus> = self
            .typed
            .values()
            .filter_map(|e| match e {
                StatusEntry::Offer(o) => Some(o),
                _ => None,
            })
            .collect();
        offers.sort_by_key(|o| o.offer_id);
        offers
    }

    /// The task `task_id` of `framework_id`, if its topic is retained.
    pub fn task(&self, framework_id: &str, task_id: &str) -> Option<&TaskStatus> {
        match self.typed.get(&task_topic(framework_id, task_id)) {
            Some(StatusEntry::Task(t)) => Some(t),
            _ => None,
        }
    }
}
