//! What idle keep-alive client connections cost the gateway in memory.
//!
//! Starts a tiny HTTP/1.1 backend in this process, writes a one-route config for it,
//! starts the release gateway (`target/release/sluicegate run -c …`) as a child,
//! opens `--conns` client connections to it, sends one request on each (read to the
//! end of its response) and keeps them all open and idle. The gateway's `VmRSS`
//! (from `/proc/<pid>/status`) is read after a one-request warm-up and again once
//! every connection is idle; the difference over the count is the per-connection
//! cost. Then everything is closed and the gateway killed (it is this process's
//! child, so nothing else is touched).
//!
//! Run through `benches/idle_conns.sh`, which builds, raises `ulimit -n` and bounds
//! the run in time; directly:
//! `cargo run --release --example idle_conns -- --conns 10000`.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinSet;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Command-line settings (all optional).
struct Args {
    conns: usize,
    /// Connections being opened (and their request answered) at once.
    concurrency: usize,
    bin: PathBuf,
    /// How long to wait, once all connections are idle, before reading the RSS.
    settle: Duration,
    /// Open the connections without sending a request (what an accepted connection
    /// costs before hyper has read anything).
    no_request: bool,
}

fn args() -> Result<Args> {
    let mut args = Args {
        conns: 10_000,
        concurrency: 200,
        bin: PathBuf::from("target/release/sluicegate"),
        settle: Duration::from_secs(2),
        no_request: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--conns" => args.conns = value()?.parse()?,
            "--concurrency" => args.concurrency = value()?.parse::<usize>()?.max(1),
            "--bin" => args.bin = value()?.into(),
            "--settle-secs" => args.settle = Duration::from_secs(value()?.parse()?),
            "--no-request" => args.no_request = true,
            other => {
                return Err(format!(
                    "unknown argument {other} (--conns N, --concurrency N, --bin PATH, --settle-secs S, --no-request)"
                )
                .into())
            }
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let upstream_conns = Arc::new(AtomicUsize::new(0));
    let backend = serve_backend(Arc::clone(&upstream_conns)).await?;

    let dir = std::env::temp_dir().join(format!("sluicegate-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listen = free_port().await?;
    let cfg = dir.join("routes.toml");
    std::fs::write(&cfg, config(listen, backend))?;

    let mut gateway = Command::new(&args.bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", args.bin.display()))?;
    let pid = gateway.id().ok_or("the gateway exited at once")?;
    let outcome = measure(&args, pid, listen, &upstream_conns).await;
    // Kill the child we started, whatever happened; then tidy up.
    gateway.kill().await?;
    std::fs::remove_dir_all(&dir)?;
    outcome
}

async fn measure(
    args: &Args,
    pid: u32,
    listen: SocketAddr,
    upstream_conns: &AtomicUsize,
) -> Result<()> {
    wait_listening(listen).await?;
    // Warm-up: the first request allocates what every later one reuses (the
    // snapshot's lazily built parts, an upstream connection, allocator arenas).
    drop(open_and_request(listen).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;

    let started = tokio::time::Instant::now();
    let mut conns = Vec::with_capacity(args.conns);
    let mut tasks = JoinSet::new();
    let mut next = 0;
    while conns.len() < args.conns {
        while next < args.conns && tasks.len() < args.concurrency {
            if args.no_request {
                tasks.spawn(async move { Ok(TcpStream::connect(listen).await?) });
            } else {
                tasks.spawn(open_and_request(listen));
            }
            next += 1;
        }
        match tasks.join_next().await {
            Some(done) => conns.push(done??),
            None => break,
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(args.settle).await;
    let after = rss_kib(pid)?;
    let still_open = conns.iter().filter(|c| is_open(c)).count();

    let n = conns.len();
    let delta = after.saturating_sub(before);
    let each = if args.no_request {
        "no request"
    } else {
        "one request each"
    };
    println!("gateway pid {pid}, {n} client connections opened in {opening:.1?}, {each}");
    println!("  still open after {:?} idle: {still_open}", args.settle);
    println!(
        "  upstream connections the gateway opened: {}",
        upstream_conns.load(Ordering::Relaxed)
    );
    println!(
        "  VmRSS before: {:.1} MiB, with {n} idle: {:.1} MiB",
        mib(before),
        mib(after)
    );
    println!(
        "  cost: {:.1} MiB in all, {:.2} KiB per connection",
        mib(delta),
        delta as f64 / n.max(1) as f64
    );
    if let Some(hwm) = status_kib(pid, "VmHWM:")? {
        println!("  VmHWM (peak RSS): {:.1} MiB", mib(hwm));
    }
    Ok(())
}

/// The tiny backend: answers every request head with `200 ok`, keep-alive.
async fn serve_backend(accepted: Arc<AtomicUsize>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                loop {
                    // Requests carry no body: a head ends at the blank line.
                    match head_end(&buf) {
                        Some(end) => {
                            buf.drain(..end);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                        None => match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Connects to the gateway, sends one GET and reads its whole response.
async fn open_and_request(gateway: SocketAddr) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(gateway).await?;
    stream
        .write_all(b"GET /idle HTTP/1.1\r\nhost: idle.test\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("the gateway closed before answering".into());
        }
    };
    let head = std::str::from_utf8(&buf[..end])?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected answer: {head}").into());
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("the answer has no content-length")?;
    while buf.len() < end + length {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("the gateway closed mid-body".into());
        }
    }
    Ok(stream)
}

/// Length of the request/response head in `buf` (through the blank line), if whole.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Whether the gateway still holds the connection open (nothing to read, no EOF).
fn is_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the gateway is not listening on {addr} after 10 s").into())
}

/// A port nobody listens on right now (the gateway binds it a moment later).
async fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

fn config(listen: SocketAddr, backend: SocketAddr) -> String {
    // Like benches/proxy/candidate.sh: metrics on (an [admin] listener), no access
    // log; default client limits (idle_timeout 60 s is longer than the run).
    format!(
        r#"[listen]
http = "{listen}"

[admin]
listen = "127.0.0.1:0"

[log]
access = "off"

[[pools]]
name = "idle"
backends = [{{ addr = "{backend}" }}]

[[routes]]
name = "all"
split = [{{ pool = "idle", weight = 1 }}]
"#
    )
}

fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")?.ok_or_else(|| "no VmRSS in /proc/<pid>/status".into())
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> Result<Option<u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
