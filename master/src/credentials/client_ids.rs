//! Which base client ids a principal may connect with, so that no principal can take over
//! another's session (a broker drops the older connection of a client id that connects again).
//!
//! A client that logs in connects with its base id bound to its password
//! (`BASE-XXXXXXXXXXXXXXXX`, [`bramble_mqtt::client_id`]); the embedded broker's
//! [`super::Authenticator`] unbinds it with the password presented (refusing an id that is not
//! bound to it) and asks [`may_use`] about the base. The binding alone stops a takeover on any
//! broker (a principal cannot compute another's suffix); this table also keeps a principal off
//! the others' names on the embedded broker.
//!
//! | principal        | base client ids                                                     |
//! |------------------|---------------------------------------------------------------------|
//! | `master-*`       | `bramble-master-*` (the leader's `bramble-master-NAME`, the election's `bramble-master-NAME-election`), the start-up sweep of stale status topics `bramble-query-*`, and `bramble deploy`'s registration watch `bramble-deploy-*` |
//! | `agent-NAME`     | `bramble-agent-NAME`, and its tasks' executors `bramble-exec-*`     |
//! | `framework-NAME` | `bramble-fw-NAME`, and its executors `bramble-exec-NAME-*`          |
//! | `operator-*`     | the CLI's one-shots `bramble-query-*`, `bramble-cmd-*`, `bramble-deploy-*`, and `bramble run`'s `bramble-fw-bramble-run-*` |
//!
//! Only the master principal may use `bramble-master-*`, only `agent-NAME` its agent id. The
//! executors' ids (`bramble-exec-CLIENT-TASK`) are the one shared prefix: an executor may log in
//! with its agent's credential or its framework's (bound to different passwords, the two are
//! different ids, so neither can take the other's over).

use agent_nostd_core::auth::{Principal, PrincipalKind};

/// Whether `principal` may connect with the base id `client_id` (already unbound).
pub fn may_use(principal: &Principal, client_id: &str) -> bool {
    let name = principal.name();
    match principal.kind() {
        PrincipalKind::Master => ["bramble-master-", "bramble-query-", "bramble-deploy-"]
            .iter()
            .any(|p| client_id.len() > p.len() && client_id.starts_with(p)),
        PrincipalKind::Agent => {
            client_id.strip_prefix("bramble-agent-") == Some(name) || is_exec(client_id, None)
        }
        PrincipalKind::Framework => {
            client_id.strip_prefix("bramble-fw-") == Some(name) || is_exec(client_id, Some(name))
        }
        PrincipalKind::Operator => [
            "bramble-query-",
            "bramble-cmd-",
            "bramble-deploy-",
            "bramble-fw-bramble-run-",
        ]
        .iter()
        .any(|p| client_id.len() > p.len() && client_id.starts_with(p)),
    }
}

/// `bramble-exec-CLIENT-TASK`, of framework `client` when given.
fn is_exec(client_id: &str, client: Option<&str>) -> bool {
    let Some(rest) = client_id.strip_prefix("bramble-exec-") else {
        return false;
    };
    match client {
        None => !rest.is_empty(),
        Some(client) => rest
            .strip_prefix(client)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|task| !task.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(username: &str) -> Principal {
        Principal::from_username(username).unwrap()
    }

    #[test]
    fn only_the_master_principal_may_use_the_masters_client_ids() {
        for id in ["bramble-master-pi4", "bramble-master-pi4-election"] {
            assert!(may_use(&p("master-cluster"), id), "{id}");
            for other in ["agent-pi4", "framework-pi4", "operator-admin"] {
                assert!(!may_use(&p(other), id), "{other} {id}");
            }
        }
        assert!(!may_use(&p("master-cluster"), "bramble-master-"));
        assert!(may_use(&p("master-cluster"), "bramble-deploy-77"));
        assert!(!may_use(&p("master-cluster"), "bramble-agent-pi4"));
    }

    #[test]
    fn an_agent_may_use_only_its_own_agent_id_and_executor_ids() {
        let a = p("agent-pi-kitchen");
        assert!(may_use(&a, "bramble-agent-pi-kitchen"));
        assert!(may_use(&a, "bramble-exec-pi-t1"));
        assert!(!may_use(&a, "bramble-agent-pi-garage"));
        assert!(!may_use(&a, "bramble-agent-pi-kitchen-2"));
        assert!(!may_use(&a, "bramble-fw-pi-kitchen"));
        assert!(!may_use(&a, "bramble-master-x"));
    }

    #[test]
    fn a_framework_may_use_its_own_scheduler_and_executor_ids() {
        let f = p("framework-pi");
        assert!(may_use(&f, "bramble-fw-pi"));
        assert!(may_use(&f, "bramble-exec-pi-task-7"));
        assert!(!may_use(&f, "bramble-fw-wordcount"));
        assert!(!may_use(&f, "bramble-exec-wordcount-task-7"));
        assert!(!may_use(&f, "bramble-exec-pi-"));
        assert!(!may_use(&f, "bramble-agent-pi"));
    }

    #[test]
    fn an_operator_may_use_the_clis_one_shot_ids_only() {
        let o = p("operator-admin");
        for id in [
            "bramble-query-12-0",
            "bramble-cmd-12-1",
            "bramble-deploy-12",
            "bramble-fw-bramble-run-12",
        ] {
            assert!(may_use(&o, id), "{id}");
        }
        for id in [
            "bramble-master-x",
            "bramble-agent-pi",
            "bramble-fw-pi",
            "bramble-query-",
        ] {
            assert!(!may_use(&o, id), "{id}");
        }
    }
}
