//! The catalogue of kernel hooks: every hook once, in the order they are
//! attached and reported.
//!
//! Each entry says what the hook adds to an event (the text `probes`
//! prints), the ways it can attach in order of preference (each with its
//! programs and the first kernel that has it), whether the collector can
//! run without it, which option turns it off, which other hook it needs,
//! why this kernel may lack it, and the maps its programs share. `probes`,
//! readiness, metrics, pinning and [`super::load`] all read this table;
//! adding a hook is one entry here plus its program in the eBPF crate.
//!
//! A hook's name (`fentry or kprobe/oom_kill_process`) is made from the
//! ways the options leave it: their kinds, then what they attach to.

#[macro_use]
mod catalogue;
#[cfg(test)]
mod tests;

pub use catalogue::*;

use super::{support::KernelSupport, AllocFailureHooks, LoadOptions};

/// How one program attaches to the kernel.
#[derive(Debug)]
pub enum Attach {
    /// A tracefs tracepoint: `category/name`.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A raw tracepoint, with the kernel's own arguments.
    RawTracepoint(&'static str),
    /// A BTF-typed tracepoint (`tp_btf`).
    BtfTracepoint(&'static str),
    /// On entry to a kernel function, through BPF trampolines.
    Fentry(&'static str),
    /// On return from a kernel function, through BPF trampolines.
    Fexit(&'static str),
    /// On entry to a kernel function, through kprobes.
    Kprobe(&'static str),
    /// On return from a kernel function, through kprobes.
    Kretprobe(&'static str),
}

impl Attach {
    /// The kind, as hook names spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tracepoint { .. } => "tracepoint",
            Self::RawTracepoint(_) => "raw_tracepoint",
            Self::BtfTracepoint(_) => "tp_btf",
            Self::Fentry(_) => "fentry",
            Self::Fexit(_) => "fexit",
            Self::Kprobe(_) => "kprobe",
            Self::Kretprobe(_) => "kretprobe",
        }
    }

    /// What it attaches to: `oom/mark_victim`, `oom_kill_process`.
    pub fn target(&self) -> String {
        match self {
            Self::Tracepoint { category, name } => format!("{category}/{name}"),
            Self::RawTracepoint(name)
            | Self::BtfTracepoint(name)
            | Self::Fentry(name)
            | Self::Fexit(name)
            | Self::Kprobe(name)
            | Self::Kretprobe(name) => (*name).to_owned(),
        }
    }

    /// Whether only attaching tells if this kernel allows it: the kernel's
    /// files do not say whether a function can be traced.
    fn known_by_trying_only(&self) -> bool {
        matches!(
            self,
            Self::Fentry(_) | Self::Fexit(_) | Self::Kprobe(_) | Self::Kretprobe(_)
        )
    }
}

/// A program of the eBPF object and how it attaches.
#[derive(Debug)]
pub struct Program {
    /// The program's name in the object (its function's name).
    pub name: &'static str,
    pub attach: Attach,
}

/// One way to attach a hook: its programs, attached together or not at
/// all (an entry hook without its return hook would leak what it stashes).
#[derive(Debug)]
pub struct Way {
    pub programs: &'static [Program],
    /// The first kernel that has this way, for the reader.
    pub since: &'static str,
    /// The `--alloc-failures` choice that selects this way, if one does.
    pub alloc_failures: Option<AllocFailureHooks>,
    /// What the user can do instead when this way is unavailable.
    pub otherwise: Option<&'static str>,
}

impl Way {
    fn first(&self) -> &Attach {
        &self.programs[0].attach
    }
}

/// Which option can turn a hook off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// None: the hook is used wherever the kernel has it.
    Always,
    /// `--cmdline off`.
    Cmdline,
    /// `--page-alloc-failures` (off unless given).
    PageAllocFailures,
    /// `--alloc-failures off`.
    AllocFailures,
}

/// Another hook this one depends on.
#[derive(Clone, Copy, Debug)]
pub enum Needs {
    Nothing,
    /// It works only beside that hook.
    Attached(&'static Hook),
    /// It adds to what that hook stashes, so it attaches the same way.
    SameWayAs(&'static Hook),
}

/// A map the programs share.
#[derive(Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
}

/// A map's type, to open it from its pin as the right handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    RingBuf,
    Array,
    PerCpuArray,
    HashMap,
    PerCpuHashMap,
    LruHashMap,
    ArrayOfMaps,
}

/// One hook: see the module doc.
#[derive(Debug)]
pub struct Hook {
    /// What it adds to an event, as `probes` says.
    pub provides: &'static str,
    /// Whether the collector refuses to run without it.
    pub required: bool,
    pub switch: Switch,
    pub needs: Needs,
    /// Why this kernel lacks it, from tracefs and BTF alone.
    pub kernel_lacks: fn(&KernelSupport) -> Option<String>,
    /// In order of preference.
    pub ways: &'static [Way],
    pub maps: &'static [&'static MapSpec],
}
impl Hook {
    /// The ways `options` leave this hook, in order of preference.
    pub fn ways(&self, options: &LoadOptions) -> impl Iterator<Item = (usize, &'static Way)> {
        // With the hooks off, the name is still the one `auto` would use.
        let mode = match options.alloc_failures {
            AllocFailureHooks::Off => AllocFailureHooks::Auto,
            mode => mode,
        };
        self.ways
            .iter()
            .enumerate()
            .filter(move |(_, way)| way.alloc_failures.is_none_or(|m| m == mode))
    }

    /// The name `probes`, metrics and logs give it under `options`: the
    /// kinds of the ways left, then what they attach to.
    pub fn name(&self, options: &LoadOptions) -> String {
        let ways: Vec<&Way> = self.ways(options).map(|(_, way)| way).collect();
        let kinds: Vec<&str> = ways.iter().map(|way| way.first().kind()).collect();
        let target = ways
            .first()
            .map_or_else(String::new, |way| way.first().target());
        format!("{}/{target}", kinds.join(" or "))
    }

    /// How a hook that needs this one says it is missing.
    pub fn needed_text(&self) -> String {
        let target = self.ways[0].first().target();
        let short = target.rsplit('/').next().unwrap_or(&target);
        format!("needs the {short} hook, which is unavailable")
    }

    /// Why `options` turn it off, if they do.
    pub fn switched_off(&self, options: &LoadOptions) -> Option<&'static str> {
        match self.switch {
            Switch::Always => None,
            Switch::Cmdline => (!options.capture_cmdlines).then_some("off (--cmdline off)"),
            Switch::PageAllocFailures => {
                (!options.page_alloc_failures).then_some("off (enable with --page-alloc-failures)")
            }
            Switch::AllocFailures => (options.alloc_failures == AllocFailureHooks::Off)
                .then_some("off (--alloc-failures off)"),
        }
    }

    /// Whether the kernel's files alone tell if every way it could take
    /// attaches.
    pub(super) fn known_by_trying_only(&self, options: &LoadOptions) -> bool {
        self.ways(options)
            .all(|(_, way)| way.programs.iter().all(|p| p.attach.known_by_trying_only()))
    }

    /// Every program of every way: which of them a kept set has says
    /// whether the hook is attached.
    pub fn programs(&self) -> impl Iterator<Item = &'static Program> {
        self.ways.iter().flat_map(|way| way.programs)
    }
}

/// Every map the programs share, once each: what a pinned set keeps.
pub fn shared_maps() -> Vec<&'static MapSpec> {
    let mut maps: Vec<&'static MapSpec> = Vec::new();
    for map in HOOKS.iter().flat_map(|hook| hook.maps) {
        if !maps.contains(map) {
            maps.push(map);
        }
    }
    maps
}

/// The `sys_exit_*` tracepoints of the allocation-failure hooks.
pub fn syscall_exit_tracepoints() -> impl Iterator<Item = &'static str> {
    HOOKS
        .iter()
        .flat_map(|hook| hook.programs())
        .filter_map(|program| match program.attach {
            Attach::Tracepoint {
                category: "syscalls",
                name,
            } if name.starts_with("sys_exit_") => Some(name),
            _ => None,
        })
}

/// One hook and whether it is in use on this kernel.
#[derive(Clone, Debug)]
pub struct HookStatus {
    pub hook: &'static Hook,
    /// Its name under the options it was tried with.
    pub name: String,
    /// `Ok(())` when attached (or attachable, for `probes`); else why not.
    pub state: Result<(), String>,
}

impl HookStatus {
    pub fn is(&self, hook: &Hook) -> bool {
        std::ptr::eq(self.hook, hook)
    }
}

/// Whether `hook` is active among `statuses`.
pub fn active(statuses: &[HookStatus], hook: &Hook) -> bool {
    statuses.iter().any(|s| s.is(hook) && s.state.is_ok())
}

/// Whether every hook the collector cannot do without is active: it is
/// ready, and `probes` exits 0.
pub fn required_active(statuses: &[HookStatus]) -> bool {
    HOOKS
        .iter()
        .filter(|hook| hook.required)
        .all(|hook| active(statuses, hook))
}

/// Whether both hooks on the OOM killer are attached, so every kill it
/// sends is seen (and a victim marked without one is known).
pub fn kill_hooks_active(statuses: &[HookStatus]) -> bool {
    active(statuses, &OOM_KILL_PROCESS) && active(statuses, &OOM_KILL_VICTIM)
}
