//! `bramble agents` at a size the retained topics cannot carry: 150 real agents (in-process
//! drivers) on the embedded broker, which hands a new subscriber about 100 retained messages. The
//! CLI asks the master instead (a signed status query, answered page by page) and lists every
//! agent; and the dashboard, in a headless browser, shows them a page of 100 at a time.

use std::time::Duration;

use bramble::cluster::{ClusterBroker, LocalCluster};
use bramble::web;

mod support;
use support::{
    bramble_cli, broker_url, chromium, cluster_options, free_port, plain_agents, runtime,
};

const AGENTS: usize = 150;

#[test]
#[ignore = "starts 150 agents (their work directories and cgroups) and chromium"]
fn bramble_agents_lists_every_agent_of_a_cluster_larger_than_the_brokers_retained_limit() {
    runtime().block_on(async {
        let work = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..AGENTS).map(|i| format!("pi{i:03}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let mut options = cluster_options(broker, work.path(), plain_agents(&ids));
        options.warm_spares = 0;
        let mut cluster = LocalCluster::start(options).unwrap();
        tokio::time::timeout(Duration::from_secs(60), cluster.wait_for_agents(AGENTS))
            .await
            .expect("every agent registers");

        // What the broker hands over of the retained topics falls short.
        let retained = bramble::query::collect(&cluster.broker, Duration::from_secs(5))
            .await
            .unwrap();
        eprintln!(
            "the retained topics show {} agents",
            retained.agents().len()
        );

        let url = broker_url(&cluster.broker);
        let agents = async |args: &[&str]| {
            let mut all = vec!["agents", "--broker", &url];
            all.extend_from_slice(args);
            let out = bramble_cli(&all).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let ids_of = |json: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|a| a["agent_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut listed = ids_of(&agents(&["--json"]).await);
        listed.sort_unstable();
        assert_eq!(listed, ids, "every agent, once");

        // Filters and pages.
        assert_eq!(
            ids_of(&agents(&["--json", "--agent", "pi007"]).await),
            ["pi007"]
        );
        assert_eq!(
            ids_of(&agents(&["--json", "--state", "offline"]).await),
            Vec::<String>::new()
        );
        assert_eq!(
            ids_of(&agents(&["--json", "--offset", "145", "--limit", "10"]).await),
            ["pi145", "pi146", "pi147", "pi148", "pi149"]
        );
        let table = agents(&["--limit", "3"]).await;
        assert!(
            table.contains("pi002") && !table.contains("pi003"),
            "{table}"
        );
        assert!(table.ends_with("… and 147 more (--offset 3)\n"), "{table}");

        // The dashboard renders a page of the agents, and says how many there are.
        let listener = web::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(web::serve(
            listener,
            web::routes(cluster.web.clone()),
            std::future::pending(),
        ));
        let dom = tokio::task::spawn_blocking(move || {
            let profile = tempfile::tempdir().unwrap();
            chromium(
                profile.path(),
                &[
                    "--dump-dom".into(),
                    "--virtual-time-budget=5000".into(),
                    format!("http://{addr}/?once"),
                ],
            )
        })
        .await
        .unwrap();
        let html = String::from_utf8_lossy(&dom.stdout);
        assert!(
            html.contains("data-ready=\"true\""),
            "the page rendered: {html}"
        );
        assert_eq!(
            html.matches("data-agent=\"").count(),
            100,
            "one page of cards"
        );
        assert!(html.contains("1–100 of 150"), "the pager: {html}");
        cluster.stop().await;
    });
}
