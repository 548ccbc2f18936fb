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
    let ids = task::task_ids(victim).ok();
    let cgroup_id = task::unified_cgroup_id(victim).ok();
    let memcg_id = task::memory_cgroup_id(victim).ok();
    // Each read stands alone: a kernel without a memory controller still
    // gives the victim's process and cgroup. What fails is left 0.
    if ids.is_none() || cgroup_id.is_none() || memcg_id.is_none() {
        count(Stat::ReadFailed);
        warn!(
            ctx,
            "tp_btf/mark_victim: could not read the victim's task_struct"
        );
    }

    let victim_tid = ids.as_ref().map_or(0, |ids| ids.tid);
    fill_kill_part(victim_tid, part::VICTIM_TASK, |record| {
        if let Some(ids) = ids {
            record.victim_tgid = ids.tgid;
            record.victim_ppid = ids.parent_tgid;
        }
        record.victim_cgroup_id = cgroup_id.unwrap_or(0);
        record.victim_memcg_id = memcg_id.unwrap_or(0);
    })
}
