//! Setting up the per-controller hierarchies (cgroup v1): a `bramble` directory in each.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{under, ProcCgroup};
use super::{CgroupPaths, Isolation, BRAMBLE_DIR, MEMORY_CONTROLLER_FIX};

/// The v1 layout: the `bramble` directory in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Layout {
    /// In the memory hierarchy.
    pub memory: PathBuf,
    /// In the cpu hierarchy.
    pub cpu: PathBuf,
    /// In the cpuacct hierarchy, the same as `cpu` when co-mounted.
    pub cpuacct: Option<PathBuf>,
    /// In the pids hierarchy.
    pub pids: PathBuf,
}

/// Finds the mount of a v1 controller: `root/<field>` (e.g. `cpu,cpuacct`), else `root/<name>`.
fn v1_mount(
    root: &Path,
    entries: &[ProcCgroup<'_>],
    controller: &str,
) -> Option<(PathBuf, String)> {
    let e = entries
        .iter()
        .find(|e| e.controllers.contains(&controller))?;
    let dir = [root.join(e.field), root.join(controller)]
        .into_iter()
        .find(|p| p.is_dir())?;
    Some((dir, e.path.to_owned()))
}

pub(super) fn setup_v1(root: &Path, entries: &[ProcCgroup<'_>]) -> Result<Isolation, String> {
    let mut missing = Vec::new();
    let mut find = |c: &'static str| {
        let m = v1_mount(root, entries, c);
        if m.is_none() {
            missing.push(c);
        }
        m
    };
    let memory = find("memory");
    let cpu = find("cpu");
    let pids = find("pids");
    if missing.contains(&"memory") {
        return Err(format!(
            "the kernel's memory cgroup controller is disabled; {MEMORY_CONTROLLER_FIX}"
        ));
    }
    let (Some(memory), Some(cpu), Some(pids)) = (memory, cpu, pids) else {
        return Err(format!(
            "cgroup v1 controllers {} are not mounted under {}",
            missing.join(", "),
            root.display()
        ));
    };
    let cpuacct = v1_mount(root, entries, "cpuacct");
    let bramble = |(mount, own): &(PathBuf, String)| under(mount, own).join(BRAMBLE_DIR);
    let layout = V1Layout {
        memory: bramble(&memory),
        cpu: bramble(&cpu),
        cpuacct: cpuacct.as_ref().map(bramble),
        pids: bramble(&pids),
    };
    let probe = CgroupPaths::V1 {
        memory: layout.memory.clone(),
        cpu: layout.cpu.clone(),
        cpuacct: layout.cpuacct.clone(),
        pids: layout.pids.clone(),
    };
    for dir in probe.dirs() {
        if let Err(e) = fs::create_dir_all(dir) {
            return Err(format!(
                "cannot create {}: {e} (the agent needs root and a writable cgroup filesystem)",
                dir.display()
            ));
        }
    }
    Ok(Isolation::V1(layout))
}
