//! The agent's driver: one current-thread tokio loop that feeds [`AgentCore`] its inputs (MQTT
//! messages, timers, board samples, task exits) and carries out its outputs (publishes, launches,
//! signals, checkpoints).
//!
//! MQTT: a fixed client id (`bramble-agent-{id}`) with a persistent session and the core's `Gone` as
//! last will, through a [`bramble_mqtt::Session`] (resubscription on every ConnAck, reconnection
//! with exponential backoff where rumqttc itself retries at once). Publishes use `try_publish`, never awaiting inside the loop that polls the
//! connection; a publish that does not fit the bounded request queue is dropped and the core resends
//! it (status updates and registrations are retried until acknowledged).

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_nostd_core::agent::{Action, AgentCore, Config as CoreConfig, LocalEvent, TransmitBuf};
use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::topic::{self, AgentTopic};
use agent_nostd_core::wire::{
    AgentInfo, Attribute, MasterMsg, MAX_DOWN_FRAME_LEN, MAX_UP_FRAME_LEN,
};
use agent_nostd_core::Resources;
use bramble_mqtt::{ClientConfig, Session, SessionEvent};
use heapless::String as HString;
use rumqttc::{AsyncClient, LastWill};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, trace, warn};

use crate::cgroup::Isolation;
use crate::checkpoint::CheckpointFile;
use crate::config::Config;
use crate::discovery::{Board, Probe};
use crate::durable::{Durable, Publish, Written};
use crate::fetch::Fetcher;
use crate::process::Spare;
use crate::process::{self, RawExit};
use crate::tasks::cleanup::{cleanup, remove_cgroup};
use crate::tasks::{launch, recover, LaunchEnv, LaunchFailure, TaskUsers, Tasks};
use crate::warm::Launcher;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The work directory could not be created.
    #[error("cannot create work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The board could not be measured.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// The core refused the configuration.
    #[error("invalid agent settings: {0}")]
    Core(agent_nostd_core::agent::ConfigError),
    /// The new boot could not be checkpointed: starting anyway could reuse frame numbers.
    #[error("cannot record this start in the checkpoint: {0}")]
    Boot(#[from] crate::checkpoint::CheckpointError),
}

/// The running agent.
struct Driver {
    config: Config,
    core: AgentCore,
    started: Instant,
    probe: Probe,
    board: Board,
    isolation: Isolation,
    /// The tasks' records beside the core, and the RunTasks waiting for their launch.
    tasks: Tasks,
    checkpoint: CheckpointFile,
    /// Checkpoint writes in the background, and the publishes waiting for them.
    durable: Durable,
    /// The core generation last checkpointed.
    checkpointed_generation: Option<u32>,
    exits: mpsc::Sender<(TaskKey, RawExit)>,
    /// Starts tasks, through a warm spare when there is one.
    launcher: Launcher,
    client: AsyncClient,
    buf: Box<TransmitBuf>,
    /// A received payload, copied here for the core to decrypt in place (sized once for the
    /// largest downlink frame; the broker's packet limit bounds what arrives).
    received: Vec<u8>,
    /// Downloads and caches task artifacts.
    fetcher: Fetcher,
    /// Who tasks run as.
    users: TaskUsers,
    /// The id of the current MQTT connection, as its last will names it.
    connection: Arc<AtomicU32>,
}

/// Runs the agent until `shutdown` completes. Tasks keep running after the agent stops; the next
/// agent re-adopts them from the checkpoint.
///
/// Tasks run under `supervisor` (`bramble-agent` itself by default: any binary that dispatches
/// [`process::SUPERVISE_ARG`] to [`process::supervise_main`]).
pub async fn run(
    config: Config,
    supervisor: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DriverError> {
    std::fs::create_dir_all(&config.work_dir).map_err(|source| DriverError::WorkDir {
        path: config.work_dir.clone(),
        source,
    })?;
    let probe = Probe::new("/", &config.work_dir);
    let board = probe.board()?;
    let isolation = Isolation::from_system();
    let info = agent_info(&config, &board, isolation.isolation_attribute());
    info!(
        agent = %config.agent_id,
        cpus = board.cpus,
        mem_mib = board.mem_total_mib,
        offers = %info.total,
        isolation = isolation.isolation_attribute(),
        broker = %config.broker,
        "starting"
    );
    let core_config = CoreConfig {
        report_heartbeat_ms: config.reports.heartbeat_secs.saturating_mul(1000),
        jitter_seed: seed(&config.agent_id),
        ..CoreConfig::default()
    };
    let key = match &config.credential {
        Some(c) => c.secret.message_key(),
        None => {
            warn!("no credential: frames carry the anonymous key, which only a master run without credentials (bramble up) takes");
            MessageKey::anonymous()
        }
    };
    let core = AgentCore::new(core_config, info, key.clone(), 0).map_err(DriverError::Core)?;

    let buf: Box<TransmitBuf> = Box::new([0; MAX_UP_FRAME_LEN]);
    let mqtt = ClientConfig {
        inflight: 16,
        request_capacity: 64,
        // Whatever the broker may deliver (a larger command is dropped as malformed): a smaller
        // limit would make one large message a reconnect loop.
        max_packet: (bramble_mqtt::MAX_PACKET, MAX_DOWN_FRAME_LEN + 256),
        ..ClientConfig::new(
            format!("bramble-agent-{}", config.agent_id),
            config.broker.clone(),
        )
    };
    let filters = vec![
        topic::agent(&config.agent_id, AgentTopic::Cmd)
            .as_str()
            .to_owned(),
        topic::MASTER_HELLO.to_owned(),
    ];
    // Each connection's last will names it (a fresh random number), so the master can tell a
    // late will of an older connection from this one's.
    let connection = Arc::new(AtomicU32::new(0));
    let will_id = config.agent_id.clone();
    let named = connection.clone();
    // Known once the checkpoint is read (below), before the first connection.
    let boot = Arc::new(AtomicU32::new(0));
    let will_boot = boot.clone();
    let session = Session::new("agent", mqtt, filters).with_will(move || {
        let n = fresh_connection_id();
        named.store(n, Ordering::Relaxed);
        Some(last_will(
            &will_id,
            &key,
            will_boot.load(Ordering::Relaxed),
            n,
        ))
    });
    let client = session.client().clone();
    let fetcher = Fetcher::new(
        config.work_dir.join("cache"),
        config.fetcher.cache_max_mib.saturating_mul(1024 * 1024),
        Duration::from_secs(u64::from(config.fetcher.timeout_secs)),
    )
    .signing(
        config
            .credential
            .as_ref()
            .map(bramble_mqtt::http_auth::Signer::from_credential),
    );
    let (exits_tx, exits_rx) = mpsc::channel(agent_nostd_core::wire::MAX_TASKS * 2);
    let checkpoint_path = config.work_dir.join("agent.json");
    let (durable, written_rx) = Durable::new(&checkpoint_path);
    let (launcher, spares_rx) = Launcher::new(
        &config.agent_id,
        isolation.clone(),
        supervisor.unwrap_or_else(supervisor_exe),
        usize::from(config.warm_spares),
    );
    let tasks = Tasks::new(&config.work_dir);
    let users = TaskUsers::new(&config.tasks);
    // A problem is logged with what to do; tasks fail with it until it is fixed.
    let _ = users.check();
    let mut driver = Driver {
        checkpoint: CheckpointFile::new(&checkpoint_path),
        durable,
        config,
        core,
        started: Instant::now(),
        probe,
        board,
        isolation,
        tasks,
        checkpointed_generation: None,
        exits: exits_tx,
        launcher,
        client,
        buf,
        received: Vec::with_capacity(agent_nostd_core::wire::MAX_DOWN_FRAME_LEN),
        fetcher,
        users,
        connection,
    };
    driver.recover();
    driver.save_boot()?;
    boot.store(driver.core.boot(), Ordering::Relaxed);
    info!(boot = driver.core.boot(), "frames bound to this boot");
    driver.remove_stale_spares();
    driver
        .run(session, exits_rx, spares_rx, written_rx, shutdown)
        .await;
    Ok(())
}

/// A random connection id (std's randomly keyed hasher: no dependency for one number).
fn fresh_connection_id() -> u32 {
    let n = RandomState::new().hash_one(std::process::id());
    (n ^ (n >> 32)) as u32
}

impl Driver {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(
        &mut self,
        mut session: Session,
        mut exits: mpsc::Receiver<(TaskKey, RawExit)>,
        mut spares: mpsc::Receiver<Option<Spare>>,
        mut written: mpsc::Receiver<Written>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut sampler = tokio::time::interval(Duration::from_secs(u64::from(
            self.config.reports.sample_secs,
        )));
        sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush().await;
            // Replace used spares: the preparation runs once this task yields, so after the select
            // below wrote the launch's updates.
            if self.config.warm_spares > 0 && self.has_room() {
                self.launcher.refill();
            }
            let wake = self
                .core
                .poll_timeout()
                .map(|t| self.started + Duration::from_millis(t));
            // Biased: what flush queued is written before anything else can start another
            // flush (and its checkpoint); the branches after it run whenever it is idle.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(w) = written.recv() => self.on_written(w),
                // The session resubscribes on each ConnAck and waits out its backoff after a loss.
                event = session.poll() => match event {
                    SessionEvent::Connected => {
                        let now = self.now();
                        let connection = self.connection.load(Ordering::Relaxed);
                        self.core.handle_connected(now, connection);
                    }
                    SessionEvent::Publish(p) => self.on_publish(&p.topic, &p.payload),
                    SessionEvent::Lost { .. } => {
                        let now = self.now();
                        self.core.handle_disconnected(now);
                    }
                    _ => {}
                },
                Some((key, raw)) = exits.recv() => self.on_exit(key, raw),
                Some(spare) = spares.recv() => self.launcher.on_ready(spare),
                () = sleep_until(wake) => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
                _ = sampler.tick() => self.sample(),
            }
        }
        self.launcher.shutdown().await;
        // The last checkpoint lands before the agent goes (and what waited on it is sent).
        while self.durable.is_writing() {
            match written.recv().await {
                Some(w) => self.on_written(w),
                None => break,
            }
        }
        info!("stopping; tasks keep running and are re-adopted on the next start");
        let will = self.core.last_will(&mut self.buf);
        let _ = self.client.try_publish(
            will.topic.as_str(),
            rumqttc::QoS::AtLeastOnce,
            false,
            self.buf[..will.len].to_vec(),
        );
        let _ = self.client.try_disconnect();
        // Let the event loop send the notice and the disconnect, but not for long.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let SessionEvent::Disconnected | SessionEvent::Lost { .. } = session.poll().await
                {
                    break;
                }
            }
        })
        .await;
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        trace!(topic, len = payload.len(), "received a publish");
        let now = self.now();
        self.received.clear();
        self.received.extend_from_slice(payload);
        match self.core.handle_bytes(now, topic, &mut self.received) {
            Ok(MasterMsg::RunTask(run)) => self.tasks.hold_run(run),
            Ok(_) => {}
            Err(e) => {
                let s = self.core.stats();
                warn!(
                    topic,
                    len = payload.len(),
                    malformed = s.malformed,
                    unsupported_version = s.unsupported_version,
                    misrouted = s.misrouted,
                    "dropped a message: {e}"
                );
            }
        }
    }

    fn sample(&mut self) {
        match self
            .probe
            .sample(&self.board, &self.config.reserve.resources())
        {
            Ok(mut sample) => {
                // Never report more free than the agent offers (its capacity may cap the board).
                sample.free = sample.free.min(&self.core.total());
                let now = self.now();
                self.core.handle_resource_sample(now, sample);
            }
            Err(e) => debug!("cannot sample the board: {e}"),
        }
    }

    /// Publishes what the core wants sent, carries out its actions, and checkpoints what changed:
    /// launches record their tasks first (with the warm spare's pids when it will be used), so one
    /// checkpoint covers them and the messages before them, and is written while the tasks start.
    async fn flush(&mut self) {
        loop {
            let now = self.now();
            let mut publishes = Vec::new();
            while let Some(t) = self.core.poll_transmit(now, &mut self.buf) {
                publishes.push(Publish {
                    topic: t.topic.as_str().to_owned(),
                    qos: match t.qos {
                        topic::QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                        topic::QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                    },
                    retain: t.retain,
                    payload: self.buf[..t.len].to_vec(),
                });
            }
            let actions: Vec<Action> = std::iter::from_fn(|| self.core.poll_action()).collect();
            if publishes.is_empty() && actions.is_empty() {
                break;
            }
            // Only the first launch can use the spare the launcher holds first.
            let mut spare_claimed = false;
            for action in &actions {
                if let Action::Launch { .. } = action {
                    let spare = match self.launcher.spare() {
                        Some(s) if !spare_claimed => Some((s.cgroup().cloned(), s.launched())),
                        _ => None,
                    };
                    spare_claimed = true;
                    self.tasks.record_launch(action.key(), spare);
                }
            }
            self.request_checkpoint();
            for p in publishes {
                if let Some(p) = self.durable.publish(p) {
                    self.send(p);
                }
            }
            for action in actions {
                self.act(action).await;
            }
        }
        self.tasks.drop_unlaunched_runs();
        self.request_checkpoint();
    }

    /// Queues `p` on the MQTT client (a full request queue defers it: the core resends).
    fn send(&mut self, p: Publish) {
        let len = p.payload.len();
        match self
            .client
            .try_publish(p.topic.as_str(), p.qos, p.retain, p.payload)
        {
            Ok(()) => trace!(topic = %p.topic, len, "queued a publish"),
            Err(e) => debug!("publish on {} deferred: {e}", p.topic),
        }
    }

    /// A checkpoint write finished: sends what waited on it.
    fn on_written(&mut self, written: Written) {
        if self.durable.on_written(written) {
            self.checkpoint.forget_written();
        } else {
            trace!("checkpoint saved");
        }
        while let Some(p) = self.durable.release() {
            self.send(p);
        }
    }

    async fn act(&mut self, action: Action) {
        let key = action.key();
        match action {
            Action::Launch {
                resources,
                pids_max,
                ..
            } => self.launch(key, resources, pids_max).await,
            Action::Signal { signal, .. } => {
                if let Some(slot) = self.tasks.get(&key) {
                    if let Some(launched) = &slot.launched {
                        info!(framework = %key.framework_id, task = %key.task_id, ?signal, "signalling task");
                        if let Err(e) = process::signal(launched, signal, slot.cgroup.as_ref()) {
                            warn!(framework = %key.framework_id, task = %key.task_id, "cannot signal task: {e}");
                        }
                    }
                }
            }
            Action::Release { .. } => {
                // Checkpointed with the next change (see the core's release).
                if let Some(slot) = self.tasks.release(&key) {
                    cleanup(slot);
                }
            }
        }
    }

    /// Starts the task (recorded by [`flush`](Self::flush)) and tells the core how that went.
    async fn launch(&mut self, key: TaskKey, resources: Resources, pids_max: u32) {
        let result = match self.tasks.take_run(&key) {
            Some(run) => {
                let env = LaunchEnv {
                    agent_id: &self.config.agent_id,
                    broker_url: self.broker_url(),
                    users: &self.users,
                    log_limit_bytes: self.config.log_limit_bytes,
                    fetcher: &self.fetcher,
                    fetch_budget: Duration::from_secs(u64::from(self.config.fetcher.timeout_secs)),
                };
                let sandbox = self.tasks.sandbox(&key);
                launch::start(
                    &env,
                    &mut self.launcher,
                    &key,
                    &run,
                    &sandbox,
                    resources,
                    pids_max,
                )
                .await
            }
            None => Err(LaunchFailure::NoRunTask),
        };
        let (fw, task) = (&key.framework_id, &key.task_id);
        let now = self.now();
        let message = result.as_ref().err().map(ToString::to_string);
        let event = match &message {
            None => LocalEvent::Started {
                framework_id: fw,
                task_id: task,
            },
            Some(message) => {
                warn!(framework = %fw, task = %task, "task failed to start: {message}");
                LocalEvent::LaunchFailed {
                    framework_id: fw,
                    task_id: task,
                    message,
                }
            }
        };
        if let Err(e) = self.core.handle_event(now, event) {
            error!(framework = %fw, task = %task, "core refused the launch outcome: {e}");
        }
        match result {
            Ok(started) => {
                // Spare cgroups have neutral names (`warm@<agent>@<n>`): say which task each holds.
                let cgroup = started
                    .cgroup
                    .as_ref()
                    .and_then(|c| Some(c.paths().dirs().first()?.display().to_string()))
                    .unwrap_or_default();
                info!(framework = %fw, task = %task, %resources, %cgroup, "task started");
                self.tasks.started(&key, started.cgroup, started.launched);
                self.watch(key, started.handle);
            }
            Err(_) => self.tasks.launch_failed(&key),
        }
    }

    /// Whether another task could still fit: then a warm spare is worth its memory.
    fn has_room(&self) -> bool {
        let (used, total) = (self.core.allocated(), self.core.total());
        self.tasks.len() < agent_nostd_core::wire::MAX_TASKS
            && (used.cpu_millis < total.cpu_millis || used.mem_mib < total.mem_mib)
    }

    /// Removes the spare cgroups a previous agent left behind (its unused spare; its supervisor
    /// exited when that agent died). Cgroups of checkpointed tasks are kept, and so is any that
    /// still holds a process: a spare's supervisor removes its own cgroup once it notices its agent
    /// is gone, and a process this agent does not know of is not its to kill (another agent run
    /// with the same id on this machine, as tests do, keeps its spare and its tasks).
    fn remove_stale_spares(&self) {
        let keep: Vec<&crate::cgroup::CgroupPaths> = self.tasks.cgroup_paths().collect();
        for cg in self
            .isolation
            .stale_spare_cgroups(&self.config.agent_id, &keep)
        {
            if cg.is_empty() {
                info!(paths = ?cg.paths(), "removing a spare cgroup left by an earlier run");
                remove_cgroup(cg);
            } else {
                debug!(paths = ?cg.paths(), "a spare cgroup of an earlier run still has processes");
            }
        }
    }

    fn watch(&self, key: TaskKey, handle: process::TaskHandle) {
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let mut handle = handle;
            let raw = handle.wait().await;
            let _ = exits.send((key, raw)).await;
        });
    }

    fn on_exit(&mut self, key: TaskKey, raw: RawExit) {
        let Some(slot) = self.tasks.get(&key) else {
            return;
        };
        let exit = process::task_exit(raw, slot.cgroup.as_ref());
        info!(framework = %key.framework_id, task = %key.task_id, ?exit, "task ended");
        if let Some(Some(cg)) = self.tasks.ended(&key) {
            remove_cgroup(cg);
        }
        let now = self.now();
        let event = LocalEvent::Exited {
            framework_id: &key.framework_id,
            task_id: &key.task_id,
            exit,
        };
        if let Err(e) = self.core.handle_event(now, event) {
            warn!(framework = %key.framework_id, task = %key.task_id, "exit not taken: {e}");
        }
    }

    /// Every broker the agent was given, as a comma list: tasks fail over between them too.
    fn broker_url(&self) -> String {
        // Without the agent's login: a task logs in as its framework.
        self.config.broker.without_logins().to_string()
    }

    /// Re-adopts the tasks of the previous run from the checkpoint.
    fn recover(&mut self) {
        let Some(checkpoint) = recover::load(
            &mut self.checkpoint,
            &mut self.durable,
            &self.config.agent_id,
        ) else {
            return;
        };
        let now = self.now();
        let running = recover::restore(
            &mut self.core,
            &mut self.tasks,
            &self.isolation,
            checkpoint,
            now,
        );
        for (key, handle) in running {
            self.watch(key, handle);
        }
    }

    /// Writes the checkpoint with this start's boot, now: nothing may be sent under a boot the
    /// next start could take again.
    fn save_boot(&mut self) -> Result<(), DriverError> {
        let checkpoint = self.tasks.checkpoint(&self.core, &self.config.agent_id);
        self.checkpoint.save(&checkpoint)?;
        self.durable.resume_at(self.checkpoint.generation());
        self.checkpointed_generation = Some(self.core.generation());
        self.tasks.mark_saved();
        Ok(())
    }

    /// Starts writing the checkpoint (in the background, see [`crate::durable`]) when the core's
    /// persistent state or a task record changed.
    fn request_checkpoint(&mut self) {
        let generation = self.core.generation();
        if self.checkpointed_generation == Some(generation) && !self.tasks.is_dirty() {
            return;
        }
        let checkpoint = self.tasks.checkpoint(&self.core, &self.config.agent_id);
        match self.checkpoint.encode(&checkpoint) {
            Ok(bytes) => {
                if let Some(bytes) = bytes {
                    self.durable.write(bytes);
                }
                self.checkpointed_generation = Some(generation);
                self.tasks.mark_saved();
            }
            Err(e) => error!("{e}"),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The agent's registration from its config and board.
pub fn agent_info(config: &Config, board: &Board, isolation: &str) -> AgentInfo {
    let mut attributes = heapless::Vec::new();
    let attrs = config
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("isolation", isolation)]);
    for (k, v) in attrs {
        let attribute = Attribute {
            key: truncated(k),
            value: truncated(v),
        };
        if attributes.push(attribute).is_err() {
            warn!("too many attributes: `{k}` is not advertised");
        }
    }
    AgentInfo {
        agent_id: truncated(&config.agent_id),
        hostname: truncated(&board.hostname),
        arch: truncated(board.arch),
        board: truncated(board.model.as_deref().unwrap_or("")),
        total: config
            .capacity
            .cap(board.offerable(&config.reserve.resources())),
        attributes,
        connection: 0,
        // The clock, so a board whose checkpoint was wiped still boots above its last boot (the
        // checkpoint's boot + 1 wins when it is higher; see `AgentCore::restore`).
        boot: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .max(1),
        seq: 0,
        to_epoch: 0,
    }
}

/// The MQTT last will of agent `agent_id` in boot `boot` for its connection `connection`: the
/// core's sealed `Gone` ([`AgentCore::will_of`]).
pub fn last_will(agent_id: &str, key: &MessageKey, boot: u32, connection: u32) -> LastWill {
    let mut buf = [0; MAX_UP_FRAME_LEN];
    let will = AgentCore::will_of(agent_id, key, boot, connection, &mut buf);
    LastWill::new(
        will.topic.as_str(),
        buf[..will.len].to_vec(),
        rumqttc::QoS::AtLeastOnce,
        false,
    )
}

/// `s` cut to the capacity of a wire string (at a character boundary).
pub fn truncated<const N: usize>(s: &str) -> HString<N, u8> {
    let mut out = HString::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// The seed of a board's retry jitter: FNV-1a of its id, a stable spread across boards.
pub fn seed(agent_id: &str) -> u32 {
    agent_id.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The executable tasks are supervised by: this very binary.
fn supervisor_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| Path::new("/proc/self/exe").to_owned())
}
