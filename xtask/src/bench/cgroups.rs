//! Memory cgroups of the bench's own: a limited one per phase, whose
//! kills are counted, and thousands of empty ones, as on a busy node.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use scratch_cgroup::{MemoryRoot, ScratchCgroup};

/// `oom-bench-<our pid>-<label>`, new, limited to `limit_bytes`; removed
/// on drop, with whatever of ours is still inside killed first.
pub fn scratch(label: &str, limit_bytes: u64) -> Result<ScratchCgroup> {
    let name = format!("oom-bench-{}-{label}", std::process::id());
    ScratchCgroup::create(&name, limit_bytes)
        .with_context(|| format!("cannot make the memory cgroup {name}"))
}

/// Many empty memory cgroups, as on a busy node: `oom-bench-<pid>-many/N`;
/// removed on drop.
pub struct ManyCgroups {
    parent: PathBuf,
    pub count: usize,
}

impl ManyCgroups {
    pub fn create(count: usize) -> Result<Self> {
        let root = MemoryRoot::usual().dir;
        let parent = root.join(format!("oom-bench-{}-many", std::process::id()));
        fs::create_dir(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mut many = Self { parent, count: 0 };
        for n in 0..count {
            fs::create_dir(many.parent.join(n.to_string()))
                .with_context(|| format!("cannot create cgroup {n} of {count}"))?;
            many.count += 1;
        }
        Ok(many)
    }

    /// Walks the hierarchy the way a lookup by walking does (every
    /// directory, and the inode of each cgroup); how long it took and how
    /// many cgroups it saw.
    pub fn walk_hierarchy() -> (Duration, usize) {
        let root = MemoryRoot::usual().dir;
        let started = Instant::now();
        let mut stack = vec![root];
        let mut cgroups = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.metadata().is_ok() {
                    cgroups += 1;
                    stack.push(entry.path());
                }
            }
        }
        (started.elapsed(), cgroups)
    }
}

impl Drop for ManyCgroups {
    fn drop(&mut self) {
        for n in 0..self.count {
            let _ = fs::remove_dir(self.parent.join(n.to_string()));
        }
        if fs::remove_dir(&self.parent).is_err() {
            eprintln!("bench: could not remove {}", self.parent.display());
        }
    }
}
