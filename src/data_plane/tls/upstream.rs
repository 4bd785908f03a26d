//! TLS to backends: one client configuration per pool `tls = { … }`.
//!
//! An [`UpstreamTls`] wraps a TCP connection to a backend in TLS (ALPN `http/1.1`,
//! TLS 1.2/1.3, session resumption) before the HTTP/1.1 handshake in `upstream`.
//! The backend's certificate is verified against the pool's `ca` file, the public
//! web roots, or (with `insecure_skip_verify`) not at all; the name checked and
//! sent as SNI is `server_name`, else the backend's IP address.
//!
//! Building never fails at the request path's expense: a CA file that cannot be
//! loaded when a snapshot is built yields a connector whose every connect fails
//! with that error (never plain HTTP to a backend that expects TLS). `check` and
//! gateway start load the files first and refuse bad ones.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::control_plane::config::spec::{UpstreamTlsSpec, UpstreamVerify};

/// Why a pool's `ca` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not valid PEM.
    #[error("{} is not valid PEM: {error}", .path.display())]
    Pem { path: PathBuf, error: pem::Error },
    /// No certificate in it.
    #[error("{} holds no CA certificate (expected -----BEGIN CERTIFICATE-----)", .path.display())]
    Empty { path: PathBuf },
    /// A certificate rustls cannot use as a trust anchor.
    #[error("{}: unusable CA certificate: {error}", .path.display())]
    BadCa { path: PathBuf, error: rustls::Error },
    /// The provider rejected the protocol versions (does not happen with ring).
    #[error("TLS client configuration: {0}")]
    Config(rustls::Error),
}

/// The TLS client side of one pool.
pub struct UpstreamTls {
    spec: UpstreamTlsSpec,
    server_name: Option<ServerName<'static>>,
    connector: Result<TlsConnector, Arc<str>>,
    /// The same configuration offering ALPN `h2` only (`protocol = "h2"`).
    connector_h2: Result<TlsConnector, Arc<str>>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("spec", &self.spec)
            .field("usable", &self.connector.is_ok())
            .finish()
    }
}

impl UpstreamTls {
    /// Loads the CA file (if any) and builds the client configuration.
    pub fn load(spec: &UpstreamTlsSpec, provider: Arc<CryptoProvider>) -> Result<Self, CaError> {
        let config = client_config(spec, provider)?;
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self::with(
            spec,
            Ok(TlsConnector::from(Arc::new(config))),
            Ok(TlsConnector::from(Arc::new(h2))),
        ))
    }

    /// Like [`load`](Self::load), but a failure is kept and reported by every connect.
    pub fn build(spec: &UpstreamTlsSpec, provider: Arc<CryptoProvider>) -> Self {
        Self::load(spec, provider).unwrap_or_else(|err| {
            tracing::error!(%err, "upstream TLS unusable; connections to this pool will fail");
            let err: Arc<str> = err.to_string().into();
            Self::with(spec, Err(Arc::clone(&err)), Err(err))
        })
    }

    fn with(
        spec: &UpstreamTlsSpec,
        connector: Result<TlsConnector, Arc<str>>,
        connector_h2: Result<TlsConnector, Arc<str>>,
    ) -> Self {
        // Validation checked the name; an unparsable one falls back to the IP.
        let server_name = spec
            .server_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok());
        UpstreamTls {
            spec: spec.clone(),
            server_name,
            connector,
            connector_h2,
        }
    }

    /// The configuration this was built from.
    pub fn spec(&self) -> &UpstreamTlsSpec {
        &self.spec
    }

    /// The handshake with `connector` (the plain or the h2-only one), verifying the
    /// configured server name or else the backend's IP.
    async fn handshake(
        &self,
        connector: &Result<TlsConnector, Arc<str>>,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let connector = connector.as_ref().map_err(|err| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, err.to_string())
        })?;
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        connector.connect(name, tcp).await
    }

    /// Runs the TLS handshake on `tcp`, a connection to `addr`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.handshake(&self.connector, addr, tcp).await
    }

    /// Like [`connect`](Self::connect), offering ALPN `h2` only; fails unless the
    /// backend chose it (a backend that speaks only HTTP/1.1 over TLS).
    pub async fn connect_h2(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let stream = self.handshake(&self.connector_h2, addr, tcp).await?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the backend did not negotiate HTTP/2 (ALPN h2); is it HTTP/1-only? use protocol = \"http1\"",
            ));
        }
        Ok(stream)
    }
}

fn client_config(
    spec: &UpstreamTlsSpec,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, CaError> {
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(super::PROTOCOL_VERSIONS)
        .map_err(CaError::Config)?;
    let mut config = match &spec.verify {
        UpstreamVerify::Ca(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
        UpstreamVerify::PublicRoots => builder
            .with_root_certificates(RootCertStore::from_iter(
                webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
            ))
            .with_no_client_auth(),
        UpstreamVerify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    // The pool speaks HTTP/1.1 to backends.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CA certificates in the PEM file at `path`.
pub fn load_roots(path: &Path) -> Result<RootCertStore, CaError> {
    let bytes = std::fs::read(path).map_err(|error| CaError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|error| CaError::Pem {
            path: path.to_path_buf(),
            error,
        })?;
        roots.add(cert).map_err(|error| CaError::BadCa {
            path: path.to_path_buf(),
            error,
        })?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// `insecure_skip_verify`: accepts any certificate, but still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
pub struct NoVerify(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
