//! Where documents go: stdout and/or appended files, one line per event,
//! written per event so a crash loses nothing already reported.
//!
//! A file output can rotate itself by size (`--output-max-bytes`): the
//! file is renamed to `PATH.1` (older ones shift to `.2`, ... up to
//! `--output-keep`) and a new one started, so a DaemonSet's hostPath never
//! fills the node's disk.
//!
//! An output that fails costs neither the collector nor the other outputs:
//!
//! - Closed by its reader (`EPIPE`, as in `oom-collector | head -1`): the
//!   output is dropped with one log line. When it was the last one,
//!   [`Sink::write`] answers [`SinkError::Closed`] and the collector stops.
//! - A write that fails (a full disk, ...): that line and every later one
//!   wait for the output in memory, in order, up to [`BACKLOG_LIMIT_BYTES`];
//!   lines past that are dropped and [`Sink::write`] answers
//!   [`SinkError::Dropped`] so they can be counted. The output is retried
//!   before each new line and every [`RETRY_INTERVAL`]; the failure is
//!   logged once when it starts and once when the output recovers. A line
//!   a full disk cut short is cut off the file again, so files only ever
//!   hold whole lines.
//! - A file moved or deleted underneath (logrotate without
//!   `copytruncate`, `rm`): before each line the path is compared with the
//!   open file (device and inode); when they differ the path is opened
//!   anew, so the line lands in a new file there.
//!
//! [`Sink`] fans each line out to its outputs (`outputs`), each with the
//! bounded `backlog` of lines it could not take yet; `file` writes, follows
//! and rotates a file output.

mod backlog;
mod file;
mod line;
mod outputs;
#[cfg(test)]
mod tests;

use std::{
    io,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration,
};

use tracing::warn;

use self::{
    file::FileOutput,
    outputs::{Destination, Output, Outputs},
};
use crate::document::Document;

/// Memory an output's unwritten lines may take: some 4,000 kill events.
pub const BACKLOG_LIMIT_BYTES: usize = 8 << 20;

/// How often an output that failed is tried again when no event comes.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One ECS JSON object per line (NDJSON), for Filebeat and friends.
    Json,
    /// One readable line per event, for a person at a terminal.
    Pretty,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open --output {path} for appending (is the directory there and writable?)")]
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
    #[error("cannot fsync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
    /// Shared with the task that retries failed outputs on a timer.
    outputs: Arc<Mutex<Outputs>>,
    format: Format,
    line: Vec<u8>,
    retrier: Option<tokio::task::JoinHandle<()>>,
}

impl Sink {
    pub fn stdout(format: Format) -> Self {
        let never = Rotation {
            max_bytes: None,
            keep: 0,
        };
        Self::new(vec![Output::new(Destination::Stdout)], format, never)
    }

    /// Writes to each of `outputs`: a file path (appended to, created if
    /// needed) or [`STDOUT`]. No outputs: stdout.
    pub fn open(
        outputs: &[PathBuf],
        format: Format,
        rotation: Rotation,
    ) -> Result<Self, SinkError> {
        if outputs.is_empty() {
            return Ok(Self::stdout(format));
        }
        let list = outputs
            .iter()
            .map(|output| {
                let destination = if output.as_os_str() == STDOUT {
                    Destination::Stdout
                } else {
                    Destination::File(FileOutput::open(output)?)
                };
                Ok(Output::new(destination))
            })
            .collect::<Result<_, SinkError>>()?;
        Ok(Self::new(list, format, rotation))
    }

    fn new(list: Vec<Output>, format: Format, rotation: Rotation) -> Self {
        let outputs = Arc::new(Mutex::new(Outputs { list, rotation }));
        // Outside a runtime (unit tests) outputs are retried on writes only.
        let retrier = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(retry_every(RETRY_INTERVAL, Arc::downgrade(&outputs))));
        Self {
            outputs,
            format,
            line: Vec::with_capacity(4096),
            retrier,
        }
    }

    /// Writes one document as one line, in one `write` per output.
    ///
    /// Errs only with [`SinkError::Closed`] (stop: nothing is left to write
    /// to) or [`SinkError::Dropped`] (count it: the line is lost for some
    /// output); a failed output otherwise keeps the line for later.
    pub fn write(&mut self, document: &Document) -> Result<(), SinkError> {
        self.line.clear();
        match self.format {
            Format::Json => serde_json::to_writer(&mut self.line, document)
                .expect("documents serialize to JSON"),
            Format::Pretty => self.line.extend_from_slice(document.pretty().as_bytes()),
        }
        self.line.push(b'\n');
        lock(&self.outputs).write(&self.line)
    }

    /// Tries the outputs that failed again, without a new line.
    pub fn retry(&self) {
        lock(&self.outputs).retry();
    }

    /// Writes what waits in memory if it can, and makes everything written
    /// durable (fsync for regular files). Lines that still cannot be
    /// written are given up, and reported.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        let mut outputs = lock(&self.outputs);
        outputs.retry();
        let mut first_error = None;
        for output in &mut outputs.list {
            if let Err(error) = output.finish() {
                if first_error.is_some() {
                    warn!("{error}");
                } else {
                    first_error = Some(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(retrier) = self.retrier.take() {
            retrier.abort();
        }
        let mut outputs = lock(&self.outputs);
        outputs.retry();
        for output in outputs.list.iter().filter(|o| !o.backlog.is_empty()) {
            warn!(
                output = %output.destination,
                lines = output.backlog.len(),
                "events kept in memory for this output could not be written and are lost"
            );
        }
    }
}

fn lock(outputs: &Mutex<Outputs>) -> MutexGuard<'_, Outputs> {
    // Outputs stay consistent between lines, so a panic mid-line in another
    // holder leaves nothing worse than that line unwritten.
    outputs.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn retry_every(period: Duration, outputs: Weak<Mutex<Outputs>>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(outputs) = outputs.upgrade() else {
            return;
        };
        lock(&outputs).retry();
    }
}
