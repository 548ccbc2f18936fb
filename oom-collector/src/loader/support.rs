//! What this kernel offers the collector's hooks, read from tracefs and
//! BTF without loading anything: the layouts and offsets the programs
//! need, and why a hook cannot be used where it cannot.

use std::path::Path;

use oom_common::{
    AllocSyscall, ChosenTaskOffsets, KernelOffsets, MemcgStatOffsets, OomControlOffsets,
    PageAllocOffsets, SyscallOffsets, OFFSET_UNKNOWN,
};

use crate::{
    btf::{KernelBtf, VMLINUX_BTF},
    tracefs::{self, FieldKind, TracefsError, TracepointFormat},
};

/// What the hooks could be on this kernel, before loading anything.
pub struct KernelSupport {
    pub tracefs: Result<std::path::PathBuf, TracefsError>,
    pub mark_victim: Result<TracepointFormat, TracefsError>,
    pub offsets: Result<KernelOffsets, String>,
    pub mark_victim_passes_task: Result<bool, String>,
    /// What the allocation-failure programs read; `Err` when the
    /// `sys_exit_*` tracepoints are unusable.
    pub syscall_offsets: Result<SyscallOffsets, String>,
    /// Offset of `filename` in `sched_process_exec` records.
    pub exec_filename_offset: Result<u32, String>,
    /// Offsets into `struct oom_control`, for the `oom_kill_process` hooks.
    pub oom_control_offsets: Result<OomControlOffsets, String>,
    /// What those hooks read of the chosen victim's `task_struct`.
    pub chosen_task_offsets: ChosenTaskOffsets,
    /// Where those hooks find the limited memory cgroup's stat counters;
    /// `Err` says why they cannot on this kernel.
    pub memcg_stat_offsets: Result<MemcgStatOffsets, String>,
    /// Where `kmem/mm_page_alloc` records keep `pfn` and `order`.
    pub page_alloc_offsets: Result<PageAllocOffsets, String>,
}

impl KernelSupport {
    /// Reads what the kernel offers; `syscall_exits` are the `sys_exit_*`
    /// tracepoints the allocation-failure hooks may use.
    pub fn probe<'a>(syscall_exits: impl IntoIterator<Item = &'a str>) -> Self {
        let tracefs = tracefs::find_tracefs();
        let mark_victim = match &tracefs {
            Ok(dir) => tracefs::read_format(dir, "oom", "mark_victim"),
            Err(_) => Err(TracefsError::NotMounted),
        };
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF));
        let (offsets, mark_victim_passes_task) = match &btf {
            Ok(btf) => (
                btf.kernel_offsets().map_err(|e| e.to_string()),
                btf.mark_victim_passes_task().map_err(|e| e.to_string()),
            ),
            Err(e) => (Err(e.to_string()), Err(e.to_string())),
        };
        let syscall_offsets = match &tracefs {
            Ok(dir) => syscall_exit_ret_offset(dir, syscall_exits).map(|exit_ret| {
                let regs_arg = btf
                    .as_ref()
                    .ok()
                    .and_then(|btf| btf.syscall_arg_offsets().ok())
                    .unwrap_or([OFFSET_UNKNOWN; 3]);
                // bpf_task_pt_regs() is in the kernel's list of helpers
                // from 5.15 on.
                let reads_registers = regs_arg != [OFFSET_UNKNOWN; 3]
                    && btf.as_ref().is_ok_and(|btf| {
                        btf.enum_value_anywhere("BPF_FUNC_task_pt_regs").is_some()
                    });
                SyscallOffsets {
                    exit_ret,
                    regs_arg,
                    enter_request: syscall_enter_request_offsets(dir),
                    keep_requests: u32::from(!reads_registers),
                }
            }),
            Err(e) => Err(e.to_string()),
        };
        let exec_filename_offset = match &tracefs {
            Ok(dir) => tracefs::read_format(dir, "sched", "sched_process_exec")
                .map_err(|e| e.to_string())
                .and_then(|format| {
                    format
                        .field("filename")
                        .filter(|f| f.kind == FieldKind::DataLoc)
                        .map(|f| f.offset as u32)
                        .ok_or_else(|| "sched_process_exec has no __data_loc filename".into())
                }),
            Err(e) => Err(e.to_string()),
        };
        let page_alloc_offsets = match &tracefs {
            Ok(dir) => page_alloc_offsets(dir, gfp_direct_reclaim(btf.as_ref().ok())),
            Err(e) => Err(e.to_string()),
        };
        let oom_control_offsets = match &btf {
            Ok(btf) => btf.oom_control_offsets().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let chosen_task_offsets = match &btf {
            Ok(btf) => btf.chosen_task_offsets(),
            Err(_) => ChosenTaskOffsets::unknown(),
        };
        let memcg_stat_offsets = match &btf {
            Ok(btf) => btf.memcg_stat_offsets().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        Self {
            tracefs,
            mark_victim,
            offsets,
            mark_victim_passes_task,
            syscall_offsets,
            exec_filename_offset,
            oom_control_offsets,
            chosen_task_offsets,
            memcg_stat_offsets,
            page_alloc_offsets,
        }
    }

    /// Why the exec hook cannot capture command lines, if it cannot.
    pub(super) fn exec_unavailable(&self) -> Option<String> {
        match (&self.exec_filename_offset, &self.offsets) {
            (Err(e), _) => Some(e.clone()),
            (_, Err(e)) => Some(format!(
                "process arguments are unreadable without BTF offsets ({e})"
            )),
            (Ok(_), Ok(_)) => None,
        }
    }

    /// Why the allocation-failure hook on `syscall` cannot be used, if not.
    pub(super) fn alloc_hook_unavailable(&self, syscall: AllocSyscall) -> Option<String> {
        match &self.syscall_offsets {
            Err(e) => Some(e.clone()),
            // brk reports failure by returning less than was asked: without
            // the request there is nothing to compare.
            Ok(offsets)
                if syscall == AllocSyscall::Brk
                    && offsets.regs_arg[0] == OFFSET_UNKNOWN
                    && offsets.enter_request[2] == OFFSET_UNKNOWN =>
            {
                Some(
                    "the requested break is unreadable (neither BTF's pt_regs nor the \
                     sys_enter_brk tracepoint), and brk signals failure only by comparison \
                     with it"
                        .into(),
                )
            }
            Ok(_) => None,
        }
    }

    /// Why `tp_btf/mark_victim` cannot be used, if it cannot.
    pub(super) fn victim_task_unavailable(&self) -> Option<String> {
        match (&self.offsets, &self.mark_victim_passes_task) {
            (Err(e), _) | (_, Err(e)) => Some(e.clone()),
            (Ok(_), Ok(false)) => Some(
                "this kernel's mark_victim passes only the pid, not the task \
                 (the victim's cgroups and parent are not known)"
                    .into(),
            ),
            (Ok(_), Ok(true)) => None,
        }
    }
}

/// `__GFP_DIRECT_RECLAIM`: 0x400 from 4.4 until the flags became an enum
/// of bit numbers (6.10), which BTF then names.
pub(super) fn gfp_direct_reclaim(btf: Option<&KernelBtf>) -> u32 {
    btf.and_then(|btf| btf.enum_value_anywhere("___GFP_DIRECT_RECLAIM_BIT"))
        .map_or(0x400, |bit| 1 << bit)
}

pub(super) fn page_alloc_offsets(
    tracefs: &Path,
    direct_reclaim: u32,
) -> Result<PageAllocOffsets, String> {
    let format =
        tracefs::read_format(tracefs, "kmem", "mm_page_alloc").map_err(|e| e.to_string())?;
    let pfn = format
        .field("pfn")
        .filter(|f| f.size == 8)
        .ok_or("mm_page_alloc has no 8-byte pfn")?;
    let order = format
        .field("order")
        .filter(|f| f.size == 4)
        .ok_or("mm_page_alloc has no 4-byte order")?;
    let gfp = format
        .field("gfp_flags")
        .filter(|f| f.size == 4 || f.size == 8)
        .ok_or("mm_page_alloc has no gfp_flags")?;
    Ok(PageAllocOffsets {
        pfn: pfn.offset as u32,
        order: order.offset as u32,
        page_size: rustix::param::page_size() as u32,
        gfp_flags: gfp.offset as u32,
        gfp_flags_size: gfp.size as u32,
        gfp_direct_reclaim: direct_reclaim,
    })
}

/// The field of each `sys_enter_*` record that holds the size asked for,
/// in the order of `SyscallOffsets::enter_request`.
const ENTER_REQUESTS: [(&str, &str); 3] = [
    ("sys_enter_mmap", "len"),
    ("sys_enter_mremap", "new_len"),
    ("sys_enter_brk", "brk"),
];

/// Where the `sys_enter_*` records hold the size asked for; unknown for a
/// record that tracefs does not describe so.
pub(super) fn syscall_enter_request_offsets(tracefs: &Path) -> [u32; 3] {
    ENTER_REQUESTS.map(|(tracepoint, name)| {
        tracefs::read_format(tracefs, "syscalls", tracepoint)
            .ok()
            .and_then(|format| {
                format
                    .field(name)
                    .filter(|f| f.size == 8)
                    .map(|f| f.offset as u32)
            })
            .unwrap_or(OFFSET_UNKNOWN)
    })
}

/// The offset of `ret` in the `sys_exit_*` records, the same in all three.
pub(super) fn syscall_exit_ret_offset<'a>(
    tracefs: &Path,
    tracepoints: impl IntoIterator<Item = &'a str>,
) -> Result<u32, String> {
    let mut offset = None;
    for tracepoint in tracepoints {
        let format =
            tracefs::read_format(tracefs, "syscalls", tracepoint).map_err(|e| e.to_string())?;
        let field = format
            .field("ret")
            .filter(|f| f.size == 8)
            .ok_or_else(|| format!("{tracepoint} has no 8-byte `ret` field"))?;
        match offset {
            None => offset = Some(field.offset as u32),
            Some(seen) if seen == field.offset as u32 => {}
            Some(_) => return Err("the sys_exit_* records disagree on where `ret` is".into()),
        }
    }
    offset.ok_or_else(|| "no sys_exit tracepoints".into())
}
