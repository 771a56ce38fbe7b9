//! The inputs as they arrive on the wire: agent, framework and operator payloads decoded, checked
//! against their topic and handed to the entity they concern. Bad input is counted and dropped here.

use agent_nostd_core::frame::{Direction, Frame};
use agent_nostd_core::topic::{self, AgentTopic, Topic};
use agent_nostd_core::wire::{
    AgentMsg, DecodeError as AgentDecodeError, MasterMsg, ReRegister, WireMessage,
};
use bramble_proto::{self as proto, Call, ErrorCode, Event, FrameworkTopic, Kill};
use serde::Deserialize;

use super::*;

/// Kills a task on behalf of an operator: JSON `{"framework_id": …, "task_id": …, "grace_ms": …,
/// "operator": "operator-NAME", "time": UNIX_SECONDS}` (`grace_ms` optional, 0 by default)
/// followed by its 8-byte tag ([`sign_operator_command`](super::sign_operator_command)).
pub const OPERATOR_KILL_TOPIC: &str = "bramble/v1/operator/kill";

/// The prefix of every operator topic.
pub const OPERATOR_PREFIX: &str = "bramble/v1/operator/";

/// The shortest time between two hints to one agent.
const HINT_INTERVAL_MS: u64 = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorKill {
    framework_id: String,
    task_id: String,
    #[serde(default)]
    grace_ms: u32,
    /// Who signed it and when (checked before, see `operator_auth`).
    #[allow(dead_code)]
    operator: String,
    #[allow(dead_code)]
    time: u64,
}

impl MasterCore {
    /// A payload arrived on an agent topic: take it apart as a frame, decode it, check it belongs
    /// there, authenticate it (see [`agent_auth`](super::agent_auth)), and only then handle it.
    pub fn handle_agent_bytes(
        &mut self,
        now: u64,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        let (id, kind) = match topic::parse(topic_name) {
            Some(Topic::Agent { id, kind }) if kind != AgentTopic::Cmd => (id, kind),
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        match payload.first() {
            Some(&v) if v != agent_nostd_core::PROTOCOL_VERSION => {
                self.stats.unsupported_version += 1;
                return Err(RecvError::AgentDecode(
                    AgentDecodeError::UnsupportedVersion { got: v },
                ));
            }
            _ => {}
        }
        let decoded = Frame::split(payload, Direction::Up)
            .map_err(|_| AgentDecodeError::Truncated)
            .and_then(|f| Ok((f, AgentMsg::decode(f.message)?)));
        let (frame, msg) = match decoded {
            Ok(ok) => ok,
            Err(_) if AgentMsg::decode(payload).is_ok() => {
                return Err(self.drop_frame(now, id, FrameDrop::Unframed));
            }
            Err(e) => {
                self.stats.malformed += 1;
                return Err(RecvError::AgentDecode(e));
            }
        };
        let names_other = match &msg {
            AgentMsg::Register(info) => info.agent_id != id,
            AgentMsg::ReRegister(r) => r.info.agent_id != id,
            _ => false,
        };
        if msg.kind() != kind || names_other {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        let floor = match &msg {
            AgentMsg::ReRegister(r) if r.last_master_epoch == self.epoch => r.down_seq,
            _ => 0,
        };
        if let Err(reason) = self.auth.open(id, &frame, &msg, floor) {
            return Err(self.drop_frame(now, id, reason));
        }
        self.handle_agent_message(now, id, &msg);
        Ok(())
    }

    /// Counts a dropped agent frame; an agent the master has no session with (a known principal)
    /// is hinted to register, at most once a second.
    fn drop_frame(&mut self, now: u64, agent_id: &str, reason: FrameDrop) -> RecvError {
        self.stats.frames_dropped.count(reason);
        if reason == FrameDrop::UnknownBoot
            && self.auth.is_principal(agent_id)
            && self.hint_due(now, format!("agent/{agent_id}"))
        {
            self.send_hint(agent_id);
        }
        RecvError::Frame(reason)
    }

    /// Whether an unframed answer to `key` (an agent or a framework client, and what about) may go
    /// out now: at most one every [`HINT_INTERVAL_MS`], so a flood of frames the master cannot
    /// check earns few answers. Remembers it; the memory is bounded.
    fn hint_due(&mut self, now: u64, key: String) -> bool {
        let due = self
            .hinted
            .get(&key)
            .is_none_or(|&at| now >= at.saturating_add(HINT_INTERVAL_MS));
        if due {
            if self.hinted.len() >= self.config.max_agents {
                self.hinted.clear();
            }
            self.hinted.insert(key, now);
        }
        due
    }

    /// An authenticated message from agent `agent_id` (a valid id, taken from the topic).
    fn handle_agent_message(&mut self, now: u64, agent_id: &str, msg: &AgentMsg) {
        self.agent_id_changed(agent_id);
        match msg {
            AgentMsg::Register(info) | AgentMsg::ReRegister(ReRegister { info, .. })
                if info.to_epoch != self.epoch
                    && !matches!(msg, AgentMsg::ReRegister(r) if r.last_master_epoch > self.epoch) =>
            {
                // Meant for another master (or a recording replayed to this one): ask the agent,
                // authenticated, to register with this one.
                self.stats.registrations_misaddressed += 1;
                self.send_agent(agent_id, MasterMsg::ReRegisterRequest);
            }
            AgentMsg::Register(info) => self.register_agent(now, info, &[]),
            AgentMsg::ReRegister(r) if r.last_master_epoch > self.epoch => {
                // The agent obeys a newer master: it would drop our answer. Whoever runs the
                // election decides between raising our epoch and stepping down.
                self.stats.newer_epoch_reports += 1;
                self.newer_epoch = self.newer_epoch.max(Some(r.last_master_epoch));
            }
            AgentMsg::ReRegister(r) => self.register_agent(now, &r.info, &r.tasks),
            AgentMsg::Report(report) => self.on_report(now, agent_id, report),
            AgentMsg::Pong { .. } => {
                self.live_agent(now, agent_id);
            }
            AgentMsg::Status(update) => self.on_status(now, agent_id, update),
            AgentMsg::Gone { connection } => {
                let Some(slot) = self.agents.lookup(agent_id) else {
                    return;
                };
                match self.agents.get(slot) {
                    // The will of an older connection, delivered late (say, after a broker
                    // restart): the agent is back on a newer one.
                    Some(a) if a.connection != *connection => self.stats.stale_wills += 1,
                    Some(a) if a.reachable => {
                        self.mark_unreachable(now, slot, "its connection dropped (last will)");
                    }
                    _ => {}
                }
            }
        }
    }

    /// A payload arrived on a framework topic: take it apart as a frame, decode it, check it
    /// belongs there, authenticate it (see [`framework_auth`](super::framework_auth)), and only
    /// then handle it. A call in a session is encrypted: it is decrypted as it is authenticated. `wall_secs` is the wall clock, in seconds since the Unix epoch: a
    /// registration is taken only within [`bramble_proto::frame::FRESH_SECS`] of it.
    pub fn handle_framework_bytes(
        &mut self,
        now: u64,
        wall_secs: u64,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        let (kind, client) = match proto::parse_topic(topic_name) {
            Some((kind, client)) if kind != FrameworkTopic::Event => (kind, client),
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        match payload.first() {
            Some(&v) if v != proto::FRAMEWORK_PROTOCOL_VERSION => {
                self.stats.unsupported_version += 1;
                return Err(RecvError::FrameworkDecode(
                    proto::DecodeError::UnsupportedVersion { got: v },
                ));
            }
            _ => {}
        }
        if kind == FrameworkTopic::Call {
            return self.handle_framework_call_bytes(now, client, payload);
        }
        let decoded = Frame::split(payload, Direction::FrameworkUp)
            .map_err(|_| match payload {
                [] => proto::DecodeError::Empty,
                _ => proto::DecodeError::Truncated,
            })
            .and_then(|f| Ok((f, Call::decode(f.message)?)));
        let (frame, call) = match decoded {
            Ok(ok) => ok,
            Err(_) if Call::decode(payload).is_ok() => {
                return Err(self.drop_framework_frame(now, client, FrameDrop::Unframed));
            }
            Err(e) => return Err(self.framework_malformed(e)),
        };
        let expected = match &call {
            Call::Register(_) | Call::ReRegister(_) => FrameworkTopic::Register,
            Call::Gone { .. } => FrameworkTopic::Will,
            _ => FrameworkTopic::Call,
        };
        if kind != expected {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        let keys = self.auth.keys();
        if let Err(reason) = self
            .fw_auth
            .open(keys, client, &frame, &call, wall_secs, self.epoch)
        {
            if kind == FrameworkTopic::Register && reason != FrameDrop::Replayed {
                self.refuse_unauthenticated_registration(now, client, reason);
            }
            return Err(self.drop_framework_frame(now, client, reason));
        }
        self.handle_framework_call(now, client, call);
        Ok(())
    }

    /// A payload on `client`'s call topic: a frame in its session, encrypted, opened in a copy
    /// (see [`FrameworkAuth::open_call`](super::framework_auth::FrameworkAuth::open_call)), then
    /// decoded; or, when it does not open, an unframed call or a forgery, dropped.
    fn handle_framework_call_bytes(
        &mut self,
        now: u64,
        client: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        let mut buf = payload.to_vec();
        if let Err(reason) = self.fw_auth.open_call(client, &mut buf) {
            let reason = match payload {
                _ if Call::decode(payload).is_ok() => FrameDrop::Unframed,
                [] => return Err(self.framework_malformed(proto::DecodeError::Empty)),
                _ if payload.len() < Direction::FrameworkUp.trailer_len() => {
                    return Err(self.framework_malformed(proto::DecodeError::Truncated))
                }
                _ => reason,
            };
            return Err(self.drop_framework_frame(now, client, reason));
        }
        buf.truncate(buf.len() - Direction::FrameworkUp.trailer_len());
        let call = match Call::decode(&buf) {
            Ok(call) => call,
            Err(e) => return Err(self.framework_malformed(e)),
        };
        if matches!(
            call,
            Call::Register(_) | Call::ReRegister(_) | Call::Gone { .. }
        ) {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        self.handle_framework_call(now, client, call);
        Ok(())
    }

    fn framework_malformed(&mut self, e: proto::DecodeError) -> RecvError {
        self.stats.malformed += 1;
        RecvError::FrameworkDecode(e)
    }

    /// A signed status query (its JSON, and the operator's key and the tag it was signed with):
    /// queued for the driver to answer ([`poll_query`](Self::poll_query)).
    fn take_query(
        &mut self,
        json: &[u8],
        key: agent_nostd_core::auth::MessageKey,
        tag: [u8; agent_nostd_core::auth::TAG_LEN],
    ) -> Result<(), RecvError> {
        let query = serde_json::from_slice::<super::QueryRequest>(json)
            .ok()
            .and_then(|request| super::StatusQuery::new(request, key, tag));
        let Some(query) = query else {
            self.stats.malformed += 1;
            return Err(RecvError::OperatorDecode);
        };
        if !self.queries.push(query) {
            self.stats.queries_dropped += 1;
        }
        Ok(())
    }

    /// The next status query to answer: the driver renders its page from the status publisher
    /// ([`StatusPublisher::answer`](crate::status::StatusPublisher::answer)) and publishes it,
    /// sealed ([`StatusQuery::seal`](super::StatusQuery::seal)), on its reply topic.
    pub fn poll_query(&mut self) -> Option<super::StatusQuery> {
        self.queries.pop()
    }

    /// Tells a client whose registration could not be authenticated why, unframed (the master
    /// cannot seal for a principal it does not know), at most once a second: the SDK logs it.
    fn refuse_unauthenticated_registration(&mut self, now: u64, client: &str, reason: FrameDrop) {
        if !self.hint_due(now, format!("framework-refused/{client}")) {
            return;
        }
        let message = match reason {
            FrameDrop::UnknownPrincipal => format!(
                "the principal may not speak for client {client}, or this master holds no key \
                 for it (bramble credentials add framework {client})"
            ),
            FrameDrop::Stale => {
                "its time is more than 300 s from the master's clock: set the clocks (NTP)".into()
            }
            other => other.to_string(),
        };
        self.send_client(
            client,
            Event::Error {
                code: ErrorCode::RegistrationRefused,
                offer_id: None,
                message: format!("registration not authenticated: {message}"),
            },
        );
    }

    /// Counts a dropped framework frame; a client without a session is hinted to register (an
    /// unframed `NotRegistered` error), at most once a second.
    fn drop_framework_frame(&mut self, now: u64, client: &str, reason: FrameDrop) -> RecvError {
        self.stats.framework_frames_dropped.count(reason);
        if reason == FrameDrop::UnknownBoot && self.hint_due(now, format!("framework/{client}")) {
            self.stats.hints_sent += 1;
            self.send_client(
                client,
                Event::Error {
                    code: ErrorCode::NotRegistered,
                    offer_id: None,
                    message: "this master has no session with you: register".to_owned(),
                },
            );
        }
        RecvError::Frame(reason)
    }

    /// An authenticated call from the framework behind `client` (a valid id, taken from the
    /// topic).
    fn handle_framework_call(&mut self, now: u64, client: &str, call: Call) {
        if let Some(&fi) = self.clients.get(client) {
            self.framework_changed(fi);
        }
        self.framework_call_by_client(now, client, call);
        if let Some(&fi) = self.clients.get(client) {
            self.framework_changed(fi);
        }
    }

    pub(super) fn framework_call_by_client(&mut self, now: u64, client: &str, call: Call) {
        match call {
            Call::Register(info) => self.register_framework(now, client, None, info),
            Call::ReRegister(r) => {
                self.register_framework(now, client, Some(r.framework_id), r.info)
            }
            Call::Gone { connection } => {
                let Some(&fi) = self.clients.get(client) else {
                    return;
                };
                let current = self.frameworks.get(fi).map_or(0, |f| f.info.connection);
                if connection != 0 && current != 0 && connection != current {
                    // The will of a connection the framework has since replaced, arriving late.
                    self.stats.stale_wills += 1;
                    return;
                }
                self.disconnect_framework(now, fi);
            }
            call => {
                let active = self.clients.get(client).copied().filter(|&fi| {
                    self.frameworks
                        .get(fi)
                        .is_some_and(|f| f.state == FrameworkState::Active)
                });
                match active {
                    Some(fi) => self.framework_call(now, fi, call),
                    None => self.not_registered(client, call),
                }
            }
        }
    }

    /// A call from a client with no registered framework behind it: an explicit answer the SDK
    /// acts on (it registers again), with the offer of an accept named and each of its tasks
    /// reported TASK_LOST, so nothing waits on a launch that did not happen (unless the offer is an
    /// earlier master's, which may have launched them).
    fn not_registered(&mut self, client: &str, call: Call) {
        self.stats.calls_not_registered += 1;
        let offer_id = match &call {
            Call::Accept(a) => Some(a.offer_id),
            _ => None,
        };
        self.send_client(
            client,
            Event::Error {
                code: ErrorCode::NotRegistered,
                offer_id,
                message: format!("no framework is registered as {client}: register"),
            },
        );
        // An earlier master's offer may have been launched by that master: reconciliation
        // settles its tasks.
        if let Call::Accept(a) = call {
            if self.offers.is_earlier_masters(a.offer_id) {
                self.stats.foreign_accepts += 1;
                return;
            }
            let why = "the master knows no framework behind this client";
            for t in a.tasks.iter().take(proto::MAX_TASKS_PER_CALL) {
                self.send_client(client, task::not_launched_event(&t.task_id, why));
            }
        }
    }

    /// A payload arrived on an operator topic. A kill of a task the master does not hold does
    /// nothing; the task's end shows on its status topic like any other.
    /// `wall_secs` is the wall clock in seconds since the Unix epoch: a command is signed by an
    /// operator principal and taken within [`operator_auth::FRESH_SECS`] of it, once.
    pub fn handle_operator_bytes(
        &mut self,
        now: u64,
        wall_secs: u64,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        let query = match topic_name {
            OPERATOR_KILL_TOPIC => false,
            super::OPERATOR_QUERY_TOPIC => true,
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        let keys = self.auth.keys();
        let opened = self
            .operator_auth
            .open(payload, wall_secs, |name| keys.operator_key(name));
        let opened = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                self.stats.operator_commands_refused.count(reason);
                return Err(RecvError::Operator(reason));
            }
        };
        if query {
            return self.take_query(opened.json, opened.key, opened.tag);
        }
        let kill: OperatorKill = serde_json::from_slice(opened.json).map_err(|_| {
            self.stats.malformed += 1;
            RecvError::OperatorDecode
        })?;
        let Some(fi) = self.frameworks.lookup(&kill.framework_id) else {
            return Ok(());
        };
        let held = self.tasks.contains(fi, &kill.task_id);
        if held {
            self.framework_changed(fi);
            let call = Call::Kill(Kill {
                task_id: kill.task_id,
                grace_ms: kill.grace_ms,
            });
            self.framework_call(now, fi, call);
        }
        Ok(())
    }
}
