//! Where documents go: stdout and/or appended files, one line per event,
//! written per event so a crash loses nothing already reported.
//!
//! A file output can rotate itself by size (`--output-max-bytes`): the
//! file is renamed to `PATH.1` (older ones shift to `.2`, ... up to
//! `--output-keep`) and a new one started, so a DaemonSet's hostPath never
//! fills the node's disk. Output files are regular files only, never
//! reached through a symbolic link at their path, and created 0640 (see
//! `file`).
//!
//! Each output goes at its own pace: [`Sink::write`] only hands the line
//! to each output's backlog, and a thread per output writes it from there.
//! A record leaves the kernel's ring buffer once its line is handed over;
//! with `--pin-dir`, once some output has written it (see [`Receipt`]).
//! An output that stalls or fails costs neither the collector (its ring
//! buffer, metrics and signals) nor the other outputs:
//!
//! - Stalled (a pipe whose reader stopped reading, a disk that hangs):
//!   lines wait for it in memory, in order, up to [`BACKLOG_LIMIT_BYTES`];
//!   lines past that are dropped and [`Sink::write`] answers
//!   [`SinkError::Dropped`] so they can be counted. A write that has waited
//!   [`STALLED_AFTER`] is logged once, and once more when the output has
//!   caught up.
//! - Closed by its reader (`EPIPE`, as in `oom-collector | head -1`): the
//!   output is dropped with one log line. When it was the last one,
//!   [`Sink::write`] answers [`SinkError::Closed`] and the collector stops.
//! - A write that fails (a full disk, ...): the line and every later one
//!   wait as for a stalled output. The output is retried when a new line
//!   comes and every [`RETRY_INTERVAL`]; the failure is logged once when it
//!   starts and once when the output recovers. A line a full disk cut
//!   short is cut off the file again, so files only ever hold whole lines.
//! - A file moved or deleted underneath (logrotate without
//!   `copytruncate`, `rm`): before each line the path is compared with the
//!   open file (device and inode); when they differ the path is opened
//!   anew, so the line lands in a new file there.
//! - At exit ([`Sink::finish`]) each output gets until [`FINISH_TIMEOUT`]
//!   to write what waits for it; the lines still waiting then are given
//!   up and reported as [`SinkError::Unwritten`], so a stalled output
//!   cannot hold up a SIGTERM, and [`Sink::finish_reporting`] writes a
//!   report of them to the outputs that kept up.
//!
//! [`Sink`] fans each line out to its outputs (`outputs`), each with the
//! bounded `backlog` its `writer` thread writes; `file` writes, follows and
//! rotates a file output.

mod backlog;
mod file;
mod line;
mod outputs;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    io::{self, IsTerminal},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::warn;

use self::{
    file::FileOutput,
    outputs::{Output, Outputs},
    writer::{Destination, Shared},
};
use crate::document::Document;

/// Memory an output's unwritten lines may take: some 4,000 kill events.
pub const BACKLOG_LIMIT_BYTES: usize = 8 << 20;

/// How often an output that failed is tried again when no event comes.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long one write may wait before the output is logged as stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// How long, at exit, the outputs get to write what waits for them.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `pretty` when the only output is stdout and it is a terminal;
    /// `json` for pipes, files and a pod's log.
    Auto,
    /// One ECS JSON object per line (NDJSON), for Filebeat and friends.
    Json,
    /// One readable line per event, for a person at a terminal.
    Pretty,
}

impl Format {
    /// What [`Format::Auto`] stands for with these outputs (see
    /// [`Sink::open`]) and this stdout; the others stand for themselves.
    pub fn resolve(self, outputs: &[PathBuf], stdout_is_terminal: bool) -> Format {
        let only_stdout = outputs.iter().all(|output| output.as_os_str() == STDOUT);
        match self {
            Format::Auto if only_stdout && stdout_is_terminal => Format::Pretty,
            Format::Auto => Format::Json,
            other => other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open --output {path} for appending{}", open_hint(.source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Nothing is left to write to.
    #[error("{output} was closed by its reader, and it was the only output")]
    Closed { output: String },
    /// The event was written to the other outputs (if any), but these could
    /// neither take it nor keep it for later.
    #[error("an event could not be written to {} nor kept for later", outputs.join(", "))]
    Dropped { outputs: Vec<String> },
    #[error("{lines} event(s) kept in memory for {output} could not be written before exit")]
    Unwritten { output: String, lines: usize },
    #[error("cannot start the thread that writes to {output}")]
    Writer {
        output: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot fsync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn open_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            " (is the directory there and writable?)"
        }
        _ => "",
    }
}

/// Size-based rotation of file outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once a file reaches this size; `None`: never.
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`).
    pub keep: u32,
}

/// The `--output` value that means standard output.
pub const STDOUT: &str = "-";

pub struct Sink {
    /// Shared with the task that watches for stalled and closed outputs.
    outputs: Arc<Mutex<Outputs>>,
    format: Format,
    line: Vec<u8>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    finished: bool,
    /// Told by every output's writer after each line it wrote.
    progress: watch::Sender<()>,
    /// Where each output that kept the last line will have written it.
    kept_at: Vec<(Arc<Shared>, u64)>,
    /// Once asked for: the receipt of the last line taken.
    receipts: Option<Receipts>,
}

/// Tells when a line has been written whole by at least one output.
pub struct Receipt {
    /// Each output that kept the line, and the count of lines it will have
    /// written once it has written this one.
    at: Vec<(Arc<Shared>, u64)>,
    progress: watch::Receiver<()>,
}

impl Receipt {
    /// Whether an output has written the line whole, or none ever will:
    /// none kept it (each dropped it, and said so), or each that kept it
    /// has been closed by its reader since.
    pub fn is_settled(&self) -> bool {
        let mut open = false;
        for (output, position) in &self.at {
            let state = output.lock();
            if state.written_lines >= *position {
                return true;
            }
            open |= !state.closed;
        }
        !open
    }

    /// Resolves once [`Receipt::is_settled`].
    pub async fn settled(&mut self) {
        loop {
            self.progress.borrow_and_update();
            if self.is_settled() {
                return;
            }
            if self.progress.changed().await.is_err() {
                // The sink is gone; nothing will be written.
                return;
            }
        }
    }
}

/// The receipt of the last line the sink took, for whoever hands it lines
/// through a closure it cannot get an answer back from (the pipeline).
#[derive(Clone, Default)]
pub struct Receipts(Arc<Mutex<Option<Receipt>>>);

impl Receipts {
    /// The last line's receipt, once.
    pub fn take(&self) -> Option<Receipt> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Sink {
    pub fn stdout(format: Format) -> Result<Self, SinkError> {
        let never = Rotation {
            max_bytes: None,
            keep: 0,
        };
        Self::open(&[PathBuf::from(STDOUT)], format, never)
    }

    /// Writes to each of `outputs`: a file path (appended to, created if
    /// needed) or [`STDOUT`]. No outputs: stdout.
    pub fn open(
        outputs: &[PathBuf],
        format: Format,
        rotation: Rotation,
    ) -> Result<Self, SinkError> {
        if outputs.is_empty() {
            return Self::stdout(format);
        }
        let format = format.resolve(outputs, io::stdout().is_terminal());
        let list = outputs
            .iter()
            .map(|output| {
                let destination = if output.as_os_str() == STDOUT {
                    // A descriptor of its own, so its writer needs no lock
                    // on std's stdout.
                    let fd = rustix::io::fcntl_dupfd_cloexec(io::stdout(), 0).map_err(|error| {
                        SinkError::Writer {
                            output: "stdout".into(),
                            source: error.into(),
                        }
                    })?;
                    Destination::Stdout(fd)
                } else {
                    Destination::File(FileOutput::open(output)?)
                };
                Output::start(destination, rotation)
            })
            .collect::<Result<_, SinkError>>()?;
        Ok(Self::new(list, format))
    }

    fn new(list: Vec<Output>, format: Format) -> Self {
        let progress = watch::Sender::new(());
        for output in &list {
            output.report_progress_to(&progress);
        }
        let outputs = Arc::new(Mutex::new(Outputs { list }));
        // Outside a runtime (unit tests) nothing watches; writes still go.
        let watcher = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(watch_every(RETRY_INTERVAL, Arc::downgrade(&outputs))));
        Self {
            outputs,
            format,
            line: Vec::with_capacity(4096),
            watcher,
            finished: false,
            progress,
            kept_at: Vec::new(),
            receipts: None,
        }
    }

    /// How long every output has been blocked in its current write, asked
    /// at any time from any thread; `None` while some output is not (or
    /// once the sink is gone).
    pub fn blocked(&self) -> impl Fn() -> Option<Duration> + Send + Sync + 'static {
        let outputs = Arc::downgrade(&self.outputs);
        move || {
            let outputs = outputs.upgrade()?;
            let outputs = lock(&outputs);
            outputs.blocked()
        }
    }

    /// Per output: its name, writes it refused and lines it dropped so
    /// far, asked at any time from any thread.
    pub fn failures(&self) -> impl Fn() -> Vec<(String, u64, u64)> + Send + Sync + 'static {
        let outputs = Arc::downgrade(&self.outputs);
        move || {
            let Some(outputs) = outputs.upgrade() else {
                return Vec::new();
            };
            let outputs = lock(&outputs);
            outputs
                .failures()
                .into_iter()
                .map(|(name, f)| (name, f.write_errors, f.lines_dropped))
                .collect()
        }
    }

    /// From now on, keeps a [`Receipt`] of each line taken, the last one
    /// in the [`Receipts`] returned.
    pub fn receipts(&mut self) -> Receipts {
        self.receipts.get_or_insert_with(Receipts::default).clone()
    }

    /// Hands one document, as one line, to every output; never waits for
    /// an output to write it.
    ///
    /// Errs only with [`SinkError::Closed`] (stop: nothing is left to write
    /// to) or [`SinkError::Dropped`] (count it: the line is lost for some
    /// output).
    pub fn write(&mut self, document: &Document) -> Result<(), SinkError> {
        let line = self.line_of(document);
        let written = lock(&self.outputs).write(&line, &mut self.kept_at);
        if let Some(receipts) = &self.receipts {
            let receipt = Receipt {
                at: self.kept_at.clone(),
                progress: self.progress.subscribe(),
            };
            *receipts.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(receipt);
        }
        written
    }

    /// Writes what waits for each output, within [`FINISH_TIMEOUT`], and
    /// makes it durable (fsync for regular files). Lines that cannot be
    /// written by then are given up, and reported. Blocks meanwhile.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        self.finish_reporting(|_, _| None)
    }

    /// [`Sink::finish`], and when some outputs could not write everything
    /// in time, `report(lines, outputs)` (the lines they still held, and
    /// which) gives a document to write to the other outputs, so the loss
    /// is on record where the events are.
    pub fn finish_reporting(
        &mut self,
        report: impl FnOnce(u64, &[String]) -> Option<Document>,
    ) -> Result<(), SinkError> {
        self.finished = true;
        let outputs = Arc::clone(&self.outputs);
        let mut outputs = lock(&outputs);
        let behind = outputs.catch_up(Instant::now() + FINISH_TIMEOUT);
        let given_up: Vec<String> = behind.iter().map(|(name, _)| name.clone()).collect();
        let lines = behind.iter().map(|(_, lines)| *lines as u64).sum();
        if let Some(document) = report(lines, &given_up).filter(|_| lines > 0) {
            let line = self.line_of(&document);
            outputs.write_except(&line, &given_up);
        }
        let mut errors = outputs
            .finish(Instant::now() + FINISH_TIMEOUT, &given_up)
            .into_iter();
        let first_error = errors.next();
        for error in errors {
            warn!("{error}");
        }
        first_error.map_or(Ok(()), Err)
    }

    fn line_of(&mut self, document: &Document) -> Arc<[u8]> {
        self.line.clear();
        match self.format {
            Format::Json | Format::Auto => serde_json::to_writer(&mut self.line, document)
                .expect("documents serialize to JSON"),
            Format::Pretty => self.line.extend_from_slice(document.pretty().as_bytes()),
        }
        self.line.push(b'\n');
        Arc::from(&self.line[..])
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        if !self.finished {
            if let Err(error) = self.finish() {
                warn!("{error}");
            }
        }
    }
}

fn lock(outputs: &Mutex<Outputs>) -> MutexGuard<'_, Outputs> {
    // Outputs stay consistent between lines, so a panic mid-line in another
    // holder leaves nothing worse than that line unwritten.
    outputs.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn watch_every(period: Duration, outputs: Weak<Mutex<Outputs>>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(outputs) = outputs.upgrade() else {
            return;
        };
        lock(&outputs).watch(STALLED_AFTER);
    }
}
