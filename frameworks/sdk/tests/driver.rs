//! The scheduler and executor drivers against a real broker (rumqttd, in process) and a scripted
//! master that speaks `bramble_sdk::protocol`.

mod support;

use std::sync::Arc;

use bramble_sdk::executor::{Executor, ExecutorEnv};
use bramble_sdk::protocol::{
    self, AgentDescription, Call, Event, Offer, Register, StatusUpdate, TaskInfo,
};
use bramble_sdk::scheduler::{
    run, Scheduler, SchedulerConfig, SchedulerDriver, FRAMEWORK_CLIENT_ENV,
};
use bramble_sdk::{Reason, Resources, TaskState};
use support::{Master, WAIT};

/// Launches one task on the first offer, and stops when it ends.
#[derive(Default)]
struct OneTask {
    registered_as: Option<(String, u64)>,
    updates: Vec<StatusUpdate>,
}

impl Scheduler for OneTask {
    fn registered(&mut self, _: &mut SchedulerDriver, framework_id: &str, master_epoch: u64) {
        self.registered_as = Some((framework_id.to_owned(), master_epoch));
    }

    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for o in offers {
            let task = TaskInfo::new("t1", &["/bin/true"], Resources::new(500, 64, 0));
            driver.launch(o.offer_id, vec![task]).unwrap();
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        let done = update.state.is_terminal();
        self.updates.push(update);
        if done {
            driver.stop();
        }
    }
}

fn config(port: u16, client: &str) -> SchedulerConfig {
    SchedulerConfig {
        brokers: bramble_sdk::broker::BrokerAddr::new("127.0.0.1", port).into(),
        client_name: client.into(),
        registration: Register::new(client),
        credential: None,
    }
}

#[tokio::test]
async fn a_scheduler_registers_answers_an_offer_and_tears_down_when_it_stops() {
    let port = support::start_broker();
    let mut master = Master::connect(port).await;
    let sched = tokio::spawn(run(config(port, "one"), OneTask::default()));

    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::register_topic("one"));
    assert!(
        matches!(call, Call::Register(ref r) if r.name == "one" && r.connection != 0),
        "the registration names its connection: {call:?}"
    );

    // Garbage on the event topic is dropped; the driver carries on.
    master.send_raw("one", vec![1, 200, 3]).await;
    master.send_raw("one", vec![]).await;
    master
        .send(
            "one",
            &Event::Registered {
                framework_id: "e1-1".into(),
                master_epoch: 0xE1,
            },
        )
        .await;
    let agent = Arc::new(AgentDescription {
        agent_id: "pi4".into(),
        hostname: "pi4.lan".into(),
        arch: "aarch64".into(),
        attributes: vec![],
    });
    master
        .send(
            "one",
            &Event::Offers(vec![Offer {
                offer_id: 42,
                agent,
                resources: Resources::new(4000, 4096, 0),
            }]),
        )
        .await;

    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::call_topic("one"));
    let Call::Accept(accept) = call else {
        panic!("expected an accept, got {call:?}")
    };
    assert_eq!(accept.offer_id, 42);
    assert_eq!(accept.tasks.len(), 1);
    assert!(accept.tasks[0]
        .env
        .contains(&(FRAMEWORK_CLIENT_ENV.to_owned(), "one".to_owned())));

    master
        .send(
            "one",
            &Event::Update(StatusUpdate {
                task_id: "t1".into(),
                agent_id: Some("pi4".into()),
                state: TaskState::Finished,
                reason: Reason::Exited { code: 0 },
                message: String::new(),
                update_id: Some(5),
            }),
        )
        .await;
    // The scheduler stopped on the update; its acknowledgement still goes out, first.
    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::call_topic("one"));
    assert_eq!(
        call,
        Call::Acknowledge(protocol::Acknowledge {
            agent_id: "pi4".into(),
            task_id: "t1".into(),
            update_id: 5,
        })
    );
    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::call_topic("one"));
    assert_eq!(call, Call::Teardown);

    let done = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned after stop")
        .unwrap()
        .unwrap();
    assert_eq!(done.registered_as, Some(("e1-1".to_owned(), 0xE1)));
    assert_eq!(done.updates.len(), 1);
}

/// Answers every executor message with `echo:` + the message, and stops on `bye`.
#[derive(Default)]
struct Echo {
    got: Vec<(String, Vec<u8>)>,
}

impl Scheduler for Echo {
    fn offers(&mut self, _: &mut SchedulerDriver, _: Vec<Offer>) {}
    fn status_update(&mut self, _: &mut SchedulerDriver, _: StatusUpdate) {}
    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        self.got.push((task_id.to_owned(), data.clone()));
        if data == b"bye" {
            driver.stop();
        } else {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&data);
            driver.send_message(task_id, reply).unwrap();
        }
    }
}

#[tokio::test]
async fn framework_messages_flow_between_an_executor_and_its_scheduler_through_the_broker() {
    let port = support::start_broker();
    // A master that never answers: framework messages do not go through it.
    let mut master = Master::connect(port).await;
    let sched = tokio::spawn(run(config(port, "echo"), Echo::default()));
    let (_, call) = master.expect().await;
    assert!(matches!(call, Call::Register(_)));

    let broker = format!("mqtt://127.0.0.1:{port}");
    let env = ExecutorEnv::from_lookup(|k| match k {
        "BRAMBLE_BROKER" => Some(broker.clone()),
        "BRAMBLE_FRAMEWORK_CLIENT" => Some("echo".into()),
        "BRAMBLE_TASK_ID" => Some("task-7".into()),
        _ => None,
    })
    .unwrap();
    let mut exec = Executor::connect(env).await.unwrap();
    exec.send_message(b"ping".to_vec()).await.unwrap();
    let reply = tokio::time::timeout(WAIT, exec.recv_message())
        .await
        .expect("a reply came in time")
        .expect("the executor is connected");
    assert_eq!(reply, b"echo:ping");
    exec.send_message(b"bye".to_vec()).await.unwrap();
    exec.close().await;

    let done = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned after stop")
        .unwrap()
        .unwrap();
    assert_eq!(
        done.got,
        vec![
            ("task-7".to_owned(), b"ping".to_vec()),
            ("task-7".to_owned(), b"bye".to_vec())
        ]
    );
}

#[tokio::test]
async fn an_executor_without_a_broker_fails_with_a_clear_error() {
    let err = ExecutorEnv::from_lookup(|_| None).unwrap_err();
    assert!(err.to_string().contains("BRAMBLE_BROKER"), "{err}");
}

#[tokio::test]
async fn a_new_master_epoch_in_the_hello_makes_the_scheduler_re_register_with_its_id() {
    use agent_nostd_core::wire::{MasterEnvelope, MasterMsg, WireMessage};

    let port = support::start_broker();
    let mut master = Master::connect(port).await;
    let sched = tokio::spawn(run(config(port, "again"), OneTask::default()));
    let (_, call) = master.expect().await;
    assert!(matches!(call, Call::Register(_)), "{call:?}");
    master
        .send(
            "again",
            &Event::Registered {
                framework_id: "1-7".into(),
                master_epoch: 1,
            },
        )
        .await;

    // A master with epoch 2 takes over and says hello (retained, as the real one does).
    let mut buf = vec![0; MasterEnvelope::MAX_ENCODED_LEN];
    let n = MasterMsg::Hello.from_epoch(2).encode(&mut buf).unwrap();
    master
        .client
        .publish(
            agent_nostd_core::topic::MASTER_HELLO,
            rumqttc::QoS::AtLeastOnce,
            true,
            buf[..n].to_vec(),
        )
        .await
        .unwrap();
    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::register_topic("again"));
    let Call::ReRegister(rr) = call else {
        panic!("expected a re-registration, got {call:?}")
    };
    assert_eq!(rr.framework_id, "1-7");

    master
        .send(
            "again",
            &Event::Registered {
                framework_id: "1-7".into(),
                master_epoch: 2,
            },
        )
        .await;
    master
        .send(
            "again",
            &Event::Update(StatusUpdate {
                task_id: "t1".into(),
                agent_id: None,
                state: TaskState::Lost,
                reason: Reason::UnknownTask,
                message: String::new(),
                update_id: None,
            }),
        )
        .await;
    let done = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned after stop")
        .unwrap()
        .unwrap();
    assert_eq!(done.registered_as, Some(("1-7".to_owned(), 2)));
}

#[tokio::test]
async fn the_last_will_of_a_dropped_connection_names_the_connection_its_registration_named() {
    let port = support::start_broker();
    let mut master = Master::connect(port).await;
    let sched = tokio::spawn(run(config(port, "willing"), OneTask::default()));
    let (_, call) = master.expect().await;
    let Call::Register(registration) = call else {
        panic!("expected a registration, got {call:?}")
    };
    assert_ne!(registration.connection, 0);
    // The process dies without a disconnect: the broker publishes the will.
    sched.abort();
    let (topic, call) = master.expect().await;
    assert_eq!(topic, protocol::will_topic("willing"));
    assert_eq!(
        call,
        Call::Gone {
            connection: registration.connection
        }
    );
}
