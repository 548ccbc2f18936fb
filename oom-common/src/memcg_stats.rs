//! The limited memory cgroup's own stats, read in the kernel at the OOM.
//!
//! The hooks on `oom_kill_process()` read `oc->memcg`'s stat counters (what
//! `memory.stat` prints) before the victim is killed, so the victim's
//! anonymous memory is still counted. They send them once per OOM as a
//! [`MemcgStatsRecord`], ahead of the OOM's kill records.

/// The counters read, in this order: the kernel's own names for them (an
/// enumerator of `enum node_stat_item` or `enum memcg_stat_item`). The unit
/// is in the name, as the kernel has it: `_B` bytes, `_KB` KiB, otherwise
/// pages.
pub const MEMCG_STAT_ITEMS: [&str; MEMCG_STAT_COUNT] = [
    "NR_ANON_MAPPED",
    "NR_FILE_PAGES",
    "NR_SHMEM",
    "MEMCG_KMEM",
    "NR_SLAB_RECLAIMABLE_B",
    "NR_SLAB_UNRECLAIMABLE_B",
    "NR_KERNEL_STACK_KB",
    "NR_PAGETABLE",
    "MEMCG_PERCPU_B",
    "MEMCG_SOCK",
    "MEMCG_SWAP",
    "NR_FILE_MAPPED",
    "NR_FILE_DIRTY",
    "NR_WRITEBACK",
];

/// Number of [`MEMCG_STAT_ITEMS`].
pub const MEMCG_STAT_COUNT: usize = 14;

/// Where a memory cgroup's stat counters are, from BTF.
///
/// ```text
/// 5.10         mem_cgroup { atomic_long_t vmstats[MEMCG_NR_STAT]; }
/// 5.11-6.2     mem_cgroup { struct memcg_vmstats vmstats; }       .state[MEMCG_NR_STAT]
/// 6.3-6.9      mem_cgroup { struct memcg_vmstats *vmstats; }      .state[MEMCG_NR_STAT]
/// ```
///
/// Since 6.10 the array holds only the counters a memory cgroup keeps, in
/// an order set at boot from a table that is in neither BTF nor kallsyms:
/// there the collector leaves `state` unknown and takes the stats from the
/// kernel log or cgroupfs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgStatOffsets {
    /// `mem_cgroup::vmstats` where it is a pointer; [`OFFSET_UNKNOWN`]
    /// where the counters are inside `mem_cgroup` itself.
    ///
    /// [`OFFSET_UNKNOWN`]: crate::OFFSET_UNKNOWN
    pub vmstats: u32,
    /// The counter array: from the `mem_cgroup`, or from where `vmstats`
    /// points.
    pub state: u32,
    /// Each of [`MEMCG_STAT_ITEMS`]' byte offset in the array; unknown for
    /// a counter this kernel does not have.
    pub slots: [u32; MEMCG_STAT_COUNT],
}

const _: () = assert!(core::mem::size_of::<MemcgStatOffsets>() == 8 + 4 * MEMCG_STAT_COUNT);

impl MemcgStatOffsets {
    pub const fn unknown() -> Self {
        Self {
            vmstats: crate::OFFSET_UNKNOWN,
            state: crate::OFFSET_UNKNOWN,
            slots: [crate::OFFSET_UNKNOWN; MEMCG_STAT_COUNT],
        }
    }
}

/// The limited memory cgroup's counters at one OOM.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgStatsRecord {
    /// [`RecordKind::MemcgStats`](crate::RecordKind::MemcgStats).
    pub kind: u32,
    /// Bit `i` set: `values[i]` was read.
    pub read: u32,
    /// The OOM, as its kill records' `oom.incident_boot_ns` name it.
    pub incident_boot_ns: u64,
    /// `oc->memcg`'s cgroup id.
    pub memcg_id: u64,
    /// In [`MEMCG_STAT_ITEMS`]' order and units. Signed: a counter summed
    /// from per-CPU parts can briefly run below zero, which the kernel
    /// shows as 0.
    pub values: [i64; MEMCG_STAT_COUNT],
}

const _: () = assert!(core::mem::size_of::<MemcgStatsRecord>() == 24 + 8 * MEMCG_STAT_COUNT);
