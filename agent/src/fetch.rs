//! The artifact fetcher (Mesos's fetcher, for Bramble): before a task starts, every file its
//! `RunTask` names is downloaded over plain `http://`, checked against its SHA-256, cached, and put in
//! the task's sandbox.
//!
//! - **Cache.** `<work_dir>/cache/<sha256 hex>`, one read-only file per content. A cached artifact is
//!   never downloaded again; each use touches its mtime, and when the cache is over its size
//!   (`[fetcher] cache_max_mib`, default 256) the least recently used files are evicted.
//! - **Streaming.** The body goes to a temporary file in the cache directory (`.tmp-…`) while it is
//!   hashed, in the chunks the socket delivers: a file is never held in memory. Only when the hash
//!   matches is the file renamed to its final name, so the cache holds only verified content, and a
//!   crash leaves at most a temporary file (removed on the next fetch).
//! - **Only the agent's.** The cache directory has mode 0700: a task (running as another user)
//!   cannot list or read what other tasks fetched; it reaches its own artifacts in its sandbox.
//! - **Sandbox.** An executable artifact is hard-linked into the sandbox (mode 0555, shared with the
//!   cache, so the task cannot change the cached copy unless it runs as root), or copied when the
//!   sandbox is on another file system. A plain artifact is copied (mode 0644, owned by the task's
//!   user), so the task may change its own copy.
//! - **HTTP.** A hyper 1.x HTTP/1.1 client on a tokio `TcpStream`, one connection per download,
//!   with a timeout (`[fetcher] timeout_secs`). `https://` is refused: artifacts come from the
//!   master on the LAN, and the SHA-256 guards their integrity (TLS would add ~300 KiB to the agent).
//! - **Signed.** With the board's credential ([`Fetcher::signing`]) every request carries an
//!   `Authorization: Bramble …` header (see [`bramble_mqtt::http_auth`]): an HMAC of the method,
//!   the path and the board's clock under the agent's HTTP key, never the secret. A master with a
//!   credential store serves artifacts only to signed requests within ±300 s of its clock, so the
//!   board's clock must be set (NTP). The header goes to whatever host the artifact's URL names;
//!   such a host could replay it to the master within the window for the same path, which gets it
//!   nothing the task's framework could not already have by naming the master's URL.
//!
//! Failures are [`ArtifactError`]s whose text is the task's FAILED message (cut at 64 bytes by the
//! wire), e.g. `artifact run.sh: sha256 mismatch: expected 9f86d08, got e3b0c44` (the first 7 hex
//! digits; the agent logs both hashes in full) or `artifact run.sh: cannot download http://…: …`.

pub use bramble_mqtt::to_hex;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use agent_nostd_core::wire::Artifact;
use bramble_mqtt::http_auth::Signer;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

/// What went wrong with one artifact; its text names the artifact.
#[derive(Debug, thiserror::Error)]
#[error("artifact {name}: {kind}")]
pub struct ArtifactError {
    /// The artifact's name in the sandbox.
    pub name: String,
    /// What went wrong.
    pub kind: FetchError,
}

/// Why an artifact could not be put in a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The artifact's name is not one plain file name.
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    /// The URL is not `http://host[:port]/path`.
    #[error("cannot download {url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it (e.g. https is not supported).
        reason: &'static str,
    },
    /// The download failed (connection, HTTP status, timeout, too large).
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The content's hash is not the one the task names. The text shows the first 7 hex digits of
    /// each (a status message holds 64 bytes); the agent logs both in full.
    #[error("sha256 mismatch: expected {}, got {}", &expected[..7], &got[..7])]
    Mismatch {
        /// The hash the task names, in hex (64 digits).
        expected: String,
        /// The hash of what was downloaded, in hex (64 digits).
        got: String,
    },
    /// The cache could not be written.
    #[error("cannot write the cache at {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file could not be put in the sandbox.
    #[error("cannot put it in the sandbox at {path}: {source}")]
    Sandbox {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Downloads artifacts into a cache and puts them in sandboxes.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
    max_bytes: u64,
    timeout: Duration,
    signer: Option<Signer>,
}

/// Temporary files get distinct names even within one process.
static TMP_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Fetcher {
    /// A fetcher caching in `cache_dir` (created on first use) up to `max_bytes`, giving each
    /// download at most `timeout`.
    pub fn new(cache_dir: impl Into<PathBuf>, max_bytes: u64, timeout: Duration) -> Self {
        Fetcher {
            cache_dir: cache_dir.into(),
            max_bytes,
            timeout,
            signer: None,
        }
    }

    /// Signs every request with `signer` (the board's credential), when given.
    pub fn signing(mut self, signer: Option<Signer>) -> Self {
        self.signer = signer;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The artifact's name in the sandbox: its own, or the last segment of its URL.
    pub fn sandbox_name(artifact: &Artifact) -> &str {
        if artifact.name.is_empty() {
            let path = artifact.url.split(['?', '#']).next().unwrap_or("");
            path.rsplit('/').next().unwrap_or("")
        } else {
            artifact.name.as_str()
        }
    }

    /// Fetches `artifact` (from the cache when it is there) and puts it in `sandbox`, owned by
    /// `run_as` when given.
    pub async fn fetch_into(
        &self,
        artifact: &Artifact,
        sandbox: &Path,
        run_as: Option<(u32, u32)>,
    ) -> Result<PathBuf, ArtifactError> {
        let name = Self::sandbox_name(artifact).to_owned();
        let err = |kind| ArtifactError {
            name: name.clone(),
            kind,
        };
        if !is_plain_file_name(&name) {
            return Err(err(FetchError::BadName(name.clone())));
        }
        let cached = self.fetch(artifact).await.map_err(err)?;
        let target = sandbox.join(&name);
        place(&cached, &target, artifact.executable, run_as)
            .await
            .map_err(|source| {
                err(FetchError::Sandbox {
                    path: target.clone(),
                    source,
                })
            })?;
        Ok(target)
    }

    /// Returns the cached file of `artifact`, downloading and verifying it first when it is not
    /// cached.
    pub async fn fetch(&self, artifact: &Artifact) -> Result<PathBuf, FetchError> {
        let hex = to_hex(&artifact.sha256);
        let cached = self.cache_dir.join(&hex);
        if let Ok(meta) = tokio::fs::symlink_metadata(&cached).await {
            if meta.is_file() {
                debug!(url = %artifact.url, sha256 = %hex, "artifact cached");
                touch(&cached).await;
                return Ok(cached);
            }
        }
        let url = parse_http_url(&artifact.url)?;
        let cache_err = |path: &Path| {
            let path = path.to_owned();
            move |source| FetchError::Cache { path, source }
        };
        tokio::fs::create_dir_all(&self.cache_dir)
            .await
            .map_err(cache_err(&self.cache_dir))?;
        // The agent's own: tasks (another user) reach their artifacts through their sandbox only.
        tokio::fs::set_permissions(&self.cache_dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(cache_err(&self.cache_dir))?;
        let tmp = self.cache_dir.join(format!(
            ".tmp-{hex}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.download_to(artifact, &url, &tmp).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &cached)
            .await
            .map_err(cache_err(&cached))?;
        info!(url = %artifact.url, sha256 = %hex, "artifact downloaded and cached");
        self.evict(&hex).await;
        Ok(cached)
    }

    async fn download_to(
        &self,
        artifact: &Artifact,
        url: &HttpUrl<'_>,
        tmp: &Path,
    ) -> Result<(), FetchError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o555)
            .open(tmp)
            .await
            .map_err(|source| FetchError::Cache {
                path: tmp.to_owned(),
                source,
            })?;
        let mut hasher = Sha256::new();
        let download = download(
            url,
            self.signer.as_ref(),
            &mut file,
            &mut hasher,
            self.max_bytes,
        );
        let outcome = match tokio::time::timeout(self.timeout, download).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Http(format!(
                "timed out after {} s",
                self.timeout.as_secs_f32()
            ))),
        };
        match outcome {
            Ok(()) => {}
            Err(Failure::Http(reason)) => {
                return Err(FetchError::Download {
                    url: artifact.url.to_string(),
                    reason,
                })
            }
            Err(Failure::Disk(source)) => {
                return Err(FetchError::Cache {
                    path: tmp.to_owned(),
                    source,
                })
            }
        }
        let disk = |source| FetchError::Cache {
            path: tmp.to_owned(),
            source,
        };
        file.flush().await.map_err(disk)?;
        file.sync_all().await.map_err(disk)?;
        drop(file);
        let got: [u8; 32] = hasher.finalize().into();
        if got != artifact.sha256 {
            warn!(
                url = %artifact.url,
                expected = %to_hex(&artifact.sha256),
                got = %to_hex(&got),
                "artifact sha256 mismatch"
            );
            return Err(FetchError::Mismatch {
                expected: to_hex(&artifact.sha256),
                got: to_hex(&got),
            });
        }
        Ok(())
    }

    /// Removes leftover temporary files and, while the cache is over its size, the least recently
    /// used artifact other than `keep`.
    async fn evict(&self, keep: &str) {
        let dir = self.cache_dir.clone();
        let max = self.max_bytes;
        let keep = keep.to_owned();
        let removed = tokio::task::spawn_blocking(move || evict_blocking(&dir, max, &keep)).await;
        match removed {
            Ok(Ok(n)) if n > 0 => info!(evicted = n, "artifact cache over its size"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("cannot evict from the artifact cache: {e}"),
            Err(e) => warn!("artifact cache eviction failed: {e}"),
        }
    }
}

fn evict_blocking(dir: &Path, max: u64, keep: &str) -> io::Result<usize> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        if name.starts_with(".tmp-") {
            // Another download may be writing it only within this process, and downloads run one
            // at a time: anything older than a minute is a leftover of a crash.
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        total += meta.len();
        if name != keep {
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            files.push((used, meta.len(), entry.path()));
        }
    }
    files.sort();
    let mut removed = 0;
    for (_, len, path) in files {
        if total <= max {
            break;
        }
        std::fs::remove_file(&path)?;
        debug!(path = %path.display(), "evicted from the artifact cache");
        total -= len;
        removed += 1;
    }
    Ok(removed)
}

/// Marks a cached file as just used (its mtime orders eviction).
async fn touch(path: &Path) {
    let path = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()))
    })
    .await;
}

/// Puts the cached file at `target`: a hard link when executable (falling back to a copy), a copy
/// otherwise.
async fn place(
    cached: &Path,
    target: &Path,
    executable: bool,
    run_as: Option<(u32, u32)>,
) -> io::Result<()> {
    match tokio::fs::remove_file(target).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if executable && tokio::fs::hard_link(cached, target).await.is_ok() {
        return Ok(());
    }
    tokio::fs::copy(cached, target).await?;
    let mode = if executable { 0o755 } else { 0o644 };
    tokio::fs::set_permissions(target, std::fs::Permissions::from_mode(mode)).await?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(target, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// True for one plain file name: not empty, no separator, not `.` or `..`.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The parts of an `http://` URL.
#[derive(Debug, PartialEq, Eq)]
struct HttpUrl<'a> {
    /// `host[:port]`, as the `Host` header carries it.
    authority: &'a str,
    /// The host to connect to (without brackets for IPv6).
    host: &'a str,
    port: u16,
    /// The path and query, starting with `/`.
    path: &'a str,
}

fn parse_http_url(url: &str) -> Result<HttpUrl<'_>, FetchError> {
    let bad = |reason| FetchError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad(if url.starts_with("https://") {
            "https is not supported: the agent fetches plain http:// (the sha256 checks the content)"
        } else {
            "only http:// URLs are supported"
        }));
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(_) => return Err(bad("the path must start with /")),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("expected http://host[:port]/path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("bad IPv6 host"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, p),
            None if after.is_empty() => (host, "80"),
            None => return Err(bad("bad IPv6 host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, "80"),
        }
    };
    let port = port.parse().map_err(|_| bad("bad port"))?;
    if host.is_empty() {
        return Err(bad("expected http://host[:port]/path"));
    }
    Ok(HttpUrl {
        authority,
        host,
        port,
        path,
    })
}

enum Failure {
    Http(String),
    Disk(io::Error),
}

/// GETs `url` (signed by `signer`, if any), streaming the body into `file` and `hasher`; refuses
/// bodies over `max_bytes`.
async fn download(
    url: &HttpUrl<'_>,
    signer: Option<&Signer>,
    file: &mut tokio::fs::File,
    hasher: &mut Sha256,
    max_bytes: u64,
) -> Result<(), Failure> {
    let http = |e: &dyn std::fmt::Display| Failure::Http(e.to_string());
    let stream = tokio::net::TcpStream::connect((url.host, url.port))
        .await
        .map_err(|e| http(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let conn = AbortOnDrop(tokio::spawn(conn));
    let mut request = hyper::Request::get(url.path)
        .header(hyper::header::HOST, url.authority)
        .header(hyper::header::USER_AGENT, "bramble-agent");
    if let Some(signer) = signer {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        request = request.header(
            hyper::header::AUTHORIZATION,
            signer.authorization("GET", url.path, now),
        );
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    let status = response.status();
    if status == hyper::StatusCode::UNAUTHORIZED {
        return Err(Failure::Http(if signer.is_some() {
            "HTTP 401: signature refused (is the board's clock set?)".to_owned()
        } else {
            "HTTP 401: the server wants a signed request (no credential)".to_owned()
        }));
    }
    if status != hyper::StatusCode::OK {
        return Err(Failure::Http(format!("HTTP {status}")));
    }
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes) {
        return Err(Failure::Http(format!(
            "{} bytes is more than the artifact cache holds ({max_bytes} bytes)",
            declared.unwrap_or(0)
        )));
    }
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| http(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > max_bytes {
            return Err(Failure::Http(format!(
                "more than the artifact cache holds ({max_bytes} bytes)"
            )));
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(Failure::Disk)?;
    }
    if let Some(len) = declared {
        if len != received {
            return Err(Failure::Http(format!(
                "the body has {received} bytes, not the {len} announced"
            )));
        }
    }
    drop(conn);
    Ok(())
}

/// Aborts the connection task when the download ends, however it ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_split_into_host_port_and_path() {
        let u = parse_http_url("http://master:8080/artifacts/x?v=1#frag").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                authority: "master:8080",
                host: "master",
                port: 8080,
                path: "/artifacts/x?v=1",
            }
        );
        let u = parse_http_url("http://[::1]/a").unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 80, "/a"));
        assert_eq!(parse_http_url("http://h").unwrap().path, "/");
    }

    #[test]
    fn https_and_other_schemes_are_refused_with_a_clear_reason() {
        let e = parse_http_url("https://master/x").unwrap_err().to_string();
        assert!(
            e.contains("cannot download https://master/x: https is not supported"),
            "{e}"
        );
        for bad in [
            "ftp://h/x",
            "http://",
            "http://u@h/x",
            "http://h:99999/x",
            "http://h?x",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sandbox_name_defaults_to_the_last_url_segment() {
        let mut a = Artifact {
            url: heapless::String::try_from("http://m/artifacts/run.sh?x=1").unwrap(),
            sha256: [0; 32],
            executable: false,
            name: heapless::String::new(),
        };
        assert_eq!(Fetcher::sandbox_name(&a), "run.sh");
        a.name = heapless::String::try_from("go").unwrap();
        assert_eq!(Fetcher::sandbox_name(&a), "go");
    }

    #[test]
    fn eviction_removes_the_least_recently_used_until_the_cache_fits() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (name, age) in [("old", 30), ("mid", 20), ("new", 10)] {
            let p = dir.path().join(name);
            std::fs::write(&p, [0u8; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        assert_eq!(evict_blocking(dir.path(), 150, "mid").unwrap(), 2);
        assert!(
            dir.path().join("mid").exists(),
            "the artifact just fetched is kept"
        );
        assert!(!dir.path().join("old").exists());
        assert!(!dir.path().join("new").exists());
    }
}
