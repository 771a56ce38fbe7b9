//! `bramble deploy`: pushes the right agent build to many boards over SSH, installs it with its
//! config pointing at this master, starts it, and waits until each board's agent registers.
//!
//! For each board of the [inventory], in parallel (at most `--parallel` at a time; one failure
//! never stops the others):
//!
//! 1. **connect**: `ssh … 'uname -m; hostname; id -u'` gives the architecture (for `arch = "auto"`),
//!    the default agent id (the hostname) and whether `sudo -n` is needed;
//! 2. **upload**: `scp` of `DIST/bramble-agent-VERSION-TARGET.tar.gz` (made by `cross/build.sh`)
//!    into a fresh `mktemp -d` directory on the board;
//! 3. **install**: the tarball's `install.sh` with `--broker`, `--agent-id` and one `--attribute`
//!    per inventory attribute (and `--no-systemd` when asked). Re-running upgrades in place:
//!    install.sh renames the new binary over the old one, keeps the config (setting only those
//!    lines) and restarts the agent;
//! 4. **register**: waits until the agent publishes on `bramble/v1/agent/{id}/register`, watched
//!    with a plain MQTT subscription on the master's broker (made before any board is touched).
//!
//! The system `ssh` and `scp` run every step (with `-o BatchMode=yes` and `-o ConnectTimeout=…`),
//! so the user's keys, ssh-agent, `~/.ssh/config` and `known_hosts` apply; `--ssh-option` adds
//! more `-o` options. Every child process has a deadline and is killed when it passes, and only a
//! bounded tail of its output is kept.
//!
//! Progress: one bar per board on stderr (hidden when stderr is not a terminal); then a summary
//! table on stdout. [`run`] returns every board's [`Outcome`].

pub mod inventory;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_nostd_core::topic::{self, AgentTopic, Topic};
use bramble_mqtt::{Session, SessionEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::mqtt::BrokerAddr;
pub use inventory::{Arch, Board, InventoryError, UnameError};

/// The most boards deployed to at once.
pub const MAX_PARALLEL: usize = 64;
/// The most distinct agent ids the registration watcher remembers.
const MAX_WATCHED_IDS: usize = 4096;
/// The most output kept from each ssh/scp stream.
const OUTPUT_LIMIT: u64 = 64 * 1024;
/// How much of a failed command's stderr goes into its error.
const ERROR_TAIL: usize = 400;

/// What `bramble deploy` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The inventory file.
    pub inventory: PathBuf,
    /// The broker the agents use (`mqtt://HOST:PORT`). `None`: each board gets this machine's
    /// address on the route to it, port 1883, and registrations are watched on 127.0.0.1:1883.
    pub master: Option<String>,
    /// Where `cross/build.sh` left the tarballs.
    pub dist: PathBuf,
    /// Boards deployed to at once (1 to [`MAX_PARALLEL`]).
    pub parallel: usize,
    /// Extra `ssh -o` / `scp -o` options, e.g. `StrictHostKeyChecking=accept-new`.
    pub ssh_options: Vec<String>,
    /// ssh's `ConnectTimeout`.
    pub connect_timeout: Duration,
    /// How long each agent has to register once installed.
    pub register_timeout: Duration,
    /// Start the agents without systemd (`install.sh --no-systemd`).
    pub no_systemd: bool,
    /// Draw progress bars on stderr (when it is a terminal).
    pub progress: bool,
}

/// Why `bramble deploy` could not start (a board's own failure is a [`BoardError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The inventory is unreadable or invalid.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// `--master` is not an mqtt:// URL.
    #[error("--master: {0}")]
    BadMaster(String),
    /// The broker could not be reached to watch registrations.
    #[error(
        "cannot watch registrations on the broker at {broker} (is the master running?): {reason}"
    )]
    Broker {
        /// The broker.
        broker: String,
        /// Why.
        reason: String,
    },
    /// `--parallel` or another option is out of range.
    #[error("{0}")]
    BadOption(String),
}

/// A deployment step, for progress and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// ssh in and look at the board.
    Connect,
    /// Copy the tarball.
    Upload,
    /// Run install.sh.
    Install,
    /// Wait for the agent to register.
    Register,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Upload => "upload",
            Step::Install => "install",
            Step::Register => "register",
        })
    }
}

/// Why one board failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// ssh or scp could not be started.
    #[error("{step}: cannot run {program}: {source}")]
    Spawn {
        /// The step.
        step: Step,
        /// `ssh` or `scp`.
        program: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A step did not finish in time.
    #[error("{step}: no answer within {secs} s")]
    Timeout {
        /// The step.
        step: Step,
        /// Its deadline.
        secs: u64,
    },
    /// ssh, scp or the remote command failed.
    #[error("{step}: {program} failed ({status}): {stderr}")]
    Failed {
        /// The step.
        step: Step,
        /// `ssh` or `scp`.
        program: &'static str,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// The board printed something unexpected.
    #[error("{step}: unexpected answer from the board: {answer:?}")]
    Unexpected {
        /// The step.
        step: Step,
        /// The answer (cut).
        answer: String,
    },
    /// `uname -m` names no architecture with a build.
    #[error("connect: {0}")]
    Arch(#[from] UnameError),
    /// The tarball for the board's architecture is missing.
    #[error("upload: {path} is missing: run cross/build.sh {target}")]
    NoTarball {
        /// The Rust target.
        target: &'static str,
        /// The tarball expected.
        path: PathBuf,
    },
    /// The id the hostname gives is another board's.
    #[error("connect: the hostname gives agent id `{id}`, which is {other}'s too: set `id` in the inventory")]
    DuplicateId {
        /// The id.
        id: String,
        /// The other board.
        other: String,
    },
    /// No per-board broker address could be worked out (no `--master`).
    #[error("connect: cannot tell which address of this machine {host} reaches ({reason}): pass --master")]
    NoMasterAddress {
        /// The board.
        host: String,
        /// Why.
        reason: String,
    },
    /// The agent was installed and started but did not register in time.
    #[error("register: agent `{id}` did not register within {secs} s (on the board: journalctl -u bramble-agent, or /var/log/bramble-agent.log with --no-systemd)")]
    NotRegistered {
        /// The agent id.
        id: String,
        /// The deadline.
        secs: u64,
    },
}

/// How one board's deployment ended.
#[derive(Debug)]
pub struct Outcome {
    /// The board (`user@host`).
    pub board: String,
    /// The agent id, once known.
    pub id: Option<String>,
    /// The architecture, once known.
    pub arch: Option<Arch>,
    /// How long it took, start to end.
    pub elapsed: Duration,
    /// `Ok` when the agent registered.
    pub result: Result<(), BoardError>,
}

/// Registrations seen since the watch began: agent id → how many.
type Seen = BTreeMap<String, u64>;

/// Deploys to every board of the inventory and returns how each went (in inventory order).
pub async fn run(options: Options) -> Result<Vec<Outcome>, DeployError> {
    if !(1..=MAX_PARALLEL).contains(&options.parallel) {
        return Err(DeployError::BadOption(format!(
            "--parallel must be 1 to {MAX_PARALLEL}"
        )));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let boards = inventory::load(&options.inventory, home.as_deref())?;
    let (watch_addr, master_url) = match &options.master {
        Some(url) => {
            let addr = BrokerAddr::parse(url).map_err(|e| DeployError::BadMaster(e.to_string()))?;
            (addr, Some(url.clone()))
        }
        None => (
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1883,
            },
            None,
        ),
    };
    let watch_label = format!("mqtt://{}:{}", watch_addr.host, watch_addr.port);
    let (seen, watcher) = watch_registrations(watch_addr, options.connect_timeout)
        .await
        .map_err(|reason| DeployError::Broker {
            broker: watch_label,
            reason,
        })?;
    info!(boards = boards.len(), "deploying");

    // Ids named in the inventory are claimed up front, so a hostname id cannot take one.
    let claimed: Mutex<BTreeMap<String, String>> = Mutex::new(
        boards
            .iter()
            .filter_map(|b| Some((b.id.clone()?, b.label())))
            .collect(),
    );
    let ctx = Arc::new(Ctx {
        options,
        master_url,
        seen,
        claimed,
        version: env!("CARGO_PKG_VERSION"),
    });
    let multi = MultiProgress::with_draw_target(if ctx.options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:28!} [{bar:8}] {wide_msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let permits = Arc::new(Semaphore::new(ctx.options.parallel));
    let mut tasks = Vec::with_capacity(boards.len());
    for board in boards {
        let bar = multi.add(ProgressBar::new(4).with_style(style.clone()));
        bar.set_prefix(board.label());
        bar.set_message("queued");
        let ctx = ctx.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await;
            bar.enable_steady_tick(Duration::from_millis(120));
            let outcome = deploy_board(&ctx, &board, &bar).await;
            match &outcome.result {
                Ok(()) => {
                    info!(board = %outcome.board, id = ?outcome.id, "registered");
                    bar.finish_with_message(format!(
                        "registered as {} in {:.1} s",
                        outcome.id.as_deref().unwrap_or("?"),
                        outcome.elapsed.as_secs_f64()
                    ));
                }
                Err(e) => {
                    warn!(board = %outcome.board, "failed: {e}");
                    bar.abandon_with_message(format!("FAILED: {e}"));
                }
            }
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => warn!("a board's deployment panicked: {e}"),
        }
    }
    watcher.abort();
    Ok(outcomes)
}

/// What every board's deployment shares.
struct Ctx {
    options: Options,
    master_url: Option<String>,
    seen: watch::Receiver<Seen>,
    claimed: Mutex<BTreeMap<String, String>>,
    version: &'static str,
}

/// Subscribes to every agent's register topic and counts registrations per id. Returns once the
/// subscription is acknowledged (within `timeout`), so no later registration is missed.
async fn watch_registrations(
    broker: BrokerAddr,
    timeout: Duration,
) -> Result<(watch::Receiver<Seen>, tokio::task::JoinHandle<()>), String> {
    let (client, eventloop) = bramble_mqtt::connect(bramble_mqtt::ClientConfig {
        clean_session: true,
        request_capacity: 16,
        ..bramble_mqtt::ClientConfig::new(
            format!("bramble-deploy-{}", std::process::id()),
            broker.host,
            broker.port,
        )
    });
    let filter = AgentTopic::Register.filter().as_str().to_owned();
    let mut session = Session::new("deploy", client, eventloop, vec![filter]);
    let (seen_tx, seen_rx) = watch::channel(Seen::new());
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            match session.poll().await {
                SessionEvent::SubAck => {
                    let _ = ready_tx.send(true);
                }
                SessionEvent::Publish(p) => {
                    if let Some(Topic::Agent {
                        id,
                        kind: AgentTopic::Register,
                    }) = topic::parse(&p.topic)
                    {
                        debug!(id, "registration seen");
                        seen_tx.send_modify(|seen| {
                            if seen.len() < MAX_WATCHED_IDS || seen.contains_key(id) {
                                *seen.entry(id.to_owned()).or_default() += 1;
                            }
                        });
                    }
                }
                _ => {}
            }
        }
    });
    let ready = tokio::time::timeout(timeout, ready_rx.wait_for(|ready| *ready))
        .await
        .is_ok_and(|r| r.is_ok());
    if ready {
        Ok((seen_rx, task))
    } else {
        task.abort();
        Err(format!("no subscription within {} s", timeout.as_secs()))
    }
}

/// One board, start to end. Never panics on the board's behalf: every failure is in the outcome.
async fn deploy_board(ctx: &Ctx, board: &Board, bar: &ProgressBar) -> Outcome {
    let start = Instant::now();
    let mut outcome = Outcome {
        board: board.label(),
        id: board.id.clone(),
        arch: board.arch,
        elapsed: Duration::ZERO,
        result: Ok(()),
    };
    outcome.result = deploy_steps(ctx, board, bar, &mut outcome).await;
    outcome.elapsed = start.elapsed();
    outcome
}

async fn deploy_steps(
    ctx: &Ctx,
    board: &Board,
    bar: &ProgressBar,
    outcome: &mut Outcome,
) -> Result<(), BoardError> {
    let o = &ctx.options;
    let connect_secs = o.connect_timeout.as_secs().max(1);
    // A step's deadline: the connection, plus what the step itself may take.
    let deadline = |secs: u64| Duration::from_secs(connect_secs + secs);

    // 1. connect
    bar.set_message("connecting");
    let probe = ssh(ctx, board, "uname -m; hostname; id -u");
    let out = run_bounded(probe, Step::Connect, "ssh", deadline(20)).await?;
    let mut lines = out.lines().map(str::trim);
    let (Some(machine), Some(hostname), Some(uid)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(BoardError::Unexpected {
            step: Step::Connect,
            answer: cut(&out),
        });
    };
    let arch = match board.arch {
        Some(arch) => arch,
        None => Arch::from_uname(machine)?,
    };
    outcome.arch = Some(arch);
    let id = match &board.id {
        Some(id) => id.clone(),
        None => {
            let id = bramble_agent::config::id_from_hostname(hostname);
            let mut claimed = ctx.claimed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = claimed.get(&id) {
                return Err(BoardError::DuplicateId {
                    id,
                    other: other.clone(),
                });
            }
            claimed.insert(id.clone(), board.label());
            id
        }
    };
    outcome.id = Some(id.clone());
    let sudo = if uid == "0" { "" } else { "sudo -n " };
    let broker = match &ctx.master_url {
        Some(url) => url.clone(),
        None => format!("mqtt://{}", local_address_towards(board).await?),
    };
    bar.set_prefix(format!("{} ({id})", board.label()));
    bar.inc(1);

    // 2. upload
    let tarball = arch.tarball(&o.dist, ctx.version);
    if !tarball.is_file() {
        return Err(BoardError::NoTarball {
            target: arch.target(),
            path: tarball,
        });
    }
    bar.set_message(format!("uploading {}", file_name(&tarball)));
    let mktemp = ssh(ctx, board, "mktemp -d /tmp/bramble-deploy.XXXXXX");
    let dir = run_bounded(mktemp, Step::Upload, "ssh", deadline(20)).await?;
    let dir = dir.trim().to_owned();
    if !dir.starts_with("/tmp/bramble-deploy.")
        || !dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        return Err(BoardError::Unexpected {
            step: Step::Upload,
            answer: cut(&dir),
        });
    }
    let copy = scp(ctx, board, &tarball, &dir);
    run_bounded(copy, Step::Upload, "scp", deadline(600)).await?;
    bar.inc(1);

    // 3. install (and start)
    bar.set_message("installing");
    let before = ctx.seen.borrow().get(&id).copied().unwrap_or(0);
    let script = install_command(
        &dir,
        &file_name(&tarball),
        &format!("bramble-agent-{}-{}", ctx.version, arch.target()),
        sudo,
        &broker,
        &id,
        &board.attributes,
        o.no_systemd,
    );
    run_bounded(
        ssh(ctx, board, &script),
        Step::Install,
        "ssh",
        deadline(180),
    )
    .await?;
    bar.inc(1);

    // 4. register
    bar.set_message(format!("waiting for {id} to register"));
    let mut seen = ctx.seen.clone();
    let registered = seen.wait_for(|s| s.get(&id).copied().unwrap_or(0) > before);
    match tokio::time::timeout(o.register_timeout, registered).await {
        Ok(Ok(_)) => {}
        _ => {
            return Err(BoardError::NotRegistered {
                id,
                secs: o.register_timeout.as_secs(),
            })
        }
    }
    bar.inc(1);
    Ok(())
}

/// The remote command that unpacks the tarball in `dir`, runs its install.sh and removes `dir`.
#[allow(clippy::too_many_arguments)]
fn install_command(
    dir: &str,
    tarball: &str,
    unpacked: &str,
    sudo: &str,
    broker: &str,
    id: &str,
    attributes: &BTreeMap<String, String>,
    no_systemd: bool,
) -> String {
    let mut install = format!(
        "{sudo}./{}/install.sh --broker {} --agent-id {}",
        quote(unpacked),
        quote(broker),
        quote(id)
    );
    for (k, v) in attributes {
        install.push_str(" --attribute ");
        install.push_str(&quote(&format!("{k}={v}")));
    }
    if no_systemd {
        install.push_str(" --no-systemd");
    }
    let dir = quote(dir);
    format!(
        "cd {dir} && tar -xzf {} && {install}; rc=$?; cd / && rm -rf {dir}; exit $rc",
        quote(tarball)
    )
}

/// `s` as one word of a POSIX shell command line.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The options every ssh and scp gets.
fn common_options(ctx: &Ctx, board: &Board, cmd: &mut Command) {
    cmd.arg("-o").arg("BatchMode=yes").arg("-o").arg(format!(
        "ConnectTimeout={}",
        ctx.options.connect_timeout.as_secs().max(1)
    ));
    for option in &ctx.options.ssh_options {
        cmd.arg("-o").arg(option);
    }
    if let Some(identity) = &board.identity {
        cmd.arg("-i").arg(identity);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
}

/// `ssh … HOST COMMAND`.
fn ssh(ctx: &Ctx, board: &Board, command: &str) -> Command {
    let mut cmd = Command::new("ssh");
    common_options(ctx, board, &mut cmd);
    if let Some(port) = board.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &board.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&board.host).arg(command);
    cmd
}

/// `scp … FILE [USER@]HOST:DIR/`.
fn scp(ctx: &Ctx, board: &Board, file: &Path, dir: &str) -> Command {
    let mut cmd = Command::new("scp");
    cmd.arg("-q");
    common_options(ctx, board, &mut cmd);
    if let Some(port) = board.port {
        cmd.arg("-P").arg(port.to_string());
    }
    let host = if board.host.contains(':') {
        format!("[{}]", board.host)
    } else {
        board.host.clone()
    };
    let user = board
        .user
        .as_ref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    cmd.arg("--").arg(file).arg(format!("{user}{host}:{dir}/"));
    cmd
}

/// Runs `cmd` with a deadline, keeping at most [`OUTPUT_LIMIT`] bytes of each stream. Returns its
/// stdout when it exits 0.
async fn run_bounded(
    mut cmd: Command,
    step: Step,
    program: &'static str,
    deadline: Duration,
) -> Result<String, BoardError> {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    debug!(?cmd, "running");
    let mut child = cmd.spawn().map_err(|source| BoardError::Spawn {
        step,
        program,
        source,
    })?;
    let mut stdout = child.stdout.take().expect("piped").take(OUTPUT_LIMIT);
    let mut stderr = child.stderr.take().expect("piped").take(OUTPUT_LIMIT);
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (_, _, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        (status, out, err)
    };
    let (status, out, err) =
        tokio::time::timeout(deadline, run)
            .await
            .map_err(|_| BoardError::Timeout {
                step,
                secs: deadline.as_secs(),
            })?;
    // `child` is dropped here (killed if still running: kill_on_drop).
    let status = status.map_err(|source| BoardError::Spawn {
        step,
        program,
        source,
    })?;
    if status.success() {
        Ok(String::from_utf8_lossy(&out).into_owned())
    } else {
        let err = String::from_utf8_lossy(&err);
        let status = match status.code() {
            Some(255) if program == "ssh" => "ssh error".to_owned(),
            Some(code) => format!("exit {code}"),
            None => "killed".to_owned(),
        };
        Err(BoardError::Failed {
            step,
            program,
            status,
            stderr: tail(&err),
        })
    }
}

/// The last lines of `text`, at most [`ERROR_TAIL`] bytes, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let mut out = String::new();
    for line in lines.iter().rev() {
        if out.len() + line.len() > ERROR_TAIL {
            break;
        }
        out = if out.is_empty() {
            (*line).to_owned()
        } else {
            format!("{line} / {out}")
        };
    }
    if out.is_empty() {
        cut(text.trim())
    } else {
        out
    }
}

/// `text` cut to [`ERROR_TAIL`] bytes (at a character boundary).
fn cut(text: &str) -> String {
    let mut end = text.len().min(ERROR_TAIL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// This machine's address on the route to `board`, with port 1883 (no packet is sent).
async fn local_address_towards(board: &Board) -> Result<SocketAddr, BoardError> {
    let fail = |reason: String| BoardError::NoMasterAddress {
        host: board.host.clone(),
        reason,
    };
    let target = tokio::net::lookup_host((board.host.as_str(), board.port.unwrap_or(22)))
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| fail(e.to_string()))?;
    socket.connect(target).map_err(|e| fail(e.to_string()))?;
    let mut local = socket.local_addr().map_err(|e| fail(e.to_string()))?;
    local.set_port(1883);
    Ok(local)
}

/// The summary table: one row per board, then a count.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut rows = vec![[
        "BOARD".to_owned(),
        "AGENT ID".to_owned(),
        "ARCH".to_owned(),
        "TIME".to_owned(),
        "RESULT".to_owned(),
    ]];
    for o in outcomes {
        rows.push([
            o.board.clone(),
            o.id.clone().unwrap_or_else(|| "-".into()),
            o.arch.map_or("-", Arch::name).to_owned(),
            format!("{:.1} s", o.elapsed.as_secs_f64()),
            match &o.result {
                Ok(()) => "ok: registered".to_owned(),
                Err(e) => format!("FAILED: {e}"),
            },
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (w, cell) in widths.iter().zip(row.iter()) {
            out.push_str(&format!("{cell:<w$}  ", w = *w));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    out.push_str(&format!(
        "{} of {} boards deployed and registered, {failed} failed\n",
        outcomes.len() - failed,
        outcomes.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_command_quotes_every_value_and_cleans_up_whatever_happens() {
        let attrs = BTreeMap::from([("room".to_owned(), "bob's shed".to_owned())]);
        let cmd = install_command(
            "/tmp/bramble-deploy.abc",
            "bramble-agent-0.1.0-x86_64-unknown-linux-gnu.tar.gz",
            "bramble-agent-0.1.0-x86_64-unknown-linux-gnu",
            "sudo -n ",
            "mqtt://10.0.0.1:1883",
            "pi-1",
            &attrs,
            true,
        );
        assert_eq!(
            cmd,
            "cd '/tmp/bramble-deploy.abc' && \
             tar -xzf 'bramble-agent-0.1.0-x86_64-unknown-linux-gnu.tar.gz' && \
             sudo -n ./'bramble-agent-0.1.0-x86_64-unknown-linux-gnu'/install.sh \
             --broker 'mqtt://10.0.0.1:1883' --agent-id 'pi-1' \
             --attribute 'room=bob'\\''s shed' --no-systemd; \
             rc=$?; cd / && rm -rf '/tmp/bramble-deploy.abc'; exit $rc"
        );
    }

    #[test]
    fn a_failed_commands_error_keeps_the_last_lines_within_the_limit() {
        let err = "Warning: Permanently added '10.0.0.2' (ED25519) to the list of known hosts.\n\
                   install.sh: architecture aarch64\n\
                   install.sh: the bramble-agent in the source is not built for aarch64\n";
        assert_eq!(
            tail(err),
            "install.sh: architecture aarch64 / install.sh: the bramble-agent in the source is not built for aarch64"
        );
        let long = "x".repeat(10_000);
        assert!(tail(&long).len() <= ERROR_TAIL);
        assert_eq!(cut("é".repeat(300).as_str()).len(), ERROR_TAIL);
    }

    #[test]
    fn the_summary_has_a_row_per_board_and_says_why_one_failed() {
        let outcomes = vec![
            Outcome {
                board: "root@10.0.0.2".into(),
                id: Some("pi-1".into()),
                arch: Some(Arch::Aarch64),
                elapsed: Duration::from_millis(4200),
                result: Ok(()),
            },
            Outcome {
                board: "10.0.0.9".into(),
                id: None,
                arch: None,
                elapsed: Duration::from_secs(3),
                result: Err(BoardError::Timeout {
                    step: Step::Connect,
                    secs: 23,
                }),
            },
        ];
        let table = summary(&outcomes);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("BOARD"));
        assert!(lines[1].contains("pi-1") && lines[1].contains("ok: registered"));
        assert!(lines[2].contains("FAILED: connect: no answer within 23 s"));
        assert_eq!(lines[3], "1 of 2 boards deployed and registered, 1 failed");
    }
}
