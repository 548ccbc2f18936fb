//! Loading the kernel programs and attaching them to this kernel's hooks.
//!
//! [`hooks`] lists every hook once: what it provides, how it attaches and
//! what it needs. The required hook is `tracepoint/oom/mark_victim`; every
//! other one adds to the events where the kernel and the options allow it,
//! and reports whether it is active and, if not, why ([`HookStatus`]).
//!
//! [`support`] tells what this kernel offers without loading anything (for
//! `probes` and for choosing what to load); [`attach`] attaches any hook of
//! the catalogue; this module puts them together in [`load`].

mod attach;
mod barrier;
pub mod hooks;
pub mod pin;
mod skipped;
mod support;

use std::path::{Path, PathBuf};

pub use attach::{statuses_without_loading, Links};
use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    Ebpf, EbpfLoader,
};
pub use barrier::ProgramBarrier;
pub use hooks::{kill_hooks_active, required_active, HookStatus};
use hooks::{MapKind, MapSpec, HOOKS};
use oom_common::{
    part, AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts, AllocFailureKey,
    ChosenTaskOffsets, Cmdline, KernelOffsets, MemcgStatOffsets, OomControlOffsets,
    PageAllocOffsets, SyscallOffsets, CONFIG_EXPECTED_PARTS, OFFSET_UNKNOWN,
};
pub use skipped::ProgramRuns;
pub use support::KernelSupport;
use tracing::{debug, warn};

use crate::{
    cmdline,
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
    #[error(
        "cannot attach {hook}, which the collector needs: {reason} \
         (is this kernel older than 4.13, or is BPF disabled?)"
    )]
    Required { hook: String, reason: String },
    #[error("eBPF object has no {0}: the build is broken")]
    Missing(&'static str),
    #[error("cannot use map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Pin(#[from] pin::PinError),
}

/// What this kernel offers the hooks of the catalogue, from tracefs and
/// BTF, without loading anything.
pub fn kernel_support() -> KernelSupport {
    KernelSupport::probe(hooks::syscall_exit_tracepoints())
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

/// What shapes the programs and which hooks are tried; built from the
/// command line by `cli`, or from [`Default`] and a few changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Most verbose kernel-side log level forwarded (aya-log levels:
    /// 1 error .. 5 trace; 0 silences the kernel side).
    pub kernel_log_level: u8,
    pub ring_buffer_bytes: u32,
    /// Keep each process's command line in the kernel (the exec, fork and
    /// exit hooks), so a kill can say what the victim was running.
    pub capture_cmdlines: bool,
    /// How many processes' command lines the kernel keeps.
    pub cmdline_cache_entries: u32,
    /// Attach the (hot) page-allocator hook.
    pub page_alloc_failures: bool,
    /// How to watch mmap, mremap and brk for failures.
    pub alloc_failures: AllocFailureHooks,
    /// Keep the hooks and their buffers pinned here across restarts.
    pub pin_dir: Option<PathBuf>,
}

/// The kernel's event ring buffer unless told otherwise: see
/// `--ring-buffer-bytes`.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 * 1024 * 1024;

/// How many command lines the kernel keeps unless told otherwise.
pub const DEFAULT_CMDLINE_CACHE_ENTRIES: u32 = 4096;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            // aya-log's warn.
            kernel_log_level: 2,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            capture_cmdlines: true,
            cmdline_cache_entries: DEFAULT_CMDLINE_CACHE_ENTRIES,
            page_alloc_failures: false,
            alloc_failures: AllocFailureHooks::Auto,
            pin_dir: None,
        }
    }
}

impl LoadOptions {
    /// What shapes the kernel programs and maps, as text: two starts with
    /// the same text can share one pinned set.
    fn shaping(&self) -> String {
        format!(
            "ring={} log={} cmdline={}/{} page_alloc={} alloc={:?}",
            self.ring_buffer_bytes,
            self.kernel_log_level,
            self.capture_cmdlines,
            self.cmdline_cache_entries,
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
    /// The hooks' links, held so they stay attached (empty when pinned).
    pub links: Links,
    /// With `--pin-dir`: the directory, locked while the collector runs.
    pub pin_root: Option<pin::PinRoot>,
    /// With `--pin-dir`: a handle on `CONFIG` where the count of losses
    /// reported is kept, so a restart reports each loss once.
    pub losses_reported: Option<Array<MapData, u32>>,
    pub events: RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
    pub config: Array<MapData, u32>,
    pub alloc_failures: PerCpuHashMap<MapData, AllocFailureKey, AllocFailureCounts>,
    pub alloc_failure_cgroups:
        PerCpuHashMap<MapData, AllocFailureCgroupKey, AllocFailureCgroupCounts>,
    /// Waits out the programs running at the time.
    pub barrier: ProgramBarrier,
    /// How many runs of the programs the kernel skipped.
    pub program_runs: ProgramRuns,
    pub mark_victim: TracepointFormat,
    pub hooks: Vec<HookStatus>,
}

/// Loads the programs and attaches every hook of the catalogue this kernel
/// and `options` allow: plan (what the kernel offers), overrides (the
/// offsets and sizes the programs are built with), attach, take the maps.
pub fn load(options: &LoadOptions) -> Result<Loaded, LoadError> {
    check_capabilities()?;
    let support = kernel_support();
    let pin_root = options
        .pin_dir
        .as_deref()
        .map(pin::PinRoot::open)
        .transpose()?;
    let pins = match &pin_root {
        None => None,
        Some(root) => match pin_set(root, options)? {
            Pins::Resume(pins) => return resume(support, options, &pins, pin_root),
            Pins::New(pins) => Some(pins),
        },
    };
    let pins = pins.as_ref();

    let blockers: Vec<Option<String>> = HOOKS
        .iter()
        .map(|hook| attach::blocker(hook, &support, options))
        .collect();
    let globals = Globals::of(&support)?;
    let mark_victim = support.mark_victim?;
    let mut loader = overrides(&globals, options);
    if let Some(pins) = pins {
        for map in hooks::shared_maps() {
            loader.map_pin_path(map.name, pins.map_path(map.name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Load)?;

    // Parsed once for every BTF-typed program (tp_btf, fentry, fexit).
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no BTF: {e}"));
    let mut attacher = attach::Attacher::new(
        &mut ebpf,
        btf.as_ref().map_err(String::as_str),
        options,
        pins,
    );
    for (hook, blocked) in HOOKS.iter().zip(blockers) {
        let state = attacher.attach(hook, blocked);
        if let (true, Err(reason)) = (hook.required, state) {
            return Err(LoadError::Required {
                hook: hook.name(options),
                reason: with_perf_hint(reason),
            });
        }
    }
    let (links, hooks) = attacher.finish();

    // After the exec, fork and exit hooks attached, so a process that
    // starts or ends meanwhile is caught by them, and seeding does not
    // overwrite it.
    let mut cmdlines: aya::maps::HashMap<_, u32, Cmdline> = take_map(&mut ebpf, &hooks::CMDLINES)?;
    if hooks::active(&hooks, &hooks::EXEC) {
        match cmdline::seed_from_proc(&mut cmdlines, Path::new("/proc")) {
            Ok(seeded) => debug!(seeded, "command lines of running processes read from /proc"),
            Err(error) => {
                warn!(%error, "cannot read /proc: older processes' command lines are unknown")
            }
        }
    }
    let mut config: Array<_, u32> = take_map(&mut ebpf, &hooks::CONFIG)?;
    let expected_parts = if hooks::active(&hooks, &hooks::MARK_VICTIM_TASK) {
        part::TRACEPOINT | part::VICTIM_TASK
    } else {
        part::TRACEPOINT
    };
    config
        .set(CONFIG_EXPECTED_PARTS, expected_parts, 0)
        .map_err(|source| LoadError::Map {
            map: hooks::CONFIG.name,
            source,
        })?;
    Ok(Loaded {
        losses_reported: pins
            .map(|pins| pinned_map(pins, &hooks::CONFIG))
            .transpose()?,
        alloc_failures: take_map(&mut ebpf, &hooks::ALLOC_FAILURES)?,
        alloc_failure_cgroups: take_map(&mut ebpf, &hooks::ALLOC_FAILURE_CGROUPS)?,
        barrier: barrier(take_map(&mut ebpf, &hooks::BARRIER)?)?,
        program_runs: ProgramRuns::of_object(&ebpf),
        events: take_map(&mut ebpf, &hooks::EVENTS)?,
        stats: take_map(&mut ebpf, &hooks::STATS)?,
        config,
        ebpf: Some(ebpf),
        links,
        pin_root,
        mark_victim,
        hooks,
    })
}

/// Says why a tracepoint's perf event was refused where the kernel's
/// perf_event_paranoid is above 2: Debian's and Ubuntu's kernels then
/// refuse it to all but CAP_SYS_ADMIN, CAP_PERFMON notwithstanding.
fn with_perf_hint(reason: String) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    match paranoid {
        Some(level) if level > 2 && reason.contains("Permission denied") => format!(
            "{reason}; kernel.perf_event_paranoid is {level} (Debian's and Ubuntu's default), \
             which refuses tracepoint perf events without CAP_SYS_ADMIN: set it to 2 on the node \
             (`sysctl kernel.perf_event_paranoid=2`), or grant CAP_SYS_ADMIN"
        ),
        _ => reason,
    }
}

/// The offsets the programs are built with, read from this kernel; what
/// is unknown is marked so, and the programs skip it.
struct Globals {
    offsets: KernelOffsets,
    mark_victim_pid_offset: u32,
    syscall_offsets: SyscallOffsets,
    exec_filename_offset: u32,
    oom_control_offsets: OomControlOffsets,
    chosen_task_offsets: ChosenTaskOffsets,
    memcg_stat_offsets: MemcgStatOffsets,
    page_alloc_offsets: PageAllocOffsets,
}

impl Globals {
    fn of(support: &KernelSupport) -> Result<Self, LoadError> {
        Ok(Self {
            mark_victim_pid_offset: match &support.mark_victim {
                Ok(format) => pid_offset(format)?,
                // The load stops at the missing tracepoint.
                Err(_) => OFFSET_UNKNOWN,
            },
            offsets: support
                .offsets
                .clone()
                .unwrap_or_else(|_| KernelOffsets::unknown()),
            syscall_offsets: support
                .syscall_offsets
                .clone()
                .unwrap_or_else(|_| SyscallOffsets::unknown()),
            exec_filename_offset: support
                .exec_filename_offset
                .clone()
                .unwrap_or(OFFSET_UNKNOWN),
            oom_control_offsets: support
                .oom_control_offsets
                .clone()
                .unwrap_or_else(|_| OomControlOffsets::unknown()),
            chosen_task_offsets: support.chosen_task_offsets,
            memcg_stat_offsets: support
                .memcg_stat_offsets
                .clone()
                .unwrap_or_else(|_| MemcgStatOffsets::unknown()),
            page_alloc_offsets: support
                .page_alloc_offsets
                .clone()
                .unwrap_or_else(|_| PageAllocOffsets::unknown()),
        })
    }
}

/// Where `mark_victim` records keep the victim's pid: the one field every
/// kernel's record has, and the one a kill is matched by.
fn pid_offset(mark_victim: &TracepointFormat) -> Result<u32, LoadError> {
    match mark_victim.field("pid") {
        Some(field) if field.size == 4 => Ok(field.offset as u32),
        _ => Err(LoadError::NoPidField(mark_victim.name.clone())),
    }
}

/// The loader with the kernel's offsets and the sizes `options` ask for.
fn overrides<'a>(globals: &'a Globals, options: &'a LoadOptions) -> EbpfLoader<'a> {
    let cmdline_entries = if options.capture_cmdlines {
        options.cmdline_cache_entries
    } else {
        1
    };
    let mut loader = EbpfLoader::new();
    loader
        .override_global("OFFSETS", &globals.offsets, true)
        .override_global(
            "MARK_VICTIM_PID_OFFSET",
            &globals.mark_victim_pid_offset,
            true,
        )
        .override_global("SYSCALL_OFFSETS", &globals.syscall_offsets, true)
        .override_global("EXEC_FILENAME_OFFSET", &globals.exec_filename_offset, true)
        .override_global("OOM_CONTROL_OFFSETS", &globals.oom_control_offsets, true)
        .override_global("CHOSEN_TASK_OFFSETS", &globals.chosen_task_offsets, true)
        .override_global("MEMCG_STAT_OFFSETS", &globals.memcg_stat_offsets, true)
        .override_global("PAGE_ALLOC_OFFSETS", &globals.page_alloc_offsets, true)
        .override_global(aya_log::LEVEL, &options.kernel_log_level, true)
        .map_max_entries(hooks::EVENTS.name, options.ring_buffer_bytes)
        .map_max_entries(hooks::CMDLINES.name, cmdline_entries);
    loader
}

/// The pinned set for these options: taken up as it is, or made anew.
enum Pins {
    Resume(pin::PinSet),
    New(pin::PinSet),
}

fn pin_set(root: &pin::PinRoot, options: &LoadOptions) -> Result<Pins, LoadError> {
    let pins = root.set(&pin::set_name(EBPF_OBJECT, &options.shaping()));
    if pins.resumable() {
        return Ok(Pins::Resume(pins));
    }
    let removed = root.remove_sets(None)?;
    if removed > 0 {
        warn!(
            dir = %root.dir().display(),
            "the hooks kept there were from another build or other options: \
             detached them; kills they held and not yet delivered are dropped"
        );
    }
    pins.create().map_err(|source| pin::PinError::Io {
        path: pins.dir().to_owned(),
        what: "create the directory",
        source,
    })?;
    Ok(Pins::New(pins))
}

/// Takes up the hooks a previous start kept in `pins`: they are attached
/// and write into the kept maps, so nothing is loaded or attached again.
fn resume(
    support: KernelSupport,
    options: &LoadOptions,
    pins: &pin::PinSet,
    pin_root: Option<pin::PinRoot>,
) -> Result<Loaded, LoadError> {
    let kept = pins.kept_links();
    let hooks = attach::statuses_without_loading(&support, options)
        .into_iter()
        .map(|mut status| {
            let is_kept = status
                .hook
                .programs()
                .any(|program| kept.iter().any(|k| k == program.name));
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
        links: Links::default(),
        pin_root,
        losses_reported: Some(pinned_map(pins, &hooks::CONFIG)?),
        events: pinned_map(pins, &hooks::EVENTS)?,
        stats: pinned_map(pins, &hooks::STATS)?,
        config: pinned_map(pins, &hooks::CONFIG)?,
        alloc_failures: pinned_map(pins, &hooks::ALLOC_FAILURES)?,
        alloc_failure_cgroups: pinned_map(pins, &hooks::ALLOC_FAILURE_CGROUPS)?,
        barrier: barrier(pinned_map(pins, &hooks::BARRIER)?)?,
        program_runs: ProgramRuns::of_links(kept.iter().map(|program| pins.link_path(program))),
        mark_victim,
        hooks,
    })
}

fn barrier(
    outer: aya::maps::ArrayOfMaps<MapData, Array<MapData, u32>>,
) -> Result<ProgramBarrier, LoadError> {
    ProgramBarrier::new(outer).map_err(|source| LoadError::Map {
        map: hooks::BARRIER.name,
        source,
    })
}

/// A kept map, opened from its pin as its typed handle.
fn pinned_map<T>(pins: &pin::PinSet, spec: &'static MapSpec) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    use aya::maps::Map;
    let failed = |source| LoadError::Map {
        map: spec.name,
        source,
    };
    let data = MapData::from_pin(pins.map_path(spec.name)).map_err(failed)?;
    let map = match spec.kind {
        MapKind::RingBuf => Map::RingBuf(data),
        MapKind::Array => Map::Array(data),
        MapKind::PerCpuArray => Map::PerCpuArray(data),
        MapKind::HashMap => Map::HashMap(data),
        MapKind::PerCpuHashMap => Map::PerCpuHashMap(data),
        MapKind::LruHashMap => Map::LruHashMap(data),
        MapKind::ArrayOfMaps => Map::ArrayOfMaps(data),
    };
    T::try_from(map).map_err(failed)
}

/// Takes a map out of the object as its typed handle.
fn take_map<T>(ebpf: &mut Ebpf, spec: &'static MapSpec) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(spec.name)
        .ok_or(LoadError::Missing(spec.name))?;
    T::try_from(map).map_err(|source| LoadError::Map {
        map: spec.name,
        source,
    })
}
