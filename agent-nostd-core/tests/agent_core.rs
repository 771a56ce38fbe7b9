//! Behaviour of the agent state machine, driven on simulated time through its public interface. Every
//! transmit is decoded from its real bytes and checked against its topic.

mod samples;

use agent_nostd_core::agent::{
    Action, AgentCore, Config, EndedTask, Exit, LocalEvent, RecvError, ResourceSample, Signal,
    Stats, TransmitBuf, UPDATE_ID_BLOCK,
};
use agent_nostd_core::ids::id;
use agent_nostd_core::topic::{self, AgentTopic, QoS};
use agent_nostd_core::wire::*;
use agent_nostd_core::Resources;
use samples::{down_frame, info, key, open_up, run_task, s};

const CMD: &str = "bramble/v1/agent/pi4/cmd";

/// One published message, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    topic: String,
    qos: QoS,
    msg: AgentMsg,
}

struct Rig {
    core: AgentCore,
    now: u64,
    buf: Box<TransmitBuf>,
    /// The number of the next downlink frame.
    down_seq: u32,
}

impl Rig {
    /// A connected agent with 4 CPU / 3800 MiB / 20000 MiB, not yet registered.
    fn new() -> Self {
        let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
        core.handle_connected(0, 7);
        Rig {
            core,
            now: 0,
            buf: Box::new([0; MAX_UP_FRAME_LEN]),
            down_seq: 1,
        }
    }

    /// A connected agent that registered with master epoch 1 and sent its first report.
    fn registered() -> Self {
        let mut rig = Rig::new();
        let sent = rig.drain();
        assert!(matches!(sent[0].msg, AgentMsg::Register(_)));
        rig.master_at(
            1,
            MasterMsg::RegisterAck(RegisterAck {
                agent_id: id("pi4").unwrap(),
            }),
        );
        let sent = rig.drain();
        assert!(
            matches!(
                sent[..],
                [Sent {
                    msg: AgentMsg::Report(_),
                    ..
                }]
            ),
            "{sent:?}"
        );
        rig
    }

    fn drain(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_transmit(self.now, &mut self.buf) {
            let (msg, _) = open_up("pi4", self.core.boot(), &self.buf[..t.len]);
            assert_eq!(t.topic, msg.topic("pi4"), "message on the wrong topic");
            assert_eq!(t.qos, msg.kind().qos());
            assert!(!t.retain);
            out.push(Sent {
                topic: t.topic.as_str().to_owned(),
                qos: t.qos,
                msg,
            });
            assert!(out.len() < 1000, "poll_transmit never runs dry");
        }
        out
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    /// Sends a message from the master the agent obeys (epoch 1 before any) through the real
    /// codec and topic check.
    fn master(&mut self, msg: MasterMsg) {
        self.master_at(self.core.master_epoch().max(1), msg);
    }

    /// Sends a message from the master of `epoch`; it must be taken.
    fn master_at(&mut self, epoch: u64, msg: MasterMsg) {
        self.try_master_at(epoch, msg).unwrap();
    }

    /// The hello goes unframed on its topic, anything else as the next downlink frame.
    fn try_master_at(&mut self, epoch: u64, msg: MasterMsg) -> Result<MasterMsg, RecvError> {
        if matches!(msg, MasterMsg::Hello) {
            let mut buf = vec![0; MasterEnvelope::MAX_ENCODED_LEN];
            let n = msg.from_epoch(epoch).encode(&mut buf).unwrap();
            return self
                .core
                .handle_bytes(self.now, topic::MASTER_HELLO, &mut buf[..n].to_vec());
        }
        let frame = down_frame("pi4", self.core.boot(), self.down_seq, epoch, msg);
        self.down_seq += 1;
        self.core.handle_bytes(self.now, CMD, &mut frame.to_vec())
    }

    fn advance_to(&mut self, t: u64) {
        assert!(t >= self.now);
        self.now = t;
        self.core.handle_timeout(t);
    }

    /// Jumps to the next wake-up the core asked for.
    fn step(&mut self) -> u64 {
        let t = self.core.poll_timeout().expect("a wake-up is scheduled");
        self.advance_to(t);
        t
    }

    fn event(&mut self, event: LocalEvent<'_>) {
        self.core.handle_event(self.now, event).unwrap();
    }

    fn run(&mut self, task: &str, cpu: u32, mem: u32) {
        let mut run = run_task();
        run.task_id = id(task).unwrap();
        run.resources = Resources::new(cpu, mem, 0);
        self.master(MasterMsg::RunTask(run));
    }

    /// Runs a task through launch and Started; its updates are not acknowledged yet.
    fn started(&mut self, task: &str, cpu: u32, mem: u32) {
        self.run(task, cpu, mem);
        let actions = self.actions();
        assert!(
            matches!(actions[..], [Action::Launch { .. }]),
            "{actions:?}"
        );
        self.event(LocalEvent::Started {
            framework_id: "fw-1",
            task_id: task,
        });
    }

    /// Runs a task through launch and Started, acking its STARTING and RUNNING updates.
    fn running(&mut self, task: &str, cpu: u32, mem: u32) {
        self.started(task, cpu, mem);
        // STARTING and RUNNING go out together (pipelined); the master acks each.
        let sent = self.drain();
        let u = statuses(&sent);
        let states: Vec<TaskState> = u.iter().map(|u| u.state).collect();
        assert_eq!(
            states,
            [TaskState::Starting, TaskState::Running],
            "{sent:?}"
        );
        for u in &u {
            self.ack(u);
        }
    }

    fn ack(&mut self, u: &StatusUpdate) {
        self.master(MasterMsg::StatusAck(StatusAck {
            framework_id: u.framework_id.clone(),
            task_id: u.task_id.clone(),
            update_id: u.update_id,
        }));
    }

    fn kill(&mut self, task: &str, grace_ms: u32) {
        self.master(MasterMsg::KillTask(KillTask {
            framework_id: id("fw-1").unwrap(),
            task_id: id(task).unwrap(),
            grace_ms,
        }));
    }

    fn stats(&self) -> Stats {
        *self.core.stats()
    }
}

fn statuses(sent: &[Sent]) -> Vec<StatusUpdate> {
    sent.iter()
        .filter_map(|s| match &s.msg {
            AgentMsg::Status(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn exit(task: &str, exit: Exit) -> LocalEvent<'_> {
    LocalEvent::Exited {
        framework_id: "fw-1",
        task_id: task,
        exit,
    }
}

#[test]
fn agent_core_fits_in_16_kib_at_default_capacities() {
    let size = std::mem::size_of::<AgentCore>();
    println!("size_of::<AgentCore>() = {size} bytes for {MAX_TASKS} tasks");
    const { assert!(MAX_TASKS >= 32) };
    assert!(size <= 16 * 1024, "AgentCore is {size} bytes");
}

#[test]
fn registration_is_retried_with_growing_backoff_until_acknowledged() {
    let mut rig = Rig::new();
    let first = rig.drain();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].topic, "bramble/v1/agent/pi4/register");
    assert_eq!(first[0].msg, AgentMsg::Register(info()));
    assert!(rig.drain().is_empty(), "no resend before the backoff");

    // Delays double from 1 s (plus up to 25 % jitter) to the 30 s cap.
    let mut last = 0;
    for base in [1_000u64, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
        let t = rig.step();
        let delay = t - last;
        assert!(
            (base..=base + base / 4).contains(&delay),
            "delay {delay} for base {base}"
        );
        let sent = rig.drain();
        assert!(matches!(
            sent[..],
            [Sent {
                msg: AgentMsg::Register(_),
                ..
            }]
        ));
        last = t;
    }
    assert_eq!(rig.stats().registrations_sent, 8);

    rig.master_at(
        9,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    assert!(rig.core.is_registered());
    assert_eq!(rig.core.master_epoch(), 9);
    let sent = rig.drain();
    assert!(matches!(
        sent[..],
        [Sent {
            msg: AgentMsg::Report(_),
            ..
        }]
    ));
    // From now on only the report heartbeat is scheduled: no more registrations.
    let t = rig.step();
    assert_eq!(t, rig.now);
    assert!(rig
        .drain()
        .iter()
        .all(|s| !matches!(s.msg, AgentMsg::Register(_))));
}

#[test]
fn nothing_is_sent_while_disconnected_and_everything_pending_goes_on_reconnect() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    rig.actions();
    rig.core.handle_disconnected(rig.now);
    assert!(rig.drain().is_empty());
    rig.advance_to(60_000);
    assert!(rig.drain().is_empty());
    rig.core.handle_connected(rig.now, 8);
    // It registers again first, naming the new connection; then the update goes out.
    let sent = rig.drain();
    assert!(
        matches!(&sent[..], [Sent { msg: AgentMsg::ReRegister(re), .. }] if re.info.connection == 8),
        "{sent:?}"
    );
    rig.master(MasterMsg::RegisterAck(RegisterAck {
        agent_id: id("pi4").unwrap(),
    }));
    let sent = rig.drain();
    let u = statuses(&sent);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Starting);
}

#[test]
fn an_accepted_task_is_launched_and_reported_starting_then_running() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    assert_eq!(
        rig.actions(),
        [Action::Launch {
            framework_id: id("fw-1").unwrap(),
            task_id: id("t1").unwrap(),
            resources: Resources::new(500, 64, 0),
            pids_max: 32,
        }]
    );
    assert_eq!(rig.core.allocated(), Resources::new(500, 64, 0));
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Starting, Reason::None)
    );
    rig.event(LocalEvent::Started {
        framework_id: "fw-1",
        task_id: "t1",
    });
    // RUNNING follows at once, without waiting for STARTING's acknowledgement (pipelined), and
    // carries a newer update id so the master can tell it is the later one.
    let u2 = statuses(&rig.drain());
    assert_eq!(u2.len(), 1);
    assert_eq!(u2[0].state, TaskState::Running);
    assert!(u2[0].update_id > u[0].update_id);
}

#[test]
fn acknowledging_running_also_settles_an_unacknowledged_starting() {
    let mut rig = Rig::registered();
    rig.started("t1", 500, 64);
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), 2);
    assert_eq!(rig.core.tasks().next().unwrap().unacked_updates, 2);
    // Only RUNNING's acknowledgement arrives: STARTING is superseded and never resent.
    rig.ack(&u[1]);
    assert_eq!(rig.core.tasks().next().unwrap().unacked_updates, 0);
    for _ in 0..5 {
        rig.step();
        assert!(statuses(&rig.drain()).is_empty());
    }
}

#[test]
fn unacknowledged_pipelined_updates_are_resent_oldest_first() {
    let mut rig = Rig::registered();
    rig.started("t1", 500, 64);
    let first = statuses(&rig.drain());
    assert_eq!(first.len(), 2);
    // Nothing acknowledged: both come again, STARTING before RUNNING, with their own ids.
    let mut again = Vec::new();
    while again.len() < 2 {
        rig.step();
        again.extend(statuses(&rig.drain()));
    }
    assert_eq!(again, first);
}

#[test]
fn a_task_asking_for_more_than_is_free_is_refused_with_task_error_and_a_reason() {
    let mut rig = Rig::registered();
    rig.running("big", 3000, 1000);
    rig.run("t2", 2000, 100);
    assert!(rig.actions().is_empty(), "a refused task is never launched");
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].task_id, "t2");
    assert_eq!(u[0].state, TaskState::Error);
    assert_eq!(u[0].reason, Reason::ExceedsResources);
    assert_eq!(u[0].message, "asks 2000m cpu but only 1000m is free");
    assert_eq!(rig.core.allocated(), Resources::new(3000, 1000, 0));
    assert_eq!(rig.stats().refused_launches, 1);
}

#[test]
fn a_task_larger_than_the_whole_agent_or_malformed_is_refused() {
    let mut rig = Rig::registered();
    rig.run("huge", 500, 5000);
    let mut empty = run_task();
    empty.task_id = id("noargv").unwrap();
    empty.argv.clear();
    rig.master(MasterMsg::RunTask(empty));
    rig.run("nocpu", 0, 64);
    let mut bad_id = run_task();
    bad_id.task_id = s("../../etc");
    rig.master(MasterMsg::RunTask(bad_id));
    assert!(rig.actions().is_empty());
    let mut u = statuses(&rig.drain());
    u.sort_by_key(|u| u.update_id);
    let got: Vec<(&str, TaskState, Reason)> = u
        .iter()
        .map(|u| (u.task_id.as_str(), u.state, u.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("huge", TaskState::Error, Reason::ExceedsResources),
            ("noargv", TaskState::Error, Reason::InvalidTask),
            ("nocpu", TaskState::Error, Reason::InvalidTask),
            ("../../etc", TaskState::Error, Reason::InvalidTask),
        ]
    );
    assert_eq!(
        u[0].message,
        "asks 5000 MiB memory but the agent has 3800 MiB in all"
    );
    assert_eq!(rig.core.allocated(), Resources::ZERO);
}

#[test]
fn a_duplicate_run_task_is_ignored() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    rig.run("t1", 500, 64);
    assert_eq!(rig.actions().len(), 1);
    assert_eq!(statuses(&rig.drain()).len(), 1);
    assert_eq!(rig.core.allocated(), Resources::new(500, 64, 0));
    assert_eq!(rig.stats().duplicate_launches, 1);
}

#[test]
fn a_status_update_is_resent_with_backoff_until_acknowledged() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    rig.event(exit("t1", Exit::Code(0)));
    let first = statuses(&rig.drain());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].state, TaskState::Finished);

    let mut sent_at = vec![rig.now];
    while sent_at.len() < 6 {
        rig.step();
        let again = statuses(&rig.drain());
        if !again.is_empty() {
            assert_eq!(again, first, "the same update, same id");
            sent_at.push(rig.now);
        }
    }
    let gaps: Vec<u64> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, base) in gaps.iter().zip([1_000u64, 2_000, 4_000, 8_000, 16_000]) {
        assert!((base..=base + base / 4).contains(gap), "gaps {gaps:?}");
    }
    assert_eq!(rig.stats().status_retries, 5);

    rig.ack(&first[0]);
    assert_eq!(
        rig.actions(),
        [Action::Release {
            framework_id: id("fw-1").unwrap(),
            task_id: id("t1").unwrap()
        }]
    );
    assert_eq!(rig.core.tasks().count(), 0);
    // Acknowledged: never sent again.
    for _ in 0..5 {
        rig.step();
        assert!(statuses(&rig.drain()).is_empty());
    }
}

#[test]
fn exit_codes_signals_and_oom_kills_become_the_right_terminal_states() {
    let mut rig = Rig::registered();
    let cases = [
        (
            "ok",
            Exit::Code(0),
            TaskState::Finished,
            Reason::Exited { code: 0 },
            "",
        ),
        (
            "bad",
            Exit::Code(3),
            TaskState::Failed,
            Reason::Exited { code: 3 },
            "exited with code 3",
        ),
        (
            "sig",
            Exit::Signal(11),
            TaskState::Failed,
            Reason::Signaled { signal: 11 },
            "killed by signal 11",
        ),
        (
            "oom",
            Exit::OomKilled,
            TaskState::Failed,
            Reason::MemoryLimit,
            "memory limit of 32 MiB exceeded (OOM-killed)",
        ),
        (
            "gone",
            Exit::Unknown,
            TaskState::Lost,
            Reason::AgentRestarted,
            "ended while the agent was down",
        ),
    ];
    for (task, how, state, reason, message) in cases {
        rig.running(task, 100, 32);
        rig.event(exit(task, how));
        let u = statuses(&rig.drain());
        assert_eq!(u.len(), 1, "{task}");
        assert_eq!((u[0].state, u[0].reason), (state, reason), "{task}");
        assert_eq!(u[0].message, message, "{task}");
        rig.ack(&u[0]);
        assert!(matches!(rig.actions()[..], [Action::Release { .. }]));
    }
    assert_eq!(rig.core.allocated(), Resources::ZERO);
}

#[test]
fn a_task_that_fails_to_start_is_reported_failed_with_the_cause() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    rig.actions();
    rig.event(LocalEvent::LaunchFailed {
        framework_id: "fw-1",
        task_id: "t1",
        message: "No such file or directory: /usr/bin/nope",
    });
    let u = statuses(&rig.drain());
    assert_eq!(u[0].state, TaskState::Starting);
    assert_eq!(
        (u[1].state, u[1].reason),
        (TaskState::Failed, Reason::LaunchFailed)
    );
    assert_eq!(u[1].message, "No such file or directory: /usr/bin/nope");
    assert_eq!(rig.core.allocated(), Resources::ZERO);
}

#[test]
fn kill_sends_sigterm_then_sigkill_when_the_grace_period_ends() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    let start = rig.now;
    rig.kill("t1", 1_000);
    let signal = |s| Action::Signal {
        framework_id: id("fw-1").unwrap(),
        task_id: id("t1").unwrap(),
        signal: s,
    };
    assert_eq!(rig.actions(), [signal(Signal::Term)]);
    assert_eq!(rig.core.poll_timeout(), Some(start + 1_000));
    rig.advance_to(start + 999);
    assert!(rig.actions().is_empty());
    rig.advance_to(start + 1_000);
    assert_eq!(rig.actions(), [signal(Signal::Kill)]);
    // The task ignored SIGTERM; SIGKILL ended it.
    rig.event(exit("t1", Exit::Signal(9)));
    let u = statuses(&rig.drain());
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Killed, Reason::KilledByRequest)
    );
    assert_eq!(u[0].message, "killed on request");
}

#[test]
fn a_task_that_stops_within_the_grace_period_is_not_sigkilled() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    rig.kill("t1", 1_000);
    rig.actions();
    rig.event(exit("t1", Exit::Code(0)));
    rig.advance_to(rig.now + 5_000);
    assert!(rig.actions().is_empty());
    assert_eq!(statuses(&rig.drain())[0].state, TaskState::Killed);
}

#[test]
fn a_kill_with_no_grace_sends_sigkill_at_once() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    rig.kill("t1", 0);
    assert!(matches!(
        rig.actions()[..],
        [Action::Signal {
            signal: Signal::Kill,
            ..
        }]
    ));
}

#[test]
fn a_kill_before_launch_cancels_the_launch() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    rig.kill("t1", 1_000);
    assert!(rig.actions().is_empty(), "never launched, never signalled");
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].state, TaskState::Starting);
    assert_eq!(
        (u[1].state, u[1].reason),
        (TaskState::Killed, Reason::KilledByRequest)
    );
    assert_eq!(rig.core.allocated(), Resources::ZERO);
}

#[test]
fn a_kill_during_launch_takes_effect_once_the_task_has_started() {
    let mut rig = Rig::registered();
    rig.run("t1", 500, 64);
    assert!(matches!(rig.actions()[..], [Action::Launch { .. }]));
    rig.kill("t1", 2_000);
    assert!(rig.actions().is_empty());
    rig.event(LocalEvent::Started {
        framework_id: "fw-1",
        task_id: "t1",
    });
    assert!(matches!(
        rig.actions()[..],
        [Action::Signal {
            signal: Signal::Term,
            ..
        }]
    ));
}

#[test]
fn killing_an_unknown_task_reports_it_lost_once_so_the_master_can_reconcile() {
    let mut rig = Rig::registered();
    rig.kill("ghost", 1_000);
    rig.kill("ghost", 1_000);
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Lost, Reason::UnknownTask)
    );
    // It is retried like any update until acknowledged.
    rig.step();
    assert_eq!(statuses(&rig.drain()), u);
    rig.ack(&u[0]);
    rig.step();
    assert!(statuses(&rig.drain()).is_empty());
}

#[test]
fn a_full_task_table_refuses_new_launches_and_keeps_every_pending_update() {
    let mut rig = Rig::registered();
    for i in 0..MAX_TASKS {
        rig.run(&format!("t{i}"), 100, 10);
    }
    assert_eq!(rig.actions().len(), MAX_TASKS);
    rig.run("one-too-many", 100, 10);
    assert!(rig.actions().is_empty());
    let u = statuses(&rig.drain());
    assert_eq!(u.len(), MAX_TASKS + 1);
    let refusal = u.iter().find(|u| u.task_id == "one-too-many").unwrap();
    assert_eq!(
        (refusal.state, refusal.reason),
        (TaskState::Error, Reason::AgentFull)
    );
    // None of the 32 STARTING updates was dropped to make room: each is resent until acked.
    let mut resent = std::collections::BTreeSet::new();
    let until = rig.now + 1_250;
    while rig.now < until {
        rig.step();
        for u in statuses(&rig.drain()) {
            if u.state == TaskState::Starting {
                resent.insert(u.task_id.to_string());
            }
        }
    }
    assert_eq!(resent.len(), MAX_TASKS);
}

#[test]
fn the_agent_reregisters_with_its_tasks_when_a_new_master_appears() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    rig.master_at(1, MasterMsg::Hello);
    assert!(rig.drain().is_empty(), "the same master: nothing to do");
    rig.master_at(2, MasterMsg::Hello);
    assert!(!rig.core.is_registered());
    let sent = rig.drain();
    let AgentMsg::ReRegister(re) = &sent[0].msg else {
        panic!("expected a re-registration, got {sent:?}");
    };
    assert_eq!(sent[0].topic, "bramble/v1/agent/pi4/register");
    assert_eq!(
        re.last_master_epoch, 1,
        "a hello is not authenticated: the fence moves only on the new master's own frame"
    );
    assert_eq!(
        re.info.to_epoch, 2,
        "addressed to the master that announced itself"
    );
    let mut expected = info();
    (expected.seq, expected.to_epoch) = (re.info.seq, 2);
    assert_eq!(re.info, expected);
    assert_eq!(re.tasks.len(), 1);
    assert_eq!(re.tasks[0].task_id, "t1");
    assert_eq!(re.tasks[0].state, TaskState::Running);
    assert_eq!(re.tasks[0].resources, Resources::new(500, 64, 0));
    rig.master_at(
        2,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    assert!(rig.core.is_registered());
    assert_eq!(rig.core.master_epoch(), 2);
}

#[test]
fn a_hello_cuts_a_registration_backoff_short_but_not_right_after_a_registration() {
    let mut rig = Rig::new();
    assert_eq!(rig.drain().len(), 1);
    // The retained hello arrives right after connecting: no second registration.
    rig.master_at(5, MasterMsg::Hello);
    assert!(rig.drain().is_empty());
    // Three retries later the next one is seconds away; a master appearing makes it go now.
    for _ in 0..3 {
        rig.step();
        rig.drain();
    }
    rig.advance_to(rig.now + 1_500);
    assert!(rig.core.poll_timeout().unwrap() > rig.now);
    rig.master_at(6, MasterMsg::Hello);
    let sent = rig.drain();
    // Addressed to the newest master announced; it obeys none yet.
    assert!(
        matches!(
            &sent[..],
            [Sent {
                msg: AgentMsg::Register(info),
                ..
            }] if info.to_epoch == 6
        ),
        "{sent:?}"
    );
}

#[test]
fn an_older_masters_commands_are_dropped_and_its_hello_is_answered_with_the_newest_epoch() {
    let mut rig = Rig::registered();
    rig.master_at(5, MasterMsg::Hello);
    rig.master_at(
        5,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    rig.drain();
    let gen = rig.core.generation();
    // The master of epoch 1 (say, paused and resumed) still thinks it leads.
    let mut run = run_task();
    run.task_id = id("t-stale").unwrap();
    for msg in [
        MasterMsg::RunTask(run),
        MasterMsg::Ping { seq: 9 },
        MasterMsg::ReRegisterRequest,
    ] {
        assert_eq!(rig.try_master_at(1, msg), Err(RecvError::StaleMaster));
    }
    assert!(rig.drain().is_empty(), "no pong, no registration");
    assert!(rig.actions().is_empty(), "nothing launched");
    assert_eq!(rig.core.tasks().count(), 0);
    assert!(rig.core.is_registered());
    // A new leader that started low (the broker lost the retained hello) learns what to beat.
    assert_eq!(
        rig.try_master_at(3, MasterMsg::Hello),
        Err(RecvError::StaleMaster)
    );
    let sent = rig.drain();
    assert!(
        matches!(&sent[..], [Sent { msg: AgentMsg::ReRegister(re), .. }] if re.last_master_epoch == 5),
        "{sent:?}"
    );
    assert!(rig.core.is_registered(), "still obeying epoch 5");
    assert_eq!(rig.stats().stale_master, 4);
    assert_eq!(rig.core.generation(), gen, "nothing to checkpoint");
}

#[test]
fn a_newer_master_is_obeyed_from_its_first_message_and_its_epoch_is_checkpointed() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    let gen = rig.core.generation();
    // Its RegisterAck overtook its hello.
    rig.master_at(
        7,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    assert!(rig.core.is_registered());
    assert_eq!(rig.core.master_epoch(), 7);
    assert_ne!(rig.core.generation(), gen, "the fence moved: checkpoint it");
    assert_eq!(rig.core.snapshot().master_epoch, 7);
    // From now on epoch 1 is stale.
    assert_eq!(
        rig.try_master_at(1, MasterMsg::Ping { seq: 1 }),
        Err(RecvError::StaleMaster)
    );
    // A restarted agent keeps the fence.
    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    core.restore(0, &rig.core.snapshot(), |_| None);
    assert_eq!(core.master_epoch(), 7);
}

#[test]
fn the_agent_reregisters_when_the_master_asks() {
    let mut rig = Rig::registered();
    rig.master(MasterMsg::ReRegisterRequest);
    let sent = rig.drain();
    assert!(
        matches!(
            sent[..],
            [Sent {
                msg: AgentMsg::ReRegister(_),
                ..
            }]
        ),
        "{sent:?}"
    );
}

#[test]
fn status_updates_wait_for_registration_and_go_out_once_acknowledged() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    rig.master(MasterMsg::ReRegisterRequest);
    rig.event(exit("t1", Exit::Code(0)));
    let sent = rig.drain();
    assert!(statuses(&sent).is_empty(), "{sent:?}");
    rig.master_at(
        1,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    assert_eq!(statuses(&rig.drain())[0].state, TaskState::Finished);
}

#[test]
fn a_ping_is_answered_with_a_pong_carrying_its_sequence_number() {
    let mut rig = Rig::registered();
    rig.master(MasterMsg::Ping { seq: 77 });
    let sent = rig.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg, AgentMsg::Pong { seq: 77 });
    assert_eq!(sent[0].qos, QoS::AtMostOnce);
}

fn sample(free_mem: u32, temp: Option<i16>) -> ResourceSample {
    ResourceSample {
        free: Resources::new(4000, free_mem, 20000),
        soc_temp_decidegrees: temp,
        throttled: 0,
    }
}

fn reports(sent: &[Sent]) -> Vec<ResourceReport> {
    sent.iter()
        .filter_map(|s| match s.msg {
            AgentMsg::Report(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_go_out_on_significant_change_at_most_once_a_second_and_on_a_slow_heartbeat() {
    let mut rig = Rig::registered();
    let t0 = rig.now;
    rig.core
        .handle_resource_sample(rig.now, sample(3000, Some(450)));
    rig.advance_to(t0 + 1_000);
    let r = reports(&rig.drain());
    assert_eq!(r.len(), 1, "memory moved by 800 MiB");
    assert_eq!(r[0].free.mem_mib, 3000);
    assert_eq!(r[0].temperature(), Some(450));

    // Small wobbles below the thresholds send nothing.
    rig.advance_to(t0 + 5_000);
    rig.core
        .handle_resource_sample(rig.now, sample(3010, Some(460)));
    assert!(reports(&rig.drain()).is_empty());

    // A temperature jump of 2.4 °C is significant and goes out at once (the last report was 4 s ago).
    rig.core
        .handle_resource_sample(rig.now, sample(3010, Some(700)));
    let r = reports(&rig.drain());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].temperature(), Some(700));

    // With nothing changing, the next report is the heartbeat, 30 s after the last one.
    let last = rig.now;
    let mut seen = Vec::new();
    while rig.now < last + 70_000 {
        rig.step();
        if !reports(&rig.drain()).is_empty() {
            seen.push(rig.now);
        }
    }
    let gaps: Vec<u64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g == 30_000), "{seen:?}");
    assert!(seen.len() >= 2);
}

#[test]
fn an_early_report_is_rate_limited_to_the_minimum_interval() {
    let mut rig = Rig::registered();
    let t0 = rig.now;
    rig.advance_to(t0 + 200);
    rig.core.handle_resource_sample(rig.now, sample(1000, None));
    assert!(
        reports(&rig.drain()).is_empty(),
        "only 200 ms since the last report"
    );
    assert_eq!(rig.core.poll_timeout(), Some(t0 + 1_000));
    rig.step();
    assert_eq!(reports(&rig.drain())[0].free.mem_mib, 1000);
}

#[test]
fn garbage_and_misrouted_payloads_are_counted_and_change_nothing() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    let before_tasks: Vec<_> = rig
        .core
        .tasks()
        .map(|t| (t.task_id.to_owned(), t.state))
        .collect();
    let gen = rig.core.generation();
    let now = rig.now;
    let c = &mut rig.core;
    // Version 3, epoch 1, then tag 250 (no message); nothing; version 7.
    assert!(c.handle_bytes(now, CMD, &mut [3, 1, 250, 3]).is_err());
    assert!(c.handle_bytes(now, CMD, &mut []).is_err());
    assert!(c.handle_bytes(now, CMD, &mut [7, 1, 5, 1]).is_err());
    // A ping on the hello topic.
    assert!(c
        .handle_bytes(now, topic::MASTER_HELLO, &mut [3, 1, 5, 1])
        .is_err());
    // Another agent's commands, an unknown topic.
    assert!(c
        .handle_bytes(now, "bramble/v1/agent/pi5/cmd", &mut [3, 1, 5, 1])
        .is_err());
    assert!(c
        .handle_bytes(now, "bramble/v1/agent/pi4/status", &mut [3, 1, 5, 1])
        .is_err());
    // An ack naming another agent, genuine from the obeyed master.
    let ack = MasterMsg::RegisterAck(RegisterAck {
        agent_id: id("pi5").unwrap(),
    });
    let frame = down_frame("pi4", c.boot(), 1_000, 1, ack);
    assert!(c.handle_bytes(now, CMD, &mut frame.to_vec()).is_err());

    let stats = rig.stats();
    assert_eq!(stats.malformed, 2);
    assert_eq!(stats.unsupported_version, 1);
    assert_eq!(stats.misrouted, 4);
    assert_eq!(rig.core.master_epoch(), 1);
    assert_eq!(rig.core.generation(), gen);
    let after: Vec<_> = rig
        .core
        .tasks()
        .map(|t| (t.task_id.to_owned(), t.state))
        .collect();
    assert_eq!(after, before_tasks);
    assert!(rig.drain().is_empty());
}

#[test]
fn an_idle_agent_changes_no_checkpointed_state() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    let gen = rig.core.generation();
    // Ten idle minutes of heartbeats and pings.
    while rig.now < 600_000 {
        rig.step();
        rig.master(MasterMsg::Ping { seq: 1 });
        rig.drain();
    }
    assert_eq!(rig.core.generation(), gen);
    // A real change moves it.
    rig.event(exit("t1", Exit::Code(0)));
    assert_ne!(rig.core.generation(), gen);
}

#[test]
fn an_adopted_task_is_reported_in_the_first_registration_and_can_end() {
    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    core.adopt_task("fw-1", "t9", Resources::new(250, 32, 0), 0)
        .unwrap();
    assert_eq!(
        core.adopt_task("fw-1", "t9", Resources::new(250, 32, 0), 0),
        Err(agent_nostd_core::agent::TaskError::AlreadyKnown)
    );
    core.set_next_update_id(500);
    core.handle_connected(0, 1);
    let mut rig = Rig {
        core,
        now: 0,
        buf: Box::new([0; MAX_UP_FRAME_LEN]),
        down_seq: 1,
    };
    let sent = rig.drain();
    let AgentMsg::ReRegister(re) = &sent[0].msg else {
        panic!("expected ReRegister, got {sent:?}");
    };
    assert_eq!(re.tasks[0].task_id, "t9");
    assert_eq!(re.last_master_epoch, 0);
    rig.master_at(
        4,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    rig.event(exit("t9", Exit::Code(1)));
    let u = statuses(&rig.drain());
    assert_eq!(u[0].update_id, 500, "ids continue from the checkpoint");
    assert_eq!(u[0].state, TaskState::Failed);
}

#[test]
fn events_that_do_not_fit_the_task_state_are_refused() {
    use agent_nostd_core::agent::TaskError;
    let mut rig = Rig::registered();
    let now = rig.now;
    assert_eq!(
        rig.core.handle_event(now, exit("nope", Exit::Code(0))),
        Err(TaskError::UnknownTask)
    );
    rig.run("t1", 500, 64);
    // Not handed to the driver yet: it cannot have started.
    assert_eq!(
        rig.core.handle_event(
            now,
            LocalEvent::Started {
                framework_id: "fw-1",
                task_id: "t1"
            }
        ),
        Err(TaskError::InvalidTransition)
    );
    rig.actions();
    rig.event(exit("t1", Exit::Code(0)));
    assert_eq!(
        rig.core.handle_event(now, exit("t1", Exit::Code(0))),
        Err(TaskError::InvalidTransition)
    );
}

#[test]
fn the_last_will_is_gone_on_the_will_topic_naming_the_connection_sealed_with_the_will_number() {
    let rig = Rig::new();
    let mut buf = [0u8; MAX_UP_FRAME_LEN];
    let will = rig.core.last_will(&mut buf);
    assert_eq!(will.topic.as_str(), "bramble/v1/agent/pi4/will");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert_eq!(
        open_up("pi4", rig.core.boot(), &buf[..will.len]),
        (
            AgentMsg::Gone { connection: 7 },
            agent_nostd_core::frame::WILL_SEQ
        )
    );
    let of = AgentCore::will_of("pi4", &key(), 5, 9, &mut buf);
    assert_eq!(of.topic, will.topic);
    assert_eq!(
        open_up("pi4", 5, &buf[..of.len]).0,
        AgentMsg::Gone { connection: 9 }
    );
}

#[test]
fn every_connection_registers_again_naming_itself() {
    let mut rig = Rig::registered();
    rig.core.handle_disconnected(rig.now);
    rig.core.handle_connected(rig.now, 42);
    let sent = rig.drain();
    let AgentMsg::ReRegister(re) = &sent[0].msg else {
        panic!("expected a re-registration, got {sent:?}");
    };
    assert_eq!(re.info.connection, 42);
    assert!(!rig.core.is_registered());
}

#[test]
fn a_bad_config_names_the_field() {
    let mut config = Config::default();
    config.status_backoff.initial_ms = 0;
    let err = AgentCore::new(config, info(), key(), 0).unwrap_err();
    assert_eq!(err.field, "status_backoff.initial_ms");
    let mut config = Config::default();
    config.register_backoff.max_ms = 10;
    assert_eq!(
        AgentCore::new(config, info(), key(), 0).unwrap_err().field,
        "register_backoff.max_ms"
    );
    let mut bad = info();
    bad.agent_id = s("a/b");
    assert_eq!(
        AgentCore::new(Config::default(), bad, key(), 0)
            .unwrap_err()
            .field,
        "agent_id"
    );
    assert_eq!(AgentTopic::Cmd.suffix(), "cmd");
}

mod random_sequences {
    //! Random message and event sequences: the core never panics, never over-commits, emits only
    //! valid payloads and coherent actions, keeps each task's updates in lifecycle order, and delivers
    //! every update at least once when the master finally acknowledges.

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u32),
        Step,
        Connect,
        Disconnect,
        RegisterAck(u64),
        Hello(u64),
        ReRegisterRequest,
        Run { task: u8, cpu: u32, mem: u32 },
        Kill { task: u8, grace: u32 },
        Ack(prop::sample::Index),
        Started(u8),
        Exited(u8, i32),
        Oom(u8),
        LaunchFailed(u8),
        Sample(u32),
        Ping(u32),
        Garbage(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40_000).prop_map(Op::Advance),
            Just(Op::Step),
            Just(Op::Connect),
            Just(Op::Disconnect),
            (1u64..4).prop_map(Op::RegisterAck),
            (1u64..4).prop_map(Op::Hello),
            Just(Op::ReRegisterRequest),
            (0u8..40, 0u32..2500, 0u32..2000).prop_map(|(task, cpu, mem)| Op::Run {
                task,
                cpu,
                mem
            }),
            (0u8..40, 0u32..3000).prop_map(|(task, grace)| Op::Kill { task, grace }),
            any::<prop::sample::Index>().prop_map(Op::Ack),
            any::<prop::sample::Index>().prop_map(Op::Ack),
            (0u8..40).prop_map(Op::Started),
            (0u8..40, -2i32..3).prop_map(|(t, c)| Op::Exited(t, c)),
            (0u8..40).prop_map(Op::Oom),
            (0u8..40).prop_map(Op::LaunchFailed),
            (0u32..4000).prop_map(Op::Sample),
            any::<u32>().prop_map(Op::Ping),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Garbage),
        ]
    }

    fn lifecycle_rank(state: TaskState) -> u8 {
        match state {
            TaskState::Starting => 1,
            TaskState::Running => 2,
            _ => 3,
        }
    }

    #[derive(Default)]
    struct Model {
        /// Every status update seen, by id, until acknowledged.
        unacked: BTreeMap<u32, StatusUpdate>,
        /// The latest update id and state per task (cleared on Release).
        last: BTreeMap<String, (u32, TaskState)>,
        launched: BTreeSet<String>,
    }

    impl Model {
        fn observe(&mut self, rig: &mut Rig) {
            for sent in rig.drain() {
                if let AgentMsg::Status(u) = sent.msg {
                    let resent = self.unacked.contains_key(&u.update_id);
                    self.unacked.insert(u.update_id, u.clone());
                    if matches!(u.reason, Reason::UnknownTask | Reason::AgentFull) {
                        continue; // about a task the agent does not hold: outside any lifecycle
                    }
                    let key = u.task_id.to_string();
                    if let Some(&(id, state)) = self.last.get(&key) {
                        // Pipelined updates are resent oldest first, so an older id may follow a
                        // newer one, but only for an update still awaiting acknowledgement.
                        assert!(
                            u.update_id >= id || resent,
                            "{key}: update {} sent again after it was acknowledged or superseded",
                            u.update_id
                        );
                        if u.update_id > id {
                            assert!(
                                lifecycle_rank(u.state) > lifecycle_rank(state),
                                "{key}: {state:?} then {:?}",
                                u.state
                            );
                        }
                    }
                    let prev = self.last.entry(key).or_insert((u.update_id, u.state));
                    if u.update_id > prev.0 {
                        *prev = (u.update_id, u.state);
                    }
                }
            }
            for action in rig.actions() {
                match action {
                    Action::Launch { task_id, .. } => {
                        assert!(self.launched.insert(task_id.to_string()), "launched twice");
                    }
                    Action::Signal { task_id, .. } => {
                        assert!(
                            self.launched.contains(task_id.as_str()),
                            "signal before launch"
                        );
                    }
                    Action::Release { task_id, .. } => {
                        self.launched.remove(task_id.as_str());
                        self.last.remove(task_id.as_str());
                    }
                }
            }
            let allocated = rig.core.allocated();
            assert!(
                allocated.fits_in(&rig.core.total()),
                "over-committed: {allocated}"
            );
            assert!(rig.core.tasks().count() <= MAX_TASKS);
        }

        /// Acknowledges one update; for a task's own updates that also settles its earlier ones.
        fn ack(&mut self, rig: &mut Rig, update_id: u32) {
            if let Some(u) = self.unacked.remove(&update_id) {
                rig.ack(&u);
                if !matches!(u.reason, Reason::UnknownTask | Reason::AgentFull) {
                    self.unacked.retain(|&id, o| {
                        id > update_id
                            || o.task_id != u.task_id
                            || matches!(o.reason, Reason::UnknownTask | Reason::AgentFull)
                    });
                }
            }
        }
    }

    fn apply(rig: &mut Rig, model: &mut Model, op: Op) {
        let name = |t: u8| format!("t{t}");
        let now = rig.now;
        match op {
            Op::Advance(ms) => rig.advance_to(now + u64::from(ms)),
            Op::Step => {
                if let Some(t) = rig.core.poll_timeout() {
                    rig.advance_to(t.max(now));
                }
            }
            Op::Connect => rig.core.handle_connected(now, 1),
            Op::Disconnect => rig.core.handle_disconnected(now),
            // A stale epoch is refused (fencing); the model does not care which.
            Op::RegisterAck(epoch) => {
                let _ = rig.try_master_at(
                    epoch,
                    MasterMsg::RegisterAck(RegisterAck {
                        agent_id: id("pi4").unwrap(),
                    }),
                );
            }
            Op::Hello(epoch) => {
                let _ = rig.try_master_at(epoch, MasterMsg::Hello);
            }
            Op::ReRegisterRequest => rig.master(MasterMsg::ReRegisterRequest),
            Op::Run { task, cpu, mem } => rig.run(&name(task), cpu, mem),
            Op::Kill { task, grace } => rig.kill(&name(task), grace),
            Op::Ack(i) => {
                let ids: Vec<u32> = model.unacked.keys().copied().collect();
                if !ids.is_empty() {
                    model.ack(rig, ids[i.index(ids.len())]);
                }
            }
            Op::Started(t) => {
                let _ = rig.core.handle_event(
                    now,
                    LocalEvent::Started {
                        framework_id: "fw-1",
                        task_id: &name(t),
                    },
                );
            }
            Op::Exited(t, code) => {
                let _ = rig.core.handle_event(now, exit(&name(t), Exit::Code(code)));
            }
            Op::Oom(t) => {
                let _ = rig.core.handle_event(now, exit(&name(t), Exit::OomKilled));
            }
            Op::LaunchFailed(t) => {
                let _ = rig.core.handle_event(
                    now,
                    LocalEvent::LaunchFailed {
                        framework_id: "fw-1",
                        task_id: &name(t),
                        message: "nope",
                    },
                );
            }
            Op::Sample(mem) => rig.core.handle_resource_sample(now, sample(mem, Some(400))),
            Op::Ping(seq) => rig.master(MasterMsg::Ping { seq }),
            Op::Garbage(bytes) => {
                let _ = rig.core.handle_bytes(now, CMD, &mut bytes.to_vec());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_sequences_keep_the_core_consistent_and_lose_no_update(
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut rig = Rig::new();
            let mut model = Model::default();
            for op in ops {
                apply(&mut rig, &mut model, op);
                model.observe(&mut rig);
            }

            // Calm weather: connected, registered, every process ends, every update is acknowledged.
            rig.core.handle_connected(rig.now, 1);
            rig.master_at(99, MasterMsg::RegisterAck(RegisterAck {
                agent_id: id("pi4").unwrap(),
            }));
            for _ in 0..400 {
                model.observe(&mut rig);
                let launched: Vec<String> = model.launched.iter().cloned().collect();
                for task in &launched {
                    let now = rig.now;
                    let _ = rig.core.handle_event(now, LocalEvent::Started { framework_id: "fw-1", task_id: task });
                    let _ = rig.core.handle_event(now, exit(task, Exit::Code(0)));
                }
                model.observe(&mut rig);
                let ids: Vec<u32> = model.unacked.keys().copied().collect();
                for id in ids {
                    model.ack(&mut rig, id);
                }
                model.observe(&mut rig);
                if rig.core.tasks().count() == 0 && model.unacked.is_empty() {
                    break;
                }
                if let Some(t) = rig.core.poll_timeout() {
                    rig.advance_to(t.max(rig.now));
                }
            }
            prop_assert!(model.unacked.is_empty(), "updates never acknowledged: {:?}", model.unacked);
            prop_assert_eq!(rig.core.tasks().count(), 0);
            prop_assert_eq!(rig.core.allocated(), Resources::ZERO);
        }
    }
}

#[test]
fn an_ended_task_restored_from_a_checkpoint_sends_its_end_again_once_registered() {
    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    let ended = |task_id, state| EndedTask {
        framework_id: "fw-1",
        task_id,
        resources: Resources::new(100, 10, 0),
        state,
        reason: Reason::Exited { code: 4 },
        message: "exited with code 4",
    };
    core.restore_ended_task(0, ended("t3", TaskState::Failed))
        .unwrap();
    assert_eq!(
        core.restore_ended_task(0, ended("t4", TaskState::Running)),
        Err(agent_nostd_core::agent::TaskError::InvalidTransition)
    );
    let view = core.tasks().next().unwrap();
    assert_eq!(view.end_reason, Some(Reason::Exited { code: 4 }));
    assert_eq!(view.message, "exited with code 4");
    assert_eq!(
        core.allocated(),
        Resources::ZERO,
        "an ended task holds nothing"
    );
    core.handle_connected(0, 1);
    let mut rig = Rig {
        core,
        now: 0,
        buf: Box::new([0; MAX_UP_FRAME_LEN]),
        down_seq: 1,
    };
    let sent = rig.drain();
    let AgentMsg::ReRegister(re) = &sent[0].msg else {
        panic!("expected ReRegister, got {sent:?}");
    };
    assert_eq!(re.tasks[0].state, TaskState::Failed);
    assert!(
        statuses(&sent).is_empty(),
        "updates wait for the registration"
    );
    rig.master_at(
        2,
        MasterMsg::RegisterAck(RegisterAck {
            agent_id: id("pi4").unwrap(),
        }),
    );
    let u = statuses(&rig.drain());
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Failed, Reason::Exited { code: 4 })
    );
    assert_eq!(u[0].message, "exited with code 4");
    rig.ack(&u[0]);
    assert!(matches!(rig.actions()[..], [Action::Release { .. }]));
}

/// What a driver does: after each input, write a checkpoint if the generation moved, then send.
/// Returns the update ids sent.
fn checkpoint_then_send(
    rig: &mut Rig,
    gen: &mut u32,
    covered: &mut u32,
    saves: &mut u32,
) -> Vec<u32> {
    if rig.core.generation() != *gen {
        *gen = rig.core.generation();
        *covered = rig.core.update_id_checkpoint();
        *saves += 1;
    }
    let sent = statuses(&rig.drain());
    sent.iter().map(|u| u.update_id).collect()
}

#[test]
fn every_update_id_sent_is_below_the_checkpointed_one_and_most_updates_need_no_checkpoint() {
    let mut rig = Rig::registered();
    let (mut gen, mut covered, mut saves) = (rig.core.generation(), 0, 0);
    let tasks = 1_200u32;
    let mut sent_ids = 0u32;
    for n in 0..tasks {
        let task = format!("t{n}");
        rig.run(&task, 100, 16);
        assert!(matches!(rig.actions()[..], [Action::Launch { .. }]));
        rig.event(LocalEvent::Started {
            framework_id: "fw-1",
            task_id: &task,
        });
        let mut ids = checkpoint_then_send(&mut rig, &mut gen, &mut covered, &mut saves);
        let before_acks = rig.core.generation();
        rig.master(MasterMsg::StatusAck(StatusAck {
            framework_id: id("fw-1").unwrap(),
            task_id: id(&task).unwrap(),
            update_id: *ids.last().unwrap(),
        }));
        assert_eq!(
            rig.core.generation(),
            before_acks,
            "an ack needs no checkpoint"
        );
        rig.event(exit(&task, Exit::Code(0)));
        let end = checkpoint_then_send(&mut rig, &mut gen, &mut covered, &mut saves);
        rig.master(MasterMsg::StatusAck(StatusAck {
            framework_id: id("fw-1").unwrap(),
            task_id: id(&task).unwrap(),
            update_id: end[0],
        }));
        assert!(matches!(rig.actions()[..], [Action::Release { .. }]));
        ids.extend(end);
        for id in ids {
            assert!(
                id < covered,
                "update {id} went out before a checkpoint covered it ({covered})"
            );
            sent_ids += 1;
        }
    }
    assert_eq!(sent_ids, 3 * tasks);
    // Adding a task (with its STARTING and RUNNING) and ending it need one checkpoint each, and a
    // block of ids one more; releasing the task is checkpointed with the next change.
    let blocks = sent_ids.div_ceil(UPDATE_ID_BLOCK);
    assert!(
        saves <= 2 * tasks + blocks + 1,
        "{saves} checkpoints for {tasks} tasks"
    );
}

#[test]
fn reserved_update_ids_wrap_around_skipping_zero() {
    let mut rig = Rig::registered();
    rig.core.set_next_update_id(u32::MAX - 1);
    assert_eq!(
        rig.core.update_id_checkpoint(),
        u32::MAX - 1,
        "no block reserved yet"
    );
    rig.started("t1", 100, 16);
    rig.event(exit("t1", Exit::Code(0)));
    let ids: Vec<u32> = statuses(&rig.drain()).iter().map(|u| u.update_id).collect();
    assert_eq!(ids, [u32::MAX - 1, u32::MAX, 1]);
    // The block runs from u32::MAX - 1 through 1022, skipping 0: a restart continues at 1023.
    assert_eq!(rig.core.update_id_checkpoint(), 1023);
}

#[test]
fn a_restored_snapshot_takes_back_every_task_with_its_limits_and_continues_update_ids() {
    use agent_nostd_core::ids::TaskKey;
    let mut rig = Rig::registered();
    rig.started("t1", 500, 64);
    rig.started("t2", 250, 32);
    rig.event(exit("t2", Exit::Code(4)));
    let before = rig.core.snapshot();
    assert_eq!(before.tasks.len(), 2);
    assert_eq!(before.master_epoch, 1);
    assert_eq!(before.next_update_id, rig.core.update_id_checkpoint());
    let ended = before.tasks[1].ended.as_ref().expect("t2 has ended");
    assert_eq!(ended.state, TaskState::Failed);
    assert_eq!(ended.message, "exited with code 4");

    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    let results = core.restore(0, &before, |_| None);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let after = core.snapshot();
    assert_eq!(after.tasks, before.tasks, "same tasks, limits and ends");
    assert_eq!(after.master_epoch, 1, "the fence is taken back");
    let t1 = TaskKey::new("fw-1", "t1").unwrap();
    assert_eq!(core.task(&t1).unwrap().state, TaskState::Running);
    assert!(
        core.next_update_id() >= before.next_update_id,
        "ids continue past the snapshot's block"
    );
}

#[test]
fn a_task_whose_process_ended_while_the_agent_was_down_ends_as_it_is_restored() {
    use agent_nostd_core::ids::TaskKey;
    let mut rig = Rig::registered();
    rig.started("t1", 500, 64);
    rig.started("t2", 250, 32);
    let snapshot = rig.core.snapshot();
    let t2 = TaskKey::new("fw-1", "t2").unwrap();

    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    let results = core.restore(0, &snapshot, |key| (*key == t2).then_some(Exit::Unknown));
    assert_eq!(results.len(), 2);
    let view = core.task(&t2).unwrap();
    assert_eq!(
        (view.state, view.end_reason),
        (TaskState::Lost, Some(Reason::AgentRestarted))
    );
    assert_eq!(
        core.allocated(),
        Resources::new(500, 64, 0),
        "t1 still holds its limits"
    );
}

#[test]
fn a_second_record_of_a_task_in_a_snapshot_is_refused_as_already_known() {
    use agent_nostd_core::agent::TaskError;
    let mut rig = Rig::registered();
    rig.started("t1", 500, 64);
    let mut snapshot = rig.core.snapshot();
    let twin = snapshot.tasks[0].clone();
    snapshot.tasks.push(twin).unwrap();

    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    let results = core.restore(0, &snapshot, |_| None);
    assert_eq!(results[..], [Ok(()), Err(TaskError::AlreadyKnown)]);
    assert_eq!(core.tasks().count(), 1);
}

#[test]
fn forged_unframed_replayed_and_other_boot_commands_are_counted_and_never_acted_on() {
    let mut rig = Rig::registered();
    let boot = rig.core.boot();
    let kill = |task: &str| {
        MasterMsg::KillTask(KillTask {
            framework_id: id("fw-1").unwrap(),
            task_id: id(task).unwrap(),
            grace_ms: 0,
        })
    };
    let run = |task: &str| {
        let mut run = run_task();
        run.task_id = id(task).unwrap();
        MasterMsg::RunTask(run)
    };
    let now = rig.now;
    // Unframed, as version 2 and any LAN client could send it.
    let mut buf = vec![0; MasterEnvelope::MAX_ENCODED_LEN];
    let n = run("t1").from_epoch(1).encode(&mut buf).unwrap();
    assert_eq!(
        rig.core.handle_bytes(now, CMD, &mut buf[..n].to_vec()),
        Err(RecvError::Unauthenticated)
    );
    // Sealed with another key; for another boot; with a flipped bit.
    let mut forged = vec![0; MAX_DOWN_FRAME_LEN];
    let other = agent_nostd_core::auth::Secret::from_bytes([9; 32]).message_key();
    let binding = agent_nostd_core::frame::Binding {
        direction: agent_nostd_core::frame::Direction::Down,
        agent_id: "pi4",
        boot,
    };
    let n = agent_nostd_core::frame::encode_sealed(
        &run("t2").from_epoch(1),
        &other,
        &binding,
        50,
        &mut forged,
    )
    .unwrap();
    let mut payload = forged[..n].to_vec();
    assert_eq!(
        rig.core.handle_bytes(now, CMD, &mut payload),
        Err(RecvError::BadTag)
    );
    assert_eq!(payload, &forged[..n], "a refused frame is left as it came");
    let old_boot = down_frame("pi4", boot - 1, 51, 1, run("t3"));
    assert_eq!(
        rig.core.handle_bytes(now, CMD, &mut old_boot.to_vec()),
        Err(RecvError::BadTag)
    );
    let mut flipped = down_frame("pi4", boot, 52, 1, run("t4"));
    flipped[10] ^= 1;
    assert!(rig
        .core
        .handle_bytes(now, CMD, &mut flipped.to_vec())
        .is_err());
    // A genuine command taken once; its replay is refused.
    let genuine = down_frame("pi4", boot, 53, 1, run("t5"));
    assert!(rig
        .core
        .handle_bytes(now, CMD, &mut genuine.to_vec())
        .is_ok());
    assert_eq!(
        rig.core.handle_bytes(now, CMD, &mut genuine.to_vec()),
        Err(RecvError::Replayed(
            agent_nostd_core::frame::FrameError::Replayed
        ))
    );
    let replayed_kill = down_frame("pi4", boot, 53, 1, kill("t5"));
    assert!(rig
        .core
        .handle_bytes(now, CMD, &mut replayed_kill.to_vec())
        .is_err());
    let tasks: Vec<_> = rig.core.tasks().map(|t| t.task_id.to_owned()).collect();
    assert_eq!(tasks, ["t5"], "only the genuine launch was acted on");
    let stats = rig.stats();
    assert_eq!(stats.unauthenticated, 1);
    assert_eq!(stats.bad_tag, 3);
    assert_eq!(stats.replayed, 2);
}

#[test]
fn a_forged_hello_never_moves_the_fence_and_the_real_master_brings_the_agent_back() {
    let mut rig = Rig::registered();
    // A hello naming an epoch far above the master's: the agent asks that master to register it.
    rig.master_at(u64::MAX, MasterMsg::Hello);
    assert_eq!(rig.core.master_epoch(), 1);
    let sent = rig.drain();
    assert!(
        matches!(&sent[..], [Sent { msg: AgentMsg::ReRegister(re), .. }]
            if re.info.to_epoch == u64::MAX && re.last_master_epoch == 1),
        "{sent:?}"
    );
    // The real master (epoch 1) does not take a registration addressed elsewhere: it asks again.
    rig.master(MasterMsg::ReRegisterRequest);
    let sent = rig.drain();
    assert!(
        matches!(&sent[..], [Sent { msg: AgentMsg::ReRegister(re), .. }] if re.info.to_epoch == 1),
        "{sent:?}"
    );
    rig.master(MasterMsg::RegisterAck(RegisterAck {
        agent_id: id("pi4").unwrap(),
    }));
    assert!(rig.core.is_registered());
    assert_eq!(rig.core.master_epoch(), 1);
}

#[test]
fn a_hint_makes_a_registered_agent_register_again_at_most_once_a_second() {
    let mut rig = Rig::registered();
    let mut buf = vec![0; MasterEnvelope::MAX_ENCODED_LEN];
    let n = MasterMsg::Hello.from_epoch(1).encode(&mut buf).unwrap();
    assert_eq!(
        rig.core.handle_bytes(rig.now, CMD, &mut buf[..n].to_vec()),
        Ok(MasterMsg::Hello)
    );
    assert!(!rig.core.is_registered());
    let sent = rig.drain();
    assert!(
        matches!(
            &sent[..],
            [Sent {
                msg: AgentMsg::ReRegister(_),
                ..
            }]
        ),
        "{sent:?}"
    );
    rig.master(MasterMsg::RegisterAck(RegisterAck {
        agent_id: id("pi4").unwrap(),
    }));
    rig.drain();
    // A second hint right away (a flood of forged ones) changes nothing.
    assert!(rig
        .core
        .handle_bytes(rig.now, CMD, &mut buf[..n].to_vec())
        .is_ok());
    assert!(rig.core.is_registered());
    assert_eq!(rig.stats().hints, 2);
}

#[test]
fn a_restored_agent_boots_above_its_checkpoint_and_numbers_its_frames_afresh() {
    let mut rig = Rig::registered();
    rig.running("t1", 500, 64);
    let snapshot = rig.core.snapshot();
    assert_eq!(snapshot.boot, 1);
    let mut core = AgentCore::new(Config::default(), info(), key(), 0).unwrap();
    core.restore(0, &snapshot, |_| None);
    assert_eq!(core.boot(), 2);
    assert_eq!(core.snapshot().boot, 2, "the new boot is checkpointed");
    core.handle_connected(0, 8);
    let mut rig = Rig {
        core,
        now: 0,
        buf: Box::new([0; MAX_UP_FRAME_LEN]),
        down_seq: 1,
    };
    let sent = rig.drain();
    let AgentMsg::ReRegister(re) = &sent[0].msg else {
        panic!("expected a re-registration, got {sent:?}");
    };
    assert_eq!((re.info.boot, re.info.seq), (2, 1));
    // What the master sent the old boot does not verify any more.
    let old = down_frame("pi4", 1, 99, 1, MasterMsg::ReRegisterRequest);
    assert_eq!(
        rig.core.handle_bytes(0, CMD, &mut old.to_vec()),
        Err(RecvError::BadTag)
    );
}

#[test]
fn a_run_tasks_environment_is_unreadable_on_the_wire_and_reaches_the_agent_whole() {
    let mut rig = Rig::registered();
    let boot = rig.core.boot();
    let mut run = run_task();
    run.task_id = id("t-secret").unwrap();
    run.env[0].value = heapless::String::try_from("hunter2-s3cret").unwrap();
    let wire = down_frame("pi4", boot, 60, 1, MasterMsg::RunTask(run.clone()));
    let holds = |p: &[u8], s: &[u8]| p.windows(s.len()).any(|w| w == s);
    assert!(!holds(&wire, b"hunter2"), "the value travels encrypted");
    assert!(!holds(&wire, b"echo"), "so does the command line");
    match rig.core.handle_bytes(rig.now, CMD, &mut wire.to_vec()) {
        Ok(MasterMsg::RunTask(got)) => assert_eq!(got, run),
        other => panic!("expected the RunTask, got {other:?}"),
    }
}
