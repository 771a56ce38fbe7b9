//! The operator's commands (`bramble kill`): JSON on `bramble/v1/operator/…`, handled like the
//! owning framework's own call.

use bramble_proto::{Call, Kill};
use serde::Deserialize;

use super::{MasterCore, RecvError};

/// Kills a task on behalf of the operator: JSON `{"framework_id": …, "task_id": …, "grace_ms": …}`
/// (`grace_ms` optional, 0 by default).
pub const OPERATOR_KILL_TOPIC: &str = "bramble/v1/operator/kill";

/// The prefix of every operator topic.
pub const OPERATOR_PREFIX: &str = "bramble/v1/operator/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorKill {
    framework_id: String,
    task_id: String,
    #[serde(default)]
    grace_ms: u32,
}

impl MasterCore {
    /// A payload arrived on an operator topic. A kill of a task the master does not hold does
    /// nothing; the task's end shows on its status topic like any other.
    pub fn handle_operator_bytes(
        &mut self,
        now: u64,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        if topic_name != OPERATOR_KILL_TOPIC {
            self.stats.misrouted += 1;
            return Err(RecvError::UnknownTopic);
        }
        let kill: OperatorKill = serde_json::from_slice(payload).map_err(|_| {
            self.stats.malformed += 1;
            RecvError::OperatorDecode
        })?;
        let Some(fi) = self.frameworks.lookup(&kill.framework_id) else {
            return Ok(());
        };
        let held = self
            .frameworks
            .get(fi)
            .is_some_and(|f| f.tasks.contains_key(&kill.task_id));
        if held {
            self.touch_framework(fi);
            let call = Call::Kill(Kill {
                task_id: kill.task_id,
                grace_ms: kill.grace_ms,
            });
            self.framework_call(now, fi, call);
        }
        Ok(())
    }
}
