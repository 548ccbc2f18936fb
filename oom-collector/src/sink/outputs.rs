//! The outputs a line fans out to: each writes it, or keeps it in its
//! backlog while it cannot, and says what became of it.

use std::{fmt, io};

use tracing::{info, warn};

use super::{
    backlog::Backlog,
    file::FileOutput,
    line::{write_from, Failure},
    Rotation, SinkError, BACKLOG_LIMIT_BYTES, RETRY_INTERVAL,
};

pub(super) struct Outputs {
    pub(super) list: Vec<Output>,
    pub(super) rotation: Rotation,
}

impl Outputs {
    pub(super) fn write(&mut self, line: &[u8]) -> Result<(), SinkError> {
        let mut dropped_by = Vec::new();
        for output in &mut self.list {
            if output.write(line, self.rotation) == Outcome::Dropped {
                dropped_by.push(output.destination.to_string());
            }
        }
        self.forget_closed()?;
        if dropped_by.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Dropped {
                outputs: dropped_by,
            })
        }
    }

    pub(super) fn retry(&mut self) {
        for output in &mut self.list {
            output.retry(self.rotation);
        }
        // The last output closing is answered on the next write, which is
        // where the collector can stop.
        let _ = self.forget_closed();
    }

    /// Drops outputs closed by their readers, but never the last one: that
    /// one stays, closed, and every write says so.
    fn forget_closed(&mut self) -> Result<(), SinkError> {
        while let Some(at) = self.list.iter().position(|o| o.closed) {
            if self.list.len() == 1 {
                return Err(SinkError::Closed {
                    output: self.list[at].destination.to_string(),
                });
            }
            let closed = self.list.remove(at);
            warn!(
                output = %closed.destination,
                "{} was closed by its reader; writing to the other outputs only",
                closed.destination
            );
        }
        Ok(())
    }
}

/// What became of one line at one output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Written,
    Kept,
    Dropped,
    Closed,
}

pub(super) struct Output {
    pub(super) destination: Destination,
    pub(super) backlog: Backlog,
    /// Since the first failed write, until the backlog is written.
    trouble: Option<Trouble>,
    /// The reader went away (`EPIPE`): nothing will be written here again.
    closed: bool,
}

#[derive(Default)]
struct Trouble {
    kept: u64,
    dropped: u64,
}

impl Output {
    pub(super) fn new(destination: Destination) -> Self {
        Self::with_backlog(destination, BACKLOG_LIMIT_BYTES)
    }

    pub(super) fn with_backlog(destination: Destination, limit_bytes: usize) -> Self {
        Self {
            destination,
            backlog: Backlog::new(limit_bytes),
            trouble: None,
            closed: false,
        }
    }

    fn write(&mut self, line: &[u8], rotation: Rotation) -> Outcome {
        // The lines before this one go first.
        self.retry(rotation);
        if self.closed {
            return Outcome::Closed;
        }
        if self.backlog.is_empty() {
            let Err(failure) = self.destination.write_line(line, 0, rotation) else {
                return Outcome::Written;
            };
            self.failed(&failure.error);
            if self.closed {
                return Outcome::Closed;
            }
            self.backlog.push_partly_written(line, failure.written);
        } else if !self.backlog.push(line) {
            let trouble = self.trouble.get_or_insert_with(Trouble::default);
            if trouble.dropped == 0 {
                warn!(
                    output = %self.destination,
                    limit_bytes = self.backlog.limit_bytes,
                    "the events waiting for this output fill their memory; \
                     dropping new ones until it can be written again"
                );
            }
            trouble.dropped += 1;
            return Outcome::Dropped;
        }
        self.trouble.get_or_insert_with(Trouble::default).kept += 1;
        Outcome::Kept
    }

    fn retry(&mut self, rotation: Rotation) {
        if self.closed || self.backlog.is_empty() {
            return;
        }
        let destination = &mut self.destination;
        match self
            .backlog
            .write(|line, from| destination.write_line(line, from, rotation))
        {
            Ok(()) => {
                let trouble = self.trouble.take().unwrap_or_default();
                info!(
                    output = %self.destination,
                    written = trouble.kept,
                    lost = trouble.dropped,
                    "the output can be written again; the events kept for it are written, in order"
                );
            }
            Err(error) => self.failed(&error),
        }
    }

    fn failed(&mut self, error: &io::Error) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            self.closed = true;
            self.backlog.clear();
            self.trouble = None;
        } else if self.trouble.is_none() {
            self.trouble = Some(Trouble::default());
            warn!(
                output = %self.destination,
                %error,
                limit_bytes = self.backlog.limit_bytes,
                "cannot write to this output; keeping its events in memory and retrying \
                 every {} s",
                RETRY_INTERVAL.as_secs()
            );
        }
    }

    pub(super) fn finish(&mut self) -> Result<(), SinkError> {
        if !self.backlog.is_empty() {
            let lines = self.backlog.len();
            self.backlog.clear();
            return Err(SinkError::Unwritten {
                output: self.destination.to_string(),
                lines,
            });
        }
        match &self.destination {
            Destination::File(file) => file.sync(),
            // Lines go to stdout unbuffered: nothing to flush.
            Destination::Stdout => Ok(()),
        }
    }
}

pub(super) enum Destination {
    Stdout,
    File(FileOutput),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(file) => write!(f, "{}", file.path.display()),
        }
    }
}

impl Destination {
    /// Writes `line` from byte `from` on.
    fn write_line(&mut self, line: &[u8], from: usize, rotation: Rotation) -> Result<(), Failure> {
        match self {
            // Straight to the descriptor: std's buffer would keep part of a
            // line it could not write and send it again later.
            Self::Stdout => write_from(line, from, |bytes| {
                rustix::io::write(io::stdout(), bytes).map_err(io::Error::from)
            }),
            Self::File(file) => file.write_line(line, from, rotation),
        }
    }
}
