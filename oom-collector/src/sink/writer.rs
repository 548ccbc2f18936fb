//! One output's writer: a thread of its own that writes the output's
//! backlog, oldest line first, so a write that blocks (a pipe nobody
//! reads, a disk that hangs) holds up that output only, never the
//! collector's runtime nor the other outputs.

use std::{
    fmt, io,
    os::fd::OwnedFd,
    sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Instant,
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    backlog::Backlog,
    file::FileOutput,
    line::{write_from, Failure},
    Rotation, SinkError, RETRY_INTERVAL,
};

pub(super) enum Destination {
    /// A duplicate of standard output (a test gives a pipe instead).
    Stdout(OwnedFd),
    File(FileOutput),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout(_) => f.write_str("stdout"),
            Self::File(file) => write!(f, "{}", file.path.display()),
        }
    }
}

impl Destination {
    /// Writes `line` from byte `from` on; may block.
    fn write_line(&mut self, line: &[u8], from: usize, rotation: Rotation) -> Result<(), Failure> {
        match self {
            // Straight to the descriptor: std's buffer would keep part of a
            // line it could not write and send it again later.
            Self::Stdout(fd) => write_from(line, from, |bytes| write_waiting(fd, bytes)),
            Self::File(file) => file.write_line(line, from, rotation),
        }
    }

    fn sync(&self) -> Result<(), SinkError> {
        match self {
            Self::File(file) => file.sync(),
            // Lines go to stdout unbuffered: nothing to flush.
            Self::Stdout(_) => Ok(()),
        }
    }
}

/// A write that waits for room, also on a descriptor another process made
/// non-blocking (the flag belongs to the open file, which stdout shares).
fn write_waiting(fd: &OwnedFd, bytes: &[u8]) -> io::Result<usize> {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        match rustix::io::write(fd, bytes) {
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::OUT)];
                poll(&mut fds, None)?;
            }
            written => return written.map_err(io::Error::from),
        }
    }
}

/// What the sink and an output's writer share.
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) state: Mutex<State>,
    /// Wakes the writer: a new line, or the sink is finishing.
    pub(super) work: Condvar,
    /// The backlog is empty, or the writer is done (`State::finished`).
    pub(super) done: Condvar,
    /// Told after each line this output wrote, for receipts
    /// (`super::Receipt`); set once by the sink.
    pub(super) progress: OnceLock<watch::Sender<()>>,
}

pub(super) struct State {
    pub(super) backlog: Backlog,
    /// Lines kept in the backlog so far, and written whole so far: the
    /// `n`th line kept is written once `written_lines >= n`.
    pub(super) kept_lines: u64,
    pub(super) written_lines: u64,
    /// Since the first failed or stalled write, until the backlog is out.
    pub(super) trouble: Option<Trouble>,
    /// The reader went away (`EPIPE`): nothing will be written here again.
    pub(super) closed: bool,
    /// The sink is finishing: write what is left, sync, and end.
    pub(super) finishing: bool,
    /// What became of the last lines, once the writer has ended.
    pub(super) finished: Option<Result<(), SinkError>>,
    /// When the write under way started.
    pub(super) writing_since: Option<Instant>,
    pub(super) failures: Failures,
}

/// What an output has failed at since it started, for the metrics.
#[derive(Clone, Copy, Default)]
pub(super) struct Failures {
    /// Writes refused with an error (each retried).
    pub(super) write_errors: u64,
    /// Lines it could not keep in memory.
    pub(super) lines_dropped: u64,
}

#[derive(Default)]
pub(super) struct Trouble {
    pub(super) kept: u64,
    pub(super) dropped: u64,
}

impl Shared {
    pub(super) fn new(name: String, limit_bytes: usize) -> Self {
        Self {
            name,
            state: Mutex::new(State {
                backlog: Backlog::new(limit_bytes),
                kept_lines: 0,
                written_lines: 0,
                trouble: None,
                closed: false,
                finishing: false,
                finished: None,
                writing_since: None,
                failures: Failures::default(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            progress: OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that hold the lock,
        // so a panic elsewhere leaves nothing half-done here.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state once `ready` holds for it (the writer says so on `done`),
    /// or at `deadline`.
    pub(super) fn wait_until(
        &self,
        deadline: Instant,
        ready: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.done
            .wait_timeout_while(self.lock(), left, |state| !ready(state))
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// The writer's loop: the backlog's lines, oldest first, each whole,
    /// until the sink finishes or the reader goes away.
    pub(super) fn write_all(&self, mut destination: Destination, rotation: Rotation) {
        let mut state = self.lock();
        loop {
            if state.closed {
                state.finished = Some(Ok(()));
                break;
            }
            let Some((line, from)) = state.backlog.front() else {
                if state.finishing {
                    drop(state);
                    let synced = destination.sync();
                    state = self.lock();
                    state.finished = Some(synced);
                    break;
                }
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            state.writing_since = Some(Instant::now());
            drop(state);
            let written = destination.write_line(&line, from, rotation);
            state = self.lock();
            state.writing_since = None;
            match written {
                Ok(()) => {
                    state.backlog.written(line.len());
                    state.written_lines += 1;
                    if let Some(progress) = self.progress.get() {
                        progress.send_replace(());
                    }
                    if state.backlog.is_empty() {
                        self.recovered(&mut state);
                        self.done.notify_all();
                    }
                }
                Err(failure) => {
                    state.backlog.written(failure.written);
                    if failure.error.kind() != io::ErrorKind::BrokenPipe {
                        state.failures.write_errors += 1;
                    }
                    self.failed(&mut state, &failure.error);
                    if state.finishing && !state.closed {
                        // Tried once more at the end: what is left is lost.
                        let lines = state.backlog.len();
                        state.backlog.clear();
                        state.finished = Some(Err(SinkError::Unwritten {
                            output: self.name.clone(),
                            lines,
                        }));
                        break;
                    }
                    if !state.closed {
                        // Until the retry interval is up or a new line comes.
                        state = self
                            .work
                            .wait_timeout(state, RETRY_INTERVAL)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
        }
        drop(state);
        self.done.notify_all();
    }

    fn failed(&self, state: &mut State, error: &io::Error) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            state.closed = true;
            state.backlog.clear();
            state.trouble = None;
            // A line waiting to be written here never will be.
            if let Some(progress) = self.progress.get() {
                progress.send_replace(());
            }
        } else if state.trouble.is_none() {
            state.trouble = Some(Trouble::default());
            warn!(
                output = %self.name,
                %error,
                limit_bytes = state.backlog.limit_bytes,
                "cannot write to this output; keeping its events in memory and retrying \
                 every {} s",
                RETRY_INTERVAL.as_secs()
            );
        }
    }

    fn recovered(&self, state: &mut State) {
        if let Some(trouble) = state.trouble.take() {
            info!(
                output = %self.name,
                written = trouble.kept,
                lost = trouble.dropped,
                "the output can be written again; the events kept for it are written, in order"
            );
        }
    }

    /// Says once that a write has waited longer than `after`: the output's
    /// reader is not reading, or its disk hangs.
    pub(super) fn warn_if_stalled(&self, after: std::time::Duration) {
        let mut state = self.lock();
        let stalled = state
            .writing_since
            .is_some_and(|since| since.elapsed() >= after);
        if stalled && state.trouble.is_none() && !state.closed {
            state.trouble = Some(Trouble::default());
            warn!(
                output = %self.name,
                waited_s = after.as_secs(),
                limit_bytes = state.backlog.limit_bytes,
                "this output has taken no line for a while (is its reader reading?); keeping \
                 its events in memory, and the other outputs go on"
            );
        }
    }
}
