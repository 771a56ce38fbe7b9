//! The status publisher on the sans-IO core: what it publishes, when, and what it clears; the Home
//! Assistant discovery configs; and the status topics' table in PROTOCOL.md.

use std::collections::BTreeMap;

use agent_nostd_core::ids::id;
use agent_nostd_core::wire::{AgentInfo, AgentMsg, Attribute, Reason, ResourceReport, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::status::{
    self, Observed, StatusPublisher, CLUSTER_TOPIC, ENDED_TASKS_KEPT,
};
use bramble_master_core::{Config, MasterCore};
use bramble_proto::{Accept, Call, Offer, Register, TaskInfo};
use serde_json::Value;

mod support;

use support::{call, drain, send_agent, status_msg};

const WALL: u64 = 1_700_000_000_000;

fn info(agent: &str) -> AgentInfo {
    let mut attributes = heapless::Vec::new();
    let _ = attributes.push(Attribute {
        key: heapless::String::try_from("sensor").unwrap(),
        value: heapless::String::try_from("bme280").unwrap(),
    });
    AgentInfo {
        agent_id: id(agent).unwrap(),
        hostname: heapless::String::try_from("pi.lan").unwrap(),
        arch: heapless::String::try_from("aarch64").unwrap(),
        board: heapless::String::new(),
        total: Resources::new(4_000, 4_096, 0),
        attributes,
        connection: 0,
        boot: 1,
        seq: 0,
        to_epoch: 0,
    }
}

/// Runs the publisher and returns what it published: topic → JSON, or `None` for a clear. Each
/// publish comes back to the publisher, as the broker echoes it to the master.
fn publish(
    p: &mut StatusPublisher,
    core: &mut MasterCore,
    now: u64,
) -> BTreeMap<String, Option<Value>> {
    p.update(core, now);
    let mut out = BTreeMap::new();
    while let Some(t) = p.poll_transmit() {
        let seen = p.observe(&t.topic, &t.payload, now);
        assert!(
            matches!(seen, Observed::Own | Observed::NotStatus),
            "{seen:?}"
        );
        let v = if t.payload.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&t.payload).expect("valid JSON"))
        };
        assert!(out.insert(t.topic, v).is_none(), "one publish per topic");
    }
    out
}

/// A master with agent `pi`, framework `fw` and its first offer, with the publisher caught up.
fn cluster(config: Config) -> (MasterCore, StatusPublisher, String, Offer) {
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(info("pi")));
    call(&mut core, 0, Call::Register(Register::new("fw")));
    let (_, fid) = drain(&mut core);
    core.handle_timeout(1_000);
    let (offers, _) = drain(&mut core);
    publish(&mut p, &mut core, 1_000);
    (core, p, fid.unwrap(), offers[0].clone())
}

fn launch(core: &mut MasterCore, now: u64, offer: &Offer, tasks: &[&str]) {
    let tasks = tasks
        .iter()
        .map(|t| TaskInfo::new(t, &["/bin/true"], Resources::new(500, 64, 0)))
        .collect();
    call(
        core,
        now,
        Call::Accept(Accept {
            offer_id: offer.offer_id,
            tasks,
        }),
    );
    drain(core);
}

#[test]
fn everything_is_published_at_start_and_nothing_again_while_nothing_changes() {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    let first = publish(&mut p, &mut core, 0);
    let cluster = first[CLUSTER_TOPIC].as_ref().unwrap();
    assert_eq!(cluster["agents_online"], 0);
    assert_eq!(cluster["master_epoch"], 9);

    send_agent(&mut core, 5, "pi", &AgentMsg::Register(info("pi")));
    let out = publish(&mut p, &mut core, 5);
    let agent = out["bramble/v1/status/agent/pi"].as_ref().unwrap();
    assert_eq!(agent["state"], "online");
    assert_eq!(agent["cpu_millis_total"], 4_000);
    assert_eq!(agent["cpu_millis_free"], 4_000);
    assert_eq!(agent["attributes"]["sensor"], "bme280");
    assert_eq!(agent["soc_temp_c"], Value::Null);
    assert_eq!(out[CLUSTER_TOPIC].as_ref().unwrap()["agents_online"], 1);

    assert!(publish(&mut p, &mut core, 6).is_empty(), "nothing changed");
    assert!(
        publish(&mut p, &mut core, 60_000).is_empty(),
        "time alone changes nothing"
    );
}

#[test]
fn a_report_with_a_new_temperature_republishes_only_that_agent() {
    let (mut core, mut p, _, _) = cluster(Config::default());
    let report = ResourceReport {
        free: Resources::new(4_000, 4_000, 0),
        running_tasks: 0,
        soc_temp_decidegrees: 481,
        throttled: 0,
    };
    send_agent(&mut core, 1_100, "pi", &AgentMsg::Report(report));
    let out = publish(&mut p, &mut core, 1_100);
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["bramble/v1/status/agent/pi"]
    );
    assert_eq!(
        out["bramble/v1/status/agent/pi"].as_ref().unwrap()["soc_temp_c"],
        48.1
    );
    send_agent(&mut core, 1_200, "pi", &AgentMsg::Report(report));
    assert!(
        publish(&mut p, &mut core, 1_200).is_empty(),
        "the same report again"
    );
}

#[test]
fn an_offer_is_published_with_its_wall_clock_time_and_cleared_when_accepted() {
    let (mut core, mut p, fid, offer) = cluster(Config::default());
    let topic = status::offer_topic(offer.offer_id);
    let published: BTreeMap<&str, &[u8]> = p.published().collect();
    let json: Value = serde_json::from_slice(published[topic.as_str()]).unwrap();
    assert_eq!(json["since"], WALL + 1_000);
    assert_eq!(json["framework_id"], fid.as_str());
    assert_eq!(json["agent_id"], "pi");
    assert_eq!(json["cpu_millis"], 4_000);

    launch(&mut core, 1_500, &offer, &["t1"]);
    let out = publish(&mut p, &mut core, 1_500);
    assert_eq!(out[&topic], None, "the answered offer is cleared");
    let task = out[&status::task_topic(&fid, "t1")].as_ref().unwrap();
    assert_eq!(task["state"], "staging");
    assert_eq!(task["agent_id"], "pi");
    assert_eq!(task["cpu_millis"], 500);
    let agent = out["bramble/v1/status/agent/pi"].as_ref().unwrap();
    assert_eq!(agent["cpu_millis_used"], 500);
    assert_eq!(agent["running_tasks"], 1);
    assert_eq!(agent["task_ids"], serde_json::json!([format!("{fid}/t1")]));
    let framework = out[&status::framework_topic(&fid)].as_ref().unwrap();
    assert_eq!(framework["tasks"]["staging"], 1);
    assert_eq!(framework["connected"], true);
    assert_eq!(
        out[CLUSTER_TOPIC].as_ref().unwrap()["offers_outstanding"],
        0
    );
}

#[test]
fn a_rescinded_offer_is_cleared() {
    let config = Config {
        offer_timeout_ms: 2_000,
        ..Config::default()
    };
    let (mut core, mut p, _, offer) = cluster(config);
    core.handle_timeout(3_000);
    drain(&mut core);
    let out = publish(&mut p, &mut core, 3_000);
    assert_eq!(out[&status::offer_topic(offer.offer_id)], None);
}

#[test]
fn a_finished_task_keeps_its_topic_with_its_exit_code_and_counts() {
    let (mut core, mut p, fid, offer) = cluster(Config::default());
    launch(&mut core, 1_500, &offer, &["t1"]);
    send_agent(
        &mut core,
        1_600,
        "pi",
        &status_msg(&fid, "t1", 1, TaskState::Running, Reason::None),
    );
    drain(&mut core);
    let out = publish(&mut p, &mut core, 1_600);
    assert_eq!(
        out[&status::task_topic(&fid, "t1")].as_ref().unwrap()["state"],
        "running"
    );

    let exited = Reason::Exited { code: 3 };
    send_agent(
        &mut core,
        1_700,
        "pi",
        &status_msg(&fid, "t1", 2, TaskState::Failed, exited),
    );
    drain(&mut core);
    let out = publish(&mut p, &mut core, 1_700);
    let task = out[&status::task_topic(&fid, "t1")].as_ref().unwrap();
    assert_eq!(task["state"], "failed");
    assert_eq!(task["exit_code"], 3);
    assert_eq!(task["reason"], "exited");
    assert_eq!(task["message"], "done");
    assert_eq!(task["updated"], WALL + 1_700);
    assert_eq!(
        task["cpu_millis"], 500,
        "the resources it held are remembered"
    );
    let framework = out[&status::framework_topic(&fid)].as_ref().unwrap();
    assert_eq!(framework["tasks"]["failed"], 1);
    assert_eq!(framework["tasks"]["running"], 0);
    assert_eq!(
        out["bramble/v1/status/agent/pi"].as_ref().unwrap()["running_tasks"],
        0
    );

    // The agent resends the ending (at least once): nothing changes.
    send_agent(
        &mut core,
        1_800,
        "pi",
        &status_msg(&fid, "t1", 2, TaskState::Failed, exited),
    );
    drain(&mut core);
    assert!(publish(&mut p, &mut core, 1_800).is_empty());
}

#[test]
fn only_the_latest_ended_tasks_of_a_framework_stay_published() {
    let (mut core, mut p, fid, mut offer) = cluster(Config::default());
    let n = ENDED_TASKS_KEPT + 2;
    let mut now = 2_000;
    for i in 0..n {
        let tid = format!("t{i}");
        launch(&mut core, now, &offer, &[&tid]);
        let exited = Reason::Exited { code: 0 };
        send_agent(
            &mut core,
            now,
            "pi",
            &status_msg(&fid, &tid, i as u32 + 1, TaskState::Finished, exited),
        );
        drain(&mut core);
        publish(&mut p, &mut core, now);
        now += 1_000;
        core.handle_timeout(now);
        let (offers, _) = drain(&mut core);
        offer = offers
            .into_iter()
            .next()
            .expect("the agent is offered again");
    }
    publish(&mut p, &mut core, now);
    let tasks: Vec<&str> = p
        .published()
        .map(|(t, _)| t)
        .filter(|t| t.starts_with("bramble/v1/status/task/"))
        .collect();
    assert_eq!(tasks.len(), ENDED_TASKS_KEPT);
    assert!(!tasks.contains(&status::task_topic(&fid, "t0").as_str()));
    assert!(!tasks.contains(&status::task_topic(&fid, "t1").as_str()));
    let framework: BTreeMap<&str, &[u8]> = p.published().collect();
    let framework: Value =
        serde_json::from_slice(framework[status::framework_topic(&fid).as_str()]).unwrap();
    assert_eq!(
        framework["tasks"]["finished"], n as u64,
        "the counts include them all"
    );
}

#[test]
fn a_lost_agent_shows_offline_then_its_topics_go_and_its_tasks_are_lost() {
    let config = Config {
        ha_discovery: true,
        ..Config::default()
    };
    let gc = config.unreachable_gc_ms;
    let (mut core, mut p, fid, offer) = cluster(config);
    launch(&mut core, 1_500, &offer, &["t1"]);
    publish(&mut p, &mut core, 1_500);

    send_agent(&mut core, 2_000, "pi", &AgentMsg::Gone { connection: 0 });
    drain(&mut core);
    let out = publish(&mut p, &mut core, 2_000);
    assert_eq!(
        out["bramble/v1/status/agent/pi"].as_ref().unwrap()["state"],
        "offline"
    );
    assert_eq!(
        out[&status::task_topic(&fid, "t1")].as_ref().unwrap()["state"],
        "unreachable"
    );
    let cluster = out[CLUSTER_TOPIC].as_ref().unwrap();
    assert_eq!(
        (
            cluster["agents_online"].clone(),
            cluster["agents_offline"].clone()
        ),
        (0.into(), 1.into())
    );

    core.handle_timeout(2_000 + gc + 10_000);
    drain(&mut core);
    let out = publish(&mut p, &mut core, 2_000 + gc + 10_000);
    assert_eq!(
        out["bramble/v1/status/agent/pi"], None,
        "the removed agent is cleared"
    );
    let task = out[&status::task_topic(&fid, "t1")].as_ref().unwrap();
    assert_eq!(task["state"], "lost");
    for object in ["cpu_used", "mem_used", "running_tasks", "soc_temp"] {
        let topic = format!("homeassistant/sensor/bramble_pi/{object}/config");
        assert_eq!(out[&topic], None, "{topic} is cleared");
    }
}

#[test]
fn a_torn_down_framework_is_cleared_with_its_tasks() {
    let (mut core, mut p, fid, offer) = cluster(Config::default());
    launch(&mut core, 1_500, &offer, &["t1"]);
    publish(&mut p, &mut core, 1_500);
    call(&mut core, 2_000, Call::Teardown);
    drain(&mut core);
    let out = publish(&mut p, &mut core, 2_000);
    assert_eq!(out[&status::framework_topic(&fid)], None);
    assert_eq!(out[&status::task_topic(&fid, "t1")], None);
    assert!(p.published().all(|(t, _)| !t.contains(&fid)));
}

#[test]
fn home_assistant_discovery_configs_name_the_state_topic_device_and_availability() {
    let config = Config {
        ha_discovery: true,
        ha_prefix: "ha".into(),
        ..Config::default()
    };
    let (_, p, _, _) = cluster(config);
    let published: BTreeMap<&str, &[u8]> = p.published().collect();
    for object in ["cpu_used", "mem_used", "running_tasks", "soc_temp"] {
        let topic = format!("ha/sensor/bramble_pi/{object}/config");
        let c: Value = serde_json::from_slice(published[topic.as_str()]).unwrap();
        assert!(c["name"].is_string(), "{topic}: name");
        assert_eq!(c["unique_id"], format!("bramble_pi_{object}"));
        assert_eq!(c["state_topic"], "bramble/v1/status/agent/pi");
        assert!(c["value_template"]
            .as_str()
            .unwrap()
            .contains("value_json."));
        assert_eq!(c["availability_topic"], "bramble/v1/status/agent/pi");
        assert_eq!(c["availability_template"], "{{ value_json.state }}");
        assert_eq!(c["payload_available"], "online");
        assert_eq!(c["payload_not_available"], "offline");
        assert_eq!(c["device"]["identifiers"][0], "bramble_pi");
        assert_eq!(c["device"]["manufacturer"], "Bramble");
        assert!(c["device"]["name"].is_string() && c["device"]["model"].is_string());
    }
    let temp: Value =
        serde_json::from_slice(published["ha/sensor/bramble_pi/soc_temp/config"]).unwrap();
    assert_eq!(temp["device_class"], "temperature");
    assert_eq!(temp["unit_of_measurement"], "°C");
    let total: Value =
        serde_json::from_slice(published["ha/sensor/bramble/agents_online/config"]).unwrap();
    assert_eq!(total["state_topic"], CLUSTER_TOPIC);
    assert_eq!(total["device"]["identifiers"][0], "bramble_cluster");
}

#[test]
fn without_the_switch_no_discovery_config_is_published() {
    let (_, p, _, _) = cluster(Config::default());
    assert!(p
        .published()
        .all(|(t, _)| t.starts_with(status::STATUS_PREFIX)));
}

#[test]
fn retained_topics_a_previous_master_left_are_cleared_after_the_grace_unless_published_again() {
    let config = Config {
        ha_discovery: true,
        ..Config::default()
    };
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    let found = [
        "bramble/v1/status/agent/pi",
        "bramble/v1/status/offer/99",
        "homeassistant/sensor/bramble_old/cpu_used/config",
        "homeassistant/sensor/bramble/cpu_used/config",
        "homeassistant/sensor/kitchen_lamp/power/config",
    ];
    p.clear_stale_at(found.iter().map(|t| t.to_string()), 10_000);
    publish(&mut p, &mut core, 0);
    send_agent(&mut core, 5_000, "pi", &AgentMsg::Register(info("pi")));
    let out = publish(&mut p, &mut core, 5_000);
    assert!(
        out.values().all(Option::is_some),
        "nothing cleared before the grace"
    );
    let out = publish(&mut p, &mut core, 10_000);
    let cleared: Vec<&str> = out
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        cleared,
        [
            "bramble/v1/status/offer/99",
            "homeassistant/sensor/bramble_old/cpu_used/config"
        ]
    );
    assert!(
        publish(&mut p, &mut core, 20_000).is_empty(),
        "cleared once"
    );
}

#[test]
fn protocol_md_lists_every_status_topic_retained_at_qos_1() {
    let doc = include_str!("../../../PROTOCOL.md");
    let patterns = [
        "bramble/v1/status/cluster",
        "bramble/v1/status/agent/{agent_id}",
        "bramble/v1/status/framework/{framework_id}",
        "bramble/v1/status/offer/{offer_id}",
        "bramble/v1/status/task/{framework_id}/{task_id}",
        "{prefix}/sensor/bramble_{agent}/{object}/config",
        "{prefix}/sensor/bramble/{object}/config",
    ];
    let samples = [
        CLUSTER_TOPIC.to_owned(),
        status::agent_topic("{agent_id}"),
        status::framework_topic("{framework_id}"),
        format!("{}offer/{{offer_id}}", status::STATUS_PREFIX),
        status::task_topic("{framework_id}", "{task_id}"),
        status::discovery::config_topic("{prefix}", "bramble_{agent}", "{object}"),
        status::discovery::config_topic("{prefix}", "bramble", "{object}"),
    ];
    for (pattern, from_code) in patterns.iter().zip(&samples) {
        assert_eq!(pattern, from_code, "the code's topic");
        let quoted = format!("`{pattern}`");
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.split('|').any(|c| c.trim() == quoted))
            .unwrap_or_else(|| panic!("PROTOCOL.md has no table row for {quoted}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], "master → dashboard", "direction of {pattern}");
        assert_eq!(
            (cells[3], cells[4]),
            ("1", "yes"),
            "QoS and retain of {pattern}"
        );
    }
}

#[test]
fn the_json_examples_in_protocol_md_have_exactly_the_fields_the_master_publishes() {
    let doc = include_str!("../../../PROTOCOL.md");
    let section = &doc[doc.find("## Status topics").unwrap()..];
    let examples: Vec<Value> = section
        .split("```json\n")
        .skip(1)
        .map(|b| serde_json::from_str(&b[..b.find("```").unwrap()]).expect("valid JSON example"))
        .collect();
    assert_eq!(
        examples.len(),
        6,
        "cluster, agent, framework, offer, task, discovery"
    );

    let config = Config {
        ha_discovery: true,
        ..Config::default()
    };
    let (mut core, mut p, fid, offer) = cluster(config);
    let keep = status::offer_topic(offer.offer_id);
    let published: BTreeMap<String, Value> = p
        .published()
        .map(|(t, b)| (t.to_owned(), serde_json::from_slice(b).unwrap()))
        .collect();
    launch(&mut core, 1_500, &offer, &["t1"]);
    publish(&mut p, &mut core, 1_500);
    let task: Value = p
        .published()
        .find(|(t, _)| *t == status::task_topic(&fid, "t1"))
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .unwrap();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let real = [
        &published[CLUSTER_TOPIC],
        &published["bramble/v1/status/agent/pi"],
        &published[&status::framework_topic(&fid)],
        &published[&keep],
        &task,
        &published["homeassistant/sensor/bramble_pi/soc_temp/config"],
    ];
    for (example, real) in examples.iter().zip(real) {
        assert_eq!(keys(example), keys(real), "example {example}");
    }
}

/// The incremental publisher agrees with one that looks at everything afresh: the same agent
/// topics byte for byte, the same offers, frameworks and live tasks.
fn assert_same_as_a_fresh_look(p: &StatusPublisher, core: &MasterCore, config: &Config) {
    let mut fresh = StatusPublisher::new(config, WALL);
    let mut copy = core.clone();
    fresh.update(&mut copy, 0);
    let mine: BTreeMap<&str, &[u8]> = p.published().collect();
    let theirs: BTreeMap<&str, &[u8]> = fresh.published().collect();
    let agents = |m: &BTreeMap<&str, &[u8]>| -> Vec<(String, Vec<u8>)> {
        m.iter()
            .filter(|(t, _)| t.contains("/agent/") || t.starts_with("homeassistant/"))
            .map(|(t, b)| (t.to_string(), b.to_vec()))
            .collect()
    };
    assert_eq!(agents(&mine), agents(&theirs));
    let live = |m: &BTreeMap<&str, &[u8]>| -> Vec<String> {
        m.iter()
            .filter(|(t, b)| {
                let v: Value = serde_json::from_slice(b).unwrap();
                !t.contains("/task/")
                    || !["finished", "failed", "killed", "lost", "error"]
                        .contains(&v["state"].as_str().unwrap())
            })
            .map(|(t, _)| t.to_string())
            .collect()
    };
    assert_eq!(live(&mine), live(&theirs));
}

#[test]
fn publishing_only_what_changed_agrees_with_looking_at_everything() {
    let config = Config {
        ha_discovery: true,
        offer_timeout_ms: 5_000,
        ..Config::default()
    };
    let (mut core, mut p, fid, offer) = cluster(config.clone());
    assert_same_as_a_fresh_look(&p, &core, &config);
    send_agent(&mut core, 1_100, "pi2", &AgentMsg::Register(info("pi2")));
    drain(&mut core);
    publish(&mut p, &mut core, 1_100);
    assert_same_as_a_fresh_look(&p, &core, &config);
    launch(&mut core, 1_200, &offer, &["t1", "t2"]);
    publish(&mut p, &mut core, 1_200);
    assert_same_as_a_fresh_look(&p, &core, &config);
    for (i, (tid, state)) in [("t1", TaskState::Running), ("t2", TaskState::Finished)]
        .into_iter()
        .enumerate()
    {
        let reason = Reason::Exited { code: 0 };
        send_agent(
            &mut core,
            1_300,
            "pi",
            &status_msg(&fid, tid, i as u32 + 1, state, reason),
        );
        drain(&mut core);
        publish(&mut p, &mut core, 1_300);
        assert_same_as_a_fresh_look(&p, &core, &config);
    }
    let mut now = 1_300;
    for _ in 0..8 {
        now += 1_000;
        core.handle_timeout(now);
        drain(&mut core);
        publish(&mut p, &mut core, now);
        assert_same_as_a_fresh_look(&p, &core, &config);
    }
    send_agent(&mut core, now, "pi", &AgentMsg::Gone { connection: 0 });
    drain(&mut core);
    publish(&mut p, &mut core, now);
    assert_same_as_a_fresh_look(&p, &core, &config);
    call(&mut core, now, Call::Suppress);
    call(&mut core, now, Call::Gone { connection: 0 });
    drain(&mut core);
    publish(&mut p, &mut core, now);
    assert_same_as_a_fresh_look(&p, &core, &config);
    core.handle_timeout(now + 600_000);
    drain(&mut core);
    publish(&mut p, &mut core, now + 600_000);
    assert_same_as_a_fresh_look(&p, &core, &config);
    assert!(p
        .published()
        .all(|(t, _)| t != "bramble/v1/status/agent/pi" && !t.contains(&fid)));
}

/// A signed operator command, made about wall-clock second 1,000,000 with the anonymous key (the
/// test cluster runs without credentials).
fn signed(json: &str) -> Vec<u8> {
    bramble_master_core::master::sign_operator_command(
        json.as_bytes(),
        &agent_nostd_core::auth::MessageKey::anonymous(),
    )
}

const OPERATOR_WALL: u64 = 1_000_000;

#[test]
fn an_operator_kill_is_sent_to_the_tasks_agent_and_garbage_is_counted_and_dropped() {
    use bramble_master_core::master::{OperatorDrop, OPERATOR_KILL_TOPIC};
    use bramble_master_core::RecvError;
    let (mut core, _, fid, offer) = cluster(Config::default());
    launch(&mut core, 1_500, &offer, &["t1"]);
    let kill = format!(
        r#"{{"framework_id":"{fid}","task_id":"t1","grace_ms":2000,"operator":"operator-admin","time":{OPERATOR_WALL}}}"#
    );
    // Unsigned, as any broker client could send it: refused.
    assert_eq!(
        core.handle_operator_bytes(1_550, OPERATOR_WALL, OPERATOR_KILL_TOPIC, kill.as_bytes()),
        Err(RecvError::Operator(OperatorDrop::Unsigned))
    );
    assert!(core.poll_transmit().is_none());
    core.handle_operator_bytes(
        1_600,
        OPERATOR_WALL + 5,
        OPERATOR_KILL_TOPIC,
        &signed(&kill),
    )
    .unwrap();
    let kills: Vec<_> = std::iter::from_fn(|| core.poll_transmit())
        .filter_map(|t| match t.message {
            bramble_master_core::Outgoing::Agent(m) => match m.msg {
                agent_nostd_core::wire::MasterMsg::KillTask(k) => Some((t.topic, k)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].0, "bramble/v1/agent/pi/cmd");
    assert_eq!(
        (kills[0].1.task_id.as_str(), kills[0].1.grace_ms),
        ("t1", 2_000)
    );
    // The same command again: a replay.
    assert_eq!(
        core.handle_operator_bytes(
            1_650,
            OPERATOR_WALL + 6,
            OPERATOR_KILL_TOPIC,
            &signed(&kill)
        ),
        Err(RecvError::Operator(OperatorDrop::Replayed))
    );

    let malformed = core.stats().malformed;
    let nope = format!(r#"{{"operator":"operator-admin","time":{OPERATOR_WALL},"nope":1}}"#);
    assert_eq!(
        core.handle_operator_bytes(1_700, OPERATOR_WALL, OPERATOR_KILL_TOPIC, &signed(&nope)),
        Err(RecvError::OperatorDecode)
    );
    assert_eq!(core.stats().malformed, malformed + 1);
    let unknown = format!(
        r#"{{"framework_id":"{fid}","task_id":"nope","operator":"operator-admin","time":{OPERATOR_WALL}}}"#
    );
    core.handle_operator_bytes(1_800, OPERATOR_WALL, OPERATOR_KILL_TOPIC, &signed(&unknown))
        .unwrap();
    assert!(core.poll_transmit().is_none(), "nothing to kill");
    assert_eq!(
        core.handle_operator_bytes(1_900, OPERATOR_WALL, "bramble/v1/operator/reboot", b"{}"),
        Err(RecvError::UnknownTopic)
    );
    let refused = core.stats().operator_commands_refused;
    assert_eq!(
        (
            refused.get(OperatorDrop::Unsigned),
            refused.get(OperatorDrop::Replayed)
        ),
        (1, 1)
    );
}

#[test]
fn a_signed_status_query_is_answered_from_the_publisher_and_sealed_for_the_operator_who_asked() {
    use bramble_master_core::master::{open_reply, OperatorDrop, QueryPage, OPERATOR_QUERY_TOPIC};
    use bramble_master_core::RecvError;
    let (mut core, _, fid, offer) = cluster(Config::default());
    launch(&mut core, 1_500, &offer, &["t1"]);
    let mut p = StatusPublisher::new(&Config::default(), 0);
    publish(&mut p, &mut core, 1_500);
    let query = format!(
        r#"{{"operator":"operator-admin","time":{OPERATOR_WALL},"reply_to":"cli-7","what":"tasks","limit":10}}"#
    );
    assert_eq!(
        core.handle_operator_bytes(1_550, OPERATOR_WALL, OPERATOR_QUERY_TOPIC, query.as_bytes()),
        Err(RecvError::Operator(OperatorDrop::Unsigned))
    );
    assert!(
        core.poll_query().is_none(),
        "an unsigned query is not answered"
    );
    let payload = signed(&query);
    core.handle_operator_bytes(1_600, OPERATOR_WALL, OPERATOR_QUERY_TOPIC, &payload)
        .unwrap();
    let q = core
        .poll_query()
        .expect("the signed query waits for its answer");
    assert_eq!(q.reply_topic(), "bramble/v1/operator/reply/cli-7");
    let reply = q.seal(&p.answer(&q));
    let request_tag = &payload[payload.len() - 8..];
    let key = agent_nostd_core::auth::MessageKey::anonymous();
    let json = open_reply(&reply, &key, request_tag).expect("sealed for the operator who asked");
    let page: QueryPage = serde_json::from_slice(json).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.next, None);
    assert_eq!(
        page.entries[0].0,
        format!("bramble/v1/status/task/{fid}/t1")
    );
    assert_eq!(page.entries[0].1["task_id"], "t1");

    let bad_reply_to = format!(
        r##"{{"operator":"operator-admin","time":{OPERATOR_WALL},"reply_to":"#","what":"all"}}"##
    );
    assert_eq!(
        core.handle_operator_bytes(
            1_700,
            OPERATOR_WALL,
            OPERATOR_QUERY_TOPIC,
            &signed(&bad_reply_to)
        ),
        Err(RecvError::OperatorDecode)
    );
    assert!(core.poll_query().is_none());
}

/// Runs the publisher and hands everything it published back to it, as the broker echoes it to
/// the master's `bramble/v1/status/#` subscription; returns the topics published.
fn publish_and_echo(p: &mut StatusPublisher, core: &mut MasterCore, now: u64) -> Vec<String> {
    p.update(core, now);
    let mut sent = Vec::new();
    while let Some(t) = p.poll_transmit() {
        sent.push(t);
    }
    for t in &sent {
        let seen = p.observe(&t.topic, &t.payload, now);
        assert!(
            matches!(seen, Observed::Own | Observed::NotStatus),
            "{}: {seen:?}",
            t.topic
        );
    }
    sent.into_iter().map(|t| t.topic).collect()
}

fn payload_of(p: &StatusPublisher, topic: &str) -> Vec<u8> {
    p.published()
        .find(|(t, _)| *t == topic)
        .map(|(_, v)| v.to_vec())
        .unwrap_or_else(|| panic!("{topic} is published"))
}

#[test]
fn garbage_retained_on_a_status_topic_the_master_owns_is_overwritten_with_its_value() {
    let (mut core, mut p, fid, offer) = cluster(Config::default());
    launch(&mut core, 1_100, &offer, &["t1"]);
    publish_and_echo(&mut p, &mut core, 1_100);
    let task = status::task_topic(&fid, "t1");
    let cluster_json = payload_of(&p, CLUSTER_TOPIC);
    let task_json = payload_of(&p, &task);

    assert_eq!(
        p.observe(CLUSTER_TOPIC, b"\x00garbage", 1_150),
        Observed::Repaired
    );
    assert_eq!(
        p.observe(&task, b"{\"not\": \"a task\"}", 1_150),
        Observed::Repaired
    );
    p.update(&mut core, 1_200);
    let mut out = Vec::new();
    while let Some(t) = p.poll_transmit() {
        out.push((t.topic, t.payload));
    }
    out.sort();
    let mut want = vec![(CLUSTER_TOPIC.to_owned(), cluster_json), (task, task_json)];
    want.sort();
    assert_eq!(out, want, "the master's own values, again");
    assert_eq!(p.repairs(), 2);

    // Their echoes end it: no loop.
    for (topic, payload) in &out {
        assert_eq!(p.observe(topic, payload, 1_250), Observed::Own);
    }
    assert!(publish_and_echo(&mut p, &mut core, 1_300).is_empty());
}

#[test]
fn a_deleted_retained_status_topic_is_published_again() {
    let (mut core, mut p, _, _) = cluster(Config::default());
    publish_and_echo(&mut p, &mut core, 1_000);
    assert_eq!(
        p.observe("bramble/v1/status/agent/pi", b"", 1_000),
        Observed::Repaired
    );
    assert_eq!(
        publish_and_echo(&mut p, &mut core, 1_001),
        ["bramble/v1/status/agent/pi"]
    );
}

#[test]
fn the_masters_own_echoes_never_make_it_publish_again() {
    let (mut core, mut p, _, _) = cluster(Config::default());
    publish_and_echo(&mut p, &mut core, 1_000);
    // Two publishes of the agent topic on their way before either echo arrives.
    let mut sent = Vec::new();
    for (now, temp) in [(1_100, 410), (1_200, 420)] {
        let report = ResourceReport {
            free: Resources::new(4_000, 4_000, 0),
            running_tasks: 0,
            soc_temp_decidegrees: temp,
            throttled: 0,
        };
        send_agent(&mut core, now, "pi", &AgentMsg::Report(report));
        p.update(&mut core, now);
        while let Some(t) = p.poll_transmit() {
            sent.push(t);
        }
    }
    for t in &sent {
        assert_eq!(
            p.observe(&t.topic, &t.payload, 1_250),
            Observed::Own,
            "{}",
            t.topic
        );
    }
    assert_eq!(sent.len(), 2);
    p.update(&mut core, 1_300);
    assert!(p.poll_transmit().is_none(), "echoes alone publish nothing");
    assert_eq!(p.repairs(), 0);
}

#[test]
fn garbage_that_an_own_publish_on_its_way_will_overwrite_is_not_repaired() {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    p.update(&mut core, 0);
    let mut sent = Vec::new();
    while let Some(t) = p.poll_transmit() {
        sent.push(t);
    }
    // The cluster summary is on its way: garbage the broker took before it is overwritten by it.
    assert_eq!(
        p.observe(CLUSTER_TOPIC, b"garbage", 0),
        Observed::Overwritten
    );
    for t in &sent {
        assert_eq!(p.observe(&t.topic, &t.payload, 0), Observed::Own);
    }
    p.update(&mut core, 1);
    assert!(p.poll_transmit().is_none());
    assert_eq!(p.repairs(), 0);
}

#[test]
fn status_topics_the_master_does_not_own_are_left_alone() {
    let (mut core, mut p, _, _) = cluster(Config::default());
    publish_and_echo(&mut p, &mut core, 1_000);
    assert_eq!(
        p.observe("bramble/v1/status/agent/nobody", b"garbage", 1_000),
        Observed::NotOwned
    );
    assert_eq!(
        p.observe("bramble/v1/master/hello", b"garbage", 1_000),
        Observed::NotStatus
    );
    assert!(publish_and_echo(&mut p, &mut core, 1_001).is_empty());
}

#[test]
fn repairs_are_bounded_per_second_and_the_rest_follow_in_the_next() {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    let agents: Vec<String> = (0..150).map(|i| format!("pi-{i}")).collect();
    for a in &agents {
        send_agent(&mut core, 0, a, &AgentMsg::Register(info(a)));
    }
    publish_and_echo(&mut p, &mut core, 0);
    for a in &agents {
        assert_eq!(
            p.observe(&status::agent_topic(a), b"garbage", 100),
            Observed::Repaired
        );
    }
    let first = publish_and_echo(&mut p, &mut core, 500);
    assert_eq!(first.len(), status::MAX_REPAIRS_PER_SECOND as usize);
    assert!(
        publish_and_echo(&mut p, &mut core, 900).is_empty(),
        "same second"
    );
    let second = publish_and_echo(&mut p, &mut core, 1_000);
    assert_eq!(second.len(), 50);
    assert_eq!(p.repairs(), 150);
}

#[test]
fn a_publish_never_seen_back_stops_shielding_its_topic_after_the_echo_timeout() {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    p.update(&mut core, 0);
    while p.poll_transmit().is_some() {} // lost: never echoed
    assert_eq!(
        p.observe(CLUSTER_TOPIC, b"garbage", 5_000),
        Observed::Overwritten
    );
    let late = status::ECHO_TIMEOUT_MS + 1;
    assert_eq!(
        p.observe(CLUSTER_TOPIC, b"garbage", late),
        Observed::Repaired
    );
    p.update(&mut core, late);
    let repaired = p.poll_transmit().expect("the cluster summary again");
    assert_eq!(repaired.topic, CLUSTER_TOPIC);
    assert!(p.poll_transmit().is_none());
}
