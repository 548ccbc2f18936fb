//! `tp_btf/mark_victim`: the same kill as `mark_victim.rs`, seen through the
//! BTF-typed arguments, which give the victim's `task_struct`.
//!
//! ```text
//! TP_PROTO(struct task_struct *task, uid_t uid)                 6.1+
//! ```
//!
//! The collector attaches this only where BTF shows that first argument (on
//! older kernels it is `int pid`). It adds what the tracepoint record lacks:
//! the victim's process id, parent, and cgroups.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::warn;
use oom_common::{part, Stat};

use super::fill_kill_part;
use crate::{maps::count, task};

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_task(ctx: BtfTracePointContext) -> u32 {
    match try_mark_victim_task(&ctx) {
        Ok(()) => 0,
        Err(code) => {
            warn!(&ctx, "tp_btf/mark_victim: record not sent (error {})", code);
            0
        }
    }
}

fn try_mark_victim_task(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let victim: *const u8 = ctx.arg(0);
    // Plain values, 0 when unread, rather than Options: an Option's unused
    // payload is an uninitialized stack slot, which older verifiers (5.10)
    // refuse to let the program copy.
    let (tid, tgid, parent_tgid) = match task::task_ids(victim) {
        Ok(ids) => (ids.tid, ids.tgid, ids.parent_tgid),
        Err(_) => (0, 0, 0),
    };
    let cgroup_id = task::unified_cgroup_id(victim).unwrap_or(0);
    let memcg_id = task::memory_cgroup_id(victim).unwrap_or(0);
    // The memory cgroup's usage and limit now, as the kill happens: read
    // from cgroupfs later, usage would show memory the kill already freed.
    let (memcg_usage, memcg_max) = task::memory_css(victim)
        .and_then(task::memcg_pages)
        .unwrap_or((0, 0));
    // Each read stands alone: a kernel without a memory controller still
    // gives the victim's process and cgroup. What fails is left 0.
    if tid == 0 || cgroup_id == 0 || memcg_id == 0 {
        count(Stat::ReadFailed);
        warn!(
            ctx,
            "tp_btf/mark_victim: could not read the victim's task_struct"
        );
    }

    fill_kill_part(tid, part::VICTIM_TASK, |record| {
        record.victim_tgid = tgid;
        record.victim_ppid = parent_tgid;
        record.victim_cgroup_id = cgroup_id;
        record.victim_memcg_id = memcg_id;
        record.victim_memcg_usage_pages = memcg_usage;
        record.victim_memcg_max_pages = memcg_max;
    })
}
