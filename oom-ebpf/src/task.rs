//! Reads of `task_struct` and the cgroup structs behind it.
//!
//! Rust eBPF has no CO-RE relocations, so the collector resolves each field's
//! offset from `/sys/kernel/btf/vmlinux` and passes them in [`OFFSETS`].
//! Every read goes through `bpf_probe_read_kernel`, which fails cleanly on a
//! bad pointer instead of faulting.

use aya_ebpf::{helpers::bpf_probe_read_kernel, Global};
use oom_common::KernelOffsets;

#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::unknown());

/// The offsets the collector resolved for this kernel.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    OFFSETS.load()
}

/// Why a read could not be made.
pub enum ReadError {
    /// The collector could not resolve an offset on this kernel.
    NoOffset,
    /// `bpf_probe_read_kernel` failed.
    Fault,
}

#[inline(always)]
fn read_field<T>(base: *const u8, offset: u32) -> Result<T, ReadError> {
    if offset == KernelOffsets::UNKNOWN || base.is_null() {
        return Err(ReadError::NoOffset);
    }
    // SAFETY: a probe read of kernel memory; it returns an error rather than
    // faulting when the address is bad.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(|_| ReadError::Fault)
}

/// The ids of a task that the record carries.
pub struct TaskIds {
    pub tid: u32,
    pub tgid: u32,
    pub parent_tgid: u32,
}

pub fn task_ids(task: *const u8) -> Result<TaskIds, ReadError> {
    let offsets = OFFSETS.load();
    let tid: i32 = read_field(task, offsets.task_pid)?;
    let tgid: i32 = read_field(task, offsets.task_tgid)?;
    let parent: *const u8 = read_field(task, offsets.task_real_parent)?;
    let parent_tgid: i32 = read_field(parent, offsets.task_tgid)?;
    Ok(TaskIds {
        tid: tid as u32,
        tgid: tgid as u32,
        parent_tgid: parent_tgid as u32,
    })
}

/// `cgroup->kn->id`: the id user space sees as the cgroup directory's inode.
#[inline(always)]
fn cgroup_id(cgroup: *const u8, offsets: &KernelOffsets) -> Result<u64, ReadError> {
    let kn: *const u8 = read_field(cgroup, offsets.cgroup_kn)?;
    read_field(kn, offsets.kernfs_node_id)
}

/// The task's cgroup on the unified hierarchy: `task->cgroups->dfl_cgrp`.
pub fn unified_cgroup_id(task: *const u8) -> Result<u64, ReadError> {
    let offsets = OFFSETS.load();
    let css_set: *const u8 = read_field(task, offsets.task_cgroups)?;
    let cgroup: *const u8 = read_field(css_set, offsets.css_set_dfl_cgrp)?;
    cgroup_id(cgroup, &offsets)
}

/// The task's memory cgroup:
/// `task->cgroups->subsys[memory_cgrp_id]->cgroup`. On cgroup v1 this is a
/// directory of the memory controller's hierarchy; on v2 the nearest
/// ancestor with the memory controller enabled.
pub fn memory_cgroup_id(task: *const u8) -> Result<u64, ReadError> {
    let offsets = OFFSETS.load();
    let css_set: *const u8 = read_field(task, offsets.task_cgroups)?;
    let css: *const u8 = read_field(css_set, offsets.css_set_memory_css)?;
    let cgroup: *const u8 = read_field(css, offsets.css_cgroup)?;
    cgroup_id(cgroup, &offsets)
}

/// The task's `mm_struct`; fails for kernel threads, which have none.
pub fn task_mm(task: *const u8) -> Result<*const u8, ReadError> {
    let mm: *const u8 = read_field(task, OFFSETS.load().task_mm)?;
    if mm.is_null() {
        return Err(ReadError::Fault);
    }
    Ok(mm)
}

/// The user-space range holding a task's arguments:
/// `task->mm->arg_start .. arg_end`. `None` for kernel threads.
pub fn arg_range(task: *const u8) -> Result<(u64, u64), ReadError> {
    let offsets = OFFSETS.load();
    let mm = task_mm(task)?;
    let start: u64 = read_field(mm, offsets.mm_arg_start)?;
    let end: u64 = read_field(mm, offsets.mm_arg_end)?;
    Ok((start, end))
}

/// A memory cgroup's `memory` page counter: (usage, max) in pages. `css`
/// is the memory controller's `cgroup_subsys_state` of that cgroup.
pub fn memcg_pages(css: *const u8) -> Result<(u64, u64), ReadError> {
    let offsets = OFFSETS.load();
    if offsets.memcg_css == KernelOffsets::UNKNOWN {
        return Err(ReadError::NoOffset);
    }
    let memcg = css.wrapping_sub(offsets.memcg_css as usize);
    let usage: u64 = read_field(memcg, offsets.memcg_memory_usage)?;
    let max: u64 = read_field(memcg, offsets.memcg_memory_max)?;
    Ok((usage, max))
}

/// The task's memory cgroup's css: `task->cgroups->subsys[memory_cgrp_id]`.
pub fn memory_css(task: *const u8) -> Result<*const u8, ReadError> {
    let offsets = OFFSETS.load();
    let css_set: *const u8 = read_field(task, offsets.task_cgroups)?;
    read_field(css_set, offsets.css_set_memory_css)
}

/// A task's thread id and process id, without its parent.
pub fn thread_and_process(task: *const u8) -> Result<(u32, u32), ReadError> {
    let offsets = OFFSETS.load();
    let tid: i32 = read_field(task, offsets.task_pid)?;
    let tgid: i32 = read_field(task, offsets.task_tgid)?;
    Ok((tid as u32, tgid as u32))
}

/// How many of the task's process's threads have not yet started to exit:
/// `task->signal->live`, which `do_exit()` decrements before the
/// `sched_process_exit` tracepoint, so 0 there means the process is over.
pub fn live_threads(task: *const u8) -> Result<i32, ReadError> {
    let offsets = OFFSETS.load();
    let signal: *const u8 = read_field(task, offsets.task_signal)?;
    read_field(signal, offsets.signal_live)
}
