//! The outputs a line fans out to: each keeps the line in its backlog, for
//! its own writer thread, or says it could not.

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::warn;

use super::{
    writer::{Destination, Failures, Shared, Trouble},
    Rotation, SinkError, BACKLOG_LIMIT_BYTES,
};

pub(super) struct Outputs {
    pub(super) list: Vec<Output>,
}

impl Outputs {
    /// Hands `line` to every output, noting in `kept_at` where each that
    /// kept it will have written it; errs with the outputs that could not
    /// keep it, or when the last one is closed.
    pub(super) fn write(
        &mut self,
        line: &Arc<[u8]>,
        kept_at: &mut Vec<(Arc<Shared>, u64)>,
    ) -> Result<(), SinkError> {
        kept_at.clear();
        self.forget_closed()?;
        let mut dropped_by = Vec::new();
        for output in &self.list {
            match output.keep(line) {
                Some(position) => kept_at.push((Arc::clone(&output.shared), position)),
                None => dropped_by.push(output.shared.name.clone()),
            }
        }
        if dropped_by.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Dropped {
                outputs: dropped_by,
            })
        }
    }

    /// How long every output has been blocked in its current write;
    /// `None` while some output is not.
    pub(super) fn blocked(&self) -> Option<Duration> {
        self.list
            .iter()
            .map(|output| output.shared.lock().writing_since.map(|t| t.elapsed()))
            .try_fold(Duration::MAX, |least, blocked| Some(least.min(blocked?)))
            .filter(|_| !self.list.is_empty())
    }

    /// Each output's name and what it failed at so far.
    pub(super) fn failures(&self) -> Vec<(String, Failures)> {
        self.list
            .iter()
            .map(|output| (output.shared.name.clone(), output.shared.lock().failures))
            .collect()
    }

    /// Says which outputs stall and drops the closed ones.
    pub(super) fn watch(&mut self, stalled_after: Duration) {
        for output in &self.list {
            output.shared.warn_if_stalled(stalled_after);
        }
        // The last output closing is answered on the next write, which is
        // where the collector can stop.
        let _ = self.forget_closed();
    }

    /// Drops outputs closed by their readers, but never the last one: that
    /// one stays, closed, and every write says so.
    fn forget_closed(&mut self) -> Result<(), SinkError> {
        while let Some(at) = self.list.iter().position(|o| o.shared.lock().closed) {
            let name = &self.list[at].shared.name;
            if self.list.len() == 1 {
                return Err(SinkError::Closed {
                    output: name.clone(),
                });
            }
            warn!(
                output = %name,
                "{name} was closed by its reader; writing to the other outputs only"
            );
            self.list.remove(at);
        }
        Ok(())
    }

    /// Waits, until `deadline` at most, for every output to write what
    /// waits for it; the outputs that could not, and how many lines each
    /// still holds.
    pub(super) fn catch_up(&self, deadline: Instant) -> Vec<(String, usize)> {
        self.list
            .iter()
            .filter_map(|output| {
                let waiting = output.caught_up(deadline);
                (waiting > 0).then(|| (output.shared.name.clone(), waiting))
            })
            .collect()
    }

    /// Hands `line` to the outputs not named in `except`.
    pub(super) fn write_except(&self, line: &Arc<[u8]>, except: &[String]) {
        for output in &self.list {
            if !except.contains(&output.shared.name) {
                let _ = output.keep(line);
            }
        }
    }

    /// Lets each writer write what is left and sync, waiting until
    /// `deadline` at most; gives up at once on the outputs in `given_up`.
    /// Errs for each output that could not.
    pub(super) fn finish(&mut self, deadline: Instant, given_up: &[String]) -> Vec<SinkError> {
        for output in &self.list {
            output.shared.lock().finishing = true;
            output.shared.work.notify_one();
        }
        self.list
            .iter()
            .filter_map(|output| {
                let now = given_up.contains(&output.shared.name);
                output
                    .finished(if now { Instant::now() } else { deadline })
                    .err()
            })
            .collect()
    }
}

/// One output: the backlog it shares with its writer thread.
pub(super) struct Output {
    shared: Arc<Shared>,
}

impl Output {
    pub(super) fn start(destination: Destination, rotation: Rotation) -> Result<Self, SinkError> {
        Self::start_with_backlog(destination, rotation, BACKLOG_LIMIT_BYTES)
    }

    pub(super) fn start_with_backlog(
        destination: Destination,
        rotation: Rotation,
        limit_bytes: usize,
    ) -> Result<Self, SinkError> {
        let name = destination.to_string();
        let shared = Arc::new(Shared::new(name.clone(), limit_bytes));
        let writer = Arc::clone(&shared);
        // Never joined: a writer blocked for good at exit must not hold the
        // collector up, and ends with the process.
        thread::Builder::new()
            .name("oom-output".into())
            .spawn(move || writer.write_all(destination, rotation))
            .map_err(|source| SinkError::Writer {
                output: name,
                source,
            })?;
        Ok(Self { shared })
    }

    /// Keeps `line` for the writer: the count of lines this output will
    /// have written once it has written this one. `None` when the backlog
    /// is full; `Some(u64::MAX)`, never reached, when the output is closed.
    fn keep(&self, line: &Arc<[u8]>) -> Option<u64> {
        let mut state = self.shared.lock();
        if state.closed {
            return Some(u64::MAX);
        }
        if !state.backlog.push(line) {
            let limit_bytes = state.backlog.limit_bytes;
            let trouble = state.trouble.get_or_insert_with(Trouble::default);
            if trouble.dropped == 0 {
                warn!(
                    output = %self.shared.name,
                    limit_bytes,
                    "the events waiting for this output fill their memory; \
                     dropping new ones until it can be written again"
                );
            }
            trouble.dropped += 1;
            state.failures.lines_dropped += 1;
            return None;
        }
        if let Some(trouble) = &mut state.trouble {
            trouble.kept += 1;
        }
        state.kept_lines += 1;
        let position = state.kept_lines;
        drop(state);
        self.shared.work.notify_one();
        Some(position)
    }

    /// Tells `progress` after each line written.
    pub(super) fn report_progress_to(&self, progress: &watch::Sender<()>) {
        let _ = self.shared.progress.set(progress.clone());
    }

    /// The lines still waiting once the writer has written them all, or
    /// at `deadline`.
    fn caught_up(&self, deadline: Instant) -> usize {
        let state = self.shared.wait_until(deadline, |state| {
            state.backlog.is_empty() || state.closed || state.finished.is_some()
        });
        state.backlog.len()
    }

    /// What the writer made of the last lines, once it has ended; lines
    /// still waiting at `deadline` are given up.
    fn finished(&self, deadline: Instant) -> Result<(), SinkError> {
        let mut state = self
            .shared
            .wait_until(deadline, |state| state.finished.is_some());
        if let Some(finished) = state.finished.take() {
            return finished;
        }
        // Whatever the writer still gets through is not waited for.
        let lines = state.backlog.len();
        state.backlog.clear();
        if lines == 0 {
            warn!(
                output = %self.shared.name,
                "still syncing at exit; the last events may not be on disk"
            );
            return Ok(());
        }
        Err(SinkError::Unwritten {
            output: self.shared.name.clone(),
            lines,
        })
    }
}
