//! A one-off task as its own framework, like `mesos-execute`: the scheduler behind `bramble run`.
//!
//! [`OneShot`] registers, waits for an offer that holds the asked resources on an agent whose
//! attributes match every constraint (declining the others), launches the command there as one task,
//! reports each state change on stderr, and stops (tearing the framework down) when the task ends.
//! [`exit_code`] turns the task's end into the command's exit status: the task's own exit code,
//! 128 + the signal for a signal, 137 for an out-of-memory kill, 1 when it could not run.
//! [`registration`] is how `bramble run` registers it.
//!
//! A refusal of its launch (`AcceptRefused` or `UnknownOffer` naming the launch's offer) does not
//! mean the task is not there: a second copy of an accept that launched it (QoS 1 delivers at
//! least once) is answered `UnknownOffer`. So it asks the master (a `Reconcile` of its task) and
//! launches again, on the next offer that fits, only if the master knows no such task.
//!
//! It is a plain [`Scheduler`]: `bramble run` drives it with [`crate::scheduler::run_until`], and
//! a simulation can drive it through [`crate::scheduler::SchedulerCore`].

use crate::protocol::{ErrorCode, Offer, OfferId, Register, StatusUpdate, TaskInfo};
use crate::scheduler::{Scheduler, SchedulerDriver};
use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;

/// How long an agent that does not fit is not offered again, in seconds.
const REFUSE_SECONDS: u32 = 5;

/// How long the master keeps a one-off framework's task after it disconnects, in milliseconds:
/// a one-off task does not outlive its command line for long.
pub const FAILOVER_TIMEOUT_MS: u64 = 10_000;

/// The registration of a one-off framework named `name`: a short failover
/// ([`FAILOVER_TIMEOUT_MS`]).
pub fn registration(name: &str) -> Register {
    let mut registration = Register::new(name);
    registration.failover_timeout_ms = FAILOVER_TIMEOUT_MS;
    registration
}

/// What to run and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The task's id.
    pub task_id: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// What the task asks for.
    pub resources: Resources,
    /// Attributes the agent must have, as (key, value).
    pub constraints: Vec<(String, String)>,
}

/// Whether `offer` holds `spec`'s resources on an agent that matches its constraints.
pub fn fits(spec: &RunSpec, offer: &Offer) -> bool {
    let r = &offer.resources;
    let enough = r.cpu_millis >= spec.resources.cpu_millis
        && r.mem_mib >= spec.resources.mem_mib
        && r.disk_mib >= spec.resources.disk_mib;
    enough
        && spec.constraints.iter().all(|(k, v)| {
            offer
                .agent
                .attributes
                .iter()
                .any(|a| a.key == *k && a.value == *v)
        })
}

/// The exit status of `bramble run` for a task that ended in `state` for `reason`.
pub fn exit_code(state: TaskState, reason: Reason) -> u8 {
    match (state, reason) {
        (TaskState::Finished, _) => 0,
        (_, Reason::Exited { code }) => u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1),
        (_, Reason::Signaled { signal }) => u8::try_from(128 + signal.clamp(1, 127)).unwrap_or(255),
        (_, Reason::MemoryLimit) => 137,
        (TaskState::Killed, _) => 137,
        _ => 1,
    }
}

/// The one-off framework. See the [module docs](self).
#[derive(Debug)]
pub struct OneShot {
    spec: RunSpec,
    /// The offer the task was launched on, until the master turns the launch down.
    launched_with: Option<OfferId>,
    /// A refusal named the launch's offer: the master was asked whether it holds the task.
    checking: bool,
    waiting_said: bool,
    /// The task's end, once it ended.
    pub ended: Option<(TaskState, Reason)>,
}

impl OneShot {
    /// A framework that runs `spec` once.
    pub fn new(spec: RunSpec) -> Self {
        OneShot {
            spec,
            launched_with: None,
            checking: false,
            waiting_said: false,
            ended: None,
        }
    }

    /// The exit status for the command line: the task's (see [`exit_code`]), or 1 if it never
    /// ended (e.g. stopped by Ctrl-C before).
    pub fn exit_status(&self) -> u8 {
        self.ended.map_or(1, |(s, r)| exit_code(s, r))
    }
}

impl Scheduler for OneShot {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let mut decline: Vec<OfferId> = Vec::new();
        for offer in offers {
            if self.launched_with.is_none() && fits(&self.spec, &offer) {
                let argv: Vec<&str> = self.spec.argv.iter().map(String::as_str).collect();
                let task = TaskInfo::new(&self.spec.task_id, &argv, self.spec.resources);
                match driver.launch(offer.offer_id, vec![task]) {
                    Ok(()) => {
                        eprintln!(
                            "bramble run: launching {} on {}",
                            self.spec.task_id, offer.agent.agent_id
                        );
                        self.launched_with = Some(offer.offer_id);
                        let _ = driver.suppress();
                    }
                    Err(e) => {
                        eprintln!("bramble run: cannot launch: {e}");
                        decline.push(offer.offer_id);
                    }
                }
            } else {
                decline.push(offer.offer_id);
            }
        }
        if !decline.is_empty() {
            if self.launched_with.is_none() && !self.waiting_said {
                self.waiting_said = true;
                eprintln!("bramble run: waiting for an offer that fits");
            }
            let _ = driver.decline(decline, Some(REFUSE_SECONDS));
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        if update.task_id != self.spec.task_id || self.ended.is_some() {
            return;
        }
        if update.reason == Reason::UnknownTask && update.agent_id.is_none() {
            // The master holds no such task: the answer to `checking`'s reconciliation (or a
            // copy of it). The launch did not happen: wait for another offer.
            if self.checking {
                self.checking = false;
                self.launched_with = None;
                let _ = driver.revive();
            }
            return;
        }
        // Any other update: the master holds the task.
        self.checking = false;
        let agent = update.agent_id.as_deref().unwrap_or("?");
        let detail = match update.reason {
            Reason::None => String::new(),
            Reason::Exited { code } => format!(" (exit code {code})"),
            Reason::Signaled { signal } => format!(" (signal {signal})"),
            other => format!(" ({other:?})"),
        };
        let message = if update.message.is_empty() {
            String::new()
        } else {
            format!(": {}", update.message)
        };
        eprintln!(
            "bramble run: {} {} on {agent}{detail}{message}",
            update.task_id,
            update.state.as_str()
        );
        if update.state.is_terminal() {
            self.ended = Some((update.state, update.reason));
            driver.stop();
        }
    }

    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        eprintln!(
            "bramble run: the master refused a call ({code:?}, offer {offer_id:?}): {message}"
        );
        if code == ErrorCode::AcceptRefused || code == ErrorCode::UnknownOffer {
            // The launch may not have happened, or this answers a second copy of an accept that
            // did (QoS 1 delivers at least once): ask the master whether it holds the task, and
            // launch again only if it does not.
            let launch_refused = self.launched_with.is_some() && offer_id == self.launched_with;
            if launch_refused && !self.checking {
                self.checking = true;
                let _ = driver.reconcile(vec![self.spec.task_id.clone()]);
            }
        } else if code == ErrorCode::RegistrationRefused {
            driver.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentDescription, Attribute, Call};
    use std::sync::Arc;

    fn offer(cpu: u32, attrs: &[(&str, &str)]) -> Offer {
        Offer {
            offer_id: 1,
            agent: Arc::new(AgentDescription {
                agent_id: "pi".into(),
                hostname: "pi".into(),
                arch: "aarch64".into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| Attribute {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            }),
            resources: Resources::new(cpu, 512, 0),
        }
    }

    fn spec(constraints: &[(&str, &str)]) -> RunSpec {
        RunSpec {
            task_id: "run-1".into(),
            argv: vec!["/bin/true".into()],
            resources: Resources::new(500, 64, 0),
            constraints: constraints
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn an_offer_fits_when_it_holds_the_resources_and_matches_every_constraint() {
        assert!(fits(&spec(&[]), &offer(500, &[])));
        assert!(!fits(&spec(&[]), &offer(499, &[])));
        let s = spec(&[("sensor", "bme280")]);
        assert!(fits(
            &s,
            &offer(1000, &[("room", "attic"), ("sensor", "bme280")])
        ));
        assert!(!fits(&s, &offer(1000, &[("sensor", "dht22")])));
        assert!(!fits(&s, &offer(1000, &[])));
    }

    #[test]
    fn the_exit_status_is_the_tasks_own_or_128_plus_its_signal() {
        let exited = |code| Reason::Exited { code };
        assert_eq!(exit_code(TaskState::Finished, exited(0)), 0);
        assert_eq!(exit_code(TaskState::Failed, exited(7)), 7);
        assert_eq!(exit_code(TaskState::Failed, exited(-1)), 1);
        assert_eq!(exit_code(TaskState::Failed, exited(300)), 1);
        let signaled = Reason::Signaled { signal: 15 };
        assert_eq!(exit_code(TaskState::Killed, signaled), 143);
        assert_eq!(exit_code(TaskState::Failed, Reason::MemoryLimit), 137);
        assert_eq!(exit_code(TaskState::Killed, Reason::KilledByRequest), 137);
        assert_eq!(exit_code(TaskState::Error, Reason::InvalidTask), 1);
        assert_eq!(exit_code(TaskState::Lost, Reason::None), 1);
    }

    #[test]
    fn a_one_off_framework_registers_under_its_name_with_a_short_failover() {
        let r = registration("bramble-run");
        assert_eq!(r.name, "bramble-run");
        assert_eq!(r.failover_timeout_ms, FAILOVER_TIMEOUT_MS);
        assert!(r.validate().is_ok());
    }

    fn one_shot_with_a_launch() -> (OneShot, SchedulerDriver) {
        let mut d = SchedulerDriver::new("bramble-run-1");
        d.set_registered("1-1", 1);
        let mut one = OneShot::new(spec(&[]));
        one.offers(&mut d, vec![offer(500, &[])]);
        assert!(matches!(
            &d.take_calls()[..],
            [Call::Accept(_), Call::Suppress]
        ));
        (one, d)
    }

    fn update(state: TaskState, reason: Reason, agent: Option<&str>) -> StatusUpdate {
        StatusUpdate {
            task_id: "run-1".into(),
            agent_id: agent.map(str::to_owned),
            state,
            reason,
            message: String::new(),
            update_id: None,
        }
    }

    #[test]
    fn a_refusal_of_a_duplicated_accept_does_not_launch_the_task_again() {
        let (mut one, mut d) = one_shot_with_a_launch();
        one.error(&mut d, ErrorCode::UnknownOffer, Some(1), "not outstanding");
        one.error(&mut d, ErrorCode::UnknownOffer, Some(1), "not outstanding");
        let reconcile = Call::Reconcile {
            task_ids: vec!["run-1".into()],
        };
        assert_eq!(d.take_calls(), vec![reconcile]);
        // The master holds the task: it stays launched.
        one.status_update(&mut d, update(TaskState::Staging, Reason::None, Some("pi")));
        one.offers(&mut d, vec![offer(500, &[])]);
        assert!(matches!(&d.take_calls()[..], [Call::Decline(_)]));
        one.status_update(
            &mut d,
            update(TaskState::Finished, Reason::Exited { code: 0 }, Some("pi")),
        );
        assert_eq!(one.exit_status(), 0);
    }

    #[test]
    fn a_launch_the_master_does_not_hold_is_made_again_on_the_next_offer() {
        let (mut one, mut d) = one_shot_with_a_launch();
        one.error(&mut d, ErrorCode::AcceptRefused, Some(1), "does not fit");
        assert!(matches!(&d.take_calls()[..], [Call::Reconcile { .. }]));
        one.status_update(&mut d, update(TaskState::Lost, Reason::UnknownTask, None));
        assert_eq!(d.take_calls(), vec![Call::Revive]);
        assert_eq!(one.ended, None, "the master's answer is not the task's end");
        one.offers(&mut d, vec![offer(500, &[])]);
        assert!(matches!(
            &d.take_calls()[..],
            [Call::Accept(_), Call::Suppress]
        ));
    }

    #[test]
    fn a_refusal_naming_another_offer_leaves_the_launch_alone() {
        let (mut one, mut d) = one_shot_with_a_launch();
        one.error(&mut d, ErrorCode::UnknownOffer, Some(7), "not outstanding");
        assert!(d.take_calls().is_empty());
    }
}
