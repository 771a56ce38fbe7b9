//! A burst of messages at the master, over the embedded broker, until the master has read 100,000
//! of them: it keeps reading, keeps making offers, and `/metrics` shows a loop that turns.
//!
//! Every message of the burst is a resource report frame from an agent the master has no session
//! with, so the master drops it and hints that agent to register (at most once a second each): the
//! burst loads the master's writing as well as its reading (before the outgoing stage, this
//! deadlocked the master within a second).
//! The burst client publishes as fast as it can; the broker drops what the master falls behind on
//! (rumqttd keeps a bounded log per subscription), so the client publishes more than the master
//! reads, until the master has read [`BURST`].

use std::collections::BTreeMap;
use std::time::Duration;

use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::frame::{encode_sealed, Binding, Direction};
use agent_nostd_core::topic::{self, AgentTopic};
use agent_nostd_core::wire::{AgentMsg, ResourceReport, MAX_UP_FRAME_LEN};
use agent_nostd_core::Resources;
use bramble::cluster::{ClusterBroker, LocalCluster};
use bramble::demo::scheduler_config;
use bramble::driver::BrokerAddr;
use bramble_sdk::protocol::{ErrorCode, Offer, OfferId, StatusUpdate};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};

mod support;
use support::{cluster_options, free_port, plain_agents, runtime};

/// How many messages of the burst the master must read.
const BURST: u64 = 100_000;

/// Declines every offer (to have it again in the next round) until it has seen `want` offer
/// events, then stops.
struct OfferCounter {
    want: usize,
    seen: usize,
}

impl Scheduler for OfferCounter {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        self.seen += 1;
        let ids: Vec<OfferId> = offers.iter().map(|o| o.offer_id).collect();
        if self.seen >= self.want {
            driver.stop();
        } else {
            let _ = driver.decline(ids, Some(0));
        }
    }

    fn status_update(&mut self, _: &mut SchedulerDriver, _: StatusUpdate) {}

    fn error(&mut self, _: &mut SchedulerDriver, code: ErrorCode, _: Option<OfferId>, m: &str) {
        panic!("the master refused a call: {code:?} {m}");
    }
}

/// Publishes resource reports (QoS 0) from 5,000 unknown agents in turn (so the requests to
/// re-register they earn are not duplicates) as fast as the client takes them,
/// until `stop` says so; returns how many.
async fn burst(broker: BrokerAddr, stop: tokio::sync::watch::Receiver<bool>) -> usize {
    let mut mqtt = rumqttc::MqttOptions::new("burst", broker.host, broker.port);
    mqtt.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 10_000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let report = AgentMsg::Report(ResourceReport {
        free: Resources::new(100, 100, 100),
        running_tasks: 0,
        soc_temp_decidegrees: agent_nostd_core::wire::NO_TEMPERATURE,
        throttled: 0,
    });
    // Genuine frames (the cluster takes the anonymous key) from boards that never registered:
    // the master cannot check them, drops them and hints each board to register.
    let frames: Vec<(String, Vec<u8>)> = (0..5_000)
        .map(|i| {
            let ghost = format!("ghost-{i}");
            let binding = Binding {
                direction: Direction::Up,
                agent_id: &ghost,
                boot: 1,
            };
            let mut buf = vec![0u8; MAX_UP_FRAME_LEN];
            let n =
                encode_sealed(&report, &MessageKey::anonymous(), &binding, 1, &mut buf).unwrap();
            buf.truncate(n);
            let topic = topic::agent(&ghost, AgentTopic::Report).as_str().to_owned();
            (topic, buf)
        })
        .collect();
    let mut sent = 0;
    while !*stop.borrow() {
        let (topic, frame) = &frames[sent % frames.len()];
        client
            .publish(
                topic.clone(),
                rumqttc::QoS::AtMostOnce,
                false,
                frame.clone(),
            )
            .await
            .unwrap();
        sent += 1;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), poller).await;
    sent
}

/// `/metrics` as `name{labels}` → value (the format itself is checked in `tests/web.rs`).
fn metrics(cluster: &LocalCluster) -> BTreeMap<String, f64> {
    cluster
        .web
        .render_metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// A framework registering as `client` gets `want` offer events within `within`.
async fn offered(broker: &BrokerAddr, client: &str, want: usize, within: Duration) {
    let counter = OfferCounter { want, seen: 0 };
    let run = scheduler::run(scheduler_config(broker, client, client), counter);
    let counter = tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| panic!("{client} got {want} offers within {within:?}"))
        .unwrap();
    assert!(counter.seen >= want);
}

#[test]
fn a_burst_of_100000_messages_read_by_the_master_does_not_stop_it_making_offers() {
    runtime().block_on(async {
        let work = tempfile::tempdir().unwrap();
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let agents = plain_agents(&["a", "b"]);
        let mut cluster =
            LocalCluster::start(cluster_options(broker, work.path(), agents)).unwrap();
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(2))
            .await
            .expect("2 agents register");
        let started = std::time::Instant::now();

        let (stop_burst, stop) = tokio::sync::watch::channel(false);
        let burst = tokio::spawn(burst(cluster.broker.clone(), stop));
        let reading = cluster
            .snapshots
            .wait_for(|s| s.stats.frames_dropped.total() >= 5_000);
        tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .expect("the master reads the burst")
            .unwrap();
        // During the burst: a framework registers and is offered the agents three rounds running,
        // and the loop is seen turning.
        offered(&cluster.broker, "during-burst", 3, Duration::from_secs(30)).await;
        let age = metrics(&cluster)["bramble_master_loop_last_turn_age_seconds"];
        assert!(
            age < 5.0,
            "during the burst, the master's loop turned {age} s ago"
        );
        let read_all = cluster
            .snapshots
            .wait_for(|s| s.stats.frames_dropped.total() >= BURST);
        tokio::time::timeout(Duration::from_secs(120), read_all)
            .await
            .expect("the master reads 100,000 messages of the burst")
            .unwrap();
        let burst_secs = started.elapsed().as_secs_f64();
        stop_burst.send_replace(true);
        let sent = tokio::time::timeout(Duration::from_secs(30), burst)
            .await
            .expect("the burst stops")
            .unwrap();
        // After it: another one is offered the agents too.
        offered(&cluster.broker, "after-burst", 1, Duration::from_secs(30)).await;

        let snapshot = cluster.snapshots.borrow().clone();
        let m = metrics(&cluster);
        let shed: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("bramble_master_messages_shed_total"))
            .map(|(_, v)| v)
            .sum();
        let read = snapshot.stats.frames_dropped.total();
        println!(
            "burst: the master read {read} reports in {burst_secs:.1} s ({:.0}/s) of {sent} \
             published; it received {} messages in all, published {} and shed {shed}",
            read as f64 / burst_secs,
            m["bramble_master_messages_received_total"],
            m["bramble_master_messages_published_total"],
        );
        let age = m["bramble_master_loop_last_turn_age_seconds"];
        assert!(age < 5.0, "the master's loop turned {age} s ago");
        assert!(m["bramble_master_messages_received_total"] >= BURST as f64);
        let depth = m["bramble_master_outgoing_queue_depth{queue=\"protocol\"}"];
        assert!(depth <= 16_384.0, "the outgoing queue holds {depth}");
        assert_eq!(snapshot.agents, 2, "both agents stayed reachable");
        cluster.stop().await;
    });
}
