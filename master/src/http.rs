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
//! against the SHA-256 their task names, so the server needs no authentication to be safe from
//! tampering on the wire; anyone on the LAN may read the artifacts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
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
