//! Artifacts through the master: its HTTP server serves only the plain files of its artifact
//! directory, and a framework's task that names an artifact served there is fetched by a real agent
//! and runs to FINISHED (embedded broker, master, agent, SDK scheduler).

use std::path::Path;
use std::time::Duration;

use bramble::cluster::{AgentSpec, ClusterBroker, LocalCluster};
use bramble::demo::scheduler_config;
use bramble::http::Routes;
use bramble_proto::{ArtifactInfo, Offer, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};
use bramble_sdk::{Resources, TaskState};

mod support;
use support::{cluster_options, runtime};

/// Starts the master's artifact server on a free loopback port; returns its address.
async fn serve_artifacts(dir: &Path) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Routes::new().artifacts(dir).build();
    tokio::spawn(bramble::web::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

#[test]
fn the_artifact_server_serves_plain_files_and_refuses_path_traversal() {
    runtime().block_on(async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("artifacts");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tool"), b"hello").unwrap();
        std::fs::write(dir.join(".hidden"), b"no").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(root.path().join("secret"), b"top secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("link")).unwrap();
        let addr = serve_artifacts(&dir).await;

        let (status, text) = support::raw(addr, "GET", "/artifacts/tool", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 5\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");

        for path in [
            "/artifacts/../secret",
            "/artifacts/..%2Fsecret",
            "/artifacts/%2E%2E%2Fsecret",
            "/artifacts/..%5Csecret",
            "/artifacts/sub/../../secret",
            "/artifacts/..",
            "/artifacts/.hidden",
            "/artifacts/sub",
            "/artifacts/link",
            "/artifacts/missing",
            "/secret",
        ] {
            let (status, text) = support::raw(addr, "GET", path, None).await;
            assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
            assert!(!text.contains("top secret"), "{path}");
        }
    });
}

/// Launches one task on the first offer and stops when it ends.
struct OneTask {
    task: Option<TaskInfo>,
    end: Option<StatusUpdate>,
}

impl Scheduler for OneTask {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            match self.task.take() {
                Some(task) => driver.launch(offer.offer_id, vec![task]).unwrap(),
                None => driver.decline(vec![offer.offer_id], Some(60)).unwrap(),
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        if update.state.is_terminal() && self.end.is_none() {
            self.end = Some(update);
            driver.stop();
        }
    }
}

#[test]
fn a_framework_task_runs_an_artifact_served_by_the_master_to_finished() {
    runtime().block_on(async {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("artifacts");
        std::fs::create_dir(&dir).unwrap();
        let script = b"#!/bin/sh\n[ \"$1\" = go ] && [ -x ./job.sh ]\n";
        std::fs::write(dir.join("job.sh"), script).unwrap();
        let sha256 = {
            use sha2::Digest;
            sha2::Sha256::digest(script).into()
        };
        let http = serve_artifacts(&dir).await;

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{port}").parse().unwrap());
        let agents = vec![AgentSpec {
            id: "art-1".into(),
            attributes: vec![],
            capacity: Resources::new(1000, 256, 0),
        }];
        let mut cluster =
            LocalCluster::start(cluster_options(broker, work.path(), agents)).unwrap();
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(1))
            .await
            .expect("the agent registers");

        // The variant for this machine's arch wins over the (wrong) default.
        let artifact =
            ArtifactInfo::new("job.sh", &format!("http://{http}/artifacts/nope"), [0; 32])
                .variant(
                    std::env::consts::ARCH,
                    &format!("http://{http}/artifacts/job.sh"),
                    sha256,
                )
                .executable();
        let task = TaskInfo::new("job", &["./job.sh", "go"], Resources::new(100, 32, 0))
            .with_artifact(artifact);
        let one = OneTask {
            task: Some(task),
            end: None,
        };
        let run = scheduler::run(scheduler_config(&cluster.broker, "art", "art"), one);
        let one = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the task ends within a minute")
            .unwrap();
        let end = one.end.expect("the task ended");
        assert_eq!(end.state, TaskState::Finished, "{}", end.message);
        cluster.stop().await;
    });
}
