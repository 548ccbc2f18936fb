//! A memory cgroup of one's own, limited, for causing OOM kills on
//! purpose: `oom-collector selftest`, the end-to-end tests and
//! `cargo xtask bench` all make one.
//!
//! It lives in a crate of its own, with only `std` and `libc`, because its
//! three users cannot depend on one another: the xtask must not build the
//! collector (that builds the eBPF object), and the collector's `selftest`
//! must not depend on the tests.
//!
//! Both hierarchies are handled: the v1 memory controller
//! (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`) and cgroup v2
//! (`memory.max`, `memory.swap.max`, which needs `memory` in the parent's
//! `cgroup.subtree_control`). Swap is limited too where it is accounted:
//! otherwise a host with swap would page a hog out instead of killing it.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

/// The usual mount point of the v1 memory controller.
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";
/// The usual mount point of the cgroup v2 hierarchy.
const V2_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup hierarchy the memory controller is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    fn limit_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        }
    }
}

/// The root of the memory controller's hierarchy.
#[derive(Clone, Debug)]
pub struct MemoryRoot {
    pub dir: PathBuf,
    pub version: Version,
}

impl MemoryRoot {
    /// The memory hierarchy at its usual mount point: the v1 controller if
    /// it is mounted there, else cgroup v2.
    pub fn usual() -> Self {
        if Path::new(V1_MEMORY).join("memory.limit_in_bytes").exists() {
            Self {
                dir: V1_MEMORY.into(),
                version: Version::V1,
            }
        } else {
            Self {
                dir: V2_ROOT.into(),
                version: Version::V2,
            }
        }
    }
}

/// Why a scratch cgroup could not be made.
#[derive(Debug)]
pub enum Error {
    /// cgroup v2 without `memory` in the root's `cgroup.subtree_control`.
    MemoryNotDelegated(PathBuf),
    /// Creating the directory or writing a limit failed.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MemoryNotDelegated(root) => write!(
                f,
                "the memory controller is not enabled for children of {} (cgroup.subtree_control)",
                root.display()
            ),
            Self::Io { path, .. } => {
                write!(f, "cannot set up the scratch cgroup {}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MemoryNotDelegated(_) => None,
            Self::Io { source, .. } => Some(source),
        }
    }
}

/// A memory cgroup of our own with a memory limit. Dropping it kills what
/// is still inside (only its maker's processes ever are) and removes it.
#[derive(Debug)]
pub struct ScratchCgroup {
    pub dir: PathBuf,
    /// The path the kernel and `/proc/<pid>/cgroup` show: `/<name>`.
    pub path: String,
    pub limit_bytes: u64,
}

impl ScratchCgroup {
    /// `name` at the usual memory root (see [`MemoryRoot::usual`]).
    pub fn create(name: &str, limit_bytes: u64) -> Result<Self, Error> {
        Self::create_in(&MemoryRoot::usual(), name, limit_bytes)
    }

    /// `name` under `root`, limited to `limit_bytes` and no swap beyond it.
    /// A leftover empty cgroup of that name (from a run that died) is
    /// removed first.
    pub fn create_in(root: &MemoryRoot, name: &str, limit_bytes: u64) -> Result<Self, Error> {
        if root.version == Version::V2 {
            let delegated = fs::read_to_string(root.dir.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
            if !delegated {
                return Err(Error::MemoryNotDelegated(root.dir.clone()));
            }
        }
        let dir = root.dir.join(name);
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let cgroup = Self {
            dir,
            path: format!("/{name}"),
            limit_bytes,
        };
        let limit_file = cgroup.dir.join(root.version.limit_file());
        fs::write(&limit_file, limit_bytes.to_string()).map_err(|source| Error::Io {
            path: limit_file,
            source,
        })?;
        let (swap_file, swap_limit) = match root.version {
            Version::V1 => ("memory.memsw.limit_in_bytes", limit_bytes.to_string()),
            Version::V2 => ("memory.swap.max", "0".to_owned()),
        };
        // An absent file means no swap accounting: nothing to limit.
        let _ = fs::write(cgroup.dir.join(swap_file), swap_limit);
        Ok(cgroup)
    }

    /// A child cgroup without a limit of its own; drop it before `self`.
    pub fn child(&self, name: &str) -> Result<Self, Error> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            path: format!("{}/{name}", self.path),
            limit_bytes: self.limit_bytes,
        })
    }

    /// The file a process joins the cgroup through.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // A killed process leaves the cgroup only once it is fully gone.
        for _ in 0..100 {
            let procs = fs::read_to_string(self.procs_file()).unwrap_or_default();
            let pids = procs.split_whitespace().filter_map(|p| p.parse().ok());
            // Never 0 or negative: kill(2) would take those for groups.
            for pid in pids.filter(|&pid: &libc::pid_t| pid > 0) {
                // SAFETY: kill(2) takes plain integers and touches no memory.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return,
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
        eprintln!(
            "warning: could not remove the scratch cgroup {}",
            self.dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only: outside CI it skips with a reason, under `CI=true` it
    /// fails, like the end-to-end tests.
    #[test]
    fn a_scratch_cgroup_is_limited_and_removed_with_its_child() {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "a_scratch_cgroup_is_limited_and_removed_with_its_child needs root, and CI=true"
            );
            eprintln!(
                "skipping a_scratch_cgroup_is_limited_and_removed_with_its_child: needs root"
            );
            return;
        }
        let root = MemoryRoot::usual();
        let name = format!("scratch-cgroup-test-{}", std::process::id());
        let cgroup = ScratchCgroup::create_in(&root, &name, 16 << 20).expect("a scratch cgroup");
        assert_eq!(cgroup.path, format!("/{name}"));
        let limit =
            fs::read_to_string(cgroup.dir.join(root.version.limit_file())).expect("the limit file");
        assert_eq!(limit.trim(), (16u64 << 20).to_string(), "the limit is set");
        let child = cgroup.child("inner").expect("a child cgroup");
        assert_eq!(child.path, format!("/{name}/inner"));
        let (dir, child_dir) = (cgroup.dir.clone(), child.dir.clone());
        drop(child);
        assert!(!child_dir.exists(), "the child is removed");
        drop(cgroup);
        assert!(!dir.exists(), "the cgroup is removed");
    }
}
