//! The master's newest epoch, kept in its state directory (`STATE_DIR/epoch`), so that a master
//! restarted together with its broker (which forgets the retained hello) never leads under an
//! epoch it used before: agents check a frame's number against what they took from that epoch,
//! and an epoch used twice would let a recording of the first run's frames count again. Written
//! atomically, once per claim or raise (never while idle), before the epoch is used.

use std::path::{Path, PathBuf};

use tracing::warn;

/// `STATE_DIR/epoch`: the epoch as decimal text.
#[derive(Debug, Clone)]
pub struct EpochFile {
    path: PathBuf,
}

impl EpochFile {
    /// The epoch file in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        EpochFile {
            path: state_dir.join("epoch"),
        }
    }

    /// The epoch stored, if any (an unreadable file is logged and taken as none).
    pub fn load(&self) -> Option<u64> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %self.path.display(), "cannot read the stored epoch: {e}");
                return None;
            }
        };
        match text.trim().parse() {
            Ok(epoch) => Some(epoch),
            Err(e) => {
                warn!(path = %self.path.display(), "the stored epoch is not a number: {e}");
                None
            }
        }
    }

    /// Stores `epoch` (atomically: a crash leaves the old one or the new one).
    pub fn store(&self, epoch: u64) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            // The state directory also holds the credential store: private.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        bramble_mqtt::credential::write_atomically(
            &self.path,
            format!("{epoch}\n").as_bytes(),
            0o600,
            |_| Ok(()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_epoch_is_read_back_and_a_missing_or_broken_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = EpochFile::in_dir(&dir.path().join("state"));
        assert_eq!(file.load(), None);
        file.store(0x3_0002).unwrap();
        assert_eq!(file.load(), Some(0x3_0002));
        file.store(0x4_0002).unwrap();
        assert_eq!(file.load(), Some(0x4_0002));
        std::fs::write(dir.path().join("state/epoch"), "garbage").unwrap();
        assert_eq!(file.load(), None);
    }
}
