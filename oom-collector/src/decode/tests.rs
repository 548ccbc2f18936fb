//! Decoding records laid out by hand as the kernel side sends them, with
//! the `oom/mark_victim` formats of real kernels.

use oom_common::{MemcgStatsRecord, OomControl, MEMCG_STAT_COUNT};

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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
        panic!("a record of {} bytes decodes", bytes.len());
    };
    let cmdline = kill.cmdline.expect("the command line came");
    assert_eq!(cmdline.args, ["python3", "-m", "celery", "worker"]);
    assert_eq!(kill.victim.tid, 15_579, "the fixed part is whole");

    bytes.truncate(args_at + "python3\0-m".len());
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
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
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_6_18)) else {
        panic!("decodes");
    };
    assert_eq!(kill.victim.comm.as_deref(), Some("tail"));
    assert_eq!(kill.victim.uid, Some(1000));
    assert_eq!(kill.victim.oom_score_adj, Some(-17));
    assert_eq!(kill.victim.memcg_id, Some(4242));

    // The hooks read another thread than the one marked.
    let mut bytes = record_6_18(part::TRACEPOINT);
    put_control(&mut bytes, control_choosing(15_600, all));
    let Ok(KernelEvent::OomKill(kill)) = decode(&bytes, &format(MARK_VICTIM_5_10_218)) else {
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

/// The stats sent ahead of an OOM's kills: a counter not read is `None`,
/// one summed below zero is 0, and a record cut short is an error.
#[test]
fn the_limited_cgroups_stats_at_the_oom() {
    let mut record = MemcgStatsRecord {
        kind: RecordKind::MemcgStats as u32,
        read: 0b101,
        incident_boot_ns: 42,
        memcg_id: 7,
        values: [0; MEMCG_STAT_COUNT],
    };
    record.values[0] = 9_000;
    record.values[1] = 5;
    record.values[2] = -3;
    // SAFETY: plain integers, `repr(C)`, no padding.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&record as *const MemcgStatsRecord).cast::<u8>(),
            size_of::<MemcgStatsRecord>(),
        )
    };
    let Ok(KernelEvent::MemcgStats(stats)) = decode(bytes, &format(MARK_VICTIM_6_18)) else {
        panic!("decodes");
    };
    assert_eq!(stats.incident_boot_ns, 42);
    assert_eq!(stats.memcg_id, 7);
    assert_eq!(stats.values[0], Some(9_000));
    assert_eq!(stats.values[1], None, "not read");
    assert_eq!(stats.values[2], Some(0), "below zero");
    assert!(stats.values[3..].iter().all(Option::is_none));
    assert!(matches!(
        decode(&bytes[..40], &format(MARK_VICTIM_6_18)),
        Err(DecodeError::WrongSize { .. })
    ));
}
