//! `kprobe/oom_kill_process` and `fentry/oom_kill_process`: the OOM
//! killer's decision, with the context the tracepoint lacks.
//!
//! ```text
//! static void oom_kill_process(struct oom_control *oc, const char *message)   4.6+
//! ```
//!
//! The return hooks drop the stash again.
//!
//! Runs in the trigger task (`current`) just before it marks its victims,
//! so the context is stashed under the trigger's thread id and taken by
//! `mark_victim`, which the same task reaches synchronously for the chosen
//! victim and for each one a `memory.oom.group` kill adds. Kernels that
//! allow neither kprobes nor fentry (some hardened or micro-VM kernels)
//! leave these fields to the kernel log; see the collector's `kmsg`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_ktime_get_boot_ns},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    Global,
};
use oom_common::{KernelOffsets, OomControl, OomControlOffsets};

use crate::{maps::OOM_CONTROLS, task};

#[unsafe(no_mangle)]
static OOM_CONTROL_OFFSETS: Global<OomControlOffsets> = Global::new(OomControlOffsets::unknown());

#[kprobe]
pub fn oom_kill_process(ctx: ProbeContext) -> u32 {
    if let Some(oc) = ctx.arg::<*const u8>(0) {
        stash(oc);
    }
    0
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> u32 {
    let oc: *const u8 = ctx.arg(0);
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

#[inline(always)]
fn forget() {
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_CONTROLS.remove(trigger_tid);
}

#[inline(always)]
fn read<T: Default>(base: *const u8, offset: u32) -> T {
    if offset == KernelOffsets::UNKNOWN || base.is_null() {
        return T::default();
    }
    // SAFETY: a probe read; a bad address gives an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .unwrap_or_default()
}

#[inline(always)]
fn stash(oc: *const u8) {
    let offsets = OOM_CONTROL_OFFSETS.load();
    let memcg: *const u8 = read::<u64>(oc, offsets.memcg) as *const u8;
    let chosen: *const u8 = read::<u64>(oc, offsets.chosen) as *const u8;
    let (memcg_id, (memcg_usage_pages, memcg_max_pages)) =
        if memcg.is_null() || offsets.memcg_css == KernelOffsets::UNKNOWN {
            (0, (0, 0))
        } else {
            let css = memcg.wrapping_add(offsets.memcg_css as usize);
            (
                task::css_cgroup_id(css).unwrap_or(0),
                task::memcg_pages(css).unwrap_or((0, 0)),
            )
        };
    let context = OomControl {
        // SAFETY: a helper without arguments.
        incident_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        totalpages: read(oc, offsets.totalpages),
        chosen_points: read(oc, offsets.chosen_points),
        memcg_id,
        gfp_mask: read(oc, offsets.gfp_mask),
        order: read(oc, offsets.order),
        constraint: read(oc, offsets.constraint),
        chosen_tid: task::task_ids(chosen).map_or(0, |ids| ids.tid),
        memcg_usage_pages,
        memcg_max_pages,
    };
    let trigger_tid = bpf_get_current_pid_tgid() as u32;
    let _ = OOM_CONTROLS.insert(trigger_tid, context, 0);
}
