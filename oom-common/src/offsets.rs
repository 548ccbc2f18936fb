//! Where the programs find what they read: byte offsets into kernel
//! structs (from BTF) and tracepoint records (from tracefs), resolved by
//! the collector and handed to the programs as globals.

/// An offset the collector could not resolve on this kernel: in a struct or
/// a tracepoint record, for a field the kernel lacks. Every program checks
/// for it before a read, and skips what needs the field. No real offset is
/// this large.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// Byte offsets into kernel structs, resolved by the collector from
/// `/sys/kernel/btf/vmlinux` and handed to the programs as one global.
///
/// The eBPF side has no CO-RE relocations, so it cannot ask the kernel where
/// `task_struct::cgroups` lives; the collector can. An offset of
/// [`OFFSET_UNKNOWN`] disables the reads that need it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// `css_set::subsys[memory_cgrp_id]`: the array's offset plus the index.
    pub css_set_memory_css: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `mem_cgroup::css`, and `mem_cgroup::memory` plus
    /// `page_counter::usage` / `::max`: a memory cgroup's usage and limit.
    pub memcg_css: u32,
    pub memcg_memory_usage: u32,
    pub memcg_memory_max: u32,
    /// `task_struct::signal` and `signal_struct::live`: how many threads
    /// of a process are still running, which tells a process's end from
    /// one of its threads'.
    pub task_signal: u32,
    pub signal_live: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 72);

impl KernelOffsets {
    pub const fn unknown() -> Self {
        Self {
            task_pid: OFFSET_UNKNOWN,
            task_tgid: OFFSET_UNKNOWN,
            task_real_parent: OFFSET_UNKNOWN,
            task_cgroups: OFFSET_UNKNOWN,
            css_set_dfl_cgrp: OFFSET_UNKNOWN,
            css_set_memory_css: OFFSET_UNKNOWN,
            css_cgroup: OFFSET_UNKNOWN,
            cgroup_kn: OFFSET_UNKNOWN,
            kernfs_node_id: OFFSET_UNKNOWN,
            task_mm: OFFSET_UNKNOWN,
            mm_arg_start: OFFSET_UNKNOWN,
            mm_arg_end: OFFSET_UNKNOWN,
            memcg_css: OFFSET_UNKNOWN,
            memcg_memory_usage: OFFSET_UNKNOWN,
            memcg_memory_max: OFFSET_UNKNOWN,
            task_signal: OFFSET_UNKNOWN,
            signal_live: OFFSET_UNKNOWN,
            _pad0: 0,
        }
    }
}

/// Offsets of what [`ChosenTask`](crate::ChosenTask) reads beyond [`KernelOffsets`], from BTF.
/// Each is [`OFFSET_UNKNOWN`] on its own when the kernel lacks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChosenTaskOffsets {
    pub task_comm: u32,
    pub task_real_cred: u32,
    pub cred_uid: u32,
    pub task_signal: u32,
    pub signal_oom_score_adj: u32,
    pub mm_total_vm: u32,
    pub mm_pgtables_bytes: u32,
    /// Where in `mm_struct` each rss counter's value is: inside an
    /// `atomic_long_t` array before 6.2, a `percpu_counter` array since.
    pub mm_rss_file: u32,
    pub mm_rss_anon: u32,
    pub mm_rss_shmem: u32,
}

const _: () = assert!(core::mem::size_of::<ChosenTaskOffsets>() == 40);

impl ChosenTaskOffsets {
    pub const fn unknown() -> Self {
        Self {
            task_comm: OFFSET_UNKNOWN,
            task_real_cred: OFFSET_UNKNOWN,
            cred_uid: OFFSET_UNKNOWN,
            task_signal: OFFSET_UNKNOWN,
            signal_oom_score_adj: OFFSET_UNKNOWN,
            mm_total_vm: OFFSET_UNKNOWN,
            mm_pgtables_bytes: OFFSET_UNKNOWN,
            mm_rss_file: OFFSET_UNKNOWN,
            mm_rss_anon: OFFSET_UNKNOWN,
            mm_rss_shmem: OFFSET_UNKNOWN,
        }
    }
}

/// Offsets into `struct oom_control`, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomControlOffsets {
    pub memcg: u32,
    pub gfp_mask: u32,
    pub order: u32,
    pub totalpages: u32,
    pub chosen: u32,
    pub chosen_points: u32,
    pub constraint: u32,
    /// `struct mem_cgroup::css`.
    pub memcg_css: u32,
}

const _: () = assert!(core::mem::size_of::<OomControlOffsets>() == 32);

impl OomControlOffsets {
    pub const fn unknown() -> Self {
        Self {
            memcg: OFFSET_UNKNOWN,
            gfp_mask: OFFSET_UNKNOWN,
            order: OFFSET_UNKNOWN,
            totalpages: OFFSET_UNKNOWN,
            chosen: OFFSET_UNKNOWN,
            chosen_points: OFFSET_UNKNOWN,
            constraint: OFFSET_UNKNOWN,
            memcg_css: OFFSET_UNKNOWN,
        }
    }
}

/// Where the collector found things the allocation-failure programs read:
/// the `ret` field of the `sys_exit_*` tracepoints (from tracefs), the
/// first three system-call arguments in `struct pt_regs` (from BTF), and
/// the size asked for in the `sys_enter_*` records of `mmap` (`len`),
/// `mremap` (`new_len`) and `brk` (`brk`), in that order (from tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallOffsets {
    pub exit_ret: u32,
    pub regs_arg: [u32; 3],
    pub enter_request: [u32; 3],
    /// 1 where the syscall tracepoints must keep the size asked for from
    /// entry to exit: the kernel has no `bpf_task_pt_regs()` (before
    /// 5.15), or the collector no BTF to find the registers. 0 where the
    /// exit reads it from the registers, only for a failure.
    pub keep_requests: u32,
}

const _: () = assert!(core::mem::size_of::<SyscallOffsets>() == 32);

/// Where `pfn` and `order` are in `kmem/mm_page_alloc` records (tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAllocOffsets {
    pub pfn: u32,
    pub order: u32,
    /// The kernel's page size, to turn an order into bytes.
    pub page_size: u32,
    /// Where `gfp_flags` is, and its size: a 4-byte `gfp_t` on 5.10, an
    /// 8-byte `unsigned long` on 6.x.
    pub gfp_flags: u32,
    pub gfp_flags_size: u32,
    /// `__GFP_DIRECT_RECLAIM`: an allocation that may sleep, so one made by
    /// a process, never in interrupt context.
    pub gfp_direct_reclaim: u32,
}

const _: () = assert!(core::mem::size_of::<PageAllocOffsets>() == 24);

impl PageAllocOffsets {
    pub const fn unknown() -> Self {
        Self {
            pfn: OFFSET_UNKNOWN,
            order: OFFSET_UNKNOWN,
            page_size: 4096,
            gfp_flags: OFFSET_UNKNOWN,
            gfp_flags_size: 0,
            gfp_direct_reclaim: 0,
        }
    }
}

impl SyscallOffsets {
    pub const fn unknown() -> Self {
        Self {
            exit_ret: OFFSET_UNKNOWN,
            regs_arg: [OFFSET_UNKNOWN; 3],
            enter_request: [OFFSET_UNKNOWN; 3],
            keep_requests: 0,
        }
    }
}
