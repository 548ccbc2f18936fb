//! Records shared by the kernel programs (`oom-ebpf`) and the collector.
//!
//! Every type here crosses the ring buffer or a map as raw bytes, so each is
//! `#[repr(C)]`, has no implicit padding (no `bool`, explicit `_pad` fields)
//! and carries a size assertion beside it that breaks the build if the two
//! sides could ever disagree. The collector's `user` feature adds `aya::Pod`
//! impls.
//!
//! One module per job, all re-exported here: the kill record on the ring
//! buffer ([`record`]) with the OOM's context ([`oom_control`]) and the
//! command line ([`cmdline`]) it carries, and the limited memory cgroup's
//! stats sent once per OOM ([`memcg_stats`]); the allocation-failure table's
//! keys and counts ([`alloc_failure`]); the kernel offsets the collector
//! resolves for the programs ([`offsets`]); and the indexes of the `STATS`
//! counters ([`stats`]) and `CONFIG` words ([`config`]).
#![no_std]

pub mod alloc_failure;
pub mod cmdline;
pub mod config;
pub mod memcg_stats;
pub mod offsets;
pub mod oom_control;
pub mod record;
pub mod stats;

pub use alloc_failure::{
    AddFailure, AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts,
    AllocFailureKey, AllocSyscall,
};
pub use cmdline::{Cmdline, CMDLINE_ARGS_BYTES, CMDLINE_PATH_BYTES};
pub use config::{
    CONFIG_ALLOC_EPOCH, CONFIG_COUNT, CONFIG_EXPECTED_PARTS, CONFIG_LOSSES_REPORTED, LOSS_COUNTERS,
};
pub use memcg_stats::{MemcgStatOffsets, MemcgStatsRecord, MEMCG_STAT_COUNT, MEMCG_STAT_ITEMS};
pub use offsets::{
    ChosenTaskOffsets, KernelOffsets, OomControlOffsets, PageAllocOffsets, SyscallOffsets,
    OFFSET_UNKNOWN,
};
pub use oom_control::{ChosenTask, OomControl};
pub use record::{part, OomKillRecord, RecordKind, OOM_KILL_RECORD_FIXED_BYTES, TRACEPOINT_BYTES};
pub use stats::{Stat, STAT_COUNT};

/// Length of a kernel task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

#[cfg(feature = "user")]
mod user {
    use super::{
        AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts, AllocFailureKey,
        ChosenTaskOffsets, Cmdline, KernelOffsets, MemcgStatOffsets, MemcgStatsRecord,
        OomControlOffsets, OomKillRecord, PageAllocOffsets, SyscallOffsets,
    };

    // SAFETY: all are `repr(C)`, consist only of integers and integer
    // arrays, and have no padding (checked by the size assertions beside
    // each).
    unsafe impl aya::Pod for OomKillRecord {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for AllocFailureKey {}
    unsafe impl aya::Pod for AllocFailureCounts {}
    unsafe impl aya::Pod for AllocFailureCgroupKey {}
    unsafe impl aya::Pod for AllocFailureCgroupCounts {}
    unsafe impl aya::Pod for SyscallOffsets {}
    unsafe impl aya::Pod for Cmdline {}
    unsafe impl aya::Pod for OomControlOffsets {}
    unsafe impl aya::Pod for ChosenTaskOffsets {}
    unsafe impl aya::Pod for PageAllocOffsets {}
    unsafe impl aya::Pod for MemcgStatOffsets {}
    unsafe impl aya::Pod for MemcgStatsRecord {}
}
