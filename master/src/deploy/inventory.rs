//! The inventory of `bramble deploy`: a TOML file listing the boards, and the mapping from a
//! board's architecture to the agent build (Rust target) it gets.
//!
//! ```toml
//! [[board]]
//! host = "10.0.0.2"                 # address or name ssh connects to (required)
//! user = "pi"                       # default: ssh's own (your ~/.ssh/config or login name)
//! port = 22                         # default: ssh's own
//! arch = "aarch64"                  # aarch64 | armv7 | aarch64-musl | x86_64 | auto (default)
//! id = "pi4-kitchen"                # the agent id (default: the board's hostname)
//! identity = "~/.ssh/id_ed25519"    # ssh -i (default: ssh's own keys and agent)
//! attributes = { sensor = "bme280" }
//! ```
//!
//! A bad inventory is refused with an error naming the field, e.g. `board[2].arch`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An inventory that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a field of the wrong type or an unknown field.
    #[error("inventory {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("inventory {path}: field `{field}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `board[1].arch`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// The most boards one inventory may list.
pub const MAX_BOARDS: usize = 1024;

/// A board's architecture, as the inventory names it (or as `uname -m` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 64-bit ARM, glibc (`aarch64-unknown-linux-gnu`).
    Aarch64,
    /// 32-bit ARMv7 hard-float, glibc (`armv7-unknown-linux-gnueabihf`).
    Armv7,
    /// 64-bit ARM, static musl (`aarch64-unknown-linux-musl`): any libc.
    Aarch64Musl,
    /// x86_64, glibc (`x86_64-unknown-linux-gnu`): PCs, and the deploy test's namespaces.
    X86_64,
}

/// The board's `uname -m` names no architecture an agent is built for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnameError {
    /// ARMv6 (Pi Zero W, Pi 1): no build is made for it.
    #[error(
        "`uname -m` is armv6l (Pi Zero W / Pi 1): ARMv6 is not supported (see cross/README.md)"
    )]
    Armv6,
    /// Anything else.
    #[error("`uname -m` is `{0}`: no agent build for it (aarch64, armv7l/armv8l, x86_64)")]
    Unknown(String),
}

impl Arch {
    /// The inventory names, in the order of the docs.
    pub const NAMES: &'static str = "aarch64, armv7, aarch64-musl, x86_64 or auto";

    /// Parses an inventory name (`None` is `auto`).
    pub fn from_inventory(name: &str) -> Result<Option<Arch>, String> {
        Ok(Some(match name {
            "auto" => return Ok(None),
            "aarch64" => Arch::Aarch64,
            "armv7" => Arch::Armv7,
            "aarch64-musl" => Arch::Aarch64Musl,
            "x86_64" => Arch::X86_64,
            other => return Err(format!("`{other}` is not one of {}", Arch::NAMES)),
        }))
    }

    /// The architecture of a board from its `uname -m`. 64-bit ARM gets the glibc build: name
    /// `aarch64-musl` in the inventory for a board without a recent glibc.
    pub fn from_uname(machine: &str) -> Result<Arch, UnameError> {
        match machine.trim() {
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "armv7l" | "armv8l" => Ok(Arch::Armv7),
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "armv6l" => Err(UnameError::Armv6),
            other => Err(UnameError::Unknown(other.to_owned())),
        }
    }

    /// The Rust target the board's agent is built for (`cross/build.sh TARGET`).
    pub const fn target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
            Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
            Arch::Aarch64Musl => "aarch64-unknown-linux-musl",
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
        }
    }

    /// The inventory name.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::Aarch64Musl => "aarch64-musl",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The tarball `cross/build.sh` makes for this architecture, in `dist`.
    pub fn tarball(self, dist: &Path, version: &str) -> PathBuf {
        dist.join(format!("bramble-agent-{version}-{}.tar.gz", self.target()))
    }
}

/// One board of the inventory, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// Where ssh connects.
    pub host: String,
    /// The ssh user (`None`: ssh's default).
    pub user: Option<String>,
    /// The ssh port (`None`: ssh's default).
    pub port: Option<u16>,
    /// The architecture (`None`: `auto`, asked with `uname -m`).
    pub arch: Option<Arch>,
    /// The agent id (`None`: the board's hostname).
    pub id: Option<String>,
    /// The ssh identity file, `~/` expanded.
    pub identity: Option<PathBuf>,
    /// The agent's attributes.
    pub attributes: BTreeMap<String, String>,
}

impl Board {
    /// `user@host`, or `host`, for messages.
    pub fn label(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    board: Vec<BoardFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    host: String,
    user: Option<String>,
    port: Option<u16>,
    arch: Option<String>,
    id: Option<String>,
    identity: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// Reads and validates the inventory at `path`. `home` expands `~/` in `identity`.
pub fn load(path: &Path, home: Option<&Path>) -> Result<Vec<Board>, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, home)
}

/// Is `s` safe as an ssh host or user: non-empty, no whitespace or control characters, not an
/// option (`-…`), and none of the characters ssh or scp treat specially (`@`, `/`).
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"@/\\'\"`$;&|<>(){}*?!#~".contains(&b))
}

/// Parses and validates inventory text (`path` is only for messages).
pub fn parse(text: &str, path: &Path, home: Option<&Path>) -> Result<Vec<Board>, InventoryError> {
    let file: File = toml::from_str(text).map_err(|e| InventoryError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    let invalid = |field: String, problem: String| InventoryError::Invalid {
        path: path.to_owned(),
        field,
        problem,
    };
    if file.board.is_empty() {
        return Err(invalid(
            "board".into(),
            "no [[board]] listed (each needs at least `host`)".into(),
        ));
    }
    if file.board.len() > MAX_BOARDS {
        return Err(invalid(
            "board".into(),
            format!("at most {MAX_BOARDS} boards per inventory"),
        ));
    }
    let mut boards = Vec::with_capacity(file.board.len());
    let mut ids = BTreeSet::new();
    for (i, b) in file.board.into_iter().enumerate() {
        let field = |name: &str| format!("board[{i}].{name}");
        if !is_plain(&b.host) {
            return Err(invalid(
                field("host"),
                format!("`{}` is not a host name or address", b.host),
            ));
        }
        if let Some(user) = &b.user {
            if !is_plain(user) || user.len() > 32 {
                return Err(invalid(
                    field("user"),
                    format!("`{user}` is not a user name"),
                ));
            }
        }
        if b.port == Some(0) {
            return Err(invalid(field("port"), "must be 1-65535".into()));
        }
        let arch = match b.arch.as_deref() {
            None => None,
            Some(name) => Arch::from_inventory(name).map_err(|p| invalid(field("arch"), p))?,
        };
        if let Some(id) = &b.id {
            agent_nostd_core::ids::validate_id(id)
                .map_err(|e| invalid(field("id"), format!("`{id}`: {e}")))?;
            if !ids.insert(id.clone()) {
                return Err(invalid(
                    field("id"),
                    format!("`{id}` is already the id of another board"),
                ));
            }
        }
        let identity = b.identity.map(|p| match (p.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(p),
        });
        let limit = agent_nostd_core::wire::MAX_ATTRIBUTES - 1; // one is `isolation`
        if b.attributes.len() > limit {
            return Err(invalid(
                field("attributes"),
                format!("at most {limit} attributes (the agent adds `isolation`)"),
            ));
        }
        for (k, v) in &b.attributes {
            let f = field(&format!("attributes.{k}"));
            if k.is_empty()
                || k.len() > 16
                || !k
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Err(invalid(
                    f,
                    "keys are 1-16 letters, digits, `_` or `-`".into(),
                ));
            }
            if k == "isolation" {
                return Err(invalid(f, "is set by the agent itself".into()));
            }
            if v.len() > 32
                || !v.bytes().all(|c| (b' '..=b'~').contains(&c))
                || v.contains(['"', '\\'])
            {
                return Err(invalid(
                    f,
                    "values are at most 32 printable ASCII characters, without `\"` or `\\`".into(),
                ));
            }
        }
        boards.push(Board {
            host: b.host,
            user: b.user,
            port: b.port,
            arch,
            id: b.id,
            identity,
            attributes: b.attributes,
        });
    }
    Ok(boards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Board>, InventoryError> {
        parse(text, Path::new("boards.toml"), Some(Path::new("/home/me")))
    }

    fn field_of(text: &str) -> String {
        match parse_str(text) {
            Err(InventoryError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_full_inventory_is_read_with_defaults_for_what_is_left_out() {
        let boards = parse_str(
            r#"
            [[board]]
            host = "10.0.0.2"
            user = "pi"
            port = 2222
            arch = "aarch64"
            id = "pi4-kitchen"
            identity = "~/.ssh/id_ed25519"
            attributes = { sensor = "bme280", room = "kitchen" }

            [[board]]
            host = "pi-zero2.local"
            "#,
        )
        .unwrap();
        assert_eq!(boards.len(), 2);
        let b = &boards[0];
        assert_eq!(b.label(), "pi@10.0.0.2");
        assert_eq!(b.port, Some(2222));
        assert_eq!(b.arch, Some(Arch::Aarch64));
        assert_eq!(b.id.as_deref(), Some("pi4-kitchen"));
        assert_eq!(
            b.identity.as_deref(),
            Some(Path::new("/home/me/.ssh/id_ed25519"))
        );
        assert_eq!(b.attributes["sensor"], "bme280");
        let d = &boards[1];
        assert_eq!(
            (d.user.as_deref(), d.port, d.arch, d.id.as_deref()),
            (None, None, None, None)
        );
        assert_eq!(d.label(), "pi-zero2.local");
    }

    #[test]
    fn a_bad_inventory_names_the_field() {
        let one = |extra: &str| format!("[[board]]\nhost = \"10.0.0.2\"\n{extra}\n");
        assert_eq!(field_of(&one("arch = \"armv6\"")), "board[0].arch");
        assert_eq!(field_of(&one("id = \"has space\"")), "board[0].id");
        assert_eq!(field_of(&one("port = 0")), "board[0].port");
        assert_eq!(
            field_of(&one("user = \"-oProxyCommand=x\"")),
            "board[0].user"
        );
        assert_eq!(
            field_of(&one("attributes = { isolation = \"x\" }")),
            "board[0].attributes.isolation"
        );
        assert_eq!(
            field_of(&one("attributes = { \"a b\" = \"x\" }")),
            "board[0].attributes.a b"
        );
        assert_eq!(
            field_of(&one("attributes = { k = \"say \\\"hi\\\"\" }")),
            "board[0].attributes.k"
        );
        assert_eq!(
            field_of("[[board]]\nhost = \"-oProxyCommand=touch /tmp/x\"\n"),
            "board[0].host"
        );
        assert_eq!(
            field_of("[[board]]\nhost = \"a\"\nid = \"x\"\n[[board]]\nhost = \"b\"\nid = \"x\"\n"),
            "board[1].id"
        );
        assert_eq!(field_of(""), "board");
        // Unknown fields and wrong types are the parser's, which names the key and the line.
        for text in [
            one("colour = \"red\""),
            one("port = \"22\""),
            "[[board]]\n".into(),
        ] {
            match parse_str(&text) {
                Err(InventoryError::Parse { message, .. }) => {
                    assert!(
                        message.contains("colour")
                            || message.contains("port")
                            || message.contains("host"),
                        "{message}"
                    )
                }
                other => panic!("expected a parse error for {text:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_inventory_arch_names_map_to_the_targets_cross_build_makes() {
        let cases = [
            ("aarch64", "aarch64-unknown-linux-gnu"),
            ("armv7", "armv7-unknown-linux-gnueabihf"),
            ("aarch64-musl", "aarch64-unknown-linux-musl"),
            ("x86_64", "x86_64-unknown-linux-gnu"),
        ];
        for (name, target) in cases {
            let arch = Arch::from_inventory(name).unwrap().unwrap();
            assert_eq!(arch.target(), target);
            assert_eq!(arch.name(), name);
        }
        assert_eq!(Arch::from_inventory("auto"), Ok(None));
        assert!(Arch::from_inventory("arm").is_err());
        assert_eq!(
            Arch::X86_64.tarball(Path::new("target/dist"), "0.1.0"),
            Path::new("target/dist/bramble-agent-0.1.0-x86_64-unknown-linux-gnu.tar.gz")
        );
    }

    #[test]
    fn uname_machines_map_to_an_arch_and_armv6_is_refused_with_the_reason() {
        assert_eq!(Arch::from_uname("aarch64\n"), Ok(Arch::Aarch64));
        assert_eq!(Arch::from_uname("arm64"), Ok(Arch::Aarch64));
        assert_eq!(Arch::from_uname("armv7l"), Ok(Arch::Armv7));
        assert_eq!(Arch::from_uname("armv8l"), Ok(Arch::Armv7));
        assert_eq!(Arch::from_uname("x86_64"), Ok(Arch::X86_64));
        assert_eq!(Arch::from_uname("armv6l"), Err(UnameError::Armv6));
        assert!(Arch::from_uname("armv6l")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert_eq!(
            Arch::from_uname("riscv64"),
            Err(UnameError::Unknown("riscv64".into()))
        );
    }

    #[test]
    fn the_example_inventory_in_cross_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/inventory.example.toml");
        let boards = load(&path, Some(Path::new("/home/me"))).unwrap();
        assert!(boards.len() >= 2);
    }
}
