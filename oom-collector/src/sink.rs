//! Where documents go: stdout and/or appended files, one line per event,
//! flushed per event so a crash loses nothing already reported.
//!
//! A file output can rotate itself by size (`--output-max-bytes`): the
//! file is renamed to `PATH.1` (older ones shift to `.2`, ... up to
//! `--output-keep`) and a new one started, so a DaemonSet's hostPath never
//! fills the node's disk.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::record::Document;

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
    #[error("cannot write an event to {target}")]
    Write {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot rotate {path}")]
    Rotate {
        path: PathBuf,
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

/// Size-based rotation of file outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once a file reaches this size; `None`: never.
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`).
    pub keep: u32,
}

enum Target {
    Stdout(io::Stdout),
    File {
        file: File,
        path: PathBuf,
        written: u64,
    },
}

pub struct Sink {
    targets: Vec<Target>,
    format: Format,
    rotation: Rotation,
    line: Vec<u8>,
}

/// The `--output` value that means standard output.
pub const STDOUT: &str = "-";

impl Sink {
    pub fn stdout(format: Format) -> Self {
        Self {
            targets: vec![Target::Stdout(io::stdout())],
            format,
            rotation: Rotation {
                max_bytes: None,
                keep: 0,
            },
            line: Vec::with_capacity(4096),
        }
    }

    /// Writes to each of `outputs`: a file path (appended to, created if
    /// needed) or [`STDOUT`]. No outputs: stdout.
    pub fn open(
        outputs: &[PathBuf],
        format: Format,
        rotation: Rotation,
    ) -> Result<Self, SinkError> {
        let mut sink = Self::stdout(format);
        sink.rotation = rotation;
        if outputs.is_empty() {
            return Ok(sink);
        }
        sink.targets.clear();
        for output in outputs {
            if output.as_os_str() == STDOUT {
                sink.targets.push(Target::Stdout(io::stdout()));
            } else {
                sink.targets.push(open_file(output)?);
            }
        }
        Ok(sink)
    }

    /// Writes one document as one line, in one `write` per output, and
    /// flushes it.
    pub fn write(&mut self, document: &Document) -> Result<(), SinkError> {
        self.line.clear();
        match self.format {
            Format::Json => serde_json::to_writer(&mut self.line, document)
                .expect("documents serialize to JSON"),
            Format::Pretty => self.line.extend_from_slice(document.pretty().as_bytes()),
        }
        self.line.push(b'\n');
        for target in &mut self.targets {
            match target {
                Target::Stdout(stdout) => {
                    let mut stdout = stdout.lock();
                    stdout
                        .write_all(&self.line)
                        .and_then(|()| stdout.flush())
                        .map_err(|source| SinkError::Write {
                            target: "stdout".into(),
                            source,
                        })?;
                }
                Target::File {
                    file,
                    path,
                    written,
                } => {
                    file.write_all(&self.line)
                        .map_err(|source| SinkError::Write {
                            target: path.display().to_string(),
                            source,
                        })?;
                    *written += self.line.len() as u64;
                    if self.rotation.max_bytes.is_some_and(|max| *written >= max) {
                        *target = rotate(path, self.rotation.keep)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes everything written durable (fsync for regular files).
    pub fn finish(&mut self) -> Result<(), SinkError> {
        for target in &mut self.targets {
            match target {
                Target::Stdout(stdout) => {
                    stdout.flush().map_err(|source| SinkError::Write {
                        target: "stdout".into(),
                        source,
                    })?;
                }
                // Only a regular file has anything to make durable: fsync
                // of a pipe or /dev/null fails with EINVAL.
                Target::File { file, .. } if !file.metadata().is_ok_and(|m| m.is_file()) => {}
                Target::File { file, path, .. } => {
                    file.sync_all().map_err(|source| SinkError::Sync {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn open_file(path: &Path) -> Result<Target, SinkError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Target::File {
        file,
        path: path.to_owned(),
        written,
    })
}

/// `PATH.keep-1` -> `PATH.keep`, ..., `PATH` -> `PATH.1`, then a new `PATH`.
/// With `keep` 0 the full file is simply started over.
fn rotate(path: &Path, keep: u32) -> Result<Target, SinkError> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let failed = |source| SinkError::Rotate {
        path: path.to_owned(),
        source,
    };
    if keep == 0 {
        fs::remove_file(path).map_err(failed)?;
    } else {
        for n in (1..keep).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(failed(error)),
                _ => {}
            }
        }
        fs::rename(path, numbered(1)).map_err(failed)?;
    }
    open_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Ecs, Event, Host, HostBoot, HostOs};

    fn document(message: &str) -> Document {
        Document {
            timestamp: "2026-11-29T00:00:00.000000Z".into(),
            message: message.into(),
            event: Event {
                id: "x".into(),
                kind: "event",
                category: vec!["host"],
                event_type: vec!["info"],
                action: "events_lost",
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

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("oom-sink-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
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
        let messages = |p: &Path| -> Vec<String> {
            fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["message"]
                        .as_str()
                        .expect("message")
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(messages(&path), ["6"], "the live file has what came after");
        assert_eq!(messages(&dir.join("events.ndjson.1")), ["4", "5"]);
        assert_eq!(messages(&dir.join("events.ndjson.2")), ["2", "3"]);
        assert!(
            !dir.join("events.ndjson.3").exists(),
            "only --output-keep files"
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
