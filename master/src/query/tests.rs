//! The queries' snapshot, task lookup and tables, without a broker.

use super::*;
use bramble_master_core::status::{
    AgentStatus, ClusterStatus, FrameworkStatus, TaskStatus, CLUSTER_TOPIC,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::Value;

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

#[test]
fn a_garbage_payload_is_named_with_its_topic_and_what_it_should_hold() {
    let mut snap = StatusSnapshot::default();
    snap.insert(CLUSTER_TOPIC, b"\x00\xffbinary");
    snap.insert("bramble/v1/status/task/f1/t1", br#"{"task_id":3}"#);
    snap.insert("bramble/v1/status/agent/a", br#"{"agent_id":"a"}"#);
    let cluster = snap.garbage(Some("cluster"));
    assert_eq!(cluster.len(), 1);
    assert!(
        cluster[0].starts_with(
            "bramble/v1/status/cluster holds a payload that is not a cluster status: "
        ),
        "{}",
        cluster[0]
    );
    let tasks = snap.garbage(Some("task"));
    assert_eq!(tasks.len(), 1);
    assert!(
        tasks[0].starts_with(
            "bramble/v1/status/task/f1/t1 holds a payload that is not a task status: "
        ),
        "{}",
        tasks[0]
    );
    assert_eq!(snap.garbage(Some("agent")).len(), 1);
    assert_eq!(snap.garbage(None).len(), 3);
    assert!(snap.garbage(Some("offer")).is_empty());
}

#[test]
fn a_topic_repaired_while_the_query_listens_is_no_longer_named() {
    let mut snap = StatusSnapshot::default();
    let a: AgentStatus = shape(AGENT, json!({"agent_id":"a"}));
    snap.insert("bramble/v1/status/agent/a", b"garbage");
    snap.insert(
        "bramble/v1/status/agent/a",
        &serde_json::to_vec(&a).unwrap(),
    );
    assert!(snap.garbage(None).is_empty());
    assert_eq!(snap.agents().len(), 1);
    // And garbage over a good value hides it: the topic is named instead.
    snap.insert("bramble/v1/status/agent/a", b"garbage");
    assert!(snap.agents().is_empty());
    assert_eq!(snap.garbage(Some("agent")).len(), 1);
}

#[test]
fn a_garbage_topics_control_characters_are_escaped_when_named() {
    let mut snap = StatusSnapshot::default();
    snap.insert("bramble/v1/status/task/f\x1b[2J/t", b"garbage");
    let named = snap.garbage(Some("task"));
    assert!(!named[0].contains('\x1b'), "{}", named[0]);
    assert!(named[0].contains("\\u{1b}"), "{}", named[0]);
}
