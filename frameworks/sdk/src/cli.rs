//! What every framework binary needs around its scheduler: logging, the broker options
//! ([`BrokerArgs`]: the broker list and its login), the default executor command, and running a
//! scheduler until it stops or Ctrl-C.

use std::path::PathBuf;

use bramble_mqtt::sources::BROKER_ENV;
use bramble_mqtt::LoginSources;

use crate::broker::Brokers;
use crate::protocol::Register;
use crate::scheduler::{run_until, Scheduler, SchedulerConfig};

/// Logs to stderr at the level in `BRAMBLE_LOG` (error|warn|info|debug|trace; info by default).
pub fn init_logging() {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

/// The broker a client uses when neither `--broker` nor `BRAMBLE_BROKER` names one.
pub const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";

/// The broker options of every framework scheduler and `bramble` CLI command: where the broker
/// is and how to log in to it. The login is settled as [`bramble_mqtt::sources`] says: an
/// explicit username and password (`--username` or `BRAMBLE_USERNAME`, with `--password-file`,
/// `BRAMBLE_PASSWORD_FILE` or `BRAMBLE_PASSWORD`), else the broker URL's userinfo, else a
/// credential file (`--credential`, `BRAMBLE_CREDENTIAL`). A password is never taken from argv.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerArgs {
    /// The broker, or a comma list of brokers to fail over between [default: BRAMBLE_BROKER, else
    /// mqtt://127.0.0.1:1883]. No password here (argv is public): give
    /// mqtt://USER:PASSWORD@HOST in BRAMBLE_BROKER, or use --password-file.
    #[arg(long, value_name = "mqtt://HOST:PORT[,...]")]
    pub broker: Option<String>,
    /// The broker username [env: BRAMBLE_USERNAME]; its password comes from --password-file,
    /// BRAMBLE_PASSWORD_FILE or BRAMBLE_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// A file whose first line is the broker password [env: BRAMBLE_PASSWORD_FILE].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// A principal's credential file (principal and secret), the login when no username or URL
    /// login is given [env: BRAMBLE_CREDENTIAL].
    #[arg(long, value_name = "FILE")]
    pub credential: Option<PathBuf>,
    /// The CA certificate an mqtts:// broker's certificate must chain to (default: the system's
    /// roots) [env: BRAMBLE_CA_FILE].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for an mqtts:// broker that wants one, with --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl BrokerArgs {
    /// The principal's credential (its secret keys the framework's calls): `--credential`, else
    /// `BRAMBLE_CREDENTIAL`, else `default_credential`; `None` when none is named.
    pub fn credential(
        &self,
        default_credential: Option<PathBuf>,
    ) -> Result<Option<bramble_mqtt::Credential>, String> {
        let path = self
            .credential
            .clone()
            .or_else(|| {
                std::env::var_os(bramble_mqtt::sources::CREDENTIAL_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or(default_credential);
        path.map(|p| bramble_mqtt::Credential::read(&p).map_err(|e| e.to_string()))
            .transpose()
    }

    /// The brokers with their login settled, from these flags and the process environment;
    /// `default_credential` is the credential file used when nothing names one (e.g. the
    /// operator's `~/.config/bramble/credential`). When a broker is `mqtts://`, the process's
    /// TLS configuration is settled too (the CA file and client certificate, checked now).
    pub fn brokers(&self, default_credential: Option<PathBuf>) -> Result<Brokers, String> {
        let lookup = |k: &str| std::env::var(k).ok();
        let brokers = self.brokers_with(lookup, default_credential)?;
        if brokers.any_tls() {
            bramble_mqtt::tls::configure(&self.tls_files(lookup)).map_err(|e| e.to_string())?;
        }
        Ok(brokers)
    }

    /// The TLS files these flags name (the CA file from `BRAMBLE_CA_FILE` when not given).
    pub fn tls_files(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> bramble_mqtt::tls::TlsFiles {
        bramble_mqtt::tls::TlsFiles {
            ca_file: self.ca_file.clone().or_else(|| {
                lookup(bramble_mqtt::tls::CA_FILE_ENV)
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from)
            }),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// [`brokers`](Self::brokers), reading the environment through `lookup`.
    pub fn brokers_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
        default_credential: Option<PathBuf>,
    ) -> Result<Brokers, String> {
        let list = match &self.broker {
            Some(list) => {
                bramble_mqtt::refuse_password_in_argv(list).map_err(|e| e.to_string())?;
                list.clone()
            }
            None => lookup(BROKER_ENV)
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| DEFAULT_BROKER.to_owned()),
        };
        let brokers = Brokers::parse(&list).map_err(|e| e.to_string())?;
        let flags = LoginSources {
            username: self.username.clone(),
            password: None,
            password_file: self.password_file.clone(),
            credential_file: self.credential.clone(),
        };
        let fallback = LoginSources {
            credential_file: default_credential,
            ..LoginSources::default()
        };
        flags
            .or(LoginSources::from_env(lookup))
            .or(fallback)
            .settle(brokers)
            .map_err(|e| e.to_string())
    }
}

/// The executor command for tasks when none is given: this very binary followed by `executor`
/// (`fallback` if the binary's path cannot be found).
pub fn default_executor(fallback: &str) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| fallback.to_owned());
    vec![exe, "executor".to_owned()]
}

/// `--executor "CMD ARGS"` split on spaces, or the [`default_executor`].
pub fn executor_command(given: Option<String>, fallback: &str) -> Vec<String> {
    match given {
        Some(cmd) => cmd.split_whitespace().map(str::to_owned).collect(),
        None => default_executor(fallback),
    }
}

/// Registers `scheduler` as framework `name` through the brokers of `broker` (see
/// [`BrokerArgs`]) under the client name `client`, and runs it on a current-thread runtime until
/// it stops (or Ctrl-C, which tears the framework down). Returns the scheduler with its results.
pub fn run_blocking<S: Scheduler>(
    broker: &BrokerArgs,
    client: &str,
    name: &str,
    scheduler: S,
) -> Result<S, String> {
    let brokers = broker.brokers(None)?;
    let config = SchedulerConfig {
        brokers,
        client_name: client.to_owned(),
        registration: Register::new(name),
        credential: broker.credential(None)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(run_until(config, scheduler, async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .map_err(|e| e.to_string())
}

/// The start of every `executor_main`: parses `args` (what follows the executor prefix) as `T`,
/// naming the program `program` in errors, and builds a current-thread runtime. On failure the
/// error is printed and the exit code to return is given back.
pub fn executor_start<T: clap::Parser>(
    program: &str,
    args: &[String],
) -> Result<(T, tokio::runtime::Runtime), std::process::ExitCode> {
    let parsed = T::try_parse_from(std::iter::once(program.to_owned()).chain(args.iter().cloned()))
        .map_err(|e| {
            let _ = e.print();
            std::process::ExitCode::from(2)
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!("cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        })?;
    Ok((parsed, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn a_password_is_taken_from_the_environments_broker_but_never_from_the_flag() {
        let flag = BrokerArgs {
            broker: Some("mqtt://fw-pi:hunter2@m".into()),
            ..Default::default()
        };
        let e = flag.brokers_with(env(&[]), None).unwrap_err();
        assert!(
            e.contains("BRAMBLE_BROKER") && !e.contains("hunter2"),
            "{e}"
        );
        let brokers = BrokerArgs::default()
            .brokers_with(env(&[("BRAMBLE_BROKER", "mqtt://fw-pi:hunter2@m")]), None)
            .unwrap();
        let login = brokers.first().login.clone().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.expose()),
            ("fw-pi", "hunter2")
        );
        assert_eq!(brokers.to_string(), "mqtt://fw-pi@m:1883");
    }

    #[test]
    fn the_default_broker_is_local_and_the_flag_beats_the_environment() {
        let none = BrokerArgs::default().brokers_with(env(&[]), None).unwrap();
        assert_eq!(none.to_string(), "mqtt://127.0.0.1:1883");
        assert!(none.first().login.is_none());
        let flag = BrokerArgs {
            broker: Some("mqtt://flag".into()),
            username: Some("flag-user".into()),
            ..Default::default()
        };
        let b = flag
            .brokers_with(
                env(&[
                    ("BRAMBLE_BROKER", "mqtt://env"),
                    ("BRAMBLE_USERNAME", "env-user"),
                    ("BRAMBLE_PASSWORD", "pw"),
                ]),
                None,
            )
            .unwrap();
        assert_eq!(b.first().host, "flag");
        assert_eq!(b.first().login.as_ref().unwrap().username, "flag-user");
    }

    #[test]
    fn a_default_credential_that_is_named_but_missing_is_an_error_only_when_needed() {
        let missing = Some(PathBuf::from("/nonexistent/credential"));
        let e = BrokerArgs::default()
            .brokers_with(env(&[]), missing.clone())
            .unwrap_err();
        assert!(e.contains("/nonexistent/credential"), "{e}");
        let ok = BrokerArgs::default().brokers_with(
            env(&[("BRAMBLE_USERNAME", "u"), ("BRAMBLE_PASSWORD", "p")]),
            missing,
        );
        assert!(ok.is_ok());
    }
}
