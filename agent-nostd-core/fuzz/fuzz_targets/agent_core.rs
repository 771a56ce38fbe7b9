//! Fuzzes the agent core with arbitrary payloads on its command and hello topics, interleaved with
//! time steps: no panic, no over-commit, and every transmit decodes.

#![no_main]

use agent_nostd_core::agent::{AgentCore, Config};
use agent_nostd_core::ids::id;
use agent_nostd_core::topic::MASTER_HELLO;
use agent_nostd_core::wire::{AgentInfo, AgentMsg, WireMessage};
use agent_nostd_core::Resources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = AgentInfo {
        agent_id: id("fuzz").unwrap(),
        hostname: heapless::String::new(),
        arch: heapless::String::new(),
        board: heapless::String::new(),
        total: Resources::new(4000, 4000, 4000),
        attributes: heapless::Vec::new(),
        connection: 0,
        boot: 1,
        seq: 0,
        to_epoch: 0,
    };
    let key = agent_nostd_core::auth::MessageKey::anonymous();
    let mut core = AgentCore::new(Config::default(), info, key, 0).unwrap();
    core.handle_connected(0, 1);
    let mut buf = [0u8; agent_nostd_core::wire::MAX_UP_FRAME_LEN];
    let mut now = 0u64;
    // Each chunk: one control byte, one length byte, then that many payload bytes.
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        now += u64::from(*control) * 100;
        core.handle_timeout(now);
        let topic = if control & 1 == 0 {
            "bramble/v1/agent/fuzz/cmd"
        } else {
            MASTER_HELLO
        };
        let _ = core.handle_bytes(now, topic, payload);
        while let Some(t) = core.poll_transmit(now, &mut buf) {
            let frame = agent_nostd_core::frame::Frame::split(
                &buf[..t.len],
                agent_nostd_core::frame::Direction::Up,
            )
            .expect("a frame");
            assert!(AgentMsg::decode(frame.message).is_ok());
        }
        while core.poll_action().is_some() {}
        assert!(core.allocated().fits_in(&core.total()));
    }
});
