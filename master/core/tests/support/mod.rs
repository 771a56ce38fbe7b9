//! What the core's tests share: an agent's description, feeding the core an agent's message or a
//! framework's call by its real topic and encoding, draining its offers, and building a status
//! update. Each test binary uses only some of them.
#![allow(dead_code)]

use agent_nostd_core::ids::id;
use agent_nostd_core::wire::{AgentInfo, AgentMsg, Reason, StatusUpdate, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::{MasterCore, Outgoing, Transmit};
use bramble_proto::{self as proto, Call, Event, Offer};

/// Agent `agent`: `pi.lan`, aarch64, 4 cores, 4 GiB, no attributes.
pub fn agent_info(agent: &str) -> AgentInfo {
    AgentInfo {
        agent_id: id(agent).unwrap(),
        hostname: heapless::String::try_from("pi.lan").unwrap(),
        arch: heapless::String::try_from("aarch64").unwrap(),
        board: heapless::String::new(),
        total: Resources::new(4_000, 4_096, 0),
        attributes: heapless::Vec::new(),
        connection: 0,
        boot: 1,
        seq: 0,
        to_epoch: 0,
    }
}

thread_local! {
    /// The next uplink number of each test agent.
    static UP_SEQ: std::cell::RefCell<std::collections::HashMap<String, u32>> =
        Default::default();
}

/// `msg` from agent `agent` as its next frame, sealed with the anonymous key the test masters
/// take: a registration gets its number, boot 1 unless it names one, and is addressed to `core`
/// unless it names another master.
pub fn frame_from(core: &MasterCore, agent: &str, msg: &AgentMsg) -> Vec<u8> {
    use agent_nostd_core::auth::MessageKey;
    use agent_nostd_core::frame::{encode_sealed, Binding, Direction, WILL_SEQ};
    let seq = UP_SEQ.with(|m| {
        let mut m = m.borrow_mut();
        let n = m.entry(agent.to_owned()).or_insert(1);
        *n += 1;
        *n - 1
    });
    let mut msg = msg.clone();
    let mut boot = 1;
    if let AgentMsg::Register(info)
    | AgentMsg::ReRegister(agent_nostd_core::wire::ReRegister { info, .. }) = &mut msg
    {
        info.boot = info.boot.max(1);
        info.seq = seq;
        if info.to_epoch == 0 {
            info.to_epoch = core.epoch();
        }
        boot = info.boot;
    }
    let seq = if matches!(msg, AgentMsg::Gone { .. }) {
        WILL_SEQ
    } else {
        seq
    };
    let binding = Binding {
        direction: Direction::Up,
        agent_id: agent,
        boot,
    };
    let mut buf = vec![0u8; agent_nostd_core::wire::MAX_UP_FRAME_LEN];
    let n = encode_sealed(&msg, &MessageKey::anonymous(), &binding, seq, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Everything the core queued to send, in order.
pub fn transmits(core: &mut MasterCore) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

/// The framework events among `out`.
pub fn events(out: &[Transmit]) -> Vec<Event> {
    out.iter()
        .filter_map(|t| match &t.message {
            Outgoing::Framework { event, .. } => Some(event.clone()),
            Outgoing::Agent(_) => None,
        })
        .collect()
}

/// Sends `msg` from agent `agent` on its topic.
pub fn send_agent(core: &mut MasterCore, now: u64, agent: &str, msg: &AgentMsg) {
    let frame = frame_from(core, agent, msg);
    core.handle_agent_bytes(now, &msg.topic(agent), &frame)
        .unwrap();
}

/// The wall clock the test masters are told, in seconds since the Unix epoch, at `now` ms.
pub fn wall(now: u64) -> u64 {
    1_765_000_000 + now / 1_000
}

thread_local! {
    /// The calls each test framework client made: its registrations' nonces, its calls' numbers.
    static FW_CALLS: std::cell::RefCell<std::collections::HashMap<String, u32>> =
        Default::default();
}

/// `call` of framework client `client` as the SDK seals it with the anonymous key the test
/// masters take: a registration as `framework-{client}` with its time and nonce outside any
/// session, anything else in the session `core` holds for the client now.
pub fn framework_frame(core: &MasterCore, now: u64, client: &str, call: &Call) -> Vec<u8> {
    use agent_nostd_core::auth::MessageKey;
    use agent_nostd_core::frame::{Direction, WILL_SEQ};
    use bramble_proto::frame::{seal, NO_SESSION};
    let n = FW_CALLS.with(|m| {
        let mut m = m.borrow_mut();
        let n = m.entry(client.to_owned()).or_insert(0);
        *n += 1;
        *n
    });
    let mut call = call.clone();
    let (session, seq) = match &mut call {
        Call::Register(r) | Call::ReRegister(proto::ReRegister { info: r, .. }) => {
            if r.principal.is_empty() {
                r.principal = format!("framework-{client}");
            }
            r.time = wall(now);
            r.nonce = u64::from(n);
            (NO_SESSION, 0)
        }
        Call::Gone { .. } => (NO_SESSION, WILL_SEQ),
        _ => (core.framework_session(client).unwrap_or(NO_SESSION), n),
    };
    seal(
        call.encode(),
        &MessageKey::anonymous(),
        Direction::FrameworkUp,
        client,
        session,
        seq,
    )
}

/// Sends `call` of framework client `client` on its topic, sealed (see [`framework_frame`]).
pub fn fw_call(
    core: &mut MasterCore,
    now: u64,
    client: &str,
    call: Call,
) -> Result<(), bramble_master_core::RecvError> {
    let topic = match call {
        Call::Register(_) | Call::ReRegister(_) => proto::register_topic(client),
        Call::Gone { .. } => proto::will_topic(client),
        _ => proto::call_topic(client),
    };
    let frame = framework_frame(core, now, client, &call);
    core.handle_framework_bytes(now, wall(now), &topic, &frame)
}

/// Sends the call of framework client `fw` on its topic.
pub fn call(core: &mut MasterCore, now: u64, call: Call) {
    fw_call(core, now, "fw", call).unwrap();
}

/// Drains the core's transmits, returning the framework's offers and its id if registered.
pub fn drain(core: &mut MasterCore) -> (Vec<Offer>, Option<String>) {
    let mut offers = Vec::new();
    let mut fid = None;
    while let Some(t) = core.poll_transmit() {
        match t.message {
            Outgoing::Framework {
                event: Event::Offers(o),
                ..
            } => offers.extend(o),
            Outgoing::Framework {
                event: Event::Registered { framework_id, .. },
                ..
            } => fid = Some(framework_id),
            _ => {}
        }
    }
    (offers, fid)
}

/// The status update `update_id` of task `tid` of framework `fid`, with the message "done".
pub fn status_msg(
    fid: &str,
    tid: &str,
    update_id: u32,
    state: TaskState,
    reason: Reason,
) -> AgentMsg {
    AgentMsg::Status(StatusUpdate {
        framework_id: id(fid).unwrap(),
        task_id: id(tid).unwrap(),
        update_id,
        state,
        reason,
        message: heapless::String::try_from("done").unwrap(),
    })
}
