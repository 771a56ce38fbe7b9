//! The packaging in `cross/`: the agent's systemd unit, `install.sh` against a staging root (no
//! systemd, no root, no cross toolchain needed), the master's unit and default file, the master's
//! .deb built by `cross/deb.sh` around a stand-in binary (needs dpkg-deb and objdump; runs
//! `systemd-analyze verify` when there is one), and the `.deb`s that `cross/build.sh` writes to
//! `target/dist/` (ignored unless they were built).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use bramble_agent::config::{Config, Overrides};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$CARGO_TARGET_DIR`, or the `target` directory this test binary was built into.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Every line of `lines` is a line of `unit`.
fn assert_unit_has(unit: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            unit.lines().any(|l| l.trim() == *line),
            "the unit lacks `{line}`:\n{unit}"
        );
    }
}

/// The unit lines the agent relies on (see agent/src/cgroup/ and agent/src/process/).
fn assert_the_unit_is_right(unit: &str) {
    assert_unit_has(
        unit,
        &[
            "ExecStart=/usr/bin/bramble-agent --config /etc/bramble/agent.toml",
            "Delegate=yes",
            "KillMode=process",
            "Restart=on-failure",
            "After=network-online.target",
            "Wants=network-online.target",
            "WantedBy=multi-user.target",
        ],
    );
}

#[test]
fn the_systemd_unit_delegates_cgroups_and_leaves_tasks_running_on_restart() {
    let unit = std::fs::read_to_string(repo().join("cross/pkg/bramble-agent.service")).unwrap();
    assert_the_unit_is_right(&unit);
}

/// `uname -m` of a board that runs this test's own binary.
fn host_uname_arch() -> &'static str {
    match std::env::consts::ARCH {
        "arm" => "armv7l",
        other => other,
    }
}

/// A release tarball as cross/build.sh lays it out, with this test binary (an ELF for the host) as
/// the agent.
fn fake_tarball(dir: &Path) -> PathBuf {
    let name = "bramble-agent-0.0.0-test";
    let inner = dir.join(name);
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::copy(
        std::env::current_exe().unwrap(),
        inner.join("bramble-agent"),
    )
    .unwrap();
    for f in ["agent.toml", "bramble-agent.service"] {
        std::fs::copy(repo().join("cross/pkg").join(f), inner.join(f)).unwrap();
    }
    std::fs::copy(repo().join("cross/install.sh"), inner.join("install.sh")).unwrap();
    let tarball = dir.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir)
        .arg(name));
    tarball
}

/// A cgroup v2 root whose controllers are `controllers`.
fn fake_cgroup_root(dir: &Path, controllers: &str) -> PathBuf {
    let root = dir.join("cgroup");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
    root
}

/// A staging root for `install.sh`, beside a fake release tarball.
struct Staging {
    dir: tempfile::TempDir,
    tarball: PathBuf,
    root: PathBuf,
}

impl Staging {
    fn new() -> Staging {
        let dir = tempfile::tempdir().unwrap();
        let tarball = fake_tarball(dir.path());
        let root = dir.path().join("root");
        Staging { dir, tarball, root }
    }

    /// `install.sh --root ROOT --arch ARCH [--cgroup-root CGROUP] EXTRA… TARBALL`.
    fn install<S: AsRef<OsStr>>(&self, arch: &str, cgroup: Option<&Path>, extra: &[S]) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg(repo().join("cross/install.sh"))
            .arg("--root")
            .arg(&self.root)
            .args(["--arch", arch]);
        if let Some(cgroup) = cgroup {
            cmd.arg("--cgroup-root").arg(cgroup);
        }
        cmd.args(extra).arg(&self.tarball).output().unwrap()
    }
}

#[test]
fn install_sh_installs_into_a_staging_root_sets_the_broker_and_keeps_an_existing_config() {
    let staging = Staging::new();
    let root = &staging.root;
    let cgroup = fake_cgroup_root(staging.dir.path(), "cpuset cpu io memory pids");
    let install = |extra: &[&str]| staging.install(host_uname_arch(), Some(&cgroup), extra);
    let out = install(&["--broker", "mqtt://10.1.2.3:1884"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("memory cgroup controller is enabled"),
        "{stdout}"
    );
    assert!(stdout.contains("systemd was not touched"), "{stdout}");

    let bin = root.join("usr/bin/bramble-agent");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    );
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/bramble-agent.service")).unwrap();
    assert_the_unit_is_right(&unit);
    let conf = root.join("etc/bramble/agent.toml");
    let config = Config::load(&conf, true, Overrides::default(), "pi").unwrap();
    assert_eq!(
        (
            config.broker.first().host.as_str(),
            config.broker.first().port
        ),
        ("10.1.2.3", 1884)
    );

    // A second install keeps the config the user edited, and sets only the broker when asked.
    std::fs::write(&conf, "agent_id = \"kitchen\"\n").unwrap();
    let out = install(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kept the existing"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "agent_id = \"kitchen\"\n"
    );

    assert!(install(&["--broker", "mqtt://master.lan"]).status.success());
    let config = Config::load(&conf, true, Overrides::default(), "pi").unwrap();
    assert_eq!(config.agent_id, "kitchen");
    assert_eq!(config.broker.first().host, "master.lan");

    // A comma list of brokers to fail over between is set as it is.
    let list = "mqtt://10.1.2.3:1884,mqtt://10.1.2.4:1884";
    assert!(install(&["--broker", list]).status.success());
    let config = Config::load(&conf, true, Overrides::default(), "pi").unwrap();
    assert_eq!(config.broker.to_string(), list);
    for bad in ["mqtt://a,http://b", "mqtt://a,,mqtt://b"] {
        assert!(!install(&["--broker", bad]).status.success(), "{bad}");
    }
}

#[test]
fn install_sh_sets_the_agent_id_and_attributes_and_keeps_the_rest_of_an_edited_config() {
    let staging = Staging::new();
    let root = &staging.root;
    let cgroup = fake_cgroup_root(staging.dir.path(), "cpu memory pids");
    let install = |extra: &[&str]| staging.install(host_uname_arch(), Some(&cgroup), extra);
    let out = install(&[
        "--agent-id",
        "pi-1",
        "--attribute",
        "sensor=bme280",
        "--attribute",
        "room=kit chen",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conf = root.join("etc/bramble/agent.toml");
    let config = Config::load(&conf, true, Overrides::default(), "host").unwrap();
    assert_eq!(config.agent_id, "pi-1");
    assert_eq!(
        config.attributes,
        vec![
            ("room".to_owned(), "kit chen".to_owned()),
            ("sensor".to_owned(), "bme280".to_owned())
        ]
    );

    // An upgrade (as `bramble deploy` re-runs it): the edit stays, the named lines are replaced.
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("log_limit_kib = 1024", "log_limit_kib = 2048");
    std::fs::write(&conf, edited).unwrap();
    let out = install(&["--agent-id", "pi-2", "--attribute", "sensor=dht22"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let text_after = std::fs::read_to_string(&conf).unwrap();
    let lines = |prefix: &str| text_after.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(lines("agent_id ="), 1, "{text_after}");
    assert_eq!(lines("sensor ="), 1, "{text_after}");
    let config = Config::load(&conf, true, Overrides::default(), "host").unwrap();
    assert_eq!(config.agent_id, "pi-2");
    assert_eq!(config.log_limit_bytes, 2048 * 1024);
    assert!(config
        .attributes
        .contains(&("sensor".to_owned(), "dht22".to_owned())));

    // A config with no [attributes] table gets one.
    std::fs::write(&conf, "broker = \"mqtt://m:1883\"\n").unwrap();
    assert!(install(&["--attribute", "camera=picam"]).status.success());
    let config = Config::load(&conf, true, Overrides::default(), "host").unwrap();
    assert_eq!(
        config.attributes,
        vec![("camera".to_owned(), "picam".to_owned())]
    );

    // Values TOML would need escaped, and bad ids, are refused.
    for bad in [
        &["--attribute", "k=say \"hi\""][..],
        &["--attribute", "no-equals"],
        &["--attribute", "isolation=none"],
        &["--agent-id", "has space"],
    ] {
        let out = install(bad);
        assert!(!out.status.success(), "{bad:?} is refused");
    }
}

#[test]
fn install_sh_installs_the_boards_credential_privately_and_points_the_config_at_it() {
    use std::os::unix::fs::PermissionsExt;
    let staging = Staging::new();
    let cgroup = fake_cgroup_root(staging.dir.path(), "cpu memory pids");
    let secret = "ab".repeat(32);
    let credential = staging.dir.path().join("pi-1.credential");
    std::fs::write(
        &credential,
        format!("# Bramble credential\nprincipal = \"agent-pi-1\"\nsecret = \"{secret}\"\n"),
    )
    .unwrap();
    let cred_arg = credential.to_str().unwrap();
    let out = staging.install(
        host_uname_arch(),
        Some(&cgroup),
        &["--credential", cred_arg],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !printed.contains(&secret),
        "the secret is never printed: {printed}"
    );
    let installed = staging.root.join("etc/bramble/agent.credential");
    assert_eq!(
        std::fs::read_to_string(&installed).unwrap(),
        std::fs::read_to_string(&credential).unwrap()
    );
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = std::fs::read_to_string(staging.root.join("etc/bramble/agent.toml")).unwrap();
    assert!(
        config.contains("credential_file = \"/etc/bramble/agent.credential\"\n"),
        "{config}"
    );
    assert!(
        config.contains("agent_id = \"pi-1\"\n"),
        "the credential names the agent: {config}"
    );

    // Another agent's id, or a file that is not an agent's credential, is refused unprinted.
    let out = staging.install(
        host_uname_arch(),
        Some(&cgroup),
        &["--credential", cred_arg, "--agent-id", "pi-2"],
    );
    assert!(!out.status.success());
    let bogus = staging.dir.path().join("bogus");
    std::fs::write(
        &bogus,
        "principal = \"operator-x\"\nsecret = \"very-secret\"\n",
    )
    .unwrap();
    let out = staging.install(
        host_uname_arch(),
        Some(&cgroup),
        &["--credential", bogus.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        !text(&out.stderr).contains("very-secret"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn install_sh_reports_a_missing_memory_controller_with_the_kernel_command_line_fix() {
    let staging = Staging::new();
    let (dir, root) = (staging.dir.path(), &staging.root);
    std::fs::create_dir_all(root.join("boot/firmware")).unwrap();
    std::fs::write(
        root.join("boot/firmware/cmdline.txt"),
        "console=tty1 root=/dev/mmcblk0p2\n",
    )
    .unwrap();

    // cgroup v2 without `memory` (Raspberry Pi OS's default).
    let v2 = fake_cgroup_root(dir, "cpuset cpu io pids");
    let out = staging.install::<&str>(host_uname_arch(), Some(&v2), &[]);
    assert!(
        out.status.success(),
        "a warning, not a failure: {}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("memory cgroup controller is not enabled"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cgroup_enable=memory cgroup_memory=1"),
        "{stderr}"
    );
    assert!(stderr.contains("/boot/firmware/cmdline.txt"), "{stderr}");

    // cgroup v1 with memory disabled in /proc/cgroups (and an older Pi OS's /boot/cmdline.txt).
    std::fs::remove_dir_all(root.join("boot/firmware")).unwrap();
    std::fs::write(root.join("boot/cmdline.txt"), "console=tty1\n").unwrap();
    let proc_cgroups = dir.join("proc-cgroups");
    std::fs::write(
        &proc_cgroups,
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t0\t1\t0\n",
    )
    .unwrap();
    let out = staging.install(
        host_uname_arch(),
        Some(&dir.join("no-v2")),
        &[OsStr::new("--proc-cgroups"), proc_cgroups.as_os_str()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cgroup_enable=memory cgroup_memory=1"),
        "{stderr}"
    );
    assert!(stderr.contains(" /boot/cmdline.txt"), "{stderr}");
}

#[test]
fn install_sh_refuses_armv6_boards_and_binaries_for_another_architecture() {
    let staging = Staging::new();
    let out = staging.install::<&str>("armv6l", None, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Pi Zero W / Pi 1"), "{stderr}");
    assert!(stderr.contains("not supported"), "{stderr}");

    let other = if host_uname_arch() == "aarch64" {
        "armv7l"
    } else {
        "aarch64"
    };
    let out = staging.install::<&str>(other, None, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not built for"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !staging.root.join("usr/bin/bramble-agent").exists(),
        "nothing installed"
    );
}

/// `dpkg-deb --info DEB MEMBER`: a control member of the package.
fn deb_info(deb: &Path, member: &str) -> String {
    text(&run(Command::new("dpkg-deb").arg("--info").arg(deb).arg(member)).stdout)
}

/// The package fields, files and maintainer scripts every Bramble .deb has; returns the package
/// unpacked.
fn inspect_deb(deb: &Path, package: &str, deb_arch: &str, conffile: &str, unit: &str) -> TempDir {
    assert!(
        deb.is_file(),
        "{} is missing: run cross/build.sh first",
        deb.display()
    );
    let field = |name: &str| {
        text(&run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name)).stdout)
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), package);
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), deb_arch);
    assert!(
        field("Depends").starts_with("libc6 (>= 2."),
        "{}",
        field("Depends")
    );
    assert!(field("Maintainer").contains('@'));

    let contents = text(&run(Command::new("dpkg-deb").arg("--contents").arg(deb)).stdout);
    let binary = format!("./usr/bin/{package}");
    let unit_path = format!("./lib/systemd/system/{unit}");
    for path in [binary.as_str(), &format!(".{conffile}"), &unit_path] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} is not in the .deb:\n{contents}"));
        assert!(line.contains("root/root"), "owned by root: {line}");
    }
    let conffiles = deb_info(deb, "conffiles");
    assert_eq!(conffiles.trim(), conffile);
    for script in ["postinst", "prerm"] {
        let s = deb_info(deb, script);
        assert!(s.contains("systemctl"), "{script}:\n{s}");
        assert!(s.contains(unit), "{script} names {unit}:\n{s}");
    }

    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
    let packaged = std::fs::read_to_string(dir.path().join(&conffile[1..])).unwrap();
    let source = match package {
        "bramble-agent" => "cross/pkg/agent.toml",
        _ => "cross/pkg/bramble-master.default",
    };
    assert_eq!(
        packaged,
        std::fs::read_to_string(repo().join(source)).unwrap()
    );
    dir
}

/// Checks one agent .deb from cross/build.sh: the common checks, the unit and the binary's machine.
fn check_deb(deb_arch: &str, elf_machine: u8) {
    let deb = target_dir().join(format!(
        "dist/bramble-agent_{}_{deb_arch}.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let dir = inspect_deb(
        &deb,
        "bramble-agent",
        deb_arch,
        "/etc/bramble/agent.toml",
        "bramble-agent.service",
    );
    let unit = std::fs::read_to_string(dir.path().join("lib/systemd/system/bramble-agent.service"))
        .unwrap();
    assert_the_unit_is_right(&unit);
    let bin = std::fs::read(dir.path().join("usr/bin/bramble-agent")).unwrap();
    assert_eq!(&bin[..4], b"\x7fELF");
    assert_eq!(bin[18], elf_machine, "the binary's ELF machine");
    assert!(
        bin.len() <= 3 * 1024 * 1024 / 2,
        "the agent is at most 1.5 MiB: {}",
        bin.len()
    );
}

#[test]
#[ignore = "needs the .deb from cross/build.sh"]
fn the_arm64_deb_holds_the_agent_its_config_and_a_unit_that_delegates_cgroups() {
    check_deb("arm64", 0xb7);
}

#[test]
#[ignore = "needs the .deb from cross/build.sh"]
fn the_armhf_deb_holds_the_agent_its_config_and_a_unit_that_delegates_cgroups() {
    check_deb("armhf", 0x28);
}

/// The master's unit: `bramble master` with the arguments of /etc/default/bramble-master, as an
/// unprivileged user with the filesystem read-only but for its state directory.
fn assert_the_master_unit_is_right(unit: &str) {
    assert_unit_has(
        unit,
        &[
            "ExecStart=/usr/bin/bramble master $BRAMBLE_MASTER_ARGS",
            "EnvironmentFile=-/etc/default/bramble-master",
            "Restart=on-failure",
            "After=network-online.target",
            "Wants=network-online.target",
            "DynamicUser=yes",
            "StateDirectory=bramble-master bramble-master/artifacts",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "WantedBy=multi-user.target",
        ],
    );
    for line in unit.lines() {
        assert!(
            !line.starts_with("User=root") && !line.starts_with("AmbientCapabilities=CAP"),
            "the master needs no root: {line}"
        );
    }
}

/// `BRAMBLE_MASTER_ARGS` of the shipped /etc/default/bramble-master, and its commented examples.
fn master_args(default: &str) -> (String, Vec<String>) {
    let value = |l: &str| {
        l.strip_prefix("BRAMBLE_MASTER_ARGS=\"")
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_owned)
    };
    let set: Vec<_> = default.lines().filter_map(value).collect();
    assert_eq!(set.len(), 1, "one BRAMBLE_MASTER_ARGS is set:\n{default}");
    let examples = default
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(value)
        .collect();
    (set[0].clone(), examples)
}

#[test]
fn the_master_unit_runs_unprivileged_with_the_arguments_of_its_default_file() {
    let unit = std::fs::read_to_string(repo().join("cross/pkg/bramble-master.service")).unwrap();
    assert_the_master_unit_is_right(&unit);
    let default = std::fs::read_to_string(repo().join("cross/pkg/bramble-master.default")).unwrap();
    let (args, examples) = master_args(&default);
    // The artifacts are served from the unit's state directory (the master's default,
    // /var/lib/bramble/artifacts, is the agent's work dir and not writable by the master's user).
    let artifacts = "--artifacts /var/lib/bramble-master/artifacts";
    assert_eq!(args, artifacts);
    for flag in ["--broker mqtt://", "--standby", "--ha-discovery", "--http "] {
        assert!(
            examples.iter().any(|e| e.contains(flag)),
            "an example with {flag}:\n{default}"
        );
    }
    for example in &examples {
        assert!(example.contains(artifacts), "{example}");
    }
}

/// The master's .deb, built by cross/deb.sh from `bindir` (holding `bramble`) into `dist`.
fn check_master_deb(dist: &Path, deb_arch: &str) -> TempDir {
    let deb = dist.join(format!(
        "bramble_{}_{deb_arch}.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let dir = inspect_deb(
        &deb,
        "bramble",
        deb_arch,
        "/etc/default/bramble-master",
        "bramble-master.service",
    );
    let unit_path = dir.path().join("lib/systemd/system/bramble-master.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_the_master_unit_is_right(&unit);
    let postinst = deb_info(&deb, "postinst");
    assert!(postinst.contains("systemctl enable bramble-master.service"));
    assert!(
        !postinst.lines().any(|l| {
            let l = l.trim();
            l.starts_with("systemctl start") || l.starts_with("systemctl restart")
        }),
        "a first install enables but does not start the master:\n{postinst}"
    );
    assert!(
        postinst.contains("systemctl try-restart bramble-master.service"),
        "an upgrade restarts a running master:\n{postinst}"
    );
    let postrm = deb_info(&deb, "postrm");
    assert!(
        postrm.contains("\"$1\" = purge") && postrm.contains("rm -rf /var/lib/bramble-master "),
        "only purge removes the state directory:\n{postrm}"
    );
    assert!(
        !postrm.contains("/var/lib/bramble ") && !postrm.contains("/var/lib/bramble\n"),
        "the agent's /var/lib/bramble is not the master's to remove:\n{postrm}"
    );
    verify_unit(dir.path(), &unit);
    dir
}

/// `systemd-analyze verify` of the unit as unpacked in `root`, its ExecStart and EnvironmentFile
/// pointed into `root` (verify wants the binary to exist). Skipped, with a note, when this machine
/// has no systemd-analyze.
fn verify_unit(root: &Path, unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no systemd-analyze here: the unit is not verified (apt-get install systemd)");
        return;
    }
    let root = root.to_str().unwrap();
    let copy = unit
        .replace("ExecStart=/usr/bin/", &format!("ExecStart={root}/usr/bin/"))
        .replace(
            "EnvironmentFile=-/etc/",
            &format!("EnvironmentFile=-{root}/etc/"),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bramble-master.service");
    std::fs::write(&path, copy).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn deb_sh_packages_the_master_for_x86_64_with_its_unit_and_default_file() {
    // The system's `true` stands in for the master: a small glibc ELF for the host (this test's
    // own binary would do, but xz takes half a minute over its 40 MB).
    let stand_in = Path::new("/bin/true");
    let dir = tempfile::tempdir().unwrap();
    let bindir = dir.path().join("bin");
    std::fs::create_dir(&bindir).unwrap();
    std::fs::copy(stand_in, bindir.join("bramble")).unwrap();
    let dist = dir.path().join("dist");
    let out = run(Command::new(repo().join("cross/deb.sh"))
        .arg("bramble")
        .arg("x86_64-unknown-linux-gnu")
        .arg(&bindir)
        .arg(&dist));
    let printed = text(&out.stdout);
    let name = format!("bramble_{}_amd64.deb", env!("CARGO_PKG_VERSION"));
    assert!(printed.trim().ends_with(&name), "{printed}");
    let unpacked = check_master_deb(&dist, "amd64");
    assert_eq!(
        std::fs::read(unpacked.path().join("usr/bin/bramble")).unwrap(),
        std::fs::read(stand_in).unwrap()
    );
}

#[test]
#[ignore = "needs the bramble binary, which cargo test --workspace builds for the master's tests"]
fn the_master_takes_every_flag_its_packaged_default_file_uses() {
    let bin = target_dir().join("debug/bramble");
    let help = text(&run(Command::new(&bin).args(["master", "--help"])).stdout);
    let default = std::fs::read_to_string(repo().join("cross/pkg/bramble-master.default")).unwrap();
    let (args, examples) = master_args(&default);
    for word in std::iter::once(&args)
        .chain(&examples)
        .flat_map(|a| a.split(' '))
    {
        if word.starts_with("--") {
            assert!(help.contains(word), "bramble master has no {word}:\n{help}");
        }
    }
}
