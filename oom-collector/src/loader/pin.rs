//! `--pin-dir`: hooks and buffers that outlive the collector.
//!
//! With a pin directory (on bpffs), the collector pins its maps and the
//! links of every hook it attached under `DIR/<set>/maps/<MAP>` and
//! `DIR/<set>/links/<program>`. The kernel keeps pinned links attached and
//! pinned maps alive after the process exits, so kills while the collector
//! is down (a rolling update, a crash) land in the kept ring buffer, and the
//! next start with the same set takes up the hooks as they are and reads
//! what is waiting, without detaching anything.
//!
//! `<set>` names the build of the kernel programs and the options that
//! shape them (ring-buffer size, hooks chosen): a start with another build
//! or other options cannot read the kept records, so it removes the old set
//! (detaching its hooks) and pins a new one.
//!
//! The directory may be shared with other tools (it may be `/sys/fs/bpf`
//! itself, where Cilium and Calico keep their pins): the collector removes
//! only the sets it made, which its naming (`set-` and 16 hexadecimal
//! digits) tells. While it runs it holds an exclusive lock on the
//! directory, so a second collector (a DaemonSet surge, a manual run beside
//! the DaemonSet) refuses to start rather than read half the kills from the
//! same ring buffer. The kept maps hold raw command lines, before
//! redaction: each set is readable by its owner (root) alone.

use std::{
    fs::{self, DirBuilder, File},
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;

/// `BPF_FS_MAGIC`, the `f_type` of a bpf filesystem (`linux/magic.h`).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// What can go wrong with a pin directory.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("--pin-dir {path}: cannot {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "--pin-dir {0} is not on a bpf filesystem: the kernel keeps hooks and buffers only \
         there; use a directory under /sys/fs/bpf (mounted with `mount -t bpf bpf /sys/fs/bpf`)"
    )]
    NotBpffs(PathBuf),
    #[error(
        "--pin-dir {0} is in use by another oom-collector: two would take turns reading one \
         ring buffer and each see part of the kills; stop the other one, or give each its \
         own --pin-dir"
    )]
    Busy(PathBuf),
}

/// The pin directory, held by this collector alone while it lives.
pub struct PinRoot {
    dir: PathBuf,
    /// Holds an exclusive `flock` on the directory until dropped.
    _lock: File,
}

impl PinRoot {
    /// Creates `dir` if needed, checks it is on bpffs and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, PinError> {
        let failed = |what| {
            move |source| PinError::Io {
                path: dir.to_owned(),
                what,
                source,
            }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed("create the directory"))?;
        let lock = File::open(dir).map_err(failed("open the directory"))?;
        let filesystem = rustix::fs::fstatfs(&lock)
            .map_err(|e| failed("tell its filesystem")(io::Error::from(e)))?;
        if filesystem.f_type as u64 != BPF_FS_MAGIC {
            return Err(PinError::NotBpffs(dir.to_owned()));
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(PinError::Busy(dir.to_owned())),
            Err(fs::TryLockError::Error(source)) => return Err(failed("lock it")(source)),
        }
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set of this name.
    pub fn set(&self, name: &str) -> PinSet {
        PinSet {
            dir: self.dir.join(name),
        }
    }

    /// Removes every set the collector kept here but `keep` (all when
    /// `None`), detaching their hooks as their pins go; what other tools
    /// keep here is left alone. Returns how many were removed.
    pub fn remove_sets(&self, keep: Option<&PinSet>) -> Result<usize, PinError> {
        let failed = |what| {
            move |source| PinError::Io {
                path: self.dir.clone(),
                what,
                source,
            }
        };
        let entries = fs::read_dir(&self.dir).map_err(failed("list the directory"))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(failed("list the directory"))?;
            let path = entry.path();
            let ours = entry.file_name().to_str().is_some_and(is_set_name)
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if !ours || keep.is_some_and(|keep| keep.dir == path) {
                continue;
            }
            fs::remove_dir_all(&path).map_err(failed("remove a set kept there"))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Whether `name` is a set the collector made: `set-` and 16 hex digits.
fn is_set_name(name: &str) -> bool {
    name.strip_prefix("set-")
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One kept set of maps and links.
pub struct PinSet {
    dir: PathBuf,
}

impl PinSet {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, map: &str) -> PathBuf {
        self.dir.join("maps").join(map)
    }

    pub fn link_path(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    /// The programs whose links a previous start kept; empty if none.
    pub fn kept_links(&self) -> Vec<String> {
        let mut links: Vec<String> = fs::read_dir(self.dir.join("links"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        links.sort();
        links
    }

    /// Whether a previous start left its maps here to resume from.
    pub fn resumable(&self) -> bool {
        !self.kept_links().is_empty()
            && super::hooks::shared_maps()
                .iter()
                .all(|map| self.map_path(map.name).exists())
    }

    /// Makes the set's directories, readable by their owner alone: the
    /// maps hold command lines before redaction.
    pub fn create(&self) -> io::Result<()> {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [&self.dir, &self.dir.join("maps"), &self.dir.join("links")] {
            builder.create(dir)?;
            // Made before by a start that was stopped half-way, perhaps
            // under another umask.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Pins `link` (of program `program`) so it stays attached.
    pub fn keep_link<L>(&self, program: &str, link: L) -> Result<(), String>
    where
        L: TryInto<FdLink>,
        L::Error: std::fmt::Display,
    {
        let link: FdLink = link.try_into().map_err(|e| {
            format!(
                "cannot keep {program} attached across restarts: {e} (this kernel attaches \
                 it without a BPF link; --pin-dir needs Linux 5.15 or later)"
            )
        })?;
        let path = self.link_path(program);
        link.pin(&path)
            .map(drop)
            .map_err(|e| format!("cannot pin {}: {e}", path.display()))
    }
}

/// The name of the set for these programs and options.
pub fn set_name(object: &[u8], shaping_options: &str) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same input gives the same name in every
    // run of one build, which is all a set name needs.
    let mut hasher = std::hash::DefaultHasher::new();
    object.hash(&mut hasher);
    shaping_options.hash(&mut hasher);
    format!("set-{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::is_set_name;

    #[test]
    fn only_names_the_collector_gives_are_its_sets() {
        assert!(is_set_name(&super::set_name(b"object", "options")));
        for other in [
            "set-",
            "set-0123",
            "set-0123456789abcdefg",
            "set-0123456789abcdeg",
            "other-tool",
            "tc",
            "cilium",
        ] {
            assert!(!is_set_name(other), "{other}");
        }
    }
}
