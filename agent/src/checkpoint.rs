//! The agent's checkpoint: its id, the master epoch, the next status update id and every task it
//! holds, so a restarted agent re-adopts its running tasks and resends what was never acknowledged.
//!
//! It is JSON (readable when someone has to look at a board), kept in two slot files beside each
//! other, `agent.0.json` and `agent.1.json` in the work dir, written in turn:
//!
//! ```text
//! {"generation":7,"sha256":"<64 hex digits>","checkpoint":{…}}      ← then spaces, to the file's size
//! ```
//!
//! A write overwrites the older slot in place and `fdatasync`s it: no new file, no rename, no
//! directory flush, so on ext4 nothing but the data goes to the SD card (a file only grows, in
//! 4 KiB steps, when the checkpoint outgrows it). A write torn by a power cut fails its SHA-256,
//! and the other slot, one generation older, is read instead: the newer one was never reported as
//! written. Reading takes the valid slot of the highest generation. A checkpoint is written only
//! when its contents change: an idle agent writes nothing. The single-file `agent.json` of earlier
//! releases is read when no slot exists yet.

use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use agent_nostd_core::ids::{IdError, TaskKey};
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

impl<L> TaskRecord<L> {
    /// The task's key, if its ids are valid.
    pub fn key(&self) -> Result<TaskKey, IdError> {
        TaskKey::new(&self.framework_id, &self.task_id)
    }
}

/// Everything the agent checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<L> {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The agent's id.
    pub agent_id: String,
    /// The boot its frames were bound to (see [`agent_nostd_core::frame`]): the next start takes
    /// a higher one. Absent in checkpoints of version-2 agents.
    #[serde(default)]
    pub boot: u32,
    /// The epoch of the master it last registered with.
    pub master_epoch: u64,
    /// The status update id a restarted agent continues from (the end of the block of ids the
    /// agent reserved), so ids are not reused.
    pub next_update_id: u32,
    /// Every task held.
    pub tasks: Vec<TaskRecord<L>>,
}

/// The checkpoint's two slot files; remembers what it last wrote so unchanged state is not written
/// again, and which generation is newest on disk.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    last_written: Option<Vec<u8>>,
    writes: u64,
    generation: u64,
}

/// How much a slot file grows by when a checkpoint outgrows it.
const SLOT_GROWTH: usize = 4096;

/// The slot file generation `generation` goes to, for the checkpoint named `path`
/// (`agent.json` → `agent.0.json`, `agent.1.json`).
pub fn slot_path(path: &Path, generation: u64) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", generation % 2, ext.to_string_lossy()),
        None => format!("{stem}.{}", generation % 2),
    };
    path.with_file_name(name)
}

/// One slot's contents: `Ok((generation, checkpoint bytes))`, or why it is unusable.
pub fn parse_slot(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    let rest = bytes
        .strip_prefix(b"{\"generation\":")
        .ok_or("no slot header")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let generation = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or("no generation")?;
    let rest = rest[digits..]
        .strip_prefix(b",\"sha256\":\"")
        .ok_or("no sha256")?;
    let (hex, rest) = rest.split_at_checked(64).ok_or("a short sha256")?;
    let body = rest
        .strip_prefix(b"\",\"checkpoint\":")
        .ok_or("no checkpoint")?;
    let body = body.trim_ascii_end();
    let body = body.strip_suffix(b"}").ok_or("truncated")?;
    if hex != sha256_hex(body).as_bytes() {
        return Err("its SHA-256 does not match (a torn write)".into());
    }
    Ok((generation, body))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    crate::fetch::to_hex(&sha2::Sha256::digest(bytes))
}

/// Writes checkpoint `body` as generation `generation` into its slot of the checkpoint named `path`:
/// in place, padded with spaces to the file's size, then `fdatasync`. A slot file that did not
/// exist is created and its directory flushed.
pub fn write_slot(path: &Path, generation: u64, body: &[u8]) -> std::io::Result<()> {
    let slot = slot_path(path, generation);
    let dir = slot.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut bytes = format!(
        "{{\"generation\":{generation},\"sha256\":\"{}\",\"checkpoint\":",
        sha256_hex(body)
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(b"}\n");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&slot)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o077 != 0 {
        // The agent's own (an older agent made it 0644): tasks run as other users.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let created = size == 0;
    // The same size as before: then only data blocks change, and fdatasync flushes only them.
    let target = if bytes.len() <= size {
        size
    } else {
        bytes.len().div_ceil(SLOT_GROWTH) * SLOT_GROWTH
    };
    bytes.resize(target, b' ');
    if let Some(last) = bytes.last_mut() {
        *last = b'\n';
    }
    file.write_all_at(&bytes, 0)?;
    file.sync_data()?;
    if created {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl CheckpointFile {
    /// The checkpoint named `path` (its slots are beside it, see [`slot_path`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile {
            path: path.into(),
            last_written: None,
            writes: 0,
            generation: 0,
        }
    }

    /// The checkpoint's name (the single file of earlier releases).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the file was written.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The newest generation on disk (0: none), as loaded or last saved. The next write is this
    /// plus one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Reads the checkpoint: the valid slot of the highest generation, else the single file of
    /// earlier releases; `Ok(None)` when there is none.
    pub fn load<L: DeserializeOwned>(&mut self) -> Result<Option<Checkpoint<L>>, CheckpointError> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut problem: Option<(PathBuf, String)> = None;
        for slot in [slot_path(&self.path, 0), slot_path(&self.path, 1)] {
            let Some(bytes) = self.read(&slot)? else {
                continue;
            };
            match parse_slot(&bytes) {
                Ok((generation, body)) => {
                    if best.as_ref().is_none_or(|(g, _)| generation > *g) {
                        best = Some((generation, body.to_vec()));
                    }
                }
                Err(why) => problem = Some((slot, why)),
            }
        }
        let (generation, bytes, from) = match (best, problem) {
            (Some((generation, body)), problem) => {
                if let Some((slot, why)) = problem {
                    tracing::warn!(
                        "checkpoint slot {} is unusable ({why}); reading the other",
                        slot.display()
                    );
                }
                // The single file of an earlier release is stale once a slot exists.
                let _ = std::fs::remove_file(&self.path);
                (generation, body, slot_path(&self.path, generation))
            }
            (None, Some((path, problem))) => {
                return Err(CheckpointError::Corrupt { path, problem })
            }
            (None, None) => match self.read(&self.path.clone())? {
                Some(bytes) => (0, bytes, self.path.clone()),
                None => return Ok(None),
            },
        };
        let corrupt = |problem: String| CheckpointError::Corrupt {
            path: from.clone(),
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
        self.generation = generation;
        self.last_written = Some(bytes);
        Ok(Some(checkpoint))
    }

    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Moves an unreadable checkpoint aside (each of its files to `<name>.corrupt`) so the agent
    /// can start afresh and a person can still look at it. Returns where the first went.
    pub fn quarantine(&mut self) -> Result<PathBuf, CheckpointError> {
        let mut first = None;
        for path in [
            slot_path(&self.path, 0),
            slot_path(&self.path, 1),
            self.path.clone(),
        ] {
            if !path.exists() {
                continue;
            }
            let mut aside = path.clone().into_os_string();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            std::fs::rename(&path, &aside).map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?;
            first.get_or_insert(aside);
        }
        self.last_written = None;
        self.generation = 0;
        Ok(first.unwrap_or_else(|| self.path.clone()))
    }

    /// Writes the checkpoint (the next generation, in its slot) if it differs from what was last
    /// written. Returns whether it wrote.
    pub fn save<L: Serialize>(
        &mut self,
        checkpoint: &Checkpoint<L>,
    ) -> Result<bool, CheckpointError> {
        let Some(bytes) = self.encode(checkpoint)? else {
            return Ok(false);
        };
        let generation = self.generation + 1;
        write_slot(&self.path, generation, &bytes).map_err(|source| {
            self.forget_written();
            CheckpointError::Io {
                path: slot_path(&self.path, generation),
                source,
            }
        })?;
        self.generation = generation;
        Ok(true)
    }

    /// The bytes to write for `checkpoint`, or `None` when they are what was last written; for a
    /// caller that writes them itself (with [`write_slot`], e.g. in the background), and calls
    /// [`forget_written`](Self::forget_written) if that fails.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Pid(i32);

    fn sample() -> Checkpoint<Pid> {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            agent_id: "pi4".into(),
            boot: 3,
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
    fn a_checkpoint_survives_a_round_trip_through_its_slot_files_which_stay_readable_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        assert_eq!(file.load::<Pid>().unwrap(), None);
        assert!(file.save(&sample()).unwrap());
        let mut again = CheckpointFile::new(&path);
        assert_eq!(again.load::<Pid>().unwrap(), Some(sample()));
        assert_eq!(again.generation(), 1);
        let slot = dir.path().join("agent.1.json");
        assert_eq!(slot_path(&path, 1), slot);
        let whole: serde_json::Value = serde_json::from_slice(&std::fs::read(&slot).unwrap())
            .expect("a slot file, padding and all, is one JSON document");
        assert_eq!(whole["generation"], 1);
        assert_eq!(whole["checkpoint"]["agent_id"], "pi4");
        assert!(!path.exists() && !dir.path().join("agent.0.json").exists());
    }

    #[test]
    fn slot_files_are_readable_by_the_agent_only_even_when_an_older_agent_made_them_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mode = |g| {
            std::fs::metadata(slot_path(&path, g))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        write_slot(&path, 1, b"{}").unwrap();
        assert_eq!(mode(1), 0o600);
        std::fs::write(slot_path(&path, 0), b"").unwrap();
        std::fs::set_permissions(slot_path(&path, 0), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        write_slot(&path, 2, b"{}").unwrap();
        assert_eq!(mode(0), 0o600);
    }

    #[test]
    fn writes_alternate_slots_and_keep_each_file_at_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        let mut big = sample();
        big.tasks = (0..20).map(|_| sample().tasks[0].clone()).collect();
        assert!(file.save(&big).unwrap());
        assert!(file.save(&sample()).unwrap());
        let size = |g| std::fs::metadata(slot_path(&path, g)).unwrap().len();
        let (one, zero) = (size(1), size(0));
        assert_eq!(one % SLOT_GROWTH as u64, 0);
        let mut smaller = sample();
        smaller.tasks.truncate(1);
        assert!(file.save(&smaller).unwrap());
        assert_eq!(file.generation(), 3);
        assert_eq!(
            (size(1), size(0)),
            (one, zero),
            "overwritten in place, same size"
        );
        assert_eq!(
            CheckpointFile::new(&path).load::<Pid>().unwrap(),
            Some(smaller)
        );
    }

    #[test]
    fn an_unchanged_checkpoint_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        assert!(file.save(&sample()).unwrap());
        let slot = slot_path(&path, 1);
        let modified = std::fs::metadata(&slot).unwrap().modified().unwrap();
        for _ in 0..100 {
            assert!(!file.save(&sample()).unwrap());
        }
        assert_eq!(file.writes(), 1);
        assert_eq!(
            std::fs::metadata(&slot).unwrap().modified().unwrap(),
            modified
        );
        assert!(!slot_path(&path, 0).exists());
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
    fn a_torn_newest_slot_is_passed_over_for_the_older_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        file.save(&sample()).unwrap();
        let mut newer = sample();
        newer.next_update_id = 99;
        file.save(&newer).unwrap();
        // Generation 2 went to slot 0; a power cut tears it half-way.
        let slot = slot_path(&path, 0);
        let mut torn = std::fs::read(&slot).unwrap();
        let half = torn.trim_ascii_end().len() / 2;
        torn[half..].fill(0);
        std::fs::write(&slot, &torn).unwrap();
        let mut reread = CheckpointFile::new(&path);
        assert_eq!(reread.load::<Pid>().unwrap(), Some(sample()));
        assert_eq!(reread.generation(), 1);
        // The next write goes to the torn slot, never over the whole one.
        reread.save(&newer).unwrap();
        assert!(parse_slot(&std::fs::read(&slot).unwrap()).is_ok());
        assert_eq!(
            CheckpointFile::new(&path).load::<Pid>().unwrap(),
            Some(newer)
        );
    }

    #[test]
    fn corrupt_slots_are_reported_clearly_and_can_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let mut file = CheckpointFile::new(&path);
        file.save(&sample()).unwrap();
        let slot = slot_path(&path, 1);
        let full = std::fs::read(&slot).unwrap();
        let json = full.trim_ascii_end();
        std::fs::write(&slot, &json[..json.len() / 2]).unwrap();
        let err = file.load::<Pid>().unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("agent.1.json is corrupt"), "{err}");

        std::fs::write(&slot, b"\x00\xff garbage").unwrap();
        assert!(matches!(
            file.load::<Pid>().unwrap_err(),
            CheckpointError::Corrupt { .. }
        ));
        let aside = file.quarantine().unwrap();
        assert!(aside.ends_with("agent.1.json.corrupt"));
        assert!(!slot.exists());
        assert_eq!(file.load::<Pid>().unwrap(), None);
    }

    #[test]
    fn the_single_file_of_earlier_releases_is_read_until_a_slot_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&sample()).unwrap()).unwrap();
        let mut file = CheckpointFile::new(&path);
        assert_eq!(file.load::<Pid>().unwrap(), Some(sample()));
        let mut newer = sample();
        newer.master_epoch = 8;
        assert!(file.save(&newer).unwrap());
        assert_eq!(
            CheckpointFile::new(&path).load::<Pid>().unwrap(),
            Some(newer)
        );
        assert!(!path.exists(), "the stale single file is removed");
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
