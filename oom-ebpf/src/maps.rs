//! Maps shared by the programs, the counters of what they could not send,
//! and [`this_cpu`], the one way a program takes a per-CPU entry to fill.

use aya_ebpf::{
    btf_maps,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use oom_common::{
    AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts, AllocFailureKey, Cmdline,
    OomControl, OomKillRecord, Stat, CONFIG_ALLOC_EPOCH, CONFIG_COUNT, CONFIG_EXPECTED_PARTS,
    STAT_COUNT,
};

use crate::error::{ProbeError, ProbeResult};

/// Records for the collector. Its size is set at load time
/// (`--ring-buffer-bytes`); this is the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU counters indexed by [`Stat`].
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Words the collector writes after attaching (see `oom_common::CONFIG_*`).
#[map]
pub static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_COUNT, 0);

/// The OOM kill record under construction on each CPU; see
/// `oom_common::part` for why a kill is assembled in two steps.
#[map]
pub static PENDING_KILL: PerCpuArray<OomKillRecord> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(stat: Stat) {
    if let Ok(counter) = this_cpu(&STATS, stat as u32) {
        *counter += 1;
    }
}

/// This CPU's entry `index` of a per-CPU array, to fill in place. Records
/// and scratch values too big for the 512-byte eBPF stack are assembled in
/// such entries (index 0 of a one-entry array), and counters live in them.
///
/// Take an entry once per program run and let the reference go before
/// taking it again: two live references to one entry would alias.
#[expect(
    clippy::mut_from_ref,
    reason = "the entry is this CPU's, and only the running program touches it"
)]
#[inline(always)]
pub fn this_cpu<T>(array: &'static PerCpuArray<T>, index: u32) -> ProbeResult<&'static mut T> {
    let entry = array.get_ptr_mut(index).ok_or(ProbeError::NoEntry)?;
    // SAFETY: the entry belongs to this CPU, and the programs that share
    // one never run at the same time on one CPU (each runs to its end, with
    // migration disabled), so nothing else touches it while this program
    // runs.
    Ok(unsafe { &mut *entry })
}

/// The parts of a kill record the collector waits for: the tracepoint part
/// alone until it has attached the victim-task program as well.
#[inline(always)]
pub fn expected_parts() -> u32 {
    match CONFIG.get(CONFIG_EXPECTED_PARTS) {
        Some(&parts) if parts != 0 => parts,
        _ => oom_common::part::TRACEPOINT,
    }
}

/// `oom_kill_process` context by trigger thread id, from its entry hook
/// until `mark_victim` takes it (see `oom_common::OomControl`).
#[map]
pub static OOM_CONTROLS: HashMap<u32, OomControl> = HashMap::with_max_entries(1024, 0);

/// Where each CPU's `oom_kill_process` hook assembles the context before
/// stashing it: it is too large for the eBPF stack.
#[map]
pub static OOM_CONTROL_SCRATCH: PerCpuArray<OomControl> = PerCpuArray::with_max_entries(1, 0);

/// Allocation failures per process, system call and epoch parity; see
/// `oom_common::AllocFailureKey`. Not an LRU: eviction would lose counts.
#[map]
pub static ALLOC_FAILURES: PerCpuHashMap<AllocFailureKey, AllocFailureCounts> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// Every allocation failure per memory cgroup, request kind and epoch
/// parity, counted even when `ALLOC_FAILURES` has no room for its process:
/// one cgroup's thousands of failing processes cannot make another
/// cgroup's failures go uncounted. A node has hundreds of cgroups.
#[map]
pub static ALLOC_FAILURE_CGROUPS: PerCpuHashMap<AllocFailureCgroupKey, AllocFailureCgroupCounts> =
    PerCpuHashMap::with_max_entries(4096, 0);

/// No program reads it. The collector writes its one slot to wait until
/// every program that was running has finished: the kernel completes an
/// update of a map of maps only after an RCU grace period, and these
/// programs run inside RCU read-side sections. That makes the hand-over of
/// an allocation-failure epoch, and the last drain after the hooks are
/// detached, exact.
#[btf_map]
pub static BARRIER: btf_maps::ArrayOfMaps<btf_maps::Array<u32, 1>, 1> =
    btf_maps::ArrayOfMaps::new();

/// The parity allocation failures are counted under now.
#[inline(always)]
pub fn alloc_epoch() -> u8 {
    CONFIG
        .get(CONFIG_ALLOC_EPOCH)
        .map_or(0, |&epoch| (epoch & 1) as u8)
}

/// The size a thread's `mmap`, `mremap` or `brk` asked for, by thread
/// (`pid_tgid`), from the system call's entry tracepoint to its exit: the
/// exit record holds only the result. An LRU, so a thread killed inside
/// the call leaves nothing behind for long.
#[map]
pub static SYSCALL_REQUESTS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Command lines by process id, filled at exec (and by the collector from
/// `/proc` at start-up), so a kill can name the victim's whole command line
/// after the victim is gone. Its size is set at load time.
#[map]
pub static CMDLINES: LruHashMap<u32, Cmdline> = LruHashMap::with_max_entries(4096, 0);

/// Where a command line is assembled before it goes into `CMDLINES`: too
/// big for the 512-byte eBPF stack.
#[map]
pub static CMDLINE_SCRATCH: PerCpuArray<Cmdline> = PerCpuArray::with_max_entries(1, 0);
