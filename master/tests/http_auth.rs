//! The master's HTTP server with a credential store: artifacts go only to requests signed by an
//! agent or an operator (a 401 with `WWW-Authenticate: Bramble` otherwise, counted by reason in
//! `/metrics`), the dashboard and `/metrics` stay readable without a signature, and no route takes
//! a method that could change state. The last tests run the `bramble master` binary: with its
//! store, and without one (`--insecure-allow-anonymous`, artifacts open).

use std::net::SocketAddr;
use std::time::SystemTime;

use agent_nostd_core::auth::{Principal, PrincipalKind, Secret};
use bramble::http::{HttpAuth, HttpKeys, Routes};
use bramble::web::{self, WebState};
use bramble_mqtt::http_auth::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

mod support;
use support::{free_port, raw, runtime, BRAMBLE};

fn principal(kind: PrincipalKind, name: &str) -> Principal {
    Principal::new(kind, name).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The store of this test: agent `pi`, operator `admin` and framework `fw`, each with a secret.
fn keys(extra: &[(Principal, Secret)]) -> HttpKeys {
    let mut all = vec![
        (
            principal(PrincipalKind::Agent, "pi"),
            Secret::from_bytes([1; 32]),
        ),
        (
            principal(PrincipalKind::Operator, "admin"),
            Secret::from_bytes([2; 32]),
        ),
        (
            principal(PrincipalKind::Framework, "fw"),
            Secret::from_bytes([3; 32]),
        ),
    ];
    all.extend_from_slice(extra);
    HttpKeys::only(all.iter().map(|(p, s)| (p.clone(), s.http_key())))
}

fn signer(kind: PrincipalKind, name: &str, secret: u8) -> Signer {
    Signer::new(&principal(kind, name), &Secret::from_bytes([secret; 32]))
}

/// Serves signed artifacts from `dir` with the dashboard beside them; returns the address, the
/// dashboard's state and the sender of the store's keys.
async fn serve(dir: &std::path::Path) -> (SocketAddr, WebState, watch::Sender<HttpKeys>) {
    let (tx, rx) = watch::channel(keys(&[]));
    let state = WebState::new();
    let auth = HttpAuth::new(rx, state.http_refusals());
    let router = Routes::new()
        .signed_artifacts(dir, auth)
        .merge(web::routes(state.clone()))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(web::serve(listener, router, std::future::pending()));
    (addr, state, tx)
}

/// `GET path` signed by `signer` now: the status line and the whole response.
async fn signed_get(addr: SocketAddr, signer: &Signer, path: &str) -> (String, String) {
    raw(
        addr,
        "GET",
        path,
        Some(&signer.authorization("GET", path, now())),
    )
    .await
}

fn refused(state: &WebState, reason: &str) -> u64 {
    let text = state.render_metrics();
    let line = format!("bramble_http_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .parse()
        .unwrap()
}

fn artifacts_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tool"), b"hello").unwrap();
    dir
}

#[test]
fn a_signed_artifact_request_gets_the_file_and_an_unsigned_or_forged_one_a_counted_401() {
    runtime().block_on(async {
        let dir = artifacts_dir();
        let (addr, state, _keys) = serve(dir.path()).await;
        let path = "/artifacts/tool";
        let pi = signer(PrincipalKind::Agent, "pi", 1);

        let (status, text) = raw(addr, "GET", path, None).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bramble\r\n"),
            "{text}"
        );
        assert!(!text.contains("hello"), "{text}");

        let cases = [
            // The right principal, the wrong secret.
            (
                signer(PrincipalKind::Agent, "pi", 9).authorization("GET", path, now()),
                "bad_tag",
            ),
            // Signed for another file.
            (
                pi.authorization("GET", "/artifacts/other", now()),
                "bad_tag",
            ),
            // Nobody the store knows, and a framework (which may not read artifacts).
            (
                signer(PrincipalKind::Agent, "ghost", 1).authorization("GET", path, now()),
                "unknown_principal",
            ),
            (
                signer(PrincipalKind::Framework, "fw", 3).authorization("GET", path, now()),
                "unknown_principal",
            ),
            // Genuine, but from a clock 10 minutes off.
            (pi.authorization("GET", path, now() - 600), "stale"),
            (pi.authorization("GET", path, now() + 600), "stale"),
            ("Basic cGk6cGFzc3dvcmQ=".to_owned(), "malformed"),
        ];
        for (header, reason) in &cases {
            let (status, text) = raw(addr, "GET", path, Some(header)).await;
            assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{reason}: {header}");
            assert!(!text.contains("hello"), "{reason}");
        }
        assert_eq!(refused(&state, "missing"), 1);
        assert_eq!(refused(&state, "bad_tag"), 2);
        assert_eq!(refused(&state, "unknown_principal"), 2);
        assert_eq!(refused(&state, "stale"), 2);
        assert_eq!(refused(&state, "malformed"), 1);

        for header in [
            pi.authorization("GET", path, now()),
            signer(PrincipalKind::Operator, "admin", 2).authorization("GET", path, now()),
        ] {
            let (status, text) = raw(addr, "GET", path, Some(&header)).await;
            assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
            assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        }
        // A missing file is still a 404 to a signed request, and a 401 (not a 404) to others:
        // the server says nothing of what it holds before a valid signature.
        let (status, _) = signed_get(addr, &pi, "/artifacts/missing").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = raw(addr, "GET", "/artifacts/missing", None).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    });
}

#[test]
fn an_agent_added_to_the_store_while_the_master_runs_is_served_without_a_restart() {
    runtime().block_on(async {
        let dir = artifacts_dir();
        let (addr, _state, keys_tx) = serve(dir.path()).await;
        let path = "/artifacts/tool";
        let new = signer(PrincipalKind::Agent, "new", 5);
        let (status, _) = signed_get(addr, &new, path).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        keys_tx.send_replace(keys(&[(
            principal(PrincipalKind::Agent, "new"),
            Secret::from_bytes([5; 32]),
        )]));
        let (status, _) = signed_get(addr, &new, path).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
    });
}

#[test]
fn the_dashboard_and_metrics_stay_readable_and_no_route_takes_a_method_that_changes_state() {
    runtime().block_on(async {
        let dir = artifacts_dir();
        let (addr, _state, _keys) = serve(dir.path()).await;
        for path in ["/", "/metrics", "/app.js", "/style.css"] {
            let (status, _) = raw(addr, "GET", path, None).await;
            assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        }
        let admin = signer(PrincipalKind::Operator, "admin", 2);
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            for path in ["/", "/metrics", "/events"] {
                let (status, _) = raw(addr, method, path, None).await;
                assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{method} {path}");
            }
            // Even an operator's signature changes nothing: there is no such route.
            let path = "/artifacts/tool";
            let header = admin.authorization(method, path, now());
            let (status, _) = raw(addr, method, path, Some(&header)).await;
            assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{method} {path}");
            let (status, _) = raw(addr, method, path, None).await;
            assert!(
                status == "HTTP/1.1 401 Unauthorized"
                    || status == "HTTP/1.1 405 Method Not Allowed",
                "{method} {path}: {status}"
            );
        }
        assert_eq!(std::fs::read(dir.path().join("tool")).unwrap(), b"hello");
    });
}

/// A `bramble master` process on free loopback ports, killed when dropped.
struct Master {
    child: std::process::Child,
    http: SocketAddr,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Master {
    fn start(state_dir: &std::path::Path, artifacts: &std::path::Path, extra: &[&str]) -> Master {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = std::process::Command::new(BRAMBLE)
            .args(["master", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--http")
            .arg(http.to_string())
            .arg("--artifacts")
            .arg(artifacts)
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Master { child, http }
    }

    /// Waits (up to 30 s) for `GET /metrics` to answer.
    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(self.http).await {
                let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                if s.write_all(req.as_bytes()).await.is_ok() {
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out).await;
                    if out.starts_with(b"HTTP/1.1 200") {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bramble master serves HTTP within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The status of a GET of `path` signed with the credential file `credential`.
async fn get_signed(addr: SocketAddr, path: &str, credential: &std::path::Path) -> String {
    let credential = bramble_mqtt::Credential::read(credential).unwrap();
    signed_get(addr, &Signer::from_credential(&credential), path)
        .await
        .0
}

#[test]
fn bramble_master_with_its_store_serves_artifacts_to_its_operator_and_to_an_agent_added_later() {
    runtime().block_on(async {
        let artifacts = artifacts_dir();
        let state = tempfile::tempdir().unwrap();
        let master = Master::start(state.path(), artifacts.path(), &[]);
        master.ready().await;
        let path = "/artifacts/tool";
        let (status, _) = raw(master.http, "GET", path, None).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        let admin = state.path().join("operator-admin.credential");
        assert_eq!(
            get_signed(master.http, path, &admin).await,
            "HTTP/1.1 200 OK"
        );

        // `bramble credentials add agent pi` while the master runs: taken within a few seconds.
        let pi = state.path().join("agent-pi.credential");
        let added = std::process::Command::new(BRAMBLE)
            .args(["credentials", "add", "agent", "pi", "--state-dir"])
            .arg(state.path())
            .arg("--out")
            .arg(&pi)
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while get_signed(master.http, path, &pi).await != "HTTP/1.1 200 OK" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new agent's signature is taken once the store is re-read"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let (_, metrics) = raw(master.http, "GET", "/metrics", None).await;
        assert!(
            metrics.contains("\nbramble_http_refused_total{reason=\"missing\"} 1\n"),
            "{metrics}"
        );
    });
}

#[test]
fn bramble_master_without_credentials_serves_artifacts_to_anyone() {
    runtime().block_on(async {
        let artifacts = artifacts_dir();
        let state = tempfile::tempdir().unwrap();
        let master = Master::start(
            state.path(),
            artifacts.path(),
            &["--insecure-allow-anonymous"],
        );
        master.ready().await;
        let (status, text) = raw(master.http, "GET", "/artifacts/tool", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(text.ends_with("hello"), "{text}");
    });
}
