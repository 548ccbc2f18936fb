//! `tracepoint/syscalls/sys_exit_{mmap,mremap,brk}`: memory requests the
//! kernel refused, the failures that come before an OOM kill.
//!
//! ```text
//! sys_exit_mmap, sys_exit_mremap, sys_exit_brk (field `long ret`)   2.6.37+
//! sys_enter_* (fields `len`, `new_len`, `brk`)                       2.6.37+
//! bpf_task_pt_regs(), bpf_get_current_task_btf()                     5.15+
//! ```
//!
//! `mmap` and `mremap` fail with `-ENOMEM`. `brk` never returns an error: it
//! returns the unchanged break when it cannot grow, so a failure is a
//! return below the break asked for. Through fexit, the size asked for is
//! read from the task's saved user registers (`pt_regs`, offsets from BTF),
//! only on the failure path, so the common case costs one comparison. The
//! tracepoints do the same where the kernel has `bpf_task_pt_regs()`;
//! before 5.15 (or without BTF) the entry tracepoint keeps the size in
//! `SYSCALL_REQUESTS` for the exit instead, which needs no helper newer
//! than 4.x, so this way works on every kernel the collector runs on.
//!
//! Failures are counted in `ALLOC_FAILURES` per process and in
//! `ALLOC_FAILURE_CGROUPS` per memory cgroup, never sent one by one: a
//! storm of a million costs a bounded number of events, and a cgroup that
//! fills the per-process table still has every failure counted.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_ktime_get_boot_ns, bpf_task_pt_regs,
        },
    },
    macros::{fexit, tracepoint},
    maps::PerCpuHashMap,
    programs::{FExitContext, TracePointContext},
    Global,
};
use oom_common::{
    AddFailure, AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts,
    AllocFailureKey, AllocSyscall, PageAllocOffsets, Stat, SyscallOffsets, OFFSET_UNKNOWN,
};

use crate::{
    cgroup,
    error::{ProbeError, ProbeResult},
    maps::{alloc_epoch, count, ALLOC_FAILURES, ALLOC_FAILURE_CGROUPS, SYSCALL_REQUESTS},
};

const ENOMEM: i64 = 12;

#[unsafe(no_mangle)]
static SYSCALL_OFFSETS: Global<SyscallOffsets> = Global::new(SyscallOffsets::unknown());

#[unsafe(no_mangle)]
static PAGE_ALLOC_OFFSETS: Global<PageAllocOffsets> = Global::new(PageAllocOffsets::unknown());

/// `tracepoint/kmem/mm_page_alloc`: every page allocation, successful or
/// not (`pfn` is `-1UL` when `__alloc_pages()` found no page). The hottest
/// hook here: it does one read and one comparison unless the allocation
/// failed, and is off unless `--page-alloc-failures` asks for it.
#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    counted(try_mm_page_alloc(&ctx))
}

#[inline(always)]
fn try_mm_page_alloc(ctx: &TracePointContext) -> ProbeResult {
    let offsets = PAGE_ALLOC_OFFSETS.load();
    if offsets.pfn == OFFSET_UNKNOWN {
        return Ok(());
    }
    // SAFETY: probe reads inside the tracepoint's record.
    let pfn = unsafe { ctx.read_at::<u64>(offsets.pfn as usize) }.unwrap_or(0);
    if pfn != u64::MAX {
        return Ok(());
    }
    // SAFETY: as above.
    let order = unsafe { ctx.read_at::<u32>(offsets.order as usize) }.unwrap_or(0);
    let gfp = match offsets.gfp_flags_size {
        // SAFETY: as above.
        8 => unsafe { ctx.read_at::<u64>(offsets.gfp_flags as usize) }.unwrap_or(0),
        4 => u64::from(unsafe { ctx.read_at::<u32>(offsets.gfp_flags as usize) }.unwrap_or(0)),
        _ => 0,
    };
    let request = u64::from(offsets.page_size) << (order & 31);
    // In interrupt context `current` is whoever was interrupted. Only an
    // allocation that may sleep (direct reclaim) is surely the current
    // process's own; the record's `common_flags`, which would say, are
    // overwritten for BPF programs (perf_trace_run_bpf_submit puts the
    // pt_regs pointer in the record's first 8 bytes).
    let sleeps = gfp & u64::from(offsets.gfp_direct_reclaim) != 0;
    record_failure_of(AllocSyscall::PageAlloc, request, sleeps)
}

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    keep_request(&ctx, 0)
}

#[tracepoint(category = "syscalls", name = "sys_enter_mremap")]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    keep_request(&ctx, 1)
}

#[tracepoint(category = "syscalls", name = "sys_enter_brk")]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    keep_request(&ctx, 2)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let kept = take_request();
    counted(try_mmap_exit(exit_ret(&ctx), || request(1, kept)))
}

#[tracepoint(category = "syscalls", name = "sys_exit_mremap")]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    let kept = take_request();
    counted(try_mremap_exit(exit_ret(&ctx), || request(2, kept)))
}

#[tracepoint(category = "syscalls", name = "sys_exit_brk")]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    let kept = take_request();
    counted(try_brk_exit(exit_ret(&ctx) as u64, || request(0, kept)))
}

/// Whether the entry tracepoints keep the size asked for. A constant the
/// collector sets at load: where it is 1, the verifier sees the register
/// read below as dead code and does not ask for its helpers, which older
/// kernels lack.
#[inline(always)]
fn keeping_requests() -> bool {
    SYSCALL_OFFSETS.load().keep_requests != 0
}

/// The size asked for in argument `n`: what the entry kept, or the saved
/// user registers.
#[inline(always)]
fn request(n: usize, kept: u64) -> u64 {
    if keeping_requests() {
        kept
    } else {
        syscall_arg(n)
    }
}

/// Keeps the size asked for (`enter_request[index]`'s field of a
/// `sys_enter_*` record) for the thread's exit from the call, where the
/// exit cannot read it from the registers.
#[inline(always)]
fn keep_request(ctx: &TracePointContext, index: usize) -> u32 {
    if !keeping_requests() {
        return 0;
    }
    let Some(&offset) = SYSCALL_OFFSETS.load().enter_request.get(index) else {
        return 0;
    };
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read inside the tracepoint's record.
    let Ok(request) = (unsafe { ctx.read_at::<u64>(offset as usize) }) else {
        return 0;
    };
    // Full is impossible for an LRU; any other failure leaves the exit
    // without the size, which a failure is then reported without (brk's
    // is then not recognised).
    let _ = SYSCALL_REQUESTS.insert(bpf_get_current_pid_tgid(), request, 0);
    0
}

/// What the thread's `sys_enter_*` kept (0 if nothing), removed so the
/// table holds only calls in progress.
#[inline(always)]
fn take_request() -> u64 {
    if !keeping_requests() {
        return 0;
    }
    let thread = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    match unsafe { SYSCALL_REQUESTS.get(thread) } {
        Some(request) => {
            let request = *request;
            let _ = SYSCALL_REQUESTS.remove(thread);
            request
        }
        None => 0,
    }
}

// The same three system calls hooked by fexit on their entry points
// (`__x64_sys_mmap` ...: `long (const struct pt_regs *regs)`, 5.5+), where
// the kernel allows it. Unlike a syscall tracepoint, which puts every
// system call of every task on the kernel's slow path, these cost only
// the calls they watch. The collector loads them with the architecture's
// function names.

#[fexit]
pub fn mmap_return(ctx: FExitContext) -> u32 {
    counted(try_mmap_exit(ctx.arg(1), || syscall_arg(1)))
}

#[fexit]
pub fn mremap_return(ctx: FExitContext) -> u32 {
    counted(try_mremap_exit(ctx.arg(1), || syscall_arg(2)))
}

#[fexit]
pub fn brk_return(ctx: FExitContext) -> u32 {
    counted(try_brk_exit(ctx.arg(1), || syscall_arg(0)))
}

/// What these programs return. A failure that could not be counted in
/// `ALLOC_FAILURES` is counted in `Stat::AllocFailureTableFull` instead,
/// so the total stays exact.
#[inline(always)]
fn counted(result: ProbeResult) -> u32 {
    if result.is_err() {
        count(Stat::AllocFailureTableFull);
    }
    0
}

/// `request` gives the size asked for (0 if unknown): `mmap(addr, length,
/// ...)`'s length.
#[inline(always)]
fn try_mmap_exit(ret: i64, request: impl FnOnce() -> u64) -> ProbeResult {
    if ret != -ENOMEM {
        return Ok(());
    }
    record_failure(AllocSyscall::Mmap, request())
}

/// `request`: `mremap(old_address, old_size, new_size, ...)`'s new size.
#[inline(always)]
fn try_mremap_exit(ret: i64, request: impl FnOnce() -> u64) -> ProbeResult {
    if ret != -ENOMEM {
        return Ok(());
    }
    record_failure(AllocSyscall::Mremap, request())
}

/// `wanted`: `brk(addr)`'s address (0 if unknown).
#[inline(always)]
fn try_brk_exit(current_break: u64, wanted: impl FnOnce() -> u64) -> ProbeResult {
    // brk(addr): 0 only asks where the break is.
    let wanted = wanted();
    if wanted > current_break && current_break != 0 {
        record_failure(AllocSyscall::Brk, wanted - current_break)
    } else {
        Ok(())
    }
}

/// The system call's return value; 0 if it cannot be read.
#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    let offset = SYSCALL_OFFSETS.load().exit_ret;
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read inside the tracepoint's record.
    unsafe { ctx.read_at::<i64>(offset as usize) }.unwrap_or(0)
}

/// Argument `n` (0-2) of the current system call, from the saved user
/// registers; 0 if it cannot be read.
#[inline(always)]
fn syscall_arg(n: usize) -> u64 {
    let Some(&offset) = SYSCALL_OFFSETS.load().regs_arg.get(n) else {
        return 0;
    };
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    // SAFETY: helpers on the current task; the verifier checks the BTF
    // pointer, and the register read is a probe read.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        if regs.is_null() {
            return 0;
        }
        bpf_probe_read_kernel(regs.wrapping_add(offset as usize).cast::<u64>()).unwrap_or(0)
    }
}

/// `request_bytes` is the size asked for, 0 if unknown.
#[inline(always)]
fn record_failure(syscall: AllocSyscall, request_bytes: u64) -> ProbeResult {
    record_failure_of(syscall, request_bytes, true)
}

/// Counts a failure for the current process, or for no process when
/// `in_process` is false: in its memory cgroup's tally, and in its own.
/// Fails only when neither table had room for it.
#[inline(always)]
fn record_failure_of(syscall: AllocSyscall, request: u64, in_process: bool) -> ProbeResult {
    let epoch = alloc_epoch();
    // SAFETY: helpers without arguments.
    let (now, current) = unsafe { (bpf_ktime_get_boot_ns(), bpf_get_current_task()) };
    let memcg_id = if in_process {
        cgroup::memory_cgroup_id(current)
    } else {
        0
    };
    let cgroup_key = AllocFailureCgroupKey {
        memcg_id,
        syscall: syscall as u8,
        epoch,
        _pad0: [0; 6],
    };
    let cgroup_first = || AllocFailureCgroupCounts {
        count: 1,
        first_boot_ns: now,
        last_boot_ns: now,
        max_request_bytes: request,
    };
    let in_cgroup = count_in(
        &ALLOC_FAILURE_CGROUPS,
        cgroup_key,
        cgroup_first,
        now,
        request,
    );
    let in_process_table = count_for_process(syscall, epoch, in_process, memcg_id, now, request);
    // The cgroup's tally alone lets the collector count it exactly.
    in_cgroup.or(in_process_table)
}

/// Adds a failure to its process's tally.
#[inline(always)]
fn count_for_process(
    syscall: AllocSyscall,
    epoch: u8,
    in_process: bool,
    memcg_id: u64,
    now: u64,
    request: u64,
) -> ProbeResult {
    let key = AllocFailureKey {
        tgid: if in_process {
            (bpf_get_current_pid_tgid() >> 32) as u32
        } else {
            0
        },
        syscall: syscall as u8,
        epoch,
        _pad0: 0,
    };
    let first = || {
        if in_process {
            AllocFailureCounts {
                count: 1,
                first_boot_ns: now,
                last_boot_ns: now,
                max_request_bytes: request,
                // SAFETY: a helper without arguments.
                cgroup_id: unsafe { bpf_get_current_cgroup_id() },
                memcg_id,
                comm: bpf_get_current_comm().unwrap_or([0; oom_common::COMM_LEN]),
            }
        } else {
            AllocFailureCounts {
                count: 1,
                first_boot_ns: now,
                last_boot_ns: now,
                max_request_bytes: request,
                ..AllocFailureCounts::default()
            }
        }
    };
    count_in(&ALLOC_FAILURES, key, first, now, request)
}

/// Adds a failure to `key`'s tally in `table`, made with `first` if it
/// is not there yet. Fails when the table has no room for a new key.
#[inline(always)]
fn count_in<K: Copy, V: AddFailure>(
    table: &PerCpuHashMap<K, V>,
    key: K,
    first: impl FnOnce() -> V,
    now: u64,
    request: u64,
) -> ProbeResult {
    if let Some(counts) = table.get_ptr_mut(key) {
        add(counts, now, request);
        return Ok(());
    }
    // NOEXIST: if another CPU created the key meanwhile, replacing its
    // element would lose its count; add to it instead.
    if table.insert(key, first(), BPF_NOEXIST.into()).is_err() {
        let counts = table.get_ptr_mut(key).ok_or(ProbeError::MapUpdateFailed)?;
        add(counts, now, request);
    }
    Ok(())
}

/// Adds one failure to this CPU's slot of an existing key.
#[inline(always)]
fn add<V: AddFailure>(counts: *mut V, now: u64, request: u64) {
    // SAFETY: this CPU's slot of a per-CPU value; programs on one CPU do
    // not run concurrently.
    unsafe { &mut *counts }.add_failure(now, request);
}
