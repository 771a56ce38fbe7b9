//! The wordcount framework end to end: its scheduler through the SDK driver, a real broker, a
//! scripted master, and the real `bramble-wordcount executor` processes fetching their chunks and
//! sending their counts back.

#[path = "../../sdk/tests/support/mod.rs"]
mod support;

use bramble_sdk::protocol::Register;
use bramble_sdk::scheduler::{run, SchedulerConfig};
use bramble_wordcount::count::count_words;
use bramble_wordcount::{WordcountOptions, WordcountScheduler};
use support::{board, serve_cluster, start_broker, Master, WAIT};

#[tokio::test]
async fn a_file_is_counted_by_map_tasks_over_a_real_broker_and_equals_a_direct_count() {
    let port = start_broker();
    let mut master = Master::connect(port).await;
    let exe = env!("CARGO_BIN_EXE_bramble-wordcount");
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!(
            "Line {i}: the Bramble cluster counts words, Wörter, {}\n",
            i % 7
        ));
    }
    let mut opts = WordcountOptions::new(vec![exe.into(), "executor".into()]);
    opts.chunk_bytes = 8 * 1024;
    let job = WordcountScheduler::new(opts, &text).unwrap();
    let chunks = job.chunk_count();
    assert!(chunks >= 8, "{chunks}");
    let config = SchedulerConfig {
        brokers: bramble_sdk::broker::BrokerAddr::new("127.0.0.1", port).into(),
        client_name: "wordcount".into(),
        registration: Register::new("wordcount"),
        credential: None,
    };
    let sched = tokio::spawn(run(config, job));
    let boards = [board("a", 4000, 4096, &[]), board("b", 4000, 4096, &[])];
    let log = serve_cluster(&mut master, port, "wordcount", &boards, exe).await;

    let job = tokio::time::timeout(WAIT, sched)
        .await
        .expect("the scheduler returned")
        .unwrap()
        .unwrap();
    assert!(job.is_complete(), "progress {:?}", job.progress());
    assert_eq!(job.counts(), &count_words(&text));
    assert_eq!(job.top(1)[0].1, 2000);
    assert_eq!(log.exits.len(), chunks);
    assert!(
        log.exits.iter().all(|(_, _, code)| *code == Some(0)),
        "{:?}",
        log.exits
    );
}
