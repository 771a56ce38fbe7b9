//! Who a task runs as: the `[tasks]` user, or another one the task asks for (its `BRAMBLE_USER`
//! environment variable) that `allowed_users` lists, with its primary group, its own
//! supplementary groups (`/etc/group`) and the `[tasks]` groups every task gets.
//!
//! An agent that runs as root switches every task to that user ([`RunAs`]); an agent that is not
//! root (`bramble up` as a normal user, tests) runs every task as its own user and switches
//! nothing. A user or group that is missing fails the task with a message saying so: the agent
//! never falls back to running a task as root.

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{Tasks, DEFAULT_TASK_GROUPS};
use crate::process::RunAs;

/// The variable of a task's environment that asks for a user other than the default. The task
/// sees it set to the user it runs as.
pub use agent_nostd_core::wire::TASK_USER_VAR as USER_VAR;

/// Why a task cannot run as the user it needs. The text is the task's FAILED message, of which
/// the master is told the first 64 bytes (the agent logs all of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The task asked for a user this agent does not allow.
    #[error("user `{0}` is not in this agent's [tasks] allowed_users")]
    NotAllowed(String),
    /// The agent is not root, so it runs tasks only as its own user.
    #[error("cannot run as `{user}`: the agent is not root and runs tasks as `{agent}`")]
    NotRoot {
        /// The user asked for.
        user: String,
        /// The agent's own user.
        agent: String,
    },
    /// The user does not exist on this board.
    #[error(
        "no user `{0}` on this board: create it (useradd --system --no-create-home \
         --shell /usr/sbin/nologin {0}) or reinstall the bramble-agent package"
    )]
    NoSuchUser(String),
    /// A group of `[tasks] groups` does not exist on this board.
    #[error("no group `{0}` (in [tasks] groups) on this board")]
    NoSuchGroup(String),
    /// The user or group database could not be read.
    #[error("cannot look up {what}: {errno}")]
    Lookup {
        /// The user or group, e.g. "user `bramble`".
        what: String,
        /// The error.
        errno: nix::errno::Errno,
    },
}

/// Decides who each task runs as; see the module docs.
#[derive(Debug, Clone)]
pub struct TaskUsers {
    config: Tasks,
    /// The agent's own user id and name (the name `None` when it has no passwd entry).
    agent_uid: Uid,
    agent_name: Option<String>,
}

/// Who a task runs as, before the databases are read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// The agent's own user: no switch.
    Agent,
    /// This user, switched to in the task's process.
    Switch(String),
}

impl TaskUsers {
    /// The policy of `config` for an agent running as the current effective user.
    pub fn new(config: &Tasks) -> TaskUsers {
        let agent_uid = nix::unistd::geteuid();
        let agent_name = User::from_uid(agent_uid).ok().flatten().map(|u| u.name);
        TaskUsers::for_agent(config, agent_uid, agent_name)
    }

    /// The policy of `config` for an agent running as `agent_uid` (named `agent_name`).
    pub fn for_agent(config: &Tasks, agent_uid: Uid, agent_name: Option<String>) -> TaskUsers {
        TaskUsers {
            config: config.clone(),
            agent_uid,
            agent_name,
        }
    }

    /// Whether tasks are switched to another user (the agent is root).
    pub fn switches(&self) -> bool {
        self.agent_uid.is_root()
    }

    /// The agent's own user's name, or its uid when it has no name.
    fn agent_name(&self) -> String {
        self.agent_name
            .clone()
            .unwrap_or_else(|| self.agent_uid.to_string())
    }

    fn choose(&self, requested: Option<&str>) -> Result<Choice, UserError> {
        // Asking for the default user is not asking.
        let requested = requested.filter(|u| *u != self.config.user);
        let user = match requested {
            None => &self.config.user,
            Some(u) if self.config.allowed_users.iter().any(|a| a == u) => u,
            Some(u) => return Err(UserError::NotAllowed(u.to_owned())),
        };
        if self.switches() {
            return Ok(Choice::Switch(user.to_owned()));
        }
        if requested.is_none() || self.agent_name.as_deref() == Some(user) {
            Ok(Choice::Agent)
        } else {
            Err(UserError::NotRoot {
                user: user.to_owned(),
                agent: self.agent_name(),
            })
        }
    }

    /// Who a task that asked for `requested` (its `BRAMBLE_USER`, if any) runs as: `None` for
    /// the agent's own user (no switch), with that user's name.
    pub fn resolve(&self, requested: Option<&str>) -> Result<(Option<RunAs>, String), UserError> {
        let name = match self.choose(requested)? {
            Choice::Agent => return Ok((None, self.agent_name())),
            Choice::Switch(name) => name,
        };
        let lookup = |errno| UserError::Lookup {
            what: format!("user `{name}`"),
            errno,
        };
        let user = User::from_name(&name)
            .map_err(lookup)?
            .ok_or_else(|| UserError::NoSuchUser(name.clone()))?;
        let mut groups = own_groups(&user).map_err(lookup)?;
        for gid in self.task_groups()? {
            if !groups.contains(&gid) {
                groups.push(gid);
            }
        }
        let run_as = RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        };
        Ok((Some(run_as), name))
    }

    /// The ids of the `[tasks]` groups: each configured one (which must exist), or those of the
    /// default device groups that exist.
    pub fn task_groups(&self) -> Result<Vec<u32>, UserError> {
        let lookup = |name: &str| {
            Group::from_name(name).map_err(|errno| UserError::Lookup {
                what: format!("group `{name}`"),
                errno,
            })
        };
        let mut gids = Vec::new();
        match &self.config.groups {
            Some(names) => {
                for name in names {
                    let group =
                        lookup(name)?.ok_or_else(|| UserError::NoSuchGroup(name.clone()))?;
                    gids.push(group.gid.as_raw());
                }
            }
            None => {
                for name in DEFAULT_TASK_GROUPS {
                    if let Some(group) = lookup(name)? {
                        gids.push(group.gid.as_raw());
                    }
                }
            }
        }
        Ok(gids)
    }

    /// Checks at start that tasks can run as the default user with the configured groups, and
    /// says who they run as. A problem is logged (tasks fail with it until it is fixed) but does
    /// not stop the agent.
    pub fn check(&self) -> Result<(), UserError> {
        match self.resolve(None) {
            Ok((Some(run_as), name)) => {
                tracing::info!(
                    user = %name,
                    uid = run_as.uid,
                    groups = ?run_as.all_groups(),
                    "tasks run as `{name}` unless they ask for an allowed user"
                );
                Ok(())
            }
            Ok((None, name)) => {
                tracing::info!(
                    "the agent is not root: tasks run as its own user `{name}` ([tasks] does not apply)"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!("tasks cannot start: {e}");
                Err(e)
            }
        }
    }
}

/// The name of the user this process runs as (its uid when it has no name): what `bramble up`
/// sets as its agents' `[tasks] user`, so its demo needs no `bramble` user.
pub fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// `user`'s primary group and the supplementary groups `/etc/group` gives it.
fn own_groups(user: &User) -> Result<Vec<u32>, nix::errno::Errno> {
    let name =
        std::ffi::CString::new(user.name.as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)?;
    Ok(groups.into_iter().map(Gid::as_raw).collect())
}

/// The user a RunTask's environment asks for, if it names one (see
/// [`agent_nostd_core::wire::requested_user`]).
pub fn requested<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    agent_nostd_core::wire::requested_user(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(user: &str, allowed: &[&str]) -> Tasks {
        Tasks {
            user: user.to_owned(),
            groups: Some(vec![]),
            allowed_users: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn as_root(config: &Tasks) -> TaskUsers {
        TaskUsers::for_agent(config, Uid::from_raw(0), Some("root".into()))
    }

    fn as_user(config: &Tasks) -> TaskUsers {
        TaskUsers::for_agent(config, Uid::from_raw(1000), Some("alice".into()))
    }

    #[test]
    fn a_root_agent_runs_a_task_that_asks_for_nothing_as_the_configured_user() {
        let users = as_root(&tasks("bramble", &[]));
        assert_eq!(users.choose(None), Ok(Choice::Switch("bramble".into())));
        assert_eq!(
            users.choose(Some("bramble")),
            Ok(Choice::Switch("bramble".into()))
        );
    }

    #[test]
    fn a_task_may_ask_only_for_an_allowed_user_and_root_is_not_implied() {
        let users = as_root(&tasks("bramble", &["pi"]));
        assert_eq!(users.choose(Some("pi")), Ok(Choice::Switch("pi".into())));
        assert_eq!(
            users.choose(Some("root")),
            Err(UserError::NotAllowed("root".into()))
        );
        assert_eq!(
            users.choose(Some("mallory")),
            Err(UserError::NotAllowed("mallory".into()))
        );
        let with_root = as_root(&tasks("bramble", &["root"]));
        assert_eq!(
            with_root.choose(Some("root")),
            Ok(Choice::Switch("root".into()))
        );
    }

    #[test]
    fn an_agent_that_is_not_root_runs_tasks_as_itself_and_refuses_other_users() {
        let users = as_user(&tasks("bramble", &["pi", "alice"]));
        assert!(!users.switches());
        assert_eq!(users.choose(None), Ok(Choice::Agent));
        assert_eq!(users.choose(Some("alice")), Ok(Choice::Agent));
        assert_eq!(
            users.choose(Some("bramble")),
            Ok(Choice::Agent),
            "asking for the default user is not asking"
        );
        assert_eq!(
            users.choose(Some("pi")),
            Err(UserError::NotRoot {
                user: "pi".into(),
                agent: "alice".into()
            })
        );
        assert_eq!(
            users.choose(Some("mallory")),
            Err(UserError::NotAllowed("mallory".into())),
            "allowed_users is checked first"
        );
        assert_eq!(users.resolve(None), Ok((None, "alice".to_owned())));
    }

    #[test]
    fn a_missing_user_is_refused_with_how_to_create_it() {
        let users = as_root(&tasks("bramble-no-such-user-x", &[]));
        let e = users.resolve(None).unwrap_err();
        assert_eq!(e, UserError::NoSuchUser("bramble-no-such-user-x".into()));
        let text = e.to_string();
        assert!(
            text.contains("useradd --system --no-create-home --shell /usr/sbin/nologin"),
            "{text}"
        );
    }

    #[test]
    fn a_configured_group_that_does_not_exist_fails_and_default_groups_are_optional() {
        let mut config = tasks("root", &[]);
        config.groups = Some(vec!["no-such-group-bramble".into()]);
        assert_eq!(
            as_root(&config).task_groups(),
            Err(UserError::NoSuchGroup("no-such-group-bramble".into()))
        );
        config.groups = Some(vec!["root".into()]);
        assert_eq!(as_root(&config).task_groups(), Ok(vec![0]));
        // The defaults that exist here, whichever they are: never an error.
        config.groups = None;
        assert!(as_root(&config).task_groups().is_ok());
    }

    #[test]
    fn root_resolves_with_its_ids_and_the_configured_groups() {
        let mut config = tasks("root", &[]);
        config.groups = Some(vec!["root".into()]);
        let (run_as, name) = as_root(&config).resolve(None).unwrap();
        let run_as = run_as.expect("a root agent switches");
        assert_eq!((run_as.uid, run_as.gid, name.as_str()), (0, 0, "root"));
        assert!(run_as.groups.contains(&0));
    }

    #[test]
    fn the_last_bramble_user_variable_of_a_task_is_its_request() {
        assert_eq!(requested([("A", "1")]), None);
        assert_eq!(
            requested([(USER_VAR, "pi"), ("A", "1"), (USER_VAR, "bob")]),
            Some("bob")
        );
        assert_eq!(requested([(USER_VAR, "")]), None);
    }
}
