//! The agent's checkpoint: its id, the master epoch, the next status update id and every task it
//! holds, so a restarted agent re-adopts its running tasks and resends what was never acknowledged.
//!
//! It is one JSON file (`<work_dir>/agent.json`; readable when someone has to look at a board). It is
//! written atomically (temporary file, fsync, rename, fsync of the directory), and only when its
//! contents change: an idle agent writes nothing to the SD card.

use std::io::Write;
use std::path::{Path, PathBuf};

use agent_nostd_core::wire::{Reason, TaskState};

use crate::cgroup::CgroupPaths;
use agent_nostd_core::Resources;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error on the file or its directory.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but is not a valid checkpoint (truncated, corrupt, or another version).
    #[error("checkpoint {path} is corrupt: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// How a task ended, for a task whose end the master has not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// Its terminal state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// The terminal update's message.
    pub message: String,
}

/// One task the agent holds. `L` is what the process layer records to find the task again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord<L> {
    /// The task's framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// Its limits.
    pub resources: Resources,
    /// Its process limit.
    pub pids_max: u32,
    /// Its sandbox directory.
    pub sandbox: PathBuf,
    /// Its cgroup, when the board has cgroups.
    pub cgroup: Option<CgroupPaths>,
    /// How to find its processes, once launched.
    pub launched: Option<L>,
    /// Set once it has ended.
    pub ended: Option<Ended>,
}

/// Everything the agent checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<L> {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The agent's id.
    pub agent_id: String,
    /// The epoch of the master it last registered with.
    pub master_epoch: u64,
    /// The status update id a restarted agent continues from (the end of the block of ids the
    /// agent reserved), so ids are not reused.
    pub next_update_id: u32,
    /// Every task held.
    pub tasks: Vec<TaskRecord<L>>,
}

/// The checkpoint file; remembers what it last wrote so unchanged state is not written again.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    last_written: Option<Vec<u8>>,
    writes: u64,
}

impl CheckpointFile {
    /// The checkpoint at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile {
            path: path.into(),
            last_written: None,
            writes: 0,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the file was written.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Reads the checkpoint: `Ok(None)` when there is none.
    pub fn load<L: DeserializeOwned>(&mut self) -> Result<Option<Checkpoint<L>>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |problem: String| CheckpointError::Corrupt {
            path: self.path.clone(),
            problem,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(CHECKPOINT_VERSION)) {
            return Err(corrupt(format!(
                "version {version:?}, this agent reads version {CHECKPOINT_VERSION}"
            )));
        }
        let checkpoint = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        self.last_written = Some(bytes);
        Ok(Some(checkpoint))
    }

    /// Moves an unreadable checkpoint aside (to `<name>.corrupt`) so the agent can start afresh and a
    /// person can still look at it. Returns where it went.
    pub fn quarantine(&mut self) -> Result<PathBuf, CheckpointError> {
        let mut aside = self.path.clone().into_os_string();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        std::fs::rename(&self.path, &aside).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.last_written = None;
        Ok(aside)
    }

    /// Writes the checkpoint atomically if it differs from what was last written. Returns whether it
    /// wrote.
    pub fn save<L: Serialize>(
        &mut self,
        checkpoint: &Checkpoint<L>,
    ) -> Result<bool, CheckpointError> {
        let Some(bytes) = self.encode(checkpoint)? else {
            return Ok(false);
        };
        write_atomically(&self.path, &bytes).map_err(|source| {
            self.forget_written();
            CheckpointError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(true)
    }

    /// The bytes to write for `checkpoint`, or `None` when they are what was last written; for a
    /// caller that writes them itself (with [`write_atomically`], e.g. in the background), and
    /// calls [`forget_written`](Self::forget_written) if that fails.
    pub fn encode<L: Serialize>(
        &mut self,
        checkpoint: &Checkpoint<L>,
    ) -> Result<Option<Vec<u8>>, CheckpointError> {
        let bytes = serde_json::to_vec_pretty(checkpoint).map_err(|e| CheckpointError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        if self.last_written.as_deref() == Some(&bytes[..]) {
            return Ok(None);
        }
        self.last_written = Some(bytes.clone());
        self.writes += 1;
        Ok(Some(bytes))
    }

    /// The last write failed: the next checkpoint is written whatever it holds.
    pub fn forget_written(&mut self) {
        self.last_written = None;
    }
}

/// Temporary file in the same directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Pid(i32);

    fn sample() -> Checkpoint<Pid> {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            agent_id: "pi4".into(),
            master_epoch: 7,
            next_update_id: 42,
            tasks: vec![
                TaskRecord {
                    framework_id: "fw-1".into(),
                    task_id: "t1".into(),
                    resources: Resources::new(500, 64, 0),
                    pids_max: 32,
                    sandbox: "/var/lib/bramble/sandboxes/fw-1/t1".into(),
                    cgroup: Some(CgroupPaths::V2 {
                        dir: "/sys/fs/cgroup/system.slice/bramble-agent.service/task@fw-1@t1"
                            .into(),
                    }),
                    launched: Some(Pid(1234)),
                    ended: None,
                },
                TaskRecord {
                    framework_id: "fw-1".into(),
                    task_id: "t2".into(),
                    resources: Resources::new(100, 10, 0),
                    pids_max: 0,
                    sandbox: "/var/lib/bramble/sandboxes/fw-1/t2".into(),
                    cgroup: None,
                    launched: None,
                    ended: Some(Ended {
                        state: TaskState::Failed,
                        reason: Reason::Exited { code: 3 },
                        message: "exited with code 3".into(),
                    }),
                },
            ],
        }
    }

    #[test]
    fn a_checkpoint_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = CheckpointFile::new(dir.path().join("agent.json"));
        assert_eq!(file.load::<Pid>().unwrap(), None);
        assert!(file.save(&sample()).unwrap());
        let mut again = CheckpointFile::new(dir.path().join("agent.json"));
        assert_eq!(again.load::<Pid>().unwrap(), Some(sample()));
        assert!(!dir.path().join("agent.json.tmp").exists());
    }

    #[test]
    fn an_unchanged_checkpoint_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        assert!(file.save(&sample()).unwrap());
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        for _ in 0..100 {
            assert!(!file.save(&sample()).unwrap());
        }
        assert_eq!(file.writes(), 1);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        let mut changed = sample();
        changed.next_update_id += 1;
        assert!(file.save(&changed).unwrap());
        assert_eq!(file.writes(), 2);
        // A checkpoint just loaded is not rewritten either.
        let mut reloaded = CheckpointFile::new(&path);
        let loaded = reloaded.load::<Pid>().unwrap().unwrap();
        assert!(!reloaded.save(&loaded).unwrap());
    }

    #[test]
    fn a_truncated_or_corrupt_checkpoint_is_reported_clearly_and_can_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        file.save(&sample()).unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let err = file.load::<Pid>().unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("agent.json is corrupt"), "{err}");

        std::fs::write(&path, b"\x00\xff garbage").unwrap();
        assert!(matches!(
            file.load::<Pid>().unwrap_err(),
            CheckpointError::Corrupt { .. }
        ));
        let aside = file.quarantine().unwrap();
        assert!(aside.ends_with("agent.json.corrupt"));
        assert!(!path.exists());
        assert_eq!(file.load::<Pid>().unwrap(), None);
    }

    #[test]
    fn a_checkpoint_of_another_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        std::fs::write(&path, br#"{"version": 9, "agent_id": "x"}"#).unwrap();
        let err = CheckpointFile::new(&path).load::<Pid>().unwrap_err();
        assert!(err.to_string().contains("version Some(9)"), "{err}");
    }
}
