//! The framework↔master protocol: topic names, the calls a scheduler makes, the events the master
//! sends back, and their codec.
//!
//! Every payload is one version byte ([`FRAMEWORK_PROTOCOL_VERSION`]) followed by the postcard encoding
//! of a [`Call`] (framework → master) or an [`Event`] (master → framework). As on the agent wire,
//! postcard is positional: new calls, events, error codes are variants appended at the end of their
//! enum, and any other change bumps the version byte.
//!
//! Topics, all keyed by `{client}`, a name the framework chooses (a valid id, see
//! [`agent_nostd_core::ids`]). The framework subscribes to its event topic *before* it registers, so
//! nothing the master sends right after the registration (the first offers) can be missed; the
//! framework id the master assigns is carried in the messages, not in the topics, and a framework
//! that fails over may come back under another client name.
//!
//! | topic | direction | QoS | retain | payload |
//! |---|---|---|---|---|
//! | `bramble/v1/framework/register/{client}` | framework → master | 1 | no | [`Call::Register`] / [`Call::ReRegister`] |
//! | `bramble/v1/framework/call/{client}` | framework → master | 1 | no | any other [`Call`] but [`Call::Gone`] |
//! | `bramble/v1/framework/will/{client}` | framework → master | 1 | no | [`Call::Gone`] (MQTT last will) |
//! | `bramble/v1/framework/event/{client}` | master → framework | 1 | no | every [`Event`] |
//!
//! The "Framework ↔ master" section of `PROTOCOL.md` at the repository root is the full spec, with
//! field layouts.

use std::sync::Arc;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use serde::{Deserialize, Serialize};

/// The version byte at the start of every framework↔master payload.
///
/// Version 2 appended `artifacts` to [`TaskInfo`] (postcard has no field-level compatibility).
pub const FRAMEWORK_PROTOCOL_VERSION: u8 = 2;

/// The prefix of every framework topic.
pub const FRAMEWORK_PREFIX: &str = "bramble/v1/framework/";

/// The most tasks one accept may launch, and the most task ids one reconcile may list.
pub const MAX_TASKS_PER_CALL: usize = 256;
/// The most offers one decline may name.
pub const MAX_OFFERS_PER_CALL: usize = 256;
/// The longest framework name or role, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The largest weight a framework may ask for.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// An offer's id, unique within one master epoch.
pub type OfferId = u64;

// ----- topics -----

/// `bramble/v1/framework/register/{client}`: where a framework registers.
pub fn register_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}register/{client}")
}

/// `bramble/v1/framework/call/{client}`: the calls of a registered framework.
pub fn call_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}call/{client}")
}

/// `bramble/v1/framework/will/{client}`: the framework's MQTT last will.
pub fn will_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}will/{client}")
}

/// `bramble/v1/framework/event/{client}`: every event for the framework behind `client`.
pub fn event_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}event/{client}")
}

/// The subscriptions the master needs for framework traffic.
pub const MASTER_FILTERS: [&str; 3] = [
    "bramble/v1/framework/register/+",
    "bramble/v1/framework/call/+",
    "bramble/v1/framework/will/+",
];

/// Which framework topic, each the level before `{client}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameworkTopic {
    /// `register`: registrations.
    Register,
    /// `call`: every other call.
    Call,
    /// `will`: the last will.
    Will,
    /// `event`: events from the master.
    Event,
}

/// Recognises a framework topic, returning its kind and client name, or `None` for anything else
/// (including a client name that is not a valid id).
pub fn parse_topic(topic: &str) -> Option<(FrameworkTopic, &str)> {
    let rest = topic.strip_prefix(FRAMEWORK_PREFIX)?;
    let (kind, client) = rest.split_once('/')?;
    let kind = match kind {
        "register" => FrameworkTopic::Register,
        "call" => FrameworkTopic::Call,
        "will" => FrameworkTopic::Will,
        "event" => FrameworkTopic::Event,
        _ => return None,
    };
    validate_id(client).ok()?;
    Some((kind, client))
}

// ----- calls -----

/// A first registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// A name for people, 1 to [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The role the framework runs under, at most [`MAX_NAME_LEN`] bytes (may be empty).
    pub role: String,
    /// The DRF weight: its dominant share is divided by this. Finite, above 0, at most [`MAX_WEIGHT`].
    pub weight: f64,
    /// Under the strict-priority policy, higher is offered first.
    pub priority: u32,
    /// The guaranteed minimum: while below it, the framework is offered first.
    pub guarantee: Option<Resources>,
    /// How long the master keeps the framework's tasks after it disconnects, in milliseconds.
    pub failover_timeout_ms: u64,
}

/// A registration that takes back an id the framework held before (after its own restart, or after a
/// master restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReRegister {
    /// The id the framework held.
    pub framework_id: String,
    /// The registration, as on first registration.
    pub info: Register,
}

/// A task to launch on an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's id, unique within the framework.
    pub task_id: String,
    /// The command; `argv[0]` is the program. 1 to 16 elements of at most 128 bytes.
    pub argv: Vec<String>,
    /// Extra environment variables: at most 16, names of at most 32 bytes, values of at most 128.
    pub env: Vec<(String, String)>,
    /// The task's limits; it must ask for some CPU and memory.
    pub resources: Resources,
    /// Files the agent fetches into the task's sandbox before launch: at most 4.
    pub artifacts: Vec<ArtifactInfo>,
}

/// A file a task needs in its sandbox, fetched by the agent over plain `http://` and checked against
/// its SHA-256 (like the Mesos fetcher's URIs).
///
/// The master picks the variant whose `arch` is the agent's (as Rust names it: `aarch64`, `arm`,
/// `x86_64`, …) and falls back to `url`/`sha256`; an artifact with no URL for the agent's arch
/// makes the whole accept refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// The file's name in the sandbox: one path component (no `/`, not `.` or `..`), 1–64 bytes.
    pub name: String,
    /// Where to fetch it when no variant matches (may be empty when variants cover every board);
    /// `http://` only, at most 160 bytes.
    pub url: String,
    /// The SHA-256 of the file at `url`.
    pub sha256: [u8; 32],
    /// Whether the file is made executable (mode 0755) in the sandbox.
    pub executable: bool,
    /// Per-architecture URLs, tried before `url`.
    pub variants: Vec<ArtifactVariant>,
}

/// An artifact's URL and hash for one CPU architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactVariant {
    /// The architecture, as agents report it (`aarch64`, `arm`, `x86_64`, …).
    pub arch: String,
    /// Where to fetch it.
    pub url: String,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

impl ArtifactInfo {
    /// A plain (non-executable) artifact fetched from `url` into the sandbox as `name`.
    pub fn new(name: &str, url: &str, sha256: [u8; 32]) -> Self {
        ArtifactInfo {
            name: name.to_owned(),
            url: url.to_owned(),
            sha256,
            executable: false,
            variants: Vec::new(),
        }
    }

    /// The same artifact, made executable in the sandbox.
    pub fn executable(mut self) -> Self {
        self.executable = true;
        self
    }

    /// The same artifact with a URL and hash for boards of architecture `arch`.
    pub fn variant(mut self, arch: &str, url: &str, sha256: [u8; 32]) -> Self {
        self.variants.push(ArtifactVariant {
            arch: arch.to_owned(),
            url: url.to_owned(),
            sha256,
        });
        self
    }

    /// The URL and hash for an agent of architecture `arch`, if there is one.
    pub fn resolve(&self, arch: &str) -> Option<(&str, &[u8; 32])> {
        match self.variants.iter().find(|v| v.arch == arch) {
            Some(v) => Some((&v.url, &v.sha256)),
            None if !self.url.is_empty() => Some((&self.url, &self.sha256)),
            None => None,
        }
    }
}

/// Parses a SHA-256 written as 64 hex digits (as `sha256sum` prints it).
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("a sha256 is 64 hex digits, not {hex:?}"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("a sha256 is 64 hex digits, not {hex:?}"))?;
    }
    Ok(out)
}

/// A SHA-256 as 64 lowercase hex digits.
pub fn sha256_hex(sha256: &[u8; 32]) -> String {
    sha256.iter().map(|b| format!("{b:02x}")).collect()
}

/// Launch tasks on an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The offer.
    pub offer_id: OfferId,
    /// The tasks; together they must fit in the offer. The rest of the offer returns to the pool.
    pub tasks: Vec<TaskInfo>,
}

/// Give offers back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The offers.
    pub offer_ids: Vec<OfferId>,
    /// For how long the same agents are not offered to this framework again, in seconds; `None` for
    /// the master's default (5 s).
    pub refuse_seconds: Option<u32>,
}

/// Kill a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// The task.
    pub task_id: String,
    /// Milliseconds between SIGTERM and SIGKILL; 0 kills at once.
    pub grace_ms: u32,
}

/// Framework → master calls. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// First registration (on the register topic).
    Register(Register),
    /// Registration with a previous id (on the register topic).
    ReRegister(ReRegister),
    /// Launch tasks on an offer.
    Accept(Accept),
    /// Give offers back, with a filter.
    Decline(Decline),
    /// Clear every filter and resume offers.
    Revive,
    /// Stop sending offers until the next revive.
    Suppress,
    /// Kill a task.
    Kill(Kill),
    /// Ask for the latest state of these tasks, or of every task when the list is empty.
    Reconcile {
        /// The tasks, or empty for all.
        task_ids: Vec<String>,
    },
    /// The framework is done: its tasks are killed and it is forgotten.
    Teardown,
    /// The framework's connection dropped (its MQTT last will, on the will topic).
    Gone,
}

// ----- events -----

/// A key=value attribute of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The key, e.g. `sensor`.
    pub key: String,
    /// The value, e.g. `bme280`.
    pub value: String,
}

/// What an offer says about its agent. The master builds it once per agent registration and
/// shares it between that agent's offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDescription {
    /// The agent's id.
    pub agent_id: String,
    /// Its hostname.
    pub hostname: String,
    /// Its architecture (`aarch64`, `arm`, …).
    pub arch: String,
    /// Its attributes, e.g. `sensor=bme280`.
    pub attributes: Vec<Attribute>,
}

/// Resources of one agent offered to one framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer's id.
    pub offer_id: OfferId,
    /// The agent (on the wire, its fields in place).
    pub agent: Arc<AgentDescription>,
    /// What is offered: everything free on the agent.
    pub resources: Resources,
}

/// A task's new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The task.
    pub task_id: String,
    /// Its agent, when known.
    pub agent_id: Option<String>,
    /// The state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// A detail for people, possibly empty.
    pub message: String,
}

/// What kind of error an [`Event::Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The registration was refused (bad name, weight, …); the framework is not registered.
    RegistrationRefused,
    /// The call came from a client the master knows no registered framework behind: register again.
    NotRegistered,
    /// The offer is not (or no longer) this framework's.
    UnknownOffer,
    /// The accept was refused and none of its tasks launched; the offer went back to the pool.
    AcceptRefused,
    /// The call is malformed (too many tasks, bad id, …).
    InvalidCall,
}

/// Master → framework events. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The registration was accepted.
    Registered {
        /// The framework's id: keep it to re-register after a failover.
        framework_id: String,
        /// The master's epoch: a new one means the master restarted.
        master_epoch: u64,
    },
    /// New offers.
    Offers(Vec<Offer>),
    /// An offer was withdrawn (timeout, agent lost, …): accepting it now fails.
    Rescind {
        /// The offer.
        offer_id: OfferId,
    },
    /// A task changed state.
    Update(StatusUpdate),
    /// An agent became unreachable; its tasks get their own updates.
    AgentLost {
        /// The agent.
        agent_id: String,
    },
    /// A call failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// The offer concerned, if any.
        offer_id: Option<OfferId>,
        /// For people, e.g. `task t1 asks cpu 3000m but the offer has 2000m`.
        message: String,
    },
}

// ----- codec -----

/// Why a framework payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// The version byte is not [`FRAMEWORK_PROTOCOL_VERSION`].
    #[error("framework protocol version {got} is not supported (this build speaks {FRAMEWORK_PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// The payload ends in the middle of a message.
    #[error("payload is truncated")]
    Truncated,
    /// The payload is not a valid message.
    #[error("payload is not a valid message")]
    Malformed,
    /// A whole message was read but bytes are left over.
    #[error("payload has bytes after the message")]
    TrailingBytes,
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![FRAMEWORK_PROTOCOL_VERSION];
    // Serialising to a Vec cannot fail: every type here is plainly serialisable.
    let body = postcard::to_allocvec(msg).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != FRAMEWORK_PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version });
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok(_) => Err(DecodeError::TrailingBytes),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
        Err(_) => Err(DecodeError::Malformed),
    }
}

impl Call {
    /// The payload: version byte and postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        decode(payload)
    }
}

impl Event {
    /// The payload: version byte and postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        decode(payload)
    }
}

impl Register {
    /// A registration with weight 1, priority 0, no guarantee and a one-minute failover timeout.
    pub fn new(name: &str) -> Self {
        Register {
            name: name.to_owned(),
            role: String::new(),
            weight: 1.0,
            priority: 0,
            guarantee: None,
            failover_timeout_ms: 60_000,
        }
    }

    /// Checks the fields a master relies on, returning what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(format!("name must be 1 to {MAX_NAME_LEN} bytes"));
        }
        if self.role.len() > MAX_NAME_LEN {
            return Err(format!("role must be at most {MAX_NAME_LEN} bytes"));
        }
        if !(self.weight.is_finite() && self.weight > 0.0 && self.weight <= MAX_WEIGHT) {
            return Err(format!(
                "weight must be above 0 and at most {MAX_WEIGHT}, not {}",
                self.weight
            ));
        }
        Ok(())
    }
}

impl TaskInfo {
    /// A task running `argv` with `resources` and no extra environment.
    pub fn new(task_id: &str, argv: &[&str], resources: Resources) -> Self {
        TaskInfo {
            task_id: task_id.to_owned(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            resources,
            artifacts: Vec::new(),
        }
    }

    /// The same task with one more artifact to fetch.
    pub fn with_artifact(mut self, artifact: ArtifactInfo) -> Self {
        self.artifacts.push(artifact);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_under_the_framework_prefix_and_parse_back() {
        assert_eq!(register_topic("pi"), "bramble/v1/framework/register/pi");
        assert_eq!(call_topic("pi"), "bramble/v1/framework/call/pi");
        assert_eq!(will_topic("pi"), "bramble/v1/framework/will/pi");
        assert_eq!(event_topic("pi"), "bramble/v1/framework/event/pi");
        for (t, kind) in [
            (register_topic("pi"), FrameworkTopic::Register),
            (call_topic("pi"), FrameworkTopic::Call),
            (will_topic("pi"), FrameworkTopic::Will),
            (event_topic("pi"), FrameworkTopic::Event),
        ] {
            assert_eq!(parse_topic(&t), Some((kind, "pi")));
        }
    }

    #[test]
    fn malformed_framework_topics_are_not_recognised() {
        for t in [
            "bramble/v1/framework/register/a+b",
            "bramble/v1/framework/register/",
            "bramble/v1/framework/call/x/more",
            "bramble/v1/framework/unknown/x",
            "bramble/v1/framework/event",
            "bramble/v1/agent/a/status",
        ] {
            assert_eq!(parse_topic(t), None, "{t}");
        }
    }

    #[test]
    fn payloads_start_with_the_version_byte_and_pin_their_bytes() {
        assert_eq!(Call::Revive.encode(), vec![2, 4]);
        assert_eq!(
            Event::Rescind { offer_id: 300 }.encode(),
            vec![2, 2, 0xAC, 0x02]
        );
        let kill = Call::Kill(Kill {
            task_id: "t1".into(),
            grace_ms: 5,
        });
        assert_eq!(kill.encode(), vec![2, 6, 2, b't', b'1', 5]);
        // A task's artifacts follow its resources: name, url, sha256, executable, variants.
        let accept = Call::Accept(Accept {
            offer_id: 1,
            tasks: vec![TaskInfo::new("t", &["./x"], Resources::new(1, 1, 0))
                .with_artifact(ArtifactInfo::new("x", "http://m/x", [7; 32]).executable())],
        });
        let mut golden = vec![2, 2, 1, 1, 1, b't', 1, 3, b'.', b'/', b'x', 0, 1, 1, 0, 1];
        golden.extend_from_slice(&[1, b'x', 10]);
        golden.extend_from_slice(b"http://m/x");
        golden.extend_from_slice(&[7; 32]);
        golden.extend_from_slice(&[1, 0]);
        assert_eq!(accept.encode(), golden);
    }

    #[test]
    fn every_call_and_event_round_trips() {
        let calls = [
            Call::Register(Register::new("pi")),
            Call::ReRegister(ReRegister {
                framework_id: "1-2".into(),
                info: Register::new("pi"),
            }),
            Call::Accept(Accept {
                offer_id: 9,
                tasks: vec![TaskInfo::new("t1", &["/bin/true"], Resources::new(1, 2, 3))],
            }),
            Call::Decline(Decline {
                offer_ids: vec![1, 2],
                refuse_seconds: Some(30),
            }),
            Call::Suppress,
            Call::Reconcile { task_ids: vec![] },
            Call::Teardown,
            Call::Gone,
        ];
        for c in calls {
            assert_eq!(Call::decode(&c.encode()), Ok(c));
        }
        let events = [
            Event::Registered {
                framework_id: "1-2".into(),
                master_epoch: 7,
            },
            Event::Offers(vec![Offer {
                offer_id: 1,
                agent: Arc::new(AgentDescription {
                    agent_id: "pi4".into(),
                    hostname: "pi4.lan".into(),
                    arch: "aarch64".into(),
                    attributes: vec![Attribute {
                        key: "sensor".into(),
                        value: "bme280".into(),
                    }],
                }),
                resources: Resources::new(4000, 4096, 0),
            }]),
            Event::Update(StatusUpdate {
                task_id: "t1".into(),
                agent_id: Some("pi4".into()),
                state: TaskState::Running,
                reason: Reason::None,
                message: String::new(),
            }),
            Event::AgentLost {
                agent_id: "pi4".into(),
            },
            Event::Error {
                code: ErrorCode::AcceptRefused,
                offer_id: Some(1),
                message: "no".into(),
            },
        ];
        for e in events {
            assert_eq!(Event::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        assert_eq!(Call::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Call::decode(&[1, 4]),
            Err(DecodeError::UnsupportedVersion { got: 1 })
        );
        assert_eq!(Call::decode(&[2, 4, 0]), Err(DecodeError::TrailingBytes));
        assert_eq!(Call::decode(&[2, 100]), Err(DecodeError::Malformed));
        assert_eq!(Call::decode(&[2, 6, 5, b't']), Err(DecodeError::Truncated));
    }

    #[test]
    fn an_artifact_resolves_to_the_agents_arch_variant_then_to_its_default_url() {
        let a =
            ArtifactInfo::new("x", "http://m/x", [1; 32]).variant("arm", "http://m/x-arm", [2; 32]);
        assert_eq!(a.resolve("arm"), Some(("http://m/x-arm", &[2; 32])));
        assert_eq!(a.resolve("aarch64"), Some(("http://m/x", &[1; 32])));
        let only_arm =
            ArtifactInfo::new("x", "", [0; 32]).variant("arm", "http://m/x-arm", [2; 32]);
        assert_eq!(only_arm.resolve("x86_64"), None);
    }

    #[test]
    fn a_sha256_parses_from_the_hex_sha256sum_prints_and_back() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha = parse_sha256(hex).unwrap();
        assert_eq!(sha[0], 0xE3);
        assert_eq!(sha256_hex(&sha), hex);
        assert!(parse_sha256("e3b0").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn registration_checks_name_and_weight() {
        assert!(Register::new("pi").validate().is_ok());
        let mut r = Register::new("pi");
        r.weight = f64::NAN;
        assert!(r.validate().is_err());
        r.weight = 0.0;
        assert!(r.validate().is_err());
        assert!(Register::new("").validate().is_err());
    }
}
