//! The agent's configuration: a TOML file (default `/etc/bramble/agent.toml`) whose every field has a
//! default, overridden by the environment (`BRAMBLE_BROKER`, `BRAMBLE_USERNAME`,
//! `BRAMBLE_PASSWORD`, `BRAMBLE_PASSWORD_FILE`, `BRAMBLE_CREDENTIAL`), overridden by command-line
//! flags. A bad value is refused with an error naming its field. The file holds a password if
//! `password` or a broker URL's userinfo is set: keep it mode 0600 then.
//!
//! ```toml
//! agent_id = "pi4-kitchen"           # default: the hostname, made into a valid id
//! broker = "mqtt://192.168.1.10:1883"   # or a list to fail over between, tried in order:
//!                                    # "mqtt://a:1883,mqtt://b:1883" or ["mqtt://a", "mqtt://b"];
//!                                    # a URL may carry a login: "mqtt://USER:PASSWORD@host"
//! # The broker login, if the broker wants one (first that applies: username with password or
//! # password_file, else the broker URL's user:password, else the credential file):
//! username = "agent-pi4-kitchen"
//! password_file = "/etc/bramble/broker-password"   # its first line; or password = "…"
//! credential_file = "/etc/bramble/credential"       # this board's principal and secret
//! # mqtts:// brokers (the agent built with the `tls` feature): the system's roots, or
//! ca_file = "/etc/bramble/ca.pem"
//! client_cert = "/etc/bramble/client.pem"          # optional, with client_key
//! client_key = "/etc/bramble/client.key"
//! work_dir = "/var/lib/bramble"
//! log_limit_kib = 1024               # cap of each task's stdout and stderr file
//! warm_spares = 2                    # task processes kept ready (~400 KiB each) for fast launches; 0: none
//!
//! [capacity]                         # offer at most this much (default: the whole board)
//! cpu_millis = 2000
//!
//! [reserve]                          # kept for the OS, never offered
//! cpu_millis = 0
//! mem_mib = 256
//! disk_mib = 1024
//!
//! [attributes]
//! sensor = "bme280"
//!
//! [reports]
//! sample_secs = 5                    # how often the board is measured
//! heartbeat_secs = 30                # a report at least this often
//!
//! [fetcher]                          # task artifacts, cached in <work_dir>/cache/<sha256>
//! cache_max_mib = 256                # above this, least recently used artifacts are evicted
//! timeout_secs = 20                  # the most a task's downloads may take, all together
//!
//! [tasks]                            # who tasks run as, when the agent is root
//! user = "bramble"                   # the default user (--run-as); `run_as = "…"` at the top is the old name
//! groups = ["i2c", "gpio", "video"]  # supplementary groups of every task (default: those of
//!                                    # i2c, gpio, video, dialout, spi that exist on the board)
//! allowed_users = ["pi"]             # other users a task may ask for (BRAMBLE_USER); root only if listed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_nostd_core::Resources;
pub use bramble_mqtt::{BrokerAddr, Brokers};
use bramble_mqtt::{LoginSources, Password};
use serde::Deserialize;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bramble/agent.toml";
/// Warm spares kept by default: two, so that back-to-back launches on one board both go warm
/// while the next spare is prepared.
pub const DEFAULT_WARM_SPARES: u8 = 2;
/// The most warm spares an agent keeps.
pub const MAX_WARM_SPARES: u8 = 8;

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a field of the wrong type or an unknown field.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("config field `{field}`: {problem}")]
    Invalid {
        /// The field, e.g. `attributes.sensor` or `broker`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Resources kept for the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reserve {
    /// CPU kept back, in millicores.
    pub cpu_millis: u32,
    /// Memory kept back, in MiB.
    pub mem_mib: u32,
    /// Disk kept back, in MiB.
    pub disk_mib: u32,
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve {
            cpu_millis: 0,
            mem_mib: 256,
            disk_mib: 1024,
        }
    }
}

impl Reserve {
    /// As a resource amount.
    pub fn resources(&self) -> Resources {
        Resources::new(self.cpu_millis, self.mem_mib, self.disk_mib)
    }
}

/// The most the agent offers, whatever the board has (unset parts: no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// CPU, in millicores.
    pub cpu_millis: Option<u32>,
    /// Memory, in MiB.
    pub mem_mib: Option<u32>,
    /// Disk, in MiB.
    pub disk_mib: Option<u32>,
}

impl Capacity {
    /// `offerable` capped by this capacity.
    pub fn cap(&self, offerable: Resources) -> Resources {
        Resources::new(
            self.cpu_millis
                .map_or(offerable.cpu_millis, |c| c.min(offerable.cpu_millis)),
            self.mem_mib
                .map_or(offerable.mem_mib, |c| c.min(offerable.mem_mib)),
            self.disk_mib
                .map_or(offerable.disk_mib, |c| c.min(offerable.disk_mib)),
        )
    }
}

/// How the board is measured and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reports {
    /// Seconds between measurements of the board.
    pub sample_secs: u32,
    /// A report goes out at least this often, in seconds.
    pub heartbeat_secs: u32,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            sample_secs: 5,
            heartbeat_secs: 30,
        }
    }
}

/// How task artifacts are fetched and cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fetcher {
    /// The most the artifact cache (`<work_dir>/cache`) holds, in MiB; the least recently used
    /// artifacts (by mtime, touched on every use) are evicted above it. An artifact in use by a
    /// task's sandbox survives eviction as long as it is hard-linked there.
    pub cache_max_mib: u64,
    /// The most the downloads of one task's artifacts may take, together and each, in seconds. The
    /// agent's event loop waits for launches, so keep it below the MQTT keep-alive grace (22 s).
    pub timeout_secs: u32,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher {
            cache_max_mib: 256,
            timeout_secs: 20,
        }
    }
}

/// The file's contents; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    agent_id: Option<String>,
    broker: Option<BrokerSetting>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    credential_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    run_as: Option<String>,
    log_limit_kib: Option<u64>,
    warm_spares: Option<u8>,
    #[serde(default)]
    reserve: Reserve,
    #[serde(default)]
    capacity: Capacity,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    reports: Reports,
    #[serde(default)]
    fetcher: Fetcher,
    #[serde(default)]
    tasks: TasksFile,
}

/// `broker` as the file gives it: one URL (or a comma list of them) in a string, or an array of
/// URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "an mqtt:// URL, a comma list of them, or an array of them"
)]
enum BrokerSetting {
    /// `broker = "mqtt://a,mqtt://b"`.
    List(String),
    /// `broker = ["mqtt://a", "mqtt://b"]`.
    Array(Vec<String>),
}

impl BrokerSetting {
    fn parse(&self) -> Result<Brokers, bramble_mqtt::BrokerError> {
        match self {
            BrokerSetting::List(list) => Brokers::parse(list),
            BrokerSetting::Array(urls) => Brokers::from_urls(urls),
        }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--agent-id`.
    pub agent_id: Option<String>,
    /// `--broker` (or `BRAMBLE_BROKER`): one URL or a comma list of them.
    pub broker: Option<String>,
    /// The login sources of the flags and the environment, merged (flags first): they beat the
    /// file's `username`, `password`, `password_file` and `credential_file`, field by field.
    pub login: LoginSources,
    /// `--ca-file` (or `BRAMBLE_CA_FILE`), beating the file's `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `--work-dir`.
    pub work_dir: Option<PathBuf>,
    /// `--run-as`: `[tasks] user`.
    pub run_as: Option<String>,
    /// `--attribute key=value`, added to (or replacing in) the file's attributes.
    pub attributes: Vec<(String, String)>,
    /// `--reserve-mem` in MiB.
    pub reserve_mem_mib: Option<u32>,
    /// A cap on what is offered (used by `bramble up` to share one machine between agents).
    pub capacity: Option<Capacity>,
}

/// The agent's validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The agent's id (names its topics and its MQTT client).
    pub agent_id: String,
    /// The MQTT brokers, tried in order, each with its login settled (see
    /// [`bramble_mqtt::sources`]): the agent fails over between them and hands them all, without
    /// logins, to its tasks (`BRAMBLE_BROKER`).
    pub broker: Brokers,
    /// The TLS files for `mqtts://` brokers (`ca_file`, `client_cert`, `client_key`).
    pub tls: bramble_mqtt::tls::TlsFiles,
    /// This board's credential (`agent-ID`), whose secret keys its frames to the master; without
    /// one the agent uses the anonymous key, which only a master run without credentials takes.
    pub credential: Option<bramble_mqtt::credential::Credential>,
    /// Where sandboxes and the checkpoint live.
    pub work_dir: PathBuf,
    /// The cap of each task's stdout and stderr file, in bytes.
    pub log_limit_bytes: u64,
    /// How many task processes to keep ready for the next launches (see [`crate::warm`]); 0 turns
    /// warm launches off.
    pub warm_spares: u8,
    /// Kept for the OS.
    pub reserve: Reserve,
    /// The most offered.
    pub capacity: Capacity,
    /// Advertised attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
    /// Measuring and reporting.
    pub reports: Reports,
    /// Fetching task artifacts.
    pub fetcher: Fetcher,
    /// Who tasks run as.
    pub tasks: Tasks,
}

impl Config {
    /// Reads `path` (a missing file is an error only when `required`), applies `overrides`, and
    /// validates. `hostname` is the default agent id.
    pub fn load(
        path: &Path,
        required: bool,
        overrides: Overrides,
        hostname: &str,
    ) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::from_toml(&text, path, overrides, hostname)
    }

    /// Parses and validates config text (`path` is only for messages).
    pub fn from_toml(
        text: &str,
        path: &Path,
        overrides: Overrides,
        hostname: &str,
    ) -> Result<Config, ConfigError> {
        let mut file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut attributes = std::mem::take(&mut file.attributes);
        for (k, v) in overrides.attributes {
            attributes.insert(k, v);
        }
        if let Some(mem) = overrides.reserve_mem_mib {
            file.reserve.mem_mib = mem;
        }
        // The board's credential names it and keys its frames, whatever its broker login is.
        let credential_file = overrides
            .login
            .credential_file
            .clone()
            .or_else(|| file.credential_file.clone());
        let credential = credential_file
            .map(|path| bramble_mqtt::credential::Credential::read(&path))
            .transpose()
            .map_err(|e| invalid("credential_file", e.to_string()))?;
        if let Some(c) = &credential {
            if c.principal.kind() != agent_nostd_core::auth::PrincipalKind::Agent {
                return Err(invalid(
                    "credential_file",
                    format!(
                        "holds {}, not an agent's credential (bramble credentials add agent NAME)",
                        c.principal
                    ),
                ));
            }
        }
        let agent_id = match overrides.agent_id.or(file.agent_id) {
            Some(id) => {
                agent_nostd_core::ids::validate_id(&id)
                    .map_err(|e| invalid("agent_id", e.to_string()))?;
                if let Some(c) = credential.as_ref().filter(|c| c.principal.name() != id) {
                    return Err(invalid(
                        "agent_id",
                        format!(
                            "is {id}, but the credential is agent {}'s: an agent speaks only as itself",
                            c.principal.name()
                        ),
                    ));
                }
                id
            }
            None => match &credential {
                Some(c) => c.principal.name().to_owned(),
                None => id_from_hostname(hostname),
            },
        };
        let broker = match overrides.broker.map(BrokerSetting::List).or(file.broker) {
            Some(setting) => setting
                .parse()
                .map_err(|e| invalid("broker", e.to_string()))?,
            None => BrokerAddr::new("localhost", bramble_mqtt::brokers::DEFAULT_PORT).into(),
        };
        let from_file = LoginSources {
            username: file.username.take(),
            password: file.password.take().map(Password::new),
            password_file: file.password_file.take(),
            credential_file: file.credential_file.take(),
        };
        let broker = overrides.login.or(from_file).settle(broker).map_err(|e| {
            let field = match e {
                bramble_mqtt::LoginError::PasswordWithoutUsername => "username",
                bramble_mqtt::LoginError::UsernameWithoutPassword { .. } => "password",
                bramble_mqtt::LoginError::Credential(_) => "credential_file",
                _ => "password_file",
            };
            invalid(field, e.to_string())
        })?;
        let work_dir = overrides
            .work_dir
            .or(file.work_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/bramble"));
        if !work_dir.is_absolute() {
            return Err(invalid("work_dir", "must be an absolute path"));
        }
        let warm_spares = file.warm_spares.unwrap_or(DEFAULT_WARM_SPARES);
        if warm_spares > MAX_WARM_SPARES {
            return Err(invalid(
                "warm_spares",
                format!("at most {MAX_WARM_SPARES} (each costs ~400 KiB)"),
            ));
        }
        let log_limit_bytes = file.log_limit_kib.unwrap_or(1024) * 1024;
        if log_limit_bytes == 0 {
            return Err(invalid("log_limit_kib", "must be above 0"));
        }
        if file.reports.sample_secs == 0 {
            return Err(invalid("reports.sample_secs", "must be above 0"));
        }
        if file.reports.heartbeat_secs < file.reports.sample_secs {
            return Err(invalid(
                "reports.heartbeat_secs",
                "must be at least reports.sample_secs",
            ));
        }
        if file.fetcher.timeout_secs == 0 {
            return Err(invalid("fetcher.timeout_secs", "must be above 0"));
        }
        let limit = agent_nostd_core::wire::MAX_ATTRIBUTES - 1; // one is `isolation`
        if attributes.len() > limit {
            return Err(invalid(
                "attributes",
                format!("at most {limit} attributes (the agent adds `isolation`)"),
            ));
        }
        for (k, v) in &attributes {
            let field = format!("attributes.{k}");
            if k.is_empty() || k.len() > 16 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(field, "keys are 1-16 printable ASCII bytes"));
            }
            if k == "isolation" {
                return Err(invalid(field, "is set by the agent itself"));
            }
            if v.len() > 32 {
                return Err(invalid(field, "values are at most 32 bytes"));
            }
        }
        let tls = bramble_mqtt::tls::TlsFiles {
            ca_file: overrides.ca_file.or(file.ca_file),
            client_cert: file.client_cert,
            client_key: file.client_key,
        };
        Ok(Config {
            agent_id,
            broker,
            tls,
            credential,
            work_dir,
            log_limit_bytes,
            warm_spares,
            reserve: file.reserve,
            capacity: overrides.capacity.unwrap_or(file.capacity),
            attributes: attributes.into_iter().collect(),
            reports: file.reports,
            fetcher: file.fetcher,
            tasks: Tasks::from_file(file.tasks, file.run_as, overrides.run_as)?,
        })
    }
}

// ----- [tasks]: who tasks run as (issue 14: unprivileged tasks by default) -----

/// The user tasks run as by default; `install.sh` and the .deb create it.
pub const DEFAULT_TASK_USER: &str = "bramble";
/// The device groups every task gets by default, those of them that exist on the board.
pub const DEFAULT_TASK_GROUPS: [&str; 5] = ["i2c", "gpio", "video", "dialout", "spi"];

/// `[tasks]` as the file gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TasksFile {
    user: Option<String>,
    groups: Option<Vec<String>>,
    allowed_users: Vec<String>,
}

/// Who tasks run as (`[tasks]`). It applies when the agent runs as root; an agent that is not
/// root runs every task as its own user (see [`crate::tasks::user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tasks {
    /// The user a task runs as unless it asks for another (default [`DEFAULT_TASK_USER`]).
    pub user: String,
    /// The supplementary groups every task gets besides its user's own: `None` for those of
    /// [`DEFAULT_TASK_GROUPS`] that exist on the board, or exactly these (each must exist).
    pub groups: Option<Vec<String>>,
    /// The users a task may ask for besides `user`; `root` only when listed.
    pub allowed_users: Vec<String>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            user: DEFAULT_TASK_USER.to_owned(),
            groups: None,
            allowed_users: Vec::new(),
        }
    }
}

impl Tasks {
    /// `[tasks]`, with `run_as` (the old top-level name of `user`) and `--run-as` applied.
    fn from_file(
        file: TasksFile,
        old_run_as: Option<String>,
        flag: Option<String>,
    ) -> Result<Tasks, ConfigError> {
        if old_run_as.is_some() && file.user.is_some() {
            return Err(invalid(
                "run_as",
                "is the old name of `tasks.user`: set only `[tasks] user`",
            ));
        }
        let user = flag
            .or(file.user)
            .or(old_run_as)
            .unwrap_or_else(|| DEFAULT_TASK_USER.to_owned());
        check_account_name("tasks.user", &user)?;
        for g in file.groups.iter().flatten() {
            check_account_name("tasks.groups", g)?;
        }
        for u in &file.allowed_users {
            check_account_name("tasks.allowed_users", u)?;
        }
        Ok(Tasks {
            user,
            groups: file.groups,
            allowed_users: file.allowed_users,
        })
    }
}

/// A user or group name as `/etc/passwd` and `/etc/group` hold them: 1-32 bytes, no `:`, `/`,
/// `,`, white space or control characters, not starting with `-`.
fn check_account_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'/' | b','));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} is not a user or group name"),
        ))
    }
}

// ----- end of [tasks] -----

/// A valid agent id from a hostname: invalid bytes become `-`, cut to 32 bytes.
pub fn id_from_hostname(hostname: &str) -> String {
    let mut id: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(agent_nostd_core::ids::MAX_ID_LEN)
        .collect();
    if agent_nostd_core::ids::validate_id(&id).is_err() {
        id = "agent".to_owned();
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("agent.toml"), Overrides::default(), "pi4")
    }

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.agent_id, "pi4");
        assert_eq!(c.broker, BrokerAddr::new("localhost", 1883).into());
        assert_eq!(c.reserve.mem_mib, 256);
        assert_eq!(c.log_limit_bytes, 1024 * 1024);
        assert_eq!(c.work_dir, PathBuf::from("/var/lib/bramble"));
        assert_eq!(c.warm_spares, 2, "two warm spares are kept by default");
    }

    #[test]
    fn warm_spares_can_be_turned_off_and_are_bounded() {
        assert_eq!(load("warm_spares = 0").unwrap().warm_spares, 0);
        assert_eq!(load("warm_spares = 8").unwrap().warm_spares, 8);
        let e = load("warm_spares = 9").unwrap_err().to_string();
        assert!(e.contains("`warm_spares`"), "{e}");
        assert!(load("warm_spares = true").is_err());
    }

    #[test]
    fn a_full_file_is_read_and_flags_override_it() {
        let text = r#"
            agent_id = "kitchen"
            broker = "mqtt://10.0.0.2:1884"
            work_dir = "/srv/bramble"
            [reserve]
            mem_mib = 128
            [capacity]
            cpu_millis = 1500
            [attributes]
            sensor = "bme280"
            room = "kitchen"
            [reports]
            heartbeat_secs = 60
        "#;
        let overrides = Overrides {
            broker: Some("mqtt://master.lan".into()),
            attributes: vec![("room".into(), "attic".into())],
            ..Default::default()
        };
        let c = Config::from_toml(text, Path::new("a.toml"), overrides, "pi4").unwrap();
        assert_eq!(c.agent_id, "kitchen");
        assert_eq!(c.broker, BrokerAddr::new("master.lan", 1883).into());
        assert_eq!(c.tasks.user, "bramble");
        assert_eq!(c.reserve.mem_mib, 128);
        assert_eq!(c.reserve.disk_mib, 1024, "unset fields keep their default");
        assert_eq!(
            c.attributes,
            [
                ("room".to_owned(), "attic".to_owned()),
                ("sensor".to_owned(), "bme280".to_owned())
            ]
        );
        assert_eq!(c.reports.heartbeat_secs, 60);
        assert_eq!(
            c.capacity.cap(Resources::new(4000, 3000, 100)),
            Resources::new(1500, 3000, 100)
        );
    }

    #[test]
    fn a_bad_config_names_the_bad_field() {
        let cases = [
            ("agent_id = \"a/b\"", "agent_id"),
            ("broker = \"http://x\"", "broker"),
            ("broker = \"mqtt://x:99999\"", "broker"),
            ("broker = \"mqtt://a,,mqtt://b\"", "broker"),
            ("broker = [\"mqtt://a\", \"http://b\"]", "broker"),
            ("broker = []", "broker"),
            ("work_dir = \"relative\"", "work_dir"),
            ("[reports]\nsample_secs = 0", "reports.sample_secs"),
            (
                "[attributes]\nisolation = \"cgroup2\"",
                "attributes.isolation",
            ),
            (
                "[attributes]\nx = \"0123456789abcdef0123456789abcdef0\"",
                "attributes.x",
            ),
        ];
        for (text, field) in cases {
            match load(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected an error naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_broker_may_be_a_comma_list_or_an_array_of_urls() {
        let list = Brokers::parse("mqtt://a:1884,mqtt://b:1883").unwrap();
        let c = load("broker = \"mqtt://a:1884, mqtt://b\"").unwrap();
        assert_eq!(c.broker, list);
        let c = load("broker = [\"mqtt://a:1884\", \"mqtt://b\"]").unwrap();
        assert_eq!(c.broker, list);
        let overrides = Overrides {
            broker: Some("mqtt://a:1884,mqtt://b".into()),
            ..Default::default()
        };
        let c = Config::from_toml(
            "broker = \"mqtt://x\"",
            Path::new("a.toml"),
            overrides,
            "pi4",
        );
        assert_eq!(c.unwrap().broker, list, "--broker takes a comma list too");
    }

    #[test]
    fn a_bad_broker_list_names_the_bad_url() {
        let e = load("broker = [\"mqtt://a\", \"http://b\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`broker`") && e.contains("http://b"), "{e}");
        let e = load("broker = 3").unwrap_err().to_string();
        assert!(e.contains("broker") && e.contains("mqtt://"), "{e}");
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_field_and_line() {
        let err = load("[reserve]\nmem_mib = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mem_mib"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = load("brokr = \"mqtt://x\"").unwrap_err().to_string();
        assert!(err.contains("brokr"), "{err}");
    }

    #[test]
    fn a_missing_file_is_fine_unless_it_was_asked_for() {
        let missing = Path::new("/nonexistent/agent.toml");
        assert!(Config::load(missing, false, Overrides::default(), "h").is_ok());
        let err = Config::load(missing, true, Overrides::default(), "h").unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn the_packaged_default_config_loads_with_the_defaults_it_documents() {
        // The file the .deb and install.sh put in /etc/bramble/agent.toml.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/pkg/agent.toml");
        let c = Config::load(&path, true, Overrides::default(), "raspberrypi").unwrap();
        let defaults = load("").unwrap();
        assert_eq!(c.agent_id, "raspberrypi");
        assert_eq!(c.broker, defaults.broker);
        assert_eq!(c.work_dir, PathBuf::from("/var/lib/bramble"));
        assert_eq!(c.tasks, Tasks::default());
        assert_eq!(c.log_limit_bytes, defaults.log_limit_bytes);
        assert_eq!(c.reserve, defaults.reserve);
        assert_eq!(c.capacity, Capacity::default());
        assert!(c.attributes.is_empty());
        assert_eq!(c.reports, defaults.reports);
    }

    #[test]
    fn tasks_run_as_bramble_with_the_default_device_groups_and_no_other_user_by_default() {
        let c = load("").unwrap();
        assert_eq!(c.tasks.user, "bramble");
        assert_eq!(c.tasks.groups, None, "None: the default groups that exist");
        assert!(c.tasks.allowed_users.is_empty());
    }

    #[test]
    fn the_tasks_block_sets_the_user_the_groups_and_the_allowed_users() {
        let c = load(
            "[tasks]\nuser = \"sensors\"\ngroups = [\"i2c\", \"gpio\"]\n\
             allowed_users = [\"pi\", \"root\"]",
        )
        .unwrap();
        assert_eq!(c.tasks.user, "sensors");
        assert_eq!(
            c.tasks.groups,
            Some(vec!["i2c".to_owned(), "gpio".to_owned()])
        );
        assert_eq!(c.tasks.allowed_users, ["pi", "root"]);
        let c = load("[tasks]\ngroups = []").unwrap();
        assert_eq!(
            c.tasks.groups,
            Some(vec![]),
            "an empty list gives no groups"
        );
    }

    #[test]
    fn the_old_run_as_sets_the_task_user_and_the_flag_overrides_both() {
        assert_eq!(load("run_as = \"pi\"").unwrap().tasks.user, "pi");
        let e = load("run_as = \"pi\"\n[tasks]\nuser = \"bramble\"").unwrap_err();
        assert!(e.to_string().contains("`run_as`"), "{e}");
        let overrides = Overrides {
            run_as: Some("me".into()),
            ..Default::default()
        };
        let c = Config::from_toml(
            "[tasks]\nuser = \"bramble\"",
            Path::new("a.toml"),
            overrides,
            "pi4",
        )
        .unwrap();
        assert_eq!(c.tasks.user, "me", "--run-as overrides [tasks] user");
    }

    #[test]
    fn bad_task_user_and_group_names_name_their_field() {
        let cases = [
            ("[tasks]\nuser = \"\"", "tasks.user"),
            ("[tasks]\nuser = \"a:b\"", "tasks.user"),
            ("[tasks]\ngroups = [\"gpio\", \"i 2c\"]", "tasks.groups"),
            ("[tasks]\nallowed_users = [\"-rf\"]", "tasks.allowed_users"),
        ];
        for (text, field) in cases {
            match load(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected an error naming {field}, got {other:?}"),
            }
        }
        let e = load("[tasks]\nusers = \"x\"").unwrap_err().to_string();
        assert!(e.contains("users"), "{e}");
    }

    #[test]
    fn hostnames_become_valid_ids() {
        assert_eq!(id_from_hostname("raspberrypi"), "raspberrypi");
        assert_eq!(id_from_hostname("pi 4/kitchen"), "pi-4-kitchen");
        assert_eq!(id_from_hostname(""), "agent");
        assert_eq!(id_from_hostname(&"x".repeat(40)).len(), 32);
    }

    #[test]
    fn the_broker_login_comes_from_flags_env_file_url_or_credential_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let login = |c: &Config| {
            let l = c.broker.first().login.clone().unwrap();
            (l.username, l.password.expose().to_owned())
        };
        let text = format!(
            "broker = \"mqtt://url:u@m\"\nusername = \"file\"\npassword_file = \"{}\"",
            pw.display()
        );
        let c = load(&text).unwrap();
        assert_eq!(login(&c), ("file".into(), "from-file".into()));
        let overrides = Overrides {
            login: LoginSources {
                username: Some("flag".into()),
                password: Some(Password::new("env")),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Config::from_toml(&text, Path::new("a.toml"), overrides, "pi4").unwrap();
        assert_eq!(login(&c), ("flag".into(), "env".into()));
        let c = load("broker = \"mqtt://url:u@m\"").unwrap();
        assert_eq!(login(&c), ("url".into(), "u".into()));
        assert!(load("").unwrap().broker.first().login.is_none());
    }

    #[test]
    fn a_half_login_or_a_missing_credential_file_names_its_field_and_hides_the_password() {
        let e = load("password = \"hunter2\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "username"),
            "{e}"
        );
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        let e = load("username = \"u\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "password"),
            "{e}"
        );
        let e = load("credential_file = \"/nonexistent/cred\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "credential_file"),
            "{e}"
        );
        let e = load("broker = \"mqtt://u:hunter2@h:99999\"").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");
    }
}
