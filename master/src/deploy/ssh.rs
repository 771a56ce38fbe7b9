//! The commands `bramble deploy` runs against a board: ssh and scp with the shared options, the
//! install command, and a runner that bounds their time and output.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tracing::debug;

use super::*;

/// The most output kept from each ssh/scp stream.
pub(super) const OUTPUT_LIMIT: u64 = 64 * 1024;

/// How much of a failed command's stderr goes into its error.
pub(super) const ERROR_TAIL: usize = 400;

/// The remote command that unpacks the tarball in `dir`, runs its install.sh and removes `dir`.
#[allow(clippy::too_many_arguments)]
pub(super) fn install_command(
    dir: &str,
    tarball: &str,
    unpacked: &str,
    sudo: &str,
    broker: &str,
    id: &str,
    attributes: &BTreeMap<String, String>,
    no_systemd: bool,
    credential_on_stdin: bool,
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
    if credential_on_stdin {
        // The credential comes over ssh's stdin, never on a command line.
        install.push_str(" --credential -");
    }
    let dir = quote(dir);
    format!(
        "cd {dir} && tar -xzf {} && {install}; rc=$?; cd / && rm -rf {dir}; exit $rc",
        quote(tarball)
    )
}

/// `s` as one word of a POSIX shell command line.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The options every ssh and scp gets.
pub(super) fn common_options(ctx: &Ctx, board: &Board, cmd: &mut Command) {
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
pub(super) fn ssh(ctx: &Ctx, board: &Board, command: &str) -> Command {
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
pub(super) fn scp(ctx: &Ctx, board: &Board, file: &Path, dir: &str) -> Command {
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
pub(super) async fn run_bounded(
    cmd: Command,
    step: Step,
    program: &'static str,
    deadline: Duration,
) -> Result<String, BoardError> {
    run_bounded_with_input(cmd, None, step, program, deadline).await
}

/// [`run_bounded`], writing `input` (a secret, say) to the command's stdin and closing it.
pub(super) async fn run_bounded_with_input(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    step: Step,
    program: &'static str,
    deadline: Duration,
) -> Result<String, BoardError> {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if input.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    debug!(?cmd, "running");
    let mut child = cmd.spawn().map_err(|source| BoardError::Spawn {
        step,
        program,
        source,
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written beside the reads below: a remote side that stops reading cannot stall them.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = stdin.write_all(&input).await;
        });
    }
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
pub(super) fn tail(text: &str) -> String {
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
pub(super) fn cut(text: &str) -> String {
    let mut end = text.len().min(ERROR_TAIL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// This machine's address on the route to `board`, with port 1883 (no packet is sent).
pub(super) async fn local_address_towards(board: &Board) -> Result<SocketAddr, BoardError> {
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
