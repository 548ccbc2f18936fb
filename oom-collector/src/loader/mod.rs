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
pub mod pin;
mod support;

use std::path::{Path, PathBuf};

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
    #[error("--pin-dir {path}: cannot {what} (is it on a bpffs mount, such as /sys/fs/bpf?)")]
    PinDir {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--pin-dir: {0}")]
    Pin(String),
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

/// Whether both hooks on the OOM killer are attached, so every kill it
/// sends is seen (and a victim marked without one is known).
pub fn kill_hooks_active(hooks: &[HookStatus]) -> bool {
    [HOOK_OOM_KILL_PROCESS, HOOK_OOM_KILL_VICTIM]
        .iter()
        .all(|name| hooks.iter().any(|h| h.hook == *name && h.state.is_ok()))
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
    /// Keep the hooks and their buffers pinned here across restarts.
    pub pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// What shapes the kernel programs and maps, as text: two starts with
    /// the same text can share one pinned set.
    fn shaping(&self) -> String {
        format!(
            "ring={} log={} cmdline={:?}/{} page_alloc={} alloc={:?}",
            self.ring_buffer_bytes,
            self.kernel_log_level,
            self.cmdline.mode,
            self.cmdline.cmdline_cache_entries,
            self.page_alloc_failures,
            self.alloc_failures,
        )
    }
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
    /// The loaded object; `None` when the hooks were taken up from a
    /// pinned set, whose programs this process did not load.
    pub ebpf: Option<Ebpf>,
    /// With `--pin-dir`: a handle on `CONFIG` where the count of losses
    /// reported is kept, so a restart reports each loss once.
    pub losses_reported: Option<Array<MapData, u32>>,
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
    let pins = match &options.pin_dir {
        None => None,
        Some(root) => {
            let pins = pin::PinSet::new(root, &pin::set_name(EBPF_OBJECT, &options.shaping()));
            if pins.resumable() {
                return resume(support, &pins);
            }
            let removed = pin::remove_sets(root, None).map_err(|source| LoadError::PinDir {
                path: root.clone(),
                what: "remove the hooks an earlier start kept",
                source,
            })?;
            if removed > 0 {
                warn!(
                    dir = %root.display(),
                    "the hooks kept there were from another build or other options: \
                     detached them; kills they held and not yet delivered are dropped"
                );
            }
            pins.create().map_err(|source| LoadError::PinDir {
                path: pins.dir().to_owned(),
                what: "create the directory",
                source,
            })?;
            Some(pins)
        }
    };
    let pins = pins.as_ref();
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

    let mut loader = EbpfLoader::new();
    if let Some(pins) = pins {
        for map in pin::PINNED_MAPS {
            loader.map_pin_path(map, pins.map_path(map));
        }
    }
    let mut ebpf = loader
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
    let link = program
        .load()
        .and_then(|()| program.attach("oom", "mark_victim"))
        .map_err(|source| LoadError::Program {
            program: "mark_victim",
            source,
        })?;
    keep(pins, "mark_victim", || program.take_link(link)).map_err(LoadError::Pin)?;
    hooks.push(HookStatus {
        hook: HOOK_MARK_VICTIM,
        provides: PROVIDES_MARK_VICTIM,
        state: Ok(()),
    });

    let mut expected_parts = part::TRACEPOINT;
    let victim_task = match victim_task_blocker {
        Some(reason) => Err(reason),
        None => attach_victim_task(&mut ebpf, btf.as_ref().map_err(String::as_str), pins),
    };
    if victim_task.is_ok() {
        expected_parts |= part::VICTIM_TASK;
    }
    hooks.push(HookStatus {
        hook: HOOK_MARK_VICTIM_TASK,
        provides: PROVIDES_MARK_VICTIM_TASK,
        state: victim_task,
    });

    let oom_kill_process = oom_control_state.and_then(|()| {
        attach_oom_kill_process(&mut ebpf, btf.as_ref().map_err(String::as_str), pins)
    });
    let oom_kill_victim = match &oom_kill_process {
        Ok(how) => {
            attach_oom_kill_victim(&mut ebpf, btf.as_ref().map_err(String::as_str), *how, pins)
        }
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

    // Attached before seeding, so a process that executes, forks or exits
    // meanwhile is caught by the hooks, and seeding does not overwrite it.
    let exec_state = match &exec_blocker {
        Some(reason) => Err(reason.clone()),
        None => attach_tracepoint(
            &mut ebpf,
            "sched_process_exec",
            "sched",
            "sched_process_exec",
            pins,
        ),
    };
    let lifecycle_blocker = exec_state.as_ref().err().map(|_| NEEDS_EXEC.to_owned());
    let fork_state = match &lifecycle_blocker {
        Some(reason) => Err(reason.clone()),
        None => attach_raw_tracepoint(&mut ebpf, "sched_process_fork", pins),
    };
    let exit_state = match lifecycle_blocker {
        Some(reason) => Err(reason),
        None => attach_tracepoint(
            &mut ebpf,
            "sched_process_exit",
            "sched",
            "sched_process_exit",
            pins,
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
    hooks.push(HookStatus {
        hook: HOOK_FORK,
        provides: PROVIDES_FORK,
        state: fork_state,
    });
    hooks.push(HookStatus {
        hook: HOOK_EXIT,
        provides: PROVIDES_EXIT,
        state: exit_state,
    });

    hooks.extend(attach_alloc_hooks(
        &mut ebpf,
        btf.as_ref().map_err(String::as_str),
        options.alloc_failures,
        alloc_blockers,
        pins,
    ));

    let page_alloc_state = page_alloc_state.and_then(|()| {
        attach_tracepoint(&mut ebpf, "mm_page_alloc", "kmem", "mm_page_alloc", pins)
    });
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
    let losses_reported = pins.map(|pins| pinned_map(pins, "CONFIG")).transpose()?;
    Ok(Loaded {
        ebpf: Some(ebpf),
        losses_reported,
        events,
        stats,
        config,
        alloc_failures,
        mark_victim,
        hooks,
    })
}

/// Takes up the hooks a previous start kept in `pins`: they are attached
/// and write into the kept maps, so nothing is loaded or attached again.
fn resume(support: KernelSupport, pins: &pin::PinSet) -> Result<Loaded, LoadError> {
    let kept = pins.kept_links();
    let hooks = support
        .hook_statuses()
        .into_iter()
        .map(|mut status| {
            let is_kept = pin::programs_of(status.hook)
                .iter()
                .any(|program| kept.iter().any(|k| k == program));
            status.state = match status.state {
                _ if is_kept => Ok(()),
                Err(reason) => Err(reason),
                Ok(()) => Err(format!(
                    "not among the hooks kept in {}; `--unpin` and start again to retry it",
                    pins.dir().display()
                )),
            };
            status
        })
        .collect();
    let mark_victim = support.mark_victim?;
    tracing::info!(
        dir = %pins.dir().display(),
        "took up the hooks kept from the previous start; kills while it was stopped follow"
    );
    Ok(Loaded {
        ebpf: None,
        losses_reported: Some(pinned_map(pins, "CONFIG")?),
        events: pinned_map(pins, "EVENTS")?,
        stats: pinned_map(pins, "STATS")?,
        config: pinned_map(pins, "CONFIG")?,
        alloc_failures: pinned_map(pins, "ALLOC_FAILURES")?,
        mark_victim,
        hooks,
    })
}

/// A kept map, opened from its pin as its typed handle.
fn pinned_map<T>(pins: &pin::PinSet, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let failed = |source| LoadError::Map { map: name, source };
    let data = MapData::from_pin(pins.map_path(name)).map_err(failed)?;
    let map = match name {
        "EVENTS" => aya::maps::Map::RingBuf(data),
        "STATS" => aya::maps::Map::PerCpuArray(data),
        "ALLOC_FAILURES" => aya::maps::Map::PerCpuHashMap(data),
        _ => aya::maps::Map::Array(data),
    };
    T::try_from(map).map_err(failed)
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
