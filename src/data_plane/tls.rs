//! TLS: terminating HTTPS for clients and originating it to backends, with rustls.
//!
//! This module owns the files behind the TLS keys of `routes.toml`: it loads and
//! checks them ([`load`], used by gateway start, config reload, `plan` and
//! `sluicegate check`), builds
//! the server configuration of the HTTPS listener ([`Frontend`]: SNI certificates
//! from `resolver`, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3 only), keeps the
//! certificates fresh ([`watch`]) and builds the per-pool client side
//! ([`upstream`]). It does not accept connections or speak HTTP (`server`,
//! `upstream` at the crate root do).
//!
//! The crypto provider is rustls' `ring` one, passed explicitly everywhere (no
//! process-wide default is installed), with its default cipher suites: AES-GCM
//! and ChaCha20-Poly1305 with ECDHE, nothing older.

pub(crate) mod certs;
pub(crate) mod resolver;
pub mod upstream;
pub mod watch;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

use crate::control_plane::config::spec::{Spec, TlsSpec, UpstreamVerify};
use crate::control_plane::config::{ConfigError, ConfigErrors};
use resolver::{CertStore, CertTable};

/// TLS 1.3 and 1.2; nothing older.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ALPN protocols offered to clients, preferred first.
pub const ALPN_SERVER: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The `ring` crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The HTTPS listener's TLS side: live certificates and the acceptor using them.
#[derive(Clone)]
pub struct Frontend {
    /// The certificate table handshakes read; the watcher swaps it.
    pub store: Arc<CertStore>,
    /// Accepts TLS with [`ALPN_SERVER`] and certificates from `store`.
    pub acceptor: TlsAcceptor,
    /// Longest time from accept to a completed handshake.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("store", &self.store)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Everything TLS a gateway needs from the files, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    /// The HTTPS listener's side, when `listen.https` is set.
    pub frontend: Option<Frontend>,
    /// Things that work but deserve a loud line (e.g. `insecure_skip_verify`).
    pub warnings: Vec<ConfigError>,
}

/// Loads every TLS file `spec` names: each certificate entry (readable, PEM, key
/// matching its certificate) and each pool's `ca`. Every failure is reported, at
/// the key path of the setting that names the file.
pub fn load(spec: &Spec) -> Result<Loaded, ConfigErrors> {
    let provider = provider();
    let mut errors = Vec::new();
    let frontend = spec
        .tls
        .as_ref()
        .and_then(|tls| match frontend(tls, &provider) {
            Ok(frontend) => Some(frontend),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        });
    let mut warnings = Vec::new();
    for (i, pool) in spec.pools.iter().enumerate() {
        let Some(tls) = &pool.tls else { continue };
        match &tls.verify {
            UpstreamVerify::Insecure => warnings.push(ConfigError {
                path: format!("pools[{i}].tls.insecure_skip_verify"),
                message: format!(
                    "certificates of pool {} are NOT verified: traffic is encrypted but anyone on the path can impersonate its backends",
                    pool.name
                ),
            }),
            UpstreamVerify::Ca(_) => {
                if let Err(err) = upstream::UpstreamTls::load(tls, Arc::clone(&provider)) {
                    errors.push(ConfigError {
                        path: format!("pools[{i}].tls.ca"),
                        message: err.to_string(),
                    });
                }
            }
            UpstreamVerify::PublicRoots => {}
        }
    }
    if errors.is_empty() {
        Ok(Loaded { frontend, warnings })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// [`load`] on a blocking thread (the files are read synchronously), for async
/// callers: the config reload and `POST /api/v1/plan` refuse a file whose TLS
/// files do not load, as gateway start does.
pub async fn load_off_thread(spec: &Spec) -> Result<Loaded, ConfigErrors> {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || load(&spec))
        .await
        .unwrap_or_else(|err| {
            Err(ConfigErrors(vec![ConfigError {
                path: "tls".into(),
                message: format!("loading the TLS files failed: {err}"),
            }]))
        })
}

/// Loads all certificate entries and builds the acceptor.
fn frontend(tls: &TlsSpec, provider: &Arc<CryptoProvider>) -> Result<Frontend, Vec<ConfigError>> {
    let mut loaded = Vec::with_capacity(tls.certificates.len());
    let mut errors = Vec::new();
    for (i, entry) in tls.certificates.iter().enumerate() {
        match certs::load(entry, provider) {
            Ok(l) => loaded.push(l),
            Err(err) => errors.push(ConfigError {
                path: format!("tls.certificates[{i}].{}", err.field()),
                message: err.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let store = Arc::new(CertStore::new(
        tls.certificates.clone(),
        CertTable::build(&tls.certificates, loaded),
    ));
    let config = server_config(Arc::clone(&store), Arc::clone(provider)).map_err(|err| {
        vec![ConfigError {
            path: "tls".into(),
            message: format!("cannot build the TLS server configuration: {err}"),
        }]
    })?;
    Ok(Frontend {
        store,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        handshake_timeout: tls.handshake_timeout,
    })
}

/// Server configuration: TLS 1.2/1.3, certificates from `store`, ALPN h2 then
/// http/1.1, stateless session tickets (like nginx's default) besides the
/// session cache, so returning clients resume instead of a full handshake.
pub fn server_config(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = ALPN_SERVER.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

#[cfg(test)]
mod tests;
