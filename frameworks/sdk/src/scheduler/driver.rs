//! The scheduler's handle on the master: [`SchedulerDriver`] checks every call a callback makes and
//! queues it in a bounded outbox, which [`SchedulerCore::poll_transmit`](super::SchedulerCore::poll_transmit)
//! hands out after the callback returns. It does no networking: tests build one with
//! [`SchedulerDriver::new`], feed a scheduler its callbacks and read
//! [`SchedulerDriver::take_outgoing`].

use std::collections::{BTreeMap, VecDeque};

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::MAX_ENV;
use bramble_mqtt::sources::{PASSWORD_ENV, USERNAME_ENV};
use bramble_mqtt::Login;

use crate::error::CallError;
use crate::messages::{FrameworkMessage, MAX_MESSAGE_DATA};
use crate::protocol::{
    Accept, Call, Decline, Kill, OfferId, TaskError, TaskInfo, MAX_OFFERS_PER_CALL,
    MAX_TASKS_PER_CALL,
};

/// The environment variable the driver adds to every task it launches: the scheduler's client
/// name, so the executor knows where to send framework messages.
pub const FRAMEWORK_CLIENT_ENV: &str = "BRAMBLE_FRAMEWORK_CLIENT";

/// The longest username or password handed to executors (a task's env value limit).
const MAX_HANDED_LEN: usize = crate::protocol::task::MAX_ENV_VALUE_LEN;

/// How many calls and messages the outbox holds before refusing more.
pub const OUTBOX_CAPACITY: usize = 1024;

/// How many timers ([`SchedulerDriver::set_timer`]) may be pending at once.
pub const MAX_TIMERS: usize = 1024;

/// Something the driver will send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A call to the master (on the register or call topic).
    Call(Call),
    /// A framework message to one executor (on its exec topic).
    Message(FrameworkMessage),
}

/// The scheduler's handle on the master: it validates and queues calls. See the module docs.
#[derive(Debug)]
pub struct SchedulerDriver {
    pub(super) client: String,
    pub(super) framework_id: Option<String>,
    pub(super) master_epoch: Option<u64>,
    pub(super) outbox: VecDeque<Outgoing>,
    pub(super) stopping: bool,
    /// The time of the input being handled (ms, the core's clock).
    pub(super) now: u64,
    /// Pending timers: (when, sequence) → token, earliest first.
    pub(super) timers: BTreeMap<(u64, u64), u64>,
    pub(super) timer_seq: u64,
    /// Tasks accepted since the core last looked (it drains this after every callback;
    /// `take_outgoing` clears it for a driver used alone).
    pub(super) launched: Vec<String>,
    /// The broker login handed to executors in `BRAMBLE_USERNAME` / `BRAMBLE_PASSWORD`.
    pub(super) executor_login: Option<Login>,
}

impl SchedulerDriver {
    /// A driver for the scheduler behind `client`, not connected to anything:
    /// [`SchedulerCore`](super::SchedulerCore) makes its own, tests use this one and read
    /// [`take_outgoing`](Self::take_outgoing).
    pub fn new(client: &str) -> Self {
        SchedulerDriver {
            client: client.to_owned(),
            framework_id: None,
            master_epoch: None,
            outbox: VecDeque::new(),
            stopping: false,
            now: 0,
            timers: BTreeMap::new(),
            timer_seq: 0,
            launched: Vec::new(),
            executor_login: None,
        }
    }

    /// Hands `login` (the scheduler's own broker login) to every task launched from now on, as
    /// `BRAMBLE_USERNAME` and `BRAMBLE_PASSWORD`, so executors log in as their framework. A login
    /// longer than a task's env values may be (128 bytes) is not handed on. `None`: nothing is.
    pub fn set_executor_login(&mut self, login: Option<Login>) {
        self.executor_login = login.filter(|l| {
            let fits =
                l.username.len() <= MAX_HANDED_LEN && l.password.expose().len() <= MAX_HANDED_LEN;
            if !fits {
                tracing::warn!(
                    "the broker login of {} is longer than 128 bytes: executors are not handed it",
                    l.username
                );
            }
            fits
        });
    }

    /// The time of the callback being run, in milliseconds on the core's clock (0 for a driver
    /// from [`new`](Self::new) until [`set_now`](Self::set_now)).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Sets the time, as the core does before every callback (tests of a scheduler alone use it).
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Calls [`Scheduler::timer`](super::Scheduler::timer) with `token` once `delay_ms` have
    /// passed. Timers fire in the order of their deadlines (equal deadlines in the order they were
    /// set); at most [`MAX_TIMERS`] may be pending. They do not fire once the driver is stopping.
    pub fn set_timer(&mut self, delay_ms: u64, token: u64) -> Result<(), CallError> {
        if self.timers.len() >= MAX_TIMERS {
            return Err(CallError::TooManyTimers(MAX_TIMERS));
        }
        self.timer_seq += 1;
        self.timers
            .insert((self.now.saturating_add(delay_ms), self.timer_seq), token);
        Ok(())
    }

    /// Cancels every pending timer with `token`; returns how many there were.
    pub fn cancel_timer(&mut self, token: u64) -> usize {
        let before = self.timers.len();
        self.timers.retain(|_, t| *t != token);
        before - self.timers.len()
    }

    /// The pending timers' deadlines and tokens, earliest first.
    pub fn timers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.timers.iter().map(|(&(at, _), &token)| (at, token))
    }

    /// The client name every topic is keyed by.
    pub fn client_name(&self) -> &str {
        &self.client
    }

    /// The framework id the master gave, once registered.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// The epoch of the master the framework registered with.
    pub fn master_epoch(&self) -> Option<u64> {
        self.master_epoch
    }

    /// Accepts `offer_id`, launching `tasks` on it (none: the offer goes back, like a decline with
    /// the default filter). Adds [`FRAMEWORK_CLIENT_ENV`] to each task's environment, and the
    /// scheduler's broker login ([`set_executor_login`](Self::set_executor_login)) if it has one.
    pub fn launch(&mut self, offer_id: OfferId, tasks: Vec<TaskInfo>) -> Result<(), CallError> {
        if tasks.len() > MAX_TASKS_PER_CALL {
            return Err(CallError::Invalid(format!(
                "{} tasks in one accept; at most {MAX_TASKS_PER_CALL}",
                tasks.len()
            )));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            task.env.retain(|(k, _)| k != FRAMEWORK_CLIENT_ENV);
            task.env
                .push((FRAMEWORK_CLIENT_ENV.to_owned(), self.client.clone()));
            if let Some(login) = &self.executor_login {
                task.env
                    .retain(|(k, _)| k != USERNAME_ENV && k != PASSWORD_ENV);
                task.env
                    .push((USERNAME_ENV.to_owned(), login.username.clone()));
                task.env
                    .push((PASSWORD_ENV.to_owned(), login.password.expose().to_owned()));
            }
            // The one validator the master also runs: what passes here, the master takes.
            task.validate().map_err(|e| match e {
                TaskError::TooManyVars(tid) => CallError::Invalid(format!(
                    "task {tid}: at most {} environment variables (the driver adds {FRAMEWORK_CLIENT_ENV}{})",
                    MAX_ENV - 1 - 2 * usize::from(self.executor_login.is_some()),
                    if self.executor_login.is_some() { ", BRAMBLE_USERNAME and BRAMBLE_PASSWORD" } else { "" }
                )),
                e => CallError::Invalid(e.to_string()),
            })?;
            out.push(task);
        }
        let ids: Vec<String> = out.iter().map(|t| t.task_id.clone()).collect();
        self.push(Outgoing::Call(Call::Accept(Accept {
            offer_id,
            tasks: out,
        })))?;
        // The core tracks launched tasks, to reconcile them.
        self.launched.extend(ids);
        Ok(())
    }

    /// Declines offers; their agents are not offered again for `refuse_seconds` (`None`: the
    /// master's default, 5 s).
    pub fn decline(
        &mut self,
        offer_ids: Vec<OfferId>,
        refuse_seconds: Option<u32>,
    ) -> Result<(), CallError> {
        let calls: Vec<Outgoing> = offer_ids
            .chunks(MAX_OFFERS_PER_CALL)
            .map(|ids| {
                Outgoing::Call(Call::Decline(Decline {
                    offer_ids: ids.to_vec(),
                    refuse_seconds,
                }))
            })
            .collect();
        self.room_for(calls.len())?;
        for c in calls {
            self.push(c)?;
        }
        Ok(())
    }

    /// Clears every filter and resumes offers.
    pub fn revive(&mut self) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Revive))
    }

    /// Stops offers until the next [`revive`](Self::revive).
    pub fn suppress(&mut self) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Suppress))
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace_ms`.
    pub fn kill(&mut self, task_id: &str, grace_ms: u32) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Kill(Kill {
            task_id: task_id.to_owned(),
            grace_ms,
        })))
    }

    /// Asks for the latest state of these tasks (every task when empty); answers come as updates.
    pub fn reconcile(&mut self, task_ids: Vec<String>) -> Result<(), CallError> {
        if task_ids.len() > MAX_TASKS_PER_CALL {
            return Err(CallError::Invalid(format!(
                "{} tasks in one reconcile; at most {MAX_TASKS_PER_CALL}",
                task_ids.len()
            )));
        }
        self.push(Outgoing::Call(Call::Reconcile { task_ids }))
    }

    /// Sends `data` to the executor of `task_id`, straight through the broker.
    pub fn send_message(&mut self, task_id: &str, data: Vec<u8>) -> Result<(), CallError> {
        if data.len() > MAX_MESSAGE_DATA {
            return Err(CallError::Invalid(format!(
                "message of {} bytes; at most {MAX_MESSAGE_DATA}",
                data.len()
            )));
        }
        validate_id(task_id)
            .map_err(|e| CallError::Invalid(format!("task id `{task_id}`: {e:?}")))?;
        self.push(Outgoing::Message(FrameworkMessage {
            task_id: task_id.to_owned(),
            data,
        }))
    }

    /// Tears the framework down (its tasks are killed) and leaves [`run`](super::run), which returns the
    /// scheduler. Calls queued before are still sent; later ones are refused.
    pub fn stop(&mut self) {
        if self.stopping {
            return;
        }
        // Teardown may go beyond the capacity: it is the last call.
        if self.framework_id.is_some() {
            self.outbox.push_back(Outgoing::Call(Call::Teardown));
        }
        self.stopping = true;
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Takes everything queued, oldest first.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        self.launched.clear();
        self.outbox.drain(..).collect()
    }

    /// Takes the queued calls to the master only, dropping framework messages (a test helper).
    pub fn take_calls(&mut self) -> Vec<Call> {
        self.take_outgoing()
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Call(c) => Some(c),
                Outgoing::Message(_) => None,
            })
            .collect()
    }

    /// Records the registration, as the core does on `Registered` (tests use it to set an id).
    pub fn set_registered(&mut self, framework_id: &str, master_epoch: u64) {
        self.framework_id = Some(framework_id.to_owned());
        self.master_epoch = Some(master_epoch);
    }

    fn room_for(&self, n: usize) -> Result<(), CallError> {
        if self.stopping {
            return Err(CallError::Stopping);
        }
        if self.outbox.len() + n > OUTBOX_CAPACITY {
            return Err(CallError::OutboxFull(OUTBOX_CAPACITY));
        }
        Ok(())
    }

    fn push(&mut self, out: Outgoing) -> Result<(), CallError> {
        self.room_for(1)?;
        self.outbox.push_back(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::Resources;

    #[test]
    fn launched_tasks_carry_the_schedulers_login_only_when_it_has_one() {
        let env_of = |d: &mut SchedulerDriver| {
            let t = TaskInfo::new("t1", &["/bin/true"], Resources::new(100, 10, 0));
            d.launch(7, vec![t]).unwrap();
            let calls = d.take_calls();
            let Call::Accept(a) = &calls[0] else {
                panic!("not an accept: {calls:?}")
            };
            a.tasks[0].env.clone()
        };
        let mut d = SchedulerDriver::new("pi");
        let env = env_of(&mut d);
        assert!(!env
            .iter()
            .any(|(k, _)| k == USERNAME_ENV || k == PASSWORD_ENV));
        d.set_executor_login(Some(Login::new("framework-pi", "s3cret")));
        let env = env_of(&mut d);
        assert!(env.contains(&(USERNAME_ENV.into(), "framework-pi".into())));
        assert!(env.contains(&(PASSWORD_ENV.into(), "s3cret".into())));
        d.set_executor_login(Some(Login::new("framework-pi", "x".repeat(129))));
        let env = env_of(&mut d);
        assert!(
            !env.iter().any(|(k, _)| k == PASSWORD_ENV),
            "too long to hand on"
        );
    }

    #[test]
    fn launched_tasks_carry_the_framework_client_in_their_environment() {
        let mut d = SchedulerDriver::new("pi");
        let mut t = TaskInfo::new("t1", &["/bin/true"], Resources::new(100, 10, 0));
        t.env.push((FRAMEWORK_CLIENT_ENV.into(), "other".into()));
        d.launch(7, vec![t]).unwrap();
        let calls = d.take_calls();
        let Call::Accept(a) = &calls[0] else {
            panic!("not an accept: {calls:?}")
        };
        assert_eq!(a.offer_id, 7);
        assert_eq!(
            a.tasks[0].env,
            vec![(FRAMEWORK_CLIENT_ENV.to_owned(), "pi".to_owned())]
        );
    }

    #[test]
    fn invalid_tasks_are_refused_before_anything_is_queued() {
        let mut d = SchedulerDriver::new("pi");
        let bad_id = TaskInfo::new("a b", &["/bin/true"], Resources::new(1, 1, 0));
        assert!(matches!(
            d.launch(1, vec![bad_id]),
            Err(CallError::Invalid(_))
        ));
        let no_argv = TaskInfo::new("t", &[], Resources::new(1, 1, 0));
        assert!(matches!(
            d.launch(1, vec![no_argv]),
            Err(CallError::Invalid(_))
        ));
        assert!(d.take_outgoing().is_empty());
    }

    #[test]
    fn long_declines_are_split_into_calls_the_master_accepts() {
        let mut d = SchedulerDriver::new("pi");
        d.decline((0..300).collect(), Some(60)).unwrap();
        let calls = d.take_calls();
        assert_eq!(calls.len(), 2);
        assert!(
            matches!(&calls[0], Call::Decline(x) if x.offer_ids.len() == 256 && x.refuse_seconds == Some(60))
        );
    }

    #[test]
    fn a_full_outbox_refuses_calls_instead_of_growing() {
        let mut d = SchedulerDriver::new("pi");
        for _ in 0..OUTBOX_CAPACITY {
            d.revive().unwrap();
        }
        assert_eq!(d.suppress(), Err(CallError::OutboxFull(OUTBOX_CAPACITY)));
    }

    #[test]
    fn stop_queues_a_teardown_once_registered_and_refuses_later_calls() {
        let mut d = SchedulerDriver::new("pi");
        d.set_registered("1-1", 1);
        d.stop();
        d.stop();
        assert_eq!(d.revive(), Err(CallError::Stopping));
        assert_eq!(d.take_calls(), vec![Call::Teardown]);
    }
}
