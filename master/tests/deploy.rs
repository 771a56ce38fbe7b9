//! `bramble deploy` end to end, against "boards" made of network namespaces.
//!
//! Each board is a network namespace joined to the root namespace by a veth pair with its own
//! 10.x subnet, running OpenSSH's `sshd` on its address, with a host key and an authorized key made
//! here by `ssh-keygen` (root login by key only). Each board's sshd also gets its own mount
//! namespace with overlays on `/etc`, `/usr`, `/var` and `/run`, so what install.sh writes there
//! (the agent, its config, its pid file, its work directory) is the board's own, as on a real
//! board, and the host's files are not touched. The master (with its embedded broker) listens on
//! 0.0.0.0; the boards reach it at the first veth's host address through their default route.
//!
//! A third board is an address on the first subnet that nobody answers: it must be reported as
//! failed, without stopping the others. Then a second deploy to board 1 upgrades it in place,
//! keeping an edit made to its config.
//!
//! The agents are the x86_64 host build: `cross/build.sh x86_64-unknown-linux-gnu` makes the
//! tarball. A [`Lab`] guard kills every process of the namespaces and deletes them, even when the
//! test fails.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bramble::cluster::{ClusterBroker, ClusterOptions, LocalCluster};

mod support;
use support::{cluster_options, free_port, runtime, target_dir};
/// Runs a setup command; panics with its stderr when it fails.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces, veths and sshds of the test; everything is torn down on drop.
struct Lab {
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
    host_veths: Vec<String>,
    sshds: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for sshd in &mut self.sshds {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        for ns in &self.namespaces {
            // Every process of the board: its sshd, sessions, agent and the agent's tasks.
            for _ in 0..20 {
                let pids = Command::new("ip")
                    .args(["netns", "pids", ns])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let pids: Vec<&str> = pids.split_whitespace().collect();
                if pids.is_empty() {
                    break;
                }
                let _ = Command::new("kill").arg("-9").args(&pids).status();
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for veth in &self.host_veths {
            // Normally gone with its peer's namespace.
            let _ = Command::new("ip")
                .args(["link", "del", veth])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One board: its namespace's address.
struct NsBoard {
    addr: String,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        sh(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
        let host_key = dir.path().join("host_key");
        sh(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                host_key.to_str().unwrap(),
            ],
        );
        std::fs::copy(
            dir.path().join("id_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        Lab {
            dir,
            namespaces: vec![],
            host_veths: vec![],
            sshds: vec![],
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Namespace `i` (1-based) on 10.`net`.`i`.0/24: host .1, board .2, with sshd on the board.
    fn add_board(&mut self, net: u8, i: u8) -> NsBoard {
        let tag = std::process::id() % 100_000;
        let ns = format!("bramble-deploy-{tag}-{i}");
        let host_veth = format!("bdh{tag}x{i}");
        let host_ip = format!("10.{net}.{i}.1");
        let addr = format!("10.{net}.{i}.2");
        sh("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        self.host_veths.push(host_veth.clone());
        sh(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth],
        );
        sh("ip", &["link", "set", &host_veth, "up"]);
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        sh(
            "ip",
            &["-n", &ns, "route", "add", "default", "via", &host_ip],
        );

        let board_dir = self.path().join(format!("board{i}"));
        let mut mounts = String::new();
        for d in ["etc", "usr", "var", "run"] {
            let upper = board_dir.join(format!("{d}-upper"));
            let work = board_dir.join(format!("{d}-work"));
            std::fs::create_dir_all(&upper).unwrap();
            std::fs::create_dir_all(&work).unwrap();
            mounts.push_str(&format!(
                "mount -t overlay overlay -o lowerdir=/{d},upperdir={},workdir={} /{d}\n",
                upper.display(),
                work.display()
            ));
        }
        let t = self.path().display().to_string();
        let config = board_dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}:22\n\
                 HostKey {t}/host_key\n\
                 PidFile {}/sshd.pid\n\
                 AuthorizedKeysFile {t}/authorized_keys\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 Subsystem sftp internal-sftp\n",
                board_dir.display()
            ),
        )
        .unwrap();
        let script = format!(
            "set -e\n{mounts}mkdir -p /run/sshd\nexec /usr/sbin/sshd -D -e -f {}\n",
            config.display()
        );
        let sshd = Command::new("ip")
            .args(["netns", "exec", &ns, "unshare", "--mount", "--propagation"])
            .args(["private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(board_dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("ip netns exec … sshd");
        self.sshds.push(sshd);
        // Poll until sshd answers.
        let target: SocketAddr = format!("{addr}:22").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = self.sshds.last_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sshd for {ns} exited ({status}): {}",
                    std::fs::read_to_string(board_dir.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd on {addr} answers within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NsBoard { addr }
    }

    /// Runs `command` on a board as root over ssh.
    fn ssh(&self, addr: &str, command: &str) -> String {
        let key = self.path().join("id_ed25519");
        let known = self.path().join("known_hosts");
        sh(
            "ssh",
            &[
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                &format!("UserKnownHostsFile={}", known.display()),
                "-i",
                key.to_str().unwrap(),
                "-l",
                "root",
                addr,
                command,
            ],
        )
    }

    /// `bramble deploy` with the test's ssh options.
    async fn deploy(&self, inventory: &Path, master: &str) -> (bool, String, String) {
        let known = self.path().join("known_hosts");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bramble"))
            .arg("deploy")
            .arg("--inventory")
            .arg(inventory)
            .args(["--master", master])
            .arg("--dist")
            .arg(target_dir().join("dist"))
            .args(["--ssh-option", "StrictHostKeyChecking=no"])
            .arg("--ssh-option")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["--connect-timeout", "3", "--register-timeout", "60"])
            .args(["--parallel", "3", "--no-systemd"])
            // The store that issues each board's credential (the master's state directory).
            .env("BRAMBLE_STATE_DIR", self.path().join("state"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(240), out)
            .await
            .expect("bramble deploy ends within 240 s")
            .expect("bramble deploy runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn board_entry(addr: &str, key: &Path, extra: &str) -> String {
    format!(
        "[[board]]\nhost = \"{addr}\"\nuser = \"root\"\nidentity = \"{}\"\n{extra}\n",
        key.display()
    )
}

#[test]
#[ignore = "needs root, ip netns and openssh-server"]
fn deploy_installs_and_starts_agents_on_two_namespace_boards_and_reports_the_unreachable_one() {
    let started = Instant::now();
    let tarball = target_dir().join(format!(
        "dist/bramble-agent-{}-x86_64-unknown-linux-gnu.tar.gz",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        tarball.is_file(),
        "{} is missing: run cross/build.sh x86_64-unknown-linux-gnu",
        tarball.display()
    );
    let mut lab = Lab::new();
    let net = 100 + (std::process::id() % 100) as u8;
    let one = lab.add_board(net, 1);
    let two = lab.add_board(net, 2);
    let unreachable = format!("10.{net}.1.99");
    let key = lab.path().join("id_ed25519");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // Board 2 takes its id from its hostname (the namespaces share the host's).
    let id_two = bramble_agent::config::id_from_hostname(hostname.trim());
    let inventory = lab.path().join("boards.toml");
    std::fs::write(
        &inventory,
        [
            board_entry(
                &one.addr,
                &key,
                "arch = \"x86_64\"\nid = \"ns-board-1\"\nattributes = { sensor = \"bme280\" }",
            ),
            board_entry(&two.addr, &key, "arch = \"auto\""),
            board_entry(&unreachable, &key, "arch = \"x86_64\"\nid = \"nobody\""),
        ]
        .concat(),
    )
    .unwrap();

    let runtime = runtime();
    runtime.block_on(async {
        let port = free_port();
        // No in-process agents: the boards' agents run in their namespaces.
        let broker = ClusterBroker::Embedded(format!("0.0.0.0:{port}").parse().unwrap());
        // The master takes the keys of the credentials deploy issues the boards (its store).
        let options = ClusterOptions {
            credential_store: Some(lab.path().join("state")),
            ..cluster_options(broker, &lab.path().join("master"), vec![])
        };
        let mut cluster = LocalCluster::start(options).unwrap();
        let master = format!("mqtt://10.{net}.1.1:{port}");

        let deploy_started = Instant::now();
        let (ok, stdout, stderr) = lab.deploy(&inventory, &master).await;
        let deploy_took = deploy_started.elapsed();
        eprintln!("bramble deploy took {deploy_took:?}:\n{stdout}{stderr}");
        assert!(!ok, "one board failed, so deploy fails:\n{stdout}{stderr}");
        let row = |needle: &str| {
            stdout
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("a summary row for {needle}:\n{stdout}"))
                .to_owned()
        };
        assert!(row("ns-board-1").contains("ok: registered"), "{stdout}");
        let row_two = row(&format!("root@{} ", two.addr));
        assert!(
            row_two.contains(&id_two) && row_two.contains("x86_64") && row_two.contains("ok"),
            "{stdout}"
        );
        assert!(
            row(&unreachable).contains("FAILED: connect"),
            "the unreachable board failed at connect:\n{stdout}"
        );
        assert!(stdout.contains("2 of 3 boards deployed and registered, 1 failed"));
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(2))
            .await
            .expect("the master sees both agents registered within 30 s");

        // The agent has its attribute and id in the board's own config.
        let config = lab.ssh(&one.addr, "cat /etc/bramble/agent.toml");
        assert!(config.contains("agent_id = \"ns-board-1\""), "{config}");
        assert!(config.contains("sensor = \"bme280\""), "{config}");
        assert!(
            config.contains(&format!("broker = \"{master}\"")),
            "{config}"
        );
        // Its credential, issued from the store and piped over ssh, is root's alone.
        assert!(
            config.contains("credential_file = \"/etc/bramble/agent.credential\""),
            "{config}"
        );
        let installed = lab.ssh(&one.addr, "stat -c '%a %U' /etc/bramble/agent.credential");
        assert_eq!(installed.trim(), "600 root");
        let store = bramble::credentials::Store::load(&bramble::credentials::Store::path_in(
            &lab.path().join("state"),
        ))
        .unwrap();
        let principal =
            agent_nostd_core::auth::Principal::from_username("agent-ns-board-1").unwrap();
        let issued = store
            .credential(&principal)
            .expect("the board's agent was issued");
        let on_board = lab.ssh(&one.addr, "cat /etc/bramble/agent.credential");
        assert_eq!(
            bramble_mqtt::Credential::parse(&on_board, Path::new("agent.credential")).unwrap(),
            issued
        );

        // Re-running upgrades in place: the agent restarts, an edit to its config is kept.
        let pid_before = lab.ssh(&one.addr, "cat /run/bramble-agent.pid");
        lab.ssh(
            &one.addr,
            "echo '# edited on the board' >> /etc/bramble/agent.toml",
        );
        let again = lab.path().join("board1.toml");
        std::fs::write(
            &again,
            board_entry(
                &one.addr,
                &key,
                "arch = \"x86_64\"\nid = \"ns-board-1\"\nattributes = { sensor = \"bme280\" }",
            ),
        )
        .unwrap();
        let (ok, stdout, stderr) = lab.deploy(&again, &master).await;
        assert!(ok, "the upgrade succeeds:\n{stdout}{stderr}");
        assert!(stdout.contains("1 of 1 boards deployed and registered, 0 failed"));
        let config = lab.ssh(&one.addr, "cat /etc/bramble/agent.toml");
        assert!(config.contains("# edited on the board"), "{config}");
        assert_eq!(
            config
                .lines()
                .filter(|l| l.starts_with("agent_id ="))
                .count(),
            1,
            "{config}"
        );
        let pid_after = lab.ssh(&one.addr, "cat /run/bramble-agent.pid");
        assert_ne!(
            pid_before.trim(),
            pid_after.trim(),
            "the agent was restarted"
        );
        assert!(lab
            .ssh(
                &one.addr,
                &format!("kill -0 {} && echo alive", pid_after.trim())
            )
            .contains("alive"));
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(2))
            .await
            .expect("both agents registered after the upgrade");
        cluster.stop().await;
    });
    eprintln!("the whole test took {:?}", started.elapsed());
}
