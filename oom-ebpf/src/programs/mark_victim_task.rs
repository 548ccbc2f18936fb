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
use crate::{cgroup, error::ProbeResult, maps::count, read, task};

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_task(ctx: BtfTracePointContext) -> u32 {
    match try_mark_victim_task(&ctx) {
        Ok(()) => 0,
        Err(error) => {
            warn!(
                &ctx,
                "tp_btf/mark_victim: record not sent (error {})",
                error.code()
            );
            0
        }
    }
}

fn try_mark_victim_task(ctx: &BtfTracePointContext) -> ProbeResult {
    let victim: u64 = ctx.arg(0);
    let offsets = read::offsets();
    // Plain values, 0 when unread, rather than Options: an Option's unused
    // payload is an uninitialized stack slot, which older verifiers (5.10)
    // refuse to let the program copy.
    let ids = task::task_ids(victim, &offsets);
    // The memory cgroup's usage and limit now, as the kill happens: read
    // from cgroupfs later, usage would show memory the kill already freed.
    let cgroups = cgroup::of_task(victim, &offsets);
    // Each read stands alone: a kernel without a memory controller still
    // gives the victim's process and cgroup. What fails is left 0.
    if ids.tid == 0 || cgroups.cgroup_id == 0 || cgroups.memcg_id == 0 {
        count(Stat::ReadFailed);
        warn!(
            ctx,
            "tp_btf/mark_victim: could not read the victim's task_struct"
        );
    }

    fill_kill_part(ids.tid, part::VICTIM_TASK, |record| {
        record.victim_tgid = ids.tgid;
        record.victim_ppid = ids.parent_tgid;
        record.victim_cgroup_id = cgroups.cgroup_id;
        record.victim_memcg_id = cgroups.memcg_id;
        record.victim_memcg_usage_pages = cgroups.memcg_usage_pages;
        record.victim_memcg_max_pages = cgroups.memcg_max_pages;
    })
}
