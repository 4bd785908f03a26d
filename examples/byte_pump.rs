//! The kernel's floor for a proxy on this machine: a byte pump with no HTTP in it.
//!
//! Each client connection gets its own upstream connection (the upstreams taken in
//! turn), and bytes are copied both ways as they come: one `recv` and one `send` per
//! message and side, from one thread on mio's edge-triggered epoll. It parses
//! nothing, picks nothing and records nothing, so its CPU per request is what the
//! kernel's loopback TCP costs plus about the least user-space work any proxy can do.
//! `compare-proxies.sh` runs it as a candidate beside nginx (benches/JOURNAL.md,
//! eleventh pass): how far under nginx *any* proxy on these sockets can get.
//!
//! It speaks the candidate contract of `../shared/bench/compare-proxies.sh`:
//! `BENCH_LISTEN` (default 127.0.0.1:8090) and `BENCH_UPSTREAMS` (default
//! 127.0.0.1:9001,127.0.0.1:9002). It is a measuring tool, not a proxy: no timeouts, no
//! limits, and an upstream that cannot be reached closes the client connection.
//!
//! `cargo build --release --example byte_pump`, then
//! `../shared/bench/compare-proxies.sh --candidate target/release/examples/byte_pump
//! --candidate-port 8090 --candidate-name byte_pump`.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 16 * 1024;

/// Bytes read from one side and not yet written to the other.
struct Pending {
    buf: Box<[u8; BUF]>,
    start: usize,
    end: usize,
}

impl Pending {
    fn new() -> Self {
        Pending {
            buf: Box::new([0; BUF]),
            start: 0,
            end: 0,
        }
    }
}

/// A client connection and the upstream connection that serves it.
struct Pair {
    sides: [TcpStream; 2],
    /// `to[i]`: bytes on their way to side `i`.
    to: [Pending; 2],
}

enum Flow {
    Open,
    Closed,
}

/// Writes what waits for side `to`; true once all of it is out, false when the
/// socket is full (its writable edge resumes the copy).
fn flush(pair: &mut Pair, to: usize) -> io::Result<bool> {
    let pending = &mut pair.to[to];
    while pending.start < pending.end {
        match pair.sides[to].write(&pending.buf[pending.start..pending.end]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pending.start += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Moves what side `from` has to the other side, until the reader has no more (a
/// short read drains an edge-triggered socket, as tokio and nginx assume: no
/// `recv` that only says EAGAIN) or the writer is full.
fn pump(pair: &mut Pair, from: usize) -> io::Result<Flow> {
    let to = 1 - from;
    loop {
        if !flush(pair, to)? {
            return Ok(Flow::Open);
        }
        match pair.sides[from].read(&mut pair.to[to].buf[..]) {
            Ok(0) => return Ok(Flow::Closed),
            Ok(n) => {
                pair.to[to].start = 0;
                pair.to[to].end = n;
                if n < BUF {
                    return flush(pair, to).map(|_| Flow::Open);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The pair for a new client: its upstream connection made (a blocking connect on
/// loopback: accepts are rare under keep-alive) and both sides set up; `None` when
/// any of that fails.
fn open_pair(client: TcpStream, upstream: SocketAddr) -> Option<Pair> {
    let std_up = std::net::TcpStream::connect(upstream).ok()?;
    std_up.set_nonblocking(true).ok()?;
    let up = TcpStream::from_std(std_up);
    client.set_nodelay(true).ok()?;
    up.set_nodelay(true).ok()?;
    Some(Pair {
        sides: [client, up],
        to: [Pending::new(), Pending::new()],
    })
}

/// Puts `pair` in the first free slot and registers its sides as
/// `Token(2 * slot + side)` (side 0 the client, 1 the upstream).
fn insert(pairs: &mut Vec<Option<Pair>>, poll: &Poll, mut pair: Pair) -> io::Result<()> {
    let slot = match pairs.iter().position(Option::is_none) {
        Some(free) => free,
        None => {
            pairs.push(None);
            pairs.len() - 1
        }
    };
    for (side, stream) in pair.sides.iter_mut().enumerate() {
        poll.registry().register(
            stream,
            Token(2 * slot + side),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    pairs[slot] = Some(pair);
    Ok(())
}

fn addr(var: &str, default: &str) -> Result<Vec<SocketAddr>, Box<dyn Error>> {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    text.split(',')
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|e| format!("{var}: '{a}' is not an address: {e}").into())
        })
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let listen = *addr("BENCH_LISTEN", "127.0.0.1:8090")?
        .first()
        .ok_or("BENCH_LISTEN is empty")?;
    let upstreams = addr("BENCH_UPSTREAMS", "127.0.0.1:9001,127.0.0.1:9002")?;
    let mut listener = TcpListener::bind(listen)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    // Indexed by slot; see `insert` for the tokens.
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut next_upstream = 0;
    eprintln!("byte_pump: {listen} -> {upstreams:?}");
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    let (client, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    };
                    let upstream = upstreams[next_upstream % upstreams.len()];
                    next_upstream += 1;
                    // A client or upstream that fails here is dropped, not the pump.
                    if let Some(pair) = open_pair(client, upstream) {
                        insert(&mut pairs, &poll, pair)?;
                    }
                }
                continue;
            }
            let slot = event.token().0 / 2;
            let side = event.token().0 % 2;
            let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let mut flow = Ok(Flow::Open);
            if event.is_readable() || event.is_read_closed() {
                flow = pump(pair, side);
            }
            if matches!(flow, Ok(Flow::Open)) && event.is_writable() {
                // What waited for this side, and what its peer may still hold.
                flow = pump(pair, 1 - side);
            }
            if !matches!(flow, Ok(Flow::Open)) {
                if let Some(mut pair) = pairs[slot].take() {
                    for stream in &mut pair.sides {
                        let _ = poll.registry().deregister(stream);
                    }
                }
            }
        }
    }
}
