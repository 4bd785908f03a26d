//! Assembles a running gateway from a validated spec: controller, proxy, listener.
//!
//! This is what `sluicegate run`, `sluicegate demo` and the integration tests start;
//! it owns nothing that the modules it wires do not already own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::spec::Spec;
use crate::controller::{Controller, SharedSnapshot};
use crate::health::HealthEvent;
use crate::proxy::Proxy;
use crate::server::{self, Drained, Limits};

/// A gateway whose listener is bound but not yet serving.
#[derive(Debug)]
pub struct Gateway {
    controller: Controller,
    proxy: Arc<Proxy>,
    listener: TcpListener,
    limits: Limits,
}

impl Gateway {
    /// Builds the first snapshot and binds `[listen].http`.
    pub async fn bind(spec: Spec) -> std::io::Result<Gateway> {
        let listener = server::bind(spec.listen.http).await?;
        let limits = Limits {
            header_read_timeout: spec.listen.header_read_timeout,
            max_connections: spec.listen.max_connections,
        };
        let controller = Controller::new(spec);
        let proxy = Arc::new(Proxy::new(controller.shared(), "http"));
        Ok(Gateway {
            controller,
            proxy,
            listener,
            limits,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The snapshot the data plane reads.
    pub fn snapshot(&self) -> SharedSnapshot {
        self.controller.shared()
    }

    /// Every health transition from now on (probe status changes, ejections).
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.controller.subscribe_health()
    }

    /// Serves until `shutdown` resolves, then drains for at most `drain_timeout`.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        drain_timeout: Duration,
    ) -> Drained {
        let Gateway {
            controller,
            proxy,
            listener,
            limits,
        } = self;
        let drained = server::serve(listener, proxy, limits, shutdown, drain_timeout).await;
        drop(controller);
        drained
    }
}
