//! The master core's settings and their validation.

use crate::authz::Authorization;

/// How the allocator orders frameworks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Weighted Dominant Resource Fairness: the lowest dominant share divided by weight goes first.
    #[default]
    Drf,
    /// Strict priorities: a higher `priority` always goes first; DRF orders frameworks of equal priority.
    StrictPriority,
}

/// The master core's settings. Times are in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How frameworks are ordered.
    pub policy: Policy,
    /// An allocation round runs this often, and also as soon as resources are freed.
    pub allocation_interval_ms: u64,
    /// An offer left unanswered this long is rescinded; its agent is then filtered from that
    /// framework for `default_refuse_ms`, as if declined, so the others get it.
    pub offer_timeout_ms: u64,
    /// How long a decline keeps the agent from the framework when the decline names no time.
    pub default_refuse_ms: u64,
    /// Agents silent this long are pinged (and again after as long, while they stay silent).
    pub ping_interval_ms: u64,
    /// How many health checks one `ping_interval_ms` is split into. Each check pings at most
    /// `1 / ping_spread` of the reachable agents (rounded up), so the pings of a period are spread
    /// over it instead of leaving in one burst; 1 is one check (and one burst) per period.
    pub ping_spread: u32,
    /// Agents silent this long are unreachable.
    pub agent_timeout_ms: u64,
    /// Unreachable agents are forgotten (and their tasks reported LOST) after this long.
    pub unreachable_gc_ms: u64,
    /// A framework known only from agents' task lists (after a master restart) is removed, and its
    /// tasks killed, if it does not re-register within this long.
    pub framework_recovery_timeout_ms: u64,
    /// The longest failover timeout a framework may ask for.
    pub max_failover_timeout_ms: u64,
    /// A task still STAGING this long after its launch makes the master ask its agent to re-register
    /// (which settles whether the launch arrived); a kill not yet answered this long is sent again.
    pub task_retry_ms: u64,
    /// Kill tasks of frameworks over their fair share while another is below its guarantee.
    pub revocation: bool,
    /// The grace period of a revocation kill.
    pub revocation_grace_ms: u32,
    /// How many events a disconnected framework may have waiting; the oldest are dropped beyond.
    pub max_held_events: usize,
    /// How many ended tasks each framework's completed-task cache keeps (the oldest go first), so
    /// reconciling an ended task answers its real terminal state.
    pub max_completed_tasks: usize,
    /// For this long after the master starts, reconciling or killing a task it does not know gets
    /// no answer (its agent may not have re-registered yet); afterwards it is TASK_LOST.
    pub reregistration_window_ms: u64,
    /// The most agents the master keeps; registrations beyond are refused.
    pub max_agents: usize,
    /// The most frameworks the master keeps; registrations beyond are refused.
    pub max_frameworks: usize,
    /// Publish Home Assistant MQTT discovery configs for the agents and the cluster (see
    /// [`crate::status`]).
    pub ha_discovery: bool,
    /// The Home Assistant discovery prefix (Home Assistant's default is `homeassistant`).
    pub ha_prefix: String,
    /// What the operator grants each framework principal; `None` is an open cluster, where
    /// frameworks' claims stand (see [`crate::authz`]).
    pub authorization: Option<Authorization>,
    /// The keys agents seal their frames with (see PROTOCOL.md, "Authenticated frames"). The
    /// default takes the anonymous key from any agent, as a cluster without credentials must; a
    /// driver with a credential store sets the agents' own keys (also later, with
    /// [`MasterCore::set_principal_keys`](crate::MasterCore::set_principal_keys)).
    pub principal_keys: crate::master::PrincipalKeys,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::Drf,
            allocation_interval_ms: 1_000,
            offer_timeout_ms: 30_000,
            default_refuse_ms: 5_000,
            ping_interval_ms: 5_000,
            ping_spread: 10,
            agent_timeout_ms: 15_000,
            unreachable_gc_ms: 600_000,
            framework_recovery_timeout_ms: 120_000,
            max_failover_timeout_ms: 7 * 24 * 3_600_000,
            task_retry_ms: 60_000,
            revocation: false,
            revocation_grace_ms: 5_000,
            max_held_events: 1_024,
            max_completed_tasks: 1_000,
            reregistration_window_ms: 15_000,
            max_agents: 100_000,
            max_frameworks: 10_000,
            ha_discovery: false,
            ha_prefix: "homeassistant".to_owned(),
            authorization: None,
            principal_keys: crate::master::PrincipalKeys::anonymous(),
        }
    }
}

/// A setting that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The field, e.g. `allocation_interval_ms`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        for (v, field) in [
            (self.allocation_interval_ms, "allocation_interval_ms"),
            (self.offer_timeout_ms, "offer_timeout_ms"),
            (self.ping_interval_ms, "ping_interval_ms"),
            (self.agent_timeout_ms, "agent_timeout_ms"),
            (self.task_retry_ms, "task_retry_ms"),
        ] {
            if v == 0 {
                return bad(field, "must be above 0");
            }
        }
        if self.ping_spread == 0 || u64::from(self.ping_spread) > self.ping_interval_ms {
            return bad("ping_spread", "must be from 1 to ping_interval_ms");
        }
        if self.agent_timeout_ms < self.ping_interval_ms {
            return bad("agent_timeout_ms", "must be at least ping_interval_ms");
        }
        if self.max_agents == 0 || self.max_frameworks == 0 {
            return bad("max_agents", "limits must be above 0");
        }
        if self.ha_discovery
            && (self.ha_prefix.is_empty()
                || self.ha_prefix.contains(['#', '+'])
                || self.ha_prefix.starts_with('/')
                || self.ha_prefix.ends_with('/'))
        {
            return bad(
                "ha_prefix",
                "must be a non-empty MQTT topic without wildcards or outer slashes",
            );
        }
        Ok(())
    }
}
