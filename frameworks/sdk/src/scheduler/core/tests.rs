//! [`SchedulerCore`] driven on simulated time: no broker, no clock, no sleeping.

use std::sync::Arc;

use agent_nostd_core::wire::{MasterEnvelope, MasterMsg, WireMessage};
use agent_nostd_core::Resources;

use super::*;
use crate::protocol::{AgentDescription, Offer, OfferId, StatusUpdate, TaskInfo};
use crate::scheduler::MAX_TIMERS;
use crate::{Reason, TaskState};

/// Records its callbacks; launches one task on every offer, echoes framework messages and stops
/// when a task ends.
#[derive(Debug, Default)]
struct Recorder {
    registered: Vec<(String, u64)>,
    errors: Vec<ErrorCode>,
    messages: Vec<(String, Vec<u8>)>,
    /// The updates passed on, with the outbox length when each came (acks come after).
    updates: Vec<(StatusUpdate, usize)>,
    /// Timers to set on registration: (delay, token).
    arm: Vec<(u64, u64)>,
    /// Timers fired: (now, token).
    fired: Vec<(u64, u64)>,
    /// Fill the outbox up on every update.
    flood: bool,
}

impl Scheduler for Recorder {
    fn registered(&mut self, driver: &mut SchedulerDriver, framework_id: &str, master_epoch: u64) {
        self.registered
            .push((framework_id.to_owned(), master_epoch));
        for (delay, token) in std::mem::take(&mut self.arm) {
            driver.set_timer(delay, token).unwrap();
        }
    }

    fn timer(&mut self, driver: &mut SchedulerDriver, token: u64) {
        self.fired.push((driver.now(), token));
    }

    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for o in offers {
            let task = TaskInfo::new("t1", &["/bin/true"], Resources::new(500, 64, 0));
            driver.launch(o.offer_id, vec![task]).unwrap();
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        self.updates.push((update.clone(), driver.outbox.len()));
        while self.flood && driver.revive().is_ok() {}
        if update.state.is_terminal() {
            driver.stop();
        }
    }

    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&data);
        self.messages.push((task_id.to_owned(), data));
        driver.send_message(task_id, reply).unwrap();
    }

    fn error(&mut self, _: &mut SchedulerDriver, code: ErrorCode, _: Option<OfferId>, _: &str) {
        self.errors.push(code);
    }
}

const CLIENT: &str = "sim";

fn core() -> SchedulerCore<Recorder> {
    SchedulerCore::new(CLIENT, Register::new(CLIENT), Recorder::default()).unwrap()
}

/// Connects and acknowledges the subscription at `now`.
fn connect(core: &mut SchedulerCore<Recorder>, now: u64) {
    core.handle_connected(now, 0);
    assert!(core.poll_subscribe().is_some());
    core.handle_subscribed(now);
}

/// Everything the core hands out now.
fn transmits(core: &mut SchedulerCore<Recorder>) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

/// The message of `payload`, a call frame from `core`: in clear outside a session (a
/// registration, the will), else decrypted in the core's session or the one before it.
fn message_of(core: &SchedulerCore<Recorder>, payload: &[u8]) -> Vec<u8> {
    let key = MessageKey::anonymous();
    let sessions = [
        Some(NO_SESSION),
        core.session.map(|(s, _)| s),
        core.previous_session.map(|(s, _)| s),
    ];
    for session in sessions.into_iter().flatten() {
        let b = binding(Direction::FrameworkUp, CLIENT, session);
        let mut payload = payload.to_vec();
        bramble_proto::frame::decrypt(&key, &b, &mut payload);
        let frame = Frame::split(&payload, Direction::FrameworkUp).unwrap();
        if frame.verifies(&key, &b, frame.counter) {
            return frame.message.to_vec();
        }
    }
    panic!("a call sealed in none of the core's sessions");
}

/// The call a payload (a frame from `core`) carries.
fn decode_call(core: &SchedulerCore<Recorder>, payload: &[u8]) -> Result<Call, DecodeError> {
    Call::decode(&message_of(core, payload))
}

/// `r` without what each registration adds to speak for itself (principal, time, nonce).
fn as_configured(r: &Register) -> Register {
    Register {
        principal: String::new(),
        time: 0,
        nonce: 0,
        ..r.clone()
    }
}

/// The calls the core hands out now, decoded from their payloads (frames).
fn calls(core: &mut SchedulerCore<Recorder>) -> Vec<Call> {
    transmits(core)
        .iter()
        .map(|t| decode_call(core, &t.payload).unwrap())
        .collect()
}

thread_local! {
    /// The number of the next event the test master sends.
    static EVENT_SEQ: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

/// `event` from the master it names (`Registered`) or else from the newest master the core saw.
fn event(core: &mut SchedulerCore<Recorder>, now: u64, event: &Event) {
    let epoch = match event {
        Event::Registered { master_epoch, .. } => *master_epoch,
        _ => core.newest_epoch,
    };
    event_from(core, now, epoch, event);
}

/// `event` as sent by the master of `epoch`: sealed in the session the core's latest
/// registration opened with that master.
fn event_from(core: &mut SchedulerCore<Recorder>, now: u64, epoch: u64, event: &Event) {
    let payload = sealed_event(core, epoch, event);
    core.handle_publish(now, &event_topic(CLIENT), &payload)
        .unwrap();
}

/// `event` of the master of `epoch` as a frame in the session of the core's latest registration.
fn sealed_event(core: &SchedulerCore<Recorder>, epoch: u64, event: &Event) -> Vec<u8> {
    let tag = core.registration_tag.expect("the core registered");
    let seq = EVENT_SEQ.with(|n| {
        let seq = n.get();
        n.set(seq + 1);
        seq
    });
    bramble_proto::frame::seal(
        event.encode_from(epoch),
        &MessageKey::anonymous(),
        Direction::FrameworkDown,
        CLIENT,
        session_of(&tag, epoch),
        seq,
    )
}

fn registered(core: &mut SchedulerCore<Recorder>, now: u64, framework_id: &str, epoch: u64) {
    let e = Event::Registered {
        framework_id: framework_id.into(),
        master_epoch: epoch,
    };
    event(core, now, &e);
}

fn hello(core: &mut SchedulerCore<Recorder>, now: u64, master_epoch: u64) {
    let mut buf = vec![0; MasterEnvelope::MAX_ENCODED_LEN];
    let n = MasterMsg::Hello
        .from_epoch(master_epoch)
        .encode(&mut buf)
        .unwrap();
    core.handle_publish(now, MASTER_HELLO, &buf[..n]).unwrap();
}

fn offer(offer_id: OfferId) -> Offer {
    Offer {
        offer_id,
        agent: Arc::new(AgentDescription {
            agent_id: "pi4".into(),
            hostname: "pi4.lan".into(),
            arch: "aarch64".into(),
            attributes: vec![],
        }),
        resources: Resources::new(4000, 4096, 0),
    }
}

/// Jumps to the core's next wake-up, as a simulation would, and returns that time.
fn advance(core: &mut SchedulerCore<Recorder>) -> u64 {
    let now = core.poll_timeout().expect("a timer is armed");
    core.handle_timeout(now);
    now
}

#[test]
fn new_refuses_a_client_name_that_is_not_an_id() {
    let err = SchedulerCore::new("a b", Register::new("x"), Recorder::default()).unwrap_err();
    assert!(matches!(err, SdkError::BadClientName(_)), "{err}");
}

#[test]
fn connecting_subscribes_to_events_messages_and_the_master_hello_and_registers_on_the_suback() {
    let mut core = core();
    core.handle_connected(0, 0);
    let filters = core.poll_subscribe().unwrap();
    assert_eq!(
        filters,
        [
            event_topic(CLIENT),
            message_topic(CLIENT),
            MASTER_HELLO.to_owned()
        ]
    );
    assert_eq!(core.poll_subscribe(), None);
    assert!(core.poll_transmit().is_none(), "nothing before the SubAck");
    assert_eq!(core.poll_timeout(), None);

    core.handle_subscribed(10);
    let sent = transmits(&mut core);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic, register_topic(CLIENT));
    assert_eq!(sent[0].qos, QoS::AtLeastOnce);
    assert!(!sent[0].retain);
    let Outgoing::Call(Call::Register(r)) = sent[0].outgoing() else {
        panic!("expected a registration, got {sent:?}");
    };
    assert_eq!(as_configured(r), Register::new(CLIENT));
    assert_eq!(r.principal, "framework-sim");
    assert_eq!(
        decode_call(&core, &sent[0].payload),
        Ok(Call::Register(r.clone()))
    );
    assert_eq!(core.poll_timeout(), Some(10 + 2_000));
}

#[test]
fn registration_is_retried_with_doubling_backoff_capped_at_thirty_seconds_until_registered() {
    let mut core = core();
    connect(&mut core, 0);
    assert_eq!(calls(&mut core).len(), 1);

    // Too early: nothing happens.
    core.handle_timeout(1_999);
    assert!(core.poll_transmit().is_none());

    let mut attempts = vec![0];
    while attempts.len() < 8 {
        let now = advance(&mut core);
        let sent = calls(&mut core);
        assert!(matches!(sent[..], [Call::Register(_)]), "{sent:?}");
        attempts.push(now);
    }
    let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);

    let now = *attempts.last().unwrap() + 5;
    registered(&mut core, now, "1-1", 7);
    assert!(core.is_registered());
    assert_eq!(core.poll_timeout(), None, "no retry once registered");
    assert_eq!(core.scheduler().registered, [("1-1".to_owned(), 7)]);
    assert_eq!(core.driver().framework_id(), Some("1-1"));
    assert_eq!(core.driver().master_epoch(), Some(7));
}

#[test]
fn retries_replace_a_registration_still_waiting_instead_of_piling_up() {
    let mut core = core();
    connect(&mut core, 0);
    // The transport took nothing; the retry comes due.
    advance(&mut core);
    advance(&mut core);
    assert_eq!(calls(&mut core).len(), 1);
}

#[test]
fn a_new_master_epoch_in_the_hello_makes_the_core_re_register_with_its_id() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 100, "1-7", 1);

    // The same master saying hello again changes nothing.
    hello(&mut core, 200, 1);
    assert!(core.poll_transmit().is_none());
    assert!(core.is_registered());

    hello(&mut core, 300, 2);
    assert!(!core.is_registered());
    let sent = transmits(&mut core);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic, register_topic(CLIENT));
    let Call::ReRegister(rr) = decode_call(&core, &sent[0].payload).unwrap() else {
        panic!("expected a re-registration, got {sent:?}")
    };
    assert_eq!(rr.framework_id, "1-7");
    assert_eq!(as_configured(&rr.info), Register::new(CLIENT));
    // The backoff starts over for the new master.
    assert_eq!(core.poll_timeout(), Some(300 + 2_000));

    registered(&mut core, 400, "1-7", 2);
    assert_eq!(
        core.scheduler().registered,
        [("1-7".to_owned(), 1), ("1-7".to_owned(), 2)]
    );
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_registration_confirmed_again_does_not_call_the_scheduler_twice() {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    registered(&mut core, 20, "1-1", 1);
    assert_eq!(core.scheduler().registered.len(), 1);
}

#[test]
fn a_reconnect_registers_again_with_the_id_after_the_suback() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);

    core.handle_disconnected(1_000);
    core.handle_connected(2_000, 0);
    assert!(!core.is_registered());
    assert!(core.poll_subscribe().is_some());
    assert!(core.poll_transmit().is_none());
    core.handle_subscribed(2_010);
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::ReRegister(rr)] if rr.framework_id == "1-1"),
        "{sent:?}"
    );
}

#[test]
fn a_lost_connection_forgets_the_suback_it_was_waiting_for() {
    let mut core = core();
    core.handle_connected(0, 0);
    core.poll_subscribe().unwrap();
    core.handle_disconnected(5);
    core.handle_subscribed(6);
    assert!(core.poll_transmit().is_none());
}

#[test]
fn a_refused_subscription_registers_anyway() {
    let mut core = core();
    core.handle_connected(0, 0);
    core.poll_subscribe().unwrap();
    core.handle_subscribe_failed(0);
    assert!(matches!(calls(&mut core)[..], [Call::Register(_)]));
}

#[test]
fn a_refused_re_registration_registers_as_a_new_framework() {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    hello(&mut core, 20, 2);
    assert!(matches!(calls(&mut core)[..], [Call::ReRegister(_)]));

    let refused = Event::Error {
        code: ErrorCode::RegistrationRefused,
        offer_id: None,
        message: "unknown framework".into(),
    };
    event(&mut core, 30, &refused);
    assert!(matches!(calls(&mut core)[..], [Call::Register(_)]));
    assert_eq!(core.driver().framework_id(), None);
    assert_eq!(core.scheduler().errors, [ErrorCode::RegistrationRefused]);
}

#[test]
fn not_registered_from_the_master_makes_the_core_register_again() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);
    let e = Event::Error {
        code: ErrorCode::NotRegistered,
        offer_id: None,
        message: String::new(),
    };
    event(&mut core, 20, &e);
    assert!(!core.is_registered());
    assert!(matches!(calls(&mut core)[..], [Call::ReRegister(_)]));
    assert_eq!(core.poll_timeout(), Some(20 + 2_000));
}

#[test]
fn payloads_that_do_not_decode_are_counted_and_dropped() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);

    let bad_event = core.handle_publish(1, &event_topic(CLIENT), &[1, 200, 3]);
    assert!(
        matches!(bad_event, Err(PublishError::BadEvent(_))),
        "{bad_event:?}"
    );
    let empty = core.handle_publish(2, &event_topic(CLIENT), &[]);
    assert_eq!(empty, Err(PublishError::BadEvent(DecodeError::Empty)));
    let bad_message = core.handle_publish(3, &message_topic(CLIENT), &[9]);
    assert!(matches!(bad_message, Err(PublishError::BadMessage(_))));
    let bad_hello = core.handle_publish(4, MASTER_HELLO, &[0xFF]);
    assert_eq!(bad_hello, Err(PublishError::BadHello));
    let elsewhere = core.handle_publish(5, "bramble/v1/else", &[1]);
    assert_eq!(elsewhere, Err(PublishError::UnknownTopic));

    let stats = core.stats();
    assert_eq!((stats.malformed, stats.misrouted), (4, 1));
    assert_eq!((stats.events, stats.messages), (0, 0));
    assert!(core.poll_transmit().is_none());

    // The core carries on.
    registered(&mut core, 6, "1-1", 1);
    assert!(core.is_registered());
    assert_eq!(core.stats().events, 1);
}

#[test]
fn calls_made_in_callbacks_come_out_of_poll_transmit_in_order_on_their_topics() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);

    event(&mut core, 20, &Event::Offers(vec![offer(41), offer(42)]));
    let sent = transmits(&mut core);
    assert_eq!(sent.len(), 2);
    for (t, id) in sent.iter().zip([41, 42]) {
        assert_eq!(t.topic, call_topic(CLIENT));
        let Call::Accept(accept) = decode_call(&core, &t.payload).unwrap() else {
            panic!("expected an accept, got {t:?}")
        };
        assert_eq!(accept.offer_id, id);
        assert_eq!(Outgoing::Call(Call::Accept(accept)), *t.outgoing());
    }

    let ping = FrameworkMessage {
        task_id: "t1".into(),
        data: b"ping".to_vec(),
    };
    core.handle_publish(30, &message_topic(CLIENT), &ping.encode())
        .unwrap();
    let sent = transmits(&mut core);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic, exec_topic(CLIENT, "t1"));
    let reply = FrameworkMessage::decode(&sent[0].payload).unwrap();
    assert_eq!(reply.data, b"echo:ping");
    assert_eq!(
        core.scheduler().messages,
        [("t1".to_owned(), b"ping".to_vec())]
    );
    assert_eq!(core.stats().messages, 1);
}

#[test]
fn a_registration_goes_out_ahead_of_calls_already_queued() {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    // The Register and the Accept wait in the outbox when a new master says hello.
    event(&mut core, 20, &Event::Offers(vec![offer(1)]));
    hello(&mut core, 30, 2);
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::ReRegister(_), Call::Accept(_)]),
        "{sent:?}"
    );
}

#[test]
fn a_transmit_handed_back_comes_out_first_again() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);
    event(&mut core, 20, &Event::Offers(vec![offer(1), offer(2)]));

    let mut first = core.poll_transmit().unwrap();
    let payload = std::mem::take(&mut first.payload);
    core.requeue_transmit(first);
    let again = core.poll_transmit().unwrap();
    let message = |p: &[u8]| message_of(&core, p);
    assert_eq!(message(&again.payload), message(&payload), "encoded again");
    assert!(matches!(again.outgoing(), Outgoing::Call(Call::Accept(a)) if a.offer_id == 1));
    assert_eq!(calls(&mut core).len(), 1);
}

#[test]
fn a_stopping_scheduler_tears_down_and_the_core_is_done_once_the_teardown_is_handed_out() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);
    assert!(!core.is_stopping());

    let ended = Event::Update(StatusUpdate {
        task_id: "t1".into(),
        agent_id: Some("pi4".into()),
        state: TaskState::Finished,
        reason: Reason::Exited { code: 0 },
        message: String::new(),
        update_id: None,
    });
    event(&mut core, 20, &ended);
    assert!(core.is_stopping());
    assert!(!core.is_done(), "the teardown is still queued");
    assert_eq!(calls(&mut core), [Call::Teardown]);
    assert!(core.is_done());
}

#[test]
fn stop_from_outside_tears_the_framework_down_once() {
    let mut core = core();
    connect(&mut core, 0);
    calls(&mut core);
    registered(&mut core, 10, "1-1", 1);
    core.stop();
    core.stop();
    assert_eq!(calls(&mut core), [Call::Teardown]);
    assert!(core.is_done());
    assert_eq!(core.into_scheduler().registered.len(), 1);
}

// ----- delivery: acknowledgements, redeliveries, reconciliation, timers, wills -----

fn update(task: &str, state: TaskState, update_id: Option<u32>) -> StatusUpdate {
    StatusUpdate {
        task_id: task.into(),
        agent_id: Some("pi4".into()),
        state,
        reason: Reason::None,
        message: String::new(),
        update_id,
    }
}

fn ack(task: &str, update_id: u32) -> Call {
    Call::Acknowledge(crate::protocol::Acknowledge {
        agent_id: "pi4".into(),
        task_id: task.into(),
        update_id,
    })
}

/// A registered core that launched task `t1` on offer 1 at time 100; its calls are taken.
fn launched() -> SchedulerCore<Recorder> {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    event(&mut core, 100, &Event::Offers(vec![offer(1)]));
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::Register(_), Call::Accept(_)]),
        "{sent:?}"
    );
    core
}

fn passed_on(core: &SchedulerCore<Recorder>) -> Vec<(TaskState, Option<u32>)> {
    core.scheduler()
        .updates
        .iter()
        .map(|(u, _)| (u.state, u.update_id))
        .collect()
}

#[test]
fn an_agent_update_is_acknowledged_after_the_scheduler_handled_it() {
    let mut core = launched();
    event(
        &mut core,
        200,
        &Event::Update(update("t1", TaskState::Running, Some(3))),
    );
    // The outbox was empty while the callback ran: the ack was queued after it returned.
    assert_eq!(core.scheduler().updates[0].1, 0);
    assert_eq!(calls(&mut core), [ack("t1", 3)]);
    assert_eq!(core.stats().acks, 1);
    assert_eq!(core.task_state("t1"), Some(TaskState::Running));
}

#[test]
fn an_update_from_the_master_is_passed_on_without_an_acknowledgement() {
    let mut core = launched();
    event(
        &mut core,
        200,
        &Event::Update(update("t1", TaskState::Running, None)),
    );
    assert_eq!(passed_on(&core), [(TaskState::Running, None)]);
    assert!(calls(&mut core).is_empty());
}

#[test]
fn a_redelivered_update_is_acknowledged_again_but_not_passed_to_the_scheduler_twice() {
    let mut core = launched();
    let running = Event::Update(update("t1", TaskState::Running, Some(2)));
    event(&mut core, 200, &running);
    event(&mut core, 300, &running);
    // An older update arriving late is not news either.
    event(
        &mut core,
        310,
        &Event::Update(update("t1", TaskState::Starting, Some(1))),
    );
    assert_eq!(calls(&mut core), [ack("t1", 2), ack("t1", 2), ack("t1", 1)]);
    assert_eq!(passed_on(&core), [(TaskState::Running, Some(2))]);
    assert_eq!(core.stats().duplicates, 2);
}

#[test]
fn update_ids_are_compared_as_serial_numbers_across_the_wrap() {
    let mut core = launched();
    event(
        &mut core,
        200,
        &Event::Update(update("t1", TaskState::Starting, Some(u32::MAX))),
    );
    event(
        &mut core,
        210,
        &Event::Update(update("t1", TaskState::Running, Some(0))),
    );
    assert_eq!(
        passed_on(&core),
        [
            (TaskState::Starting, Some(u32::MAX)),
            (TaskState::Running, Some(0))
        ]
    );
}

#[test]
fn a_late_redelivery_of_a_terminal_update_is_acknowledged_but_not_passed_on() {
    let mut core = launched();
    let finished = Event::Update(update("t1", TaskState::Finished, Some(4)));
    event(&mut core, 200, &finished);
    // The recorder stopped on the terminal update: the ack still goes out, ahead of the teardown.
    assert_eq!(calls(&mut core), [ack("t1", 4), Call::Teardown]);
    event(&mut core, 60_000, &finished);
    assert_eq!(calls(&mut core), [ack("t1", 4)]);
    assert_eq!(passed_on(&core), [(TaskState::Finished, Some(4))]);
}

#[test]
fn a_reconciliation_answer_repeating_the_known_state_is_not_passed_on() {
    let mut core = launched();
    event(
        &mut core,
        200,
        &Event::Update(update("t1", TaskState::Running, Some(2))),
    );
    event(
        &mut core,
        300,
        &Event::Update(update("t1", TaskState::Running, None)),
    );
    assert_eq!(passed_on(&core), [(TaskState::Running, Some(2))]);
    assert_eq!(core.stats().repeats, 1);
    // A different state is news.
    event(
        &mut core,
        400,
        &Event::Update(update("t1", TaskState::Lost, None)),
    );
    assert_eq!(passed_on(&core).len(), 2);
}

#[test]
fn ended_tasks_are_remembered_up_to_their_bound_and_the_oldest_is_forgotten() {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    core.scheduler_mut().registered.clear();
    for n in 0..=ENDED_TASKS_CAPACITY {
        let mut u = update(&format!("e{n}"), TaskState::Failed, Some(1));
        u.agent_id = Some("pi4".into());
        // The recorder stops on a terminal update; keep it going by reading the state only.
        assert!(core.note_update(20, &u));
    }
    assert_eq!(core.stats().ended_forgotten, 1);
    assert_eq!(core.task_state("e0"), None);
    assert_eq!(core.task_state("e1"), Some(TaskState::Failed));
    assert_eq!(core.tasks.len(), ENDED_TASKS_CAPACITY);
}

#[test]
fn every_registered_reconciles_the_tasks_not_ended_even_with_the_same_id_and_epoch() {
    let mut core = launched();
    event(
        &mut core,
        150,
        &Event::Update(update("t1", TaskState::Running, Some(1))),
    );
    calls(&mut core);
    // A broker restart: the same master confirms the same registration.
    core.handle_disconnected(1_000);
    connect(&mut core, 2_000);
    assert!(matches!(calls(&mut core)[..], [Call::ReRegister(_)]));
    registered(&mut core, 2_010, "1-1", 1);
    assert_eq!(core.scheduler().registered.len(), 1, "no second callback");
    assert_eq!(
        calls(&mut core),
        [Call::Reconcile {
            task_ids: vec!["t1".into()]
        }]
    );
    // An ended task is not asked for.
    event(
        &mut core,
        3_000,
        &Event::Update(update("t1", TaskState::Finished, Some(2))),
    );
    calls(&mut core);
    core.handle_disconnected(4_000);
    connect(&mut core, 4_000);
    calls(&mut core);
    registered(&mut core, 4_010, "1-1", 1);
    assert!(calls(&mut core).is_empty());
}

#[test]
fn a_reconciliation_is_split_into_calls_the_master_takes() {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    for n in 0..300 {
        let u = update(&format!("r{n}"), TaskState::Running, Some(1));
        assert!(core.note_update(20, &u));
    }
    calls(&mut core);
    registered(&mut core, 30, "1-1", 1);
    let sent = calls(&mut core);
    let sizes: Vec<usize> = sent
        .iter()
        .map(|c| match c {
            Call::Reconcile { task_ids } => task_ids.len(),
            other => panic!("not a reconcile: {other:?}"),
        })
        .collect();
    assert_eq!(sizes, [MAX_TASKS_PER_CALL, 300 - MAX_TASKS_PER_CALL]);
}

#[test]
fn a_task_without_news_is_reconciled_periodically() {
    let mut core = launched();
    // Launched at 100 and not heard of: reconciled 10 s later, and every 10 s while unanswered.
    assert_eq!(core.poll_timeout(), Some(100 + RECONCILE_STAGING_MS));
    let reconcile_t1 = Call::Reconcile {
        task_ids: vec!["t1".into()],
    };
    assert_eq!(advance(&mut core), 10_100);
    assert_eq!(calls(&mut core), std::slice::from_ref(&reconcile_t1));
    assert_eq!(advance(&mut core), 20_100);
    assert_eq!(calls(&mut core), std::slice::from_ref(&reconcile_t1));
    // Running: asked again only after two minutes of silence.
    event(
        &mut core,
        25_000,
        &Event::Update(update("t1", TaskState::Running, Some(1))),
    );
    calls(&mut core);
    // (The wake-up planned before the news finds nothing due and plans the next.)
    assert_eq!(advance(&mut core), 30_100);
    assert!(calls(&mut core).is_empty());
    assert_eq!(advance(&mut core), 25_000 + RECONCILE_IDLE_MS);
    assert_eq!(calls(&mut core), [reconcile_t1]);
    // Ended: nothing left to reconcile.
    event(
        &mut core,
        150_000,
        &Event::Update(update("t1", TaskState::Finished, Some(2))),
    );
    calls(&mut core);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn the_tasks_of_a_refused_accept_are_reconciled_since_a_copy_of_the_accept_may_have_launched_them()
{
    let mut core = launched();
    let refused = Event::Error {
        code: ErrorCode::UnknownOffer,
        offer_id: Some(1),
        message: "no such offer".into(),
    };
    event(&mut core, 200, &refused);
    assert_eq!(advance(&mut core), 100 + RECONCILE_STAGING_MS);
    assert_eq!(
        calls(&mut core),
        [Call::Reconcile {
            task_ids: vec!["t1".into()]
        }]
    );
    // The master knows no such task: it ends, and nothing is left to reconcile.
    let mut unknown = update("t1", TaskState::Lost, None);
    unknown.agent_id = None;
    unknown.reason = Reason::UnknownTask;
    event(&mut core, 10_200, &Event::Update(unknown));
    assert_eq!(core.task_state("t1"), Some(TaskState::Lost));
    calls(&mut core);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn timers_fire_in_the_order_of_their_deadlines_with_the_time_they_are_due() {
    let mut core = core();
    core.scheduler_mut().arm = vec![(500, 2), (100, 1), (500, 3)];
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    assert_eq!(core.poll_timeout(), Some(110));
    core.handle_timeout(109);
    assert!(core.scheduler().fired.is_empty());
    assert_eq!(advance(&mut core), 110);
    assert_eq!(advance(&mut core), 510);
    assert_eq!(core.scheduler().fired, [(110, 1), (510, 2), (510, 3)]);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_full_timer_table_refuses_another_timer_with_a_typed_error() {
    let mut d = SchedulerDriver::new(CLIENT);
    for token in 0..MAX_TIMERS as u64 {
        d.set_timer(1_000, token).unwrap();
    }
    assert_eq!(
        d.set_timer(1, 0),
        Err(crate::CallError::TooManyTimers(MAX_TIMERS))
    );
    assert_eq!(d.cancel_timer(7), 1);
    assert!(d.set_timer(1, 7).is_ok());
}

#[test]
fn timers_do_not_fire_once_the_scheduler_stops() {
    let mut core = core();
    core.scheduler_mut().arm = vec![(100, 1)];
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 1);
    core.stop();
    assert_eq!(core.poll_timeout(), None);
    core.handle_timeout(1_000);
    assert!(core.scheduler().fired.is_empty());
}

#[test]
fn the_registration_names_the_connection_its_last_will_names() {
    let mut core = core();
    core.handle_connected(0, 0xfeed);
    core.poll_subscribe().unwrap();
    core.handle_subscribed(0);
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::Register(r)] if r.connection == 0xfeed),
        "{sent:?}"
    );
    registered(&mut core, 10, "1-1", 1);
    // A reconnection is a new connection: the re-registration names it.
    core.handle_disconnected(20);
    core.handle_connected(30, 0xbeef);
    core.poll_subscribe().unwrap();
    core.handle_subscribed(30);
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::ReRegister(rr)] if rr.info.connection == 0xbeef),
        "{sent:?}"
    );
}

#[test]
fn a_masters_answer_that_differs_from_an_ended_state_is_passed_on_so_the_agents_word_wins() {
    let mut core = launched();
    // A restarted master that does not know the task yet answers LOST; the agent then reports
    // the task's real end through it.
    let mut unknown = update("t1", TaskState::Lost, None);
    unknown.agent_id = None;
    unknown.reason = Reason::UnknownTask;
    core.note_update(200, &unknown);
    assert_eq!(core.task_state("t1"), Some(TaskState::Lost));
    event(
        &mut core,
        300,
        &Event::Update(update("t1", TaskState::Finished, None)),
    );
    assert_eq!(passed_on(&core), [(TaskState::Finished, None)]);
    assert_eq!(core.task_state("t1"), Some(TaskState::Finished));
}

#[test]
fn an_acknowledgement_that_finds_the_outbox_full_is_counted_and_the_redelivery_is_acknowledged() {
    let mut core = launched();
    core.scheduler_mut().flood = true;
    let running = Event::Update(update("t1", TaskState::Running, Some(2)));
    event(&mut core, 200, &running);
    assert_eq!(core.stats().acks_dropped, 1);
    assert!(!calls(&mut core).contains(&ack("t1", 2)));
    // The agent resends; this time there is room.
    core.scheduler_mut().flood = false;
    event(&mut core, 1_200, &running);
    assert_eq!(calls(&mut core), [ack("t1", 2)]);
    assert_eq!(passed_on(&core).len(), 1, "the redelivery is not passed on");
}

#[test]
fn a_reconciliation_that_finds_the_outbox_full_is_counted_and_tried_again_a_period_later() {
    let mut core = launched();
    core.scheduler_mut().flood = true;
    // An update of another task fills the outbox from the callback.
    event(
        &mut core,
        200,
        &Event::Update(update("t2", TaskState::Running, None)),
    );
    assert_eq!(advance(&mut core), 100 + RECONCILE_STAGING_MS);
    assert_eq!(core.stats().reconciles_dropped, 1);
    // No deadline in the past: the next try is a period later.
    assert_eq!(core.poll_timeout(), Some(100 + 2 * RECONCILE_STAGING_MS));
    calls(&mut core);
    core.scheduler_mut().flood = false;
    assert_eq!(advance(&mut core), 100 + 2 * RECONCILE_STAGING_MS);
    assert_eq!(
        calls(&mut core),
        [Call::Reconcile {
            task_ids: vec!["t1".into()]
        }]
    );
}

// ----- fencing: events of an older master epoch -----

/// A core registered as `1-1` with the master of epoch 2; its calls are taken.
fn registered_with_epoch_two() -> SchedulerCore<Recorder> {
    let mut core = core();
    connect(&mut core, 0);
    registered(&mut core, 10, "1-1", 2);
    calls(&mut core);
    core
}

/// What a deposed master might still send: offers, updates (an agent's and its own reconciliation
/// answer), an error, a rescind and an agent loss.
fn zombie_events() -> Vec<Event> {
    vec![
        Event::Offers(vec![offer(7)]),
        Event::Update(update("t1", TaskState::Running, Some(3))),
        Event::Update(StatusUpdate {
            agent_id: None,
            reason: Reason::UnknownTask,
            ..update("t1", TaskState::Lost, None)
        }),
        Event::Error {
            code: ErrorCode::NotRegistered,
            offer_id: None,
            message: "who are you".into(),
        },
        Event::Rescind { offer_id: 7 },
        Event::AgentLost {
            agent_id: "pi4".into(),
        },
    ]
}

#[test]
fn offers_updates_and_errors_from_an_older_master_are_ignored_and_not_acknowledged() {
    let mut core = registered_with_epoch_two();
    for (k, e) in zombie_events().iter().enumerate() {
        event_from(&mut core, 100 + k as u64, 1, e);
    }
    assert!(
        calls(&mut core).is_empty(),
        "no accept, ack or registration"
    );
    assert!(core.scheduler().updates.is_empty());
    assert!(core.scheduler().errors.is_empty());
    assert_eq!(core.task_state("t1"), None);
    assert!(
        core.is_registered(),
        "a NotRegistered from a zombie is not believed"
    );
    assert_eq!(core.stats().stale_master, 6);
    assert_eq!(core.stats().acks, 0);
}

#[test]
fn offers_updates_and_errors_from_the_current_master_are_acted_on() {
    let mut core = registered_with_epoch_two();
    event_from(&mut core, 100, 2, &Event::Offers(vec![offer(7)]));
    assert!(matches!(&calls(&mut core)[..], [Call::Accept(a)] if a.offer_id == 7));
    let running = Event::Update(update("t1", TaskState::Running, Some(3)));
    event_from(&mut core, 110, 2, &running);
    assert_eq!(calls(&mut core), [ack("t1", 3)]);
    assert_eq!(passed_on(&core), [(TaskState::Running, Some(3))]);
    let refused = Event::Error {
        code: ErrorCode::AcceptRefused,
        offer_id: Some(7),
        message: "no".into(),
    };
    event_from(&mut core, 120, 2, &refused);
    assert_eq!(core.scheduler().errors, [ErrorCode::AcceptRefused]);
    assert_eq!(core.stats().stale_master, 0);
}

#[test]
fn a_registration_answered_by_an_older_master_is_ignored() {
    let mut core = registered_with_epoch_two();
    registered(&mut core, 100, "1-9", 1);
    assert_eq!(core.driver().framework_id(), Some("1-1"));
    assert_eq!(core.driver().master_epoch(), Some(2));
    assert_eq!(core.scheduler().registered, [("1-1".to_owned(), 2)]);
    assert_eq!(core.stats().stale_master, 1);
}

#[test]
fn an_event_from_a_newer_master_makes_the_core_re_register_and_is_acted_on() {
    let mut core = registered_with_epoch_two();
    let running = Event::Update(update("t1", TaskState::Running, Some(3)));
    event_from(&mut core, 100, 3, &running);
    let sent = calls(&mut core);
    assert!(
        matches!(&sent[..], [Call::ReRegister(r), a] if r.framework_id == "1-1" && *a == ack("t1", 3)),
        "{sent:?}"
    );
    assert!(!core.is_registered());
    assert_eq!(passed_on(&core), [(TaskState::Running, Some(3))]);
    // From now on the master of epoch 2 is the older one.
    event_from(&mut core, 110, 2, &Event::Offers(vec![offer(8)]));
    assert!(calls(&mut core).is_empty());
    assert_eq!(core.stats().stale_master, 1);
    registered(&mut core, 120, "1-1", 3);
    assert!(core.is_registered());
    assert_eq!(core.driver().master_epoch(), Some(3));
}

#[test]
fn after_a_newer_masters_answer_the_older_masters_events_are_ignored() {
    let mut core = registered_with_epoch_two();
    // A hello is not authenticated: it makes the framework register with that master, and only
    // the master's own answer moves the fence.
    hello(&mut core, 100, 3);
    assert!(matches!(&calls(&mut core)[..], [Call::ReRegister(_)]));
    assert_eq!(core.newest_epoch, 2, "a hello alone fences nothing out");
    registered(&mut core, 105, "1-1", 3);
    calls(&mut core);
    for e in zombie_events() {
        event_from(&mut core, 110, 2, &e);
    }
    assert!(calls(&mut core).is_empty());
    assert!(core.scheduler().updates.is_empty());
    assert_eq!(core.stats().stale_master, 6);
}

#[test]
fn a_teardown_waits_for_an_outstanding_registration_so_it_cannot_overtake_it() {
    let mut core = registered_with_epoch_two();
    hello(&mut core, 100, 3);
    core.stop();
    assert!(matches!(&calls(&mut core)[..], [Call::ReRegister(_)]));
    assert!(!core.is_done(), "the teardown waits for the new master");
    registered(&mut core, 120, "1-1", 3);
    assert_eq!(calls(&mut core), [Call::Teardown]);
    assert!(core.is_done());
}

#[test]
fn forged_unframed_and_replayed_events_are_counted_and_never_acted_on() {
    let mut core = launched();
    let finished = Event::Update(update("t1", TaskState::Finished, Some(9)));
    // Unframed, as any broker client could publish it.
    assert_eq!(
        core.handle_publish(200, &event_topic(CLIENT), &finished.encode_from(1)),
        Err(PublishError::Unauthenticated)
    );
    // Sealed in the framework's session, but with another key.
    let tag = core.registration_tag.unwrap();
    let forged = bramble_proto::frame::seal(
        finished.encode_from(1),
        &agent_nostd_core::auth::Secret::from_bytes([7; 32]).message_key(),
        Direction::FrameworkDown,
        CLIENT,
        session_of(&tag, 1),
        1_000,
    );
    assert_eq!(
        core.handle_publish(201, &event_topic(CLIENT), &forged),
        Err(PublishError::BadTag)
    );
    assert!(
        core.scheduler().updates.is_empty(),
        "nothing reached the scheduler"
    );
    assert_eq!(core.task_state("t1"), None);
    // A genuine event, then its replay.
    let running = sealed_event(
        &core,
        1,
        &Event::Update(update("t1", TaskState::Running, Some(3))),
    );
    core.handle_publish(202, &event_topic(CLIENT), &running)
        .unwrap();
    assert_eq!(
        core.handle_publish(203, &event_topic(CLIENT), &running),
        Err(PublishError::Replayed)
    );
    assert_eq!(passed_on(&core), [(TaskState::Running, Some(3))]);
    assert_eq!(core.stats().unauthenticated, 3);
}

#[test]
fn a_masters_unframed_not_registered_hint_makes_the_core_register_again_once_a_second() {
    let mut core = launched();
    calls(&mut core);
    let hint = Event::Error {
        code: ErrorCode::NotRegistered,
        offer_id: None,
        message: "no session".into(),
    }
    .encode_from(1);
    assert_eq!(
        core.handle_publish(200, &event_topic(CLIENT), &hint),
        Err(PublishError::Hint)
    );
    assert!(!core.is_registered());
    assert!(matches!(&calls(&mut core)[..], [Call::ReRegister(_)]));
    assert_eq!(
        core.handle_publish(300, &event_topic(CLIENT), &hint),
        Err(PublishError::Hint)
    );
    assert!(
        calls(&mut core).is_empty(),
        "a flood of hints costs one registration a second"
    );
    assert_eq!(core.stats().hints, 2);
}

#[test]
fn calls_are_sealed_in_the_session_the_masters_answer_opened() {
    let mut core = launched();
    let tag = core.registration_tag.unwrap();
    event(
        &mut core,
        200,
        &Event::Update(update("t1", TaskState::Running, Some(3))),
    );
    let sent = transmits(&mut core);
    let key = MessageKey::anonymous();
    let session = session_of(&tag, 1);
    let mut payload = sent[0].payload.clone();
    let b = binding(Direction::FrameworkUp, CLIENT, session);
    bramble_proto::frame::decrypt(&key, &b, &mut payload);
    assert_ne!(payload, sent[0].payload, "a call in a session is encrypted");
    let frame = Frame::split(&payload, Direction::FrameworkUp).unwrap();
    assert!(frame.verifies(
        &key,
        &binding(Direction::FrameworkUp, CLIENT, session),
        frame.counter
    ));
    assert!(!frame.verifies(
        &key,
        &binding(Direction::FrameworkUp, CLIENT, NO_SESSION),
        frame.counter
    ));
}
