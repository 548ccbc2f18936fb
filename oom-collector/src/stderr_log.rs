//! The collector's own log on stderr, written by a thread of its own.
//!
//! In a pod, stdout and stderr go to one log pipe that the container
//! runtime reads; when that reader stalls and the pipe is full, a write to
//! stderr blocks. The collector formats each log line and hands it to a
//! bounded queue; a thread writes the queue to stderr. While stderr takes
//! nothing, the collector goes on, lines past the queue's bound are
//! dropped, and the next line that gets through says how many were.
//!
//! This is what `tracing-appender`'s non-blocking writer does, but that
//! one prints to stdout when it cannot stop its thread in time, and stdout
//! carries the collector's JSON lines.

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines queued for stderr at most; beyond, lines are dropped.
const QUEUED_LINES: usize = 4096;

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

/// Makes the writers `tracing` formats each log line into.
#[derive(Clone)]
pub struct StderrLog {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl StderrLog {
    /// Starts the thread that writes to stderr.
    pub fn start() -> io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(QUEUED_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        thread::Builder::new()
            .name("stderr-log".into())
            .spawn(move || write_lines(&lines, &counted))?;
        Ok(Self { queue, dropped })
    }

    /// Waits until what was logged so far is written, for at most
    /// `timeout`: at exit, a stalled stderr must not keep the collector.
    pub fn flush(&self, timeout: Duration) {
        let (done, written) = mpsc::sync_channel(1);
        if self.queue.try_send(Message::Flush(done)).is_ok() {
            let _ = written.recv_timeout(timeout);
        }
    }
}

fn write_lines(lines: &Receiver<Message>, dropped: &AtomicU64) {
    // stderr is locked for one line at a time, once it is here: the
    // collector's own `eprintln!` (a command's result) takes the same lock.
    while let Ok(message) = lines.recv() {
        match message {
            Message::Line(line) => {
                let mut stderr = io::stderr().lock();
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        stderr,
                        "oom-collector: {lost} log line(s) dropped while stderr took nothing"
                    );
                }
                let _ = stderr.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = io::stderr().flush();
                let _ = done.try_send(());
            }
        }
    }
}

/// One log line as `tracing` writes it, queued when dropped.
pub struct LogLine<'a> {
    log: &'a StderrLog,
    line: Vec<u8>,
}

impl Write for LogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match self.log.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.log.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for StderrLog {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            log: self,
            line: Vec::new(),
        }
    }
}
