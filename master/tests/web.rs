//! The web dashboard and `/metrics` against a running cluster (embedded broker, master, agents in
//! process): the metrics text and its format, the event stream's snapshot and deltas, and (ignored
//! unless Chromium is installed) the page in a headless browser.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bramble::cluster::{ClusterBroker, LocalCluster};
use bramble::web;
use serde_json::Value;

mod support;
use support::{
    bramble_cli, broker_url, chromium, cluster_options, free_port, kill_processes_below,
    plain_agents, runtime, BRAMBLE,
};
/// A cluster of agents `a` and `b`, and its dashboard on a free port (returned).
async fn start(work: &Path) -> (LocalCluster, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let agents = plain_agents(&["a", "b"]);
    let mut cluster = LocalCluster::start(cluster_options(broker, work, agents)).unwrap();
    let listener = web::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(web::serve(
        listener,
        web::routes(cluster.web.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(2))
        .await
        .expect("2 agents register");
    (cluster, addr, stop)
}

/// `GET path` with a plain HTTP/1.0 client: (status line and headers, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Parses the Prometheus text format strictly: every sample belongs to a family with HELP and TYPE
/// lines before it and reads `name{labels} value`. Returns `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name doc");
            assert!(!doc.is_empty(), "{line}");
            help.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(name.starts_with("bramble_"), "{line}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(help.contains(family), "no HELP before {line}");
        assert!(types.contains_key(family), "no TYPE before {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (head, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.contains(" 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("text/plain; version=0.0.4"),
        "{head}"
    );
    parse_metrics(&body)
}

/// Scrapes until `cond` holds (or panics after 30 s).
async fn metrics_until(
    addr: SocketAddr,
    what: &str,
    cond: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(addr).await;
        if cond(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {m:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `bramble run -- ARGS` against the cluster, to its end.
async fn bramble_run(cluster: &LocalCluster, args: &[&str]) -> std::process::Output {
    let url = broker_url(&cluster.broker);
    let run = [
        "run", "--broker", &url, "--cpus", "0.25", "--mem", "16", "--",
    ];
    bramble_cli(&[&run[..], args].concat()).await
}

#[test]
fn metrics_count_the_online_agents_and_the_offer_and_task_counters_move_after_a_launch() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (mut cluster, addr, stop) = start(work.path()).await;
        let before = metrics_until(addr, "2 agents online", |m| {
            m.get("bramble_agents{state=\"online\"}") == Some(&2.0)
        })
        .await;
        assert_eq!(before["bramble_agents{state=\"offline\"}"], 0.0);
        assert_eq!(before["bramble_tasks_launched_total"], 0.0);
        assert_eq!(before["bramble_cpu_millis{kind=\"total\"}"], 2000.0);
        assert_eq!(
            before["bramble_messages_dropped_total{reason=\"malformed\"}"],
            0.0
        );
        assert!(
            before.contains_key("bramble_allocation_round_duration_seconds_bucket{le=\"+Inf\"}")
        );

        let out = bramble_run(&cluster, &["/bin/true"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let after = metrics_until(addr, "the launch counted", |m| {
            m["bramble_tasks{state=\"finished\"}"] >= 1.0
        })
        .await;
        assert_eq!(after["bramble_tasks_launched_total"], 1.0);
        assert!(after["bramble_offers_made_total"] >= 1.0);
        assert!(after["bramble_offers_accepted_total"] >= 1.0);
        assert!(
            after["bramble_status_updates_total"] >= 3.0,
            "starting, running, finished"
        );
        let rounds = after["bramble_allocation_round_duration_seconds_count"];
        assert!(rounds >= 1.0);
        assert_eq!(
            after["bramble_allocation_round_duration_seconds_bucket{le=\"+Inf\"}"],
            rounds
        );
        assert!(after["bramble_allocation_rounds_total"] >= rounds);
        assert_eq!(after["bramble_agents{state=\"online\"}"], 2.0);

        let _ = stop.send(());
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
}

/// Reads the event stream: (event name, data JSON) pairs, until `done` says so.
fn read_events(
    reader: &mut impl BufRead,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut event = String::from("message");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        let l = line.trim_end();
        if let Some(name) = l.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = l.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            let stop = done(&event, &v);
            out.push((std::mem::replace(&mut event, "message".into()), v));
            if stop {
                return out;
            }
        }
    }
}

#[test]
fn the_event_stream_starts_with_a_snapshot_of_the_status_topics_then_sends_changes() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (cluster, addr, stop) = start(work.path()).await;
        // The agents' topics may come just after they registered.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while cluster
            .web
            .snapshot()
            .keys()
            .filter(|t| t.contains("/agent/"))
            .count()
            < 2
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(s, "GET /events HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut r = BufReader::new(s);
            let snapshot = read_events(&mut r, |e, _| e == "ready");
            tx.send(snapshot).unwrap();
            read_events(&mut r, |e, v| {
                e == "message"
                    && v["topic"].as_str().is_some_and(|t| t.contains("/task/"))
                    && v["payload"]["state"] == "finished"
            })
        });
        let snapshot = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(snapshot[0].0, "reset");
        let topics: BTreeMap<&str, &Value> = snapshot
            .iter()
            .filter(|(e, _)| e == "message")
            .map(|(_, v)| (v["topic"].as_str().unwrap(), &v["payload"]))
            .collect();
        assert_eq!(topics["bramble/v1/status/cluster"]["agents_online"], 2);
        assert_eq!(topics["bramble/v1/status/agent/a"]["state"], "online");
        assert_eq!(topics["bramble/v1/status/agent/b"]["agent_id"], "b");

        // A launch comes as deltas: the task's topic, up to finished.
        let out = bramble_run(&cluster, &["/bin/true"]).await;
        assert_eq!(out.status.code(), Some(0));
        let deltas = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert!(deltas.iter().any(|(_, v)| v["topic"]
            .as_str()
            .is_some_and(|t| t.contains("/framework/"))));

        let _ = stop.send(());
        let mut cluster = cluster;
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
}

#[test]
#[ignore = "needs chromium"]
fn the_page_in_a_headless_browser_shows_the_agents_and_a_running_task() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (mut cluster, addr, stop) = start(work.path()).await;
        let url = broker_url(&cluster.broker);
        let mut run = Command::new(BRAMBLE)
            .args(["run", "--broker", &url, "--cpus", "0.5", "--mem", "64"])
            .args(["--", "/bin/sleep", "30"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let task_id = format!("run-{}", run.id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let running = cluster
                .web
                .snapshot()
                .values()
                .any(|v| v["task_id"] == task_id.as_str() && v["state"] == "running");
            if running {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the task runs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let page = format!("http://{addr}/?once");
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        let (dom, screenshot) = tokio::task::spawn_blocking({
            let shot = shot.clone();
            move || {
                let profile = tempfile::tempdir().unwrap();
                let budget = "--virtual-time-budget=5000".to_owned();
                let dom = chromium(
                    profile.path(),
                    &["--dump-dom".into(), budget.clone(), page.clone()],
                );
                let profile = tempfile::tempdir().unwrap();
                let screenshot = chromium(
                    profile.path(),
                    &[
                        format!("--screenshot={}", shot.display()),
                        "--window-size=1280,900".into(),
                        budget,
                        page,
                    ],
                );
                (dom, screenshot)
            }
        })
        .await
        .unwrap();
        assert!(
            dom.status.success(),
            "{}",
            String::from_utf8_lossy(&dom.stderr)
        );
        let html = String::from_utf8_lossy(&dom.stdout);
        assert!(html.contains("<title>Bramble</title>"), "{html}");
        assert!(
            html.contains("data-ready=\"true\""),
            "the page rendered: {html}"
        );
        for needle in [
            "data-agent=\"a\"",
            "data-agent=\"b\"",
            &format!("data-task=\"{task_id}\""),
            "state running\">running<",
            "bramble-run",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        assert!(
            screenshot.status.success(),
            "{}",
            String::from_utf8_lossy(&screenshot.stderr)
        );
        let png = std::fs::read(&shot).expect("the screenshot is saved");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        assert!(
            png.len() > 20_000,
            "a non-trivial screenshot: {} bytes",
            png.len()
        );

        let _ = run.kill();
        let _ = run.wait();
        let _ = stop.send(());
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
    kill_processes_below(work.path());
}
