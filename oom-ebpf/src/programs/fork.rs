//! `raw_tracepoint/sched_process_fork`: a task was created.
//!
//! ```text
//! TRACE_EVENT(sched_process_fork,
//!     TP_PROTO(struct task_struct *parent, struct task_struct *child))  2.6.32+
//! raw tracepoints                                                         4.17+
//! ```
//!
//! Fires in the parent (`current`) once the child exists. A new process
//! forked without exec runs its parent's program with its parent's
//! arguments (a Python multiprocessing, celery, gunicorn or php-fpm worker,
//! a postgres backend), so it gets a copy of the parent's `CMDLINES` entry;
//! a parent without one leaves the child without one, never with whatever
//! an earlier process of the same pid left. New threads share their
//! process's entry and are skipped.
//!
//! The raw tracepoint, not the tracefs one: its record has the child's
//! thread id but not its process id, so it cannot tell a thread from a
//! process.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use oom_common::Stat;

use crate::{
    error::{ProbeError, ProbeResult},
    maps::{count, CMDLINES},
    task,
};

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    if try_sched_process_fork(&ctx).is_err() {
        count(Stat::ReadFailed);
    }
    0
}

fn try_sched_process_fork(ctx: &RawTracePointContext) -> ProbeResult {
    let child: u64 = ctx.arg(1);
    let (child_tid, child_tgid) = task::thread_and_process(child)?;
    if child_tid != child_tgid {
        return Ok(());
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a lookup by value; the entry is copied by the map update
    // below, which reads it under the map's own rules.
    match unsafe { CMDLINES.get(parent_tgid) } {
        Some(parent) => CMDLINES
            .insert(child_tgid, parent, 0)
            .map_err(|_| ProbeError::MapUpdateFailed),
        // Nothing to inherit; an entry left under this pid is another
        // process's. Deleting what is not there is not an error.
        None => {
            let _ = CMDLINES.remove(child_tgid);
            Ok(())
        }
    }
}
