//! Facts about this host that every event carries, and the kernel clock.

use std::{
    fs, io,
    time::{Duration, SystemTime},
};

use rustix::time::{clock_gettime, ClockId};

/// Read once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// `host.name`: the Kubernetes node's name where it was given
    /// (`NODE_NAME`, from the downward API), else the host name. In a pod
    /// without host networking the host name is the pod's own.
    pub name: String,
    /// `NODE_NAME`: the collector runs on a Kubernetes node, and every
    /// event says which (`kubernetes.node.name`).
    pub kubernetes_node: Option<String>,
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/sys/kernel/random/boot_id`: distinguishes this boot's kernel
    /// timestamps from every other's.
    pub boot_id: String,
}

impl HostInfo {
    pub fn read() -> io::Result<Self> {
        let uname = rustix::system::uname();
        let kubernetes_node = std::env::var("NODE_NAME")
            .ok()
            .filter(|name| !name.is_empty());
        Ok(Self {
            name: kubernetes_node
                .clone()
                .unwrap_or_else(|| uname.nodename().to_string_lossy().into_owned()),
            kubernetes_node,
            kernel: uname.release().to_string_lossy().into_owned(),
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")?
                .trim()
                .to_owned(),
        })
    }

    /// The kernel's `major.minor`, if the release string starts with one.
    pub fn kernel_version(&self) -> Option<(u32, u32)> {
        let mut parts = self.kernel.split(['.', '-']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
}

/// The wall-clock time of a `CLOCK_BOOTTIME` kernel timestamp
/// (`bpf_ktime_get_boot_ns`). Computed per event from both clocks read side
/// by side, so a clock step (NTP) is honoured from the next event on.
pub fn wall_clock_of_boot_ns(boot_ns: u64) -> SystemTime {
    let now_boot = clock_gettime(ClockId::Boottime);
    let now_wall = SystemTime::now();
    let now_boot_ns = now_boot.tv_sec as u64 * 1_000_000_000 + now_boot.tv_nsec as u64;
    match now_boot_ns.checked_sub(boot_ns) {
        Some(ago) => now_wall - Duration::from_nanos(ago),
        None => now_wall + Duration::from_nanos(boot_ns - now_boot_ns),
    }
}

/// CLOCK_BOOTTIME now, in nanoseconds.
pub fn boot_ns_now() -> u64 {
    let now = clock_gettime(ClockId::Boottime);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The kernel's page size in bytes: the unit of its memory counters.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}
