//! The OOM's context from the hooks on `oom_kill_process`, stashed per
//! trigger task and merged into the kill record.

use crate::COMM_LEN;

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
