//! Sample messages shared by the wire tests: one typical and one maximal of each kind.

#![allow(dead_code)]

use agent_nostd_core::ids::id;
use agent_nostd_core::wire::*;
use agent_nostd_core::Resources;
use heapless::{String, Vec};

pub fn s<const N: usize>(text: &str) -> String<N, u8> {
    String::try_from(text).unwrap()
}

/// A string of exactly N bytes.
pub fn full<const N: usize>(c: char) -> String<N, u8> {
    let mut out = String::new();
    while out.push(c).is_ok() {}
    out
}

pub fn info() -> AgentInfo {
    let mut attributes = Vec::new();
    attributes
        .push(Attribute {
            key: s("sensor"),
            value: s("bme280"),
        })
        .unwrap();
    AgentInfo {
        agent_id: id("pi4").unwrap(),
        hostname: s("pi4"),
        arch: s("aarch64"),
        board: s("Raspberry Pi 4"),
        total: Resources::new(4000, 3800, 20000),
        attributes,
        connection: 7,
        boot: 1,
        seq: 1,
        to_epoch: 0,
    }
}

pub fn max_info() -> AgentInfo {
    let mut attributes = Vec::new();
    while attributes
        .push(Attribute {
            key: full('k'),
            value: full('v'),
        })
        .is_ok()
    {}
    AgentInfo {
        agent_id: full('a'),
        hostname: full('h'),
        arch: full('x'),
        board: full('b'),
        total: max_resources(),
        attributes,
        connection: u32::MAX,
        boot: u32::MAX,
        seq: u32::MAX,
        to_epoch: u64::MAX,
    }
}

pub fn max_resources() -> Resources {
    Resources::new(u32::MAX, u32::MAX, u32::MAX)
}

pub fn typical_agent_msgs() -> [(&'static str, AgentMsg); 6] {
    let mut tasks = Vec::new();
    tasks
        .push(TaskReport {
            framework_id: id("fw-1").unwrap(),
            task_id: id("t1").unwrap(),
            resources: Resources::new(500, 64, 0),
            state: TaskState::Running,
        })
        .unwrap();
    [
        ("register", AgentMsg::Register(info())),
        (
            "reregister",
            AgentMsg::ReRegister(ReRegister {
                info: info(),
                last_master_epoch: 7,
                down_seq: 12,
                tasks,
            }),
        ),
        (
            "report",
            AgentMsg::Report(ResourceReport {
                free: Resources::new(3500, 3000, 19000),
                running_tasks: 1,
                soc_temp_decidegrees: 523,
                throttled: 0,
            }),
        ),
        (
            "status",
            AgentMsg::Status(StatusUpdate {
                framework_id: id("fw-1").unwrap(),
                task_id: id("t1").unwrap(),
                update_id: 3,
                state: TaskState::Failed,
                reason: Reason::Exited { code: 2 },
                message: s("exited with code 2"),
            }),
        ),
        ("pong", AgentMsg::Pong { seq: 300 }),
        ("gone", AgentMsg::Gone { connection: 7 }),
    ]
}

pub fn max_agent_msgs() -> [(&'static str, AgentMsg); 6] {
    let mut tasks = Vec::new();
    while tasks
        .push(TaskReport {
            framework_id: full('f'),
            task_id: full('t'),
            resources: max_resources(),
            state: TaskState::Unreachable,
        })
        .is_ok()
    {}
    [
        ("register", AgentMsg::Register(max_info())),
        (
            "reregister",
            AgentMsg::ReRegister(ReRegister {
                info: max_info(),
                last_master_epoch: u64::MAX,
                down_seq: u32::MAX,
                tasks,
            }),
        ),
        (
            "report",
            AgentMsg::Report(ResourceReport {
                free: max_resources(),
                running_tasks: u8::MAX,
                soc_temp_decidegrees: i16::MIN + 1,
                throttled: u8::MAX,
            }),
        ),
        (
            "status",
            AgentMsg::Status(StatusUpdate {
                framework_id: full('f'),
                task_id: full('t'),
                update_id: u32::MAX,
                state: TaskState::Unreachable,
                reason: Reason::Signaled { signal: i32::MIN },
                message: full('m'),
            }),
        ),
        ("pong", AgentMsg::Pong { seq: u32::MAX }),
        (
            "gone",
            AgentMsg::Gone {
                connection: u32::MAX,
            },
        ),
    ]
}

pub fn run_task() -> RunTask {
    let mut argv = Vec::new();
    argv.push(s("echo")).unwrap();
    argv.push(s("hi")).unwrap();
    let mut env = Vec::new();
    env.push(EnvVar {
        key: s("X"),
        value: s("1"),
    })
    .unwrap();
    RunTask {
        framework_id: id("fw-1").unwrap(),
        task_id: id("t1").unwrap(),
        argv,
        env,
        resources: Resources::new(500, 64, 0),
        pids_max: 32,
        artifacts: Vec::new(),
    }
}

pub fn typical_master_msgs() -> [(&'static str, MasterMsg); 7] {
    [
        ("hello", MasterMsg::Hello),
        (
            "register_ack",
            MasterMsg::RegisterAck(RegisterAck {
                agent_id: id("pi4").unwrap(),
            }),
        ),
        ("run_task", MasterMsg::RunTask(run_task())),
        (
            "kill_task",
            MasterMsg::KillTask(KillTask {
                framework_id: id("fw-1").unwrap(),
                task_id: id("t1").unwrap(),
                grace_ms: 1000,
            }),
        ),
        (
            "status_ack",
            MasterMsg::StatusAck(StatusAck {
                framework_id: id("fw-1").unwrap(),
                task_id: id("t1").unwrap(),
                update_id: 3,
            }),
        ),
        ("ping", MasterMsg::Ping { seq: 300 }),
        ("reregister_request", MasterMsg::ReRegisterRequest),
    ]
}

pub fn max_master_msgs() -> [(&'static str, MasterMsg); 7] {
    let mut argv = Vec::new();
    while argv.push(full('a')).is_ok() {}
    let mut env = Vec::new();
    while env
        .push(EnvVar {
            key: full('k'),
            value: full('v'),
        })
        .is_ok()
    {}
    let mut artifacts = Vec::new();
    while artifacts
        .push(Artifact {
            url: full('u'),
            sha256: [0xFF; 32],
            executable: true,
            name: full('n'),
        })
        .is_ok()
    {}
    [
        ("hello", MasterMsg::Hello),
        (
            "register_ack",
            MasterMsg::RegisterAck(RegisterAck {
                agent_id: full('a'),
            }),
        ),
        (
            "run_task",
            MasterMsg::RunTask(RunTask {
                framework_id: full('f'),
                task_id: full('t'),
                argv,
                env,
                resources: max_resources(),
                pids_max: u32::MAX,
                artifacts,
            }),
        ),
        (
            "kill_task",
            MasterMsg::KillTask(KillTask {
                framework_id: full('f'),
                task_id: full('t'),
                grace_ms: u32::MAX,
            }),
        ),
        (
            "status_ack",
            MasterMsg::StatusAck(StatusAck {
                framework_id: full('f'),
                task_id: full('t'),
                update_id: u32::MAX,
            }),
        ),
        ("ping", MasterMsg::Ping { seq: u32::MAX }),
        ("reregister_request", MasterMsg::ReRegisterRequest),
    ]
}

pub fn enc<M: WireMessage>(m: &M) -> std::vec::Vec<u8> {
    let mut buf = [0u8; 8192];
    let n = m.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The key the test agents and masters share.
pub fn key() -> agent_nostd_core::auth::MessageKey {
    agent_nostd_core::auth::MessageKey::anonymous()
}

/// `msg` from the master of `epoch` as downlink frame `seq` for agent `agent` in boot `boot`.
pub fn down_frame(
    agent: &str,
    boot: u32,
    seq: u32,
    epoch: u64,
    msg: MasterMsg,
) -> std::vec::Vec<u8> {
    use agent_nostd_core::frame::{encode_sealed, Binding, Direction};
    let mut buf = vec![0; MAX_DOWN_FRAME_LEN];
    let binding = Binding {
        direction: Direction::Down,
        agent_id: agent,
        boot,
    };
    let n = encode_sealed(&msg.from_epoch(epoch), &key(), &binding, seq, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// The message of uplink frame `payload` from agent `agent` in boot `boot`, whose tag must verify
/// for some number at or above 1 (the caller checks numbers, if it cares).
pub fn open_up(agent: &str, boot: u32, payload: &[u8]) -> (AgentMsg, u32) {
    use agent_nostd_core::frame::{Binding, Direction, Frame, WILL_SEQ};
    let f = Frame::split(payload, Direction::Up).expect("a frame");
    let msg = AgentMsg::decode(f.message).expect("core emits valid payloads");
    let binding = Binding {
        direction: Direction::Up,
        agent_id: agent,
        boot,
    };
    let seq = match &msg {
        AgentMsg::Register(i) => i.seq,
        AgentMsg::ReRegister(r) => r.info.seq,
        AgentMsg::Gone { .. } => WILL_SEQ,
        _ => f.counter,
    };
    assert!(
        f.verifies(&key(), &binding, seq),
        "the frame's tag verifies"
    );
    (msg, seq)
}
