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

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel},
    },
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    Global,
};
use oom_common::{ChosenTask, ChosenTaskOffsets, KernelOffsets, OomControlOffsets};

use crate::{
    maps::{OOM_CONTROLS, OOM_CONTROL_SCRATCH},
    task,
};

#[unsafe(no_mangle)]
static OOM_CONTROL_OFFSETS: Global<OomControlOffsets> = Global::new(OomControlOffsets::unknown());

#[unsafe(no_mangle)]
static CHOSEN_TASK_OFFSETS: Global<ChosenTaskOffsets> = Global::new(ChosenTaskOffsets::unknown());

#[kprobe]
pub fn oom_kill_process(ctx: ProbeContext) -> u32 {
    if let Some(oc) = ctx.arg::<u64>(0) {
        stash(oc);
    }
    0
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> u32 {
    let oc: u64 = ctx.arg(0);
    stash(oc);
    0
}

/// The stash is only valid during the call: `mark_victim` is also reached
/// without `oom_kill_process` (a task already exiting marks itself), and
/// must not pick up an old context then.
#[kretprobe]
pub fn oom_kill_process_return(_ctx: RetProbeContext) -> u32 {
    forget();
    0
}

#[fexit(function = "oom_kill_process")]
pub fn oom_kill_process_fexit(_ctx: FExitContext) -> u32 {
    forget();
    0
}

/// `__oom_kill_process(struct task_struct *victim, const char *message)`:
/// kills one victim, the chosen one or one a `memory.oom.group` kill adds,
/// and marks it at once. Reads that victim into the trigger's stash, and
/// says it was killed: `oom_kill_process()` marks a chosen victim that is
/// already exiting without calling this (`task_will_free_mem()`).
#[kprobe]
pub fn oom_kill_victim(ctx: ProbeContext) -> u32 {
    if let Some(victim) = ctx.arg::<u64>(0) {
        restash_victim(victim);
    }
    0
}

#[fentry(function = "__oom_kill_process")]
pub fn oom_kill_victim_fentry(ctx: FEntryContext) -> u32 {
    let victim: u64 = ctx.arg(0);
    restash_victim(victim);
    0
}

#[inline(always)]
fn restash_victim(victim: u64) {
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let Some(context) = OOM_CONTROLS.get_ptr_mut(trigger_tid) else {
        return;
    };
    // SAFETY: the trigger's own entry, written only by hooks running in
    // that task, one at a time.
    let context = unsafe { &mut *context };
    read_chosen_task(victim, &task::offsets(), &mut context.chosen);
    context.chosen.read |= ChosenTask::KILLED;
}

#[inline(always)]
fn forget() {
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_CONTROLS.remove(trigger_tid);
}

/// Reads the OOM's context from `oc` and stashes it under the trigger.
#[inline(always)]
fn stash(oc: u64) {
    let Some(slot) = OOM_CONTROL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU slot is only touched by these programs, which do
    // not run twice at once on one CPU.
    let context = unsafe { &mut *slot };
    let offsets = OOM_CONTROL_OFFSETS.load();
    let kernel = task::offsets();

    // SAFETY: a helper without arguments.
    context.incident_boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    load(&mut context.totalpages, oc, offsets.totalpages);
    load(&mut context.chosen_points, oc, offsets.chosen_points);
    load(&mut context.gfp_mask, oc, offsets.gfp_mask);
    load(&mut context.order, oc, offsets.order);
    load(&mut context.constraint, oc, offsets.constraint);

    // The limited memory cgroup. `oc->memcg` is NULL for a global OOM: the
    // reads through it fail and leave 0, which says so.
    let mut ignored = 1;
    let memcg = pointer(oc, offsets.memcg, &mut ignored);
    context.memcg_id = 0;
    context.memcg_usage_pages = 0;
    context.memcg_max_pages = 0;
    if offsets.memcg_css != KernelOffsets::UNKNOWN {
        let css = memcg.wrapping_add(u64::from(offsets.memcg_css));
        let cgroup = pointer(css, kernel.css_cgroup, &mut ignored);
        let kn = pointer(cgroup, kernel.cgroup_kn, &mut ignored);
        load(&mut context.memcg_id, kn, kernel.kernfs_node_id);
        load(
            &mut context.memcg_usage_pages,
            memcg,
            kernel.memcg_memory_usage,
        );
        load(&mut context.memcg_max_pages, memcg, kernel.memcg_memory_max);
    }

    let chosen = pointer(oc, offsets.chosen, &mut ignored);
    context.chosen_tid = 0;
    load(&mut context.chosen_tid, chosen, kernel.task_pid);
    read_chosen_task(chosen, &kernel, &mut context.chosen);

    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_CONTROLS.insert(trigger_tid, context, 0);
}

/// A read whose outcome steers nothing: on failure the kernel zeroes `dst`
/// and this returns 0, else 1. The 5.10 verifier walks each path through a
/// program on its own; with a branch on each read's result, the reads here
/// made thousands of paths, and loading took minutes.
#[inline(always)]
fn load<T>(dst: &mut T, base: u64, offset: u32) -> u32 {
    // The offsets are read-only globals: the verifier knows them, and
    // keeps only one side of this branch.
    if offset == KernelOffsets::UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read; a bad address gives an error, not a fault.
    let result = unsafe {
        bpf_probe_read_kernel(
            (dst as *mut T).cast::<c_void>(),
            size_of::<T>() as u32,
            base.wrapping_add(u64::from(offset)) as *const c_void,
        )
    };
    u32::from(result == 0)
}

/// The pointer at `base + offset`; clears `ok` if it could not be read.
#[inline(always)]
fn pointer(base: u64, offset: u32, ok: &mut u32) -> u64 {
    let mut value = 0u64;
    *ok &= load(&mut value, base, offset);
    value
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
    let parent = pointer(task, kernel.task_real_parent, &mut ids);
    ids &= load(&mut chosen.ppid, parent, kernel.task_tgid);
    ids &= load(&mut chosen.comm, task, offsets.task_comm);

    let mut cred = 1;
    let real_cred = pointer(task, offsets.task_real_cred, &mut cred);
    cred &= load(&mut chosen.uid, real_cred, offsets.cred_uid);

    let mut signal = 1;
    let signal_struct = pointer(task, offsets.task_signal, &mut signal);
    let mut oom_score_adj = 0i16;
    signal &= load(
        &mut oom_score_adj,
        signal_struct,
        offsets.signal_oom_score_adj,
    );
    chosen.oom_score_adj = oom_score_adj.into();

    let mut mm = 1;
    let mm_struct = pointer(task, kernel.task_mm, &mut mm);
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
    let mut ignored = 1;
    let css_set = pointer(task, kernel.task_cgroups, &mut ignored);
    let unified = pointer(css_set, kernel.css_set_dfl_cgrp, &mut ignored);
    let kn = pointer(unified, kernel.cgroup_kn, &mut ignored);
    load(&mut chosen.cgroup_id, kn, kernel.kernfs_node_id);
    let memory_css = pointer(css_set, kernel.css_set_memory_css, &mut ignored);
    let memory = pointer(memory_css, kernel.css_cgroup, &mut ignored);
    let kn = pointer(memory, kernel.cgroup_kn, &mut ignored);
    load(&mut chosen.memcg_id, kn, kernel.kernfs_node_id);
    if kernel.memcg_css != KernelOffsets::UNKNOWN {
        let memcg = memory_css.wrapping_sub(u64::from(kernel.memcg_css));
        load(
            &mut chosen.memcg_usage_pages,
            memcg,
            kernel.memcg_memory_usage,
        );
        load(&mut chosen.memcg_max_pages, memcg, kernel.memcg_memory_max);
    }

    chosen.read = (ids * ChosenTask::IDS)
        | (cred * ChosenTask::CRED)
        | (signal * ChosenTask::SIGNAL)
        | (mm * ChosenTask::MM);
}
