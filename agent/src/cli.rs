//! The `bramble-agent` command line: flags, config loading, logging, and the driver on a
//! current-thread runtime. `bramble __agent …` runs the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, Overrides, DEFAULT_CONFIG_PATH};

const USAGE: &str = "\
The Bramble agent: reports this board's resources to the master and runs its tasks in cgroups.

Usage: bramble-agent [OPTIONS]

Options:
  -c, --config <FILE>         The config file (TOML). Default: /etc/bramble/agent.toml, if it exists
      --broker <URL[,URL]>    The MQTT broker, e.g. mqtt://192.168.1.10:1883, or a comma list
                              of brokers to fail over between (no password here: argv is public)
      --username <USER>       The broker username; the password comes from --password-file,
                              BRAMBLE_PASSWORD or the config file
      --password-file <FILE>  A file whose first line is the broker password
      --credential <FILE>     This board's credential file (principal and secret), the broker
                              login when no username or URL login is given
      --ca-file <FILE>        The CA certificate an mqtts:// broker's certificate must chain to
                              (default: the system's roots; needs the agent's TLS build)
      --agent-id <ID>         The agent's id (default: the hostname)
      --work-dir <DIR>        Where sandboxes and the checkpoint live
      --run-as <USER>         The user tasks run as when the agent is root ([tasks] user,
                              default: bramble)
      --attribute <KEY=VALUE> An attribute to advertise, e.g. sensor=bme280 (repeatable)
      --reserve-mem <MIB>     Memory kept for the OS, in MiB
      --supervisor <PROGRAM>  The program tasks are supervised by, run as `PROGRAM __supervise`
                              (default: this binary; e.g. a wrapper that runs it under qemu-user)
  -h, --help                  Print this help
  -V, --version               Print the version

Flags override the environment, which overrides the config file: BRAMBLE_BROKER (may carry
mqtt://USER:PASSWORD@HOST), BRAMBLE_USERNAME, BRAMBLE_PASSWORD, BRAMBLE_PASSWORD_FILE and
BRAMBLE_CREDENTIAL, BRAMBLE_CA_FILE. Logs go to stderr; BRAMBLE_LOG=debug shows more.
";

/// What the command line asked for.
enum Command {
    Run {
        config: Option<PathBuf>,
        overrides: Box<Overrides>,
        supervisor: Option<PathBuf>,
    },
    Help,
    Version,
}

fn parse_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut o = Overrides::default();
    let mut supervisor = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("config") => config = Some(parser.value()?.into()),
            Long("broker") => {
                let list = parser.value()?.string()?;
                bramble_mqtt::refuse_password_in_argv(&list)
                    .map_err(|e| lexopt::Error::from(e.to_string()))?;
                o.broker = Some(list);
            }
            Long("username") => o.login.username = Some(parser.value()?.string()?),
            Long("password-file") => o.login.password_file = Some(parser.value()?.into()),
            Long("credential") => o.login.credential_file = Some(parser.value()?.into()),
            Long("ca-file") => o.ca_file = Some(parser.value()?.into()),
            Long("agent-id") => o.agent_id = Some(parser.value()?.string()?),
            Long("work-dir") => o.work_dir = Some(parser.value()?.into()),
            Long("run-as") => o.run_as = Some(parser.value()?.string()?),
            Long("attribute") => {
                let kv = parser.value()?.string()?;
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    lexopt::Error::from(format!("--attribute `{kv}` is not KEY=VALUE"))
                })?;
                o.attributes.push((k.to_owned(), v.to_owned()));
            }
            Long("reserve-mem") => o.reserve_mem_mib = Some(parser.value()?.parse()?),
            Long("supervisor") => supervisor = Some(parser.value()?.into()),
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Run {
        config,
        overrides: Box::new(o),
        supervisor,
    })
}

/// Runs the agent's command line: `args` is the whole argv, program name first.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    if args
        .get(1)
        .is_some_and(|a| a == crate::process::SUPERVISE_ARG)
    {
        return crate::process::supervise_main(&args[2..]);
    }
    let (config_path, mut overrides, supervisor) = match parse_args(args.into_iter().skip(1)) {
        Ok(Command::Run {
            config,
            overrides,
            supervisor,
        }) => (config, overrides, supervisor),
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!(
                "bramble-agent {} (wire protocol v{})",
                env!("CARGO_PKG_VERSION"),
                agent_nostd_core::PROTOCOL_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bramble-agent: {e}\n\n{USAGE}");
            return ExitCode::from(64); // EX_USAGE
        }
    };
    // BRAMBLE_LOG=error|warn|info|debug|trace (a plain level keeps regex out of the agent).
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    with_env(&mut overrides, |k| std::env::var(k).ok());
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (path, required) = match config_path {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = match Config::load(&path, required, *overrides, &hostname) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bramble-agent: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    if config.broker.any_tls() {
        if let Err(e) = bramble_mqtt::tls::configure(&config.tls) {
            eprintln!("bramble-agent: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bramble-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::driver::run(config, supervisor, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Fills what the flags left unset from the environment (read through `lookup`):
/// `BRAMBLE_BROKER` and the login variables (see [`bramble_mqtt::sources`]).
fn with_env(overrides: &mut Overrides, lookup: impl Fn(&str) -> Option<String>) {
    if overrides.broker.is_none() {
        overrides.broker = lookup(bramble_mqtt::sources::BROKER_ENV).filter(|b| !b.is_empty());
    }
    if overrides.ca_file.is_none() {
        overrides.ca_file = lookup(bramble_mqtt::tls::CA_FILE_ENV)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
    }
    let login = std::mem::take(&mut overrides.login);
    overrides.login = login.or(bramble_mqtt::LoginSources::from_env(lookup));
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, lexopt::Error> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn flags_become_overrides() {
        let Ok(Command::Run {
            config,
            overrides,
            supervisor,
        }) = parse(&[
            "--config",
            "/etc/x.toml",
            "--broker",
            "mqtt://m:1",
            "--attribute",
            "sensor=bme280",
            "--attribute",
            "room=attic",
            "--reserve-mem",
            "128",
            "--supervisor",
            "/usr/local/bin/supervise-under-qemu",
        ])
        else {
            panic!("expected a run");
        };
        assert_eq!(config, Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(overrides.broker.as_deref(), Some("mqtt://m:1"));
        assert_eq!(overrides.attributes.len(), 2);
        assert_eq!(overrides.reserve_mem_mib, Some(128));
        assert_eq!(
            supervisor,
            Some(PathBuf::from("/usr/local/bin/supervise-under-qemu"))
        );
    }

    #[test]
    fn bad_flags_are_errors_that_name_them() {
        let err = parse(&["--attribute", "nokey"]).err().unwrap().to_string();
        assert!(err.contains("nokey"), "{err}");
        let err = parse(&["--frobnicate"]).err().unwrap().to_string();
        assert!(err.contains("frobnicate"), "{err}");
        let err = parse(&["--reserve-mem", "lots"]).err().unwrap().to_string();
        assert!(err.contains("lots"), "{err}");
        assert!(matches!(parse(&["-h"]), Ok(Command::Help)));
    }

    #[test]
    fn a_password_in_the_broker_flag_is_refused_but_the_environment_may_carry_one() {
        let err = parse(&["--broker", "mqtt://u:hunter2@m"])
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("BRAMBLE_BROKER"), "{err}");
        let Ok(Command::Run { mut overrides, .. }) = parse(&["--username", "flag-user"]) else {
            panic!("expected a run");
        };
        with_env(&mut overrides, |k| match k {
            "BRAMBLE_BROKER" => Some("mqtt://u:hunter2@m".into()),
            "BRAMBLE_USERNAME" => Some("env-user".into()),
            "BRAMBLE_PASSWORD" => Some("env-pw".into()),
            _ => None,
        });
        assert_eq!(overrides.broker.as_deref(), Some("mqtt://u:hunter2@m"));
        assert_eq!(overrides.login.username.as_deref(), Some("flag-user"));
        assert_eq!(overrides.login.password.unwrap().expose(), "env-pw");
    }

    #[test]
    fn the_help_names_every_login_source() {
        for flag in [
            "--username",
            "--password-file",
            "--credential",
            "BRAMBLE_PASSWORD",
        ] {
            assert!(USAGE.contains(flag), "{flag}");
        }
    }
}
