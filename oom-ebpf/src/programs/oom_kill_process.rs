//! `kprobe/oom_kill_process` and `fentry/oom_kill_process`: the OOM
//! killer's decision, with the context the tracepoint lacks.
//!
//! ```text
//! static void oom_kill_process(struct oom_control *oc, const char *message)   4.6+
//! ```
//!
//! The return hooks drop the stash again.
//!
//! It also reads the chosen victim's own `task_struct` (`oc->chosen`): on
//! kernels before 6.1 the tracepoint gives only the victim's pid, and this
//! is where the kill line gets its name, memory and cgroups.
//!
//! Runs in the trigger task (`current`) just before it marks its victims,
//! so the context is stashed under the trigger's thread id and taken by
//! `mark_victim`, which the same task reaches synchronously for the chosen
//! victim and for each one a `memory.oom.group` kill adds. Kernels that
//! allow neither kprobes nor fentry (some hardened or micro-VM kernels)
//! leave these fields to the kernel log; see the collector's `kmsg`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_boot_ns},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    Global,
};
use oom_common::{
    ChosenTask, ChosenTaskOffsets, KernelOffsets, MemcgStatOffsets, MemcgStatsRecord,
    OomControlOffsets, RecordKind, MEMCG_STAT_COUNT, OFFSET_UNKNOWN,
};

use crate::{
    cgroup,
    error::{ProbeError, ProbeResult},
    maps::{this_cpu, EVENTS, OOM_CONTROLS, OOM_CONTROL_SCRATCH},
    read::{self, load, pointer},
};

#[unsafe(no_mangle)]
static OOM_CONTROL_OFFSETS: Global<OomControlOffsets> = Global::new(OomControlOffsets::unknown());

#[unsafe(no_mangle)]
static CHOSEN_TASK_OFFSETS: Global<ChosenTaskOffsets> = Global::new(ChosenTaskOffsets::unknown());

#[unsafe(no_mangle)]
static MEMCG_STAT_OFFSETS: Global<MemcgStatOffsets> = Global::new(MemcgStatOffsets::unknown());

#[kprobe]
pub fn oom_kill_process(ctx: ProbeContext) -> u32 {
    uncounted(first_arg(&ctx).and_then(try_oom_kill_process))
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> u32 {
    uncounted(try_oom_kill_process(ctx.arg(0)))
}

/// The stash is only valid during the call: `mark_victim` is also reached
/// without `oom_kill_process` (a task already exiting marks itself), and
/// must not pick up an old context then.
#[kretprobe]
pub fn oom_kill_process_return(_ctx: RetProbeContext) -> u32 {
    uncounted(try_oom_kill_process_return())
}

#[fexit(function = "oom_kill_process")]
pub fn oom_kill_process_fexit(_ctx: FExitContext) -> u32 {
    uncounted(try_oom_kill_process_return())
}

/// `__oom_kill_process(struct task_struct *victim, const char *message)`:
/// kills one victim, the chosen one or one a `memory.oom.group` kill adds,
/// and marks it at once. Reads that victim into the trigger's stash, and
/// says it was killed: `oom_kill_process()` marks a chosen victim that is
/// already exiting without calling this (`task_will_free_mem()`).
#[kprobe]
pub fn oom_kill_victim(ctx: ProbeContext) -> u32 {
    uncounted(first_arg(&ctx).and_then(try_oom_kill_victim))
}

#[fentry(function = "__oom_kill_process")]
pub fn oom_kill_victim_fentry(ctx: FEntryContext) -> u32 {
    uncounted(try_oom_kill_victim(ctx.arg(0)))
}

/// The probed function's first argument, from the saved registers.
#[inline(always)]
fn first_arg(ctx: &ProbeContext) -> ProbeResult<u64> {
    ctx.arg(0).ok_or(ProbeError::ReadFailed)
}

/// What these programs return. A failure is not counted: the kill record
/// then lacks the OOM's context (`incident_boot_ns` 0) or the victim's
/// (`ChosenTask::read`), and says so, as on a kernel where none of these
/// hooks attach.
#[inline(always)]
fn uncounted(_result: ProbeResult) -> u32 {
    0
}

/// Reads the OOM's context from `oc` and stashes it under the trigger.
#[inline(always)]
fn try_oom_kill_process(oc: u64) -> ProbeResult {
    let context = this_cpu(&OOM_CONTROL_SCRATCH, 0)?;
    let offsets = OOM_CONTROL_OFFSETS.load();
    let kernel = read::offsets();

    // SAFETY: a helper without arguments.
    context.incident_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    load(&mut context.totalpages, oc, offsets.totalpages);
    load(&mut context.chosen_points, oc, offsets.chosen_points);
    load(&mut context.gfp_mask, oc, offsets.gfp_mask);
    load(&mut context.order, oc, offsets.order);
    load(&mut context.constraint, oc, offsets.constraint);

    // The limited memory cgroup. `oc->memcg` is NULL for a global OOM: the
    // reads through it fail and leave 0, which says so.
    let memcg = pointer(oc, offsets.memcg);
    context.memcg_id = 0;
    context.memcg_usage_pages = 0;
    context.memcg_max_pages = 0;
    if offsets.memcg_css != OFFSET_UNKNOWN {
        let css = memcg.wrapping_add(u64::from(offsets.memcg_css));
        context.memcg_id = cgroup::css_cgroup_id(css, &kernel);
        (context.memcg_usage_pages, context.memcg_max_pages) = cgroup::memcg_pages(memcg, &kernel);
        send_memcg_stats(memcg, context.incident_boot_ns, context.memcg_id);
    }

    let chosen = pointer(oc, offsets.chosen);
    context.chosen_tid = 0;
    load(&mut context.chosen_tid, chosen, kernel.task_pid);
    read_chosen_task(chosen, &kernel, &mut context.chosen);

    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    OOM_CONTROLS
        .insert(trigger_tid, context, 0)
        .map_err(|_| ProbeError::MapUpdateFailed)
}

/// Sends the stat counters of `memcg`, the limited memory cgroup, as they
/// are before the victim is chosen and killed (see `MemcgStatsRecord`).
/// Nothing for a global OOM (no `memcg`) or where the collector could not
/// place the counters. Not counted as a loss when the ring buffer is full:
/// the kill lines then take these stats from the kernel log or cgroupfs,
/// and say so.
#[inline(always)]
fn send_memcg_stats(memcg: u64, incident_boot_ns: u64, memcg_id: u64) {
    let offsets = MEMCG_STAT_OFFSETS.load();
    if offsets.state == OFFSET_UNKNOWN || memcg == 0 {
        return;
    }
    let owner = if offsets.vmstats == OFFSET_UNKNOWN {
        memcg
    } else {
        pointer(memcg, offsets.vmstats)
    };
    let state = owner.wrapping_add(u64::from(offsets.state));
    let mut record = MemcgStatsRecord {
        kind: RecordKind::MemcgStats as u32,
        read: 0,
        incident_boot_ns,
        memcg_id,
        values: [0; MEMCG_STAT_COUNT],
    };
    // Through a 0 `owner` every read fails, and `read` stays 0.
    for (i, value) in record.values.iter_mut().enumerate() {
        record.read |= load(value, state, offsets.slots[i]) << i;
    }
    if record.read != 0 {
        let _ = EVENTS.output::<MemcgStatsRecord>(&record, 0);
    }
}

#[inline(always)]
fn try_oom_kill_process_return() -> ProbeResult {
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    // Absent when the entry hook could not stash: nothing to forget.
    let _ = OOM_CONTROLS.remove(trigger_tid);
    Ok(())
}

#[inline(always)]
fn try_oom_kill_victim(victim: u64) -> ProbeResult {
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let context = OOM_CONTROLS
        .get_ptr_mut(trigger_tid)
        .ok_or(ProbeError::NoEntry)?;
    // SAFETY: the trigger's own entry, written only by hooks running in
    // that task, one at a time.
    let context = unsafe { &mut *context };
    read_chosen_task(victim, &read::offsets(), &mut context.chosen);
    context.chosen.read |= ChosenTask::KILLED;
    Ok(())
}

/// What the kernel's own OOM report says of a victim, read from its
/// `task_struct` while it is still whole. Each group of fields stands
/// alone; `read` says which were read. A read through a pointer that could
/// not be read reads from 0, and fails.
#[inline(always)]
fn read_chosen_task(task: u64, kernel: &KernelOffsets, chosen: &mut ChosenTask) {
    let offsets = CHOSEN_TASK_OFFSETS.load();
    *chosen = ChosenTask::zeroed();

    load(&mut chosen.tid, task, kernel.task_pid);
    let mut ids = load(&mut chosen.tgid, task, kernel.task_tgid);
    let mut parent = 0u64;
    ids &= load(&mut parent, task, kernel.task_real_parent);
    ids &= load(&mut chosen.ppid, parent, kernel.task_tgid);
    ids &= load(&mut chosen.comm, task, offsets.task_comm);

    let mut real_cred = 0u64;
    let mut cred = load(&mut real_cred, task, offsets.task_real_cred);
    cred &= load(&mut chosen.uid, real_cred, offsets.cred_uid);

    let mut signal_struct = 0u64;
    let mut signal = load(&mut signal_struct, task, offsets.task_signal);
    let mut oom_score_adj = 0i16;
    signal &= load(
        &mut oom_score_adj,
        signal_struct,
        offsets.signal_oom_score_adj,
    );
    chosen.oom_score_adj = oom_score_adj.into();

    let mut mm_struct = 0u64;
    let mut mm = load(&mut mm_struct, task, kernel.task_mm);
    mm &= load(&mut chosen.total_vm_pages, mm_struct, offsets.mm_total_vm);
    mm &= load(&mut chosen.rss_file_pages, mm_struct, offsets.mm_rss_file);
    mm &= load(&mut chosen.rss_anon_pages, mm_struct, offsets.mm_rss_anon);
    mm &= load(&mut chosen.rss_shmem_pages, mm_struct, offsets.mm_rss_shmem);
    mm &= load(
        &mut chosen.pgtables_bytes,
        mm_struct,
        offsets.mm_pgtables_bytes,
    );

    // Ids and counters that could not be read are 0, as the record wants.
    let cgroups = cgroup::of_task(task, kernel);
    chosen.cgroup_id = cgroups.cgroup_id;
    chosen.memcg_id = cgroups.memcg_id;
    chosen.memcg_usage_pages = cgroups.memcg_usage_pages;
    chosen.memcg_max_pages = cgroups.memcg_max_pages;

    chosen.read = (ids * ChosenTask::IDS)
        | (cred * ChosenTask::CRED)
        | (signal * ChosenTask::SIGNAL)
        | (mm * ChosenTask::MM);
}
