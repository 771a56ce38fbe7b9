//! PROTOCOL.md stays true to the code: every topic with its QoS, every message with its index and
//! maximum size.

mod samples;

use agent_nostd_core::topic::{AgentTopic, QoS, MASTER_HELLO};
use agent_nostd_core::wire::{epoch, AgentMsg, MasterEnvelope, MasterMsg, WireMessage};
use samples::{enc, max_agent_msgs, max_master_msgs, typical_agent_msgs, typical_master_msgs};

const DOC: &str = include_str!("../../PROTOCOL.md");

/// Exhaustive: a new variant does not compile until it is named here, and so checked in the doc.
fn agent_name(m: &AgentMsg) -> &'static str {
    match m {
        AgentMsg::Register(_) => "Register",
        AgentMsg::ReRegister(_) => "ReRegister",
        AgentMsg::Report(_) => "Report",
        AgentMsg::Status(_) => "Status",
        AgentMsg::Pong { .. } => "Pong",
        AgentMsg::Gone { .. } => "Gone",
    }
}

fn master_name(m: &MasterMsg) -> &'static str {
    match m {
        MasterMsg::Hello => "Hello",
        MasterMsg::RegisterAck(_) => "RegisterAck",
        MasterMsg::RunTask(_) => "RunTask",
        MasterMsg::KillTask(_) => "KillTask",
        MasterMsg::StatusAck(_) => "StatusAck",
        MasterMsg::Ping { .. } => "Ping",
        MasterMsg::ReRegisterRequest => "ReRegisterRequest",
    }
}

/// The cells of the table row that mentions `needle` in backticks.
fn row(needle: &str) -> Vec<String> {
    let quoted = format!("`{needle}`");
    let line = DOC
        .lines()
        .find(|l| l.starts_with('|') && l.split('|').any(|c| c.trim() == quoted))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no table row for {quoted}"));
    line.split('|').map(|c| c.trim().to_owned()).collect()
}

#[test]
fn every_agent_topic_is_in_the_spec_with_its_qos() {
    for kind in AgentTopic::ALL {
        let pattern = format!("bramble/v1/agent/{{id}}/{}", kind.suffix());
        let cells = row(&pattern);
        let qos = match kind.qos() {
            QoS::AtMostOnce => "0",
            QoS::AtLeastOnce => "1",
        };
        assert_eq!(cells[3], qos, "QoS of {pattern}");
        assert_eq!(cells[4], "no", "retain of {pattern}");
    }
    let hello = row(MASTER_HELLO);
    assert_eq!((hello[3].as_str(), hello[4].as_str()), ("1", "yes"));
}

#[test]
fn every_message_is_in_the_spec_with_its_index_and_sizes() {
    let check = |index: u8, name: &str, typical: usize, max: usize| {
        let cells = row(name);
        assert_eq!(cells[1], index.to_string(), "index of {name}");
        let doc_typical: usize = cells[4].split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(doc_typical, typical, "typical size of {name}");
        assert_eq!(cells[5], max.to_string(), "max size of {name}");
    };
    let typical = typical_agent_msgs();
    for (i, ((_, t), (_, m))) in typical.iter().zip(max_agent_msgs()).enumerate() {
        let bytes = enc(t);
        assert_eq!(usize::from(bytes[1]), i, "variant order");
        check(bytes[1], agent_name(t), bytes.len(), enc(&m).len());
    }
    for (i, ((_, t), (_, m))) in typical_master_msgs()
        .iter()
        .zip(max_master_msgs())
        .enumerate()
    {
        // Sizes with a typical epoch (term 1: a varint of 3 bytes) and the largest one.
        let bytes = enc(&t.clone().from_epoch(epoch(1, 2)));
        let index = u8::try_from(i).unwrap();
        assert_eq!(bytes[4], index, "variant order");
        check(
            index,
            master_name(t),
            bytes.len(),
            enc(&m.from_epoch(u64::MAX)).len(),
        );
    }
    assert!(DOC.contains(&AgentMsg::MAX_ENCODED_LEN.to_string()));
    assert!(DOC.contains(&MasterEnvelope::MAX_ENCODED_LEN.to_string()));
}
