//! The whole stack against Mosquitto configured like Home Assistant's add-on (`allow_anonymous
//! false`, a password file): `bramble master --broker`, an agent, `bramble run` and `bramble
//! status` each log in, each given its login by a different source; an anonymous or
//! wrong-password `bramble run` exits at once naming the refusal; and no password shows in a
//! process's argv, the CLI's output or the debug logs.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_nostd_core::auth::PrincipalKind;
use bramble::driver::BrokerAddr;
use bramble_mqtt::{Credential, Login};
use support::{runtime, Mosquitto, BRAMBLE};

const MASTER_PW: &str = "master-pw-4c1d";
const OPERATOR_PW: &str = "operator-pw-77e2";
const FRAMEWORK_PW: &str = "framework-pw-90ab";

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Adds `user` with `password` to Mosquitto's password file at `file`.
fn add_user(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let status = cmd
        .arg("-b")
        .arg(file)
        .args([user, password])
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_passwd is installed (apt-get install mosquitto)");
    assert!(status.success());
}

fn cmdline(child: &Child) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// `bramble ARGS` with `env`, run to its end (at most 60 s); also how long it took.
fn bramble(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(BRAMBLE);
    cmd.args(args)
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

#[test]
#[ignore = "needs mosquitto"]
fn every_part_logs_in_to_a_broker_that_refuses_anonymous_clients_and_no_password_shows() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    // The agent logs in with its credential file (its principal and the derived password),
    // issued from the master's store, which the master reads its key from.
    let state = dir.path().join("state");
    let cred_file = dir.path().join("agent-credential");
    bramble::credentials::commands::add(
        &state,
        PrincipalKind::Agent,
        "pi1",
        Some(&cred_file),
        false,
    )
    .unwrap();
    let agent_cred = Credential::read(&cred_file).unwrap();
    let agent_pw = agent_cred.login().password.expose().to_owned();
    add_user(&passwords, "master", MASTER_PW);
    add_user(&passwords, "agent-pi1", &agent_pw);
    add_user(&passwords, "operator", OPERATOR_PW);
    add_user(&passwords, "framework-pi", FRAMEWORK_PW);
    let mosquitto = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwords.display()
    ));
    let port = mosquitto.port.to_string();
    let plain = format!("mqtt://127.0.0.1:{port}");
    let op_pw_file = dir.path().join("operator-pw");
    std::fs::write(&op_pw_file, format!("{OPERATOR_PW}\n")).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();

    // The master: the URL's userinfo, in BRAMBLE_BROKER.
    let master = Killed(
        Command::new(BRAMBLE)
            .args(["master", "--no-http", "--allocation-interval", "0.2"])
            .arg("--state-dir")
            .arg(&state)
            .env(
                "BRAMBLE_BROKER",
                format!("mqtt://master:{MASTER_PW}@127.0.0.1:{port}"),
            )
            .env("BRAMBLE_LOG", "debug")
            .stdout(std::fs::File::create(logs.join("master.out")).unwrap())
            .stderr(std::fs::File::create(logs.join("master.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    // The agent: its credential file.
    let agent = Killed(
        Command::new(BRAMBLE)
            .args([
                "__agent",
                "--agent-id",
                "pi1",
                "--broker",
                &plain,
                "--credential",
            ])
            .arg(&cred_file)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            // As root, tasks run as root: the `bramble` user need not exist for the tests.
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .env("BRAMBLE_LOG", "debug")
            .stderr(std::fs::File::create(logs.join("agent.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    // The operator's own view: a login in the URL, as a test client.
    let operator = BrokerAddr::new("127.0.0.1", mosquitto.port)
        .with_login(Some(Login::new("operator", OPERATOR_PW)));
    runtime().block_on(support::retained_until(
        &operator,
        "the agent registers through the master",
        Duration::from_secs(30),
        |s| s.agents().iter().any(|a| a.agent_id == "pi1"),
    ));

    // `bramble run`: --username with --password-file for the broker; its calls are signed with
    // the operator credential the store made (the master checks them with the store's key).
    let pw_file = op_pw_file.to_str().unwrap();
    let operator_cred = state.join("operator-admin.credential");
    let (out, _) = bramble(
        &[
            "run",
            "--broker",
            &plain,
            "--username",
            "operator",
            "--password-file",
            pw_file,
            "--credential",
            operator_cred.to_str().unwrap(),
            "--cpus",
            "0.1",
            "--mem",
            "8",
            "--",
            "/bin/sh",
            "-c",
            "exit 3",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "bramble run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pi framework: its scheduler logs in with its own login and hands it to its executors
    // (BRAMBLE_USERNAME and BRAMBLE_PASSWORD), which must log in to send their results.
    let mut options = bramble_pi::PiOptions::new(bramble::demo::executor(Path::new(BRAMBLE), "pi"));
    options.tasks = 2;
    options.samples = 10_000;
    let pi = bramble_pi::PiScheduler::new(options).unwrap();
    let framework = BrokerAddr::new("127.0.0.1", mosquitto.port)
        .with_login(Some(Login::new("framework-pi", FRAMEWORK_PW)));
    let mut config = bramble::demo::scheduler_config(&framework, "login-pi", "pi");
    // It signs its calls with its own credential, issued from the master's store.
    let pi_cred = dir.path().join("framework-login-pi.credential");
    bramble::credentials::commands::add(
        &state,
        PrincipalKind::Framework,
        "login-pi",
        Some(&pi_cred),
        false,
    )
    .unwrap();
    config.credential = Some(Credential::read(&pi_cred).unwrap());
    let pi = runtime()
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                bramble_sdk::scheduler::run(config, pi),
            )
            .await
        })
        .expect("pi finishes within a minute: its executors logged in")
        .unwrap();
    assert_eq!(pi.progress(), (2, 2), "every pi task reported its result");

    // `bramble status` and `agents`: BRAMBLE_USERNAME and BRAMBLE_PASSWORD.
    let env = [
        ("BRAMBLE_BROKER", plain.as_str()),
        ("BRAMBLE_USERNAME", "operator"),
        ("BRAMBLE_PASSWORD", OPERATOR_PW),
    ];
    let mut shown = String::new();
    for what in ["status", "agents"] {
        let (out, _) = bramble(&[what], &env);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "bramble {what}: {text}");
        shown += &text;
    }
    assert!(shown.contains("pi1"), "{shown}");

    // Refused logins end a one-shot command at once, saying why.
    for (who, env, user) in [
        ("anonymous", vec![], "anonymous"),
        (
            "a wrong password",
            vec![
                ("BRAMBLE_USERNAME", "operator"),
                ("BRAMBLE_PASSWORD", "wrong"),
            ],
            "operator",
        ),
    ] {
        let (out, took) = bramble(&["run", "--broker", &plain, "--", "/bin/true"], &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{who}: {err}");
        assert!(
            err.contains(&format!("the broker refused the login for {user}: ")),
            "{who}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{who}: took {took:?}");
        shown += &err;
    }
    // Also a query with a password in the URL the error names.
    let (out, _) = bramble(
        &["status"],
        &[(
            "BRAMBLE_BROKER",
            &format!("mqtt://operator:{OPERATOR_PW}x@127.0.0.1:{port}"),
        )],
    );
    assert!(!out.status.success());
    shown += &String::from_utf8_lossy(&out.stderr);
    // A password in --broker is refused, without echoing it.
    let (out, _) = bramble(
        &[
            "agents",
            "--broker",
            &format!("mqtt://operator:{OPERATOR_PW}@127.0.0.1:{port}"),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BRAMBLE_BROKER"), "{err}");
    shown += &err;

    // --help, with every password in the environment.
    for what in ["run", "agents", "master"] {
        let (out, _) = bramble(&[what, "--help"], &env);
        shown += &String::from_utf8_lossy(&out.stdout);
    }
    assert!(shown.contains("--password-file"), "{shown}");

    // Nothing shows a password: argv of the long-lived processes, CLI output, debug logs.
    let argv = format!("{} {}", cmdline(&master.0), cmdline(&agent.0));
    drop((master, agent));
    let mut logged = String::new();
    for f in ["master.out", "master.err", "agent.err"] {
        logged += &std::fs::read_to_string(logs.join(f)).unwrap();
    }
    assert!(logged.contains("connected"), "the logs are there: {logged}");
    for secret in [MASTER_PW, OPERATOR_PW, FRAMEWORK_PW, agent_pw.as_str()] {
        assert!(!argv.contains(secret), "argv shows a password: {argv}");
        assert!(
            !shown.contains(secret),
            "CLI output shows a password: {shown}"
        );
        assert!(!logged.contains(secret), "a log shows a password");
    }
}

/// Writes a CA and a server certificate for 127.0.0.1 signed by it into `dir` (openssl CLI):
/// `ca.pem`, `server.pem`, `server.key`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bramble test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // Mosquitto started as root reads them after dropping to its own user.
    use std::os::unix::fs::PermissionsExt;
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    open(dir, 0o755).unwrap();
    for f in ["ca.pem", "server.pem", "server.key"] {
        open(&dir.join(f), 0o644).unwrap();
    }
}

#[test]
#[ignore = "needs mosquitto"]
fn over_tls_the_master_an_agent_and_the_cli_log_in_to_a_broker_checked_against_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let passwords = dir.path().join("passwd");
    add_user(&passwords, "master", MASTER_PW);
    add_user(&passwords, "operator", OPERATOR_PW);
    add_user(&passwords, "agent-pi1", "agent-pw");
    let d = dir.path().display();
    let mosquitto = Mosquitto::start_with(&format!(
        "cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         allow_anonymous false\npassword_file {}\n",
        passwords.display()
    ));
    let port = mosquitto.port;
    let tls = format!("mqtts://127.0.0.1:{port}");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let _master = Killed(
        Command::new(BRAMBLE)
            .args([
                "master",
                "--no-http",
                "--allocation-interval",
                "0.2",
                "--ca-file",
                ca,
            ])
            // No store there: agents' frames carry the anonymous key (this agent has no
            // credential, only a broker account).
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env(
                "BRAMBLE_BROKER",
                format!("mqtts://master:{MASTER_PW}@127.0.0.1:{port}"),
            )
            .env("BRAMBLE_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let _agent = Killed(
        Command::new(BRAMBLE)
            .args([
                "__agent",
                "--agent-id",
                "pi1",
                "--broker",
                &tls,
                "--ca-file",
                ca,
            ])
            .args(["--username", "agent-pi1"])
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .env("BRAMBLE_PASSWORD", "agent-pw")
            .env("BRAMBLE_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let env = [
        ("BRAMBLE_BROKER", tls.as_str()),
        ("BRAMBLE_USERNAME", "operator"),
        ("BRAMBLE_PASSWORD", OPERATOR_PW),
        ("BRAMBLE_CA_FILE", ca),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (out, _) = bramble(&["agents"], &env);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("pi1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no agent over TLS: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (out, _) = bramble(
        &["run", "--cpus", "0.1", "--mem", "8", "--", "/bin/true"],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "bramble run over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA file the broker's certificate is not trusted: no connection.
    let (out, _) = bramble(&["status", "--timeout", "2"], &env[..3]);
    assert!(!out.status.success(), "an unknown CA must not be trusted");
}
