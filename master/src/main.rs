//! `bramble`: the master and the operator's command line.
//!
//! - `bramble up`: a whole local cluster (embedded broker, master, 3 agents) and the demo frameworks.
//! - `bramble master`: the master, with its embedded broker or against an external one (`--broker`),
//!   and its HTTP server (`--http`, default `0.0.0.0:8080`): the web dashboard, `/metrics`, and
//!   the files of `--artifacts DIR` (default `/var/lib/bramble/artifacts`) at `/artifacts/NAME` for
//!   agents to fetch.
//! - `bramble status|agents|frameworks|tasks|offers`: what a running master publishes on its retained
//!   status topics, as tables or `--json`.
//! - `bramble run -- CMD ARGS…`: one task through a one-off framework, exiting with its exit code;
//!   `bramble kill TASK`: the operator's kill.
//! - `bramble deploy`: the agent pushed to the boards of an inventory over SSH (see
//!   `bramble::deploy`).
//! - `bramble credentials add|remove|list` and `bramble broker-config mosquitto`: the cluster's
//!   credential store (see `bramble::credentials`).
//!
//! Hidden: `bramble __supervise …` supervises a task (as `bramble-agent` does), `bramble __agent …`
//! runs an agent (the `bramble-agent` command line), and `bramble __exec FRAMEWORK …` runs a demo
//! framework's executor, so `bramble up` and the end-to-end tests need no other binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bramble::broker;
use bramble::driver::{BrokerAddr, Brokers};
use bramble::leadership::{self, Leadership};
use bramble::web;
use bramble_master_core::master::QueryKind;
use bramble_master_core::Config;
use bramble_sdk::cli::BrokerArgs;
use clap::{Parser, Subcommand};

/// Bramble: a cluster manager for Raspberry Pi-class boards.
#[derive(Debug, Parser)]
#[command(name = "bramble", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The log filter of `command` when `BRAMBLE_LOG` does not set one.
///
/// The embedded broker (rumqttd) logs every connection's accept and end, ordinary disconnects at
/// ERROR, and its router a few lines per connection: tens of thousands of lines when a lab's boards
/// reconnect at once. Those targets are off; `BRAMBLE_LOG=info,rumqttd=debug` shows them.
fn default_log(command: &Command) -> &'static str {
    match command {
        Command::Up { .. } => "warn,rumqttd=off",
        Command::Master { .. } => {
            "info,rumqttd::router::routing=off,rumqttd::server::broker=off,rumqttd::link=off"
        }
        // Creating the store on first use says where it is.
        Command::Credentials { .. } | Command::BrokerConfig { .. } => "info",
        // The CLI commands (deploy's progress bars and summary among them) say it all; warnings
        // name what failed.
        _ => "warn",
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster (embedded broker, master, 3 agents) and run the demo frameworks.
    Up {
        /// Where the embedded broker listens.
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        /// Start the cluster only, without the demo frameworks.
        #[arg(long)]
        no_demo: bool,
        /// Where the agents keep their work directories (default: a new temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Where the web dashboard and /metrics listen (default: 127.0.0.1:8080, or a free port
        /// when that is taken).
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Run the master.
    Master {
        /// Where the embedded broker listens.
        #[arg(long, default_value = "0.0.0.0:1883", conflicts_with = "broker")]
        listen: SocketAddr,
        /// Use this external MQTT 3.1.1 broker (e.g. Mosquitto) instead of the embedded one
        /// (also when BRAMBLE_BROKER is set); a comma list of brokers (standbys or bridged
        /// brokers) is tried in order, failing over. Its login: --username with
        /// --password-file, BRAMBLE_USERNAME with BRAMBLE_PASSWORD[_FILE], the URL's userinfo in
        /// BRAMBLE_BROKER, or --credential / BRAMBLE_CREDENTIAL. No password in argv.
        #[arg(long, value_name = "mqtt://HOST:PORT[,...]")]
        broker: Option<String>,
        /// The external broker's username (see --broker).
        #[arg(long, value_name = "USER")]
        username: Option<String>,
        /// A file whose first line is the external broker's password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The master's credential file (principal and secret) for the external broker.
        #[arg(long, value_name = "FILE")]
        credential: Option<PathBuf>,
        /// The CA certificate an mqtts:// broker's certificate must chain to (default: the
        /// system's roots; env BRAMBLE_CA_FILE).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Seconds between allocation rounds.
        #[arg(long, default_value_t = 1.0)]
        allocation_interval: f64,
        /// Publish Home Assistant MQTT discovery configs for the agents and the cluster.
        #[arg(long)]
        ha_discovery: bool,
        /// The Home Assistant discovery prefix.
        #[arg(long, default_value = "homeassistant", value_name = "PREFIX")]
        ha_prefix: String,
        /// Where the HTTP server listens: the web dashboard, /metrics and /artifacts/NAME.
        #[arg(long, value_name = "ADDR", default_value = bramble::http::DEFAULT_HTTP_LISTEN)]
        http: SocketAddr,
        /// Serve no HTTP at all.
        #[arg(long, conflicts_with = "http")]
        no_http: bool,
        /// The directory whose regular files are served as GET /artifacts/NAME (put a file there
        /// and name it in a task with its `sha256sum`).
        #[arg(long, value_name = "DIR", default_value = bramble::http::DEFAULT_ARTIFACTS_DIR)]
        artifacts: PathBuf,
        /// Run as a hot standby: lead only once the leader is gone (any number of standbys may
        /// run; use an external broker that every master and agent reaches).
        #[arg(long)]
        standby: bool,
        /// This master's name among the masters (default: the host name): 1-32 bytes of
        /// A-Z a-z 0-9 . _ -
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        state_dir: bramble::credentials::cli::StateDir,
        /// Let the embedded broker accept clients without a login on any address (for tests
        /// only: anyone who reaches it can run commands on every board).
        #[arg(long, conflicts_with = "broker")]
        insecure_allow_anonymous: bool,
    },
    /// Manage the cluster's principals and their secrets (run on the master host).
    Credentials {
        #[command(subcommand)]
        command: bramble::credentials::cli::CredentialsCommand,
    },
    /// Write an external broker's configuration from the credential store.
    BrokerConfig {
        #[command(subcommand)]
        command: bramble::credentials::cli::BrokerConfigCommand,
    },
    /// Show the cluster summary (from the master's retained status topics).
    Status(QueryArgs),
    /// List the agents.
    Agents(QueryArgs),
    /// List the frameworks.
    Frameworks(QueryArgs),
    /// List the tasks (running, and the latest ended ones of each framework).
    Tasks(QueryArgs),
    /// List the outstanding offers.
    Offers(QueryArgs),
    /// Run a command once as a task on an agent that fits, and exit with its exit code.
    Run(RunArgs),
    /// Kill a task (`TASK_ID`, or `FRAMEWORK_ID/TASK_ID` when several frameworks use the id) and
    /// wait until it ended.
    Kill {
        /// The task.
        task: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 5)]
        grace: u32,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Push the agent to the boards of an inventory over SSH, install and start it, and wait until
    /// each registers. Re-running it upgrades in place.
    Deploy {
        /// The inventory: a TOML file of `[[board]]`s (see cross/inventory.example.toml).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        /// The broker the agents use, or a comma list of them to fail over between (default: this
        /// machine's address on the route to each board, port 1883; registrations are then
        /// watched on 127.0.0.1:1883).
        #[arg(long, value_name = "mqtt://HOST:PORT[,...]")]
        master: Option<String>,
        /// Where cross/build.sh left the tarballs (default: $CARGO_TARGET_DIR/dist or target/dist).
        #[arg(long, value_name = "DIR")]
        dist: Option<PathBuf>,
        /// Boards deployed to at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// An extra ssh/scp option, as for `ssh -o` (repeatable), e.g.
        /// StrictHostKeyChecking=accept-new.
        #[arg(long = "ssh-option", value_name = "OPTION")]
        ssh_options: Vec<String>,
        /// ssh's ConnectTimeout, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
        connect_timeout: u64,
        /// Seconds each agent has to register once installed.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        register_timeout: u64,
        /// Start the agents without systemd (install.sh --no-systemd: setsid, a pid file).
        #[arg(long)]
        no_systemd: bool,
        /// Install no credentials (a broker without logins). By default each board's agent is
        /// issued its credential from the store (if it has none) and it is installed on the board.
        #[arg(long)]
        no_credentials: bool,
        #[command(flatten)]
        state_dir: bramble::credentials::cli::StateDir,
    },
}

/// `bramble run [OPTIONS] -- CMD ARGS…`
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The cluster's broker and its login (the operator's ~/.config/bramble/credential when
    /// nothing else gives one).
    #[command(flatten)]
    broker: BrokerArgs,
    /// CPU cores for the task (e.g. 0.5).
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory for the task, in MiB.
    #[arg(long, default_value_t = 32)]
    mem: u32,
    /// Disk for the task, in MiB.
    #[arg(long, default_value_t = 0)]
    disk: u32,
    /// Run only on an agent with this attribute (repeat for several).
    #[arg(long = "constraint", value_name = "KEY=VALUE", value_parser = key_value)]
    constraints: Vec<(String, String)>,
    /// The framework's name.
    #[arg(long, default_value = "bramble-run")]
    name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// How the queries reach a running master's status topics.
#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The broker the master publishes on (of a comma list, the first that answers) and its
    /// login (the operator's ~/.config/bramble/credential when nothing else gives one).
    #[command(flatten)]
    broker: BrokerArgs,
    /// Print JSON (the status topics' payloads) instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Only the entries in this state (agents: online, offline; tasks: running, finished, …).
    #[arg(long)]
    state: Option<String>,
    /// Only the entries of this framework id (tasks, offers, frameworks).
    #[arg(long)]
    framework: Option<String>,
    /// Only the entries of this agent id (agents, tasks, offers).
    #[arg(long)]
    agent: Option<String>,
    /// Skip this many entries (after the filters), for paging a long list.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Show at most this many entries; a table says how many more there are.
    #[arg(long)]
    limit: Option<usize>,
}

impl QueryArgs {
    /// Whether `entry` (a status topic's JSON) passes the filters.
    fn keeps(&self, entry: &serde_json::Value) -> bool {
        let is = |field: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| entry[field].as_str() == Some(w.as_str()))
        };
        is("state", &self.state)
            && is("framework_id", &self.framework)
            && is("agent_id", &self.agent)
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == bramble_agent::process::SUPERVISE_ARG)
    {
        return bramble_agent::process::supervise_main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "__exec") {
        return exec(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "__agent") {
        let mut agent_args = args;
        agent_args.remove(1);
        return bramble_agent::cli::main(agent_args);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log(&cli.command))),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bramble: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Master {
            listen,
            broker,
            username,
            password_file,
            credential,
            ca_file,
            allocation_interval,
            ha_discovery,
            ha_prefix,
            http,
            no_http,
            artifacts,
            standby,
            name,
            state_dir,
            insecure_allow_anonymous,
        } => {
            let config = Config {
                ha_discovery,
                ha_prefix,
                ..Config::default()
            };
            let http = (!no_http).then_some((http, artifacts));
            let leadership = Leadership {
                name: name.unwrap_or_else(leadership::default_name),
                standby,
                ..Leadership::default()
            };
            // An external broker: --broker, else BRAMBLE_BROKER (which may carry a password).
            let external = broker.is_some()
                || std::env::var(bramble_mqtt::sources::BROKER_ENV).is_ok_and(|b| !b.is_empty());
            let broker = external.then_some(BrokerArgs {
                broker,
                username,
                password_file,
                credential,
                ca_file,
                ..BrokerArgs::default()
            });
            runtime.block_on(master(
                (listen, state_dir.path, insecure_allow_anonymous),
                broker,
                allocation_interval,
                config,
                leadership,
                http,
            ))
        }
        Command::Credentials { command } => command.run().map(print).map_err(|e| e.to_string()),
        Command::BrokerConfig { command } => command.run().map(print).map_err(|e| e.to_string()),
        Command::Status(q) => runtime.block_on(query(Query::Status, q)),
        Command::Agents(q) => runtime.block_on(query(Query::Agents, q)),
        Command::Frameworks(q) => runtime.block_on(query(Query::Frameworks, q)),
        Command::Tasks(q) => runtime.block_on(query(Query::Tasks, q)),
        Command::Offers(q) => runtime.block_on(query(Query::Offers, q)),
        Command::Run(args) => return runtime.block_on(run_once(args)),
        Command::Kill { task, grace, query } => runtime.block_on(kill(&task, grace, query)),
        Command::Up {
            listen,
            no_demo,
            work_dir,
            http,
        } => runtime.block_on(bramble::up::run(listen, !no_demo, work_dir, http)),
        Command::Deploy {
            inventory,
            master,
            dist,
            parallel,
            ssh_options,
            connect_timeout,
            register_timeout,
            no_systemd,
            no_credentials,
            state_dir,
        } => {
            let dist = dist.unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                    .join("dist")
            });
            let options = bramble::deploy::Options {
                inventory,
                master,
                dist,
                parallel: parallel.into(),
                ssh_options,
                connect_timeout: std::time::Duration::from_secs(connect_timeout),
                register_timeout: std::time::Duration::from_secs(register_timeout),
                no_systemd,
                progress: true,
                credentials: (!no_credentials).then_some(state_dir.path),
            };
            runtime.block_on(deploy(options))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bramble: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bramble __exec FRAMEWORK ARGS…`: a demo framework's executor, run as a task.
fn exec(args: &[std::ffi::OsString]) -> ExitCode {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.first().map(String::as_str) {
        Some("pi") => bramble_pi::executor_main(&args[1..]),
        Some("wordcount") => bramble_wordcount::executor_main(&args[1..]),
        Some("sensor") => bramble_sensor::executor_main(&args[1..]),
        other => {
            eprintln!("bramble __exec: unknown framework {other:?} (pi, wordcount, sensor)");
            ExitCode::from(64)
        }
    }
}

/// Prints a command's output (nothing when empty).
fn print(text: String) {
    print!("{text}");
}

/// The master: `embedded` is where its embedded broker listens, its state directory (the
/// credential store) and whether that broker lets anonymous clients in.
async fn master(
    embedded: (SocketAddr, PathBuf, bool),
    broker: Option<BrokerArgs>,
    allocation_interval: f64,
    config: Config,
    mut leadership: Leadership,
    http: Option<(SocketAddr, PathBuf)>,
) -> Result<(), String> {
    use bramble::credentials::cli as credentials;
    let (listen, state_dir, insecure_allow_anonymous) = embedded;
    leadership.epoch_file = Some(bramble::epoch_file::EpochFile::in_dir(&state_dir));
    let http_keys;
    let addr = match broker {
        Some(args) => {
            // A login given with the broker (flags, environment, URL) is the broker's own;
            // the master's stored credential is the fallback.
            let started = credentials::external_broker(&state_dir).map_err(|e| e.to_string())?;
            leadership.login = started.login;
            leadership.principal_keys = Some(started.principal_keys);
            http_keys = started.http_keys;
            args.brokers(None)?
        }
        None => {
            let started =
                credentials::embedded_broker(listen, &state_dir, insecure_allow_anonymous)
                    .map_err(|e| e.to_string())?;
            leadership.login = started.login;
            leadership.principal_keys = Some(started.principal_keys);
            http_keys = started.http_keys;
            let a = broker::connect_addr(listen);
            println!("embedded MQTT broker listening on {listen}");
            BrokerAddr::new(a.ip().to_string(), a.port()).into()
        }
    };
    if !(allocation_interval.is_finite() && allocation_interval > 0.0) {
        return Err("--allocation-interval must be a positive number of seconds".into());
    }
    let authorization =
        bramble::credentials::grants::load(&state_dir).map_err(|e| e.to_string())?;
    match &authorization {
        Some(_) => tracing::info!(
            file = %state_dir.join(bramble::credentials::grants::FILE_NAME).display(),
            "frameworks run only as the operator grants (restart the master after changing it)"
        ),
        None => tracing::info!(
            "no grants file: frameworks' roles, weights and task users stand as they claim them"
        ),
    }
    let config = Config {
        allocation_interval_ms: (allocation_interval * 1000.0) as u64,
        authorization,
        ..config
    };
    let web = http.as_ref().map(|_| web::WebState::new());
    let server = match (http, &web) {
        (Some((addr, dir)), Some(state)) => {
            let listener = web::bind(addr).await.map_err(|e| e.to_string())?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            if !dir.is_dir() {
                tracing::warn!(
                    "the artifact directory {} does not exist: every artifact is a 404",
                    dir.display()
                );
            }
            println!(
                "dashboard on {url}  (metrics: {url}metrics; artifacts from {} at {url}artifacts/NAME)",
                dir.display(),
                url = web::url(bound),
            );
            let routes = match http_keys {
                Some(keys) => {
                    tracing::info!(
                        "artifacts are served only to requests signed by an agent or an operator of the credential store"
                    );
                    let auth = bramble::http::HttpAuth::new(keys, state.http_refusals());
                    bramble::http::Routes::new().signed_artifacts(dir, auth)
                }
                None => {
                    tracing::warn!(
                        "no credential store: artifacts are served to anyone who asks (HTTP requests are not authenticated)"
                    );
                    bramble::http::Routes::new().artifacts(dir)
                }
            };
            let router = routes.merge(web::routes(state.clone())).build();
            Some(tokio::spawn(web::serve(listener, router, ctrl_c())))
        }
        _ => None,
    };
    let outcome = leadership::run(config, addr, leadership, None, web, ctrl_c()).await;
    if let Some(server) = server {
        match server.await {
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("the HTTP server: {e}"),
            Ok(Ok(())) => {}
        }
    }
    outcome.map_err(|e| e.to_string())
}

/// `bramble deploy`: the summary on stdout; an error when any board failed.
async fn deploy(options: bramble::deploy::Options) -> Result<(), String> {
    let outcomes = bramble::deploy::run(options)
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", bramble::deploy::summary(&outcomes));
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} of {} boards failed", outcomes.len()))
    }
}

/// Ctrl-C or SIGTERM (what systemd and `kill` send): the master stops cleanly, saying `offline`
/// (or `gone`, as a standby) instead of leaving it to its last will.
async fn ctrl_c() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Query {
    Status,
    Agents,
    Frameworks,
    Tasks,
    Offers,
}

/// The broker of `args` and what its retained status topics hold, within `--timeout`.
async fn collect(
    args: &QueryArgs,
    what: QueryKind,
) -> Result<(Brokers, std::time::Duration, bramble::query::StatusSnapshot), String> {
    let addr = args.broker.brokers(operator_credential())?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    let timeout = std::time::Duration::from_secs_f64(args.timeout);
    let snapshot = status_of(&addr, &args.broker, what, timeout).await?;
    Ok((addr, timeout, snapshot))
}

/// The cluster's status: the master's answer to a signed status query (any size of cluster), or,
/// when no master answers within 2 s (it is down, or older), the retained status topics (which
/// say whether the master is offline; a broker may hand over only so many of them).
async fn status_of(
    addr: &Brokers,
    broker: &BrokerArgs,
    what: QueryKind,
    timeout: std::time::Duration,
) -> Result<bramble::query::StatusSnapshot, String> {
    use bramble::query::QueryError;
    if let Ok((operator, key)) = operator_signer(broker) {
        let wait = timeout.min(std::time::Duration::from_secs(2));
        match bramble::query::ask(addr, &operator, &key, what, wait).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(e @ QueryError::Refused(_)) => return Err(e.to_string()),
            Err(e) => {
                tracing::debug!("no answer to the status query ({e}): reading the retained status")
            }
        }
    }
    bramble::query::collect(addr, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// `bramble status|agents|frameworks|tasks|offers`: reads the retained status topics and prints them.
async fn query(what: Query, args: QueryArgs) -> Result<(), String> {
    use bramble::query;
    let asked = match what {
        Query::Status => QueryKind::Cluster,
        Query::Agents => QueryKind::Agents,
        Query::Frameworks => QueryKind::Frameworks,
        Query::Tasks => QueryKind::Tasks,
        Query::Offers => QueryKind::Offers,
    };
    let (addr, _, mut snapshot) = collect(&args, asked).await?;
    let kind = match what {
        Query::Status => {
            let offline =
                snapshot
                    .master_status()
                    .filter(|m| m.state == bramble_master_core::status::Liveness::Offline)
                    .map(|m| {
                        format!(
                        "master offline on {addr}: master {}{:x} is gone (its last will said so)",
                        m.name.as_deref().map_or(String::new(), |n| format!("{n}, epoch ")),
                        m.master_epoch
                    )
                    });
            let (Some(json), Some(cluster)) = (snapshot.cluster(), snapshot.cluster_status())
            else {
                if let Some(offline) = offline {
                    return Err(offline);
                }
                if let Some(why) = snapshot.garbage(Some("cluster")).first() {
                    return Err(format!("{why} (on {addr})"));
                }
                return Err(format!(
                    "no cluster status on {addr}: is a master running there?"
                ));
            };
            if args.json {
                println!("{json:#}");
            } else {
                print!("{}", query::render_cluster(cluster));
                if let Some(master) = snapshot.master_status() {
                    if let Some(name) = master.name.as_deref() {
                        println!("led by master {name} (epoch {:#x})", cluster.master_epoch);
                    }
                    if !master.followers.is_empty() {
                        let names: Vec<String> = master
                            .followers
                            .iter()
                            .map(|f| {
                                let kind = if f.standby { " (standby)" } else { "" };
                                format!("{}{kind}", f.name)
                            })
                            .collect();
                        println!("ready to take over: {}", names.join(", "));
                    }
                }
            }
            // The figures above are the last the master published.
            return offline.map_or(Ok(()), Err);
        }
        Query::Agents => "agent",
        Query::Frameworks => "framework",
        Query::Tasks => "task",
        Query::Offers => "offer",
    };
    // The filters, then the page.
    let matching: Vec<String> = snapshot
        .topics(kind)
        .into_iter()
        .filter(|t| snapshot.entries.get(t).is_some_and(|e| args.keeps(e)))
        .collect();
    let shown: std::collections::BTreeSet<&String> = matching
        .iter()
        .skip(args.offset)
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    let more = matching.len().saturating_sub(args.offset + shown.len());
    let hidden: Vec<String> = snapshot
        .topics(kind)
        .into_iter()
        .filter(|t| !shown.contains(t))
        .collect();
    for t in hidden {
        snapshot.insert(&t, b"");
    }
    if args.json {
        let items = snapshot.kind(kind);
        let array = serde_json::Value::Array(items.into_iter().cloned().collect());
        println!("{array:#}");
        return garbage_named(&snapshot, kind);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let table = match what {
        Query::Agents => query::render_agents(&snapshot.agents()),
        Query::Frameworks => query::render_frameworks(&snapshot.frameworks()),
        Query::Tasks => query::render_tasks(&snapshot.tasks()),
        Query::Offers | Query::Status => query::render_offers(&snapshot.offers(), now_ms),
    };
    print!("{table}");
    if more > 0 {
        println!("… and {more} more (--offset {})", args.offset + shown.len());
    }
    garbage_named(&snapshot, kind)
}

/// An error naming the topics of `kind` whose retained payload is not their shape (so they are
/// missing from what was printed), if any.
fn garbage_named(snapshot: &bramble::query::StatusSnapshot, kind: &str) -> Result<(), String> {
    let garbage = snapshot.garbage(Some(kind));
    if garbage.is_empty() {
        return Ok(());
    }
    Err(format!(
        "left out, as their retained payload is garbage:\n  {}",
        garbage.join("\n  ")
    ))
}

/// `bramble run`: one task through a one-off framework; the exit code is the task's.
async fn run_once(args: RunArgs) -> ExitCode {
    use bramble::run::{registration, OneShot, RunSpec};
    let fail = |msg: String| {
        eprintln!("bramble run: {msg}");
        ExitCode::from(2)
    };
    let brokers = match args.broker.brokers(operator_credential()) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if !(args.cpus.is_finite() && args.cpus > 0.0 && args.cpus <= 1_000.0) {
        return fail("--cpus must be a number of cores above 0".into());
    }
    let cpu_millis = ((args.cpus * 1000.0).round() as u32).max(1);
    let pid = std::process::id();
    let spec = RunSpec {
        task_id: format!("run-{pid}"),
        argv: args.command,
        resources: agent_nostd_core::Resources::new(cpu_millis, args.mem, args.disk),
        constraints: args.constraints,
    };
    let credential = match args.broker.credential(operator_credential()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let config = bramble_sdk::scheduler::SchedulerConfig {
        brokers,
        client_name: format!("bramble-run-{pid}"),
        registration: registration(&args.name),
        credential,
    };
    match bramble_sdk::scheduler::run_once_until(config, OneShot::new(spec), ctrl_c()).await {
        Ok(done) if done.ended.is_none() => ExitCode::from(130),
        Ok(done) => ExitCode::from(done.exit_status()),
        Err(e) => fail(e.to_string()),
    }
}

/// The operator's credential file in its default place, `$XDG_CONFIG_HOME/bramble/credential`
/// (`~/.config/bramble/credential`), if it exists: the CLI's broker login when nothing else
/// gives one.
fn operator_credential() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = config.join("bramble").join("credential");
    path.is_file().then_some(path)
}

/// Who signs an operator command, and with what key: the operator credential (`--credential`,
/// `BRAMBLE_CREDENTIAL`, else `~/.config/bramble/credential`), or, without one, the anonymous key
/// that only a master run without credentials (`bramble up`) takes.
fn operator_signer(
    broker: &BrokerArgs,
) -> Result<(String, agent_nostd_core::auth::MessageKey), String> {
    let Some(credential) = broker.credential(operator_credential())? else {
        return Ok((
            "operator-anonymous".to_owned(),
            agent_nostd_core::auth::MessageKey::anonymous(),
        ));
    };
    if credential.principal.kind() != agent_nostd_core::auth::PrincipalKind::Operator {
        return Err(format!(
            "the credential is {}'s: only an operator may kill another framework's task",
            credential.principal
        ));
    }
    Ok((
        credential.principal.username().to_string(),
        credential.secret.message_key(),
    ))
}

/// `bramble kill TASK`: asks the master to kill the task, then waits for its status to show the end.
async fn kill(spec: &str, grace_s: u32, args: QueryArgs) -> Result<(), String> {
    use bramble::query;
    use bramble_master_core::status::state_name;
    let (addr, timeout, snapshot) = collect(&args, QueryKind::Tasks).await?;
    let (fid, tid, task) = query::find_task(&snapshot, spec)?;
    if query::task_ended(task) {
        // The state as a JSON string, quotes included.
        let state = serde_json::Value::from(state_name(task.state));
        return Err(format!("task {fid}/{tid} already ended ({state})"));
    }
    let grace_ms = grace_s.saturating_mul(1_000);
    let (operator, key) = operator_signer(&args.broker)?;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let command = serde_json::json!({
        "framework_id": fid,
        "task_id": tid,
        "grace_ms": grace_ms,
        "operator": operator,
        "time": time,
    });
    let payload =
        bramble_master_core::master::sign_operator_command(command.to_string().as_bytes(), &key);
    bramble::mqtt::publish_once(
        &addr,
        bramble_master_core::master::OPERATOR_KILL_TOPIC,
        payload,
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    eprintln!("bramble kill: asked the master to kill {fid}/{tid}");
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(u64::from(grace_ms))
        + timeout
        + std::time::Duration::from_secs(10);
    loop {
        let snapshot = status_of(&addr, &args.broker, QueryKind::Tasks, timeout).await?;
        match snapshot.task(&fid, &tid) {
            Some(t) if query::task_ended(t) => {
                println!("{fid}/{tid}: {}", state_name(t.state));
                return Ok(());
            }
            None => {
                println!("{fid}/{tid}: gone");
                return Ok(());
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{fid}/{tid} has not ended yet"));
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masters_default_log_leaves_out_the_embedded_brokers_per_connection_lines() {
        let cli = Cli::try_parse_from(["bramble", "master"]).unwrap();
        let filter = default_log(&cli.command);
        for target in [
            "rumqttd::router::routing=off",
            "rumqttd::server::broker=off",
        ] {
            assert!(filter.contains(target), "{filter}");
        }
        assert!(tracing_subscriber::EnvFilter::try_new(filter).is_ok());
    }
}
