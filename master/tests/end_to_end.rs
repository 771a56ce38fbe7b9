//! End to end over MQTT: the embedded broker (or Mosquitto), the master, real agents running real
//! processes, and the pi, wordcount and sensor frameworks through the SDK.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::demo::{executor, scheduler_config, Watched};
use bramble::driver::BrokerAddr;
use bramble_pi::{PiOptions, PiScheduler};
use bramble_sdk::scheduler;
use bramble_sensor::{SensorOptions, SensorScheduler};
use bramble_wordcount::{WordcountOptions, WordcountScheduler};

mod support;
use support::{
    cluster_options, embedded_cluster, free_port, kill_processes_below, runtime, AgentProcess,
    Mosquitto, BRAMBLE,
};

/// A text with a known word count: a few words repeated by known amounts, over several chunks.
fn corpus() -> (String, BTreeMap<String, u64>) {
    let words = [
        "raspberry",
        "bramble",
        "mesos",
        "offer",
        "drf",
        "sensor",
        "élan",
    ];
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..4000usize {
        let w = words[(i * 7 + i / 13) % words.len()];
        text.push_str(w);
        text.push(if i % 11 == 10 { '\n' } else { ' ' });
        if i % 5 == 0 {
            text.push_str("Offer, ");
            *expected.entry("offer".to_owned()).or_insert(0) += 1;
        }
        *expected.entry(w.to_owned()).or_insert(0) += 1;
    }
    (text, expected)
}

/// Runs pi and wordcount at once on a cluster and checks both results.
async fn pi_and_wordcount(broker: &BrokerAddr, work: &Path) {
    let mut pi_options = PiOptions::new(executor(Path::new(BRAMBLE), "pi"));
    pi_options.tasks = 6;
    let pi = PiScheduler::new(pi_options).unwrap();
    let (text, expected) = corpus();
    let input = work.join("corpus.txt");
    std::fs::write(&input, &text).unwrap();
    let wc_options = WordcountOptions::new(executor(Path::new(BRAMBLE), "wordcount"));
    let wc = WordcountScheduler::from_file(wc_options, &input).unwrap();
    assert!(wc.chunk_count() >= 2, "the corpus spans several map tasks");

    let pi_run = scheduler::run(scheduler_config(broker, "e2e-pi", "pi"), pi);
    let wc_run = scheduler::run(scheduler_config(broker, "e2e-wc", "wordcount"), wc);
    let both = async { tokio::join!(pi_run, wc_run) };
    let (pi, wc) = tokio::time::timeout(Duration::from_secs(120), both)
        .await
        .expect("both frameworks finish within 2 minutes");
    let (pi, wc) = (pi.unwrap(), wc.unwrap());

    assert_eq!(pi.failure(), None);
    assert!(pi.is_complete());
    assert_eq!(pi.progress(), (6, 6), "every pi task finished");
    let estimate = pi.estimate().unwrap();
    assert!(
        (estimate - std::f64::consts::PI).abs() < 0.01,
        "π ≈ {estimate}"
    );
    assert_eq!(pi.samples().1, 6 * 2_000_000);

    assert_eq!(wc.failure(), None);
    assert!(wc.is_complete());
    let (done, total) = wc.progress();
    assert_eq!(done, total, "every map task finished");
    let counts: BTreeMap<String, u64> = wc.counts().iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(counts, expected);
}

async fn cluster_runs_pi_and_wordcount(broker: ClusterBroker) {
    let work = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(cluster_options(
        broker,
        work.path(),
        ClusterOptions::demo_agents(),
    ))
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(3))
        .await
        .expect("3 agents register");
    pi_and_wordcount(&cluster.broker, work.path()).await;
    assert!(
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await,
        "no task is left running"
    );
    cluster.stop().await;
}

#[test]
fn three_agents_run_pi_and_wordcount_at_once_through_the_embedded_broker() {
    runtime().block_on(cluster_runs_pi_and_wordcount(ClusterBroker::Embedded(
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    )));
}

#[test]
#[ignore = "needs mosquitto"]
fn three_agents_run_pi_and_wordcount_at_once_through_mosquitto() {
    let mosquitto = Mosquitto::start();
    runtime().block_on(cluster_runs_pi_and_wordcount(ClusterBroker::External(
        mosquitto.addr(),
    )));
}

#[test]
fn a_killed_agent_is_noticed_and_the_sensor_reader_is_replaced_on_another_board() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let plain = vec![AgentSpec {
            id: "plain".into(),
            attributes: vec![],
            capacity: agent_nostd_core::Resources::new(1000, 512, 1024),
        }];
        let mut cluster = LocalCluster::start(cluster_options(broker, work.path(), plain)).unwrap();
        let mut a = Some(AgentProcess::start(
            "sensor-a",
            "sensor=bme280",
            &cluster.broker,
            work.path(),
        ));
        let mut b = Some(AgentProcess::start(
            "sensor-b",
            "sensor=bme280",
            &cluster.broker,
            work.path(),
        ));
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(3))
            .await
            .expect("3 agents register");

        let (placed_tx, mut placed) = tokio::sync::watch::channel(Vec::<String>::new());
        let mut opts = SensorOptions::new(executor(Path::new(BRAMBLE), "sensor"));
        opts.interval_ms = 200;
        opts.source = "simulated:7".into();
        let sensor = Watched::new(
            SensorScheduler::new(opts).unwrap(),
            move |s: &SensorScheduler| {
                let agents: Vec<String> = s.placements().keys().cloned().collect();
                placed_tx.send_if_modified(|p| {
                    let changed = *p != agents;
                    *p = agents.clone();
                    changed
                });
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = scheduler_config(&cluster.broker, "e2e-sensor", "sensor");
        let run = tokio::spawn(scheduler::run_until(config, sensor, async {
            let _ = stop_rx.await;
        }));

        let both = tokio::time::timeout(Duration::from_secs(30), placed.wait_for(|p| p.len() == 2))
            .await
            .expect("a reader on each sensor board")
            .unwrap()
            .clone();
        assert_eq!(both, ["sensor-a", "sensor-b"], "never on the plain board");

        // sensor-a dies without a word: the broker publishes its last will.
        drop(a.take());
        let moved = tokio::time::timeout(
            Duration::from_secs(30),
            placed.wait_for(|p| p.as_slice() == ["sensor-b"]),
        )
        .await
        .map(|r| r.is_ok());
        assert_eq!(
            moved,
            Ok(true),
            "the reader on the lost board is dropped: {:?}",
            *placed.borrow()
        );

        // A replacement board with the sensor comes up: the reader is placed there.
        let _c = AgentProcess::start("sensor-c", "sensor=bme280", &cluster.broker, work.path());
        tokio::time::timeout(
            Duration::from_secs(30),
            placed.wait_for(|p| p.as_slice() == ["sensor-b", "sensor-c"]),
        )
        .await
        .expect("the reader is re-placed on the new sensor board")
        .unwrap();

        let _ = stop_tx.send(());
        let sensor = run.await.unwrap().unwrap();
        assert_eq!(sensor.inner.failure(), None);
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        drop(b.take());
        cluster.stop().await;
    });
    kill_processes_below(work.path());
}

#[test]
fn garbage_on_every_bramble_topic_is_counted_and_dropped_and_the_cluster_keeps_working() {
    runtime().block_on(async {
        let work = tempfile::tempdir().unwrap();
        let mut cluster = embedded_cluster(work.path(), ClusterOptions::demo_agents()).await;

        let mut mqtt =
            rumqttc::MqttOptions::new("vandal", cluster.broker.host.clone(), cluster.broker.port);
        mqtt.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 256);
        let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let mut topics = vec!["bramble/v1/master/hello".to_owned()];
        for agent in ["pi-kitchen", "pi-garage", "pi-attic", "nobody"] {
            for kind in ["register", "report", "status", "pong", "cmd"] {
                topics.push(format!("bramble/v1/agent/{agent}/{kind}"));
            }
        }
        for kind in ["register", "call", "event"] {
            topics.push(format!("bramble/v1/framework/{kind}/vandal"));
        }
        let payloads: [&[u8]; 5] = [
            b"",
            b"\x01",
            b"\x01\xff\xff\xff",
            b"\x07hello",
            b"{\"json\": true}",
        ];
        for topic in &topics {
            for payload in payloads {
                client
                    .publish(
                        topic.clone(),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload.to_vec(),
                    )
                    .await
                    .unwrap();
            }
        }
        let dropped = cluster
            .snapshots
            .wait_for(|s| s.stats.malformed + s.stats.unsupported_version >= 20);
        tokio::time::timeout(Duration::from_secs(20), dropped)
            .await
            .expect("the master counts what it dropped")
            .unwrap();
        poller.abort();

        // Everyone kept working: all three agents are still there and a job runs to its end.
        assert_eq!(cluster.snapshots.borrow().agents, 3);
        let mut pi_options = PiOptions::new(executor(Path::new(BRAMBLE), "pi"));
        pi_options.tasks = 3;
        pi_options.samples = 200_000;
        let pi = PiScheduler::new(pi_options).unwrap();
        let pi = tokio::time::timeout(
            Duration::from_secs(60),
            scheduler::run(scheduler_config(&cluster.broker, "after-garbage", "pi"), pi),
        )
        .await
        .expect("pi finishes after the garbage")
        .unwrap();
        assert!(pi.is_complete());
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
}
