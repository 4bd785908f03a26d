//! Byte tunnels for upgraded connections (WebSocket and other `Upgrade` protocols).
//!
//! After a 101 response both sides hand over their raw connections; the tunnel copies
//! bytes both ways until either side closes. The request's in-flight guard lives as
//! long as the tunnel, so an open WebSocket counts as load on its backend, and a
//! drained backend keeps serving tunnels it already has. Only a backend *removed*
//! from the config closes its tunnels, after `stream_close_delay`.
//!
//! Only protocols the route's `upgrades` allow get here (`headers::keep_allowed_upgrades`).
//! A tunnel is one request in the metrics and the access log (status 101); when it
//! closes its bytes each way are added to `tunnel_bytes_total` and its access-log
//! line is written with them (`bytes` down, `bytes_up` up).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::trail::TunnelTally;
use crate::data_plane::backend::InflightGuard;
use crate::metrics::names;

/// Waits for both upgrades, then copies until one side closes.
pub(super) async fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: InflightGuard,
    tally: TunnelTally,
) {
    let backend = guard.backend().addr();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(%backend, %err, "upgrade did not complete");
            close(tally, 0, 0, false).await;
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let closed = guard.backend().closed().clone();
    let mut counted = Counted::default();
    let complete = tokio::select! {
        copied = counted.copy(&mut client, &mut upstream) => match copied {
            Ok(()) => {
                tracing::debug!(%backend, up = counted.up, down = counted.down, "tunnel closed");
                true
            }
            Err(err) => {
                tracing::debug!(%backend, %err, "tunnel ended with an error");
                false
            }
        },
        () = closed.cancelled() => {
            tracing::info!(%backend, "tunnel closed: its backend was removed and stream_close_delay ran out");
            false
        }
    };
    drop(guard);
    close(tally, counted.up, counted.down, complete).await;
}

/// Bytes copied so far each way (kept when the copy ends early).
#[derive(Default)]
struct Counted {
    up: u64,
    down: u64,
}

impl Counted {
    /// Copies both ways until both sides are done, counting as it goes.
    async fn copy<C, U>(&mut self, client: &mut C, upstream: &mut U) -> std::io::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
        let up = pump(&mut client_read, &mut upstream_write, &mut self.up);
        let down = pump(&mut upstream_read, &mut client_write, &mut self.down);
        tokio::try_join!(up, down).map(|_| ())
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to`'s write side.
async fn pump<R, W>(from: &mut R, to: &mut W, count: &mut u64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        *count = count.saturating_add(n as u64);
    }
}

/// The tunnel's accounting: its bytes in the metrics, its access-log line.
async fn close(tally: TunnelTally, up: u64, down: u64, complete: bool) {
    let labels = |direction: &'static str| {
        [
            (names::label::ROUTE, tally.route.clone()),
            (names::label::POOL, tally.pool.clone()),
            (names::label::DIRECTION, direction.into()),
        ]
    };
    tally.metrics.with(|| {
        metrics::counter!(names::TUNNEL_BYTES, &labels(names::DIRECTION_UP)).increment(up);
        metrics::counter!(names::TUNNEL_BYTES, &labels(names::DIRECTION_DOWN)).increment(down);
    });
    // The line was handed over before the 101 went out: it is there by now.
    if let Some(Ok(mut log)) = match tally.log {
        Some(rx) => Some(rx.await),
        None => None,
    } {
        log.bytes = down;
        log.bytes_up = Some(up);
        log.emit(complete);
    }
}
