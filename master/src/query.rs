//! The operator's queries (`bramble status`, `agents`, `frameworks`, `tasks`, `offers`): read the
//! retained status topics a running master publishes (see [`bramble_master_core::status`]) and render them as
//! aligned tables or JSON.
//!
//! [`collect`] subscribes to `bramble/v1/status/#` and gathers the retained messages until the
//! broker has been quiet for [`QUIET`](crate::mqtt::QUIET) after the SUBACK (or until a timeout). The rendering
//! functions work on parsed JSON only, so they are tested without a broker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

pub use crate::mqtt::QueryError;
use crate::mqtt::{retained, BrokerAddr};
use bramble_master_core::status::{CLUSTER_TOPIC, STATUS_FILTER, STATUS_PREFIX};

/// The most status topics a query keeps (beyond, the rest are ignored).
pub const MAX_ENTRIES: usize = 100_000;

/// The retained status topics, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    /// Topic → JSON, for every non-empty retained status topic that parsed.
    pub entries: BTreeMap<String, Value>,
    /// Payloads that were not JSON.
    pub malformed: usize,
}

impl StatusSnapshot {
    /// Adds one message (an empty payload removes the topic, as the broker would).
    pub fn insert(&mut self, topic: &str, payload: &[u8]) {
        if !topic.starts_with(STATUS_PREFIX) {
            return;
        }
        if payload.is_empty() {
            self.entries.remove(topic);
            return;
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(v) if self.entries.len() < MAX_ENTRIES || self.entries.contains_key(topic) => {
                self.entries.insert(topic.to_owned(), v);
            }
            Ok(_) => {}
            Err(_) => self.malformed += 1,
        }
    }

    /// The cluster summary, if published.
    pub fn cluster(&self) -> Option<&Value> {
        self.entries.get(CLUSTER_TOPIC)
    }

    /// The entries of one kind (`agent`, `framework`, `task`, `offer`), in topic order (offers by
    /// id).
    pub fn kind(&self, kind: &str) -> Vec<&Value> {
        let prefix = format!("{STATUS_PREFIX}{kind}/");
        let mut out: Vec<(&String, &Value)> = self
            .entries
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .collect();
        if kind == "offer" {
            out.sort_by_key(|(_, v)| v["offer_id"].as_u64().unwrap_or(u64::MAX));
        }
        out.into_iter().map(|(_, v)| v).collect()
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
/// that only one framework uses. Returns (framework id, task id) and its JSON.
pub fn find_task<'a>(
    snapshot: &'a StatusSnapshot,
    spec: &str,
) -> Result<(String, String, &'a Value), String> {
    let tasks = snapshot.kind("task");
    let matches: Vec<&Value> = match spec.split_once('/') {
        Some((f, t)) => tasks
            .into_iter()
            .filter(|v| v["framework_id"] == f && v["task_id"] == t)
            .collect(),
        None => tasks.into_iter().filter(|v| v["task_id"] == spec).collect(),
    };
    match matches.as_slice() {
        [] => Err(format!("no task {spec} in the cluster's status")),
        [one] => Ok((s(one, "framework_id"), s(one, "task_id"), one)),
        many => Err(format!(
            "several frameworks have a task {spec}: name one of {}",
            many.iter()
                .map(|v| format!("{}/{}", s(v, "framework_id"), s(v, "task_id")))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether a task's status JSON shows it ended.
pub fn task_ended(task: &Value) -> bool {
    matches!(
        task["state"].as_str(),
        Some("finished" | "failed" | "killed" | "lost" | "error")
    )
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

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Thousandths of a core as cores, e.g. `1.5`.
fn cores(millis: u64) -> String {
    let s = format!("{:.2}", millis as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `bramble status`: the cluster summary as `key: value` lines.
pub fn render_cluster(c: &Value) -> String {
    let tasks = c["tasks"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    let rows = [
        vec![
            "agents".to_owned(),
            format!(
                "{} online, {} offline",
                n(c, "agents_online"),
                n(c, "agents_offline")
            ),
        ],
        vec![
            "frameworks".to_owned(),
            format!(
                "{} ({} connected)",
                n(c, "frameworks"),
                n(c, "frameworks_connected")
            ),
        ],
        vec!["tasks".to_owned(), tasks],
        vec![
            "cpu (cores)".to_owned(),
            format!(
                "{} used of {}, {} free",
                cores(n(c, "cpu_millis_used")),
                cores(n(c, "cpu_millis_total")),
                cores(n(c, "cpu_millis_free"))
            ),
        ],
        vec![
            "memory (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                n(c, "mem_mib_used"),
                n(c, "mem_mib_total"),
                n(c, "mem_mib_free")
            ),
        ],
        vec![
            "disk (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                n(c, "disk_mib_used"),
                n(c, "disk_mib_total"),
                n(c, "disk_mib_free")
            ),
        ],
        vec![
            "offers outstanding".to_owned(),
            n(c, "offers_outstanding").to_string(),
        ],
    ];
    rows.iter()
        .map(|r| format!("{:<19} {}\n", format!("{}:", r[0]), r[1]))
        .collect()
}

/// `bramble agents`.
pub fn render_agents(agents: &[&Value]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let attrs = a["attributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                s(a, "agent_id"),
                s(a, "state"),
                format!(
                    "{}/{}",
                    cores(n(a, "cpu_millis_used")),
                    cores(n(a, "cpu_millis_total"))
                ),
                format!("{}/{}", n(a, "mem_mib_used"), n(a, "mem_mib_total")),
                a["soc_temp_c"]
                    .as_f64()
                    .map_or("-".to_owned(), |t| format!("{t:.1}")),
                n(a, "running_tasks").to_string(),
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
pub fn render_frameworks(frameworks: &[&Value]) -> String {
    let count = |f: &Value, state: &str| f["tasks"][state].as_u64().unwrap_or(0).to_string();
    let rows: Vec<Vec<String>> = frameworks
        .iter()
        .map(|f| {
            vec![
                s(f, "framework_id"),
                s(f, "name"),
                s(f, "role"),
                s(f, "weight"),
                s(f, "state"),
                f["dominant_share"]
                    .as_f64()
                    .map_or("-".to_owned(), |d| format!("{d:.3}")),
                count(f, "running"),
                count(f, "finished"),
                count(f, "failed"),
                n(f, "offers").to_string(),
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
pub fn render_tasks(tasks: &[&Value]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let reason = match (t["exit_code"].as_i64(), t["signal"].as_i64()) {
                (Some(code), _) => format!("exited {code}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => s(t, "reason"),
            };
            vec![
                s(t, "framework_id"),
                s(t, "task_id"),
                s(t, "state"),
                s(t, "agent_id"),
                cores(n(t, "cpu_millis")),
                n(t, "mem_mib").to_string(),
                reason,
                s(t, "message"),
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
pub fn render_offers(offers: &[&Value], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|o| {
            let age = now_ms.saturating_sub(n(o, "since"));
            vec![
                s(o, "offer_id"),
                s(o, "framework_id"),
                s(o, "agent_id"),
                cores(n(o, "cpu_millis")),
                n(o, "mem_mib").to_string(),
                n(o, "disk_mib").to_string(),
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
        let a = json!({"agent_id":"pi-1","state":"online","cpu_millis_used":1500,
            "cpu_millis_total":4000,"mem_mib_used":64,"mem_mib_total":1024,"soc_temp_c":48.25,
            "running_tasks":2,"attributes":{"room":"attic","sensor":"bme280"}});
        let b = json!({"agent_id":"pi-2","state":"offline","cpu_millis_used":0,
            "cpu_millis_total":1000,"mem_mib_used":0,"mem_mib_total":512,"soc_temp_c":null,
            "running_tasks":0,"attributes":{}});
        assert_eq!(
            render_agents(&[&a, &b]),
            "AGENT  STATE    CPU    MEM MiB  TEMP °C  TASKS  ATTRIBUTES\n\
             pi-1   online   1.5/4  64/1024  48.2     2      room=attic,sensor=bme280\n\
             pi-2   offline  0/1    0/512    -        0\n"
        );
    }

    #[test]
    fn tasks_show_exit_codes_and_signals() {
        let t1 = json!({"framework_id":"f","task_id":"t1","state":"failed","agent_id":"a",
            "cpu_millis":500,"mem_mib":64,"reason":"exited","exit_code":3,"signal":null,
            "message":"boom"});
        let t2 = json!({"framework_id":"f","task_id":"t2","state":"killed","agent_id":"a",
            "cpu_millis":250,"mem_mib":32,"reason":"signaled","exit_code":null,"signal":9,
            "message":""});
        assert_eq!(
            render_tasks(&[&t1, &t2]),
            "FRAMEWORK  TASK  STATE   AGENT  CPU   MEM MiB  REASON    MESSAGE\n\
             f          t1    failed  a      0.5   64       exited 3  boom\n\
             f          t2    killed  a      0.25  32       signal 9\n"
        );
    }

    #[test]
    fn the_cluster_summary_lists_only_nonzero_task_states() {
        let c = json!({"agents_online":3,"agents_offline":1,"frameworks":2,
            "frameworks_connected":1,"tasks":{"running":2,"finished":5,"failed":0},
            "cpu_millis_used":500,"cpu_millis_total":3000,"cpu_millis_free":2500,
            "mem_mib_used":64,"mem_mib_total":1536,"mem_mib_free":1472,"offers_outstanding":1});
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
        let offers = snap.kind("offer");
        let out = render_offers(&offers, 3_500);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("9 ") && lines[1].ends_with("1.5s"));
        assert!(lines[2].starts_with("10") && lines[2].ends_with("2.5s"));
    }

    #[test]
    fn a_task_is_found_by_its_id_when_unambiguous_or_by_framework_and_id() {
        let mut snap = StatusSnapshot::default();
        for (f, t) in [("f1", "a"), ("f1", "b"), ("f2", "b")] {
            let json = format!(r#"{{"framework_id":"{f}","task_id":"{t}","state":"running"}}"#);
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
        snap.insert("bramble/v1/status/agent/a", br#"{"agent_id":"a"}"#);
        snap.insert("bramble/v1/status/agent/b", b"not json");
        snap.insert("bramble/v1/other", br#"{}"#);
        assert_eq!(snap.kind("agent").len(), 1);
        assert_eq!(snap.malformed, 1);
        snap.insert("bramble/v1/status/agent/a", b"");
        assert!(snap.entries.is_empty());
    }
}
