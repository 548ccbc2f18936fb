//! `tracepoint/sched/sched_process_exit`: a task is exiting.
//!
//! ```text
//! TRACE_EVENT(sched_process_exit, TP_PROTO(struct task_struct *p), ...)  2.6.32+
//!     adds group_dead                                                   6.16+
//! ```
//!
//! Fires in the exiting task (`current`), for every thread. When the last
//! thread of a process exits, its `CMDLINES` entry goes with it: an entry
//! never outlives its process, so a pid the kernel hands out again never
//! shows the arguments of the process that had it before. Whether this was
//! the last thread is read from `signal->live` (every kernel) rather than
//! the tracepoint's `group_dead` field (6.16+ only).
//!
//! A victim's line is not affected: the kill record takes its copy of the
//! entry at `mark_victim`, before the victim can exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
};
use oom_common::Stat;

use crate::{
    error::ProbeResult,
    maps::{count, CMDLINES},
    task,
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if try_sched_process_exit().is_err() {
        count(Stat::ReadFailed);
    }
    0
}

fn try_sched_process_exit() -> ProbeResult {
    // SAFETY: a helper without arguments.
    let current = unsafe { bpf_get_current_task() };
    if task::live_threads(current)? != 0 {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Absent when the process never had one (a kernel thread, or a process
    // whose parent had none): not an error.
    let _ = CMDLINES.remove(tgid);
    Ok(())
}
