//! The OOM kill record: what the kernel programs put on the ring buffer
//! for each kill, and how it is assembled in parts.

use crate::{ChosenTask, Cmdline, OomControl, CMDLINE_ARGS_BYTES, COMM_LEN};

/// Bytes of the raw `oom/mark_victim` tracepoint record copied into each
/// event. The collector decodes them with the layout it read from tracefs'
/// `format` file; 128 bytes hold every field the kernel has ever defined
/// (the 6.x record is 88 bytes including the `comm` string, the 4.13-6.0
/// one 12), and a field past them would be left out, not misread.
pub const TRACEPOINT_BYTES: usize = 128;

/// First field of every ring-buffer record: what follows it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`OomKillRecord`].
    OomKill = 1,
    /// A [`MemcgStatsRecord`](crate::MemcgStatsRecord), ahead of its OOM's
    /// kill records.
    MemcgStats = 2,
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
