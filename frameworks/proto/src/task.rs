//! A task a framework asks to launch: [`TaskInfo`], its artifacts, and the one check of a task
//! against the limits of the agent wire ([`TaskInfo::validate`]), which the SDK runs before it
//! sends an accept and the master runs before it builds the agent's [`RunTask`]
//! ([`TaskInfo::to_run_task`]).

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use agent_nostd_core::ids::{self, validate_id};
use agent_nostd_core::wire::{
    Artifact, EnvVar, RunTask, MAX_ARGS, MAX_ARG_LEN, MAX_ARTIFACTS, MAX_ARTIFACT_NAME_LEN,
    MAX_ARTIFACT_URL_LEN, MAX_ENV,
};
use agent_nostd_core::Resources;
use serde::{Deserialize, Serialize};

/// The longest environment variable name a task may set, in bytes (the agent wire's [`EnvVar`]).
pub const MAX_ENV_KEY_LEN: usize = 32;
/// The longest environment variable value a task may set, in bytes.
pub const MAX_ENV_VALUE_LEN: usize = 128;

/// A task to launch on an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's id, unique within the framework.
    pub task_id: String,
    /// The command; `argv[0]` is the program. 1 to 16 elements of at most 128 bytes.
    pub argv: Vec<String>,
    /// Extra environment variables: at most 16, names of at most 32 bytes, values of at most 128.
    pub env: Vec<(String, String)>,
    /// The task's limits; it must ask for some CPU and memory.
    pub resources: Resources,
    /// Files the agent fetches into the task's sandbox before launch: at most 4.
    pub artifacts: Vec<ArtifactInfo>,
}

/// A file a task needs in its sandbox, fetched by the agent over plain `http://` and checked against
/// its SHA-256 (like the Mesos fetcher's URIs).
///
/// The master picks the variant whose `arch` is the agent's (as Rust names it: `aarch64`, `arm`,
/// `x86_64`, …) and falls back to `url`/`sha256`; an artifact with no URL for the agent's arch
/// makes the whole accept refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// The file's name in the sandbox: one path component (no `/`, not `.` or `..`), 1–64 bytes.
    pub name: String,
    /// Where to fetch it when no variant matches (may be empty when variants cover every board);
    /// `http://` only, at most 160 bytes.
    pub url: String,
    /// The SHA-256 of the file at `url`.
    pub sha256: [u8; 32],
    /// Whether the file is made executable (mode 0755) in the sandbox.
    pub executable: bool,
    /// Per-architecture URLs, tried before `url`.
    pub variants: Vec<ArtifactVariant>,
}

/// An artifact's URL and hash for one CPU architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactVariant {
    /// The architecture, as agents report it (`aarch64`, `arm`, `x86_64`, …).
    pub arch: String,
    /// Where to fetch it.
    pub url: String,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

impl ArtifactInfo {
    /// A plain (non-executable) artifact fetched from `url` into the sandbox as `name`.
    pub fn new(name: &str, url: &str, sha256: [u8; 32]) -> Self {
        ArtifactInfo {
            name: name.to_owned(),
            url: url.to_owned(),
            sha256,
            executable: false,
            variants: Vec::new(),
        }
    }

    /// The same artifact, made executable in the sandbox.
    pub fn executable(mut self) -> Self {
        self.executable = true;
        self
    }

    /// The same artifact with a URL and hash for boards of architecture `arch`.
    pub fn variant(mut self, arch: &str, url: &str, sha256: [u8; 32]) -> Self {
        self.variants.push(ArtifactVariant {
            arch: arch.to_owned(),
            url: url.to_owned(),
            sha256,
        });
        self
    }

    /// The URL and hash for an agent of architecture `arch`, if there is one.
    pub fn resolve(&self, arch: &str) -> Option<(&str, &[u8; 32])> {
        match self.variants.iter().find(|v| v.arch == arch) {
            Some(v) => Some((&v.url, &v.sha256)),
            None if !self.url.is_empty() => Some((&self.url, &self.sha256)),
            None => None,
        }
    }
}

/// Parses a SHA-256 written as 64 hex digits (as `sha256sum` prints it).
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("a sha256 is 64 hex digits, not {hex:?}"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("a sha256 is 64 hex digits, not {hex:?}"))?;
    }
    Ok(out)
}

/// A SHA-256 as 64 lowercase hex digits.
pub fn sha256_hex(sha256: &[u8; 32]) -> String {
    sha256.iter().map(|b| format!("{b:02x}")).collect()
}

impl TaskInfo {
    /// A task running `argv` with `resources` and no extra environment.
    pub fn new(task_id: &str, argv: &[&str], resources: Resources) -> Self {
        TaskInfo {
            task_id: task_id.to_owned(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            resources,
            artifacts: Vec::new(),
        }
    }

    /// The same task with one more artifact to fetch.
    pub fn with_artifact(mut self, artifact: ArtifactInfo) -> Self {
        self.artifacts.push(artifact);
        self
    }

    /// Checks the task against the agent wire's limits, so an accept the SDK sends is one the
    /// master takes and a RunTask the master builds is one an agent decodes: a valid task id, some
    /// CPU and memory, 1 to [`MAX_ARGS`] arguments of at most [`MAX_ARG_LEN`] bytes, at most
    /// [`MAX_ENV`] variables with a name of 1 to [`MAX_ENV_KEY_LEN`] bytes (no `=`) and a value of
    /// at most [`MAX_ENV_VALUE_LEN`], and at most [`MAX_ARTIFACTS`] artifacts with distinct file
    /// names. What depends on the agent (the artifact URL for its arch) is checked by
    /// [`to_run_task`](Self::to_run_task).
    pub fn validate(&self) -> Result<(), TaskError> {
        let tid = || self.task_id.clone();
        if validate_id(&self.task_id).is_err() {
            return Err(TaskError::BadId(tid()));
        }
        if self.resources.cpu_millis == 0 || self.resources.mem_mib == 0 {
            return Err(TaskError::NoResources(tid()));
        }
        if self.argv.is_empty() {
            return Err(TaskError::EmptyArgv(tid()));
        }
        if self.argv.len() > MAX_ARGS {
            return Err(TaskError::TooManyArgs(tid()));
        }
        if self.argv.iter().any(|a| a.len() > MAX_ARG_LEN) {
            return Err(TaskError::ArgTooLong(tid()));
        }
        if self.env.len() > MAX_ENV {
            return Err(TaskError::TooManyVars(tid()));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') {
                return Err(TaskError::BadVarName(tid(), key.clone()));
            }
            if key.len() > MAX_ENV_KEY_LEN {
                return Err(TaskError::VarNameTooLong(tid(), key.clone()));
            }
            if value.len() > MAX_ENV_VALUE_LEN {
                return Err(TaskError::VarValueTooLong(tid(), key.clone()));
            }
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err(TaskError::TooManyArtifacts(tid()));
        }
        for (i, a) in self.artifacts.iter().enumerate() {
            let name = a.name.as_str();
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(TaskError::BadArtifactName(tid(), name.to_owned()));
            }
            if name.len() > MAX_ARTIFACT_NAME_LEN {
                return Err(TaskError::ArtifactNameTooLong(tid(), name.to_owned()));
            }
            if self.artifacts[..i].iter().any(|b| b.name == a.name) {
                return Err(TaskError::DuplicateArtifact(tid(), name.to_owned()));
            }
            for url in core::iter::once(&a.url)
                .filter(|u| !u.is_empty())
                .chain(a.variants.iter().map(|v| &v.url))
            {
                check_url(&self.task_id, name, url)?;
            }
        }
        Ok(())
    }

    /// The agent-wire [`RunTask`] of this task, of framework `framework_id`, for an agent of
    /// architecture `arch`: [`validate`](Self::validate), then each artifact resolved to the URL
    /// for `arch`.
    #[inline]
    pub fn to_run_task(&self, framework_id: &str, arch: &str) -> Result<RunTask, TaskError> {
        self.validate()?;
        let tid = &self.task_id;
        let framework_id = ids::id(framework_id)
            .map_err(|_| TaskError::BadFrameworkId(framework_id.to_owned()))?;
        // Every conversion below fits: validate() checked each length against the same limits.
        let overflow = || TaskError::Overflow(tid.clone());
        let task_id = ids::id(tid).map_err(|_| TaskError::BadId(tid.clone()))?;
        let mut argv = heapless::Vec::new();
        for a in &self.argv {
            let arg = heapless::String::try_from(a.as_str()).map_err(|_| overflow())?;
            argv.push(arg).map_err(|_| overflow())?;
        }
        let mut env = heapless::Vec::new();
        for (k, v) in &self.env {
            let var = EnvVar {
                key: heapless::String::try_from(k.as_str()).map_err(|_| overflow())?,
                value: heapless::String::try_from(v.as_str()).map_err(|_| overflow())?,
            };
            env.push(var).map_err(|_| overflow())?;
        }
        let mut artifacts = heapless::Vec::new();
        for a in &self.artifacts {
            let (url, sha256) = a.resolve(arch).ok_or_else(|| {
                TaskError::NoUrlForArch(tid.clone(), a.name.clone(), arch.to_owned())
            })?;
            let artifact = Artifact {
                url: heapless::String::try_from(url).map_err(|_| overflow())?,
                sha256: *sha256,
                executable: a.executable,
                name: heapless::String::try_from(a.name.as_str()).map_err(|_| overflow())?,
            };
            artifacts.push(artifact).map_err(|_| overflow())?;
        }
        Ok(RunTask {
            framework_id,
            task_id,
            argv,
            env,
            resources: self.resources,
            pids_max: 0,
            artifacts,
        })
    }
}

fn check_url(tid: &str, name: &str, url: &str) -> Result<(), TaskError> {
    if !url.starts_with("http://") {
        return Err(TaskError::NotHttp(
            tid.to_owned(),
            name.to_owned(),
            url.to_owned(),
        ));
    }
    if url.len() > MAX_ARTIFACT_URL_LEN {
        return Err(TaskError::UrlTooLong(tid.to_owned(), name.to_owned()));
    }
    Ok(())
}

/// Why a task cannot be launched: each names the task (and the variable or artifact) concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task id is not a valid id.
    #[error("task id {0:?} is not a valid id")]
    BadId(String),
    /// The framework id is not a valid id.
    #[error("framework id {0} is not valid")]
    BadFrameworkId(String),
    /// The task asks for no CPU or no memory.
    #[error("task {0} must ask for some cpu and memory")]
    NoResources(String),
    /// The task has no program.
    #[error("task {0} has an empty argv")]
    EmptyArgv(String),
    /// Over [`MAX_ARGS`] arguments.
    #[error("task {0} has more than {MAX_ARGS} arguments")]
    TooManyArgs(String),
    /// An argument over [`MAX_ARG_LEN`] bytes.
    #[error("task {0} has an argument longer than {MAX_ARG_LEN} bytes")]
    ArgTooLong(String),
    /// Over [`MAX_ENV`] variables.
    #[error("task {0} sets more than {MAX_ENV} variables")]
    TooManyVars(String),
    /// A variable name that is empty or holds `=`.
    #[error("task {0} has a bad variable name {1:?}")]
    BadVarName(String, String),
    /// A variable name over [`MAX_ENV_KEY_LEN`] bytes.
    #[error("task {0}: variable name {1:?} is over {MAX_ENV_KEY_LEN} bytes")]
    VarNameTooLong(String, String),
    /// A variable value over [`MAX_ENV_VALUE_LEN`] bytes.
    #[error("task {0}: the value of {1} is over {MAX_ENV_VALUE_LEN} bytes")]
    VarValueTooLong(String, String),
    /// Over [`MAX_ARTIFACTS`] artifacts.
    #[error("task {0} has more than {MAX_ARTIFACTS} artifacts")]
    TooManyArtifacts(String),
    /// An artifact name that is not one file name.
    #[error("task {0}: artifact name {1:?} must be one file name")]
    BadArtifactName(String, String),
    /// An artifact name over [`MAX_ARTIFACT_NAME_LEN`] bytes.
    #[error("task {0}: artifact name {1:?} is over {MAX_ARTIFACT_NAME_LEN} bytes")]
    ArtifactNameTooLong(String, String),
    /// Two artifacts with the same file name.
    #[error("task {0} has two artifacts named {1}")]
    DuplicateArtifact(String, String),
    /// An artifact URL that is not `http://`.
    #[error("task {0}: artifact {1}: only http:// URLs are supported, not {2:?}")]
    NotHttp(String, String, String),
    /// An artifact URL over [`MAX_ARTIFACT_URL_LEN`] bytes.
    #[error("task {0}: artifact {1}: URL over {MAX_ARTIFACT_URL_LEN} bytes")]
    UrlTooLong(String, String),
    /// No URL of an artifact fits the agent's architecture.
    #[error("task {0}: artifact {1} has no URL for arch {2:?}")]
    NoUrlForArch(String, String, String),
    /// A checked field did not fit the agent wire after all (a bug: validate and the wire disagree).
    #[error("task {0} does not fit the agent wire")]
    Overflow(String),
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn an_artifact_resolves_to_the_agents_arch_variant_then_to_its_default_url() {
        let a =
            ArtifactInfo::new("x", "http://m/x", [1; 32]).variant("arm", "http://m/x-arm", [2; 32]);
        assert_eq!(a.resolve("arm"), Some(("http://m/x-arm", &[2; 32])));
        assert_eq!(a.resolve("aarch64"), Some(("http://m/x", &[1; 32])));
        let only_arm =
            ArtifactInfo::new("x", "", [0; 32]).variant("arm", "http://m/x-arm", [2; 32]);
        assert_eq!(only_arm.resolve("x86_64"), None);
    }

    #[test]
    fn a_sha256_parses_from_the_hex_sha256sum_prints_and_back() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha = parse_sha256(hex).unwrap();
        assert_eq!(sha[0], 0xE3);
        assert_eq!(sha256_hex(&sha), hex);
        assert!(parse_sha256("e3b0").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    fn task() -> TaskInfo {
        TaskInfo::new("t1", &["/bin/true"], Resources::new(100, 16, 0))
    }

    #[test]
    fn a_task_within_the_wire_limits_validates_and_builds_its_run_task() {
        let mut t = task().with_artifact(
            ArtifactInfo::new("x", "http://m/x", [1; 32])
                .variant("arm", "http://m/x-arm", [2; 32])
                .executable(),
        );
        t.env.push(("K".into(), "v".into()));
        assert_eq!(t.validate(), Ok(()));
        let run = t.to_run_task("fw-1", "arm").unwrap();
        assert_eq!(run.framework_id.as_str(), "fw-1");
        assert_eq!(run.task_id.as_str(), "t1");
        assert_eq!(run.argv[0].as_str(), "/bin/true");
        assert_eq!(run.env[0].key.as_str(), "K");
        assert_eq!(run.artifacts[0].url.as_str(), "http://m/x-arm");
        assert_eq!(run.artifacts[0].sha256, [2; 32]);
        assert!(run.artifacts[0].executable);
    }

    #[test]
    fn each_limit_of_the_wire_refuses_the_task_with_its_own_reason() {
        let long = "a".repeat(MAX_ARG_LEN + 1);
        type Is = fn(&TaskError) -> bool;
        let cases: Vec<(TaskInfo, Is)> = vec![
            (TaskInfo::new("a/b", &["x"], task().resources), |e| {
                matches!(e, TaskError::BadId(_))
            }),
            (TaskInfo::new("t", &["x"], Resources::new(0, 1, 0)), |e| {
                matches!(e, TaskError::NoResources(_))
            }),
            (TaskInfo::new("t", &[], task().resources), |e| {
                matches!(e, TaskError::EmptyArgv(_))
            }),
            (
                TaskInfo::new("t", &["x"; MAX_ARGS + 1], task().resources),
                |e| matches!(e, TaskError::TooManyArgs(_)),
            ),
            (TaskInfo::new("t", &[&long], task().resources), |e| {
                matches!(e, TaskError::ArgTooLong(_))
            }),
        ];
        for (t, is) in cases {
            let err = t.validate().unwrap_err();
            assert!(is(&err), "{err}");
        }
        let mut vars = task();
        vars.env = (0..=MAX_ENV)
            .map(|i| (format!("K{i}"), String::new()))
            .collect();
        assert!(matches!(vars.validate(), Err(TaskError::TooManyVars(_))));
        vars.env = vec![("A=B".into(), String::new())];
        assert!(matches!(vars.validate(), Err(TaskError::BadVarName(..))));
        vars.env = vec![("K".repeat(MAX_ENV_KEY_LEN + 1), String::new())];
        assert!(matches!(
            vars.validate(),
            Err(TaskError::VarNameTooLong(..))
        ));
        vars.env = vec![("K".into(), "v".repeat(MAX_ENV_VALUE_LEN + 1))];
        assert!(matches!(
            vars.validate(),
            Err(TaskError::VarValueTooLong(..))
        ));
        let with = |a: ArtifactInfo| task().with_artifact(a);
        let ok = ArtifactInfo::new("x", "http://m/x", [0; 32]);
        assert!(matches!(
            with(ArtifactInfo::new("..", "http://m/x", [0; 32])).validate(),
            Err(TaskError::BadArtifactName(..))
        ));
        assert!(matches!(
            with(ArtifactInfo::new("x", "https://m/x", [0; 32])).validate(),
            Err(TaskError::NotHttp(..))
        ));
        let long_url = format!("http://m/{}", "x".repeat(MAX_ARTIFACT_URL_LEN));
        assert!(matches!(
            with(ArtifactInfo::new("x", &long_url, [0; 32])).validate(),
            Err(TaskError::UrlTooLong(..))
        ));
        assert!(matches!(
            with(ok.clone()).with_artifact(ok.clone()).validate(),
            Err(TaskError::DuplicateArtifact(..))
        ));
        let mut many = task();
        many.artifacts = (0..=MAX_ARTIFACTS)
            .map(|i| ArtifactInfo::new(&format!("a{i}"), "http://m/x", [0; 32]))
            .collect();
        assert!(matches!(
            many.validate(),
            Err(TaskError::TooManyArtifacts(_))
        ));
    }

    #[test]
    fn an_artifact_without_a_url_for_the_agents_arch_refuses_the_run_task() {
        let t = task().with_artifact(ArtifactInfo::new("x", "", [0; 32]).variant(
            "arm",
            "http://m/x-arm",
            [2; 32],
        ));
        assert_eq!(t.validate(), Ok(()));
        assert!(matches!(
            t.to_run_task("fw", "x86_64"),
            Err(TaskError::NoUrlForArch(..))
        ));
    }
}
