//! Records shared by the kernel programs (`oom-ebpf`) and the collector.
//!
//! Every type here crosses the ring buffer or a map as raw bytes, so each is
//! `#[repr(C)]`, has no implicit padding (no `bool`, explicit `_pad` fields)
//! and carries a size assertion that breaks the build if the two sides could
//! ever disagree. The collector's `user` feature adds `aya::Pod` impls.
#![no_std]

/// Bytes of the raw `oom/mark_victim` tracepoint record copied into each
/// event. The collector decodes them with the layout it read from tracefs'
/// `format` file; 128 bytes hold every field the kernel has ever defined
/// (the 6.x record is 88 bytes including the `comm` string, the 4.13-6.0
/// one 12), and a field past them would be left out, not misread.
pub const TRACEPOINT_BYTES: usize = 128;

/// Length of a kernel task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Bytes of a command line kept per process: the arguments as the process
/// received them, NUL-separated (like `/proc/<pid>/cmdline`). Longer ones
/// are cut and flagged [`Cmdline::TRUNCATED`].
pub const CMDLINE_ARGS_BYTES: usize = 2048;
/// Bytes of the executable's path kept per process.
pub const CMDLINE_PATH_BYTES: usize = 256;

/// A process's command line, captured when it executes a program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Cmdline {
    /// Bytes of `args` in use; 0 when nothing was captured.
    pub args_len: u32,
    /// Bytes of `path` in use, without a NUL.
    pub path_len: u32,
    /// [`Cmdline::TRUNCATED`] and friends.
    pub flags: u32,
    pub _pad0: u32,
    /// The program's path as given to `execve` (from the tracepoint) or,
    /// for processes older than the collector, `/proc/<pid>/exe`.
    pub path: [u8; CMDLINE_PATH_BYTES],
    pub args: [u8; CMDLINE_ARGS_BYTES],
}

const _: () =
    assert!(core::mem::size_of::<Cmdline>() == 16 + CMDLINE_PATH_BYTES + CMDLINE_ARGS_BYTES);

impl Cmdline {
    /// The arguments did not fit in [`CMDLINE_ARGS_BYTES`].
    pub const TRUNCATED: u32 = 1 << 0;

    /// Nothing captured.
    pub const fn empty() -> Self {
        Self {
            args_len: 0,
            path_len: 0,
            flags: 0,
            _pad0: 0,
            path: [0; CMDLINE_PATH_BYTES],
            args: [0; CMDLINE_ARGS_BYTES],
        }
    }
}

/// First field of every ring-buffer record: what follows it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`OomKillRecord`].
    OomKill = 1,
}

/// Which parts of an [`OomKillRecord`] have been filled in.
///
/// One kill fires `oom/mark_victim` once, and every program attached to it
/// runs in turn on the same CPU. Each program fills its own part of the
/// per-CPU record under construction; the one that completes the parts the
/// collector expects sends it.
pub mod part {
    /// The raw tracepoint record, the trigger (`current`) and the timestamp.
    pub const TRACEPOINT: u32 = 1 << 0;
    /// The victim's `task_struct`: thread group, parent and cgroup ids.
    pub const VICTIM_TASK: u32 = 1 << 1;
}

/// What `oom_kill_process(struct oom_control *oc, ...)` knew about the OOM
/// that chose a victim, where a kprobe or fentry hook on it is possible.
/// Stashed per trigger task on entry and merged into the kill record at
/// `mark_victim`, which the same task reaches synchronously.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomControl {
    /// `bpf_ktime_get_boot_ns()` at entry: one OOM, one value, shared by
    /// every victim it makes (a `memory.oom.group` kill makes several).
    /// 0: no hook saw this kill, and the other fields are unknown.
    pub incident_boot_ns: u64,
    /// `oc->totalpages`: the size of the OOM domain (the memory cgroup's
    /// limit, or all RAM and swap for a global OOM), in pages.
    pub totalpages: u64,
    /// `oc->chosen_points`: the badness score of the chosen victim.
    pub chosen_points: i64,
    /// `oc->memcg`'s cgroup id; 0 for a global OOM.
    pub memcg_id: u64,
    /// `oc->gfp_mask` of the failing allocation.
    pub gfp_mask: u32,
    /// `oc->order` of the failing allocation.
    pub order: i32,
    /// `oc->constraint` (`enum oom_constraint`).
    pub constraint: u32,
    /// `oc->chosen`'s thread id: the victim the OOM chose; others in the
    /// same incident were killed with it by `memory.oom.group`.
    pub chosen_tid: u32,
    /// `oc->memcg`'s `memory` page counter at the OOM: usage and limit in
    /// pages; 0 for a global OOM.
    pub memcg_usage_pages: u64,
    pub memcg_max_pages: u64,
    /// The chosen victim itself, read from `oc->chosen`.
    pub chosen: ChosenTask,
}

const _: () =
    assert!(core::mem::size_of::<OomControl>() == 64 + core::mem::size_of::<ChosenTask>());

/// The victim about to be killed, read from its `task_struct` by the hooks
/// on `oom_kill_process` (`oc->chosen`) and `__oom_kill_process` (each
/// victim, including those a `memory.oom.group` kill adds).
///
/// Kernels before 6.1 put only the victim's pid in `oom/mark_victim`, and
/// their BTF-typed `mark_victim` passes no task either: this is where their
/// kill lines get the victim's name, memory and cgroups. Which groups of
/// fields were read is in `read`; zeros elsewhere mean unknown, since 0 is
/// a real uid, `oom_score_adj` or shmem size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChosenTask {
    /// [`ChosenTask::IDS`] and friends.
    pub read: u32,
    pub tgid: u32,
    pub ppid: u32,
    /// `real_cred->uid`, as the kernel's own report gives it.
    pub uid: u32,
    pub comm: [u8; COMM_LEN],
    /// `signal->oom_score_adj` (a `short`).
    pub oom_score_adj: i32,
    /// The task's thread id: the pid `mark_victim` reports for it.
    pub tid: u32,
    /// The task's cgroups, like the kill record's; 0 if unknown.
    pub cgroup_id: u64,
    pub memcg_id: u64,
    /// The task's memory cgroup's `memory` page counter: usage and limit;
    /// 0 if unknown.
    pub memcg_usage_pages: u64,
    pub memcg_max_pages: u64,
    /// `mm->total_vm`, in pages.
    pub total_vm_pages: u64,
    /// `mm->rss_stat` counters `MM_FILEPAGES`, `MM_ANONPAGES` and
    /// `MM_SHMEMPAGES`, in pages. Signed: a counter can briefly run below
    /// zero, which the kernel shows as 0.
    pub rss_file_pages: i64,
    pub rss_anon_pages: i64,
    pub rss_shmem_pages: i64,
    /// `mm->pgtables_bytes`.
    pub pgtables_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<ChosenTask>() == 112);

impl ChosenTask {
    /// `tgid`, `ppid` and `comm`.
    pub const IDS: u32 = 1 << 0;
    /// `uid`.
    pub const CRED: u32 = 1 << 1;
    /// `oom_score_adj`.
    pub const SIGNAL: u32 = 1 << 2;
    /// `total_vm_pages`, the three rss counters and `pgtables_bytes`.
    pub const MM: u32 = 1 << 3;
    /// Read by the hook on `__oom_kill_process`, which sends the victim
    /// SIGKILL just before marking it. A victim marked without it was
    /// already exiting, and the OOM killer sent it nothing.
    pub const KILLED: u32 = 1 << 4;

    pub const fn zeroed() -> Self {
        Self {
            read: 0,
            tgid: 0,
            ppid: 0,
            uid: 0,
            comm: [0; COMM_LEN],
            oom_score_adj: 0,
            tid: 0,
            cgroup_id: 0,
            memcg_id: 0,
            memcg_usage_pages: 0,
            memcg_max_pages: 0,
            total_vm_pages: 0,
            rss_file_pages: 0,
            rss_anon_pages: 0,
            rss_shmem_pages: 0,
            pgtables_bytes: 0,
        }
    }
}

/// Offsets of what [`ChosenTask`] reads beyond [`KernelOffsets`], from BTF.
/// Each is [`KernelOffsets::UNKNOWN`] on its own when the kernel lacks it.
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
            task_comm: KernelOffsets::UNKNOWN,
            task_real_cred: KernelOffsets::UNKNOWN,
            cred_uid: KernelOffsets::UNKNOWN,
            task_signal: KernelOffsets::UNKNOWN,
            signal_oom_score_adj: KernelOffsets::UNKNOWN,
            mm_total_vm: KernelOffsets::UNKNOWN,
            mm_pgtables_bytes: KernelOffsets::UNKNOWN,
            mm_rss_file: KernelOffsets::UNKNOWN,
            mm_rss_anon: KernelOffsets::UNKNOWN,
            mm_rss_shmem: KernelOffsets::UNKNOWN,
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
            memcg: KernelOffsets::UNKNOWN,
            gfp_mask: KernelOffsets::UNKNOWN,
            order: KernelOffsets::UNKNOWN,
            totalpages: KernelOffsets::UNKNOWN,
            chosen: KernelOffsets::UNKNOWN,
            chosen_points: KernelOffsets::UNKNOWN,
            constraint: KernelOffsets::UNKNOWN,
            memcg_css: KernelOffsets::UNKNOWN,
        }
    }
}

/// One OOM kill, as the kernel saw it at `mark_victim`.
///
/// An id field the kernel side could not read is 0, which no real pid,
/// tgid or cgroup id is; the collector treats 0 as unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomKillRecord {
    /// [`RecordKind::OomKill`].
    pub kind: u32,
    /// [`part`] bits.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` when the first program ran.
    pub boot_ns: u64,
    /// The task whose allocation triggered the OOM (`current`), thread id.
    pub trigger_tid: u32,
    /// The trigger's thread group id (its process id).
    pub trigger_tgid: u32,
    pub trigger_comm: [u8; COMM_LEN],
    /// The trigger's cgroup on the unified (v2) hierarchy.
    pub trigger_cgroup_id: u64,
    /// The trigger's memory cgroup (v1 memory controller or v2).
    pub trigger_memcg_id: u64,
    /// The victim's thread id, as `mark_victim` reports it.
    pub victim_tid: u32,
    /// The victim's process id; 0 if unknown.
    pub victim_tgid: u32,
    /// The victim's parent's process id; 0 if unknown.
    pub victim_ppid: u32,
    pub _pad0: u32,
    /// The victim's cgroup on the unified (v2) hierarchy; 0 if unknown.
    pub victim_cgroup_id: u64,
    /// The victim's memory cgroup (v1 memory controller or v2); 0 if unknown.
    pub victim_memcg_id: u64,
    /// The victim's memory cgroup's `memory` page counter at the kill:
    /// usage and limit (`max`) in pages; 0 if unknown.
    pub victim_memcg_usage_pages: u64,
    pub victim_memcg_max_pages: u64,
    /// The raw `oom/mark_victim` record; layout from tracefs.
    pub tracepoint: [u8; TRACEPOINT_BYTES],
    /// The OOM's context from `oom_kill_process`, when hooked.
    pub oom: OomControl,
    /// The victim's command line, from the `CMDLINES` table.
    pub cmdline: Cmdline,
}

const _: () = assert!(
    core::mem::size_of::<OomKillRecord>()
        == 104
            + TRACEPOINT_BYTES
            + core::mem::size_of::<OomControl>()
            + core::mem::size_of::<Cmdline>()
);

/// Bytes of an [`OomKillRecord`] on the ring buffer before the command
/// line's arguments. A record is sent as these bytes plus the
/// `cmdline.args_len` bytes of arguments in use, not whole: most command
/// lines are far shorter than [`CMDLINE_ARGS_BYTES`], and a
/// `memory.oom.group` kill of hundreds of processes must fit in the buffer
/// at once.
pub const OOM_KILL_RECORD_FIXED_BYTES: usize =
    core::mem::offset_of!(OomKillRecord, cmdline) + core::mem::offset_of!(Cmdline, args);

// The arguments are the record's tail, so cutting them cuts nothing else.
const _: () = assert!(
    OOM_KILL_RECORD_FIXED_BYTES + CMDLINE_ARGS_BYTES == core::mem::size_of::<OomKillRecord>()
);

impl OomKillRecord {
    /// Bytes of this record on the ring buffer (see
    /// [`OOM_KILL_RECORD_FIXED_BYTES`]).
    pub const fn wire_len(&self) -> usize {
        let args_len = self.cmdline.args_len as usize;
        OOM_KILL_RECORD_FIXED_BYTES
            + if args_len < CMDLINE_ARGS_BYTES {
                args_len
            } else {
                CMDLINE_ARGS_BYTES
            }
    }

    pub const fn zeroed() -> Self {
        Self {
            kind: RecordKind::OomKill as u32,
            flags: 0,
            boot_ns: 0,
            trigger_tid: 0,
            trigger_tgid: 0,
            trigger_comm: [0; COMM_LEN],
            trigger_cgroup_id: 0,
            trigger_memcg_id: 0,
            victim_tid: 0,
            victim_tgid: 0,
            victim_ppid: 0,
            _pad0: 0,
            victim_cgroup_id: 0,
            victim_memcg_id: 0,
            victim_memcg_usage_pages: 0,
            victim_memcg_max_pages: 0,
            tracepoint: [0; TRACEPOINT_BYTES],
            oom: OomControl {
                incident_boot_ns: 0,
                totalpages: 0,
                chosen_points: 0,
                memcg_id: 0,
                gfp_mask: 0,
                order: 0,
                constraint: 0,
                chosen_tid: 0,
                memcg_usage_pages: 0,
                memcg_max_pages: 0,
                chosen: ChosenTask::zeroed(),
            },
            cmdline: Cmdline::empty(),
        }
    }
}

/// Indexes of the per-CPU `STATS` counters: what the kernel side could not
/// deliver. The collector sums them over CPUs and reports every increase.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A record did not fit in the ring buffer: an event was lost.
    RingBufFull = 0,
    /// A kernel memory read failed while building a record.
    ReadFailed = 1,
    /// An allocation failure found the `ALLOC_FAILURES` table full: it is
    /// counted here instead, so the total stays exact.
    AllocFailureTableFull = 2,
}

/// Number of [`Stat`] counters.
pub const STAT_COUNT: u32 = 3;

/// Index of the expected-parts word in the `CONFIG` array.
pub const CONFIG_EXPECTED_PARTS: u32 = 0;
/// Index of the allocation-failure epoch in the `CONFIG` array: the kernel
/// counts under the current epoch's parity while the collector drains the
/// other (see [`AllocFailureKey`]).
pub const CONFIG_ALLOC_EPOCH: u32 = 1;
/// First of the `CONFIG` words the kernel never reads: how many events
/// counted lost the collector has reported, per loss counter (two words,
/// low then high, each). They outlive a restart with `--pin-dir`, so a loss
/// is reported once.
pub const CONFIG_LOSSES_REPORTED: u32 = 2;
/// Number of `CONFIG` words.
pub const CONFIG_COUNT: u32 = CONFIG_LOSSES_REPORTED + 2 * 2;

/// The requests whose failures are counted: three system calls, and the
/// kernel's own page allocator.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocSyscall {
    Mmap = 1,
    Mremap = 2,
    Brk = 3,
    /// `__alloc_pages()` returned no page (`kmem/mm_page_alloc`).
    PageAlloc = 4,
}

impl AllocSyscall {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Mmap),
            2 => Some(Self::Mremap),
            3 => Some(Self::Brk),
            4 => Some(Self::PageAlloc),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Mremap => "mremap",
            Self::Brk => "brk",
            Self::PageAlloc => "page_alloc",
        }
    }
}

/// Key of the per-CPU `ALLOC_FAILURES` table: one process, one system call,
/// one epoch parity.
///
/// Exact counts without locks: the kernel only ever adds to keys of the
/// current epoch's parity. To drain, the collector flips the epoch, waits
/// for programs that read the old one to finish (they run for
/// microseconds, without sleeping), then reads and deletes the old parity's
/// keys, which nothing writes any more.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocFailureKey {
    /// The failing process; 0 for an atomic kernel page allocation, which
    /// may have been made in interrupt context and belong to no process.
    pub tgid: u32,
    /// An [`AllocSyscall`].
    pub syscall: u8,
    /// The epoch's parity (0 or 1).
    pub epoch: u8,
    pub _pad0: u16,
}

const _: () = assert!(core::mem::size_of::<AllocFailureKey>() == 8);

/// One CPU's tally of failures for an [`AllocFailureKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFailureCounts {
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and last failure.
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// The largest request that failed (bytes); 0 if unknown.
    pub max_request_bytes: u64,
    pub cgroup_id: u64,
    pub memcg_id: u64,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<AllocFailureCounts>() == 64);

/// Where the collector found things the allocation-failure programs read:
/// the `ret` field of the `sys_exit_*` tracepoints (from tracefs) and the
/// first three system-call arguments in `struct pt_regs` (from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallOffsets {
    pub exit_ret: u32,
    pub regs_arg: [u32; 3],
}

const _: () = assert!(core::mem::size_of::<SyscallOffsets>() == 16);

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
            pfn: KernelOffsets::UNKNOWN,
            order: KernelOffsets::UNKNOWN,
            page_size: 4096,
            gfp_flags: KernelOffsets::UNKNOWN,
            gfp_flags_size: 0,
            gfp_direct_reclaim: 0,
        }
    }
}

impl SyscallOffsets {
    pub const fn unknown() -> Self {
        Self {
            exit_ret: KernelOffsets::UNKNOWN,
            regs_arg: [KernelOffsets::UNKNOWN; 3],
        }
    }
}

/// Byte offsets into kernel structs, resolved by the collector from
/// `/sys/kernel/btf/vmlinux` and handed to the programs as one global.
///
/// The eBPF side has no CO-RE relocations, so it cannot ask the kernel where
/// `task_struct::cgroups` lives; the collector can. An offset of
/// [`KernelOffsets::UNKNOWN`] disables the reads that need it.
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
    pub const UNKNOWN: u32 = u32::MAX;

    pub const fn unknown() -> Self {
        Self {
            task_pid: Self::UNKNOWN,
            task_tgid: Self::UNKNOWN,
            task_real_parent: Self::UNKNOWN,
            task_cgroups: Self::UNKNOWN,
            css_set_dfl_cgrp: Self::UNKNOWN,
            css_set_memory_css: Self::UNKNOWN,
            css_cgroup: Self::UNKNOWN,
            cgroup_kn: Self::UNKNOWN,
            kernfs_node_id: Self::UNKNOWN,
            task_mm: Self::UNKNOWN,
            mm_arg_start: Self::UNKNOWN,
            mm_arg_end: Self::UNKNOWN,
            memcg_css: Self::UNKNOWN,
            memcg_memory_usage: Self::UNKNOWN,
            memcg_memory_max: Self::UNKNOWN,
            task_signal: Self::UNKNOWN,
            signal_live: Self::UNKNOWN,
            _pad0: 0,
        }
    }
}

/// Where the tracepoint program finds the victim's pid in the raw record.
/// Taken from tracefs' `format` file by the collector.
pub const TRACEPOINT_PID_OFFSET_UNKNOWN: u32 = u32::MAX;

#[cfg(feature = "user")]
mod user {
    use super::{
        AllocFailureCounts, AllocFailureKey, ChosenTaskOffsets, Cmdline, KernelOffsets,
        OomControlOffsets, OomKillRecord, PageAllocOffsets, SyscallOffsets,
    };

    // SAFETY: all are `repr(C)`, consist only of integers and integer
    // arrays, and have no padding (checked by the size assertions above).
    unsafe impl aya::Pod for OomKillRecord {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for AllocFailureKey {}
    unsafe impl aya::Pod for AllocFailureCounts {}
    unsafe impl aya::Pod for SyscallOffsets {}
    unsafe impl aya::Pod for Cmdline {}
    unsafe impl aya::Pod for OomControlOffsets {}
    unsafe impl aya::Pod for ChosenTaskOffsets {}
    unsafe impl aya::Pod for PageAllocOffsets {}
}
