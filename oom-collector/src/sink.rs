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

use std::{
    collections::VecDeque,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration,
};

use tracing::{info, warn};

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

struct Outputs {
    list: Vec<Output>,
    rotation: Rotation,
}

impl Outputs {
    fn write(&mut self, line: &[u8]) -> Result<(), SinkError> {
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

    fn retry(&mut self) {
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

struct Output {
    destination: Destination,
    backlog: Backlog,
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
    fn new(destination: Destination) -> Self {
        Self::with_backlog(destination, BACKLOG_LIMIT_BYTES)
    }

    fn with_backlog(destination: Destination, limit_bytes: usize) -> Self {
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

    fn finish(&mut self) -> Result<(), SinkError> {
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

/// Lines an output could not take yet, oldest first, bounded in bytes.
struct Backlog {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    limit_bytes: usize,
    /// How much of the oldest line is out already (a pipe took part of it).
    front_written: usize,
}

impl Backlog {
    fn new(limit_bytes: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            front_written: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// Keeps `line` unless that would pass the limit.
    fn push(&mut self, line: &[u8]) -> bool {
        if self.bytes + line.len() > self.limit_bytes {
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_vec());
        true
    }

    /// Keeps the line whose first `written` bytes are out, whatever the
    /// limit: the rest of it must follow them.
    fn push_partly_written(&mut self, line: &[u8], written: usize) {
        debug_assert!(
            self.is_empty(),
            "only the oldest line can be partly written"
        );
        self.bytes += line.len();
        self.lines.push_back(line.to_vec());
        self.front_written = written;
    }

    fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
        self.front_written = 0;
    }

    /// Hands the lines, oldest first, to `write_line` (a line and how much
    /// of it is out already) until one fails or none are left.
    fn write(
        &mut self,
        mut write_line: impl FnMut(&[u8], usize) -> Result<(), Failure>,
    ) -> Result<(), io::Error> {
        while let Some(line) = self.lines.front() {
            if let Err(failure) = write_line(line, self.front_written) {
                self.front_written = failure.written;
                return Err(failure.error);
            }
            self.bytes -= line.len();
            self.lines.pop_front();
            self.front_written = 0;
        }
        Ok(())
    }
}

/// A line that did not go out whole: how much of it did, and why not.
#[derive(Debug)]
struct Failure {
    written: usize,
    error: io::Error,
}

enum Destination {
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

/// Writes `line[from..]` through `write`, which may take part of it.
fn write_from(
    line: &[u8],
    from: usize,
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> Result<(), Failure> {
    let mut written = from;
    while written < line.len() {
        match write(&line[written..]) {
            Ok(0) => {
                return Err(Failure {
                    written,
                    error: io::ErrorKind::WriteZero.into(),
                })
            }
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Failure { written, error }),
        }
    }
    Ok(())
}

struct FileOutput {
    path: PathBuf,
    /// `None` after rotating, or when the path could not be opened again.
    open: Option<OpenFile>,
    /// Warned about a failed rotation already.
    rotation_failed: bool,
}

struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    size: u64,
}

impl OpenFile {
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        let metadata = file.metadata()?;
        Ok(Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            file,
        })
    }
}

impl FileOutput {
    fn open(path: &Path) -> Result<Self, SinkError> {
        let open = OpenFile::open(path).map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            open: Some(open),
            rotation_failed: false,
        })
    }

    /// The file at `path` now, opened anew when `path` is no longer the
    /// file open (moved or deleted away), and whether it was.
    fn current(&mut self) -> io::Result<(&mut OpenFile, bool)> {
        if let Some(open) = &mut self.open {
            match fs::metadata(&self.path) {
                Ok(now) if (now.dev(), now.ino()) == (open.dev, open.ino) => open.size = now.len(),
                // Cannot tell (a directory's permissions): keep writing.
                Err(error) if error.kind() != io::ErrorKind::NotFound => {}
                _ => {
                    info!(
                        output = %self.path.display(),
                        "the file was moved or deleted; writing to a new file at its path"
                    );
                    self.open = None;
                }
            }
        }
        let reopened = self.open.is_none();
        if reopened {
            self.open = Some(OpenFile::open(&self.path)?);
        }
        Ok((self.open.as_mut().expect("opened above"), reopened))
    }

    fn write_line(&mut self, line: &[u8], from: usize, rotation: Rotation) -> Result<(), Failure> {
        let (open, reopened) = self
            .current()
            .map_err(|error| Failure { written: 0, error })?;
        // The start of the line went to a file that is gone: start over.
        let from = if reopened { 0 } else { from };
        if let Err(mut failure) = write_from(line, from, |bytes| (&open.file).write(bytes)) {
            // Cut the piece a full disk let through off again, so no reader
            // of the file ever sees half a line.
            let cut = || {
                let size = open.file.metadata()?.len();
                open.file
                    .set_len(size.saturating_sub(failure.written as u64))
            };
            if failure.written > 0 && cut().is_ok() {
                failure.written = 0;
            }
            return Err(failure);
        }
        open.size += (line.len() - from) as u64;
        if rotation.max_bytes.is_some_and(|max| open.size >= max) {
            self.rotate(rotation.keep);
        }
        Ok(())
    }

    fn rotate(&mut self, keep: u32) {
        match rotate(&self.path, keep) {
            Ok(()) => {
                // The next line opens the new file.
                self.open = None;
                self.rotation_failed = false;
            }
            Err(error) => {
                if !self.rotation_failed {
                    warn!(
                        output = %self.path.display(),
                        %error,
                        "cannot rotate the file; writing on to it"
                    );
                }
                self.rotation_failed = true;
            }
        }
    }

    fn sync(&self) -> Result<(), SinkError> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        // Only a regular file has anything to make durable: fsync of a pipe
        // or /dev/null fails with EINVAL.
        if !open.file.metadata().is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        open.file.sync_all().map_err(|source| SinkError::Sync {
            path: self.path.clone(),
            source,
        })
    }
}

/// `PATH.keep-1` -> `PATH.keep`, ..., `PATH` -> `PATH.1`; the caller starts
/// a new `PATH`. With `keep` 0 the full file is simply removed.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(n), numbered(n + 1)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, OpenOptionsExt};

    use super::*;
    use crate::document::{Action, Ecs, Event, Host, HostBoot, HostOs};

    fn document(message: &str) -> Document {
        Document {
            timestamp: "2026-11-29T00:00:00.000000Z".into(),
            message: message.into(),
            event: Event {
                id: "x".into(),
                kind: "event",
                category: vec!["host"],
                event_type: vec!["info"],
                action: Action::EventsLost,
                module: "oom",
                dataset: "oom.events",
                created: "2026-11-29T00:00:00.000000Z".into(),
                outcome: None,
            },
            host: Host {
                name: "n".into(),
                boot: HostBoot { id: "b".into() },
                os: HostOs { kernel: "k".into() },
            },
            ecs: Ecs::default(),
            process: None,
            container: None,
            kubernetes: None,
            oom: None,
            error: None,
        }
    }

    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oom-sink-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn messages(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("a whole JSON line ({e}): {l:?}"))["message"]
                    .as_str()
                    .expect("message")
                    .to_owned()
            })
            .collect()
    }

    const NEVER: Rotation = Rotation {
        max_bytes: None,
        keep: 0,
    };

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = scratch_dir("rotate");
        let path = dir.join("events.ndjson");
        let line_len = serde_json::to_string(&document("0")).expect("json").len() as u64 + 1;
        let mut sink = Sink::open(
            std::slice::from_ref(&path),
            Format::Json,
            Rotation {
                max_bytes: Some(2 * line_len),
                keep: 2,
            },
        )
        .expect("open");
        for n in 0..7 {
            sink.write(&document(&n.to_string())).expect("write");
        }
        sink.finish().expect("finish");
        assert_eq!(messages(&path), ["6"], "the live file has what came after");
        assert_eq!(messages(&dir.join("events.ndjson.1")), ["4", "5"]);
        assert_eq!(messages(&dir.join("events.ndjson.2")), ["2", "3"]);
        assert!(
            !dir.join("events.ndjson.3").exists(),
            "only --output-keep files"
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_file_moved_or_deleted_away_is_started_again_at_its_path() {
        let dir = scratch_dir("moved");
        let path = dir.join("events.ndjson");
        let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
        sink.write(&document("before the move")).expect("write");
        let moved = dir.join("events.ndjson.1");
        fs::rename(&path, &moved).expect("mv");
        sink.write(&document("after the move")).expect("write");
        assert_eq!(messages(&moved), ["before the move"]);
        assert_eq!(messages(&path), ["after the move"]);

        fs::remove_file(&path).expect("rm");
        sink.write(&document("after the rm")).expect("write");
        sink.finish().expect("finish");
        assert_eq!(messages(&path), ["after the rm"]);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A path that points at /dev/full fails every write with ENOSPC, as a
    /// full disk does; pointing it at a real file frees the space.
    #[test]
    fn lines_a_full_disk_refused_are_written_in_order_once_it_has_room() {
        let dir = scratch_dir("full");
        let path = dir.join("events.ndjson");
        let real = dir.join("real.ndjson");
        symlink("/dev/full", &path).expect("symlink to /dev/full");
        let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
        for n in 0..3 {
            sink.write(&document(&n.to_string()))
                .expect("a refused line is kept, not an error");
        }
        sink.retry();

        fs::remove_file(&path).expect("rm the symlink");
        fs::write(&real, "").expect("create the real file");
        symlink(&real, &path).expect("symlink to the real file");
        sink.retry();
        assert_eq!(
            messages(&real),
            ["0", "1", "2"],
            "all of them, in order, once"
        );
        sink.write(&document("3")).expect("write");
        sink.finish().expect("finish");
        assert_eq!(messages(&real), ["0", "1", "2", "3"]);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn lines_past_the_backlog_limit_are_dropped_and_said_so() {
        let dir = scratch_dir("bounded");
        let path = dir.join("events.ndjson");
        symlink("/dev/full", &path).expect("symlink to /dev/full");
        let line_len = serde_json::to_string(&document("0")).expect("json").len() + 1;
        let file = FileOutput::open(&path).expect("open");
        let output = Output::with_backlog(Destination::File(file), 2 * line_len);
        let mut sink = Sink::new(vec![output], Format::Json, NEVER);
        sink.write(&document("0")).expect("kept");
        sink.write(&document("1")).expect("kept");
        match sink.write(&document("2")) {
            Err(SinkError::Dropped { outputs }) => {
                assert_eq!(outputs, [path.display().to_string()])
            }
            other => panic!("the third line does not fit and is dropped: {other:?}"),
        }
        match sink.finish() {
            Err(SinkError::Unwritten { lines, .. }) => assert_eq!(lines, 2),
            other => panic!("finishing with lines unwritten says so: {other:?}"),
        }
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Takes what fits in `room`, as a pipe or a nearly full disk does.
    struct Pipe {
        room: usize,
        taken: Vec<u8>,
    }

    impl Pipe {
        fn take(&mut self, line: &[u8], from: usize) -> Result<(), Failure> {
            write_from(line, from, |bytes| {
                if self.room == 0 {
                    return Err(io::ErrorKind::StorageFull.into());
                }
                let n = bytes.len().min(self.room);
                self.room -= n;
                self.taken.extend_from_slice(&bytes[..n]);
                Ok(n)
            })
        }
    }

    #[test]
    fn a_backlog_resumes_a_line_a_pipe_took_part_of() {
        let mut backlog = Backlog::new(1 << 20);
        backlog.push_partly_written(b"first line\n", 6);
        assert!(backlog.push(b"second\n"));
        let mut pipe = Pipe {
            room: 3,
            taken: Vec::new(),
        };
        let error = backlog
            .write(|line, from| pipe.take(line, from))
            .expect_err("runs out of room");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        pipe.room = 100;
        backlog
            .write(|line, from| pipe.take(line, from))
            .expect("room again");
        assert_eq!(
            pipe.taken, b"line\nsecond\n",
            "the rest of the first line, then the second"
        );
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes, 0);
    }

    #[test]
    fn an_output_closed_by_its_reader_is_dropped_and_the_last_one_stops() {
        let dir = scratch_dir("closed");
        let fifo = dir.join("reader.fifo");
        let file = dir.join("events.ndjson");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo: {made}");
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the fifo's read end");
        let mut sink = Sink::open(&[fifo.clone(), file.clone()], Format::Json, NEVER)
            .expect("open both outputs");
        sink.write(&document("0")).expect("write");
        drop(reader);
        sink.write(&document("1"))
            .expect("the file still takes lines");
        sink.finish().expect("finish");
        assert_eq!(messages(&file), ["0", "1"]);

        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the fifo's read end");
        let mut sink =
            Sink::open(std::slice::from_ref(&fifo), Format::Json, NEVER).expect("open the fifo");
        drop(reader);
        match sink.write(&document("2")) {
            Err(SinkError::Closed { output }) => assert_eq!(output, fifo.display().to_string()),
            other => panic!("the only output closed stops the sink: {other:?}"),
        }
        sink.finish().expect("nothing left to finish");
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
