//! Ring-buffer records to typed kills.
//!
//! The kernel side sends [`OomKillRecord`]s whose `tracepoint` bytes are the
//! raw `oom/mark_victim` record; its layout comes from tracefs
//! ([`TracepointFormat`]). Anything the kernel could not supply decodes to
//! `None`, never to a zero that would read as a real value.

use oom_common::{
    part, ChosenTask, OomKillRecord, RecordKind, COMM_LEN, OOM_KILL_RECORD_FIXED_BYTES,
};

use crate::{
    cmdline::CapturedCmdline,
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

/// A decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    OomKill(KernelKill),
}

/// Decodes one ring-buffer record with the `oom/mark_victim` layout.
pub fn decode(bytes: &[u8], mark_victim: &TracepointFormat) -> Result<Record, DecodeError> {
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
            Ok(Record::OomKill(decode_kill(&record, mark_victim)))
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
    let page_kib = rustix::param::page_size() as u64 / 1024;
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
mod tests {
    use oom_common::OomControl;

    use super::*;

    const MARK_VICTIM_6_18: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tracefs/mark_victim-6.18.44-fc-v669.format"
    ));
    const MARK_VICTIM_5_10_218: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tracefs/mark_victim-5.10.0-30-cloud-amd64.format"
    ));

    fn format(text: &str) -> TracepointFormat {
        TracepointFormat::parse(text).expect("fixture parses")
    }

    fn put<const N: usize>(bytes: &mut [u8], offset: usize, value: [u8; N]) {
        bytes[offset..offset + N].copy_from_slice(&value);
    }

    /// A record as the kernel side sends it for a kill on 6.18, with the
    /// tracepoint bytes laid out by hand as that kernel's format says.
    fn record_6_18(flags: u32) -> Vec<u8> {
        let mut record = OomKillRecord::zeroed();
        record.flags = flags;
        record.boot_ns = 675_923_695_171;
        record.trigger_tid = 15_580;
        record.trigger_tgid = 15_579;
        record.trigger_comm[..4].copy_from_slice(b"tail");
        record.trigger_cgroup_id = 1;
        record.trigger_memcg_id = 4242;
        record.victim_tid = 15_579;
        record.victim_tgid = 15_579;
        record.victim_ppid = 15_138;
        record.victim_cgroup_id = 1;
        record.victim_memcg_id = 4242;
        record.victim_memcg_usage_pages = 12_000;
        record.victim_memcg_max_pages = 12_288;
        let tp = &mut record.tracepoint;
        put(tp, 8, 15_579i32.to_ne_bytes());
        put(tp, 12, ((5u32 << 16) | 68).to_ne_bytes());
        tp[68..73].copy_from_slice(b"tail\0");
        put(tp, 16, 51_748u64.to_ne_bytes());
        put(tp, 24, 48_896u64.to_ne_bytes());
        put(tp, 32, 1_548u64.to_ne_bytes());
        put(tp, 40, 0u64.to_ne_bytes());
        put(tp, 48, 1000u32.to_ne_bytes());
        put(tp, 56, 144u64.to_ne_bytes());
        put(tp, 64, (-17i16).to_ne_bytes());
        // SAFETY: a plain-integer repr(C) struct viewed as its bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&record as *const OomKillRecord).cast::<u8>(),
                size_of::<OomKillRecord>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_record_sent_without_its_unused_arguments_keeps_its_command_line() {
        let mut bytes = record_6_18(part::TRACEPOINT | part::VICTIM_TASK);
        let args = b"python3\0-m\0celery\0worker\0";
        put(
            &mut bytes,
            std::mem::offset_of!(OomKillRecord, cmdline),
            (args.len() as u32).to_ne_bytes(),
        );
        let args_at = OOM_KILL_RECORD_FIXED_BYTES;
        bytes[args_at..args_at + args.len()].copy_from_slice(args);
        // As the ring buffer hands it over: rounded up to 8 bytes.
        bytes.truncate((args_at + args.len()).next_multiple_of(8));
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("a record of {} bytes decodes", bytes.len());
        };
        let cmdline = kill.cmdline.expect("the command line came");
        assert_eq!(cmdline.args, ["python3", "-m", "celery", "worker"]);
        assert_eq!(kill.victim.tid, 15_579, "the fixed part is whole");

        bytes.truncate(args_at + "python3\0-m".len());
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("a record cut inside its arguments decodes");
        };
        assert_eq!(
            kill.cmdline.expect("what came").args,
            ["python3", "-m"],
            "only the arguments that came, whatever args_len claims"
        );
    }

    #[test]
    fn decodes_a_complete_kill() {
        let bytes = record_6_18(part::TRACEPOINT | part::VICTIM_TASK);
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("a complete record decodes");
        };
        assert_eq!(kill.boot_ns, 675_923_695_171);
        assert_eq!(
            kill.trigger,
            Trigger {
                tid: 15_580,
                pid: 15_579,
                comm: "tail".into(),
                cgroup_id: Some(1),
                memcg_id: Some(4242),
            }
        );
        assert_eq!(
            kill.victim,
            Victim {
                tid: 15_579,
                pid: Some(15_579),
                parent_pid: Some(15_138),
                comm: Some("tail".into()),
                uid: Some(1000),
                cgroup_id: Some(1),
                memcg_id: Some(4242),
                memcg_pages: Some(MemcgPages {
                    usage: 12_000,
                    max: 12_288,
                }),
                total_vm_kib: Some(51_748),
                anon_rss_kib: Some(48_896),
                file_rss_kib: Some(1_548),
                shmem_rss_kib: Some(0),
                pgtables_kib: Some(144),
                oom_score_adj: Some(-17),
            }
        );
    }

    #[test]
    fn without_the_task_part_its_fields_are_unknown_not_zero() {
        let bytes = record_6_18(part::TRACEPOINT);
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("decodes");
        };
        assert_eq!(kill.victim.pid, None);
        assert_eq!(kill.victim.parent_pid, None);
        assert_eq!(kill.victim.memcg_id, None);
        assert_eq!(
            kill.victim.tid, 15_579,
            "the tracepoint's pid is still there"
        );

        // A kernel without the memory controller: that one read fails.
        let mut bytes = record_6_18(part::TRACEPOINT | part::VICTIM_TASK);
        let memcg = std::mem::offset_of!(OomKillRecord, victim_memcg_id);
        bytes[memcg..memcg + 8].copy_from_slice(&0u64.to_ne_bytes());
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("decodes");
        };
        assert_eq!(
            kill.victim.memcg_id, None,
            "an id the kernel could not read"
        );
        assert_eq!(
            kill.victim.pid,
            Some(15_579),
            "the reads that worked still count"
        );
        assert_eq!(kill.victim.cgroup_id, Some(1));
    }

    #[test]
    fn an_old_kernel_layout_gives_only_the_pid() {
        let bytes = record_6_18(part::TRACEPOINT);
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
            panic!("decodes");
        };
        assert_eq!(kill.victim.tid, 15_579);
        assert_eq!(kill.victim.comm, None);
        assert_eq!(kill.victim.anon_rss_kib, None);
        assert_eq!(kill.victim.oom_score_adj, None);
    }

    #[test]
    fn the_oom_kill_process_context_decodes_when_a_hook_stashed_it() {
        let mut bytes = record_6_18(part::TRACEPOINT | part::VICTIM_TASK);
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("decodes");
        };
        assert_eq!(kill.oom_control, None, "no hook, no context");

        put_control(
            &mut bytes,
            OomControl {
                incident_boot_ns: 675_923_690_004,
                totalpages: 8_192,
                chosen_points: 1_965,
                memcg_id: 0,
                gfp_mask: 0xcc0,
                order: 3,
                constraint: 0,
                chosen_tid: 15_579,
                memcg_usage_pages: 0,
                memcg_max_pages: 0,
                chosen: ChosenTask::zeroed(),
            },
        );
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("decodes");
        };
        assert_eq!(
            kill.oom_control,
            Some(OomControlInfo {
                incident_boot_ns: 675_923_690_004,
                domain_pages: 8_192,
                chosen_points: 1_965,
                kill_sent: false,
                memcg_id: None,
                gfp_mask: 0xcc0,
                order: 3,
                constraint: Some("global"),
                chosen_tid: 15_579,
                memcg_pages: None,
            }),
            "memcg 0 is a global OOM: no memory cgroup"
        );
    }

    /// Writes `control` into a record's `oom` field, as the hook on
    /// `oom_kill_process` would have stashed it.
    fn put_control(bytes: &mut [u8], control: OomControl) {
        let oom = std::mem::offset_of!(OomKillRecord, oom);
        // SAFETY: a plain-integer repr(C) struct viewed as its bytes.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&control as *const OomControl).cast::<u8>(),
                size_of::<OomControl>(),
            )
        };
        bytes[oom..oom + raw.len()].copy_from_slice(raw);
    }

    /// A memcg OOM on a pid-only kernel whose hooks read the victim
    /// `chosen_tid`.
    fn control_choosing(chosen_tid: u32, read: u32) -> OomControl {
        let mut comm = [0; COMM_LEN];
        comm[..4].copy_from_slice(b"java");
        OomControl {
            incident_boot_ns: 675_923_690_004,
            totalpages: 12_288,
            chosen_points: 12_500,
            memcg_id: 4242,
            gfp_mask: 0xcc0,
            order: 0,
            constraint: 3,
            chosen_tid,
            memcg_usage_pages: 12_280,
            memcg_max_pages: 12_288,
            chosen: ChosenTask {
                read,
                tgid: 15_579,
                ppid: 15_138,
                uid: 0,
                comm,
                oom_score_adj: 0,
                tid: chosen_tid,
                cgroup_id: 77,
                memcg_id: 4243,
                memcg_usage_pages: 12_270,
                memcg_max_pages: 16_384,
                total_vm_pages: 12_937,
                rss_file_pages: 387,
                rss_anon_pages: 12_224,
                // The kernel shows a counter that ran below zero as 0.
                rss_shmem_pages: -3,
                pgtables_bytes: 147_456,
            },
        }
    }

    #[test]
    fn a_pid_only_kernel_takes_the_victim_from_oom_kill_process() {
        if rustix::param::page_size() != 4096 {
            return;
        }
        let mut bytes = record_6_18(part::TRACEPOINT);
        let all = ChosenTask::IDS | ChosenTask::CRED | ChosenTask::SIGNAL | ChosenTask::MM;
        put_control(&mut bytes, control_choosing(15_579, all));
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
            panic!("decodes");
        };
        assert_eq!(
            kill.victim,
            Victim {
                tid: 15_579,
                pid: Some(15_579),
                parent_pid: Some(15_138),
                comm: Some("java".into()),
                uid: Some(0),
                cgroup_id: Some(77),
                memcg_id: Some(4243),
                memcg_pages: Some(MemcgPages {
                    usage: 12_270,
                    max: 16_384,
                }),
                total_vm_kib: Some(51_748),
                anon_rss_kib: Some(48_896),
                file_rss_kib: Some(1_548),
                shmem_rss_kib: Some(0),
                pgtables_kib: Some(144),
                oom_score_adj: Some(0),
            }
        );

        // Groups the hook could not read stay unknown; 0 is not made up.
        let mut bytes = record_6_18(part::TRACEPOINT);
        put_control(&mut bytes, control_choosing(15_579, ChosenTask::IDS));
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
            panic!("decodes");
        };
        assert_eq!(kill.victim.comm.as_deref(), Some("java"));
        assert_eq!(kill.victim.uid, None);
        assert_eq!(kill.victim.oom_score_adj, None);
        assert_eq!(kill.victim.anon_rss_kib, None);
        assert_eq!(kill.victim.pgtables_kib, None);
    }

    #[test]
    fn the_tracepoint_wins_over_the_hooks_and_another_thread_keeps_its_gaps() {
        // 6.x: both read the victim; the tracepoint's values are the ones
        // taken at the kill itself.
        let mut bytes = record_6_18(part::TRACEPOINT | part::VICTIM_TASK);
        let all = ChosenTask::IDS | ChosenTask::CRED | ChosenTask::SIGNAL | ChosenTask::MM;
        put_control(&mut bytes, control_choosing(15_579, all));
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
            panic!("decodes");
        };
        assert_eq!(kill.victim.comm.as_deref(), Some("tail"));
        assert_eq!(kill.victim.uid, Some(1000));
        assert_eq!(kill.victim.oom_score_adj, Some(-17));
        assert_eq!(kill.victim.memcg_id, Some(4242));

        // The hooks read another thread than the one marked.
        let mut bytes = record_6_18(part::TRACEPOINT);
        put_control(&mut bytes, control_choosing(15_600, all));
        let Ok(Record::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
            panic!("decodes");
        };
        assert_eq!(kill.victim.tid, 15_579);
        assert_eq!(kill.victim.comm, None);
        assert_eq!(kill.victim.pid, None);
        assert_eq!(kill.victim.anon_rss_kib, None);
        assert_eq!(kill.oom_control.map(|c| c.chosen_tid), Some(15_600));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let format = format(MARK_VICTIM_6_18);
        assert_eq!(decode(&[1, 0], &format), Err(DecodeError::TooShort(2)));
        let bytes = record_6_18(part::TRACEPOINT);
        assert!(matches!(
            decode(&bytes[..100], &format),
            Err(DecodeError::WrongSize { len: 100, .. })
        ));
        let mut unknown = bytes.clone();
        unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&unknown, &format), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn comm_with_invalid_utf8_is_kept_lossily() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(&[b'a', 0xff, b'\n', b'b']);
        assert_eq!(comm_string(&comm), "a\u{fffd}\nb");
        assert_eq!(comm_string(&[b'x'; COMM_LEN]), "x".repeat(COMM_LEN));
    }
}
