//! Golden bytes, maximum sizes and decoding of untrusted bytes for every agent↔master message.

mod samples;

use agent_nostd_core::wire::*;
use proptest::prelude::*;
use samples::*;

/// The exact encoding of each typical message. A change here is a wire change: bump
/// PROTOCOL_VERSION or append a variant instead.
const AGENT_GOLDEN: [(&str, &[u8]); 6] = [
    (
        "register",
        &[
            3, 0, 3, b'p', b'i', b'4', 3, b'p', b'i', b'4', 7, b'a', b'a', b'r', b'c', b'h', b'6',
            b'4', 14, b'R', b'a', b's', b'p', b'b', b'e', b'r', b'r', b'y', b' ', b'P', b'i', b' ',
            b'4', 0xA0, 0x1F, 0xD8, 0x1D, 0xA0, 0x9C, 0x01, 1, 6, b's', b'e', b'n', b's', b'o',
            b'r', 6, b'b', b'm', b'e', b'2', b'8', b'0', 7, 1, 1, 0,
        ],
    ),
    (
        "reregister",
        &[
            3, 1, 3, b'p', b'i', b'4', 3, b'p', b'i', b'4', 7, b'a', b'a', b'r', b'c', b'h', b'6',
            b'4', 14, b'R', b'a', b's', b'p', b'b', b'e', b'r', b'r', b'y', b' ', b'P', b'i', b' ',
            b'4', 0xA0, 0x1F, 0xD8, 0x1D, 0xA0, 0x9C, 0x01, 1, 6, b's', b'e', b'n', b's', b'o',
            b'r', 6, b'b', b'm', b'e', b'2', b'8', b'0', 7, 1, 1, 0, 7, 12, 1, 4, b'f', b'w', b'-',
            b'1', 2, b't', b'1', 0xF4, 0x03, 64, 0, 2,
        ],
    ),
    (
        // version, tag 2, free = 3500/3000/19000, 1 task, 52.3 °C as zigzag 1046, not throttled
        "report",
        &[
            3, 2, 0xAC, 0x1B, 0xB8, 0x17, 0xB8, 0x94, 0x01, 1, 0x96, 0x08, 0,
        ],
    ),
    (
        // ..., update 3, Failed (4), Exited (1) { code: 2 as zigzag 4 }, message
        "status",
        &[
            3, 3, 4, b'f', b'w', b'-', b'1', 2, b't', b'1', 3, 4, 1, 4, 18, b'e', b'x', b'i', b't',
            b'e', b'd', b' ', b'w', b'i', b't', b'h', b' ', b'c', b'o', b'd', b'e', b' ', b'2',
        ],
    ),
    ("pong", &[3, 4, 0xAC, 0x02]),
    ("gone", &[3, 5, 7]),
];

/// The epoch of the typical master messages: term 1, tiebreak 2 (a varint of 3 bytes).
const EPOCH: u64 = epoch(1, 2);

/// Each starts with the version byte and the epoch, `0x82 0x80 0x04`.
const MASTER_GOLDEN: [(&str, &[u8]); 7] = [
    ("hello", &[3, 0x82, 0x80, 0x04, 0]),
    (
        "register_ack",
        &[3, 0x82, 0x80, 0x04, 1, 3, b'p', b'i', b'4'],
    ),
    (
        // fw-1, t1, argv ["echo", "hi"], env [X=1], 500m/64M/0M, pids 32, no artifacts
        "run_task",
        &[
            3, 0x82, 0x80, 0x04, 2, 4, b'f', b'w', b'-', b'1', 2, b't', b'1', 2, 4, b'e', b'c',
            b'h', b'o', 2, b'h', b'i', 1, 1, b'X', 1, b'1', 0xF4, 0x03, 64, 0, 32, 0,
        ],
    ),
    (
        "kill_task",
        &[
            3, 0x82, 0x80, 0x04, 3, 4, b'f', b'w', b'-', b'1', 2, b't', b'1', 0xE8, 0x07,
        ],
    ),
    (
        "status_ack",
        &[
            3, 0x82, 0x80, 0x04, 4, 4, b'f', b'w', b'-', b'1', 2, b't', b'1', 3,
        ],
    ),
    ("ping", &[3, 0x82, 0x80, 0x04, 5, 0xAC, 0x02]),
    ("reregister_request", &[3, 0x82, 0x80, 0x04, 6]),
];

#[test]
fn every_agent_message_encodes_to_its_golden_bytes_and_back() {
    for ((name, msg), (golden_name, golden)) in typical_agent_msgs().into_iter().zip(AGENT_GOLDEN) {
        assert_eq!(name, golden_name);
        assert_eq!(enc(&msg), golden, "{name}");
        assert_eq!(AgentMsg::decode(golden), Ok(msg), "{name}");
    }
}

#[test]
fn every_master_message_encodes_to_its_golden_bytes_and_back() {
    for ((name, msg), (golden_name, golden)) in typical_master_msgs().into_iter().zip(MASTER_GOLDEN)
    {
        assert_eq!(name, golden_name);
        let msg = msg.from_epoch(EPOCH);
        assert_eq!(enc(&msg), golden, "{name}");
        assert_eq!(MasterEnvelope::decode(golden), Ok(msg), "{name}");
    }
}

#[test]
fn largest_messages_fit_their_published_maximum_exactly() {
    let agent_max: [(&str, usize); 6] = [
        ("register", 623),
        ("reregister", AgentMsg::MAX_ENCODED_LEN),
        ("report", MAX_REPORT_LEN),
        ("status", MAX_STATUS_LEN),
        ("pong", 7),
        ("gone", 7),
    ];
    for ((name, msg), (_, max)) in max_agent_msgs().into_iter().zip(agent_max) {
        assert_eq!(enc(&msg).len(), max, "{name}");
    }
    let master_max: [(&str, usize); 7] = [
        ("hello", 12),
        ("register_ack", 45),
        ("run_task", MasterEnvelope::MAX_ENCODED_LEN),
        ("kill_task", 83),
        ("status_ack", 83),
        ("ping", 17),
        ("reregister_request", 12),
    ];
    for ((name, msg), (_, max)) in max_master_msgs().into_iter().zip(master_max) {
        assert_eq!(enc(&msg.from_epoch(u64::MAX)).len(), max, "{name}");
    }
    for (_, msg) in max_agent_msgs() {
        assert_eq!(AgentMsg::decode(&enc(&msg)), Ok(msg));
    }
    for (_, msg) in max_master_msgs() {
        let msg = msg.from_epoch(u64::MAX);
        assert_eq!(MasterEnvelope::decode(&enc(&msg)), Ok(msg));
    }
}

#[test]
fn a_resource_report_is_at_most_32_bytes() {
    const { assert!(MAX_REPORT_LEN + agent_nostd_core::frame::UP_TRAILER_LEN == 32) };
    let (_, max_report) = &max_agent_msgs()[2];
    assert!(enc(max_report).len() + agent_nostd_core::frame::UP_TRAILER_LEN <= 32);
}

#[test]
fn encoding_into_a_short_buffer_is_an_error_not_a_panic() {
    let (_, msg) = &typical_agent_msgs()[0];
    let mut small = [0u8; 10];
    assert_eq!(msg.encode(&mut small), Err(EncodeError::BufferTooSmall));
    assert_eq!(msg.encode(&mut []), Err(EncodeError::BufferTooSmall));
}

#[test]
fn another_protocol_version_is_refused_before_reading_the_body() {
    for version in [0u8, 1, 2, 4, 255] {
        let mut bytes = MASTER_GOLDEN[5].1.to_vec();
        bytes[0] = version;
        assert_eq!(
            MasterEnvelope::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { got: version })
        );
        assert_eq!(
            AgentMsg::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { got: version })
        );
    }
}

#[test]
fn empty_truncated_trailing_and_garbage_payloads_get_typed_errors() {
    assert_eq!(AgentMsg::decode(&[]), Err(DecodeError::Empty));
    let run = MASTER_GOLDEN[2].1;
    assert_eq!(
        MasterEnvelope::decode(&run[..run.len() - 3]),
        Err(DecodeError::Truncated)
    );
    let mut trailing = run.to_vec();
    trailing.push(0);
    assert_eq!(
        MasterEnvelope::decode(&trailing),
        Err(DecodeError::TrailingBytes)
    );
    // Tag 99 is no message.
    assert_eq!(
        MasterEnvelope::decode(&[3, 1, 99]),
        Err(DecodeError::Malformed)
    );
    // An agent id of 33 bytes is over capacity.
    let mut long_id = vec![3, 1, 1, 33];
    long_id.extend([b'a'; 33]);
    assert_eq!(
        MasterEnvelope::decode(&long_id),
        Err(DecodeError::Malformed)
    );
    // Invalid UTF-8 in a string.
    assert_eq!(
        MasterEnvelope::decode(&[3, 1, 1, 2, 0xFF, 0xFE]),
        Err(DecodeError::Malformed)
    );
    // An epoch varint longer than a u64.
    assert_eq!(
        MasterEnvelope::decode(&[3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
        Err(DecodeError::Malformed)
    );
}

#[test]
fn every_message_goes_on_the_topic_that_carries_it() {
    use agent_nostd_core::topic::AgentTopic;
    let kinds: Vec<AgentTopic> = typical_agent_msgs().iter().map(|(_, m)| m.kind()).collect();
    assert_eq!(
        kinds,
        [
            AgentTopic::Register,
            AgentTopic::Register,
            AgentTopic::Report,
            AgentTopic::Status,
            AgentTopic::Pong,
            AgentTopic::Will
        ]
    );
    assert_eq!(
        typical_agent_msgs()[3].1.topic("pi4").as_str(),
        "bramble/v1/agent/pi4/status"
    );
}

fn all_golden() -> Vec<Vec<u8>> {
    AGENT_GOLDEN
        .iter()
        .chain(MASTER_GOLDEN.iter())
        .map(|(_, b)| b.to_vec())
        .collect()
}

/// Decoding must never panic; whatever decodes must re-encode to something that decodes the same.
fn decode_is_total_and_stable(bytes: &[u8]) {
    if let Ok(m) = AgentMsg::decode(bytes) {
        assert_eq!(AgentMsg::decode(&enc(&m)), Ok(m));
    }
    if let Ok(m) = MasterEnvelope::decode(bytes) {
        assert_eq!(MasterEnvelope::decode(&enc(&m)), Ok(m));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_is_total_and_stable(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_version_never_panic_a_decoder(
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![PROTOCOL_VERSION];
        bytes.extend(body);
        decode_is_total_and_stable(&bytes);
    }

    #[test]
    fn mutated_and_truncated_golden_messages_never_panic_a_decoder(
        which in 0usize..13,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = all_golden()[which].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        decode_is_total_and_stable(&bytes);
    }
}

#[test]
fn an_artifact_encodes_its_sandbox_name_after_the_executable_flag() {
    let mut run = samples::run_task();
    run.artifacts
        .push(Artifact {
            url: samples::s("http://m:8080/a"),
            sha256: [0xAB; 32],
            executable: true,
            name: samples::s("a"),
        })
        .unwrap();
    let mut golden: std::vec::Vec<u8> = MASTER_GOLDEN[2].1.to_vec();
    // The artifact count (was 0), the URL, the hash, the flag, then the appended name.
    *golden.last_mut().unwrap() = 1;
    golden.push(15);
    golden.extend_from_slice(b"http://m:8080/a");
    golden.extend_from_slice(&[0xAB; 32]);
    golden.push(1);
    golden.extend_from_slice(&[1, b'a']);
    let msg = MasterMsg::RunTask(run).from_epoch(EPOCH);
    assert_eq!(enc(&msg), golden);
    assert_eq!(MasterEnvelope::decode(&golden), Ok(msg));
}
