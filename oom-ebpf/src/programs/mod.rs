//! The kernel programs, one file per kernel hook, and the kill record the
//! `oom/mark_victim` programs assemble together.
//!
//! Each program's entry point is a thin wrapper over a `try_` function
//! (`try_<name>`, or one that the hooks on one kernel function share),
//! which returns a [`ProbeResult`](crate::error::ProbeResult): the wrapper
//! is where a failure is counted or logged, or said to cost nothing.

mod alloc_failure;
mod exec;
mod exit;
mod fork;
mod mark_victim;
mod mark_victim_task;
mod oom_kill_process;

use aya_ebpf::helpers::generated::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel};
use oom_common::{part, Cmdline, OomKillRecord, RecordKind, Stat};

use crate::{
    error::{ProbeError, ProbeResult},
    maps::{count, expected_parts, this_cpu, CMDLINES, EVENTS, PENDING_KILL},
};

/// Fills `this_part` of the kill of `victim_tid` (0: not known to this
/// part) in the CPU's pending record and sends the record once it has every
/// part the collector expects.
///
/// The programs on `oom/mark_victim` run one after the other, on one CPU,
/// within one call of the tracepoint, in an order this code does not rely
/// on. A pending record that does not belong to this kill is a leftover of an
/// earlier one whose other part never came (a program detached between the
/// two): if it has the tracepoint part it is sent as it is, so nothing is
/// lost; otherwise it holds nothing worth sending and is overwritten.
#[inline(always)]
pub fn fill_kill_part(
    victim_tid: u32,
    this_part: u32,
    fill: impl FnOnce(&mut OomKillRecord),
) -> ProbeResult {
    let record = this_cpu(&PENDING_KILL, 0)?;

    let pending_parts = record.flags & (part::TRACEPOINT | part::VICTIM_TASK);
    let same_kill = pending_parts != 0
        && pending_parts & this_part == 0
        && (record.victim_tid == victim_tid || record.victim_tid == 0 || victim_tid == 0);
    // A send that fails is counted once, in `send`, and the record is then
    // gone: the slot is always emptied after a send, so a full ring buffer
    // neither counts one kill twice nor blocks the next kill's record.
    let mut result = Ok(());
    if !same_kill {
        if pending_parts & part::TRACEPOINT != 0 {
            result = send(record);
        }
        start_record(record, victim_tid);
    } else if record.victim_tid == 0 {
        record.victim_tid = victim_tid;
    }

    fill(record);
    record.flags |= this_part;

    let expected = expected_parts();
    if record.flags & expected == expected {
        let sent = send(record);
        record.flags = 0;
        result = result.and(sent);
    }
    result
}

#[inline(always)]
fn start_record(record: &mut OomKillRecord, victim_tid: u32) {
    // Field by field: a whole-struct assignment would need the record on the
    // 512-byte eBPF stack. `tracepoint` is always overwritten by its part.
    record.kind = RecordKind::OomKill as u32;
    record.flags = 0;
    // SAFETY: a helper without arguments.
    record.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    record.trigger_tid = 0;
    record.trigger_tgid = 0;
    record.trigger_comm = [0; oom_common::COMM_LEN];
    record.trigger_cgroup_id = 0;
    record.trigger_memcg_id = 0;
    record.victim_tid = victim_tid;
    record.victim_tgid = 0;
    record.victim_ppid = 0;
    record.victim_cgroup_id = 0;
    record.victim_memcg_id = 0;
    record.victim_memcg_usage_pages = 0;
    record.victim_memcg_max_pages = 0;
}

/// Copies the victim's command line from `CMDLINES` into the record.
#[inline(always)]
fn attach_cmdline(record: &mut OomKillRecord) {
    let pid = if record.victim_tgid != 0 {
        record.victim_tgid
    } else {
        record.victim_tid
    };
    record.cmdline.args_len = 0;
    record.cmdline.path_len = 0;
    // SAFETY: a lookup by value; the entry may be evicted concurrently,
    // which the probe read below tolerates.
    let Some(entry) = (unsafe { CMDLINES.get(pid) }) else {
        return;
    };
    // SAFETY: copies one map value into another of the same type; a
    // probe read, so an entry freed meanwhile cannot fault.
    let copied = unsafe {
        bpf_probe_read_kernel(
            (&mut record.cmdline as *mut Cmdline).cast(),
            size_of::<Cmdline>() as u32,
            (entry as *const Cmdline).cast(),
        )
    };
    if copied != 0 {
        record.cmdline.args_len = 0;
        record.cmdline.path_len = 0;
    }
}

/// Sends the record without the unused part of its command line (see
/// `oom_common::OOM_KILL_RECORD_FIXED_BYTES`).
#[inline(always)]
fn send(record: &mut OomKillRecord) -> ProbeResult {
    attach_cmdline(record);
    let len = record.wire_len();
    // SAFETY: `wire_len` is at most the record's size, and the record is
    // plain bytes (`repr(C)` integers).
    let bytes =
        unsafe { core::slice::from_raw_parts((record as *const OomKillRecord).cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count(Stat::RingBufFull);
        return Err(ProbeError::RingBufFull);
    }
    Ok(())
}
