//! The simulated boards: [`SimAgent`] (an agent core and the "OS" that runs its tasks) and how
//! the host carries out the core's actions, running the simulated executors
//! ([`super::executors`]) of the tasks it launches.

use std::collections::{BTreeMap, VecDeque};

use agent_nostd_core::agent::{Action, Exit, LocalEvent, Signal};
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::{AgentInfo, MasterEnvelope, MasterMsg};
use agent_nostd_core::{AgentCore, Resources};
use bramble_proto::message::{exec_topic, message_topic, FrameworkMessage};
use bramble_sdk::scheduler::FRAMEWORK_CLIENT_ENV;

use super::executors::{ExecOutput, Executor};
use super::{Dest, Sim};

/// How long an executor on a cut-off board waits before trying its publish again (ms).
const EXEC_RETRY_MS: u64 = 1_000;

/// The command and environment of a task, from the `RunTask` its agent handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// The argv.
    pub argv: Vec<String>,
    /// The environment the framework asked for.
    pub env: Vec<(String, String)>,
}

/// A simulated executor process running on a board.
#[derive(Debug)]
pub struct SimExecutor {
    /// The board it runs on.
    pub agent: usize,
    /// Its task.
    pub key: TaskKey,
    /// The scheduler's client name, from `BRAMBLE_FRAMEWORK_CLIENT`.
    pub client: String,
    /// The process itself.
    pub exec: Executor,
    /// What it still has to do, in order (a publish waits for the broker).
    outbox: VecDeque<ExecOutput>,
    /// When to try a publish again while the board is cut off.
    retry_at: Option<u64>,
    gone: bool,
}

impl SimExecutor {
    fn wake_at(&self) -> Option<u64> {
        match (self.exec.poll_timeout(), self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One simulated board: the agent core and the "OS" that runs its tasks.
pub struct SimAgent {
    /// The agent's state machine.
    pub core: AgentCore,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// The processes running on the board, by task.
    pub running: BTreeMap<TaskKey, Resources>,
    /// When set, SIGTERM is ignored (the task only dies at SIGKILL).
    pub ignore_term: bool,
    /// When set, the board is cut off: nothing it sends or is sent arrives, and no last will is
    /// published (the broker has not noticed yet).
    pub partitioned: bool,
    /// Every task ever launched here, in order.
    pub launched: Vec<TaskKey>,
    /// Every signal sent to a task here, in order.
    pub signals: Vec<(String, Signal, u64)>,
    /// Every process that ended here, by task, in order.
    pub ended: Vec<TaskKey>,
    /// The commands of tasks whose `RunTask` arrived, until they launch.
    pub commands: BTreeMap<TaskKey, Command>,
    pub(super) info: AgentInfo,
}

impl Sim {
    pub(super) fn drain_agent(&mut self, i: usize) {
        let mut buf = [0u8; agent_nostd_core::wire::MAX_UP_FRAME_LEN];
        loop {
            let now = self.now;
            while let Some(t) = self.agents[i].core.poll_transmit(now, &mut buf) {
                if self.agents[i].partitioned {
                    continue;
                }
                let payload = buf[..t.len].to_vec();
                self.send(Dest::Master, t.topic.as_str(), payload);
            }
            let mut acted = false;
            while let Some(action) = self.agents[i].core.poll_action() {
                acted = true;
                self.host_action(i, action);
            }
            if !acted {
                break;
            }
        }
    }

    pub(super) fn host_action(&mut self, i: usize, action: Action) {
        let now = self.now;
        let a = &mut self.agents[i];
        let key = action.key();
        match action {
            Action::Launch {
                framework_id,
                task_id,
                resources,
                ..
            } => {
                a.launched.push(key.clone());
                a.running.insert(key.clone(), resources);
                let _ = a.core.handle_event(
                    now,
                    LocalEvent::Started {
                        framework_id: &framework_id,
                        task_id: &task_id,
                    },
                );
                let command = a.commands.remove(&key).unwrap_or_default();
                self.spawn_executor(i, key, &command);
            }
            Action::Signal {
                framework_id,
                task_id,
                signal,
            } => {
                a.signals.push((task_id.as_str().to_owned(), signal, now));
                if signal == Signal::Term && a.ignore_term {
                    return;
                }
                if a.running.remove(&key).is_some() {
                    self.executors
                        .iter_mut()
                        .filter(|e| e.agent == i && e.key == key)
                        .for_each(|e| e.gone = true);
                    let a = &mut self.agents[i];
                    a.ended.push(key);
                    let sig = if signal == Signal::Term { 15 } else { 9 };
                    let _ = a.core.handle_event(
                        now,
                        LocalEvent::Exited {
                            framework_id: &framework_id,
                            task_id: &task_id,
                            exit: Exit::Signal(sig),
                        },
                    );
                }
            }
            Action::Release { .. } => {}
        }
    }

    /// Remembers the command of a `RunTask` on its way to board `i`'s agent core.
    pub(super) fn note_command(&mut self, i: usize, payload: &[u8]) {
        let Some(MasterEnvelope {
            msg: MasterMsg::RunTask(run),
            ..
        }) = super::peek_down(
            i,
            self.agents[i].core.agent_id(),
            self.agents[i].core.boot(),
            payload,
        )
        else {
            return;
        };
        let command = Command {
            argv: run.argv.iter().map(|a| a.as_str().to_owned()).collect(),
            env: run
                .env
                .iter()
                .map(|v| (v.key.as_str().to_owned(), v.value.as_str().to_owned()))
                .collect(),
        };
        self.agents[i].commands.insert(run.key(), command);
    }

    /// Starts the simulated executor of a task just launched on board `i`, if its command is one.
    fn spawn_executor(&mut self, i: usize, key: TaskKey, command: &Command) {
        let agent_id = self.agents[i].core.agent_id().to_owned();
        let Some((exec, out)) = Executor::spawn(self.now, &agent_id, &command.argv) else {
            return;
        };
        let client = command
            .env
            .iter()
            .find(|(k, _)| k == FRAMEWORK_CLIENT_ENV)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.executors.push(SimExecutor {
            agent: i,
            key,
            client,
            exec,
            outbox: out.into(),
            retry_at: None,
            gone: false,
        });
        let x = self.executors.len() - 1;
        self.flush_executor(x);
    }

    /// Carries out what executor `x` has queued: publishes (unless its board is cut off, then it
    /// tries again later) and its exit.
    fn flush_executor(&mut self, x: usize) {
        let now = self.now;
        self.executors[x].retry_at = None;
        while let Some(out) = self.executors[x].outbox.pop_front() {
            let e = &self.executors[x];
            if e.gone {
                return;
            }
            match out {
                ExecOutput::Send(data) => {
                    if self.agents[e.agent].partitioned {
                        let e = &mut self.executors[x];
                        e.outbox.push_front(ExecOutput::Send(data));
                        e.retry_at = Some(now + EXEC_RETRY_MS);
                        return;
                    }
                    if self.drop_next_message.remove(e.key.task_id.as_str()) {
                        self.dropped_messages += 1;
                        continue;
                    }
                    let topic = message_topic(&e.client);
                    let m = FrameworkMessage {
                        task_id: e.key.task_id.to_string(),
                        data,
                    };
                    if let Some(k) = self.scheduler_by_client(&e.client) {
                        self.send(Dest::Scheduler(k), &topic, m.encode());
                    }
                }
                ExecOutput::Exit(exit) => {
                    let e = &mut self.executors[x];
                    e.gone = true;
                    let (i, key) = (e.agent, e.key.clone());
                    let a = &mut self.agents[i];
                    if a.running.remove(&key).is_some() {
                        a.ended.push(key.clone());
                        let _ = a.core.handle_event(
                            now,
                            LocalEvent::Exited {
                                framework_id: &key.framework_id,
                                task_id: &key.task_id,
                                exit,
                            },
                        );
                    }
                    return;
                }
            }
        }
    }

    /// The earliest wake-up of any executor.
    pub(super) fn executor_timeouts(&self) -> Option<u64> {
        self.executors
            .iter()
            .filter(|e| !e.gone)
            .filter_map(SimExecutor::wake_at)
            .min()
    }

    /// Runs the executors whose time has come, then lets their boards react to their exits.
    pub(super) fn executor_due(&mut self) {
        let now = self.now;
        let mut boards = Vec::new();
        for x in 0..self.executors.len() {
            let e = &mut self.executors[x];
            if e.gone || e.wake_at().is_none_or(|t| t > now) {
                continue;
            }
            let out = e.exec.handle_timeout(now);
            e.outbox.extend(out);
            boards.push(e.agent);
            self.flush_executor(x);
        }
        self.executors.retain(|e| !e.gone);
        boards.dedup();
        for i in boards {
            self.drain_agent(i);
        }
    }

    /// A framework message arrives on an exec topic: the executor of that task, if it runs and
    /// its board is reachable, handles it.
    pub(super) fn deliver_to_executor(&mut self, topic: &str, payload: &[u8]) {
        let Some(x) = self
            .executors
            .iter()
            .position(|e| !e.gone && exec_topic(&e.client, &e.key.task_id) == topic)
        else {
            return;
        };
        let e = &mut self.executors[x];
        if self.agents[e.agent].partitioned {
            return;
        }
        let Ok(m) = FrameworkMessage::decode(payload) else {
            return;
        };
        let out = e.exec.handle_message(&m.data);
        e.outbox.extend(out);
        let i = e.agent;
        self.flush_executor(x);
        self.executors.retain(|e| !e.gone);
        self.drain_agent(i);
    }

    /// The executor of a task that ends by other means (the test ends it) stops with it.
    pub(super) fn end_executor(&mut self, i: usize, key: &TaskKey) {
        self.executors.retain(|e| !(e.agent == i && e.key == *key));
    }
}
