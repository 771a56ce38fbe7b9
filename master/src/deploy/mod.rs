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
//!    per inventory attribute (and `--no-systemd` when asked). With the credential store
//!    ([`Options::credentials`]) the board's agent is issued its credential if it has none, and
//!    `--credential -` installs it as `/etc/bramble/agent.credential` (0600, root's) with
//!    `credential_file` in the config: the file travels over ssh's stdin, never on a command line. Re-running upgrades in place:
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
mod registrations;
mod ssh;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::mqtt::{BrokerAddr, Brokers};
pub use inventory::{Arch, Board, InventoryError, UnameError};
use registrations::*;
use ssh::*;

/// The most boards deployed to at once.
pub const MAX_PARALLEL: usize = 64;
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
    /// The master's state directory, whose credential store issues each board's agent its
    /// credential (and whose master login watches the registrations). `None`: no credentials.
    pub credentials: Option<PathBuf>,
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
    /// The board's credential could not be issued or read.
    #[error("install: the agent's credential: {0}")]
    Credential(String),
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
            let addr = Brokers::parse(url).map_err(|e| DeployError::BadMaster(e.to_string()))?;
            (addr, Some(url.clone()))
        }
        None => (BrokerAddr::new("127.0.0.1", 1883).into(), None),
    };
    let watch_label = watch_addr.to_string();
    let login = match &options.credentials {
        Some(dir) => crate::credentials::cli::stored_master_login(dir)
            .map_err(|e| DeployError::BadOption(e.to_string()))?,
        None => None,
    };
    let (seen, watcher) = watch_registrations(watch_addr, options.connect_timeout, login)
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
        store: Mutex::new(()),
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
    /// Held while the credential store is read and written, so boards do not lose each other's.
    store: Mutex<()>,
    version: &'static str,
}

/// The credential file of agent `id` from the store in `state_dir`, issued (and saved) if the
/// store has none.
fn agent_credential(
    ctx: &Ctx,
    state_dir: &std::path::Path,
    id: &str,
) -> Result<String, BoardError> {
    use crate::credentials::Store;
    use agent_nostd_core::auth::{Principal, PrincipalKind};
    let fail = |e: &dyn std::fmt::Display| BoardError::Credential(e.to_string());
    let principal = Principal::new(PrincipalKind::Agent, id).map_err(|e| fail(&e))?;
    let _held = ctx.store.lock().unwrap_or_else(|e| e.into_inner());
    // Blocking, but short (a read and a rename), and only when this board is installed.
    let _lock = Store::lock(state_dir).map_err(|e| fail(&e))?;
    let (mut store, _) = Store::open_or_init(state_dir).map_err(|e| fail(&e))?;
    let credential = match store.credential(&principal) {
        Some(c) => c,
        None => {
            let c = store.issue(principal, false).map_err(|e| fail(&e))?;
            store.save().map_err(|e| fail(&e))?;
            info!(id, "issued the agent its credential");
            c
        }
    };
    Ok(credential.to_toml())
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
    let credential = match &o.credentials {
        Some(dir) => Some(agent_credential(ctx, dir, &id)?),
        None => None,
    };
    let script = install_command(
        &dir,
        &file_name(&tarball),
        &format!("bramble-agent-{}-{}", ctx.version, arch.target()),
        sudo,
        &broker,
        &id,
        &board.attributes,
        o.no_systemd,
        credential.is_some(),
    );
    run_bounded_with_input(
        ssh(ctx, board, &script),
        credential.map(String::into_bytes),
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
            true,
        );
        assert_eq!(
            cmd,
            "cd '/tmp/bramble-deploy.abc' && \
             tar -xzf 'bramble-agent-0.1.0-x86_64-unknown-linux-gnu.tar.gz' && \
             sudo -n ./'bramble-agent-0.1.0-x86_64-unknown-linux-gnu'/install.sh \
             --broker 'mqtt://10.0.0.1:1883' --agent-id 'pi-1' \
             --attribute 'room=bob'\\''s shed' --no-systemd --credential -; \
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
