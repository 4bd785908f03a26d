//! Byte tunnels for upgraded connections (WebSocket and other `Upgrade` protocols).
//!
//! After a 101 response both sides hand over their raw connections; the tunnel copies
//! bytes both ways until either side closes. The request's in-flight guard lives as
//! long as the tunnel, so an open WebSocket counts as load on its backend, and a
//! drained backend keeps serving tunnels it already has. Only a backend *removed*
//! from the config closes its tunnels, after `stream_close_delay`.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::backend::InflightGuard;

/// Waits for both upgrades, then copies until one side closes.
pub(super) async fn run(client: OnUpgrade, upstream: OnUpgrade, guard: InflightGuard) {
    let backend = guard.backend().addr();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(%backend, %err, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let closed = guard.backend().closed().clone();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok((up, down)) => tracing::debug!(%backend, up, down, "tunnel closed"),
            Err(err) => tracing::debug!(%backend, %err, "tunnel ended with an error"),
        },
        () = closed.cancelled() => {
            tracing::info!(%backend, "tunnel closed: its backend was removed and stream_close_delay ran out");
        }
    }
    drop(guard);
}
