//! Broker failover against real brokers: two Mosquitto processes, and clients given both
//! (`mqtt://A,mqtt://B`). When A is SIGKILLed, a client moves on to B at once, without waiting out
//! a reconnect backoff: a bramble-mqtt [`Session`], and a real agent process. And the CLI's
//! one-shot clients, which try the brokers in order (on the embedded broker).
//!
//! Every wait is on something arriving through B; the timeouts are only upper bounds.

mod support;

use std::time::Duration;

use agent_nostd_core::topic::AgentTopic;
use bramble::driver::{BrokerAddr, Brokers};
use bramble_mqtt::{ClientConfig, Session, SessionEvent};
use support::{Mosquitto, BRAMBLE};
use tokio::sync::mpsc;

/// Failover (after a SIGKILL: a refused connection) takes one connection attempt: well under this.
const FAILOVER_WITHIN: Duration = Duration::from_secs(3);

fn both(a: &Mosquitto, b: &Mosquitto) -> Brokers {
    Brokers::new(vec![a.addr(), b.addr()]).unwrap()
}

/// Polls `session` on its own task, handing over what it saw: the broker it connected to, or a
/// message's topic and payload.
fn drive(mut session: Session) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match session.poll().await {
                SessionEvent::Connected => Seen::Connected(session.broker().clone()),
                SessionEvent::Publish(p) => Seen::Message(p.topic, p.payload.to_vec()),
                SessionEvent::Disconnected => return,
                _ => continue,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

#[derive(Debug, PartialEq)]
enum Seen {
    Connected(BrokerAddr),
    Message(String, Vec<u8>),
}

/// Publishes `payload` on `topic` through `broker` every 100 ms until `arrived` says it came
/// through, or `within` has passed (then it panics, naming `what`).
async fn publish_until<T>(
    broker: &BrokerAddr,
    topic: &str,
    payload: &[u8],
    within: Duration,
    what: &str,
    mut arrived: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // A publish may fail while the subscriber is not there yet: it is simply sent again.
        let _ = bramble::mqtt::publish_once(
            broker,
            topic,
            payload.to_vec(),
            Duration::from_millis(500),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(found) = arrived() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
    }
}

/// Whether a message `payload` on `topic` is among what `seen` has handed over so far.
fn got(seen: &mut mpsc::UnboundedReceiver<Seen>, topic: &str, payload: &[u8]) -> Option<()> {
    while let Ok(s) = seen.try_recv() {
        if s == Seen::Message(topic.to_owned(), payload.to_vec()) {
            return Some(());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_session_given_two_brokers_moves_to_the_second_when_the_first_is_killed() {
    let mut a = Mosquitto::start();
    let b = Mosquitto::start();
    let topic = "failover/test";
    let session = Session::new(
        "failover-test",
        ClientConfig::new("bramble-failover-test", both(&a, &b)),
        vec![topic.to_owned()],
    );
    let mut seen = drive(session);

    // It connects to A, the first, and takes messages published there.
    let first = tokio::time::timeout(FAILOVER_WITHIN, seen.recv())
        .await
        .expect("the session connects")
        .unwrap();
    assert_eq!(first, Seen::Connected(a.addr()));
    publish_until(
        &a.addr(),
        topic,
        b"on A",
        FAILOVER_WITHIN,
        "a message on A arrives",
        || got(&mut seen, topic, b"on A"),
    )
    .await;

    // A dies: the session is on B, subscribed again, within one connection attempt.
    a.kill9();
    let killed = tokio::time::Instant::now();
    publish_until(
        &b.addr(),
        topic,
        b"on B",
        FAILOVER_WITHIN,
        "a message on B arrives after A died",
        || got(&mut seen, topic, b"on B"),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took < FAILOVER_WITHIN,
        "failover to B took {took:?} (no backoff before the list is exhausted)"
    );
}

/// A session on `broker` alone, subscribed to every agent's registrations; returns once it is
/// connected.
async fn watch_registrations(broker: BrokerAddr, id: &str) -> mpsc::UnboundedReceiver<Seen> {
    let config = ClientConfig {
        clean_session: true,
        ..ClientConfig::new(format!("bramble-failover-watch-{id}"), broker)
    };
    let filter = AgentTopic::Register.filter().as_str().to_owned();
    let mut seen = drive(Session::new("watch", config, vec![filter]));
    let connected = tokio::time::timeout(FAILOVER_WITHIN, seen.recv()).await;
    assert!(
        matches!(connected, Ok(Some(Seen::Connected(_)))),
        "the watcher connects: {connected:?}"
    );
    seen
}

/// Waits (at most `within`) for agent `id`'s registration among what `seen` hands over.
async fn registration(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    id: &str,
    within: Duration,
) -> bool {
    let topic = format!("bramble/v1/agent/{id}/register");
    let found = async {
        while let Some(s) = seen.recv().await {
            if matches!(&s, Seen::Message(t, _) if *t == topic) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(within, found).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn an_agent_given_two_brokers_registers_on_the_second_when_the_first_is_killed() {
    let mut a = Mosquitto::start();
    let b = Mosquitto::start();
    let work = tempfile::tempdir().unwrap();
    let id = "failover-agent";
    let mut on_a = watch_registrations(a.addr(), "a").await;
    let mut on_b = watch_registrations(b.addr(), "b").await;

    let agent = std::process::Command::new(BRAMBLE)
        .args(["__agent", "--agent-id", id, "--attribute", "room=lab"])
        .arg("--broker")
        .arg(both(&a, &b).to_string())
        .arg("--work-dir")
        .arg(work.path().join(id))
        .arg("--run-as")
        .arg(bramble_agent::tasks::user::current_user_name())
        .env("BRAMBLE_LOG", "warn")
        .spawn()
        .unwrap();
    let _agent = support::AgentProcess(agent);
    assert!(
        registration(&mut on_a, id, Duration::from_secs(20)).await,
        "the agent registers on A, the first broker"
    );

    // No master acknowledges it, so the agent registers on every new connection: B sees it.
    a.kill9();
    let killed = tokio::time::Instant::now();
    assert!(
        registration(&mut on_b, id, FAILOVER_WITHIN).await,
        "the agent registers on B within {FAILOVER_WITHIN:?} of A's death"
    );
    let took = killed.elapsed();
    assert!(took < FAILOVER_WITHIN, "failover took {took:?}");
}

#[tokio::test]
async fn one_shot_queries_try_the_brokers_in_order_until_one_answers() {
    let dead = BrokerAddr::new("127.0.0.1", support::free_port());
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    bramble::broker::start(&bramble::broker::BrokerConfig::small(listen)).unwrap();
    let live = BrokerAddr::new("127.0.0.1", port);
    let list = Brokers::new(vec![dead.clone(), live]).unwrap();
    let second = Duration::from_secs(5);

    bramble::mqtt::publish_once(&list, "failover/once", b"x".to_vec(), second)
        .await
        .expect("the second broker takes the publish");
    bramble::mqtt::retained(&list, &["failover/#".to_owned()], second, |_, _| {})
        .await
        .expect("the second broker answers the query");

    let err = bramble::mqtt::retained(&dead, &["failover/#".to_owned()], second, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
}
