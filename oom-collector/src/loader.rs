//! Loading the kernel programs and attaching them to this kernel's hooks.
//!
//! The required hook is `tracepoint/oom/mark_victim`. `tp_btf/mark_victim`
//! adds the victim's process id, parent and cgroups where the kernel's BTF
//! shows the tracepoint passes the victim's `task_struct`. Each hook reports
//! whether it is active and, if not, why ([`HookStatus`]).

use std::path::Path;

use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
    Ebpf, EbpfLoader,
};
use oom_common::{
    part, AllocFailureCounts, AllocFailureKey, AllocSyscall, Cmdline, KernelOffsets,
    OomControlOffsets, PageAllocOffsets, SyscallOffsets, CONFIG_EXPECTED_PARTS,
    TRACEPOINT_PID_OFFSET_UNKNOWN,
};
use tracing::{debug, warn};

use crate::{
    btf::{KernelBtf, VMLINUX_BTF},
    cmdline::{self, CmdlineMode},
    tracefs::{self, FieldKind, TracefsError, TracepointFormat},
};

/// The kernel programs, compiled by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oom-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "missing capabilities {missing}: oom-collector loads eBPF programs and needs \
         CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run it as root (sudo), or grant them \
         (`setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep oom-collector`)"
    )]
    MissingCapabilities { missing: String },
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("tracepoint oom/mark_victim has no `pid` field in {0}: cannot match kills")]
    NoPidField(String),
    #[error("cannot load the eBPF programs into the kernel")]
    Load(#[source] aya::EbpfError),
    #[error("cannot load program {program} (is this kernel older than 4.13, or is BPF disabled?)")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF object has no {0}: the build is broken")]
    Missing(&'static str),
    #[error("cannot use map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One kernel hook and whether it is in use on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    /// e.g. `tracepoint/oom/mark_victim`.
    pub hook: &'static str,
    /// What the hook contributes to an event.
    pub provides: &'static str,
    /// `Ok(())` when attached (or attachable, for `probes`); else why not.
    pub state: Result<(), String>,
}

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
    /// Where `kmem/mm_page_alloc` records keep `pfn` and `order`.
    pub page_alloc_offsets: Result<PageAllocOffsets, String>,
}

impl KernelSupport {
    pub fn probe() -> Self {
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
            Ok(dir) => syscall_exit_ret_offset(dir).map(|exit_ret| SyscallOffsets {
                exit_ret,
                regs_arg: btf
                    .as_ref()
                    .ok()
                    .and_then(|btf| btf.syscall_arg_offsets().ok())
                    .unwrap_or([KernelOffsets::UNKNOWN; 3]),
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
        Self {
            tracefs,
            mark_victim,
            offsets,
            mark_victim_passes_task,
            syscall_offsets,
            exec_filename_offset,
            oom_control_offsets,
            page_alloc_offsets,
        }
    }

    /// Why the exec hook cannot capture command lines, if it cannot.
    fn exec_unavailable(&self) -> Option<String> {
        match (&self.exec_filename_offset, &self.offsets) {
            (Err(e), _) => Some(e.clone()),
            (_, Err(e)) => Some(format!(
                "process arguments are unreadable without BTF offsets ({e})"
            )),
            (Ok(_), Ok(_)) => None,
        }
    }

    /// Why the allocation-failure hook on `syscall` cannot be used, if not.
    fn alloc_hook_unavailable(&self, syscall: AllocSyscall) -> Option<String> {
        match &self.syscall_offsets {
            Err(e) => Some(e.clone()),
            // brk reports failure by returning less than was asked: without
            // the request there is nothing to compare.
            Ok(offsets)
                if syscall == AllocSyscall::Brk
                    && offsets.regs_arg[0] == KernelOffsets::UNKNOWN =>
            {
                Some(
                    "the requested break is unreadable without BTF (pt_regs), \
                     and brk signals failure only by comparison with it"
                        .into(),
                )
            }
            Ok(_) => None,
        }
    }

    /// Why `tp_btf/mark_victim` cannot be used, if it cannot.
    fn victim_task_unavailable(&self) -> Option<String> {
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

    /// The hooks as `probes` reports them, without loading anything.
    pub fn hook_statuses(&self) -> Vec<HookStatus> {
        vec![
            HookStatus {
                hook: HOOK_MARK_VICTIM,
                provides: PROVIDES_MARK_VICTIM,
                state: self
                    .mark_victim
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            },
            HookStatus {
                hook: HOOK_MARK_VICTIM_TASK,
                provides: PROVIDES_MARK_VICTIM_TASK,
                state: self.victim_task_unavailable().map_or(Ok(()), Err),
            },
        ]
        .into_iter()
        .chain(std::iter::once(HookStatus {
            hook: HOOK_OOM_KILL_PROCESS,
            provides: PROVIDES_OOM_KILL_PROCESS,
            state: match &self.oom_control_offsets {
                Ok(_) => Err("not tried: run `probes` as root to attach and see".into()),
                Err(e) => Err(e.clone()),
            },
        }))
        .chain(std::iter::once(HookStatus {
            hook: HOOK_PAGE_ALLOC,
            provides: PROVIDES_PAGE_ALLOC,
            state: self
                .page_alloc_offsets
                .as_ref()
                .map(drop)
                .map_err(Clone::clone),
        }))
        .chain(std::iter::once(HookStatus {
            hook: HOOK_EXEC,
            provides: PROVIDES_EXEC,
            state: self.exec_unavailable().map_or(Ok(()), Err),
        }))
        .chain(ALLOC_HOOKS.iter().map(|hook| {
            HookStatus {
                hook: hook.tracepoint_hook,
                provides: hook.provides,
                state: self
                    .alloc_hook_unavailable(hook.syscall)
                    .map_or(Ok(()), Err),
            }
        }))
        .collect()
    }
}

/// The architecture's name for a system call's kernel entry point.
#[cfg(target_arch = "x86_64")]
macro_rules! syscall_entry {
    ($name:literal) => {
        concat!("__x64_sys_", $name)
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! syscall_entry {
    ($name:literal) => {
        concat!("__arm64_sys_", $name)
    };
}

/// An allocation-failure hook: one system call, watched either by fexit on
/// its entry point (cheap: only its own calls pay) or by its exit
/// tracepoint (every system call on the host pays; see the README).
struct AllocHook {
    syscall: AllocSyscall,
    tracepoint_program: &'static str,
    tracepoint: &'static str,
    tracepoint_hook: &'static str,
    fexit_program: &'static str,
    fexit_function: &'static str,
    fexit_hook: &'static str,
    provides: &'static str,
}

macro_rules! alloc_hook {
    ($syscall:expr, $name:literal, $provides:literal) => {
        AllocHook {
            syscall: $syscall,
            tracepoint_program: concat!("sys_exit_", $name),
            tracepoint: concat!("sys_exit_", $name),
            tracepoint_hook: concat!("tracepoint/syscalls/sys_exit_", $name),
            fexit_program: concat!($name, "_return"),
            fexit_function: syscall_entry!($name),
            fexit_hook: concat!("fexit/", syscall_entry!($name)),
            provides: $provides,
        }
    };
}

const ALLOC_HOOKS: [AllocHook; 3] = [
    alloc_hook!(
        AllocSyscall::Mmap,
        "mmap",
        "mmap failures with ENOMEM, counted per process, with the size asked for"
    ),
    alloc_hook!(
        AllocSyscall::Mremap,
        "mremap",
        "mremap failures with ENOMEM, counted per process, with the size asked for"
    ),
    alloc_hook!(
        AllocSyscall::Brk,
        "brk",
        "heap (brk) growth refused, counted per process, with the size asked for"
    ),
];

/// Attaches the allocation-failure hooks the way `mode` says; one status
/// per system call.
fn attach_alloc_hooks(
    ebpf: &mut Ebpf,
    mode: AllocFailureHooks,
    blockers: Vec<Option<String>>,
) -> Vec<HookStatus> {
    let status = |hook: &AllocHook, name: &'static str, state| HookStatus {
        hook: name,
        provides: hook.provides,
        state,
    };
    match mode {
        AllocFailureHooks::Off => ALLOC_HOOKS
            .iter()
            .map(|hook| {
                status(
                    hook,
                    hook.fexit_hook,
                    Err("off (--alloc-failures off)".into()),
                )
            })
            .collect(),
        AllocFailureHooks::Tracepoint => ALLOC_HOOKS
            .iter()
            .zip(blockers)
            .map(|(hook, blocker)| {
                let state = match blocker {
                    Some(reason) => Err(reason),
                    None => attach_tracepoint(
                        ebpf,
                        hook.tracepoint_program,
                        "syscalls",
                        hook.tracepoint,
                    ),
                };
                status(hook, hook.tracepoint_hook, state)
            })
            .collect(),
        AllocFailureHooks::Auto => {
            let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no BTF: {e}"));
            ALLOC_HOOKS
                .iter()
                .zip(blockers)
                .map(|(hook, blocker)| {
                    let state = match (blocker, &btf) {
                        (Some(reason), _) => Err(reason),
                        (None, Err(e)) => Err(e.clone()),
                        (None, Ok(btf)) => attach_fexit(ebpf, hook, btf),
                    };
                    let state = state.map_err(|reason| {
                        format!(
                            "{reason}; `--alloc-failures tracepoint` watches it through the \
                             syscall tracepoint instead, at a cost to every system call"
                        )
                    });
                    status(hook, hook.fexit_hook, state)
                })
                .collect()
        }
    }
}

fn attach_fexit(ebpf: &mut Ebpf, hook: &AllocHook, btf: &aya::Btf) -> Result<(), String> {
    let program: &mut FExit = program(ebpf, hook.fexit_program)?;
    program
        .load(hook.fexit_function, btf)
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    program
        .attach()
        .map(drop)
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))
}

/// `__GFP_DIRECT_RECLAIM`: 0x400 from 4.4 until the flags became an enum
/// of bit numbers (6.10), which BTF then names.
fn gfp_direct_reclaim(btf: Option<&KernelBtf>) -> u32 {
    btf.and_then(|btf| btf.enum_value_anywhere("___GFP_DIRECT_RECLAIM_BIT"))
        .map_or(0x400, |bit| 1 << bit)
}

fn page_alloc_offsets(tracefs: &Path, direct_reclaim: u32) -> Result<PageAllocOffsets, String> {
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

/// The offset of `ret` in the `sys_exit_*` records, the same in all three.
fn syscall_exit_ret_offset(tracefs: &Path) -> Result<u32, String> {
    let mut offset = None;
    for hook in &ALLOC_HOOKS {
        let format = tracefs::read_format(tracefs, "syscalls", hook.tracepoint)
            .map_err(|e| e.to_string())?;
        let field = format
            .field("ret")
            .filter(|f| f.size == 8)
            .ok_or_else(|| format!("{} has no 8-byte `ret` field", hook.tracepoint))?;
        match offset {
            None => offset = Some(field.offset as u32),
            Some(seen) if seen == field.offset as u32 => {}
            Some(_) => return Err("the sys_exit_* records disagree on where `ret` is".into()),
        }
    }
    offset.ok_or_else(|| "no sys_exit tracepoints".into())
}

pub const HOOK_MARK_VICTIM: &str = "tracepoint/oom/mark_victim";
const HOOK_EXEC: &str = "tracepoint/sched/sched_process_exec";
const HOOK_PAGE_ALLOC: &str = "tracepoint/kmem/mm_page_alloc";
const PROVIDES_PAGE_ALLOC: &str =
    "kernel page allocations that failed, counted per process (--page-alloc-failures)";
const HOOK_OOM_KILL_PROCESS: &str = "fentry or kprobe/oom_kill_process";
const PROVIDES_OOM_KILL_PROCESS: &str = "the OOM's constraint, limited cgroup, domain size, \
     victim's points, failing allocation and incident, without reading the kernel log";
const PROVIDES_EXEC: &str =
    "the victim's executable and arguments, even once it is gone (process.args)";
const PROVIDES_MARK_VICTIM: &str =
    "every OOM kill: victim pid, name, memory sizes, uid, oom_score_adj; the trigger";
pub const HOOK_MARK_VICTIM_TASK: &str = "tp_btf/mark_victim";
const PROVIDES_MARK_VICTIM_TASK: &str =
    "the victim's process id, parent, cgroup and memory cgroup (container, pod, limit)";

/// Capabilities needed to load and attach, from `/proc/self/status`.
pub fn check_capabilities() -> Result<(), LoadError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(LoadError::MissingCapabilities {
        missing: missing.join(" and "),
    })
}

pub struct LoadOptions {
    /// Most verbose kernel-side log level forwarded (aya-log levels:
    /// 1 error .. 5 trace; 0 silences the kernel side).
    pub kernel_log_level: u8,
    pub ring_buffer_bytes: u32,
    /// Allocation failures are folded into one event per process and
    /// system call per window of this length.
    pub alloc_window: std::time::Duration,
    pub cmdline: crate::cli::CmdlineArgs,
    /// Attach the (hot) page-allocator hook.
    pub page_alloc_failures: bool,
    /// How to watch mmap, mremap and brk for failures.
    pub alloc_failures: AllocFailureHooks,
    /// Where the container runtimes keep their metadata.
    pub runtime_dirs: crate::enrich::runtime::RuntimeDirs,
}

/// How the collector watches system calls for allocation failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AllocFailureHooks {
    /// fexit on the system calls' entry points where the kernel allows it
    /// (only those calls pay); otherwise not at all.
    Auto,
    /// The system calls' exit tracepoints: works on every kernel, but
    /// enabling any syscall tracepoint slows every system call of every
    /// process on the host.
    Tracepoint,
    /// Not at all.
    Off,
}

/// The loaded, attached programs and the maps the collector reads.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
    pub config: Array<MapData, u32>,
    pub alloc_failures: PerCpuHashMap<MapData, AllocFailureKey, AllocFailureCounts>,
    pub mark_victim: TracepointFormat,
    pub hooks: Vec<HookStatus>,
}

pub fn load(options: &LoadOptions) -> Result<Loaded, LoadError> {
    check_capabilities()?;
    let support = KernelSupport::probe();
    let victim_task_blocker = support.victim_task_unavailable();
    let exec_blocker = match options.cmdline.mode {
        CmdlineMode::Off => Some("off (--cmdline off)".to_owned()),
        _ => support.exec_unavailable(),
    };
    let page_alloc_state = if options.page_alloc_failures {
        support.page_alloc_offsets.clone().map(drop)
    } else {
        Err("off (enable with --page-alloc-failures)".to_owned())
    };
    let page_alloc_offsets = support
        .page_alloc_offsets
        .clone()
        .unwrap_or_else(|_| PageAllocOffsets::unknown());
    let oom_control_offsets = support.oom_control_offsets.clone();
    let oom_control_state = oom_control_offsets
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone);
    let oom_control_offsets = oom_control_offsets.unwrap_or_else(|_| OomControlOffsets::unknown());
    let exec_filename_offset = support
        .exec_filename_offset
        .clone()
        .unwrap_or(TRACEPOINT_PID_OFFSET_UNKNOWN);
    let cmdline_entries = match options.cmdline.mode {
        CmdlineMode::Off => 1,
        _ => options.cmdline.cmdline_cache_entries,
    };
    let alloc_blockers: Vec<Option<String>> = ALLOC_HOOKS
        .iter()
        .map(|hook| support.alloc_hook_unavailable(hook.syscall))
        .collect();
    let syscall_offsets = support
        .syscall_offsets
        .clone()
        .unwrap_or_else(|_| SyscallOffsets::unknown());
    let mark_victim = support.mark_victim?;
    let pid_offset = match mark_victim.field("pid") {
        Some(field) if field.size == 4 => field.offset as u32,
        _ => return Err(LoadError::NoPidField(mark_victim.name.clone())),
    };
    let offsets = support.offsets.unwrap_or_else(|_| KernelOffsets::unknown());

    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .override_global("MARK_VICTIM_PID_OFFSET", &pid_offset, true)
        .override_global("SYSCALL_OFFSETS", &syscall_offsets, true)
        .override_global("EXEC_FILENAME_OFFSET", &exec_filename_offset, true)
        .override_global("OOM_CONTROL_OFFSETS", &oom_control_offsets, true)
        .override_global("PAGE_ALLOC_OFFSETS", &page_alloc_offsets, true)
        .override_global(aya_log::LEVEL, &options.kernel_log_level, true)
        .map_max_entries("EVENTS", options.ring_buffer_bytes)
        .map_max_entries("CMDLINES", cmdline_entries)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;

    let mut hooks = Vec::new();

    let program: &mut TracePoint = ebpf
        .program_mut("mark_victim")
        .ok_or(LoadError::Missing("program mark_victim"))?
        .try_into()
        .map_err(|source| LoadError::Program {
            program: "mark_victim",
            source,
        })?;
    program
        .load()
        .and_then(|()| program.attach("oom", "mark_victim"))
        .map_err(|source| LoadError::Program {
            program: "mark_victim",
            source,
        })?;
    hooks.push(HookStatus {
        hook: HOOK_MARK_VICTIM,
        provides: PROVIDES_MARK_VICTIM,
        state: Ok(()),
    });

    let mut expected_parts = part::TRACEPOINT;
    let victim_task = match victim_task_blocker {
        Some(reason) => Err(reason),
        None => attach_victim_task(&mut ebpf),
    };
    if victim_task.is_ok() {
        expected_parts |= part::VICTIM_TASK;
    }
    hooks.push(HookStatus {
        hook: HOOK_MARK_VICTIM_TASK,
        provides: PROVIDES_MARK_VICTIM_TASK,
        state: victim_task,
    });

    let oom_control_state = oom_control_state.and_then(|()| attach_oom_kill_process(&mut ebpf));
    hooks.push(HookStatus {
        hook: HOOK_OOM_KILL_PROCESS,
        provides: PROVIDES_OOM_KILL_PROCESS,
        state: oom_control_state,
    });

    // Attached before seeding, so a process that executes meanwhile is
    // caught by the hook, and seeding does not overwrite it.
    let exec_state = match exec_blocker {
        Some(reason) => Err(reason),
        None => attach_tracepoint(
            &mut ebpf,
            "sched_process_exec",
            "sched",
            "sched_process_exec",
        ),
    };
    let mut cmdlines: aya::maps::HashMap<_, u32, Cmdline> = take_map(&mut ebpf, "CMDLINES")?;
    if exec_state.is_ok() {
        match cmdline::seed_from_proc(&mut cmdlines, Path::new("/proc")) {
            Ok(seeded) => debug!(seeded, "command lines of running processes read from /proc"),
            Err(error) => {
                warn!(%error, "cannot read /proc: older processes' command lines are unknown")
            }
        }
    }
    hooks.push(HookStatus {
        hook: HOOK_EXEC,
        provides: PROVIDES_EXEC,
        state: exec_state,
    });

    hooks.extend(attach_alloc_hooks(
        &mut ebpf,
        options.alloc_failures,
        alloc_blockers,
    ));

    let page_alloc_state = page_alloc_state
        .and_then(|()| attach_tracepoint(&mut ebpf, "mm_page_alloc", "kmem", "mm_page_alloc"));
    hooks.push(HookStatus {
        hook: HOOK_PAGE_ALLOC,
        provides: PROVIDES_PAGE_ALLOC,
        state: page_alloc_state,
    });

    let mut config: Array<_, u32> = take_map(&mut ebpf, "CONFIG")?;
    config
        .set(CONFIG_EXPECTED_PARTS, expected_parts, 0)
        .map_err(|source| LoadError::Map {
            map: "CONFIG",
            source,
        })?;
    let alloc_failures = take_map(&mut ebpf, "ALLOC_FAILURES")?;

    let events = take_map(&mut ebpf, "EVENTS")?;
    let stats = take_map(&mut ebpf, "STATS")?;
    Ok(Loaded {
        ebpf,
        events,
        stats,
        config,
        alloc_failures,
        mark_victim,
        hooks,
    })
}

/// fentry/fexit where the kernel allows them (cheapest), else
/// kprobe/kretprobe; both the entry and the return hook, or neither.
fn attach_oom_kill_process(ebpf: &mut Ebpf) -> Result<(), String> {
    let Err(fentry_error) = attach_fentry_pair(ebpf) else {
        return Ok(());
    };
    attach_kprobe_pair(ebpf)
        .map_err(|kprobe_error| format!("fentry: {fentry_error}; kprobe: {kprobe_error}"))
}

fn attach_fentry_pair(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no BTF: {e}"))?;
    let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
    entry
        .load("oom_kill_process", &btf)
        .map_err(|e| program_error(&e))?;
    let link = entry.attach().map_err(|e| program_error(&e))?;
    let exit: &mut FExit = program(ebpf, "oom_kill_process_fexit")?;
    let exit_attached = exit
        .load("oom_kill_process", &btf)
        .and_then(|()| exit.attach().map(drop))
        .map_err(|e| program_error(&e));
    if let Err(error) = exit_attached {
        let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
        let _ = entry.detach(link);
        return Err(error);
    }
    Ok(())
}

fn attach_kprobe_pair(ebpf: &mut Ebpf) -> Result<(), String> {
    let entry: &mut KProbe = program(ebpf, "oom_kill_process")?;
    entry.load().map_err(|e| program_error(&e))?;
    let link = entry
        .attach("oom_kill_process", 0)
        .map_err(|e| program_error(&e))?;
    let exit: &mut KProbe = program(ebpf, "oom_kill_process_return")?;
    let exit_attached = exit
        .load()
        .and_then(|()| exit.attach("oom_kill_process", 0).map(drop))
        .map_err(|e| program_error(&e));
    if let Err(error) = exit_attached {
        let entry: &mut KProbe = program(ebpf, "oom_kill_process")?;
        let _ = entry.detach(link);
        return Err(error);
    }
    Ok(())
}

/// A program of the object, as its type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Takes a map out of the object as its typed handle.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

/// Loads and attaches an optional tracepoint program; `Err` says why not.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    let program: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("eBPF object has no program {program}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program
        .load()
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    program
        .attach(category, name)
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    Ok(())
}

fn attach_victim_task(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("cannot read BTF: {e}"))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut("mark_victim_task")
        .ok_or("eBPF object has no program mark_victim_task")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program
        .load("mark_victim", &btf)
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    program
        .attach()
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    Ok(())
}

/// Why a program could not be loaded or attached, in one line. A verifier
/// rejection carries the kernel's whole log (hundreds of lines); its last
/// verdict says what matters, and the log goes to the debug log.
fn program_error(error: &aya::programs::ProgramError) -> String {
    let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = error
    else {
        return error_chain(error);
    };
    let log = verifier_log.to_string();
    debug!(%log, "verifier log");
    let verdict = log
        .lines()
        .rev()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .find(|line| !line.starts_with("processed ") && !line.starts_with("verification time"));
    let hint = if log.contains("invalid func unknown#") {
        " (a BPF helper it needs is missing: the kernel is too old for this hook)"
    } else {
        ""
    };
    match verdict {
        Some(verdict) => format!("the kernel's verifier refused it: {verdict}{hint} ({io_error})"),
        None => format!("the kernel refused it ({io_error})"),
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
