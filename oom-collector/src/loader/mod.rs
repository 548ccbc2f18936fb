//! Loading the kernel programs and attaching them to this kernel's hooks.
//!
//! The required hook is `tracepoint/oom/mark_victim`. `tp_btf/mark_victim`
//! adds the victim's process id, parent and cgroups where the kernel's BTF
//! shows the tracepoint passes the victim's `task_struct`. Each hook reports
//! whether it is active and, if not, why ([`HookStatus`]).
//!
//! [`support`] tells what this kernel offers without loading anything (for
//! `probes` and for choosing what to load); [`attach`] loads and attaches
//! each kind of hook; this module puts them together in [`load`].

mod attach;
mod support;

use std::path::Path;

use attach::*;
use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use oom_common::{
    part, AllocFailureCounts, AllocFailureKey, Cmdline, KernelOffsets, OomControlOffsets,
    PageAllocOffsets, SyscallOffsets, CONFIG_EXPECTED_PARTS, TRACEPOINT_PID_OFFSET_UNKNOWN,
};
use support::*;
pub use support::{KernelSupport, HOOK_MARK_VICTIM, HOOK_MARK_VICTIM_TASK};
use tracing::{debug, warn};

use crate::{
    cmdline::{self, CmdlineMode},
    tracefs::{TracefsError, TracepointFormat},
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
        .override_global("CHOSEN_TASK_OFFSETS", &support.chosen_task_offsets, true)
        .override_global("PAGE_ALLOC_OFFSETS", &page_alloc_offsets, true)
        .override_global(aya_log::LEVEL, &options.kernel_log_level, true)
        .map_max_entries("EVENTS", options.ring_buffer_bytes)
        .map_max_entries("CMDLINES", cmdline_entries)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;

    // Parsed once for every BTF-typed program (tp_btf, fentry, fexit).
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no BTF: {e}"));
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
        None => attach_victim_task(&mut ebpf, btf.as_ref().map_err(String::as_str)),
    };
    if victim_task.is_ok() {
        expected_parts |= part::VICTIM_TASK;
    }
    hooks.push(HookStatus {
        hook: HOOK_MARK_VICTIM_TASK,
        provides: PROVIDES_MARK_VICTIM_TASK,
        state: victim_task,
    });

    let oom_kill_process = oom_control_state
        .and_then(|()| attach_oom_kill_process(&mut ebpf, btf.as_ref().map_err(String::as_str)));
    let oom_kill_victim = match &oom_kill_process {
        Ok(how) => attach_oom_kill_victim(&mut ebpf, btf.as_ref().map_err(String::as_str), *how),
        Err(_) => Err(NEEDS_OOM_KILL_PROCESS.to_owned()),
    };
    hooks.push(HookStatus {
        hook: HOOK_OOM_KILL_PROCESS,
        provides: PROVIDES_OOM_KILL_PROCESS,
        state: oom_kill_process.map(drop),
    });
    hooks.push(HookStatus {
        hook: HOOK_OOM_KILL_VICTIM,
        provides: PROVIDES_OOM_KILL_VICTIM,
        state: oom_kill_victim,
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
        btf.as_ref().map_err(String::as_str),
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
