//! Reads of a `task_struct` and what hangs off it: its ids, its parent, its
//! `mm` and its `signal`. Its cgroups are in `cgroup.rs`.

use oom_common::KernelOffsets;

use crate::{
    error::ProbeResult,
    read::{field, load, offsets},
};

/// The ids of a task that the kill record carries.
pub struct TaskIds {
    pub tid: u32,
    pub tgid: u32,
    pub parent_tgid: u32,
}

/// The task's ids, or all 0 if any could not be read. Straight-line (see
/// `read.rs`): all or nothing by multiplying, not by branching.
#[inline(always)]
pub fn task_ids(task: u64, offsets: &KernelOffsets) -> TaskIds {
    let (mut tid, mut tgid, mut parent, mut parent_tgid) = (0u32, 0u32, 0u64, 0u32);
    let mut read = load(&mut tid, task, offsets.task_pid);
    read &= load(&mut tgid, task, offsets.task_tgid);
    read &= load(&mut parent, task, offsets.task_real_parent);
    read &= load(&mut parent_tgid, parent, offsets.task_tgid);
    TaskIds {
        tid: tid * read,
        tgid: tgid * read,
        parent_tgid: parent_tgid * read,
    }
}

/// A task's thread id and process id, without its parent.
pub fn thread_and_process(task: u64) -> ProbeResult<(u32, u32)> {
    let offsets = offsets();
    let tid: i32 = field(task, offsets.task_pid)?;
    let tgid: i32 = field(task, offsets.task_tgid)?;
    Ok((tid as u32, tgid as u32))
}

/// The user-space range holding a task's arguments:
/// `task->mm->arg_start .. arg_end`. Fails for kernel threads, which have
/// no `mm`.
pub fn arg_range(task: u64) -> ProbeResult<(u64, u64)> {
    let offsets = offsets();
    let mm: u64 = field(task, offsets.task_mm)?;
    let start: u64 = field(mm, offsets.mm_arg_start)?;
    let end: u64 = field(mm, offsets.mm_arg_end)?;
    Ok((start, end))
}

/// How many of the task's process's threads have not yet started to exit:
/// `task->signal->live`, which `do_exit()` decrements before the
/// `sched_process_exit` tracepoint, so 0 there means the process is over.
pub fn live_threads(task: u64) -> ProbeResult<i32> {
    let offsets = offsets();
    let signal: u64 = field(task, offsets.task_signal)?;
    field(signal, offsets.signal_live)
}
