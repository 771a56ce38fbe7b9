//! `bramble broker-config mosquitto` against real Mosquitto: with the generated password file,
//! ACL and configuration, anonymous and wrong logins are refused, a principal's own login is
//! accepted, and an agent can neither read another agent's commands nor speak for it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_nostd_core::auth::Principal;
use bramble::credentials::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

mod support;
use support::{Mosquitto, BRAMBLE};

fn bramble(args: &[&str], state: &Path) {
    let out = Command::new(BRAMBLE)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("the bramble binary runs");
    assert!(
        out.status.success(),
        "bramble {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn login(state: &Path, username: &str) -> (String, String) {
    let store = Store::load(&Store::path_in(state)).unwrap();
    let principal = Principal::from_username(username).unwrap();
    let login = store.credential(&principal).unwrap().login();
    (login.username, login.password.expose().to_owned())
}

/// A connected client whose incoming publishes' topics arrive on `topics`; `None` when refused.
async fn connect(
    id: &str,
    port: u16,
    login: Option<&(String, String)>,
) -> Option<(AsyncClient, mpsc::UnboundedReceiver<String>)> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    if !support::connack_accepted(&mut eventloop).await {
        return None;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.topic);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send("<suback>".into());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Some((client, rx))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within 10 s")
        .expect("the client is connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn mosquitto_with_the_generated_files_lets_each_principal_reach_only_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for name in ["pi", "other"] {
        let out = dir.path().join(format!("{name}.credential"));
        bramble(
            &[
                "credentials",
                "add",
                "agent",
                name,
                "--out",
                out.to_str().unwrap(),
            ],
            &state,
        );
    }
    let conf_dir = dir.path().join("mosquitto");
    bramble(
        &[
            "broker-config",
            "mosquitto",
            "--out",
            conf_dir.to_str().unwrap(),
        ],
        &state,
    );
    let snippet = std::fs::read_to_string(conf_dir.join("mosquitto.conf")).unwrap();
    // Run as root in CI, Mosquitto would drop to its own user, which cannot read the 0600 files.
    let broker = Mosquitto::start_with(&format!("{snippet}user root\n"));
    let port = broker.port;

    let pi = login(&state, "agent-pi");
    let master = login(&state, "master-cluster");
    assert!(connect("anon", port, None).await.is_none(), "anonymous");
    let wrong = (pi.0.clone(), "0123456789abcdef0123456789abcdef".to_owned());
    assert!(connect("bramble-agent-pi", port, Some(&wrong))
        .await
        .is_none());

    let (agent, mut agent_rx) = connect("bramble-agent-pi", port, Some(&pi))
        .await
        .expect("agent-pi logs in");
    let (master_client, mut master_rx) = connect("bramble-master-m", port, Some(&master))
        .await
        .expect("master-cluster logs in");

    // Reading: the agent subscribes to its own command topic and another agent's.
    for topic in ["bramble/v1/agent/other/cmd", "bramble/v1/agent/pi/cmd"] {
        agent.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        assert_eq!(next(&mut agent_rx).await, "<suback>");
    }
    master_client
        .subscribe("bramble/v1/agent/+/register", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut master_rx).await, "<suback>");
    for topic in ["bramble/v1/agent/other/cmd", "bramble/v1/agent/pi/cmd"] {
        master_client
            .publish(topic, QoS::AtLeastOnce, false, vec![1])
            .await
            .unwrap();
    }
    // In order: had the other agent's command come through, it would have come first.
    assert_eq!(next(&mut agent_rx).await, "bramble/v1/agent/pi/cmd");

    // Writing: the agent speaks for the other board, then for itself.
    for topic in [
        "bramble/v1/agent/other/register",
        "bramble/v1/agent/pi/register",
    ] {
        agent
            .publish(topic, QoS::AtLeastOnce, false, vec![2])
            .await
            .unwrap();
    }
    assert_eq!(next(&mut master_rx).await, "bramble/v1/agent/pi/register");
}
