//! Identifiers for agents, frameworks and tasks.
//!
//! A task is named by a [`TaskKey`], its framework's id and its own.
//!
//! An id is 1 to 32 bytes of `[A-Za-z0-9._-]` and is neither `.` nor `..`: it appears as an MQTT topic
//! level and as a directory name in the agent's sandbox, so `/`, `+`, `#` and NUL can never occur in one.

use heapless::String;

/// The longest id, in bytes.
pub const MAX_ID_LEN: usize = 32;

/// A bounded string holding a valid id (its length is stored in one byte).
pub type Id = String<MAX_ID_LEN, u8>;
/// The id an agent chooses for itself; it names the agent's topics.
pub type AgentId = Id;
/// The id the master gives a framework when it registers.
pub type FrameworkId = Id;
/// The id a framework gives a task; unique within that framework.
pub type TaskId = Id;

/// Why a string is not a valid id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    TooLong,
    /// The id holds a byte outside `[A-Za-z0-9._-]`, or is `.` or `..`.
    BadChar,
}

impl core::fmt::Display for IdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IdError::Empty => "id is empty",
            IdError::TooLong => "id is longer than 32 bytes",
            IdError::BadChar => "id may hold only A-Z a-z 0-9 . _ - and may not be . or ..",
        })
    }
}

/// Checks that `s` is a valid id.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if s == "." || s == ".." {
        return Err(IdError::BadChar);
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::BadChar)
    }
}

/// Makes an [`Id`] from `s`, checking it.
pub fn id(s: &str) -> Result<Id, IdError> {
    validate_id(s)?;
    Id::try_from(s).map_err(|_| IdError::TooLong)
}

/// What names a task on an agent: its framework and its id within that framework. The core's task
/// table, the std agent's task records and its checkpoint are all keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task, unique within its framework.
    pub task_id: TaskId,
}

impl TaskKey {
    /// The key of task `task_id` of framework `framework_id`, checking both ids.
    pub fn new(framework_id: &str, task_id: &str) -> Result<TaskKey, IdError> {
        Ok(TaskKey {
            framework_id: id(framework_id)?,
            task_id: id(task_id)?,
        })
    }

    /// Whether this is the key of task `task_id` of framework `framework_id`.
    pub fn is(&self, framework_id: &str, task_id: &str) -> bool {
        self.framework_id == framework_id && self.task_id == task_id
    }
}

impl core::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.framework_id, self.task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_hostname_like_names() {
        assert!(id("pi4-kitchen.lan").is_ok());
        assert!(id("a").is_ok());
        assert!(id("0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn ids_reject_topic_and_path_metacharacters() {
        for bad in ["a/b", "a+b", "#", "a b", ".", "..", "ü"] {
            assert_eq!(validate_id(bad), Err(IdError::BadChar), "{bad}");
        }
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(
            validate_id("0123456789abcdef0123456789abcdef0"),
            Err(IdError::TooLong)
        );
    }

    #[test]
    fn task_keys_check_both_ids_and_match_their_framework_and_task() {
        let key = TaskKey::new("fw-1", "task.7").unwrap();
        assert!(key.is("fw-1", "task.7"));
        assert!(!key.is("fw-1", "task.8"));
        assert!(!key.is("fw-2", "task.7"));
        assert_eq!(TaskKey::new("fw/1", "t"), Err(IdError::BadChar));
        assert_eq!(TaskKey::new("fw", ""), Err(IdError::Empty));
    }
}
