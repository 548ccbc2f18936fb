//! `tracepoint/sched/sched_process_exec`: a process executed a program.
//!
//! ```text
//! TRACE_EVENT(sched_process_exec,
//!     TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm))  3.4+
//! ```
//!
//! Fires in the process itself once the new program is in place, so its
//! arguments are readable in its own memory (`mm->arg_start..arg_end`).
//! Keeps the path and arguments in `CMDLINES` under the process id: a later
//! kill carries them even though the victim is not `current` then and its
//! `/proc` entry may be gone by the time the collector looks.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task, bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use oom_common::{Cmdline, Stat, CMDLINE_ARGS_BYTES, CMDLINE_PATH_BYTES, OFFSET_UNKNOWN};

use crate::{
    error::{ProbeError, ProbeResult},
    maps::{count, this_cpu, CMDLINES, CMDLINE_SCRATCH},
    task,
};

/// Offset of the `__data_loc char[] filename` field, from tracefs.
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFFSET: Global<u32> = Global::new(OFFSET_UNKNOWN);

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(error) => {
            count(Stat::ReadFailed);
            debug!(
                &ctx,
                "sched_process_exec: command line not kept (error {})",
                error.code()
            );
            0
        }
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> ProbeResult {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cmdline = this_cpu(&CMDLINE_SCRATCH, 0)?;
    cmdline.flags = 0;
    cmdline.path_len = read_filename(ctx, &mut cmdline.path);

    // SAFETY: a helper without arguments.
    let current = unsafe { bpf_get_current_task() };
    let (start, end) = task::arg_range(current)?;
    let mut len = end.saturating_sub(start);
    if len > CMDLINE_ARGS_BYTES as u64 {
        len = CMDLINE_ARGS_BYTES as u64;
        cmdline.flags |= Cmdline::TRUNCATED;
    }
    // SAFETY: reads the current task's own user memory into the scratch
    // slot, `len` bounded by its size above.
    let read = unsafe {
        bpf_probe_read_user(
            cmdline.args.as_mut_ptr().cast(),
            len as u32,
            start as *const core::ffi::c_void,
        )
    };
    cmdline.args_len = if read == 0 { len as u32 } else { 0 };
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 2.3 KiB entry would be copied onto the 512-byte eBPF stack"
    )]
    let inserted = CMDLINES.insert(tgid, &*cmdline, 0);
    inserted.map_err(|_| ProbeError::MapUpdateFailed)
}

/// Copies the tracepoint's `filename` into `path`; returns its length
/// without the NUL, 0 if unknown.
#[inline(always)]
fn read_filename(ctx: &TracePointContext, path: &mut [u8; CMDLINE_PATH_BYTES]) -> u32 {
    let offset = EXEC_FILENAME_OFFSET.load();
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read inside the tracepoint's record.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(offset as usize) }) else {
        return 0;
    };
    let start = (loc & 0xffff) as usize;
    // SAFETY: the string lies inside the record; the read stops at the NUL
    // or at the buffer's size.
    let copied = unsafe {
        bpf_probe_read_kernel_str(
            path.as_mut_ptr().cast(),
            CMDLINE_PATH_BYTES as u32,
            (ctx.as_ptr() as *const u8).wrapping_add(start).cast(),
        )
    };
    if copied > 0 {
        (copied - 1) as u32
    } else {
        0
    }
}
