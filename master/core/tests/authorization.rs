//! The operator's authorization, not the framework's claims: an unknown principal is refused with
//! a reason, a granted one runs under the grant's role and weight whatever it claims, and a task
//! may run only as a user its framework was granted.

use agent_nostd_core::wire::{AgentMsg, MasterMsg, Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::authz::{Authorization, Grant, USER_VAR};
use bramble_master_core::{Config, MasterCore, Outgoing};
use bramble_proto::{Accept, Call, ErrorCode, Event, Register, TaskInfo};

mod support;

use support::{agent_info, call, drain, events, send_agent, transmits};

/// A master whose operator granted framework principal `fw` role `batch`, weight 3, and tasks
/// as user `pi`; with agent `pi` registered.
fn master() -> MasterCore {
    let mut authz = Authorization::new();
    authz.grant(
        "fw",
        Grant {
            role: "batch".into(),
            weight: 3.0,
            run_as: vec!["pi".into()],
            ..Grant::default()
        },
    );
    let config = Config {
        authorization: Some(authz),
        ..Config::default()
    };
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(agent_info("pi")));
    core
}

#[test]
fn a_framework_without_a_grant_is_refused_with_a_reason_and_counted() {
    let mut authz = Authorization::new();
    authz.grant("someone-else", Grant::default());
    let config = Config {
        authorization: Some(authz),
        ..Config::default()
    };
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    call(&mut core, 0, Call::Register(Register::new("fw")));
    let out = transmits(&mut core);
    let refused = events(&out).into_iter().find_map(|e| match e {
        Event::Error {
            code: ErrorCode::RegistrationRefused,
            message,
            ..
        } => Some(message),
        _ => None,
    });
    let message = refused.expect("refused");
    assert!(message.contains("\"fw\" is not authorized"), "{message}");
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::Registered { .. })),
        "not registered"
    );
    assert_eq!(core.stats().unauthorized, 1);
}

#[test]
fn a_granted_framework_runs_under_the_operators_role_and_weight_not_its_claims() {
    let mut core = master();
    let mut claimed = Register::new("fw");
    claimed.role = "prod".into();
    claimed.weight = 50.0;
    call(&mut core, 0, Call::Register(claimed));
    let (_, fid) = drain(&mut core);
    let view = core.framework(&fid.expect("registered")).unwrap();
    assert_eq!((view.role.as_str(), view.weight), ("batch", 3.0));
}

fn accept_as(core: &mut MasterCore, user: &str) -> Vec<bramble_master_core::Transmit> {
    call(core, 0, Call::Register(Register::new("fw")));
    core.handle_timeout(0);
    let (offers, _) = drain(core);
    let mut task = TaskInfo::new("t1", &["/bin/id"], Resources::new(100, 10, 0));
    task.env.push((USER_VAR.into(), user.into()));
    call(
        core,
        1,
        Call::Accept(Accept {
            offer_id: offers[0].offer_id,
            tasks: vec![task],
        }),
    );
    transmits(core)
}

#[test]
fn a_task_asking_for_a_user_its_framework_was_not_granted_is_refused_and_never_sent() {
    let mut core = master();
    let out = accept_as(&mut core, "root");
    let refused = events(&out).into_iter().any(|e| {
        matches!(e, Event::Error { code: ErrorCode::AcceptRefused, ref message, .. }
            if message.contains("may not run as \"root\""))
    });
    assert!(refused, "{out:?}");
    let lost = events(&out).into_iter().any(|e| {
        matches!(e, Event::Update(ref u)
            if u.task_id == "t1" && u.state == TaskState::Lost && u.reason == Reason::LaunchFailed)
    });
    assert!(lost, "the task is reported not launched");
    let sent = out.iter().any(
        |t| matches!(&t.message, Outgoing::Agent(m) if matches!(m.msg, MasterMsg::RunTask(_))),
    );
    assert!(!sent, "nothing reaches the agent");
    assert_eq!(core.stats().unauthorized, 1);
}

#[test]
fn a_task_asking_for_a_granted_user_is_launched() {
    let mut core = master();
    let out = accept_as(&mut core, "pi");
    let sent = out.iter().any(
        |t| matches!(&t.message, Outgoing::Agent(m) if matches!(m.msg, MasterMsg::RunTask(_))),
    );
    assert!(sent, "{out:?}");
    assert_eq!(core.stats().unauthorized, 0);
}
