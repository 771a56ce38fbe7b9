//! How long a process takes to join a task cgroup, through `cgroup.procs` and through the file
//! the agent uses ([`TaskCgroup::join_paths`]: `tasks` on cgroup v1), after a quiet spell of
//! GAP_MS between joins, as a warm stub or a cold task does. Needs root and cgroups. Prints p50,
//! p90 and max for each.
//!
//! ```sh
//! cargo run --release -p bramble-agent --example cgroup_join -- [N] [GAP_MS]
//! ```
//!
//! On cgroup v1 the two differ: `cgroup.procs` takes the kernel's global threadgroup lock, whose
//! first writer after a quiet spell waits out an RCU grace period. On v2 both are `cgroup.procs`.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bramble_agent::cgroup::{Isolation, TaskCgroup};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult};

/// Forks a child that writes `0` to each of `files` and reports how long that took.
fn join_once(files: &[PathBuf]) -> Duration {
    let opened: Vec<std::fs::File> = files
        .iter()
        .map(|f| OpenOptions::new().write(true).open(f).unwrap())
        .collect();
    let (r, w) = pipe().unwrap();
    // SAFETY: the child only reads the clock, writes to descriptors it owns and `_exit`s, all
    // async-signal-safe.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let t = Instant::now();
            for f in &opened {
                // SAFETY: plain writes to descriptors we own.
                unsafe { nix::libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            }
            let us = t.elapsed().as_micros() as u64;
            let mut w = std::fs::File::from(w);
            let _ = w.write_all(&us.to_le_bytes());
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut buf = [0u8; 8];
            std::fs::File::from(r).read_exact(&mut buf).unwrap();
            waitpid(child, None).unwrap();
            Duration::from_micros(u64::from_le_bytes(buf))
        }
    }
}

/// Which files of a cgroup a joining process writes to.
type JoinFiles = fn(&TaskCgroup) -> Vec<PathBuf>;

/// `cgroup.procs` in every hierarchy: a whole-process move.
fn procs_files(cg: &TaskCgroup) -> Vec<PathBuf> {
    cg.paths()
        .dirs()
        .into_iter()
        .map(|d| d.join("cgroup.procs"))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let gap = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(50));
    let iso = Isolation::from_system();
    let joins: [(&str, JoinFiles); 2] = [
        ("cgroup.procs", procs_files),
        ("join_paths()", TaskCgroup::join_paths),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, files_of) in joins {
        let mut took = Vec::with_capacity(n);
        for _ in 0..n {
            let cg = iso
                .create_spare("cgroup-join")
                .unwrap()
                .expect("this needs root and cgroups");
            std::thread::sleep(gap);
            took.push(join_once(&files_of(&cg)));
            rt.block_on(cg.remove()).unwrap();
        }
        took.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{}: join through {name} after {} ms quiet, x{n}: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            iso.isolation_attribute(),
            gap.as_millis(),
            ms(took[n / 2]),
            ms(took[n * 9 / 10]),
            ms(took[n - 1])
        );
    }
}
