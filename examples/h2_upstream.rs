//! A fast h2c upstream for the gRPC benchmark (`benches/grpc/compare.sh`): the
//! same backend behind sluicegate and nginx's `grpc_pass`.
//!
//! `h2_upstream [PORT [MAX_STREAMS [LISTENERS]]]` (defaults: 0, any free port;
//! 1000 streams per connection; 1 listener) listens on 127.0.0.1, prints
//! `PORT <n>` (one line per listener: with LISTENERS > 1 and PORT 0, each on a
//! free port, so one process stands for many backends, as
//! `benches/grpc/idle_h2.sh` needs) and answers every request over HTTP/2
//! without TLS:
//!
//! - `/stream/<bytes>`: that many bytes of body (64 KiB DATA frames, by the
//!   client's flow control), then `grpc-status: 0`: a long download;
//! - anything else: reads the request body and echoes it (a unary gRPC call
//!   answers its own message), then `grpc-status: 0`.
//!
//! One thread (a current-thread runtime), so the upstream's cost stays on one
//! core and is the same for every proxy in front of it.

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};

const CHUNK: usize = 64 << 10;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT is a number"))
        .unwrap_or(0);
    let max_streams: u32 = std::env::args()
        .nth(2)
        .map(|p| p.parse().expect("MAX_STREAMS is a number"))
        .unwrap_or(1000);
    let listeners: usize = std::env::args()
        .nth(3)
        .map(|p| p.parse().expect("LISTENERS is a number"))
        .unwrap_or(1);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut bound = Vec::with_capacity(listeners);
            for _ in 0..listeners.max(1) {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
                println!("PORT {}", listener.local_addr()?.port());
                bound.push(listener);
            }
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut served = tokio::task::JoinSet::new();
            for listener in bound {
                served.spawn(serve(listener, max_streams));
            }
            match served.join_next().await {
                Some(Ok(ended)) => ended,
                _ => Ok(()),
            }
        })
}

async fn serve(listener: tokio::net::TcpListener, max_streams: u32) -> std::io::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .max_concurrent_streams(max_streams)
                .initial_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake::<_, Bytes>(tcp)
                .await
            else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(answer(req, respond));
            }
        });
    }
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

async fn answer(req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let download = req
        .uri()
        .path()
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<usize>().ok());
    let mut body = req.into_body();
    let mut echo = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        if download.is_none() {
            echo.extend_from_slice(&data);
        }
    }
    let head = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("static head");
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    let mut left = download.unwrap_or(0);
    let mut data = if download.is_some() {
        Bytes::from(vec![0u8; CHUNK])
    } else {
        left = echo.len();
        Bytes::from(echo)
    };
    while left > 0 {
        send.reserve_capacity(left.min(CHUNK));
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return,
        };
        let n = granted.min(left).min(data.len());
        let part = if download.is_some() {
            data.slice(..n)
        } else {
            data.split_to(n)
        };
        if send.send_data(part, false).is_err() {
            return;
        }
        left -= n;
    }
    let _ = send.send_trailers(ok_trailers());
}
