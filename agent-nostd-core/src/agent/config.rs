//! The agent core's settings: [`Config`], its backoffs and its report thresholds.

use crate::wire::ResourceReport;

/// Exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay, in milliseconds.
    pub initial_ms: u32,
    /// The longest delay, in milliseconds.
    pub max_ms: u32,
}

/// How much a resource sample must change before an early report is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Change in free CPU, in millicores.
    pub cpu_millis: u32,
    /// Change in free memory, in MiB.
    pub mem_mib: u32,
    /// Change in free disk, in MiB.
    pub disk_mib: u32,
    /// Change in SoC temperature, in tenths of a degree.
    pub temp_decidegrees: u16,
}

/// The agent core's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Retry schedule for registration.
    pub register_backoff: Backoff,
    /// Retry schedule for each unacknowledged status update.
    pub status_backoff: Backoff,
    /// A report is sent at least this often, in milliseconds, even if nothing changed.
    pub report_heartbeat_ms: u32,
    /// Reports are never sent more often than this, in milliseconds.
    pub report_min_interval_ms: u32,
    /// What counts as a change worth an early report.
    pub report_thresholds: Thresholds,
    /// Seed for the backoff jitter (e.g. from the agent id), so boards do not retry in lockstep.
    pub jitter_seed: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            register_backoff: Backoff {
                initial_ms: 1_000,
                max_ms: 30_000,
            },
            status_backoff: Backoff {
                initial_ms: 1_000,
                max_ms: 30_000,
            },
            report_heartbeat_ms: 30_000,
            report_min_interval_ms: 1_000,
            report_thresholds: Thresholds {
                cpu_millis: 100,
                mem_mib: 16,
                disk_mib: 64,
                temp_decidegrees: 20,
            },
            jitter_seed: 0x9E37_79B9,
        }
    }
}

/// A bad setting, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `status_backoff.initial_ms`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        for (b, initial, max) in [
            (
                self.register_backoff,
                "register_backoff.initial_ms",
                "register_backoff.max_ms",
            ),
            (
                self.status_backoff,
                "status_backoff.initial_ms",
                "status_backoff.max_ms",
            ),
        ] {
            if b.initial_ms == 0 {
                return bad(initial, "must be above 0");
            }
            if b.max_ms < b.initial_ms {
                return bad(max, "must be at least the initial delay");
            }
        }
        if self.report_heartbeat_ms == 0 {
            return bad("report_heartbeat_ms", "must be above 0");
        }
        if self.report_min_interval_ms > self.report_heartbeat_ms {
            return bad(
                "report_min_interval_ms",
                "must not exceed report_heartbeat_ms",
            );
        }
        Ok(())
    }
}

impl Backoff {
    pub(super) fn next(&self, delay_ms: u32) -> u32 {
        delay_ms.saturating_mul(2).min(self.max_ms)
    }
}

impl Thresholds {
    pub(super) fn significant(&self, last: &ResourceReport, now: &ResourceReport) -> bool {
        let moved = |a: u32, b: u32, th: u32| a.abs_diff(b) >= th.max(1);
        let temp_moved = match (last.temperature(), now.temperature()) {
            (Some(a), Some(b)) => a.abs_diff(b) >= self.temp_decidegrees.max(1),
            (a, b) => a.is_some() != b.is_some(),
        };
        last.running_tasks != now.running_tasks
            || last.throttled != now.throttled
            || temp_moved
            || moved(last.free.cpu_millis, now.free.cpu_millis, self.cpu_millis)
            || moved(last.free.mem_mib, now.free.mem_mib, self.mem_mib)
            || moved(last.free.disk_mib, now.free.disk_mib, self.disk_mib)
    }
}
