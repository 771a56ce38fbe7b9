//! The status shapes read back what the publisher writes: every payload it publishes parses as
//! its topic's shape and serializes again to the same bytes, and the examples in PROTOCOL.md are
//! those shapes, byte for byte once their line breaks are taken out.

use agent_nostd_core::ids::id;
use agent_nostd_core::wire::{AgentInfo, AgentMsg, Reason, ResourceReport, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::status::{
    AgentStatus, ClusterStatus, Connection, FrameworkStatus, Liveness, MasterStatus, OfferStatus,
    StatusPublisher, TaskStatus, CLUSTER_TOPIC, MASTER_TOPIC, STATUS_PREFIX,
};
use bramble_master_core::{Config, MasterCore};
use bramble_proto::{Accept, Call, Register, TaskInfo};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod support;

use support::{call, drain, send_agent, status_msg};

const WALL: u64 = 1_700_000_000_000;

/// Parses `payload` as `T` and serializes it again: the same bytes.
fn round_trip<T: Serialize + DeserializeOwned>(topic: &str, payload: &[u8]) -> T {
    let typed: T = serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("{topic}: {e}: {}", String::from_utf8_lossy(payload)));
    assert_eq!(
        String::from_utf8(serde_json::to_vec(&typed).unwrap()).unwrap(),
        String::from_utf8_lossy(payload),
        "{topic} serializes back to the bytes published"
    );
    typed
}

/// What the round trips saw: one flag per case that must come up at least once.
#[derive(Debug, Default)]
struct Seen {
    cluster: bool,
    agent_with_temperature: bool,
    framework_failing_over: bool,
    offer: bool,
    task_exited: bool,
    task_signaled: bool,
    task_live: bool,
}

impl Seen {
    fn check(&mut self, topic: &str, payload: &[u8]) {
        let rest = topic.strip_prefix(STATUS_PREFIX).expect("a status topic");
        match rest.split('/').next() {
            _ if topic == CLUSTER_TOPIC => {
                round_trip::<ClusterStatus>(topic, payload);
                self.cluster = true;
            }
            _ if topic == MASTER_TOPIC => {
                let m: MasterStatus = round_trip(topic, payload);
                assert_eq!(
                    m.state,
                    Liveness::Online,
                    "a running master says it is online"
                );
            }
            Some("agent") => {
                let a: AgentStatus = round_trip(topic, payload);
                self.agent_with_temperature |= a.soc_temp_c.is_some();
            }
            Some("framework") => {
                let f: FrameworkStatus = round_trip(topic, payload);
                self.framework_failing_over |=
                    f.state == Connection::Disconnected && f.failover_deadline.is_some();
            }
            Some("offer") => {
                round_trip::<OfferStatus>(topic, payload);
                self.offer = true;
            }
            Some("task") => {
                let t: TaskStatus = round_trip(topic, payload);
                self.task_exited |= t.exit_code.is_some();
                self.task_signaled |= t.signal.is_some();
                self.task_live |= !t.ended();
            }
            other => panic!("a topic of no known kind: {other:?}"),
        }
    }
}

#[test]
fn every_payload_the_publisher_sends_parses_as_its_shape_and_serializes_back_to_the_same_bytes() {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL);
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    let mut seen = Seen::default();
    let mut publish = |p: &mut StatusPublisher, core: &mut MasterCore, now: u64| {
        p.update(core, now);
        while let Some(t) = p.poll_transmit() {
            if !t.payload.is_empty() {
                seen.check(&t.topic, &t.payload);
            }
        }
    };

    let mut info = AgentInfo {
        agent_id: id("pi").unwrap(),
        hostname: heapless::String::try_from("pi.lan").unwrap(),
        arch: heapless::String::try_from("aarch64").unwrap(),
        board: heapless::String::new(),
        total: Resources::new(4_000, 4_096, 64),
        attributes: heapless::Vec::new(),
        connection: 0,
        boot: 1,
        seq: 0,
        to_epoch: 0,
    };
    let _ = info.attributes.push(agent_nostd_core::wire::Attribute {
        key: heapless::String::try_from("room").unwrap(),
        value: heapless::String::try_from("attic").unwrap(),
    });
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(info));
    let mut register = Register::new("fw");
    register.failover_timeout_ms = 60_000;
    call(&mut core, 0, Call::Register(register));
    let (_, fid) = drain(&mut core);
    let fid = fid.expect("registered");
    core.handle_timeout(1_000);
    let (offers, _) = drain(&mut core);
    publish(&mut p, &mut core, 1_000);

    let tasks = ["ok", "bad", "long"]
        .iter()
        .map(|t| TaskInfo::new(t, &["/bin/true"], Resources::new(500, 64, 1)))
        .collect();
    let accept = Accept {
        offer_id: offers[0].offer_id,
        tasks,
    };
    call(&mut core, 1_500, Call::Accept(accept));
    drain(&mut core);
    let report = ResourceReport {
        free: Resources::new(2_500, 3_900, 60),
        running_tasks: 3,
        soc_temp_decidegrees: 481,
        throttled: 0,
    };
    send_agent(&mut core, 1_600, "pi", &AgentMsg::Report(report));
    let exited = Reason::Exited { code: 3 };
    send_agent(
        &mut core,
        1_600,
        "pi",
        &status_msg(&fid, "ok", 1, TaskState::Failed, exited),
    );
    let signaled = Reason::Signaled { signal: 9 };
    send_agent(
        &mut core,
        1_600,
        "pi",
        &status_msg(&fid, "bad", 1, TaskState::Killed, signaled),
    );
    let running = status_msg(&fid, "long", 1, TaskState::Running, Reason::None);
    send_agent(&mut core, 1_600, "pi", &running);
    drain(&mut core);
    publish(&mut p, &mut core, 1_600);
    core.handle_timeout(3_000);
    drain(&mut core);
    publish(&mut p, &mut core, 3_000);

    call(&mut core, 4_000, Call::Gone { connection: 0 });
    drain(&mut core);
    publish(&mut p, &mut core, 4_000);

    assert!(
        seen.cluster
            && seen.agent_with_temperature
            && seen.framework_failing_over
            && seen.offer
            && seen.task_exited
            && seen.task_signaled
            && seen.task_live,
        "every case came up: {seen:?}"
    );
}

#[test]
fn the_json_examples_in_protocol_md_are_the_shapes_byte_for_byte() {
    let doc = include_str!("../../../PROTOCOL.md");
    let section = &doc[doc.find("## Status topics").unwrap()..];
    let examples: Vec<String> = section
        .split("```json\n")
        .skip(1)
        .map(|b| {
            b[..b.find("```").unwrap()]
                .replace("\n ", "")
                .replace('\n', "")
        })
        .collect();
    let [cluster, agent, framework, offer, task, _discovery] = examples.as_slice() else {
        panic!("six examples: cluster, agent, framework, offer, task, discovery");
    };
    round_trip::<ClusterStatus>("cluster", cluster.as_bytes());
    round_trip::<AgentStatus>("agent", agent.as_bytes());
    round_trip::<FrameworkStatus>("framework", framework.as_bytes());
    round_trip::<OfferStatus>("offer", offer.as_bytes());
    round_trip::<TaskStatus>("task", task.as_bytes());
}

#[test]
fn a_payload_with_an_unknown_task_state_or_a_missing_field_does_not_parse() {
    let task = r#"{"framework_id":"f","task_id":"t","agent_id":"a","state":"sleeping",
        "cpu_millis":1,"mem_mib":1,"disk_mib":0,"reason":"none","exit_code":null,"signal":null,
        "message":"","updated":0}"#;
    let err = serde_json::from_str::<TaskStatus>(task).unwrap_err();
    assert!(err.to_string().contains("sleeping"), "{err}");
    let offer = r#"{"offer_id":1,"framework_id":"f","agent_id":"a"}"#;
    assert!(serde_json::from_str::<OfferStatus>(offer).is_err());
}

#[test]
fn the_availability_topic_lists_the_masters_ready_to_take_over_and_is_published_again_when_they_change(
) {
    let config = Config::default();
    let mut p = StatusPublisher::new(&config, WALL).with_master_name("alpha");
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    StatusPublisher::attach(&mut core);
    let master_status = |p: &mut StatusPublisher, core: &mut MasterCore, now: u64| {
        p.update(core, now);
        let mut last = None;
        while let Some(t) = p.poll_transmit() {
            if t.topic == MASTER_TOPIC {
                last = Some(round_trip::<MasterStatus>(&t.topic, &t.payload));
            }
        }
        last
    };
    let first = master_status(&mut p, &mut core, 0).expect("published at start");
    assert!(first.followers.is_empty());
    assert_eq!(
        master_status(&mut p, &mut core, 1),
        None,
        "no change, no publish"
    );
    let beta = bramble_master_core::status::FollowerStatus {
        name: "beta".into(),
        standby: true,
    };
    p.set_followers(vec![beta.clone()]);
    let listed = master_status(&mut p, &mut core, 2).expect("published again");
    assert_eq!(listed.followers, vec![beta.clone()]);
    assert_eq!(listed.name.as_deref(), Some("alpha"));
    p.set_followers(vec![beta]);
    assert_eq!(
        master_status(&mut p, &mut core, 3),
        None,
        "the same list, no publish"
    );
    p.set_followers(Vec::new());
    let gone = master_status(&mut p, &mut core, 4).expect("published when the standby left");
    assert!(gone.followers.is_empty());
}
