//! Scale: N simulated agents through one real `bramble master`, on its embedded broker and on a
//! Mosquitto the bench starts (issue 15). Each agent is a real `AgentCore` at its default
//! intervals on its own MQTT connection; tasks are simulated (started at once, exited 0 after
//! `--task-ms`). Prints, one figure a line, for each broker:
//!
//! - the time until the master's `bramble_agents{state="online"}` gauge reaches N;
//! - master (and Mosquitto) CPU and RSS over a steady window of `--steady-secs`, and the bench's
//!   own CPU (it must not be the bottleneck);
//! - `bramble run -- /bin/true` (the real CLI): accept → TASK_RUNNING from its timed stderr
//!   lines, and its whole run;
//! - end-to-end placements per second (tasks seen RUNNING or FINISHED by their framework) with
//!   `--frameworks` SDK schedulers that fill every offer;
//! - agent reconnections (ConnAcks after an agent's first).
//!
//! It exits non-zero when registration, `bramble run` or placements stall past their deadline,
//! or agents drop off (the liveness check CI runs at 2,000 agents).
//!
//! The master runs in its test mode: `--insecure-allow-anonymous` on the embedded broker, and no
//! credential store on Mosquitto, so everyone signs with the public anonymous key.
//!
//! ```sh
//! cargo bench -p bramble --bench scale -- --agents 2000 --broker both --steady-secs 5
//! cargo bench -p bramble --bench scale -- --agents 10000 --broker mosquitto --frameworks 8
//! ```
//!
//! # Layout
//!
//! - this file: the options, and one run per broker;
//! - [`agents`]: the simulated agents;
//! - [`procs`]: the master and Mosquitto processes, `/proc` readings and `/metrics`;
//! - [`frameworks`]: `bramble run`, and the placers.

mod agents;
mod frameworks;
mod procs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_mqtt::BrokerAddr;

use agents::Counters;
use frameworks::{PlaceCounters, Placer};
use procs::{cpu_percent, usage, MasterBroker, Proc, Usage};

/// Which broker a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Mosquitto,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "the embedded broker",
            Kind::Mosquitto => "Mosquitto",
        }
    }
}

/// The command line.
#[derive(Debug, Clone)]
struct Options {
    agents: usize,
    brokers: Vec<Kind>,
    frameworks: usize,
    steady_secs: u64,
    place_secs: u64,
    task_ms: u64,
    allocation_interval: f64,
    register_timeout: Duration,
    mosquitto_queue: u64,
    recover_secs: u64,
}

/// Why the options could not be read.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("bad value for {0}: {1:?}")]
    Bad(String, String),
    #[error("unknown option {0:?}")]
    Unknown(String),
}

fn options() -> Result<Options, UsageError> {
    let mut o = Options {
        agents: 1000,
        brokers: vec![Kind::Embedded, Kind::Mosquitto],
        frameworks: 4,
        steady_secs: 10,
        place_secs: 10,
        task_ms: 50,
        allocation_interval: 1.0,
        register_timeout: Duration::ZERO,
        mosquitto_queue: 1000,
        recover_secs: 60,
    };
    let mut register_timeout = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` adds `--bench`.
        if flag == "--bench" {
            continue;
        }
        let mut value = || args.next().ok_or_else(|| UsageError::Missing(flag.clone()));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, UsageError> {
            v.parse().map_err(|_| UsageError::Bad(flag.to_owned(), v))
        }
        match flag.as_str() {
            "--agents" => o.agents = num(&flag, value()?)?,
            "--frameworks" => o.frameworks = num(&flag, value()?)?,
            "--steady-secs" => o.steady_secs = num(&flag, value()?)?,
            "--place-secs" => o.place_secs = num(&flag, value()?)?,
            "--task-ms" => o.task_ms = num(&flag, value()?)?,
            "--allocation-interval" => o.allocation_interval = num(&flag, value()?)?,
            "--recover-secs" => o.recover_secs = num(&flag, value()?)?,
            "--mosquitto-queue" => o.mosquitto_queue = num(&flag, value()?)?,
            "--register-timeout" => register_timeout = Some(num::<u64>(&flag, value()?)?),
            "--broker" => {
                o.brokers = match value()?.as_str() {
                    "embedded" => vec![Kind::Embedded],
                    "mosquitto" => vec![Kind::Mosquitto],
                    "both" => vec![Kind::Embedded, Kind::Mosquitto],
                    other => return Err(UsageError::Bad(flag.clone(), other.to_owned())),
                }
            }
            _ => return Err(UsageError::Unknown(flag)),
        }
    }
    // A minute, and a second more per hundred agents (the target is 10,000 in 30 s).
    o.register_timeout =
        Duration::from_secs(register_timeout.unwrap_or(60 + o.agents as u64 / 100));
    Ok(o)
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scale: {e}\nusage: cargo bench -p bramble --bench scale -- [--agents N] [--broker embedded|mosquitto|both] [--frameworks F] [--steady-secs S] [--place-secs P] [--task-ms MS] [--allocation-interval SECS] [--register-timeout SECS] [--mosquitto-queue N] [--recover-secs SECS]");
            std::process::exit(2);
        }
    };
    raise_open_files(o.agents);
    let mut failed = Vec::new();
    for &kind in &o.brokers {
        if let Err(e) = run(kind, &o) {
            println!("  STALLED/FAILED on {}: {e}", kind.name());
            failed.push(kind.name());
        }
    }
    if !failed.is_empty() {
        eprintln!("scale: liveness check failed on {}", failed.join(" and "));
        std::process::exit(1);
    }
}

/// Raises the soft open-file limit to the hard one: every agent holds a socket here, and the
/// master (or Mosquitto), which inherits the limit, one per agent too.
fn raise_open_files(agents: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    eprintln!("scale: cannot raise the open-file limit to {hard}: {e}");
                }
            }
            if (hard as usize) < agents + 1000 {
                eprintln!(
                    "scale: the open-file limit ({hard}) is below {} agents + 1,000: connections will fail",
                    agents
                );
            }
        }
        Err(e) => eprintln!("scale: cannot read the open-file limit: {e}"),
    }
}

/// One run on `kind`: start, register, steady window, `bramble run`, placements, stop.
fn run(kind: Kind, o: &Options) -> Result<(), String> {
    let n = o.agents;
    let dir = tempfile::Builder::new()
        .prefix("bramble-scale-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    println!(
        "scale: {n} simulated agents on {}, {} frameworks",
        kind.name(),
        o.frameworks
    );
    let port = procs::free_port();
    let http_port = procs::free_port();
    let mosquitto = match kind {
        Kind::Embedded => None,
        Kind::Mosquitto => Some(procs::start_mosquitto(dir.path(), port, o.mosquitto_queue)?),
    };
    let master_broker = match kind {
        Kind::Embedded => MasterBroker::Embedded(port),
        Kind::Mosquitto => MasterBroker::Mosquitto(port),
    };
    let master = procs::start_master(dir.path(), &master_broker, http_port, o.allocation_interval)?;
    println!(
        "  mode: test mode, every client signs with the public anonymous key ({})",
        match kind {
            Kind::Embedded => "bramble master --insecure-allow-anonymous",
            Kind::Mosquitto =>
                "bramble master --broker, no credential store; Mosquitto allow_anonymous",
        }
    );
    if kind == Kind::Mosquitto {
        let default = if o.mosquitto_queue == 1000 {
            " (its default)"
        } else {
            ""
        };
        println!(
            "  Mosquitto: max_queued_messages {} a client{default}",
            o.mosquitto_queue
        );
    }
    println!(
        "  agents: real AgentCore, default intervals, one MQTT connection each; tasks simulated ({} ms)",
        o.task_ms
    );
    let log = procs::master_log(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut stage = Stage {
        o,
        master,
        mosquitto,
        http_port,
        broker: BrokerAddr::new("127.0.0.1", port),
        counters: Arc::new(Counters::default()),
        runtime: &runtime,
        dir: dir.path(),
    };
    let result = stage.stages();
    if result.is_err() {
        println!(
            "  the master's last log lines:\n{}",
            procs::tail(&log, 15)
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The master first, so the agents' last wills are not a storm it must take in.
    let Stage {
        master, mosquitto, ..
    } = stage;
    drop(master);
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(mosquitto);
    result
}

/// A run in progress.
struct Stage<'a> {
    o: &'a Options,
    master: Proc,
    mosquitto: Option<Proc>,
    http_port: u16,
    broker: BrokerAddr,
    counters: Arc<Counters>,
    runtime: &'a tokio::runtime::Runtime,
    dir: &'a std::path::Path,
}

/// The three processes' usage: master, broker (Mosquitto, when it runs), the bench.
struct Readings {
    master: Usage,
    broker: Option<Usage>,
    bench: Usage,
}

impl Stage<'_> {
    fn stages(&mut self) -> Result<(), String> {
        self.register()?;
        std::thread::sleep(Duration::from_secs(2));
        self.steady()?;
        self.bramble_runs()?;
        self.placements()?;
        self.recovered()?;
        if let Some(shed) = procs::messages_shed(self.http_port) {
            println!("  master: {shed} messages shed from its outgoing queue over the run");
        }
        let c = &self.counters;
        println!(
            "  agent reconnections over the run: {} ({} connections lost or refused, {} publishes deferred by full queues)",
            Counters::get(&c.reconnects),
            Counters::get(&c.lost),
            Counters::get(&c.deferred),
        );
        println!("  live: offers flowed, nothing stalled");
        Ok(())
    }

    fn readings(&self) -> Result<Readings, String> {
        Ok(Readings {
            master: usage(self.master.pid())?,
            broker: match &self.mosquitto {
                Some(m) => Some(usage(m.pid())?),
                None => None,
            },
            bench: usage(std::process::id())?,
        })
    }

    fn print_usage(&self, what: &str, from: &Readings, to: &Readings) {
        let m = cpu_percent(&from.master, &to.master);
        let master_name = if to.broker.is_some() {
            "master"
        } else {
            "master+embedded broker"
        };
        println!(
            "  {what}: {master_name} CPU {m:.1} % of a core, RSS {:.1} MiB (peak {:.1} MiB)",
            to.master.rss_mib, to.master.peak_rss_mib
        );
        if let (Some(f), Some(t)) = (&from.broker, &to.broker) {
            let b = cpu_percent(f, t);
            println!(
                "  {what}: Mosquitto CPU {b:.1} % of a core, RSS {:.1} MiB (peak {:.1} MiB)",
                t.rss_mib, t.peak_rss_mib
            );
            println!(
                "  {what}: master+Mosquitto CPU {:.1} % of a core, RSS {:.1} MiB",
                m + b,
                to.master.rss_mib + t.rss_mib
            );
        }
        println!(
            "  {what}: the bench itself (agents, frameworks) CPU {:.1} % of a core, RSS {:.1} MiB",
            cpu_percent(&from.bench, &to.bench),
            to.bench.rss_mib
        );
    }

    fn master_alive(&mut self) -> Result<(), String> {
        if let Some(status) = self.master.exited() {
            return Err(format!("the master exited: {status}"));
        }
        if let Some(m) = self.mosquitto.as_mut() {
            if let Some(status) = m.exited() {
                return Err(format!("Mosquitto exited: {status}"));
            }
        }
        Ok(())
    }

    /// Starts the agents and waits until the master holds all of them online.
    fn register(&mut self) -> Result<(), String> {
        let n = self.o.agents as u64;
        let before = self.readings()?;
        let started = Instant::now();
        {
            let _guard = self.runtime.enter();
            agents::spawn_all(
                self.o.agents,
                &self.broker,
                &self.counters,
                Duration::from_millis(self.o.task_ms),
            );
        }
        let mut marks: Vec<(u64, Option<Duration>)> =
            [n / 2, n * 9 / 10].into_iter().map(|m| (m, None)).collect();
        let mut online = 0;
        loop {
            self.master_alive()?;
            match procs::agents_online(self.http_port) {
                Ok(o) => online = o,
                Err(e) => eprintln!("scale: {e}"),
            }
            for (mark, at) in &mut marks {
                if at.is_none() && online >= *mark {
                    *at = Some(started.elapsed());
                }
            }
            if online >= n {
                break;
            }
            if started.elapsed() > self.o.register_timeout {
                println!("  master: {}", procs::gauges(self.http_port));
                let after = self.readings()?;
                self.print_usage("during registration", &before, &after);
                return Err(format!(
                    "registration stalled: {online} of {n} agents online after {:.1} s ({} cores acknowledged, {} ConnAcks, {} connections lost)",
                    started.elapsed().as_secs_f64(),
                    Counters::get(&self.counters.registered),
                    Counters::get(&self.counters.connacks),
                    Counters::get(&self.counters.lost),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let took = started.elapsed();
        for (mark, at) in marks {
            if let Some(at) = at {
                println!("  registered {mark} agents in {:.2} s", at.as_secs_f64());
            }
        }
        println!(
            "  registered all {n} agents in {:.2} s (master's online gauge; target 10,000 in 30 s)",
            took.as_secs_f64()
        );
        let after = self.readings()?;
        self.print_usage("during registration", &before, &after);
        Ok(())
    }

    /// The steady window: nothing but the agents' own timers.
    fn steady(&mut self) -> Result<(), String> {
        let secs = self.o.steady_secs;
        let reconnects = Counters::get(&self.counters.reconnects);
        let published = Counters::get(&self.counters.published);
        let before = self.readings()?;
        std::thread::sleep(Duration::from_secs(secs));
        self.master_alive()?;
        let after = self.readings()?;
        self.print_usage(&format!("steady {secs} s"), &before, &after);
        println!(
            "  steady {secs} s: agents published {:.0} messages/s; {} reconnections (target: master+broker ≤ 100 % of a core, ≤ 256 MiB)",
            (Counters::get(&self.counters.published) - published) as f64 / secs.max(1) as f64,
            Counters::get(&self.counters.reconnects) - reconnects
        );
        self.check_online("after the steady window")
    }

    /// After the placements: waits up to `--recover-secs` for every agent to be online again.
    fn recovered(&mut self) -> Result<(), String> {
        let n = self.o.agents as u64;
        let started = Instant::now();
        let first = procs::agents_online(self.http_port)?;
        let mut online = first;
        let within = Duration::from_secs(self.o.recover_secs);
        while online < n && started.elapsed() < within {
            std::thread::sleep(Duration::from_millis(200));
            self.master_alive()?;
            online = procs::agents_online(self.http_port)?;
        }
        if first < n {
            println!(
                "  after the placements: {first} of {n} agents online; {online} after {:.1} s more",
                started.elapsed().as_secs_f64()
            );
        }
        if online < n {
            return Err(format!(
                "agents dropped off: {online} of {n} online {} s after the placements",
                self.o.recover_secs
            ));
        }
        Ok(())
    }

    fn check_online(&mut self, when: &str) -> Result<(), String> {
        let online = procs::agents_online(self.http_port)?;
        if online < self.o.agents as u64 {
            return Err(format!(
                "{when}: only {online} of {} agents online",
                self.o.agents
            ));
        }
        Ok(())
    }

    /// `bramble run -- /bin/true`, three times.
    fn bramble_runs(&mut self) -> Result<(), String> {
        let url = format!("mqtt://{}:{}", self.broker.host, self.broker.port);
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        for i in 1..=3 {
            let t = frameworks::bramble_run(&url, &home, Duration::from_secs(60));
            let ms = |d: Option<Duration>| {
                d.map_or("-".to_owned(), |d| {
                    format!("{:.1} ms", d.as_secs_f64() * 1e3)
                })
            };
            println!(
                "  bramble run -- /bin/true #{i}: accept -> RUNNING {} (from its stderr lines; target ≤ 1 s), start -> accept {}, whole run {:.1} ms, exit {}",
                ms(t.accept_to_running),
                ms(t.to_accept),
                t.total.as_secs_f64() * 1e3,
                t.status.map_or("killed at 60 s".to_owned(), |s| s.to_string()),
            );
            if t.status != Some(0) {
                return Err(format!(
                    "bramble run did not finish with 0; its last lines:\n    {}",
                    t.last_lines.join("\n    ")
                ));
            }
        }
        Ok(())
    }

    /// `--frameworks` placers for `--place-secs`, counted from their first task placed.
    fn placements(&mut self) -> Result<(), String> {
        let f = self.o.frameworks.max(1);
        let counters = Arc::new(PlaceCounters::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let broker = self.broker.clone();
        let handles: Vec<_> = (0..f)
            .map(|k| {
                let name = format!("scale-{k}");
                let config = bramble::demo::scheduler_config(&broker, &name, &name);
                let placer = Placer::new(Arc::clone(&counters));
                let mut stop = stop_rx.clone();
                self.runtime.spawn(async move {
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    bramble_sdk::scheduler::run_until(config, placer, stopped).await
                })
            })
            .collect();
        let get = PlaceCounters::get;
        let started = Instant::now();
        let first_deadline = Duration::from_secs(30 + self.o.agents as u64 / 500);
        while get(&counters.placed) == 0 {
            self.master_alive()?;
            if started.elapsed() > first_deadline {
                let _ = stop_tx.send(true);
                println!("  master: {}", procs::gauges(self.http_port));
                return Err(format!(
                    "placements stalled: no task placed within {:.0} s ({} offers, {} tasks launched, {} accepts refused)",
                    first_deadline.as_secs_f64(),
                    get(&counters.offers),
                    get(&counters.launched),
                    get(&counters.refused)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "  placements: first task placed {:.2} s after {f} frameworks started",
            started.elapsed().as_secs_f64()
        );
        let before = self.readings()?;
        let (placed0, running0, finished0) = (
            get(&counters.placed),
            get(&counters.running),
            get(&counters.finished),
        );
        let mut last = placed0;
        let mut quiet = 0;
        let mut longest_quiet = 0;
        let mut peak = 0;
        for _ in 0..self.o.place_secs {
            std::thread::sleep(Duration::from_secs(1));
            let now = get(&counters.placed);
            peak = peak.max(now - last);
            quiet = if now == last { quiet + 1 } else { 0 };
            longest_quiet = longest_quiet.max(quiet);
            last = now;
        }
        let after = self.readings()?;
        let gauges = procs::gauges(self.http_port);
        let _ = stop_tx.send(true);
        let secs = after
            .master
            .at
            .duration_since(before.master.at)
            .as_secs_f64();
        let placed = get(&counters.placed) - placed0;
        let running = get(&counters.running) - running0;
        let finished = get(&counters.finished) - finished0;
        println!(
            "  placements: {:.0} tasks/s placed end to end (first RUNNING or FINISHED seen by the framework) over {secs:.1} s with {f} frameworks (peak second {peak}; target ≥ 20,000/s)",
            placed as f64 / secs
        );
        println!(
            "  placements: updates {:.0} TASK_RUNNING/s, {:.0} TASK_FINISHED/s (copies included); in all {} offers, {} tasks launched, {} RUNNING, {} FINISHED, {} other ends, {} accepts refused",
            running as f64 / secs,
            finished as f64 / secs,
            get(&counters.offers),
            get(&counters.launched),
            get(&counters.running),
            get(&counters.finished),
            get(&counters.other_ends),
            get(&counters.refused)
        );
        self.print_usage("placing", &before, &after);
        self.runtime.block_on(async {
            for h in handles {
                let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
            }
        });
        if let Some(end) = counters.first_other_end() {
            println!("  placements: the first task that did not finish: {end}");
        }
        if longest_quiet >= 5 {
            println!("  master at the end of the window: {gauges}");
            return Err(format!(
                "placements stalled: no task placed for {longest_quiet} s in a row"
            ));
        }
        self.master_alive()
    }
}
