//! Where documents go: stdout or an appended file, one line per event,
//! flushed per event so a crash loses nothing already reported.

use std::{
    fs::{File, OpenOptions},
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
    #[error("cannot fsync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

enum Target {
    Stdout(io::Stdout),
    File { file: File, path: PathBuf },
}

pub struct Sink {
    target: Target,
    format: Format,
    line: Vec<u8>,
}

impl Sink {
    pub fn stdout(format: Format) -> Self {
        Self {
            target: Target::Stdout(io::stdout()),
            format,
            line: Vec::with_capacity(4096),
        }
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: &Path, format: Format) -> Result<Self, SinkError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            target: Target::File {
                file,
                path: path.to_owned(),
            },
            format,
            line: Vec::with_capacity(4096),
        })
    }

    fn target_name(&self) -> String {
        match &self.target {
            Target::Stdout(_) => "stdout".into(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }

    /// Writes one document as one line, in one `write`, and flushes it.
    pub fn write(&mut self, document: &Document) -> Result<(), SinkError> {
        self.line.clear();
        match self.format {
            Format::Json => serde_json::to_writer(&mut self.line, document)
                .expect("documents serialize to JSON"),
            Format::Pretty => self.line.extend_from_slice(document.pretty().as_bytes()),
        }
        self.line.push(b'\n');
        let result = match &mut self.target {
            Target::Stdout(stdout) => {
                let mut stdout = stdout.lock();
                stdout.write_all(&self.line).and_then(|()| stdout.flush())
            }
            Target::File { file, .. } => file.write_all(&self.line),
        };
        result.map_err(|source| SinkError::Write {
            target: self.target_name(),
            source,
        })
    }

    /// Makes everything written durable (fsync for a file).
    pub fn finish(&mut self) -> Result<(), SinkError> {
        match &mut self.target {
            Target::Stdout(stdout) => stdout.flush().map_err(|source| SinkError::Write {
                target: "stdout".into(),
                source,
            }),
            // Only a regular file has anything to make durable: fsync of a
            // pipe or /dev/null fails with EINVAL.
            Target::File { file, .. } if !file.metadata().is_ok_and(|m| m.is_file()) => Ok(()),
            Target::File { file, path } => file.sync_all().map_err(|source| SinkError::Sync {
                path: path.clone(),
                source,
            }),
        }
    }
}
