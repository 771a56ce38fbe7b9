//! The artifact fetcher against a real HTTP server (axum on a loopback port): through the real agent
//! binary and a scripted master for whole tasks, and through [`Fetcher`] itself for the failures.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_nostd_core::wire::*;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bramble_agent::fetch::{to_hex, Fetcher};
use sha2::{Digest, Sha256};
use support::*;

/// A file server that counts the requests for each file.
#[derive(Clone, Default)]
struct Files {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Files {
    fn put(&self, name: &str, content: &[u8]) -> [u8; 32] {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_owned(), content.to_vec());
        Sha256::digest(content).into()
    }

    fn requests(&self, name: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Serves on a free loopback port; returns the base URL.
    async fn serve(&self) -> String {
        async fn get_file(
            State(files): State<Files>,
            UrlPath(name): UrlPath<String>,
        ) -> Result<Vec<u8>, StatusCode> {
            files.total.fetch_add(1, Ordering::SeqCst);
            *files
                .requests
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_insert(0) += 1;
            let content = files.files.lock().unwrap().get(&name).cloned();
            content.ok_or(StatusCode::NOT_FOUND)
        }
        let router = Router::new()
            .route("/files/:name", get(get_file))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/files")
    }
}

fn artifact(url: &str, sha256: [u8; 32], name: &str, executable: bool) -> Artifact {
    Artifact {
        url: heapless::String::try_from(url).unwrap(),
        sha256,
        executable,
        name: heapless::String::try_from(name).unwrap(),
    }
}

fn with_artifact(mut msg: MasterMsg, a: Artifact) -> MasterMsg {
    if let MasterMsg::RunTask(run) = &mut msg {
        run.artifacts.push(a).unwrap();
    }
    msg
}

const SCRIPT: &[u8] = b"#!/bin/sh\n[ -x ./run.sh ] && echo fetched > out.txt\n";

#[test]
fn a_task_runs_its_fetched_script_and_a_second_task_reuses_the_cached_copy() {
    runtime().block_on(async {
        let files = Files::default();
        let sha = files.put("run.sh", SCRIPT);
        let base = files.serve().await;
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = AgentProcess::start("fetch-1", port, work.path(), &[]);
        master.accept_registration("fetch-1", 1).await;

        let a = artifact(&format!("{base}/run.sh"), sha, "run.sh", true);
        for task in ["t1", "t2"] {
            let run = with_artifact(run_task(task, &["./run.sh"], 100, 32), a.clone());
            master.send("fetch-1", &run).await;
            let end = master
                .wait_state("fetch-1", task, TaskState::Finished, 20)
                .await;
            assert_eq!(end.reason, Reason::Exited { code: 0 }, "{task}");
        }
        assert_eq!(
            files.requests("run.sh"),
            1,
            "the second task used the cache"
        );
        let cached = work.path().join("cache").join(to_hex(&sha));
        assert_eq!(std::fs::read(cached).unwrap(), SCRIPT);
    });
}

#[test]
fn a_task_whose_artifact_has_the_wrong_hash_fails_with_the_mismatch_reason() {
    runtime().block_on(async {
        let files = Files::default();
        files.put("run.sh", SCRIPT);
        let base = files.serve().await;
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = AgentProcess::start("fetch-2", port, work.path(), &[]);
        master.accept_registration("fetch-2", 1).await;

        let a = artifact(&format!("{base}/run.sh"), [0xAB; 32], "run.sh", true);
        let run = with_artifact(run_task("t1", &["./run.sh"], 100, 32), a);
        master.send("fetch-2", &run).await;
        let end = master
            .wait_state("fetch-2", "t1", TaskState::Failed, 20)
            .await;
        assert_eq!(end.reason, Reason::LaunchFailed);
        let got = &to_hex(&Sha256::digest(SCRIPT))[..7];
        assert_eq!(
            end.message.as_str(),
            format!("artifact run.sh: sha256 mismatch: expected abababa, got {got}")
        );
        let cache = work.path().join("cache");
        let left: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert!(left.is_empty(), "nothing unverified stays in the cache");
    });
}

fn fetcher(dir: &std::path::Path) -> Fetcher {
    Fetcher::new(dir.join("cache"), 1 << 20, Duration::from_secs(5))
}

#[test]
fn an_https_url_is_refused_with_a_clear_error() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let a = artifact("https://master:8080/artifacts/x", [0; 32], "x", false);
        let e = fetcher(dir.path())
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "artifact x: cannot download https://master:8080/artifacts/x: https is not \
             supported: the agent fetches plain http:// (the sha256 checks the content)"
        );
    });
}

#[test]
fn a_missing_file_or_a_closed_port_fails_with_cannot_download() {
    runtime().block_on(async {
        let files = Files::default();
        let base = files.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let a = artifact(&format!("{base}/nope"), [0; 32], "nope", false);
        let e = fetcher(dir.path())
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("artifact nope: cannot download {base}/nope: HTTP 404 Not Found")
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", closed.local_addr().unwrap());
        drop(closed);
        let a = artifact(&url, [0; 32], "x", false);
        let e = fetcher(dir.path())
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("artifact x: cannot download {url}: ")),
            "{e}"
        );
    });
}

#[test]
fn a_plain_artifact_is_copied_writable_and_an_executable_one_is_executable() {
    use std::os::unix::fs::PermissionsExt;
    runtime().block_on(async {
        let files = Files::default();
        let data = files.put("data.txt", b"42\n");
        let exe = files.put("run.sh", SCRIPT);
        let base = files.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let f = fetcher(dir.path());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let a = artifact(&format!("{base}/data.txt"), data, "", false);
        let path = f.fetch_into(&a, &sandbox, None).await.unwrap();
        assert_eq!(path, sandbox.join("data.txt"), "named after the URL");
        assert_eq!(std::fs::read(&path).unwrap(), b"42\n");
        assert_eq!(mode(&path), 0o644);

        let a = artifact(&format!("{base}/run.sh"), exe, "go", true);
        let path = f.fetch_into(&a, &sandbox, None).await.unwrap();
        assert_eq!(path, sandbox.join("go"));
        assert_eq!(mode(&path) & 0o111, 0o111, "executable");
        assert_eq!(files.total.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn an_artifact_name_that_is_not_a_plain_file_name_is_refused() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        for name in ["..", "../x", "a/b"] {
            let a = artifact("http://127.0.0.1:1/x", [0; 32], name, false);
            let e = fetcher(dir.path())
                .fetch_into(&a, dir.path(), None)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("is not a plain file name"), "{e}");
        }
    });
}

/// The master's artifact server with a credential store holding agent `pi` (secret `[1; 32]`),
/// serving [`SCRIPT`] as `run.sh`: the directory served, the base URL of its artifacts and the
/// script's SHA-256.
async fn serve_signed_script() -> (tempfile::TempDir, String, [u8; 32]) {
    use agent_nostd_core::auth::{Principal, PrincipalKind, Secret};
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("run.sh"), SCRIPT).unwrap();
    let pi = Principal::new(PrincipalKind::Agent, "pi").unwrap();
    let keys = bramble::http::HttpKeys::only([(pi, Secret::from_bytes([1; 32]).http_key())]);
    let (_tx, rx) = tokio::sync::watch::channel(keys);
    let auth = bramble::http::HttpAuth::new(rx, std::sync::Arc::default());
    let router = bramble::http::Routes::new()
        .signed_artifacts(served.path(), auth)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(bramble::web::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let base = format!("http://{addr}/artifacts");
    (served, base, Sha256::digest(SCRIPT).into())
}

fn signer(name: &str, secret: u8) -> bramble_mqtt::http_auth::Signer {
    use agent_nostd_core::auth::{Principal, PrincipalKind, Secret};
    bramble_mqtt::http_auth::Signer::new(
        &Principal::new(PrincipalKind::Agent, name).unwrap(),
        &Secret::from_bytes([secret; 32]),
    )
}

#[test]
fn a_fetcher_with_the_boards_credential_signs_its_request_and_gets_the_artifact() {
    runtime().block_on(async {
        let (_served, base, sha) = serve_signed_script().await;
        let dir = tempfile::tempdir().unwrap();
        let a = artifact(&format!("{base}/run.sh"), sha, "", true);
        let path = fetcher(dir.path())
            .signing(Some(signer("pi", 1)))
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), SCRIPT);
    });
}

#[test]
fn a_fetcher_without_a_credential_or_with_the_wrong_secret_is_refused_with_a_401() {
    runtime().block_on(async {
        let (_served, base, sha) = serve_signed_script().await;
        let dir = tempfile::tempdir().unwrap();
        let a = artifact(&format!("{base}/run.sh"), sha, "", true);
        let url = format!("{base}/run.sh");
        let e = fetcher(dir.path())
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "artifact run.sh: cannot download {url}: HTTP 401: the server wants a signed \
                 request (no credential)"
            )
        );
        let e = fetcher(dir.path())
            .signing(Some(signer("pi", 2)))
            .fetch_into(&a, dir.path(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 401: signature refused"), "{e}");
        assert!(
            !dir.path().join("cache").join(to_hex(&sha)).exists(),
            "nothing is cached"
        );
    });
}

#[test]
fn an_agent_with_a_credential_fetches_from_a_master_that_serves_only_signed_requests() {
    use agent_nostd_core::auth::{Principal, PrincipalKind, Secret};
    runtime().block_on(async {
        let (_served, base, sha) = serve_signed_script().await;
        let work = tempfile::tempdir().unwrap();
        let secret = Secret::from_bytes([1; 32]);
        let credential = bramble_mqtt::Credential::new(
            Principal::new(PrincipalKind::Agent, "pi").unwrap(),
            secret.clone(),
        );
        let file = work.path().join("agent-pi.credential");
        credential.write(&file).unwrap();
        let port = start_broker();
        let mut master = Master::connect_keyed(port, secret.message_key()).await;
        let credential_arg = file.to_str().unwrap();
        let _agent =
            AgentProcess::start("pi", port, work.path(), &["--credential", credential_arg]);
        master.accept_registration("pi", 1).await;

        let a = artifact(&format!("{base}/run.sh"), sha, "run.sh", true);
        let run = with_artifact(run_task("t1", &["./run.sh"], 100, 32), a);
        master.send("pi", &run).await;
        let end = master.wait_state("pi", "t1", TaskState::Finished, 20).await;
        assert_eq!(end.reason, Reason::Exited { code: 0 });
    });
}
