//! A task's [`Limits`] and the cgroup files they are written to, on v1 and v2.

use super::files::write_value;
use super::{CgroupError, CgroupPaths};

/// The process limit used when a task asks for 0 (no preference).
pub const DEFAULT_PIDS_MAX: u32 = 256;
/// The CFS period, in microseconds (a small CPU share gets a longer one, see [`MIN_CPU_QUOTA_US`]).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota per period a task gets while its period can still grow (to the kernel's
/// 1 s maximum): starting a process (`exec`, loading its libraries) takes 1–3 ms of CPU, and a
/// task of 10 millicpus with 1 ms per 100 ms was throttled for up to a whole period before it
/// could run. The share over time is unchanged.
pub const MIN_CPU_QUOTA_US: u64 = 10_000;
/// The kernel's longest CFS period.
const MAX_CPU_PERIOD_US: u64 = 1_000_000;

/// A task's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core; 0 means no quota and the smallest weight.
    pub cpu_millis: u32,
    /// Memory in MiB; 0 means no limit.
    pub mem_mib: u32,
    /// Most processes (and threads) at once; 0 means [`DEFAULT_PIDS_MAX`].
    pub pids_max: u32,
}

impl Limits {
    fn pids(&self) -> u32 {
        if self.pids_max == 0 {
            DEFAULT_PIDS_MAX
        } else {
            self.pids_max
        }
    }

    fn mem_bytes(&self) -> Option<u64> {
        (self.mem_mib > 0).then(|| u64::from(self.mem_mib) * 1024 * 1024)
    }

    /// The CFS period in microseconds: [`CPU_PERIOD_US`], or longer (up to 1 s) so that the quota
    /// per period reaches [`MIN_CPU_QUOTA_US`].
    pub fn cpu_period_us(&self) -> u64 {
        match u64::from(self.cpu_millis) {
            0 => CPU_PERIOD_US,
            m => (MIN_CPU_QUOTA_US * 1_000)
                .div_ceil(m)
                .clamp(CPU_PERIOD_US, MAX_CPU_PERIOD_US),
        }
    }

    /// The CFS quota in microseconds per [`cpu_period_us`](Self::cpu_period_us), `None` for no
    /// quota.
    fn cpu_quota_us(&self) -> Option<u64> {
        // The kernel refuses quotas under 1 ms.
        (self.cpu_millis > 0)
            .then(|| (u64::from(self.cpu_millis) * self.cpu_period_us() / 1_000).max(1_000))
    }

    /// `cpu.max` for cgroup v2.
    pub fn cpu_max(&self) -> String {
        let period = self.cpu_period_us();
        match self.cpu_quota_us() {
            Some(q) => format!("{q} {period}"),
            None => format!("max {period}"),
        }
    }

    /// `cpu.weight` for cgroup v2: 1000 millis is the default weight 100.
    pub fn cpu_weight(&self) -> u32 {
        (self.cpu_millis / 10).clamp(1, 10_000)
    }

    /// `cpu.shares` for cgroup v1: 1000 millis is the default 1024.
    pub fn cpu_shares(&self) -> u64 {
        (u64::from(self.cpu_millis) * 1024 / 1000).max(2)
    }
}

pub(super) fn apply_limits(paths: &CgroupPaths, limits: Limits) -> Result<(), CgroupError> {
    match paths {
        CgroupPaths::V2 { dir } => {
            write_value(&dir.join("cpu.max"), &limits.cpu_max())?;
            write_value(&dir.join("cpu.weight"), &limits.cpu_weight().to_string())?;
            let mem = limits
                .mem_bytes()
                .map_or_else(|| "max".to_owned(), |b| b.to_string());
            write_value(&dir.join("memory.max"), &mem)?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_value(&swap, "0")?;
            }
            write_value(&dir.join("pids.max"), &limits.pids().to_string())?;
        }
        CgroupPaths::V1 {
            memory, cpu, pids, ..
        } => {
            let mem = limits
                .mem_bytes()
                .map_or_else(|| "-1".to_owned(), |b| b.to_string());
            // memsw may never be below the memory limit: lower memory first, raise memsw
            // first (a reused cgroup may hold higher or lower limits than these).
            let limit = memory.join("memory.limit_in_bytes");
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            let has_memsw = memsw.exists();
            match write_value(&limit, &mem) {
                Ok(()) if has_memsw => write_value(&memsw, &mem)?,
                Ok(()) => {}
                Err(_) if has_memsw => {
                    write_value(&memsw, &mem)?;
                    write_value(&limit, &mem)?;
                }
                Err(e) => return Err(e),
            }
            write_value(
                &cpu.join("cpu.cfs_period_us"),
                &limits.cpu_period_us().to_string(),
            )?;
            let quota = limits
                .cpu_quota_us()
                .map_or_else(|| "-1".to_owned(), |q| q.to_string());
            write_value(&cpu.join("cpu.cfs_quota_us"), &quota)?;
            write_value(&cpu.join("cpu.shares"), &limits.cpu_shares().to_string())?;
            write_value(&pids.join("pids.max"), &limits.pids().to_string())?;
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_millis_to_quota_weight_and_shares() {
        let l = Limits {
            cpu_millis: 500,
            mem_mib: 32,
            pids_max: 0,
        };
        assert_eq!(l.cpu_max(), "50000 100000");
        assert_eq!(l.cpu_weight(), 50);
        assert_eq!(l.cpu_shares(), 512);
        assert_eq!(l.pids(), DEFAULT_PIDS_MAX);
        assert_eq!(l.mem_bytes(), Some(32 << 20));
    }

    #[test]
    fn small_cpu_shares_get_a_longer_period_so_a_start_is_not_throttled() {
        let cpu = |cpu_millis| Limits {
            cpu_millis,
            mem_mib: 0,
            pids_max: 0,
        };
        // 1% of a CPU: 10 ms per second rather than 1 ms per 100 ms.
        assert_eq!(cpu(10).cpu_max(), "10000 1000000");
        assert_eq!(cpu(50).cpu_max(), "10000 200000");
        assert_eq!(cpu(100).cpu_max(), "10000 100000");
        assert_eq!(cpu(2_000).cpu_max(), "200000 100000");
        for m in [1, 7, 10, 33, 99, 100, 250, 1_000, 4_000] {
            let (l, quota, period) = (
                cpu(m),
                cpu(m).cpu_quota_us().unwrap(),
                cpu(m).cpu_period_us(),
            );
            assert!((100_000..=1_000_000).contains(&period), "{m}: {period}");
            assert!(quota >= 1_000, "{m}: the kernel's minimum");
            // The share is kept (to the microsecond), and the quota reaches 10 ms where it can.
            assert!(
                quota * 1_000 / period <= u64::from(m).max(1) + 1,
                "{m}: {quota}/{period}"
            );
            if m >= 10 {
                assert!(quota >= MIN_CPU_QUOTA_US, "{m}: {quota}");
            }
            assert_eq!(l.cpu_max(), format!("{quota} {period}"));
        }
    }

    #[test]
    fn tiny_and_zero_cpu_limits_stay_within_kernel_bounds() {
        let tiny = Limits {
            cpu_millis: 1,
            mem_mib: 0,
            pids_max: 5,
        };
        assert_eq!(tiny.cpu_max(), "1000 1000000");
        assert_eq!(tiny.cpu_weight(), 1);
        assert_eq!(tiny.cpu_shares(), 2);
        assert_eq!(tiny.mem_bytes(), None);
        let zero = Limits {
            cpu_millis: 0,
            ..tiny
        };
        assert_eq!(zero.cpu_max(), "max 100000");
        let huge = Limits {
            cpu_millis: u32::MAX,
            ..tiny
        };
        assert_eq!(huge.cpu_weight(), 10_000);
    }
}
