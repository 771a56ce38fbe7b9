//! The operator's queries (`bramble status`, `agents`, `frameworks`, `tasks`, `offers`): read the
//! retained status topics a running master publishes (see [`bramble_master_core::status`]) and render them as
//! aligned tables or JSON.
//!
//! [`collect`] subscribes to `bramble/v1/status/#` and gathers the retained messages until the
//! broker has been quiet for [`QUIET`](crate::mqtt::QUIET) after the SUBACK (or until a timeout).
//! Each payload is parsed into its topic's shape ([`StatusEntry`]: the master core's
//! [`ClusterStatus`], [`AgentStatus`], …), so the tables read the fields the publisher writes; the
//! JSON as published is kept too, for `--json`. The rendering functions work on the shapes only, so
//! they are tested without a broker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::mqtt::QueryError;
use crate::mqtt::{retained, BrokerAddr};
use bramble_master_core::status::{
    state_name, task_topic, AgentStatus, ClusterStatus, FrameworkStatus, OfferStatus, TaskStatus,
    CLUSTER_TOPIC, STATUS_FILTER, STATUS_PREFIX,
};

/// The most status topics a query keeps (beyond, the rest are ignored).
pub const MAX_ENTRIES: usize = 100_000;

/// One retained status topic's JSON, typed by the topic's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusEntry {
    /// `bramble/v1/status/cluster`.
    Cluster(ClusterStatus),
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
    #[error("{topic}: {source}")]
    Malformed {
        /// The topic.
        topic: String,
        /// What serde_json found.
        source: serde_json::Error,
    },
}

impl StatusEntry {
    /// Parses `json`, the payload of `topic`, as the shape of the topic's kind.
    pub fn parse(topic: &str, json: &Value) -> Result<StatusEntry, EntryError> {
        fn shape<T: DeserializeOwned>(topic: &str, json: &Value) -> Result<T, EntryError> {
            T::deserialize(json).map_err(|source| EntryError::Malformed {
                topic: topic.to_owned(),
                source,
            })
        }
        if topic == CLUSTER_TOPIC {
            return shape(topic, json).map(StatusEntry::Cluster);
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
    /// Topic → JSON as published (what `--json` prints), for every entry in [`typed`](Self::typed).
    pub entries: BTreeMap<String, Value>,
    /// Payloads that were not JSON, or not the shape of their topic.
    pub malformed: usize,
    /// Topic → the same JSON, typed.
    typed: BTreeMap<String, StatusEntry>,
}

impl StatusSnapshot {
    /// Adds one message (an empty payload removes the topic, as the broker would). Topics outside
    /// the status topics' kinds are ignored.
    pub fn insert(&mut self, topic: &str, payload: &[u8]) {
        if !topic.starts_with(STATUS_PREFIX) {
            return;
        }
        if payload.is_empty() {
            self.entries.remove(topic);
            self.typed.remove(topic);
            return;
        }
        let parsed = serde_json::from_slice::<Value>(payload)
            .map_err(|source| EntryError::Malformed {
                topic: topic.to_owned(),
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
            Err(EntryError::Malformed { .. }) => self.malformed += 1,
        }
    }

    /// The cluster summary's JSON as published, if published.
    pub fn cluster(&self) -> Option<&Value> {
        self.entries.get(CLUSTER_TOPIC)
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
        out.into_iter()
            .filter_map(|(t, _)| self.entries.get(t))
            .collect()
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

/// Reads the retained status topics from the broker at `broker`, waiting at most `timeout`.
pub async fn collect(broker: &BrokerAddr, timeout: Duration) -> Result<StatusSnapshot, QueryError> {
    let mut snapshot = StatusSnapshot::default();
    retained(
        broker,
        &[STATUS_FILTER.to_owned()],
        timeout,
        |topic, payload| snapshot.insert(topic, payload),
    )
    .await?;
    Ok(snapshot)
}

/// Finds the task `spec` names among the retained status: `FRAMEWORK_ID/TASK_ID`, or a task id
/// that only one framework uses. Returns (framework id, task id) and its status.
pub fn find_task<'a>(
    snapshot: &'a StatusSnapshot,
    spec: &str,
) -> Result<(String, String, &'a TaskStatus), String> {
    let tasks = snapshot.tasks();
    let matches: Vec<&TaskStatus> = match spec.split_once('/') {
        Some((f, t)) => tasks
            .into_iter()
            .filter(|v| v.framework_id == f && v.task_id == t)
            .collect(),
        None => tasks.into_iter().filter(|v| v.task_id == spec).collect(),
    };
    match matches.as_slice() {
        [] => Err(format!("no task {spec} in the cluster's status")),
        [one] => Ok((one.framework_id.clone(), one.task_id.clone(), one)),
        many => Err(format!(
            "several frameworks have a task {spec}: name one of {}",
            many.iter()
                .map(|v| format!("{}/{}", v.framework_id, v.task_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether a task's status shows it ended (finished, failed, killed, lost or error).
pub fn task_ended(task: &TaskStatus) -> bool {
    task.ended()
}

/// Renders rows under headers as an aligned table (columns separated by two spaces).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON number as the JSON has it (`1.0`, `0.25`), or `-` if it is not finite.
fn number(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Thousandths of a core as cores, e.g. `1.5`.
fn cores(millis: u64) -> String {
    let s = format!("{:.2}", millis as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `bramble status`: the cluster summary as `key: value` lines.
pub fn render_cluster(c: &ClusterStatus) -> String {
    let tasks = c
        .tasks
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tasks = if tasks.is_empty() {
        "none".to_owned()
    } else {
        tasks
    };
    let rows = [
        vec![
            "agents".to_owned(),
            format!("{} online, {} offline", c.agents_online, c.agents_offline),
        ],
        vec![
            "frameworks".to_owned(),
            format!("{} ({} connected)", c.frameworks, c.frameworks_connected),
        ],
        vec!["tasks".to_owned(), tasks],
        vec![
            "cpu (cores)".to_owned(),
            format!(
                "{} used of {}, {} free",
                cores(c.cpu_millis_used),
                cores(c.cpu_millis_total),
                cores(c.cpu_millis_free)
            ),
        ],
        vec![
            "memory (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                c.mem_mib_used, c.mem_mib_total, c.mem_mib_free
            ),
        ],
        vec![
            "disk (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                c.disk_mib_used, c.disk_mib_total, c.disk_mib_free
            ),
        ],
        vec![
            "offers outstanding".to_owned(),
            c.offers_outstanding.to_string(),
        ],
    ];
    rows.iter()
        .map(|r| format!("{:<19} {}\n", format!("{}:", r[0]), r[1]))
        .collect()
}

/// `bramble agents`.
pub fn render_agents(agents: &[&AgentStatus]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let attrs = a
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                a.agent_id.clone(),
                a.state.as_str().to_owned(),
                format!("{}/{}", cores(a.cpu_millis_used), cores(a.cpu_millis_total)),
                format!("{}/{}", a.mem_mib_used, a.mem_mib_total),
                a.soc_temp_c.map_or("-".to_owned(), |t| format!("{t:.1}")),
                a.running_tasks.to_string(),
                attrs,
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "STATE",
            "CPU",
            "MEM MiB",
            "TEMP °C",
            "TASKS",
            "ATTRIBUTES",
        ],
        &rows,
    )
}

/// `bramble frameworks`.
pub fn render_frameworks(frameworks: &[&FrameworkStatus]) -> String {
    let rows: Vec<Vec<String>> = frameworks
        .iter()
        .map(|f| {
            vec![
                f.framework_id.clone(),
                f.name.clone(),
                f.role.clone(),
                number(f.weight),
                f.state.as_str().to_owned(),
                format!("{:.3}", f.dominant_share),
                f.tasks.running.to_string(),
                f.tasks.finished.to_string(),
                f.tasks.failed.to_string(),
                f.offers.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "FRAMEWORK",
            "NAME",
            "ROLE",
            "WEIGHT",
            "STATE",
            "SHARE",
            "RUNNING",
            "FINISHED",
            "FAILED",
            "OFFERS",
        ],
        &rows,
    )
}

/// `bramble tasks`.
pub fn render_tasks(tasks: &[&TaskStatus]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let reason = match (t.exit_code, t.signal) {
                (Some(code), _) => format!("exited {code}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => t.reason.as_str().to_owned(),
            };
            vec![
                t.framework_id.clone(),
                t.task_id.clone(),
                state_name(t.state).to_owned(),
                t.agent_id.clone(),
                cores(t.cpu_millis.into()),
                t.mem_mib.to_string(),
                reason,
                t.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "FRAMEWORK",
            "TASK",
            "STATE",
            "AGENT",
            "CPU",
            "MEM MiB",
            "REASON",
            "MESSAGE",
        ],
        &rows,
    )
}

/// `bramble offers`; ages are from `now_ms` (epoch ms).
pub fn render_offers(offers: &[&OfferStatus], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|o| {
            let age = now_ms.saturating_sub(o.since);
            vec![
                o.offer_id.to_string(),
                o.framework_id.clone(),
                o.agent_id.clone(),
                cores(o.cpu_millis.into()),
                o.mem_mib.to_string(),
                o.disk_mib.to_string(),
                format!("{:.1}s", age as f64 / 1000.0),
            ]
        })
        .collect();
    table(
        &[
            "OFFER",
            "FRAMEWORK",
            "AGENT",
            "CPU",
            "MEM MiB",
            "DISK MiB",
            "AGE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COUNTS: &str = r#"{"error":0,"failed":0,"finished":0,"killed":0,"lost":0,
        "running":0,"staging":0,"starting":0,"unreachable":0}"#;

    /// A shape from `partial` over a zero `template` (nested objects merged key by key).
    fn shape<T: DeserializeOwned>(template: &str, partial: Value) -> T {
        fn merge(into: &mut Value, from: Value) {
            match (into, from) {
                (Value::Object(into), Value::Object(from)) => {
                    for (k, v) in from {
                        merge(into.entry(k).or_insert(Value::Null), v);
                    }
                }
                (into, from) => *into = from,
            }
        }
        let mut v: Value = serde_json::from_str(&template.replace("COUNTS", COUNTS)).unwrap();
        merge(&mut v, partial);
        serde_json::from_value(v).unwrap()
    }

    const AGENT: &str = r#"{"agent_id":"","hostname":"","arch":"","state":"online",
        "cpu_millis_total":0,"cpu_millis_used":0,"cpu_millis_free":0,"cpu_millis_offered":0,
        "mem_mib_total":0,"mem_mib_used":0,"mem_mib_free":0,"mem_mib_offered":0,
        "disk_mib_total":0,"disk_mib_used":0,"disk_mib_free":0,"disk_mib_offered":0,
        "attributes":{},"soc_temp_c":null,"throttled":null,"running_tasks":0,"task_ids":[]}"#;
    const TASK: &str = r#"{"framework_id":"","task_id":"","agent_id":"","state":"staging",
        "cpu_millis":0,"mem_mib":0,"disk_mib":0,"reason":"none","exit_code":null,"signal":null,
        "message":"","updated":0}"#;
    const CLUSTER: &str = r#"{"master_epoch":0,"agents_online":0,"agents_offline":0,
        "frameworks":0,"frameworks_connected":0,"tasks":COUNTS,"cpu_millis_total":0,
        "cpu_millis_used":0,"cpu_millis_free":0,"mem_mib_total":0,"mem_mib_used":0,
        "mem_mib_free":0,"disk_mib_total":0,"disk_mib_used":0,"disk_mib_free":0,
        "offers_outstanding":0}"#;
    const FRAMEWORK: &str = r#"{"framework_id":"","name":"","role":"","weight":1.0,
        "priority":0,"state":"connected","connected":true,"failover_deadline":null,
        "dominant_share":0.0,"suppressed":false,"offers":0,"cpu_millis_allocated":0,
        "mem_mib_allocated":0,"disk_mib_allocated":0,"cpu_millis_offered":0,"mem_mib_offered":0,
        "disk_mib_offered":0,"tasks":COUNTS}"#;

    #[test]
    fn a_table_aligns_its_columns_and_trims_trailing_space() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), "".into()],
                vec!["é".into(), "yy".into(), "z".into()],
            ],
        );
        assert_eq!(
            t,
            "A          LONG HEADER  C\nwide cell  x\né          yy           z\n"
        );
    }

    #[test]
    fn agents_render_with_cores_memory_temperature_and_attributes() {
        let a: AgentStatus = shape(
            AGENT,
            json!({"agent_id":"pi-1","state":"online","cpu_millis_used":1500,
            "cpu_millis_total":4000,"mem_mib_used":64,"mem_mib_total":1024,"soc_temp_c":48.25,
            "running_tasks":2,"attributes":{"room":"attic","sensor":"bme280"}}),
        );
        let b: AgentStatus = shape(
            AGENT,
            json!({"agent_id":"pi-2","state":"offline","cpu_millis_used":0,
            "cpu_millis_total":1000,"mem_mib_used":0,"mem_mib_total":512,"soc_temp_c":null,
            "running_tasks":0,"attributes":{}}),
        );
        assert_eq!(
            render_agents(&[&a, &b]),
            "AGENT  STATE    CPU    MEM MiB  TEMP °C  TASKS  ATTRIBUTES\n\
             pi-1   online   1.5/4  64/1024  48.2     2      room=attic,sensor=bme280\n\
             pi-2   offline  0/1    0/512    -        0\n"
        );
    }

    #[test]
    fn tasks_show_exit_codes_and_signals() {
        let t1: TaskStatus = shape(
            TASK,
            json!({"framework_id":"f","task_id":"t1","state":"failed","agent_id":"a",
            "cpu_millis":500,"mem_mib":64,"reason":"exited","exit_code":3,"signal":null,
            "message":"boom"}),
        );
        let t2: TaskStatus = shape(
            TASK,
            json!({"framework_id":"f","task_id":"t2","state":"killed","agent_id":"a",
            "cpu_millis":250,"mem_mib":32,"reason":"signaled","exit_code":null,"signal":9,
            "message":""}),
        );
        assert_eq!(
            render_tasks(&[&t1, &t2]),
            "FRAMEWORK  TASK  STATE   AGENT  CPU   MEM MiB  REASON    MESSAGE\n\
             f          t1    failed  a      0.5   64       exited 3  boom\n\
             f          t2    killed  a      0.25  32       signal 9\n"
        );
    }

    #[test]
    fn the_cluster_summary_lists_only_nonzero_task_states() {
        let c: ClusterStatus = shape(
            CLUSTER,
            json!({"agents_online":3,"agents_offline":1,"frameworks":2,
            "frameworks_connected":1,"tasks":{"running":2,"finished":5,"failed":0},
            "cpu_millis_used":500,"cpu_millis_total":3000,"cpu_millis_free":2500,
            "mem_mib_used":64,"mem_mib_total":1536,"mem_mib_free":1472,"offers_outstanding":1}),
        );
        let out = render_cluster(&c);
        assert!(out.contains("agents:             3 online, 1 offline"));
        assert!(out.contains("tasks:              finished 5, running 2"));
        assert!(out.contains("cpu (cores):        0.5 used of 3, 2.5 free"));
    }

    #[test]
    fn offers_show_their_age_and_sort_by_id() {
        let mut snap = StatusSnapshot::default();
        snap.insert(
            "bramble/v1/status/offer/10",
            br#"{"offer_id":10,"framework_id":"f","agent_id":"a","cpu_millis":1000,"mem_mib":1,"disk_mib":0,"since":1000}"#,
        );
        snap.insert(
            "bramble/v1/status/offer/9",
            br#"{"offer_id":9,"framework_id":"f","agent_id":"b","cpu_millis":1000,"mem_mib":1,"disk_mib":0,"since":2000}"#,
        );
        let offers = snap.offers();
        let out = render_offers(&offers, 3_500);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("9 ") && lines[1].ends_with("1.5s"));
        assert!(lines[2].starts_with("10") && lines[2].ends_with("2.5s"));
    }

    #[test]
    fn a_task_is_found_by_its_id_when_unambiguous_or_by_framework_and_id() {
        let mut snap = StatusSnapshot::default();
        for (f, t) in [("f1", "a"), ("f1", "b"), ("f2", "b")] {
            let task: TaskStatus = shape(
                TASK,
                json!({"framework_id": f, "task_id": t, "state": "running"}),
            );
            let json = serde_json::to_string(&task).unwrap();
            snap.insert(&format!("bramble/v1/status/task/{f}/{t}"), json.as_bytes());
        }
        assert_eq!(find_task(&snap, "a").unwrap().0, "f1");
        assert_eq!(find_task(&snap, "f2/b").unwrap().0, "f2");
        assert!(find_task(&snap, "b").unwrap_err().contains("f1/b, f2/b"));
        assert!(find_task(&snap, "c").is_err());
        assert!(!task_ended(find_task(&snap, "a").unwrap().2));
    }

    #[test]
    fn a_snapshot_drops_cleared_and_malformed_payloads_and_foreign_topics() {
        let mut snap = StatusSnapshot::default();
        let a: AgentStatus = shape(AGENT, json!({"agent_id":"a"}));
        snap.insert(
            "bramble/v1/status/agent/a",
            &serde_json::to_vec(&a).unwrap(),
        );
        snap.insert("bramble/v1/status/agent/b", b"not json");
        snap.insert("bramble/v1/other", br#"{}"#);
        assert_eq!(snap.kind("agent").len(), 1);
        assert_eq!(snap.malformed, 1);
        snap.insert("bramble/v1/status/agent/a", b"");
        assert!(snap.entries.is_empty());
    }

    #[test]
    fn frameworks_render_their_weight_as_published_their_share_and_task_counts() {
        let f: FrameworkStatus = shape(
            FRAMEWORK,
            json!({"framework_id":"f-1","name":"pi","role":"demo","weight":2.5,
                "state":"disconnected","dominant_share":0.16667,"offers":1,
                "tasks":{"running":1,"finished":4}}),
        );
        let g: FrameworkStatus = shape(
            FRAMEWORK,
            json!({"framework_id":"f-2","name":"wc","role":"*","weight":1.0}),
        );
        let out = render_frameworks(&[&f, &g]);
        let cells: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[1],
            [
                "f-1",
                "pi",
                "demo",
                "2.5",
                "disconnected",
                "0.167",
                "1",
                "4",
                "0",
                "1"
            ]
        );
        assert_eq!(
            cells[2],
            [
                "f-2",
                "wc",
                "*",
                "1.0",
                "connected",
                "0.000",
                "0",
                "0",
                "0",
                "0"
            ]
        );
    }

    #[test]
    fn json_that_is_not_the_shape_of_its_topic_counts_as_malformed() {
        let mut snap = StatusSnapshot::default();
        snap.insert("bramble/v1/status/agent/a", br#"{"agent_id":"a"}"#);
        snap.insert(CLUSTER_TOPIC, br#"{"agents_online":"three"}"#);
        snap.insert("bramble/v1/status/gauge/x", br#"{}"#);
        assert_eq!(snap.malformed, 2);
        assert!(snap.entries.is_empty() && snap.agents().is_empty());
        assert!(snap.cluster_status().is_none());
        assert!(matches!(
            StatusEntry::parse("bramble/v1/status/gauge/x", &json!({})),
            Err(EntryError::UnknownTopic(_))
        ));
    }
}
