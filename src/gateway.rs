//! Assembles a running gateway from a validated spec: controller, proxy, listeners.
//!
//! This is what `sluicegate run`, `sluicegate demo` and the integration tests start;
//! it owns nothing that the modules it wires do not already own. With
//! `listen.https` it also loads the TLS files (refusing to start on a bad one),
//! starts the certificate watcher, and serves both listeners with one shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::spec::Spec;
use crate::config::ConfigErrors;
use crate::controller::{Controller, SharedSnapshot};
use crate::proxy::Proxy;
use crate::server::{self, Drained, Handler, Limits, Listener, RedirectHttps, Transport};
use crate::tls::watch::{CertWatcher, ReloadStatus};
use crate::tls::{self, Frontend};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Listen(#[from] std::io::Error),
    /// A TLS file is missing, unparsable or mismatched (each error has its key path).
    #[error("TLS files are invalid:\n{0}")]
    Tls(ConfigErrors),
    /// The certificate directories cannot be watched for reloads.
    #[error("cannot watch the certificate files for changes: {0}")]
    Watch(#[from] notify::Error),
}

/// A gateway whose listeners are bound but not yet serving.
#[derive(Debug)]
pub struct Gateway {
    controller: Controller,
    /// `[listen].http` first, then `[listen].https` if set.
    listeners: Vec<Listener>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    frontend: Option<Frontend>,
    cert_watcher: Option<CertWatcher>,
}

impl Gateway {
    /// Loads the TLS files, builds the first snapshot and binds the listeners.
    pub async fn bind(spec: Spec) -> Result<Gateway, StartError> {
        let loaded = tls::load(&spec).map_err(StartError::Tls)?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let http = server::bind(spec.listen.http).await?;
        let https = match spec.listen.https {
            Some(addr) => Some(server::bind(addr).await?),
            None => None,
        };
        let http_addr = http.local_addr()?;
        let https_addr = https.as_ref().map(|l| l.local_addr()).transpose()?;
        let limits = Limits {
            header_read_timeout: spec.listen.header_read_timeout,
            max_connections: spec.listen.max_connections,
        };
        let redirect = spec.listen.redirect_https;
        let controller = Controller::new(spec);

        let http_handler = match (redirect, https_addr) {
            (Some(redirect), Some(https_addr)) => Handler::Redirect(Arc::new(RedirectHttps::new(
                redirect.port.unwrap_or(https_addr.port()),
            ))),
            _ => Handler::Proxy(Arc::new(Proxy::new(controller.shared(), "http"))),
        };
        let mut listeners = vec![Listener {
            tcp: http,
            transport: Transport::Plain,
            handler: http_handler,
            limits,
        }];
        let frontend = loaded.frontend;
        let mut cert_watcher = None;
        if let (Some(tcp), Some(frontend)) = (https, &frontend) {
            cert_watcher = Some(CertWatcher::start(
                Arc::clone(&frontend.store),
                tls::provider(),
            )?);
            listeners.push(Listener {
                tcp,
                transport: Transport::Tls {
                    acceptor: frontend.acceptor.clone(),
                    handshake_timeout: frontend.handshake_timeout,
                },
                handler: Handler::Proxy(Arc::new(Proxy::new(controller.shared(), "https"))),
                limits,
            });
        }
        Ok(Gateway {
            controller,
            listeners,
            http_addr,
            https_addr,
            frontend,
            cert_watcher,
        })
    }

    /// The HTTP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.http_addr)
    }

    /// The HTTPS address actually bound, when `listen.https` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The HTTPS listener's TLS side (its live certificate table), if any.
    pub fn tls_frontend(&self) -> Option<&Frontend> {
        self.frontend.as_ref()
    }

    /// Follows certificate reloads (attempts, publications, errors), if HTTPS is on.
    pub fn cert_reloads(&self) -> Option<watch::Receiver<ReloadStatus>> {
        self.cert_watcher.as_ref().map(CertWatcher::status)
    }

    /// The snapshot the data plane reads.
    pub fn snapshot(&self) -> SharedSnapshot {
        self.controller.shared()
    }

    /// Serves every listener until `shutdown` resolves, then drains them together
    /// for at most `drain_timeout`.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> Drained {
        let Gateway {
            controller,
            listeners,
            cert_watcher,
            ..
        } = self;
        let stop = CancellationToken::new();
        let serving = join_all(listeners.into_iter().map(|listener| {
            server::serve(listener, stop.clone().cancelled_owned(), drain_timeout)
        }));
        let signal = async {
            shutdown.await;
            stop.cancel();
        };
        let ((), drained) = tokio::join!(signal, serving);
        drop(cert_watcher);
        drop(controller);
        if drained.contains(&Drained::TimedOut) {
            Drained::TimedOut
        } else {
            Drained::Clean
        }
    }
}
