//! Reading and writing cgroupfs files, and parsing `/proc/<pid>/cgroup`.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::{io_err, CgroupError};

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcCgroup<'a> {
    /// The raw controller field, e.g. `cpu,cpuacct` (empty for v2).
    pub(super) field: &'a str,
    /// Its controllers, without `name=…` entries.
    pub(super) controllers: Vec<&'a str>,
    /// The cgroup path, starting with `/`.
    pub(super) path: &'a str,
}

pub(super) fn parse_proc_cgroup(s: &str) -> Vec<ProcCgroup<'_>> {
    s.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let field = parts.next()?;
            let path = parts.next()?.trim_end();
            Some(ProcCgroup {
                field,
                controllers: field
                    .split(',')
                    .filter(|c| !c.is_empty() && !c.starts_with("name="))
                    .collect(),
                path,
            })
        })
        .collect()
}

/// `root` joined with an absolute cgroup path.
pub(super) fn under(root: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

pub(super) fn read_words(path: &Path) -> io::Result<BTreeSet<String>> {
    Ok(fs::read_to_string(path)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

pub(super) fn check_id(id: &str) -> Result<(), CgroupError> {
    agent_nostd_core::ids::validate_id(id).map_err(|e| CgroupError::InvalidId {
        id: id.chars().take(64).collect(),
        problem: e.to_string(),
    })
}

/// Writes `value` to a cgroup file in one `write`.
pub(super) fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err(path))
}

pub(super) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
            .filter(|p| *p > 0)
            .collect()),
        // A fresh directory on a plain filesystem (tests) has no cgroup.procs: no processes.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound && path.parent().is_some_and(Path::is_dir) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(super) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    keyed_value(&s, key)
}

pub(super) fn keyed_value(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

pub(super) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_lines_parse_into_controllers_and_paths() {
        let e = parse_proc_cgroup(
            "12:cpu,cpuacct:/system.slice/x.service\n1:name=systemd:/init.scope\n0::/a/b\n",
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(e[0].path, "/system.slice/x.service");
        assert!(e[1].controllers.is_empty());
        assert_eq!(e[2].field, "");
        assert_eq!(e[2].path, "/a/b");
    }

    #[test]
    fn keyed_files_yield_the_value_of_their_key() {
        let s = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(s, "oom_kill"), Some(1));
        assert_eq!(keyed_value(s, "oom"), Some(2));
        assert_eq!(keyed_value(s, "nope"), None);
        assert_eq!(keyed_value("oom_kill x\n", "oom_kill"), None);
    }
}
