//! The access log's writer: a bounded lock-free queue the request path pushes lines
//! into, and one thread that writes them to stdout in batches.
//!
//! A request never makes a system call or wakes a thread for its line: it pushes
//! the formatted bytes into an `ArrayQueue` (or counts a drop when it is full).
//! The writer thread wakes every [`FLUSH_INTERVAL`], takes every queued line into
//! one buffer and writes it with a few `write(2)` calls. Lines therefore reach
//! stdout at most one interval late; the cost per request is one allocation and one
//! compare-and-swap. (A channel that wakes its reader per line, as
//! `tracing-appender` does, costs a futex wake and a context switch per request on
//! a busy gateway.) [`WriterGuard`] stops the thread and writes what is left.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tracing_subscriber::fmt::MakeWriter;

/// How often the writer thread drains the queue.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// What the request path and the writer thread share.
#[derive(Debug)]
struct Shared {
    queue: ArrayQueue<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The request side: a `MakeWriter` for the `tracing` fmt layer. Each event's line
/// arrives in one `write` call and is queued as a whole.
#[derive(Clone, Debug)]
pub struct QueueWriter {
    shared: Arc<Shared>,
}

impl QueueWriter {
    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.shared.queue.push(buf.to_vec()).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // Dropped or queued, the caller must not wait or retry.
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Stops the writer thread and writes the remaining lines when dropped.
#[derive(Debug)]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                eprintln!("sluicegate: the access-log writer thread panicked");
            }
        }
    }
}

/// Starts the writer thread on `out`; `capacity` lines may wait at most.
pub fn start<W: Write + Send + 'static>(
    out: W,
    capacity: usize,
) -> io::Result<(QueueWriter, WriterGuard)> {
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(capacity.max(1)),
        dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("sluicegate-access-log".into())
        .spawn(move || run(&worker, out))?;
    Ok((
        QueueWriter {
            shared: Arc::clone(&shared),
        },
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer loop: drain, write, sleep; a last drain after `stop`.
fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        while let Some(line) = shared.queue.pop() {
            batch.extend_from_slice(&line);
        }
        if !batch.is_empty() {
            // Nobody to report a write error to but stderr; the lines are lost.
            if let Err(err) = out.write_all(&batch).and_then(|()| out.flush()) {
                eprintln!("sluicegate: cannot write the access log: {err}");
            }
            batch.clear();
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(FLUSH_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A `Write` into a shared buffer (tests only).
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_queued_line_is_written_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (mut w, guard) = start(sink.clone(), 1000).unwrap();
        for i in 0..500 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 500);
        assert_eq!(text.lines().last(), Some("line 499"));
        assert_eq!(w.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(2),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        // No writer thread: nothing drains.
        let mut w = QueueWriter { shared };
        for _ in 0..5 {
            assert_eq!(w.write(b"x\n").unwrap(), 2);
        }
        assert_eq!(w.dropped(), 3);
    }
}
