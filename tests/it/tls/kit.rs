//! TLS test kit: a throwaway CA and leaf certificates made with rcgen at test time
//! (nothing secret is committed), TLS clients that report what the server
//! presented, requests over HTTP/1.1 or h2 on a TLS stream, and a rustls
//! front for an echo agent (an "agent that only speaks HTTPS").

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::{Reply, WAIT};

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf as DER: what a client sees first in the presented chain.
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluicegate test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses) signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Roots trusting only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("CA root");
        roots
    }
}

impl Leaf {
    /// Writes `dir/{stem}.pem` and `dir/{stem}.key`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    fn server_config(&self) -> ServerConfig {
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("pem")];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem");
        ServerConfig::builder_with_provider(sluicegate::testing::data_plane::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config")
    }
}

/// A client that verifies against `roots` and offers `alpn`.
pub fn verifying_client(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config =
        ClientConfig::builder_with_provider(sluicegate::testing::data_plane::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client that accepts any certificate (so a test can look at which one it got).
pub fn looking_client(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = sluicegate::testing::data_plane::tls::provider();
    let verifier = sluicegate::testing::data_plane::tls::upstream::NoVerify(Arc::clone(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects and handshakes; `sni: None` connects by IP, so no SNI is sent.
pub async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).expect("server name"),
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certs");
    certs[0].to_vec()
}

/// The negotiated ALPN protocol, if any.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// `GET path` with `Host: host` on `stream`, over h2 if ALPN chose it, else HTTP/1.1.
pub async fn get(stream: TlsStream<TcpStream>, host: &str, path: &str) -> Reply {
    let h2 = alpn(&stream).as_deref() == Some(b"h2".as_slice());
    tokio::time::timeout(WAIT, async move {
        let io = TokioIo::new(stream);
        let resp = if h2 {
            let uri = format!("https://{host}{path}");
            let req = Request::get(uri)
                .body(Full::new(Bytes::new()))
                .expect("req");
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("h2 response")
        } else {
            let req = Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .expect("req");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("h1 response")
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("request finished in time")
}

/// Terminates TLS with `leaf` on 127.0.0.1 and relays bytes to `target` (an echo
/// agent): together, an agent that only speaks HTTPS. Returns the address and a
/// count of completed handshakes.
pub async fn tls_front(leaf: &Leaf, target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    tls_front_alpn(leaf, target, &[]).await
}

/// [`tls_front`] choosing among `alpn` (the client's first offer it has).
pub async fn tls_front_alpn(
    leaf: &Leaf,
    target: SocketAddr,
    alpn: &[&[u8]],
) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut config = leaf.server_config();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (addr, handshakes)
}
