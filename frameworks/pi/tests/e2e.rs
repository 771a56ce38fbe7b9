//! The pi framework end to end: its scheduler through the SDK driver, a real broker, a scripted
//! master, and the real `bramble-pi executor` processes sending their samples back.

#[path = "../../sdk/tests/support/mod.rs"]
mod support;

use bramble_pi::{PiOptions, PiScheduler};
use bramble_sdk::protocol::{Call, Register};
use bramble_sdk::scheduler::{run, SchedulerConfig};
use support::{board, serve_cluster, start_broker, Master, WAIT};

#[tokio::test]
async fn the_pi_job_runs_its_executors_over_a_real_broker_and_estimates_pi() {
    let port = start_broker();
    let mut master = Master::connect(port).await;
    let exe = env!("CARGO_BIN_EXE_bramble-pi");
    let mut opts = PiOptions::new(vec![exe.into(), "executor".into()]);
    opts.tasks = 4;
    opts.samples = 200_000;
    let config = SchedulerConfig {
        brokers: bramble_sdk::broker::BrokerAddr::new("127.0.0.1", port).into(),
        client_name: "pi".into(),
        registration: Register::new("pi"),
        credential: None,
    };
    let sched = tokio::spawn(run(config, PiScheduler::new(opts).unwrap()));
    let boards = [board("small", 500, 64, &[]), board("big", 4000, 4096, &[])];
    let log = serve_cluster(&mut master, port, "pi", &boards, exe).await;

    let pi = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned")
        .unwrap()
        .unwrap();
    assert!(pi.is_complete(), "progress {:?}", pi.progress());
    assert_eq!(pi.samples().1, 800_000);
    let estimate = pi.estimate().unwrap();
    assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
    // Two tasks fit the small board, the other two go to the big one; then offers are suppressed.
    let accepts: Vec<usize> = log
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Accept(a) => Some(a.tasks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(accepts, vec![2, 2]);
    assert!(log.calls.contains(&Call::Suppress));
    assert_eq!(log.exits.len(), 4);
    assert!(
        log.exits.iter().all(|(_, _, code)| *code == Some(0)),
        "{:?}",
        log.exits
    );
}
