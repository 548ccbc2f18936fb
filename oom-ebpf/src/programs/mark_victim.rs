//! `tracepoint/oom/mark_victim`: the kernel has chosen an OOM victim.
//!
//! ```text
//! TRACE_EVENT(mark_victim, TP_PROTO(int pid), ...)              4.13+
//! TRACE_EVENT(mark_victim, TP_PROTO(struct task_struct *task, uid_t uid), ...)
//!     adds comm, total_vm, rss, uid, pgtables, oom_score_adj    6.1+
//! ```
//!
//! Fires in `mark_oom_victim()`, in the context of the task whose allocation
//! ran out of memory (the trigger), not the victim's. The record's layout
//! differs across kernels, so this program copies it whole and the collector
//! decodes it with the layout it read from tracefs; the only field read here
//! is the victim's pid, at the offset the collector found in that layout.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel},
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use oom_common::{part, OomControl, Stat, OFFSET_UNKNOWN};

use super::fill_kill_part;
use crate::{
    cgroup,
    error::ProbeResult,
    maps::{count, OOM_CONTROLS},
};

/// Offset of `pid` in the tracepoint record, from tracefs' `format`.
#[unsafe(no_mangle)]
static MARK_VICTIM_PID_OFFSET: Global<u32> = Global::new(OFFSET_UNKNOWN);

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    match try_mark_victim(&ctx) {
        Ok(()) => 0,
        Err(error) => {
            warn!(
                &ctx,
                "oom/mark_victim: record not sent (error {})",
                error.code()
            );
            0
        }
    }
}

fn try_mark_victim(ctx: &TracePointContext) -> ProbeResult {
    let pid_offset = MARK_VICTIM_PID_OFFSET.load();
    let victim_tid = if pid_offset == OFFSET_UNKNOWN {
        0
    } else {
        // SAFETY: a probe read inside the tracepoint's record.
        unsafe { ctx.read_at::<i32>(pid_offset as usize) }.unwrap_or(0) as u32
    };

    let pid_tgid = bpf_get_current_pid_tgid();
    let trigger_comm = bpf_get_current_comm().unwrap_or([0; oom_common::COMM_LEN]);
    // SAFETY: helpers without pointer arguments.
    let (trigger_cgroup_id, current) =
        unsafe { (bpf_get_current_cgroup_id(), bpf_get_current_task()) };
    let trigger_memcg_id = cgroup::memory_cgroup_id(current);

    fill_kill_part(victim_tid, part::TRACEPOINT, |record| {
        // SAFETY: a probe read of the tracepoint's record; it fails rather
        // than faults past its end.
        if unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut record.tracepoint) }
            .is_err()
        {
            count(Stat::ReadFailed);
        }
        record.trigger_tid = pid_tgid as u32;
        record.trigger_tgid = (pid_tgid >> 32) as u32;
        record.trigger_comm = trigger_comm;
        record.trigger_cgroup_id = trigger_cgroup_id;
        record.trigger_memcg_id = trigger_memcg_id;
        // The OOM's context, if a hook on oom_kill_process stashed it for
        // this (trigger) task; see `oom_kill_process.rs`. Copied map to
        // map: the record is too large for the stack. Without one,
        // `incident_boot_ns` 0 says the rest is not this kill's.
        record.oom.incident_boot_ns = 0;
        if let Some(context) = OOM_CONTROLS.get_ptr(pid_tgid as u32) {
            // SAFETY: a probe read between two map values of this type.
            let copied = unsafe {
                bpf_probe_read_kernel(
                    (&mut record.oom as *mut OomControl).cast(),
                    size_of::<OomControl>() as u32,
                    context.cast(),
                )
            };
            if copied != 0 {
                record.oom.incident_boot_ns = 0;
            }
        }
    })
}
