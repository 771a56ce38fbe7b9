//! Authorization: what the operator lets each framework do, whatever it claims.
//!
//! A framework's registration names a role, a DRF weight, a priority and a guarantee, and its
//! tasks may ask to run as a Unix user (`BRAMBLE_USER` in their environment). In an open cluster
//! (`bramble up`, or a master with no [`Authorization`]) the master takes those claims as they
//! come. With an [`Authorization`], set by the operator (the master's config and its credential
//! store), it does what Mesos's `--roles`, `--weights` and `run_tasks` ACL do:
//!
//! - a framework whose principal (its client name) has no [`Grant`] is refused, with a reason the
//!   SDK surfaces;
//! - the grant's role, weight, priority and guarantee replace the registration's;
//! - a task may run only as the agent's default task user or as a user the grant lists in
//!   `run_as`; an accept with any other task is refused whole.

use std::collections::BTreeMap;

use agent_nostd_core::Resources;
use bramble_proto::{Register, TaskInfo};

/// The environment variable a task names the user it wants to run as in (the agent's
/// `[tasks] allowed_users` has the last word on the board).
pub use agent_nostd_core::wire::TASK_USER_VAR as USER_VAR;

/// What the operator grants one framework principal.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The role its tasks run under.
    pub role: String,
    /// Its DRF weight.
    pub weight: f64,
    /// Its priority under the strict-priority policy.
    pub priority: u32,
    /// What it is offered first while it holds less.
    pub guarantee: Option<Resources>,
    /// The Unix users its tasks may ask to run as, besides the agent's default task user.
    pub run_as: Vec<String>,
}

impl Default for Grant {
    /// The default role `*`, weight 1, priority 0, no guarantee, the default task user only.
    fn default() -> Self {
        Grant {
            role: "*".to_owned(),
            weight: 1.0,
            priority: 0,
            guarantee: None,
            run_as: Vec::new(),
        }
    }
}

/// The operator's grants, by framework principal name (the framework's client name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authorization {
    frameworks: BTreeMap<String, Grant>,
}

/// Why a framework or one of its tasks was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No grant names the framework's principal.
    #[error(
        "framework principal {0:?} is not authorized on this cluster: the operator grants it in the \
         master's config (and issues its credential with `bramble credentials add framework {0}`)"
    )]
    UnknownPrincipal(String),
    /// A task asks for a user the grant does not list.
    #[error(
        "task {task} may not run as {user:?}: framework {principal:?} may run tasks as {allowed}"
    )]
    User {
        /// The task.
        task: String,
        /// The user it asked for.
        user: String,
        /// The framework's principal.
        principal: String,
        /// What it may run as, for the message.
        allowed: String,
    },
}

impl Authorization {
    /// No framework granted anything yet.
    pub fn new() -> Self {
        Authorization::default()
    }

    /// Grants `grant` to the framework principal `name`, or to every principal starting with
    /// `PREFIX` when `name` is `PREFIX*` (replacing an earlier grant).
    pub fn grant(&mut self, name: impl Into<String>, grant: Grant) -> &mut Self {
        self.frameworks.insert(name.into(), grant);
        self
    }

    /// The grant of framework principal `name`, if any: its own, else that of the longest
    /// pattern `PREFIX*` it starts with (`bramble-run-*` covers every `bramble run`).
    pub fn get(&self, name: &str) -> Option<&Grant> {
        if let Some(grant) = self.frameworks.get(name) {
            return Some(grant);
        }
        self.frameworks
            .iter()
            .filter_map(|(pattern, grant)| {
                let prefix = pattern.strip_suffix('*')?;
                name.starts_with(prefix).then_some((prefix.len(), grant))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, grant)| grant)
    }

    /// The registration `info` of framework principal `principal` as the operator allows it: the
    /// grant's role, weight, priority and guarantee in place of the claimed ones.
    pub fn register(&self, principal: &str, mut info: Register) -> Result<Register, Refusal> {
        let grant = self
            .get(principal)
            .ok_or_else(|| Refusal::UnknownPrincipal(principal.to_owned()))?;
        info.role.clone_from(&grant.role);
        info.weight = grant.weight;
        info.priority = grant.priority;
        info.guarantee = grant.guarantee;
        Ok(info)
    }

    /// Whether framework principal `principal` may launch `task` (the user it asks for).
    pub fn check_task(&self, principal: &str, task: &TaskInfo) -> Result<(), Refusal> {
        let grant = self
            .get(principal)
            .ok_or_else(|| Refusal::UnknownPrincipal(principal.to_owned()))?;
        let env = task.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let Some(user) = agent_nostd_core::wire::requested_user(env) else {
            return Ok(());
        };
        if grant.run_as.iter().any(|u| u == user) {
            return Ok(());
        }
        let allowed = if grant.run_as.is_empty() {
            "the agent's default task user only".to_owned()
        } else {
            format!("the default task user or {}", grant.run_as.join(", "))
        };
        Err(Refusal::User {
            task: task.task_id.clone(),
            user: user.to_owned(),
            principal: principal.to_owned(),
            allowed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz() -> Authorization {
        let mut a = Authorization::new();
        a.grant(
            "pi",
            Grant {
                role: "batch".into(),
                weight: 2.0,
                priority: 3,
                guarantee: Some(Resources::new(500, 256, 0)),
                run_as: vec!["pi".into()],
            },
        );
        a
    }

    fn task(user: Option<&str>) -> TaskInfo {
        let mut t = TaskInfo::new("t1", &["/bin/true"], Resources::new(100, 10, 0));
        if let Some(u) = user {
            t.env.push((USER_VAR.into(), u.into()));
        }
        t
    }

    #[test]
    fn the_grant_replaces_what_the_framework_claims() {
        let mut claimed = Register::new("pi");
        claimed.role = "prod".into();
        claimed.weight = 100.0;
        claimed.priority = 99;
        let info = authz().register("pi", claimed).unwrap();
        assert_eq!(
            (info.role.as_str(), info.weight, info.priority),
            ("batch", 2.0, 3)
        );
        assert_eq!(info.guarantee, Some(Resources::new(500, 256, 0)));
        assert_eq!(info.name, "pi", "the rest of the registration stays");
    }

    #[test]
    fn a_pattern_grants_every_principal_it_starts_and_the_longest_pattern_wins() {
        let mut a = Authorization::new();
        a.grant("bramble-*", Grant::default());
        a.grant(
            "bramble-run-*",
            Grant {
                weight: 5.0,
                ..Grant::default()
            },
        );
        assert_eq!(a.get("bramble-run-7f3a").map(|g| g.weight), Some(5.0));
        assert_eq!(a.get("bramble-other").map(|g| g.weight), Some(1.0));
        assert!(a.get("pi").is_none());
    }

    #[test]
    fn a_principal_without_a_grant_is_refused_with_a_reason_naming_it() {
        let err = authz()
            .register("intruder", Register::new("x"))
            .unwrap_err();
        assert_eq!(err, Refusal::UnknownPrincipal("intruder".into()));
        assert!(err
            .to_string()
            .contains("bramble credentials add framework intruder"));
    }

    #[test]
    fn a_task_may_run_as_the_default_user_or_a_granted_one_only() {
        let a = authz();
        assert_eq!(a.check_task("pi", &task(None)), Ok(()));
        assert_eq!(a.check_task("pi", &task(Some("pi"))), Ok(()));
        let err = a.check_task("pi", &task(Some("root"))).unwrap_err();
        assert!(err.to_string().contains("may not run as \"root\""), "{err}");
        // The agent obeys the last BRAMBLE_USER: so does the check.
        let mut smuggled = task(Some("pi"));
        smuggled.env.push((USER_VAR.into(), "root".into()));
        assert!(a.check_task("pi", &smuggled).is_err());
        let mut open = Authorization::new();
        open.grant("fw", Grant::default());
        let err = open.check_task("fw", &task(Some("pi"))).unwrap_err();
        assert!(err.to_string().contains("default task user only"), "{err}");
    }
}
