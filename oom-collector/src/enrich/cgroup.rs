//! Cgroup ids to paths, and a memory cgroup's limit and usage.
//!
//! The kernel identifies a cgroup by its kernfs node id, which is also the
//! inode number of the cgroup's directory under the cgroup mount. This module
//! finds the mounts (the unified v2 hierarchy and the memory controller's,
//! which is the same on a pure v2 host and a v1 hierarchy on a hybrid one)
//! and keeps an id -> path cache per hierarchy.
//!
//! An id not in the cache (a cgroup created since it was filled) is asked
//! of the kernel itself: cgroupfs hands out file handles that are the
//! cgroup's id, so `open_by_handle_at` opens the cgroup's directory from
//! its id, and the directory's path is read back from `/proc/self/fd`. That
//! costs the same, some 10 µs, however many cgroups the host has. It needs
//! CAP_DAC_READ_SEARCH (root has it); without it, or on a filesystem that
//! is not cgroupfs, the hierarchy is walked instead, which costs in
//! proportion to the cgroups on the host: 150 to 210 ms for 5,000 v1
//! memory cgroups on this project's CI machine, every time a cgroup is
//! new.

use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use walkdir::WalkDir;

/// Where the cgroup hierarchies are mounted on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup v2 (unified) hierarchy, if mounted.
    pub unified: Option<PathBuf>,
    /// The hierarchy that has the memory controller.
    pub memory: Option<MemoryHierarchy>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryHierarchy {
    pub root: PathBuf,
    pub version: CgroupVersion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupMounts {
    /// Reads the mounts from `/proc/self/mountinfo`.
    pub fn discover() -> io::Result<Self> {
        Ok(Self::from_mountinfo(&fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parses `mountinfo` (proc(5)): the mount point is field 5, and after
    /// the ` - ` separator come the filesystem type, source and super
    /// options, where a v1 hierarchy lists its controllers.
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        let mut v2_has_memory = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            let mut right = right.split(' ');
            let fs_type = right.next().unwrap_or_default();
            let super_options = right.nth(1).unwrap_or_default();
            match fs_type {
                "cgroup2" if mounts.unified.is_none() => {
                    v2_has_memory = Some(
                        fs::read_to_string(mount_point.join("cgroup.controllers"))
                            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory")),
                    );
                    mounts.unified = Some(mount_point);
                }
                "cgroup"
                    if mounts.memory.is_none()
                        && super_options.split(',').any(|o| o == "memory") =>
                {
                    mounts.memory = Some(MemoryHierarchy {
                        root: mount_point,
                        version: CgroupVersion::V1,
                    });
                }
                _ => {}
            }
        }
        if mounts.memory.is_none() && v2_has_memory == Some(true) {
            mounts.memory = mounts.unified.clone().map(|root| MemoryHierarchy {
                root,
                version: CgroupVersion::V2,
            });
        }
        mounts
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(code) = u8::from_str_radix(digits, 8) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long an id that a rescan did not find is not looked for again: a
/// cgroup removed before its event was processed would otherwise cost a
/// walk of the whole hierarchy per event.
const MISSING_FOR: Duration = Duration::from_secs(60);

/// Paths kept per hierarchy before the cache starts afresh: some 1 MiB.
const CACHED_PATHS: usize = 10_000;

/// An id -> path cache for one hierarchy.
#[derive(Debug)]
pub struct CgroupPaths {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    missing: HashMap<u64, Instant>,
    /// The hierarchy's root, open, to resolve ids by file handle; `None`
    /// where that is not possible (not cgroupfs, or not permitted).
    handles: Option<File>,
}

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id, which is
/// the cgroup id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// `struct file_handle` with room for one kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: u64,
}

/// What resolving an id by its file handle found.
#[derive(Debug, PartialEq, Eq)]
enum ByHandle {
    Found(String),
    /// No cgroup has this id (any more).
    Gone,
    /// Not possible here: walk the hierarchy instead.
    Unsupported,
}

impl CgroupPaths {
    pub fn new(root: PathBuf) -> Self {
        let handles = cgroupfs_root(&root);
        Self {
            root,
            by_id: HashMap::new(),
            missing: HashMap::new(),
            handles,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup's path as `/proc/<pid>/cgroup` shows it (relative to the
    /// hierarchy's root, starting with `/`), asked of the kernel on a miss.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.by_id.get(&id) {
            return Some(path.clone());
        }
        if self
            .missing
            .get(&id)
            .is_some_and(|since| since.elapsed() < MISSING_FOR)
        {
            return None;
        }
        let found = match self.by_handle(id) {
            ByHandle::Found(path) => {
                // Paths found one by one are never cleared by a walk; where
                // cgroups come and go for months, start afresh now and then.
                if self.by_id.len() >= CACHED_PATHS {
                    self.by_id.clear();
                }
                self.by_id.insert(id, path.clone());
                Some(path)
            }
            ByHandle::Gone => None,
            ByHandle::Unsupported => {
                self.handles = None;
                self.rescan();
                self.by_id.get(&id).cloned()
            }
        };
        if found.is_none() {
            self.missing
                .retain(|_, since| since.elapsed() < MISSING_FOR);
            self.missing.insert(id, Instant::now());
        }
        found
    }

    /// Opens the cgroup's directory by its id and reads its path back.
    fn by_handle(&self, id: u64) -> ByHandle {
        let Some(root) = &self.handles else {
            return ByHandle::Unsupported;
        };
        let mut handle = KernfsHandle {
            handle_bytes: size_of::<u64>() as libc::c_uint,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: a valid directory fd and a file_handle whose
        // handle_bytes matches the bytes that follow it; the fd returned,
        // if any, is ours and closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                &raw mut handle,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => ByHandle::Gone,
                _ => ByHandle::Unsupported,
            };
        }
        let link = fs::read_link(format!("/proc/self/fd/{fd}"));
        // SAFETY: the fd is ours, opened above, and closed once.
        unsafe { libc::close(fd as libc::c_int) };
        let Ok(link) = link else {
            return ByHandle::Unsupported;
        };
        match link.strip_prefix(&self.root) {
            Ok(relative) => ByHandle::Found(format!("/{}", relative.to_string_lossy())),
            // Removed meanwhile (" (deleted)"), or not under our mount.
            Err(_) => ByHandle::Gone,
        }
    }

    fn rescan(&mut self) {
        self.by_id.clear();
        let walker = WalkDir::new(&self.root)
            .same_file_system(true)
            .into_iter()
            // A cgroup removed mid-walk is simply not there any more.
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_dir());
        for entry in walker {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let relative = entry
                .path()
                .strip_prefix(&self.root)
                .unwrap_or(entry.path());
            let path = format!("/{}", relative.to_string_lossy());
            self.by_id.insert(metadata.ino(), path);
        }
    }

    /// The absolute directory of a cgroup path returned by [`Self::path_of`].
    pub fn directory(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// `root` opened for `open_by_handle_at` when it is a cgroup filesystem
/// (v1 or v2), whose file handles are cgroup ids.
fn cgroupfs_root(root: &Path) -> Option<File> {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .ok()?;
    // SAFETY: fstatfs fills a zeroed statfs for our open fd.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return None;
    }
    matches!(stat.f_type as i64, CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC).then_some(file)
}

/// Whether `memory.oom.group` is set on the memory cgroup `victim` or on an
/// ancestor up to `limited` (the one whose limit was hit; `/` for a global
/// OOM), as `mem_cgroup_get_oom_group()` looks: the kernel then kills every
/// process of that cgroup with the victim. `None` on cgroup v1, which has
/// no such setting, or when a cgroup is gone already.
pub fn oom_group_set(
    root: &Path,
    victim: &str,
    limited: &str,
    version: CgroupVersion,
) -> Option<bool> {
    if version != CgroupVersion::V2 {
        return None;
    }
    let limited = limited.trim_end_matches('/');
    let mut path = victim.trim_end_matches('/');
    // The root cgroup has no `memory.*` files: the walk stops below it.
    while !path.is_empty() {
        let dir = root.join(path.trim_start_matches('/'));
        if fs::read_to_string(dir.join("memory.oom.group"))
            .ok()?
            .trim()
            == "1"
        {
            return Some(true);
        }
        if path == limited {
            break;
        }
        path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    Some(false)
}

/// A memory cgroup's limit and usage in bytes, as cgroupfs shows them now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgUsage {
    /// `None` when unlimited.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
}

/// v1 reports "no limit" as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// Reads `memory.limit_in_bytes` / `memory.usage_in_bytes` (v1) or
/// `memory.max` / `memory.current` (v2) in `dir`.
pub fn memcg_usage(dir: &Path, version: CgroupVersion) -> MemcgUsage {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
    match version {
        CgroupVersion::V1 => MemcgUsage {
            limit_bytes: number(read("memory.limit_in_bytes")).filter(|&l| l < V1_UNLIMITED),
            usage_bytes: number(read("memory.usage_in_bytes")),
        },
        CgroupVersion::V2 => MemcgUsage {
            // "max" means unlimited and does not parse.
            limit_bytes: number(read("memory.max")),
            usage_bytes: number(read("memory.current")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From this project's CI machines: cgroup v1 controllers beside a
    /// cgroup v2 hierarchy at /sys/fs/cgroup/unified (a hybrid host).
    const HYBRID: &str = "\
22 1 253:0 / / rw,relatime - ext4 /dev/vda rw
26 22 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 26 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 26 0:33 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
37 26 0:34 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host on cgroup v2 only, with a mount point that mountinfo
    /// escapes (a space).
    const V2_ESCAPED: &str = "\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup\\040v2 rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_v1_memory_controller_on_a_hybrid_host() {
        let mounts = CgroupMounts::from_mountinfo(HYBRID);
        assert_eq!(
            mounts.unified,
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mounts.memory,
            Some(MemoryHierarchy {
                root: PathBuf::from("/sys/fs/cgroup/memory"),
                version: CgroupVersion::V1,
            })
        );
    }

    #[test]
    fn unescapes_mount_points_and_needs_the_memory_controller_on_v2() {
        let mounts = CgroupMounts::from_mountinfo(V2_ESCAPED);
        assert_eq!(mounts.unified, Some(PathBuf::from("/sys/fs/cgroup v2")));
        // That directory does not exist here, so no cgroup.controllers says
        // "memory": no memory hierarchy rather than a wrong one.
        assert_eq!(mounts.memory, None);
    }

    #[test]
    fn resolves_ids_to_paths_and_rescans_on_a_miss() {
        let root = std::env::temp_dir().join(format!("oom-collector-paths-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/b c")).expect("scratch tree");
        let mut paths = CgroupPaths::new(root.clone());
        let ino = |p: &str| fs::metadata(root.join(p)).expect("exists").ino();
        assert_eq!(paths.path_of(ino("a/b c")).as_deref(), Some("/a/b c"));
        assert_eq!(paths.path_of(ino("")).as_deref(), Some("/"));

        fs::create_dir(root.join("new")).expect("new dir");
        assert_eq!(
            paths.path_of(ino("new")).as_deref(),
            Some("/new"),
            "a cgroup made after the last scan is found"
        );
        assert_eq!(paths.path_of(u64::MAX), None);
        assert_eq!(paths.directory("/a/b c"), root.join("a/b c"));
        fs::remove_dir_all(&root).expect("clean up");
    }

    /// On the host's own cgroupfs, as root: a cgroup made after the cache
    /// was filled is found by its id without a walk, and a removed one is
    /// gone.
    #[test]
    fn resolves_ids_of_new_cgroups_by_file_handle() {
        let Some(mounts) = CgroupMounts::discover().ok().and_then(|m| m.memory) else {
            eprintln!("skipping: no memory cgroup hierarchy mounted");
            return;
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: making a cgroup needs root");
            return;
        }
        let mut paths = CgroupPaths::new(mounts.root.clone());
        assert!(paths.handles.is_some(), "cgroupfs is recognised");
        let name = format!("oom-collector-handle-{}", std::process::id());
        let dir = mounts.root.join(&name).join("child");
        fs::create_dir_all(&dir).expect("make a cgroup");
        let id = fs::metadata(&dir).expect("exists").ino();
        let found = paths.by_handle(id);
        let path = paths.path_of(id);
        fs::remove_dir(&dir).expect("remove the cgroup");
        fs::remove_dir(mounts.root.join(&name)).expect("remove the cgroup");
        assert_eq!(found, ByHandle::Found(format!("/{name}/child")));
        assert_eq!(path, Some(format!("/{name}/child")));
        assert!(
            paths.by_id.len() == 1,
            "found without walking the hierarchy"
        );
        assert_eq!(paths.by_handle(id), ByHandle::Gone);
    }

    #[test]
    fn reads_limits_in_v1_and_v2_file_names() {
        let dir = std::env::temp_dir().join(format!("oom-collector-memcg-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch dir");
        fs::write(dir.join("memory.limit_in_bytes"), "50331648\n").expect("write");
        fs::write(dir.join("memory.usage_in_bytes"), "50200576\n").expect("write");
        fs::write(dir.join("memory.max"), "max\n").expect("write");
        fs::write(dir.join("memory.current"), "4096\n").expect("write");
        assert_eq!(
            memcg_usage(&dir, CgroupVersion::V1),
            MemcgUsage {
                limit_bytes: Some(50_331_648),
                usage_bytes: Some(50_200_576),
            }
        );
        assert_eq!(
            memcg_usage(&dir, CgroupVersion::V2),
            MemcgUsage {
                limit_bytes: None,
                usage_bytes: Some(4096),
            },
            "\"max\" is no limit"
        );
        fs::write(dir.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        assert_eq!(
            memcg_usage(&dir, CgroupVersion::V1).limit_bytes,
            None,
            "v1's no-limit value"
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
