//! Ring-buffer records to typed kills.
//!
//! The kernel side sends [`OomKillRecord`]s whose `tracepoint` bytes are the
//! raw `oom/mark_victim` record; its layout comes from tracefs
//! ([`TracepointFormat`]). Ahead of an OOM's kills, where a hook on
//! `oom_kill_process()` could read them, come the limited memory cgroup's
//! stats ([`MemcgStatsRecord`]). Anything the kernel could not supply decodes to
//! `None`, never to a zero that would read as a real value.

use oom_common::{
    part, ChosenTask, MemcgStatsRecord, OomKillRecord, RecordKind, COMM_LEN, MEMCG_STAT_COUNT,
    OOM_KILL_RECORD_FIXED_BYTES,
};

use crate::{
    cmdline::CapturedCmdline,
    host::page_size,
    tracefs::{RecordView, TracepointFormat},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {0} bytes is too short for its header")]
    TooShort(usize),
    #[error("ring-buffer record of kind {kind} has {len} bytes, expected at least {expected}")]
    WrongSize {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("ring-buffer record of unknown kind {0}")]
    UnknownKind(u32),
}

/// One OOM kill as the kernel reported it, before enrichment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelKill {
    /// CLOCK_BOOTTIME of the kill, in nanoseconds.
    pub boot_ns: u64,
    pub trigger: Trigger,
    pub victim: Victim,
    /// The victim's command line, as captured at its exec.
    pub cmdline: Option<CapturedCmdline>,
    /// The OOM's context from a hook on `oom_kill_process`, where one ran.
    pub oom_control: Option<OomControlInfo>,
}

/// What `oom_kill_process` knew (see `oom_common::OomControl`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomControlInfo {
    /// Identifies the OOM: the same for every victim it made.
    pub incident_boot_ns: u64,
    /// The size of the OOM domain, in pages.
    pub domain_pages: u64,
    /// The chosen victim's badness score.
    pub chosen_points: i64,
    /// The hook on `__oom_kill_process` saw the victim being sent SIGKILL
    /// just before it was marked; without it, the OOM killer marked a
    /// victim that was already exiting and sent it nothing.
    pub kill_sent: bool,
    /// The limited memory cgroup; `None` for a global OOM.
    pub memcg_id: Option<u64>,
    pub gfp_mask: u32,
    pub order: u32,
    pub constraint: Option<&'static str>,
    /// The victim the OOM chose (others were killed with it as a group).
    pub chosen_tid: u32,
    /// The limited memory cgroup's usage and limit at the OOM.
    pub memcg_pages: Option<MemcgPages>,
}

/// `enum oom_constraint`, unchanged since 4.6.
fn constraint_name(value: u32) -> Option<&'static str> {
    Some(match value {
        0 => "global",
        1 => "cpuset",
        2 => "memory_policy",
        3 => "memcg",
        _ => return None,
    })
}

/// The task whose allocation ran the system or a cgroup out of memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trigger {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: Option<u64>,
    pub memcg_id: Option<u64>,
}

/// The task the OOM killer chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Victim {
    /// Thread id, as `mark_victim` reports it.
    pub tid: u32,
    /// Process id (thread group); known with the victim-task hook.
    pub pid: Option<u32>,
    pub parent_pid: Option<u32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    pub cgroup_id: Option<u64>,
    pub memcg_id: Option<u64>,
    /// The memory cgroup's usage and limit at the kill, in pages.
    pub memcg_pages: Option<MemcgPages>,
    pub total_vm_kib: Option<u64>,
    pub anon_rss_kib: Option<u64>,
    pub file_rss_kib: Option<u64>,
    pub shmem_rss_kib: Option<u64>,
    pub pgtables_kib: Option<u64>,
    pub oom_score_adj: Option<i16>,
}

/// A memory cgroup's page counter as the kernel had it at the OOM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgPages {
    pub usage: u64,
    pub max: u64,
}

impl MemcgPages {
    fn from_kernel(usage: u64, max: u64) -> Option<Self> {
        (max != 0).then_some(Self { usage, max })
    }
}

/// A ring-buffer record, decoded: what the kernel reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    OomKill(KernelKill),
    MemcgStats(MemcgStatsAtOom),
}

/// The limited memory cgroup's stat counters as the kernel had them at one
/// OOM, before the kill (see `oom_common::MemcgStatsRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemcgStatsAtOom {
    /// The OOM: [`OomControlInfo::incident_boot_ns`] of its kills.
    pub incident_boot_ns: u64,
    pub memcg_id: u64,
    /// In the order and units of `oom_common::MEMCG_STAT_ITEMS`; `None`
    /// for a counter not read. A counter below zero (per-CPU parts not yet
    /// summed) is 0, as the kernel shows it.
    pub values: [Option<u64>; MEMCG_STAT_COUNT],
}

/// Decodes one ring-buffer record with the `oom/mark_victim` layout.
pub fn decode(bytes: &[u8], mark_victim: &TracepointFormat) -> Result<KernelEvent, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or(DecodeError::TooShort(bytes.len()))?;
    match kind {
        k if k == RecordKind::OomKill as u32 => {
            let expected = OOM_KILL_RECORD_FIXED_BYTES;
            if bytes.len() < expected {
                return Err(DecodeError::WrongSize {
                    kind,
                    len: bytes.len(),
                    expected,
                });
            }
            // The kernel sends only the arguments in use; the rest of the
            // record stays zero. The ring buffer rounds a record up to 8
            // bytes, so what counts is `args_len`, capped by what came.
            let mut record = OomKillRecord::zeroed();
            let len = bytes.len().min(size_of::<OomKillRecord>());
            // SAFETY: copies at most the record's size into it; every bit
            // pattern is a valid `OomKillRecord` (integers only).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    (&mut record as *mut OomKillRecord).cast::<u8>(),
                    len,
                );
            }
            let args_came = (len - OOM_KILL_RECORD_FIXED_BYTES) as u32;
            record.cmdline.args_len = record.cmdline.args_len.min(args_came);
            Ok(KernelEvent::OomKill(decode_kill(&record, mark_victim)))
        }
        k if k == RecordKind::MemcgStats as u32 => {
            let expected = size_of::<MemcgStatsRecord>();
            if bytes.len() < expected {
                return Err(DecodeError::WrongSize {
                    kind,
                    len: bytes.len(),
                    expected,
                });
            }
            // SAFETY: `expected` bytes are there; every bit pattern is a
            // valid `MemcgStatsRecord` (integers only).
            let record =
                unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<MemcgStatsRecord>()) };
            let mut values = [None; MEMCG_STAT_COUNT];
            for (i, value) in values.iter_mut().enumerate() {
                if record.read & (1 << i) != 0 {
                    *value = Some(record.values[i].max(0) as u64);
                }
            }
            Ok(KernelEvent::MemcgStats(MemcgStatsAtOom {
                incident_boot_ns: record.incident_boot_ns,
                memcg_id: record.memcg_id,
                values,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_kill(record: &OomKillRecord, mark_victim: &TracepointFormat) -> KernelKill {
    let view = RecordView {
        format: mark_victim,
        bytes: &record.tracepoint,
    };
    let unsigned = |name| view.integer(name).and_then(|v| u64::try_from(v).ok());
    let have_task = record.flags & part::VICTIM_TASK != 0;
    let from_task = |value: u64| (have_task && value != 0).then_some(value);
    let tracepoint_pid = view.integer("pid").and_then(|p| u32::try_from(p).ok());
    let tid = tracepoint_pid.unwrap_or(record.victim_tid);

    let from_tracepoint = Victim {
        tid,
        pid: from_task(record.victim_tgid.into()).map(|v| v as u32),
        parent_pid: from_task(record.victim_ppid.into()).map(|v| v as u32),
        comm: view
            .bytes_str("comm")
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        uid: unsigned("uid").map(|v| v as u32),
        cgroup_id: from_task(record.victim_cgroup_id),
        memcg_id: from_task(record.victim_memcg_id),
        memcg_pages: MemcgPages::from_kernel(
            record.victim_memcg_usage_pages,
            record.victim_memcg_max_pages,
        )
        .filter(|_| have_task),
        total_vm_kib: unsigned("total_vm"),
        anon_rss_kib: unsigned("anon_rss"),
        file_rss_kib: unsigned("file_rss"),
        shmem_rss_kib: unsigned("shmem_rss"),
        pgtables_kib: unsigned("pgtables"),
        oom_score_adj: view.integer("oom_score_adj").map(|v| v as i16),
    };
    // What the hooks on oom_kill_process read of the victim fills in what
    // the tracepoint could not give (all of it before 6.1), when they read
    // this victim: the kernel can mark another thread of the process.
    let chosen = (record.oom.incident_boot_ns != 0 && record.oom.chosen.tid == tid)
        .then(|| chosen_victim(tid, &record.oom.chosen));
    let victim = match chosen {
        Some(chosen) => from_tracepoint.or(chosen),
        None => from_tracepoint,
    };

    KernelKill {
        boot_ns: record.boot_ns,
        trigger: Trigger {
            tid: record.trigger_tid,
            pid: record.trigger_tgid,
            comm: comm_string(&record.trigger_comm),
            cgroup_id: (record.trigger_cgroup_id != 0).then_some(record.trigger_cgroup_id),
            memcg_id: (record.trigger_memcg_id != 0).then_some(record.trigger_memcg_id),
        },
        victim,
        cmdline: CapturedCmdline::from_entry(&record.cmdline),
        oom_control: (record.oom.incident_boot_ns != 0).then(|| OomControlInfo {
            incident_boot_ns: record.oom.incident_boot_ns,
            domain_pages: record.oom.totalpages,
            chosen_points: record.oom.chosen_points,
            kill_sent: record.oom.chosen.read & ChosenTask::KILLED != 0,
            memcg_id: (record.oom.memcg_id != 0).then_some(record.oom.memcg_id),
            gfp_mask: record.oom.gfp_mask,
            order: record.oom.order.max(0) as u32,
            constraint: constraint_name(record.oom.constraint),
            chosen_tid: record.oom.chosen_tid,
            memcg_pages: MemcgPages::from_kernel(
                record.oom.memcg_usage_pages,
                record.oom.memcg_max_pages,
            ),
        }),
    }
}

/// The victim as the `oom_kill_process` hook read it, in the tracepoint's
/// units (KiB) and with the kernel's rounding: a counter below zero is 0.
fn chosen_victim(tid: u32, chosen: &ChosenTask) -> Victim {
    let has = |group| chosen.read & group != 0;
    let page_kib = page_size() / 1024;
    let mm = |pages: u64| has(ChosenTask::MM).then_some(pages.saturating_mul(page_kib));
    let counter = |pages: i64| mm(pages.max(0) as u64);
    let nonzero = |id: u64| (id != 0).then_some(id);
    Victim {
        tid,
        pid: has(ChosenTask::IDS).then_some(chosen.tgid),
        parent_pid: has(ChosenTask::IDS).then_some(chosen.ppid),
        comm: has(ChosenTask::IDS).then(|| comm_string(&chosen.comm)),
        uid: has(ChosenTask::CRED).then_some(chosen.uid),
        cgroup_id: nonzero(chosen.cgroup_id),
        memcg_id: nonzero(chosen.memcg_id),
        memcg_pages: MemcgPages::from_kernel(chosen.memcg_usage_pages, chosen.memcg_max_pages),
        total_vm_kib: mm(chosen.total_vm_pages),
        anon_rss_kib: counter(chosen.rss_anon_pages),
        file_rss_kib: counter(chosen.rss_file_pages),
        shmem_rss_kib: counter(chosen.rss_shmem_pages),
        pgtables_kib: has(ChosenTask::MM).then_some(chosen.pgtables_bytes / 1024),
        oom_score_adj: has(ChosenTask::SIGNAL).then_some(chosen.oom_score_adj as i16),
    }
}

impl Victim {
    /// This victim, with each unknown field taken from `other`.
    fn or(self, other: Victim) -> Victim {
        Victim {
            tid: self.tid,
            pid: self.pid.or(other.pid),
            parent_pid: self.parent_pid.or(other.parent_pid),
            comm: self.comm.or(other.comm),
            uid: self.uid.or(other.uid),
            cgroup_id: self.cgroup_id.or(other.cgroup_id),
            memcg_id: self.memcg_id.or(other.memcg_id),
            memcg_pages: self.memcg_pages.or(other.memcg_pages),
            total_vm_kib: self.total_vm_kib.or(other.total_vm_kib),
            anon_rss_kib: self.anon_rss_kib.or(other.anon_rss_kib),
            file_rss_kib: self.file_rss_kib.or(other.file_rss_kib),
            shmem_rss_kib: self.shmem_rss_kib.or(other.shmem_rss_kib),
            pgtables_kib: self.pgtables_kib.or(other.pgtables_kib),
            oom_score_adj: self.oom_score_adj.or(other.oom_score_adj),
        }
    }
}

/// A kernel `comm`: up to the first NUL, lossily UTF-8 (a comm is whatever
/// bytes a process wrote with `prctl(PR_SET_NAME)`).
pub fn comm_string(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests;
