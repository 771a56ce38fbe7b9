//! The embedded broker with credentials: anonymous and wrong logins are refused, a principal's
//! own login is accepted with its client id bound to its password, a principal cannot take
//! another's client id, bare or bound (so nobody kicks the master off the broker), and a running
//! broker accepts a principal added to the store afterwards.

use std::sync::Arc;
use std::time::Duration;

use agent_nostd_core::auth::{Principal, PrincipalKind};
use bramble::broker::{self, BrokerConfig};
use bramble::credentials::reload::Reloader;
use bramble::credentials::{Authenticator, Store};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};

mod support;

/// What became of one connection attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
}

fn options(client_id: &str, port: u16, login: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    o
}

/// Connects once: accepted on a successful ConnAck, refused on a refusal or a closed connection.
async fn attempt(client_id: &str, port: u16, login: Option<(&str, &str)>) -> Outcome {
    let (_client, mut eventloop) = AsyncClient::new(options(client_id, port, login), 10);
    if support::connack_accepted(&mut eventloop).await {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

struct Broker {
    port: u16,
    store: Store,
    auth: Arc<Authenticator>,
    _dir: tempfile::TempDir,
}

fn start_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
    for name in ["pi", "other"] {
        store
            .issue(Principal::new(PrincipalKind::Agent, name).unwrap(), false)
            .unwrap();
    }
    store.save().unwrap();
    let auth = Arc::new(Authenticator::new(&store));
    let port = support::free_port();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    broker::start(&BrokerConfig::small(listen).with_auth(Arc::clone(&auth))).unwrap();
    Broker {
        port,
        store,
        auth,
        _dir: dir,
    }
}

/// `base` bound to `password`, as a Bramble client with that login connects.
fn bound(base: &str, password: &str) -> String {
    bramble_mqtt::bound_client_id(base, &bramble_mqtt::Password::new(password))
}

fn login_of(store: &Store, username: &str) -> (String, String) {
    let principal = Principal::from_username(username).unwrap();
    let login = store.credential(&principal).unwrap().login();
    (login.username, login.password.expose().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_anonymous_and_wrong_logins_and_accepts_a_principals_own() {
    let b = start_broker();
    let (user, password) = login_of(&b.store, "agent-pi");
    let (_, other_password) = login_of(&b.store, "agent-other");
    let id = bound("bramble-agent-pi", &password);
    assert_eq!(attempt(&id, b.port, None).await, Outcome::Refused);
    assert_eq!(
        attempt(&id, b.port, Some((&user, "wrong"))).await,
        Outcome::Refused
    );
    assert_eq!(
        attempt(&id, b.port, Some((&user, &other_password))).await,
        Outcome::Refused
    );
    assert_eq!(
        attempt(&id, b.port, Some(("agent-nobody", &password))).await,
        Outcome::Refused
    );
    // rumqttd refuses a CONNECT without a login before it asks the handler: only the three
    // logins are counted.
    assert_eq!(b.auth.refused(), 3);
    assert_eq!(
        attempt(&id, b.port, Some((&user, &password))).await,
        Outcome::Accepted
    );
    assert_eq!(b.auth.refused(), 3);
    // The right login with the bare base id: refused (a client with a login binds its id).
    assert_eq!(
        attempt("bramble-agent-pi", b.port, Some((&user, &password))).await,
        Outcome::Refused
    );
    assert_eq!(b.auth.refused(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_cannot_take_the_masters_or_another_agents_client_id() {
    let b = start_broker();
    let (master_user, master_password) = login_of(&b.store, "master-cluster");
    let (user, password) = login_of(&b.store, "agent-pi");
    // The master is connected as bramble-master-m1, bound to its password.
    let master_id = bound("bramble-master-m1", &master_password);
    let (_master, mut master_loop) = AsyncClient::new(
        options(&master_id, b.port, Some((&master_user, &master_password))),
        10,
    );
    match master_loop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
            assert_eq!(ack.code, ConnectReturnCode::Success)
        }
        other => panic!("the master's connection: {other:?}"),
    }
    // An agent with a valid login tries the master's id and another agent's: bare, bound to its
    // own password, and (as if it had learnt it) the master's bound id itself.
    let ids = [
        "bramble-master-m1".to_owned(),
        bound("bramble-master-m1", &password),
        master_id.clone(),
        "bramble-agent-other".to_owned(),
        bound("bramble-agent-other", &password),
    ];
    for id in &ids {
        assert_eq!(
            attempt(id, b.port, Some((&user, &password))).await,
            Outcome::Refused,
            "{id}"
        );
    }
    assert_eq!(b.auth.refused(), ids.len() as u64);
    // The master's session was not taken over: its publish is still acknowledged.
    _master
        .try_publish("bramble/v1/x", rumqttc::QoS::AtLeastOnce, false, vec![1])
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match master_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the master's publish is acknowledged");
    assert!(acked.is_ok(), "the master was disconnected: {acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_added_to_the_store_can_log_in_once_the_store_is_reread() {
    let mut b = start_broker();
    let mut reloader = Reloader::new(b.store.path().to_owned(), Arc::clone(&b.auth));
    let fresh = Principal::new(PrincipalKind::Agent, "new").unwrap();
    let credential = b.store.issue(fresh, false).unwrap();
    b.store.save().unwrap();
    let login = credential.login();
    let id = bramble_mqtt::bound_client_id("bramble-agent-new", &login.password);
    let login = (login.username.as_str(), login.password.expose());
    assert_eq!(attempt(&id, b.port, Some(login)).await, Outcome::Refused);
    assert!(
        reloader.check().unwrap(),
        "the saved store is seen as changed"
    );
    assert_eq!(attempt(&id, b.port, Some(login)).await, Outcome::Accepted);
}
