//! Reads of the cgroup structs behind a task: `task->cgroups` (a `css_set`),
//! the cgroups it points at, their `kernfs_node` ids (what user space sees
//! as the cgroup directory's inode), and a memory cgroup's page counter.
//!
//! ```text
//! task->cgroups->dfl_cgrp->kn->id                      the unified (v2) cgroup
//! task->cgroups->subsys[memory_cgrp_id]                the memory css
//!     ->cgroup->kn->id                                 the memory cgroup
//! container_of(css, struct mem_cgroup, css)->memory    its usage and limit
//! ```
//!
//! Straight-line reads ([`load`], [`pointer`]): whatever could not be read
//! is 0, which no cgroup id is, and no branch depends on a read.

use oom_common::{KernelOffsets, OFFSET_UNKNOWN};

use crate::read::{load, offsets, pointer};

/// A task's cgroups as a kill record carries them; 0 for what could not be
/// read.
pub struct TaskCgroups {
    /// On the unified (v2) hierarchy.
    pub cgroup_id: u64,
    /// The memory cgroup: on cgroup v1 a directory of the memory
    /// controller's hierarchy; on v2 the nearest ancestor with the memory
    /// controller enabled.
    pub memcg_id: u64,
    /// The memory cgroup's `memory` page counter, now: usage and limit in
    /// pages.
    pub memcg_usage_pages: u64,
    pub memcg_max_pages: u64,
}

/// Everything [`TaskCgroups`] holds, for `task`.
#[inline(always)]
pub fn of_task(task: u64, offsets: &KernelOffsets) -> TaskCgroups {
    let css_set = css_set(task, offsets);
    let cgroup_id = cgroup_id(pointer(css_set, offsets.css_set_dfl_cgrp), offsets);
    let memory_css = memory_css(css_set, offsets);
    let memcg_id = css_cgroup_id(memory_css, offsets);
    let (memcg_usage_pages, memcg_max_pages) = memory_css_pages(memory_css, offsets);
    TaskCgroups {
        cgroup_id,
        memcg_id,
        memcg_usage_pages,
        memcg_max_pages,
    }
}

/// The id of `task`'s memory cgroup (see [`TaskCgroups::memcg_id`]).
/// Not inlined: several programs call it, and it loads the offsets itself,
/// a copy each caller would otherwise make.
#[inline(never)]
pub fn memory_cgroup_id(task: u64) -> u64 {
    let offsets = offsets();
    css_cgroup_id(memory_css(css_set(task, &offsets), &offsets), &offsets)
}

/// The id of the cgroup a `cgroup_subsys_state` belongs to:
/// `css->cgroup->kn->id`.
#[inline(always)]
pub fn css_cgroup_id(css: u64, offsets: &KernelOffsets) -> u64 {
    cgroup_id(pointer(css, offsets.css_cgroup), offsets)
}

/// A memory cgroup's `memory` page counter: (usage, max) in pages.
#[inline(always)]
pub fn memcg_pages(memcg: u64, offsets: &KernelOffsets) -> (u64, u64) {
    let mut usage = 0u64;
    let mut max = 0u64;
    load(&mut usage, memcg, offsets.memcg_memory_usage);
    load(&mut max, memcg, offsets.memcg_memory_max);
    (usage, max)
}

/// `task->cgroups`.
#[inline(always)]
fn css_set(task: u64, offsets: &KernelOffsets) -> u64 {
    pointer(task, offsets.task_cgroups)
}

/// `css_set->subsys[memory_cgrp_id]`: the memory controller's state.
#[inline(always)]
fn memory_css(css_set: u64, offsets: &KernelOffsets) -> u64 {
    pointer(css_set, offsets.css_set_memory_css)
}

/// The page counter of the memory cgroup whose css `memory_css` is
/// (`mem_cgroup` embeds it at `memcg_css`).
#[inline(always)]
fn memory_css_pages(memory_css: u64, offsets: &KernelOffsets) -> (u64, u64) {
    if offsets.memcg_css == OFFSET_UNKNOWN {
        return (0, 0);
    }
    memcg_pages(
        memory_css.wrapping_sub(u64::from(offsets.memcg_css)),
        offsets,
    )
}

/// `cgroup->kn->id`.
#[inline(always)]
fn cgroup_id(cgroup: u64, offsets: &KernelOffsets) -> u64 {
    let kn = pointer(cgroup, offsets.cgroup_kn);
    let mut id = 0u64;
    load(&mut id, kn, offsets.kernfs_node_id);
    id
}
