//! The sensor framework end to end: its scheduler through the SDK driver, a real broker, a
//! scripted master with one board that has the sensor and one that has not, and the real
//! `bramble-sensor executor` publishing readings and summaries.

#[path = "../../sdk/tests/support/mod.rs"]
mod support;

use bramble_sdk::messages::{message_topic, FrameworkMessage};
use bramble_sdk::protocol::{Call, Register};
use bramble_sdk::scheduler::{run_until, SchedulerConfig};
use bramble_sensor::message::{Reading, Summary};
use bramble_sensor::{SensorOptions, SensorScheduler};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use support::{board, serve_cluster, start_broker, Master, WAIT};

#[tokio::test]
async fn a_reader_runs_only_on_the_board_with_the_sensor_and_publishes_readings_and_summaries() {
    let port = start_broker();
    let master = Master::connect(port).await;

    // A dashboard: readings from every board, and the readers' messages to their scheduler.
    let (watch, mut watch_loop) =
        AsyncClient::new(MqttOptions::new("dashboard", "127.0.0.1", port), 16);
    watch
        .subscribe("bramble/v1/sensor/+/reading", QoS::AtMostOnce)
        .await
        .unwrap();
    watch
        .subscribe(message_topic("sensor"), QoS::AtLeastOnce)
        .await
        .unwrap();

    let exe = env!("CARGO_BIN_EXE_bramble-sensor");
    let mut opts = SensorOptions::new(vec![exe.into(), "executor".into()]);
    opts.source = "simulated:1".into();
    opts.interval_ms = 20;
    opts.summary_every = 5;
    let config = SchedulerConfig {
        brokers: bramble_sdk::broker::BrokerAddr::new("127.0.0.1", port).into(),
        client_name: "sensor".into(),
        registration: Register::new("sensor"),
        credential: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sched = tokio::spawn(run_until(
        config,
        SensorScheduler::new(opts).unwrap(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let cluster = tokio::spawn(async move {
        let mut master = master;
        let boards = [
            board("plain", 4000, 4096, &[]),
            board("bme", 4000, 4096, &[("sensor", "bme280")]),
        ];
        serve_cluster(&mut master, port, "sensor", &boards, exe).await
    });

    let (mut reading, mut summary) = (None, None);
    tokio::time::timeout(WAIT, async {
        while reading.is_none() || summary.is_none() {
            if let Ok(MqttEvent::Incoming(Packet::Publish(p))) = watch_loop.poll().await {
                if p.topic.ends_with("/reading") {
                    reading = serde_json::from_slice::<Reading>(&p.payload).ok();
                } else if let Ok(m) = FrameworkMessage::decode(&p.payload) {
                    summary = Summary::decode(&m.data);
                }
            }
        }
    })
    .await
    .expect("a reading and a summary came in time");
    let reading = reading.unwrap();
    assert_eq!(reading.agent_id, "bme");
    assert_eq!(reading.source, "simulated");
    assert!((40.0..50.0).contains(&reading.celsius), "{reading:?}");
    assert!(summary.unwrap().readings >= 5);

    stop_tx.send(()).unwrap();
    let log = tokio::time::timeout(WAIT, cluster)
        .await
        .expect("the framework tore down")
        .unwrap();
    let sensor = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned")
        .unwrap()
        .unwrap();
    assert_eq!(
        sensor.placements().keys().collect::<Vec<_>>(),
        vec!["bme"],
        "one reader, on the board with the sensor"
    );
    let accepts = log
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Accept(_)))
        .count();
    assert_eq!(accepts, 1);
    assert!(log.calls.iter().any(
        |c| matches!(c, Call::Decline(d) if d.refuse_seconds == Some(3600) && d.offer_ids.len() == 1)
    ));
}
