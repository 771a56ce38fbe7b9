//! TLS for `mqtts://` brokers, through rustls with the `ring` provider (no cmake or C toolchain
//! beyond the cross gcc, so it cross-compiles to aarch64 and armv7 as the rest does).
//!
//! The server is checked against the system's roots by default, or against a CA file
//! (`--ca-file`, `ca_file`, `BRAMBLE_CA_FILE`); an optional client certificate and key
//! (`client_cert` / `client_key`, PEM) authenticate the client. A binary settles its
//! [`TlsFiles`] once at start with [`configure`]; every connection to an `mqtts://` broker then
//! uses that configuration (the system's roots when `configure` was never called).
//!
//! Built only with the crate's `tls` feature: without it, an `mqtts://` URL is refused where it
//! is parsed ([`crate::BrokerError::TlsNotBuilt`]), so the agent's small board build fails clearly.

use std::path::PathBuf;

/// The environment variable of the CA file.
pub const CA_FILE_ENV: &str = "BRAMBLE_CA_FILE";

/// Where a client's TLS material is (all PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) the broker's certificate must chain to (`None`: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The client certificate (chain), if the broker wants one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no certificate or key of the kind expected.
    #[error("TLS file {path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "a client certificate needs its key and a key its certificate (client_cert and client_key)"
    )]
    HalfClientAuth,
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(String),
    /// This build has no TLS.
    #[error("this build has no TLS (built without the `tls` feature): use an mqtt:// broker or the TLS build")]
    NotBuilt,
}

#[cfg(feature = "tls")]
mod imp {
    use std::io::BufReader;
    use std::path::Path;
    use std::sync::{Arc, OnceLock};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use super::{TlsError, TlsFiles};

    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

    /// rustls's ring provider: rustls marks it deprecated for lacking post-quantum key exchange,
    /// but aws-lc-rs (the one that has it) needs cmake and a C toolchain per board target.
    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
    }

    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut open(path)?)
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::Invalid {
                path: path.to_owned(),
                what: "no PEM certificate in it".into(),
            });
        }
        Ok(certs)
    }

    fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        rustls_pemfile::private_key(&mut open(path)?)
            .map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })?
            .ok_or_else(|| TlsError::Invalid {
                path: path.to_owned(),
                what: "no PEM private key in it".into(),
            })
    }

    /// The rustls client configuration `files` describe.
    pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        match &files.ca_file {
            Some(path) => {
                for cert in certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Invalid {
                        path: path.clone(),
                        what: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!("system TLS roots: {e}");
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!("no system TLS roots found: give a CA file (--ca-file)");
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(k)) => builder
                .with_client_auth_cert(certs(cert)?, key(k)?)
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfClientAuth),
        };
        Ok(Arc::new(config))
    }

    pub fn configure(files: &TlsFiles) -> Result<(), TlsError> {
        let config = client_config(files)?;
        let _ = CONFIG.set(config);
        Ok(())
    }

    pub fn transport() -> rumqttc::Transport {
        let config = CONFIG.get_or_init(|| {
            client_config(&TlsFiles::default()).unwrap_or_else(|e| {
                tracing::error!("{e}");
                Arc::new(
                    ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default versions")
                        .with_root_certificates(RootCertStore::empty())
                        .with_no_client_auth(),
                )
            })
        });
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::clone(config)))
    }
}

/// Whether this build speaks TLS.
pub const BUILT: bool = cfg!(feature = "tls");

/// Settles this process's TLS configuration from `files` (once: later calls are ignored), checking
/// every file now, so a bad one fails at start, not at the first connection.
pub fn configure(files: &TlsFiles) -> Result<(), TlsError> {
    #[cfg(feature = "tls")]
    return imp::configure(files);
    #[cfg(not(feature = "tls"))]
    {
        let _ = files;
        Err(TlsError::NotBuilt)
    }
}

/// The transport of a connection to an `mqtts://` broker.
#[cfg(feature = "tls")]
pub(crate) fn transport() -> rumqttc::Transport {
    imp::transport()
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_or_half_a_client_identity_is_refused_naming_it() {
        let e = imp::client_config(&TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = imp::client_config(&TlsFiles {
            ca_file: Some(empty),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = imp::client_config(&TlsFiles {
            client_cert: Some("/x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::HalfClientAuth));
    }
}
