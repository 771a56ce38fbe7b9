//! What the board has and what is free on it, read from procfs, sysfs and statvfs.
//!
//! Every path is read below a root (`/` on a board, a temporary directory in tests). Nothing here
//! writes anything.

use std::path::PathBuf;

use agent_nostd_core::agent::ResourceSample;
use agent_nostd_core::Resources;

/// A measurement that failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file did not hold what was expected.
    #[error("cannot understand {path}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was missing or odd.
        problem: &'static str,
    },
    /// statvfs failed.
    #[error("cannot measure the disk of {path}: {source}")]
    Statvfs {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
}

/// What does not change while the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// Online CPUs.
    pub cpus: u32,
    /// `MemTotal`, in MiB.
    pub mem_total_mib: u32,
    /// The work directory's file system size, in MiB.
    pub disk_total_mib: u32,
    /// The hostname.
    pub hostname: String,
    /// The CPU architecture, as Rust names it.
    pub arch: &'static str,
    /// `/proc/device-tree/model`, when the board has one.
    pub model: Option<String>,
}

impl Board {
    /// What the agent offers: the board less the reserve.
    pub fn offerable(&self, reserve: &Resources) -> Resources {
        Resources::new(
            self.cpus.saturating_mul(1000),
            self.mem_total_mib,
            self.disk_total_mib,
        )
        .saturating_sub(reserve)
    }
}

/// Reads the board. Keeps the previous CPU counters so free CPU is measured over the last interval.
#[derive(Debug)]
pub struct Probe {
    root: PathBuf,
    work_dir: PathBuf,
    last_cpu: Option<CpuTimes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl Probe {
    /// A probe reading below `root` (`/` on a board), measuring the disk of `work_dir`.
    pub fn new(root: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Probe {
            root: root.into(),
            work_dir: work_dir.into(),
            last_cpu: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Result<String, DiscoveryError> {
        let path = self.path(p);
        std::fs::read_to_string(&path).map_err(|source| DiscoveryError::Read { path, source })
    }

    /// The board's fixed facts.
    pub fn board(&self) -> Result<Board, DiscoveryError> {
        let cpus = self.cpus()?;
        let meminfo = self.read("proc/meminfo")?;
        let mem_total_mib = meminfo_mib(&meminfo, "MemTotal:").ok_or(DiscoveryError::Parse {
            path: self.path("proc/meminfo"),
            problem: "no MemTotal line",
        })?;
        let (disk_total_mib, _) = self.disk()?;
        let hostname = self
            .read("proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .map_err(|e| DiscoveryError::Read {
                        path: "gethostname".into(),
                        source: e.into(),
                    })
            })?;
        let model = self
            .read("proc/device-tree/model")
            .ok()
            .map(|m| m.trim_end_matches('\0').trim().to_owned())
            .filter(|m| !m.is_empty());
        Ok(Board {
            cpus,
            mem_total_mib,
            disk_total_mib,
            hostname,
            arch: std::env::consts::ARCH,
            model,
        })
    }

    /// What is free now (less `reserve`, at most `offerable`), the SoC temperature and throttling.
    ///
    /// Free CPU is the idle share since the previous sample; the first sample counts all as free.
    pub fn sample(
        &mut self,
        board: &Board,
        reserve: &Resources,
    ) -> Result<ResourceSample, DiscoveryError> {
        let meminfo = self.read("proc/meminfo")?;
        let available = meminfo_mib(&meminfo, "MemAvailable:").ok_or(DiscoveryError::Parse {
            path: self.path("proc/meminfo"),
            problem: "no MemAvailable line",
        })?;
        let (_, disk_free) = self.disk()?;
        let cpu_total = board.cpus.saturating_mul(1000);
        let times = self.cpu_times()?;
        let cpu_free = match self.last_cpu.replace(times) {
            Some(prev) if times.total > prev.total => {
                let busy = times.busy.saturating_sub(prev.busy) as f64;
                let total = (times.total - prev.total) as f64;
                (f64::from(cpu_total) * (1.0 - busy / total)).round() as u32
            }
            _ => cpu_total,
        };
        let free = Resources::new(cpu_free, available, disk_free)
            .saturating_sub(reserve)
            .min(&board.offerable(reserve));
        Ok(ResourceSample {
            free,
            soc_temp_decidegrees: self.temperature(),
            throttled: self.throttled(),
        })
    }

    fn cpus(&self) -> Result<u32, DiscoveryError> {
        // `/sys/devices/system/cpu/online` is e.g. "0-3" or "0,2-3".
        if let Ok(online) = self.read("sys/devices/system/cpu/online") {
            let n = count_cpu_list(online.trim());
            if n > 0 {
                return Ok(n);
            }
        }
        let stat = self.read("proc/stat")?;
        let n = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count() as u32;
        if n == 0 {
            return Err(DiscoveryError::Parse {
                path: self.path("proc/stat"),
                problem: "no cpuN lines",
            });
        }
        Ok(n)
    }

    fn cpu_times(&self) -> Result<CpuTimes, DiscoveryError> {
        let stat = self.read("proc/stat")?;
        let parse_err = || DiscoveryError::Parse {
            path: self.path("proc/stat"),
            problem: "no aggregate cpu line",
        };
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(parse_err)?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() < 4 {
            return Err(parse_err());
        }
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
        Ok(CpuTimes {
            busy: total - idle,
            total,
        })
    }

    fn disk(&self) -> Result<(u32, u32), DiscoveryError> {
        let st = nix::sys::statvfs::statvfs(&self.work_dir).map_err(|source| {
            DiscoveryError::Statvfs {
                path: self.work_dir.clone(),
                source,
            }
        })?;
        let frag = st.fragment_size() as u64;
        let mib =
            |blocks: u64| u32::try_from(blocks.saturating_mul(frag) >> 20).unwrap_or(u32::MAX);
        Ok((mib(st.blocks() as u64), mib(st.blocks_available() as u64)))
    }

    /// SoC temperature in tenths of a degree, from thermal zone 0.
    fn temperature(&self) -> Option<i16> {
        let milli: i64 = self
            .read("sys/class/thermal/thermal_zone0/temp")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        i16::try_from(milli / 100).ok()
    }

    /// The Pi firmware's throttling flags (`vcgencmd get_throttled`, exposed by newer kernels in
    /// sysfs): bits 0-3 as they are now in the low nibble, bits 16-19 (since boot) in the high one.
    fn throttled(&self) -> u8 {
        let Ok(text) = self.read("sys/devices/platform/soc/soc:firmware/get_throttled") else {
            return 0;
        };
        let t = text.trim().trim_start_matches("0x");
        let bits = u32::from_str_radix(t, 16).unwrap_or(0);
        ((bits & 0xF) | ((bits >> 12) & 0xF0)) as u8
    }
}

fn meminfo_mib(meminfo: &str, key: &str) -> Option<u32> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    u32::try_from(kib / 1024).ok()
}

fn count_cpu_list(list: &str) -> u32 {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(part.parse::<u32>().is_ok()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fake Raspberry Pi 4 below a temporary root.
    fn fake_pi(dir: &Path) {
        let write = |p: &str, text: &str| {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "proc/meminfo",
            "MemTotal:        3884836 kB\nMemFree:  100 kB\nMemAvailable:    3145728 kB\n",
        );
        write(
            "proc/stat",
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 0 1 1\ncpu1 1 0 1 1\n",
        );
        write("sys/devices/system/cpu/online", "0-3\n");
        write("proc/sys/kernel/hostname", "pi4-kitchen\n");
        write("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
        write("sys/class/thermal/thermal_zone0/temp", "52315\n");
        write(
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "0x50005\n",
        );
    }

    #[test]
    fn a_raspberry_pi_is_read_from_procfs_and_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        fake_pi(dir.path());
        let probe = Probe::new(dir.path(), dir.path());
        let board = probe.board().unwrap();
        assert_eq!(board.cpus, 4);
        assert_eq!(board.mem_total_mib, 3793);
        assert_eq!(board.hostname, "pi4-kitchen");
        assert_eq!(
            board.model.as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert!(board.disk_total_mib > 0);
        let reserve = Resources::new(0, 256, 1024);
        assert_eq!(board.offerable(&reserve).cpu_millis, 4000);
        assert_eq!(board.offerable(&reserve).mem_mib, 3793 - 256);
    }

    #[test]
    fn a_sample_measures_free_cpu_over_the_interval_memory_temperature_and_throttling() {
        let dir = tempfile::tempdir().unwrap();
        fake_pi(dir.path());
        let mut probe = Probe::new(dir.path(), dir.path());
        let board = probe.board().unwrap();
        let reserve = Resources::new(0, 256, 0);
        let first = probe.sample(&board, &reserve).unwrap();
        assert_eq!(first.free.cpu_millis, 4000, "no interval yet: all free");
        assert_eq!(first.free.mem_mib, 3072 - 256);
        assert_eq!(first.soc_temp_decidegrees, Some(523));
        // 0x50005: under-voltage and throttled now (bits 0 and 2) and since boot (bits 16 and 18).
        assert_eq!(first.throttled, 0x55);

        // 300 more busy jiffies out of 400: a quarter of 4 cores is idle.
        std::fs::write(
            dir.path().join("proc/stat"),
            "cpu  300 0 200 900 0 0 0 0 0 0\n",
        )
        .unwrap();
        let second = probe.sample(&board, &reserve).unwrap();
        assert_eq!(second.free.cpu_millis, 1000);
    }

    #[test]
    fn a_board_without_thermal_or_firmware_files_reports_none() {
        let dir = tempfile::tempdir().unwrap();
        fake_pi(dir.path());
        std::fs::remove_file(dir.path().join("sys/class/thermal/thermal_zone0/temp")).unwrap();
        std::fs::remove_file(
            dir.path()
                .join("sys/devices/platform/soc/soc:firmware/get_throttled"),
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("proc/device-tree/model")).unwrap();
        let mut probe = Probe::new(dir.path(), dir.path());
        let board = probe.board().unwrap();
        assert_eq!(board.model, None);
        let s = probe.sample(&board, &Resources::ZERO).unwrap();
        assert_eq!((s.soc_temp_decidegrees, s.throttled), (None, 0));
    }

    #[test]
    fn a_broken_meminfo_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fake_pi(dir.path());
        std::fs::write(dir.path().join("proc/meminfo"), "garbage\n").unwrap();
        let err = Probe::new(dir.path(), dir.path()).board().unwrap_err();
        assert!(err.to_string().contains("no MemTotal line"), "{err}");
    }

    #[test]
    fn this_machine_can_be_probed() {
        let mut probe = Probe::new("/", std::env::temp_dir());
        let board = probe.board().unwrap();
        assert!(board.cpus >= 1);
        assert!(board.mem_total_mib > 0);
        let s = probe.sample(&board, &Resources::ZERO).unwrap();
        assert!(s.free.fits_in(&board.offerable(&Resources::ZERO)));
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3"), 4);
        assert_eq!(count_cpu_list("0,2-3"), 3);
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list(""), 0);
    }
}
