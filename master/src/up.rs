//! `bramble up`: a local cluster in one command, and the demo.
//!
//! It starts the embedded broker, the master and three agents (one with a BME280 sensor), prints
//! where everything is, and, unless `--no-demo`, runs the `pi` and `sensor` frameworks side by side,
//! printing their results and the frameworks' dominant shares as they come, until Ctrl-C.
//!
//! It needs no credentials: its embedded broker lets anonymous clients in, so it listens on a
//! loopback address only (`bramble master` is the cluster for a LAN, with credentials).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{ClusterBroker, ClusterOptions, LocalCluster};
use crate::web;
use bramble_master_core::Config;

/// Where `bramble up` serves the dashboard unless told otherwise (a free port when it is taken).
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// Runs `bramble up` until Ctrl-C. The dashboard listens on `http`, or on [`DEFAULT_HTTP`] (or a
/// free port) when `None`.
pub async fn run(
    listen: SocketAddr,
    demo: bool,
    work_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
) -> Result<(), String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "bramble up runs a cluster without credentials, so its broker listens on loopback only \
             (not {listen}); for boards on the LAN run `bramble master`"
        ));
    }
    let (work_dir, _temp) = match work_dir {
        Some(dir) => (dir, None),
        None => {
            let dir = std::env::temp_dir().join(format!("bramble-up-{}", std::process::id()));
            (dir.clone(), Some(TempDir(dir)))
        }
    };
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let agents = ClusterOptions::demo_agents();
    let options = ClusterOptions {
        broker: ClusterBroker::Embedded(listen),
        agents: agents.clone(),
        work_dir: work_dir.clone(),
        supervisor: exe.clone(),
        master: Config::default(),
        warm_spares: bramble_agent::config::DEFAULT_WARM_SPARES,
        credential_store: None,
    };
    let listener = match http {
        Some(addr) => web::bind(addr).await.map_err(|e| e.to_string())?,
        None => {
            let default: SocketAddr = DEFAULT_HTTP.parse().map_err(|e| format!("{e}"))?;
            match web::bind(default).await {
                Ok(l) => l,
                Err(_) => web::bind(SocketAddr::new(default.ip(), 0))
                    .await
                    .map_err(|e| e.to_string())?,
            }
        }
    };
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut cluster = LocalCluster::start(options).map_err(|e| e.to_string())?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(web::serve(
        listener,
        web::routes(cluster.web.clone()),
        async {
            let _ = http_stopped.await;
        },
    ));
    println!("Bramble local cluster");
    println!(
        "  dashboard     {}  (Prometheus metrics: {}metrics)",
        web::url(http_addr),
        web::url(http_addr)
    );
    println!(
        "  MQTT broker   {}  (watch it: mosquitto_sub -h {} -p {} -t 'bramble/v1/#' -v)",
        cluster.broker, cluster.broker.host, cluster.broker.port
    );
    println!("  work dirs     {}", work_dir.display());
    for a in &agents {
        let attrs: Vec<String> = a
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  agent         {:<12} {}  {}",
            a.id,
            a.capacity,
            attrs.join(" ")
        );
    }
    tokio::select! {
        () = cluster.wait_for_agents(agents.len()) => println!("  {} agents registered", agents.len()),
        () = tokio::time::sleep(Duration::from_secs(30)) => return Err("the agents did not register within 30 s".into()),
    }
    let outcome = if demo {
        let outcome = crate::demo::run(&cluster, &exe).await;
        if !cluster.wait_for_no_tasks(Duration::from_secs(15)).await {
            eprintln!("some tasks were still running after 15 s; they are left to the agents' checkpoints");
        }
        outcome
    } else {
        println!("Cluster up. Ctrl-C to stop.");
        let mut snapshots = cluster.snapshots.clone();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = crate::demo::print_shares(&mut snapshots) => {}
        }
        Ok(())
    };
    println!("stopping the cluster");
    cluster.stop().await;
    let _ = stop_http.send(());
    let _ = server.await;
    outcome
}

/// Removes the temporary work directory when `bramble up` ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn bramble_up_refuses_to_listen_beyond_loopback_without_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let listen = "0.0.0.0:1".parse().unwrap();
        let err = super::run(listen, false, Some(dir.path().to_owned()), None)
            .await
            .unwrap_err();
        assert!(err.contains("loopback only"), "{err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing was started"
        );
    }
}
