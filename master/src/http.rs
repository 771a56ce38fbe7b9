//! The master's HTTP routes (axum): the artifact store, and through [`Routes::merge`] the web
//! dashboard and `/metrics` ([`crate::web::routes`]).
//!
//! [`Routes`] builds the [`axum::Router`]: each part of the master adds its routes to it, and
//! [`crate::web::serve`] runs the result on a listener it is handed (tests bind port 0).
//!
//! `GET /artifacts/{name}` serves the file `name` of the artifact directory (`bramble master
//! --artifacts DIR`, default [`DEFAULT_ARTIFACTS_DIR`]) with its `Content-Length`, streamed from
//! disk. Only a plain file name is accepted: no `/`, no `\`, no leading `.` (so no `..` and no hidden
//! or temporary files), and only regular files (not directories, not symlinks). Anything else is a
//! 404, so the server never says what exists outside the directory. Agents check every download
//! against the SHA-256 their task names, so tampering on the wire is caught without TLS.
//!
//! # Who may read artifacts
//!
//! A master with a credential store serves artifacts only to signed requests
//! ([`Routes::signed_artifacts`], PROTOCOL.md "HTTP authentication"): an `Authorization: Bramble
//! principal=…, time=…, tag=…` header whose tag is HMAC-SHA-256 under an agent's or an operator's
//! HTTP key (from the store, reloaded when it changes; frameworks and the master principal are not
//! taken) and whose time is within ±300 s of the master's clock. Anything else is a 401 with
//! `WWW-Authenticate: Bramble`, counted by reason in `/metrics`
//! (`bramble_http_refused_total{reason=…}`, [`HttpRefusals`]) and logged at most once per 10 s. A
//! master without credentials (`bramble up`, `--insecure-allow-anonymous`, an external broker and
//! no store) serves them to anyone ([`Routes::artifacts`]) and says so when it starts.
//!
//! # Nothing changes state over HTTP
//!
//! Every route of the master's HTTP server is a `GET` (axum answers `HEAD` too): the artifacts, the
//! dashboard, its event stream and `/metrics` only read. Any other method is refused with
//! `405 Method Not Allowed` (on the artifacts, an unsigned one is a 401 first). Operator commands
//! travel over MQTT as operator-signed messages; should an HTTP route ever change state, it must
//! require an operator's signature ([`HttpAuth::check`] says who signed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agent_nostd_core::auth::{HttpKey, Principal, PrincipalKind};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bramble_mqtt::http_auth::{Authorization, Refused, SCHEME};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Where `bramble master` looks for artifacts when `--artifacts` is not given.
pub const DEFAULT_ARTIFACTS_DIR: &str = "/var/lib/bramble/artifacts";
/// Where `bramble master` serves HTTP when `--http` is not given.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";

/// The master's routes, built up by the parts that serve something.
#[derive(Debug, Default)]
pub struct Routes {
    router: Router,
}

impl Routes {
    /// No routes yet (every path is a 404).
    pub fn new() -> Self {
        Routes::default()
    }

    /// Adds `GET /artifacts/{name}`, serving the regular files of `dir`.
    pub fn artifacts(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir: Arc<Path> = Arc::from(dir.into());
        let artifacts = Router::new()
            .route("/artifacts/:name", get(get_artifact))
            .with_state(dir);
        self.router = self.router.merge(artifacts);
        self
    }

    /// Adds `GET /artifacts/{name}` like [`Routes::artifacts`], served only to requests signed
    /// by a principal `auth` holds a key for.
    pub fn signed_artifacts(mut self, dir: impl Into<PathBuf>, auth: HttpAuth) -> Self {
        let dir: Arc<Path> = Arc::from(dir.into());
        let artifacts = Router::new()
            .route("/artifacts/:name", get(get_artifact))
            .route_layer(middleware::from_fn_with_state(auth, require_signature))
            .with_state(dir);
        self.router = self.router.merge(artifacts);
        self
    }

    /// Adds the routes of another part of the master (e.g. the dashboard).
    pub fn merge(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// The router to [`serve`].
    pub fn build(self) -> Router {
        self.router
    }
}

/// True for a name that is one plain file name: not empty, no separator, no leading dot.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}

/// The principals whose signed requests the artifact server takes, with their HTTP keys: the
/// agents and the operators of the credential store.
#[derive(Debug, Clone, Default)]
pub struct HttpKeys(BTreeMap<Principal, HttpKey>);

impl HttpKeys {
    /// These principals' keys; those that may not read artifacts (frameworks, the master) are
    /// left out.
    pub fn only(keys: impl IntoIterator<Item = (Principal, HttpKey)>) -> HttpKeys {
        HttpKeys(
            keys.into_iter()
                .filter(|(p, _)| matches!(p.kind(), PrincipalKind::Agent | PrincipalKind::Operator))
                .collect(),
        )
    }

    /// The key of `principal`, if it may sign.
    pub fn get(&self, principal: &Principal) -> Option<&HttpKey> {
        self.0.get(principal)
    }

    /// How many principals may sign.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nobody may sign.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How long refusals are summed up before the next one is logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The HTTP requests refused for want of a valid signature, by reason (for `/metrics`), and the
/// rate limit of their log lines.
#[derive(Debug, Default)]
pub struct HttpRefusals {
    counts: [AtomicU64; Refused::ALL.len()],
    log: Mutex<RefusalLog>,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

fn index(reason: Refused) -> usize {
    Refused::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or_default()
}

impl HttpRefusals {
    /// Requests refused for `reason` since the master started.
    pub fn count(&self, reason: Refused) -> u64 {
        self.counts[index(reason)].load(Ordering::Relaxed)
    }

    /// Counts one refusal, and logs it unless one was logged within [`REFUSAL_LOG_EVERY`].
    fn record(&self, reason: Refused, method: &str, path: &str, claimed: Option<&Principal>) {
        self.counts[index(reason)].fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if log
            .last
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_EVERY)
        {
            log.unlogged += 1;
            return;
        }
        let also = std::mem::take(&mut log.unlogged);
        log.last = Some(now);
        drop(log);
        let who = claimed.map(|p| p.username());
        let who = who.as_ref().map_or("-", |u| u.as_str());
        if reason == Refused::Stale {
            warn!(%method, %path, principal = who, also_refused = also,
                "refused an HTTP request: {reason} (is the board's clock set? boards need NTP)");
        } else {
            warn!(%method, %path, principal = who, also_refused = also,
                "refused an HTTP request: {reason}");
        }
    }
}

/// The check of signed requests: the principals' keys (kept up to date as the store changes) and
/// the refusal counters.
#[derive(Debug, Clone)]
pub struct HttpAuth {
    keys: watch::Receiver<HttpKeys>,
    refusals: Arc<HttpRefusals>,
}

impl HttpAuth {
    /// Takes signatures under `keys`, counting refusals in `refusals` (the dashboard's, so that
    /// `/metrics` shows them: [`crate::web::WebState::http_refusals`]).
    pub fn new(keys: watch::Receiver<HttpKeys>, refusals: Arc<HttpRefusals>) -> Self {
        HttpAuth { keys, refusals }
    }

    /// Who signed `method path` with the `Authorization` header `header`, at `now` (Unix
    /// seconds), or why it is refused. The refusal is counted and logged (rate-limited).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        header: Option<&[u8]>,
        now: u64,
    ) -> Result<Principal, Refused> {
        let mut claimed = None;
        let outcome = (|| {
            let header = header.ok_or(Refused::Missing)?;
            let header = std::str::from_utf8(header).map_err(|_| Refused::Malformed)?;
            let auth = Authorization::parse(header)?;
            claimed = Some(auth.principal.clone());
            let key = self
                .keys
                .borrow()
                .get(&auth.principal)
                .cloned()
                .ok_or(Refused::UnknownPrincipal)?;
            auth.verify(&key, method, path, now)?;
            Ok(auth.principal)
        })();
        if let Err(reason) = outcome {
            self.refusals.record(reason, method, path, claimed.as_ref());
        }
        outcome
    }
}

/// The master's clock, in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn require_signature(State(auth): State<HttpAuth>, req: Request, next: Next) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.check(req.method().as_str(), path, header, unix_now()) {
        Ok(principal) => {
            debug!(principal = %principal.username(), path, "signed request");
            next.run(req).await
        }
        Err(reason) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, SCHEME)],
            format!("a signed request is needed (PROTOCOL.md, HTTP authentication): {reason}\n"),
        )
            .into_response(),
    }
}

async fn get_artifact(State(dir): State<Arc<Path>>, UrlPath(name): UrlPath<String>) -> Response {
    if !is_plain_file_name(&name) {
        warn!(
            name,
            "refused an artifact request that is not a plain file name"
        );
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = dir.join(&name);
    // symlink_metadata: a symlink is not a regular file, so it cannot lead out of the directory.
    match tokio::fs::symlink_metadata(&path).await {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            debug!(name, "artifact not served: {e}");
            return StatusCode::NOT_FOUND.into_response();
        }
    }
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            warn!(name, "cannot open artifact: {e}");
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    // The length of what was opened, not of what the name pointed at a moment before.
    let len = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    debug!(name, len, "serving artifact");
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_served() {
        assert!(is_plain_file_name("bramble-sensor"));
        assert!(is_plain_file_name("run.sh"));
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a\\b",
            "a\0b",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
