//! `bramble broker-config mosquitto`: a Mosquitto 2 password file, ACL file and `mosquitto.conf`
//! snippet from the credential store, so an external broker refuses anonymous clients and gives
//! each principal only its own topics.
//!
//! - `passwd`: `KIND-NAME:$7$101$SALT$HASH`, the format `mosquitto_passwd` writes (PBKDF2-HMAC-
//!   SHA512, 101 iterations, a 12-byte salt from the kernel, 64-byte hash, standard base64). The
//!   password hashed is the principal's broker password (`Secret::broker_password`).
//! - `acl`: one `user` block per principal (see [`acl`] for the table).
//! - `mosquitto.conf`: `allow_anonymous false`, `password_file`, `acl_file`, `max_packet_size`.

use std::path::{Path, PathBuf};

use agent_nostd_core::auth::{Principal, PrincipalKind};
use sha2::Sha512;

use super::store::Store;

/// PBKDF2 iterations, as `mosquitto_passwd` uses by default.
pub const ITERATIONS: u32 = 101;
/// Salt length, as `mosquitto_passwd` uses.
pub const SALT_LEN: usize = 12;

/// The files written, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The password file.
    pub passwd: PathBuf,
    /// The ACL file.
    pub acl: PathBuf,
    /// The configuration snippet.
    pub conf: PathBuf,
}

/// Writes `passwd`, `acl` and `mosquitto.conf` for `store` into `dir` (created; the password file
/// and ACL with mode 0600, the snippet 0644).
pub fn write(store: &Store, dir: &Path) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let written = Written {
        passwd: dir.join("passwd"),
        acl: dir.join("acl"),
        conf: dir.join("mosquitto.conf"),
    };
    write_file(&written.passwd, &password_file(store)?, 0o600)?;
    write_file(&written.acl, &acl(store), 0o600)?;
    write_file(
        &written.conf,
        &conf_snippet(&written.passwd, &written.acl),
        0o644,
    )?;
    Ok(written)
}

/// Writes `text` to `path` atomically with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    bramble_mqtt::credential::write_atomically(path, text.as_bytes(), mode, |_| Ok(()))
}

/// The password file: one `USERNAME:HASH` line per principal.
pub fn password_file(store: &Store) -> std::io::Result<String> {
    let mut out = String::new();
    for e in store.entries() {
        let salt = super::random::bytes::<SALT_LEN>()?;
        out.push_str(&format!(
            "{}:{}\n",
            e.principal.username().as_str(),
            hash_password(e.secret.broker_password().as_str(), &salt)
        ));
    }
    Ok(out)
}

/// `$7$ITERATIONS$SALT$HASH`: Mosquitto 2's PBKDF2-SHA512 password hash (a 64-byte key).
pub fn hash_password(password: &str, salt: &[u8]) -> String {
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, ITERATIONS, &mut hash);
    format!("$7${ITERATIONS}${}${}", base64(salt), base64(&hash))
}

/// Standard base64 with padding, as `mosquitto_passwd` writes it.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The ACL file. Per principal:
///
/// | principal        | writes                                                            | reads |
/// |------------------|-------------------------------------------------------------------|-------|
/// | `master-*`       | everything (`#`)                                                  | everything |
/// | `agent-NAME`     | `bramble/v1/agent/NAME/{register,report,status,pong,will}`        | `bramble/v1/agent/NAME/cmd`, `bramble/v1/master/hello` |
/// | `framework-NAME` | `bramble/v1/framework/{register,call,will}/NAME`, `…/message/NAME`, `…/exec/NAME/#` | `…/event/NAME`, `…/message/NAME`, `…/exec/NAME/#`, `bramble/v1/master/hello` |
/// | `operator-NAME`  | `bramble/v1/operator/#`; `bramble run`'s framework topics (`bramble/v1/framework/{register,call,will}/+`) | `bramble/v1/status/#`, `bramble/v1/master/hello`, `bramble/v1/framework/event/+`, `bramble/v1/operator/reply/+` (the answers to status queries, sealed for the operator who asked) |
pub fn acl(store: &Store) -> String {
    let mut out = String::from(
        "# Bramble ACL, written by `bramble broker-config mosquitto` from the credential store.\n\
         # Each principal reaches only its own topics (see PROTOCOL.md, \"Credentials\").\n",
    );
    for e in store.entries() {
        out.push('\n');
        out.push_str(&acl_block(&e.principal));
    }
    out
}

fn acl_block(principal: &Principal) -> String {
    let user = principal.username();
    let name = principal.name();
    let mut lines = vec![format!("user {}", user.as_str())];
    let mut topic = |access: &str, topic: String| lines.push(format!("topic {access} {topic}"));
    match principal.kind() {
        PrincipalKind::Master => topic("readwrite", "#".into()),
        PrincipalKind::Agent => {
            for t in ["register", "report", "status", "pong", "will"] {
                topic("write", format!("bramble/v1/agent/{name}/{t}"));
            }
            topic("read", format!("bramble/v1/agent/{name}/cmd"));
            topic("read", "bramble/v1/master/hello".into());
        }
        PrincipalKind::Framework => {
            for t in ["register", "call", "will"] {
                topic("write", format!("bramble/v1/framework/{t}/{name}"));
            }
            topic("read", format!("bramble/v1/framework/event/{name}"));
            topic("readwrite", format!("bramble/v1/framework/message/{name}"));
            topic("readwrite", format!("bramble/v1/framework/exec/{name}/#"));
            topic("read", "bramble/v1/master/hello".into());
        }
        PrincipalKind::Operator => {
            topic("read", "bramble/v1/status/#".into());
            topic("read", "bramble/v1/master/hello".into());
            topic("write", "bramble/v1/operator/#".into());
            topic("read", "bramble/v1/operator/reply/+".into());
            // `bramble run` is a framework of its own, named bramble-run-PID.
            for t in ["register", "call", "will"] {
                topic("write", format!("bramble/v1/framework/{t}/+"));
            }
            topic("read", "bramble/v1/framework/event/+".into());
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// The `mosquitto.conf` lines that use the two files.
pub fn conf_snippet(passwd: &Path, acl: &Path) -> String {
    format!(
        "# Bramble: credentials and ACLs (include this file, or copy these lines into the\n\
         # broker's configuration, beside your `listener` lines).\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n\
         # Bramble's clients take packets of up to 1 MiB.\n\
         max_packet_size {}\n",
        passwd.display(),
        acl.display(),
        bramble_mqtt::MAX_PACKET
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_matches_what_mosquitto_passwd_wrote() {
        // `mosquitto_passwd -c -b pw alice secret` (Mosquitto 2.0.11) wrote this line.
        let salt = [97, 196, 117, 224, 170, 246, 108, 193, 22, 109, 11, 35];
        assert_eq!(
            hash_password("secret", &salt),
            "$7$101$YcR14Kr2bMEWbQsj$FctV3Sx9Q3eWfUveIUnVrtZSw0ZOUkuBWxt5Q/MeEpZlZiURjlw8BDfxVT1uyDbiAt7M0yvzm+e/lLvPCJF+kA=="
        );
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn the_files_list_every_principal_without_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(&dir.path().join("state")).unwrap();
        store
            .issue(Principal::new(PrincipalKind::Agent, "pi").unwrap(), false)
            .unwrap();
        let out = dir.path().join("out");
        let written = write(&store, &out).unwrap();
        let passwd = std::fs::read_to_string(&written.passwd).unwrap();
        let acl = std::fs::read_to_string(&written.acl).unwrap();
        for e in store.entries() {
            let user = e.principal.username();
            assert!(
                passwd.contains(&format!("{}:$7$101$", user.as_str())),
                "{passwd}"
            );
            assert!(acl.contains(&format!("user {}\n", user.as_str())), "{acl}");
            assert!(!passwd.contains(e.secret.broker_password().as_str()));
            assert!(!passwd.contains(e.secret.to_hex().as_str()));
        }
        assert!(acl.contains("user agent-pi\ntopic write bramble/v1/agent/pi/register\n"));
        assert!(acl.contains("topic read bramble/v1/agent/pi/cmd\n"));
        let conf = std::fs::read_to_string(&written.conf).unwrap();
        assert!(conf.contains("allow_anonymous false\n"));
        assert!(conf.contains(&format!("password_file {}\n", written.passwd.display())));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written.passwd)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
