//! The processes the bench runs and watches: the real `bramble master` (on its embedded broker or
//! on Mosquitto), Mosquitto itself, their CPU and memory read from `/proc`, and the master's
//! `/metrics` read over plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `bramble` binary under test.
pub const BRAMBLE: &str = env!("CARGO_BIN_EXE_bramble");

/// Environment variables that would point a child at another broker or login: removed.
const FOREIGN_ENV: &[&str] = &[
    "BRAMBLE_BROKER",
    "BRAMBLE_USERNAME",
    "BRAMBLE_PASSWORD",
    "BRAMBLE_PASSWORD_FILE",
    "BRAMBLE_CREDENTIAL",
    "BRAMBLE_STATE_DIR",
    "BRAMBLE_CA_FILE",
];

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process, killed and reaped when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// What it is, for messages.
    pub name: &'static str,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mosquitto on `port` (loopback, anonymous, no persistence), configured in `dir`, its log there
/// too; returns once it accepts connections.
/// `max_queued_messages` is `queue` (Mosquitto's default is 1,000 QoS 1 messages a client; 0 is
/// no limit).
pub fn start_mosquitto(dir: &Path, port: u16, queue: u64) -> Result<Proc, String> {
    let config = dir.join("mosquitto.conf");
    // Mosquitto's defaults but for the queue (an option) and the packet size: 1 MiB, as every
    // Bramble broker carries (bramble_mqtt::MAX_PACKET); no connection limit.
    let text = format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_connections -1\n\
         max_packet_size 1048576\n\
         max_inflight_messages 20\n\
         max_queued_messages {queue}\n\
         set_tcp_nodelay true\n\
         log_type error\n\
         log_type warning\n\
         log_dest stderr\n"
    );
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    let log = std::fs::File::create(dir.join("mosquitto.log")).map_err(|e| e.to_string())?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start mosquitto (apt-get install mosquitto): {e}"))?;
    let mut proc = Proc {
        child,
        name: "mosquitto",
    };
    wait_for_port(&mut proc, port, Duration::from_secs(10))?;
    Ok(proc)
}

/// Where the master's MQTT traffic goes.
pub enum MasterBroker {
    /// Its embedded broker, listening on this loopback port, open to anonymous clients.
    Embedded(u16),
    /// Mosquitto on this loopback port.
    Mosquitto(u16),
}

/// `bramble master` on `broker`, its HTTP server on `http_port`, its state and log in `dir`;
/// returns once its HTTP server answers.
pub fn start_master(
    dir: &Path,
    broker: &MasterBroker,
    http_port: u16,
    allocation_interval: f64,
) -> Result<Proc, String> {
    let state = dir.join("state");
    let artifacts = dir.join("artifacts");
    for d in [&state, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let mut cmd = Command::new(BRAMBLE);
    cmd.arg("master")
        .arg("--state-dir")
        .arg(&state)
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--http")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--allocation-interval")
        .arg(allocation_interval.to_string());
    match broker {
        // The simulated agents have no credentials: the embedded broker must let them in, and
        // the master must take the anonymous key.
        MasterBroker::Embedded(port) => {
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--insecure-allow-anonymous");
        }
        // With no credential store in its state directory, a master on an external broker
        // takes the anonymous key.
        MasterBroker::Mosquitto(port) => {
            cmd.arg("--broker").arg(format!("mqtt://127.0.0.1:{port}"));
        }
    }
    for var in FOREIGN_ENV {
        cmd.env_remove(var);
    }
    let log = std::fs::File::create(master_log(dir)).map_err(|e| e.to_string())?;
    let out = log.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdout(out)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {BRAMBLE}: {e}"))?;
    let mut proc = Proc {
        child,
        name: "bramble master",
    };
    wait_for_port(&mut proc, http_port, Duration::from_secs(20))?;
    Ok(proc)
}

/// The master's log (stdout and stderr) in `dir`.
pub fn master_log(dir: &Path) -> PathBuf {
    dir.join("master.log")
}

/// The last `lines` lines of the file at `path` (without terminal colours), for a failure
/// message.
pub fn tail(path: &Path, lines: usize) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    // Drop `ESC [ … m` colour sequences.
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn wait_for_port(proc: &mut Proc, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proc.exited() {
            return Err(format!("{} exited at start: {status}", proc.name));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} does not listen on {port}", proc.name));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A process's CPU time so far and its memory, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set now, in MiB.
    pub rss_mib: f64,
    /// The peak resident set, in MiB.
    pub peak_rss_mib: f64,
    /// When it was read.
    pub at: Instant,
}

/// Reads `pid`'s [`Usage`].
pub fn usage(pid: u32) -> Result<Usage, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux architecture /proc reports to user space.
    let cpu_secs = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Usage {
        cpu_secs,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        at: Instant::now(),
    })
}

/// CPU use between two readings, in percent of one core.
pub fn cpu_percent(from: &Usage, to: &Usage) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_secs - from.cpu_secs) / wall * 100.0
}

/// The master's `/metrics` page (HTTP/1.1 on loopback, read to its end).
pub fn scrape(http_port: u16) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", http_port)).map_err(|e| format!("/metrics: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("/metrics: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("/metrics: {e}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!(
            "/metrics answered {:?}",
            text.lines().next().unwrap_or("")
        )),
    }
}

/// The value of the sample `name` (with its labels, e.g. `bramble_agents{state="online"}`).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of the family `name` (all its labels).
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The messages the master shed from its outgoing queue so far, from its `/metrics`.
pub fn messages_shed(http_port: u16) -> Option<u64> {
    let page = scrape(http_port).ok()?;
    Some(metric_sum(&page, "bramble_master_messages_shed_total") as u64)
}

/// The agents the master holds online, from its `/metrics`.
pub fn agents_online(http_port: u16) -> Result<u64, String> {
    let page = scrape(http_port)?;
    metric(&page, "bramble_agents{state=\"online\"}")
        .map(|v| v as u64)
        .ok_or_else(|| "no bramble_agents{state=\"online\"} in /metrics".to_owned())
}

/// The master's gauges that tell where a stall sits (agents, frameworks, offers outstanding, tasks
/// by state, its outgoing queues), one line.
pub fn gauges(http_port: u16) -> String {
    let Ok(page) = scrape(http_port) else {
        return "no /metrics".to_owned();
    };
    page.lines()
        .filter(|l| {
            [
                "bramble_agents{",
                "bramble_frameworks ",
                "bramble_offers_outstanding ",
                "bramble_tasks{",
                "bramble_master_outgoing_queue_depth{",
                "bramble_master_loop_last_turn_age_seconds ",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(|l| l.trim_start_matches("bramble_"))
        .collect::<Vec<_>>()
        .join(", ")
}
