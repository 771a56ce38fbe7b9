//! Fuzzes both decoders with arbitrary payloads: no panic, and whatever decodes re-encodes to a
//! payload that decodes to the same message.

#![no_main]

use agent_nostd_core::wire::{AgentMsg, MasterMsg, WireMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = vec![0u8; MasterMsg::MAX_ENCODED_LEN];
    if let Ok(msg) = AgentMsg::decode(data) {
        let n = msg
            .encode(&mut buf)
            .expect("a decoded message fits its maximum");
        assert_eq!(AgentMsg::decode(&buf[..n]), Ok(msg));
    }
    if let Ok(msg) = MasterMsg::decode(data) {
        let n = msg
            .encode(&mut buf)
            .expect("a decoded message fits its maximum");
        assert_eq!(MasterMsg::decode(&buf[..n]), Ok(msg));
    }
});
