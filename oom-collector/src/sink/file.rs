//! A file output: appended to line by line, opened anew when its path is
//! moved or deleted away, cut back when a full disk took half a line, and
//! rotated by size (`PATH` -> `PATH.1` -> ... `PATH.keep`).
//!
//! Every file it opens, at start, after a move and after rotating, is a
//! regular file reached without following a symbolic link at the path, and
//! a file it creates is readable by its owner and group only (0640, less
//! what the umask takes): the lines carry command lines and pod names, and
//! whoever can write to the directory must not be able to point the
//! collector's writes at another file, nor hang it on a FIFO. A character
//! device given as the path itself (`/dev/null`) is written to as asked,
//! and never rotated.

use std::{
    fs::{self, File, Metadata, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use tracing::{info, warn};

use super::{
    line::{write_from, Failure},
    Rotation, SinkError,
};

pub(super) struct FileOutput {
    pub(super) path: PathBuf,
    /// `None` after rotating, or when the path could not be opened again.
    open: Option<OpenFile>,
    /// Warned about a failed rotation already.
    rotation_failed: bool,
}

struct OpenFile {
    file: File,
    /// A regular file, which rotates; else a character device, which
    /// does not.
    regular: bool,
    dev: u64,
    ino: u64,
    size: u64,
}

/// Mode of the files the collector creates, before the umask.
pub(super) const FILE_MODE: u32 = 0o640;

impl OpenFile {
    fn open(path: &Path) -> io::Result<Self> {
        // Refused before opening where it can be seen, so that a device's
        // open has no side effect; checked again on what was opened, since
        // the path can change in between.
        if let Ok(found) = fs::symlink_metadata(path) {
            refuse_unless_usable(path, &found)?;
        }
        // O_NONBLOCK: a FIFO put there in between fails the open (ENXIO) or
        // is refused below, rather than hanging it until a reader comes.
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|error| match fs::symlink_metadata(path) {
                Ok(found) => refuse_unless_usable(path, &found).err().unwrap_or(error),
                Err(_) => error,
            })?;
        let metadata = file.metadata()?;
        refuse_unless_usable(path, &metadata)?;
        // Writes to a regular file wait for the disk, as they should (on
        // this output's own thread).
        fcntl_setfl(&file, fcntl_getfl(&file)? - OFlags::NONBLOCK)?;
        Ok(Self {
            regular: metadata.is_file(),
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            file,
        })
    }
}

impl FileOutput {
    pub(super) fn open(path: &Path) -> Result<Self, SinkError> {
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
            // The link itself, not where it points: a symbolic link put at
            // the path is not the file open, and is refused on reopening.
            match fs::symlink_metadata(&self.path) {
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

    pub(super) fn write_line(
        &mut self,
        line: &[u8],
        from: usize,
        rotation: Rotation,
    ) -> Result<(), Failure> {
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
        if open.regular && rotation.max_bytes.is_some_and(|max| open.size >= max) {
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

    pub(super) fn sync(&self) -> Result<(), SinkError> {
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

/// Errs, saying why, unless `found` (at `path`) is a regular file or a
/// character device (`/dev/null`: named as the path itself, it is what
/// the user asked for, and opening it has no side effect).
fn refuse_unless_usable(path: &Path, found: &Metadata) -> io::Result<()> {
    let file_type = found.file_type();
    if file_type.is_file() || file_type.is_char_device() {
        return Ok(());
    }
    let kind = if file_type.is_symlink() {
        "symbolic link, which the collector does not follow (give the path of the file itself)"
    } else if file_type.is_fifo() {
        "FIFO (named pipe); to feed a program, pipe the collector's stdout (`--output -`) to it"
    } else if file_type.is_dir() {
        "directory; give the path of a file in it"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "socket"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a {kind}: outputs are appended to regular files (or a character device such \
             as /dev/null) only, so that nobody who can write to the directory can send the \
             collector's lines elsewhere or hang it",
            path.display()
        ),
    ))
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
