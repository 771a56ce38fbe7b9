//! The simulated boards: [`SimAgent`] (an agent core and the "OS" that runs its tasks) and how
//! the host carries out the core's actions.

use std::collections::BTreeMap;

use agent_nostd_core::agent::{Action, Exit, LocalEvent, Signal};
use agent_nostd_core::wire::AgentInfo;
use agent_nostd_core::{AgentCore, AgentMsg, Resources, WireMessage};

use super::{Dest, Sim};

/// One simulated board: the agent core and the "OS" that runs its tasks.
pub struct SimAgent {
    /// The agent's state machine.
    pub core: AgentCore,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// The processes running on the board, by (framework, task).
    pub running: BTreeMap<(String, String), Resources>,
    /// When set, SIGTERM is ignored (the task only dies at SIGKILL).
    pub ignore_term: bool,
    /// When set, the board is cut off: nothing it sends or is sent arrives, and no last will is
    /// published (the broker has not noticed yet).
    pub partitioned: bool,
    /// Every task ever launched here, in order.
    pub launched: Vec<(String, String)>,
    /// Every signal sent to a task here, in order.
    pub signals: Vec<(String, Signal, u64)>,
    /// Every process that ended here, by (framework, task), in order.
    pub ended: Vec<(String, String)>,
    pub(super) info: AgentInfo,
}

impl Sim {
    pub(super) fn drain_agent(&mut self, i: usize) {
        let mut buf = [0u8; AgentMsg::MAX_ENCODED_LEN];
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
        match action {
            Action::Launch {
                framework_id,
                task_id,
                resources,
                ..
            } => {
                let key = (
                    framework_id.as_str().to_owned(),
                    task_id.as_str().to_owned(),
                );
                a.launched.push(key.clone());
                a.running.insert(key, resources);
                let _ = a.core.handle_event(
                    now,
                    LocalEvent::Started {
                        framework_id: &framework_id,
                        task_id: &task_id,
                    },
                );
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
                let key = (
                    framework_id.as_str().to_owned(),
                    task_id.as_str().to_owned(),
                );
                if a.running.remove(&key).is_some() {
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
}
