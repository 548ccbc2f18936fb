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

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;

/// One kept set of maps and links.
pub struct PinSet {
    dir: PathBuf,
}

impl PinSet {
    /// The set for these programs and options under `root`.
    pub fn new(root: &Path, set: &str) -> Self {
        Self {
            dir: root.join(set),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, map: &str) -> PathBuf {
        self.dir.join("maps").join(map)
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

    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(self.dir.join("maps"))?;
        fs::create_dir_all(self.dir.join("links"))
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
        let path = self.dir.join("links").join(program);
        link.pin(&path)
            .map(drop)
            .map_err(|e| format!("cannot pin {}: {e}", path.display()))
    }
}

/// Removes every kept set under `root` but `keep` (all when `None`); their
/// hooks are detached as their pins go. Returns how many were removed.
pub fn remove_sets(root: &Path, keep: Option<&Path>) -> io::Result<usize> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        if Some(path.as_path()) == keep || !path.is_dir() {
            continue;
        }
        fs::remove_dir_all(&path)?;
        removed += 1;
    }
    Ok(removed)
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
