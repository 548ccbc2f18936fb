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

use oom_common::AllocSyscall;

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

pub const EVENTS: MapSpec = map("EVENTS", MapKind::RingBuf);
pub const STATS: MapSpec = map("STATS", MapKind::PerCpuArray);
pub const CONFIG: MapSpec = map("CONFIG", MapKind::Array);
pub const PENDING_KILL: MapSpec = map("PENDING_KILL", MapKind::PerCpuArray);
pub const OOM_CONTROLS: MapSpec = map("OOM_CONTROLS", MapKind::HashMap);
pub const OOM_CONTROL_SCRATCH: MapSpec = map("OOM_CONTROL_SCRATCH", MapKind::PerCpuArray);
pub const ALLOC_FAILURES: MapSpec = map("ALLOC_FAILURES", MapKind::PerCpuHashMap);
pub const CMDLINES: MapSpec = map("CMDLINES", MapKind::LruHashMap);
pub const CMDLINE_SCRATCH: MapSpec = map("CMDLINE_SCRATCH", MapKind::PerCpuArray);

const fn map(name: &'static str, kind: MapKind) -> MapSpec {
    MapSpec { name, kind }
}

/// What every program that writes a kill record shares.
const KILL_MAPS: &[&MapSpec] = &[
    &EVENTS,
    &STATS,
    &CONFIG,
    &PENDING_KILL,
    &OOM_CONTROLS,
    &CMDLINES,
];
const OOM_CONTROL_MAPS: &[&MapSpec] = &[&OOM_CONTROLS, &OOM_CONTROL_SCRATCH, &STATS];
const CMDLINE_MAPS: &[&MapSpec] = &[&CMDLINES, &CMDLINE_SCRATCH, &STATS];
const ALLOC_FAILURE_MAPS: &[&MapSpec] = &[&ALLOC_FAILURES, &CONFIG, &STATS];

/// A way of one program.
const fn only(program: &'static [Program], since: &'static str) -> Way {
    Way {
        programs: program,
        since,
        alloc_failures: None,
        otherwise: None,
    }
}

pub static MARK_VICTIM: Hook = Hook {
    provides: "every OOM kill: victim pid, name, memory sizes, uid, oom_score_adj; the trigger",
    required: true,
    switch: Switch::Always,
    needs: Needs::Nothing,
    kernel_lacks: |support| support.mark_victim.as_ref().err().map(ToString::to_string),
    ways: &[only(
        &[Program {
            name: "mark_victim",
            attach: Attach::Tracepoint {
                category: "oom",
                name: "mark_victim",
            },
        }],
        "4.13",
    )],
    maps: KILL_MAPS,
};

pub static MARK_VICTIM_TASK: Hook = Hook {
    provides: "the victim's process id, parent, cgroup and memory cgroup (container, pod, limit)",
    required: false,
    switch: Switch::Always,
    needs: Needs::Nothing,
    kernel_lacks: KernelSupport::victim_task_unavailable,
    ways: &[only(
        &[Program {
            name: "mark_victim_task",
            attach: Attach::BtfTracepoint("mark_victim"),
        }],
        "6.1 (the tracepoint passes the task since 6.1; tp_btf since 5.5)",
    )],
    maps: KILL_MAPS,
};

pub static OOM_KILL_PROCESS: Hook = Hook {
    provides: "the OOM's constraint, limited cgroup, domain size, \
     victim's points, failing allocation and incident, without reading the kernel log",
    required: false,
    switch: Switch::Always,
    needs: Needs::Nothing,
    kernel_lacks: |support| support.oom_control_offsets.as_ref().err().cloned(),
    ways: &[
        only(
            &[
                Program {
                    name: "oom_kill_process_fentry",
                    attach: Attach::Fentry("oom_kill_process"),
                },
                Program {
                    name: "oom_kill_process_fexit",
                    attach: Attach::Fexit("oom_kill_process"),
                },
            ],
            "5.5, where the kernel allows trampolines",
        ),
        only(
            &[
                Program {
                    name: "oom_kill_process",
                    attach: Attach::Kprobe("oom_kill_process"),
                },
                Program {
                    name: "oom_kill_process_return",
                    attach: Attach::Kretprobe("oom_kill_process"),
                },
            ],
            "4.1, where the kernel allows kprobes",
        ),
    ],
    maps: OOM_CONTROL_MAPS,
};

pub static OOM_KILL_VICTIM: Hook = Hook {
    provides: "each victim's name, memory sizes, uid, parent and cgroups where mark_victim \
     carries only the pid (kernels before 6.1), a memory.oom.group kill's too",
    required: false,
    switch: Switch::Always,
    needs: Needs::SameWayAs(&OOM_KILL_PROCESS),
    kernel_lacks: |_| None,
    ways: &[
        only(
            &[Program {
                name: "oom_kill_victim_fentry",
                attach: Attach::Fentry("__oom_kill_process"),
            }],
            "5.5, where the kernel allows trampolines",
        ),
        only(
            &[Program {
                name: "oom_kill_victim",
                attach: Attach::Kprobe("__oom_kill_process"),
            }],
            "4.1, where the kernel allows kprobes",
        ),
    ],
    maps: OOM_CONTROL_MAPS,
};

pub static EXEC: Hook = Hook {
    provides: "the victim's executable and arguments, even once it is gone (process.args)",
    required: false,
    switch: Switch::Cmdline,
    needs: Needs::Nothing,
    kernel_lacks: KernelSupport::exec_unavailable,
    ways: &[only(
        &[Program {
            name: "sched_process_exec",
            attach: Attach::Tracepoint {
                category: "sched",
                name: "sched_process_exec",
            },
        }],
        "3.4",
    )],
    maps: CMDLINE_MAPS,
};

pub static FORK: Hook = Hook {
    provides: "the command line of a worker forked without exec (celery, gunicorn, \
     multiprocessing): its parent's",
    required: false,
    switch: Switch::Cmdline,
    needs: Needs::Attached(&EXEC),
    kernel_lacks: |_| None,
    // A raw tracepoint: the tracefs record has the child's thread id, not
    // its process id.
    ways: &[only(
        &[Program {
            name: "sched_process_fork",
            attach: Attach::RawTracepoint("sched_process_fork"),
        }],
        "4.17",
    )],
    maps: CMDLINE_MAPS,
};

pub static EXIT: Hook = Hook {
    provides: "command lines forgotten as their processes end, so a reused pid never shows \
     another process's arguments",
    required: false,
    switch: Switch::Cmdline,
    needs: Needs::Attached(&EXEC),
    kernel_lacks: |_| None,
    ways: &[only(
        &[Program {
            name: "sched_process_exit",
            attach: Attach::Tracepoint {
                category: "sched",
                name: "sched_process_exit",
            },
        }],
        "2.6.32",
    )],
    maps: CMDLINE_MAPS,
};

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

/// An allocation-failure hook on one system call: fexit on its entry point
/// (cheap: only its own calls pay) or its exit tracepoint (every system
/// call on the host pays; see the README), as `--alloc-failures` says.
macro_rules! alloc_failure_hook {
    ($syscall:expr, $name:literal, $provides:literal) => {
        Hook {
            provides: $provides,
            required: false,
            switch: Switch::AllocFailures,
            needs: Needs::Nothing,
            kernel_lacks: |support| support.alloc_hook_unavailable($syscall),
            ways: &[
                Way {
                    programs: &[Program {
                        name: concat!($name, "_return"),
                        attach: Attach::Fexit(syscall_entry!($name)),
                    }],
                    since: "5.5, where the kernel allows trampolines on system calls",
                    alloc_failures: Some(AllocFailureHooks::Auto),
                    otherwise: Some(
                        "`--alloc-failures tracepoint` watches it through the syscall \
                         tracepoint instead, at a cost to every system call",
                    ),
                },
                Way {
                    programs: &[Program {
                        name: concat!("sys_exit_", $name),
                        attach: Attach::Tracepoint {
                            category: "syscalls",
                            name: concat!("sys_exit_", $name),
                        },
                    }],
                    since: "2.6.33",
                    alloc_failures: Some(AllocFailureHooks::Tracepoint),
                    otherwise: None,
                },
            ],
            maps: ALLOC_FAILURE_MAPS,
        }
    };
}

pub static MMAP: Hook = alloc_failure_hook!(
    AllocSyscall::Mmap,
    "mmap",
    "mmap failures with ENOMEM, counted per process, with the size asked for"
);
pub static MREMAP: Hook = alloc_failure_hook!(
    AllocSyscall::Mremap,
    "mremap",
    "mremap failures with ENOMEM, counted per process, with the size asked for"
);
pub static BRK: Hook = alloc_failure_hook!(
    AllocSyscall::Brk,
    "brk",
    "heap (brk) growth refused, counted per process, with the size asked for"
);

pub static PAGE_ALLOC: Hook = Hook {
    provides: "kernel page allocations that failed, counted per process (--page-alloc-failures)",
    required: false,
    switch: Switch::PageAllocFailures,
    needs: Needs::Nothing,
    kernel_lacks: |support| support.page_alloc_offsets.as_ref().err().cloned(),
    ways: &[only(
        &[Program {
            name: "mm_page_alloc",
            attach: Attach::Tracepoint {
                category: "kmem",
                name: "mm_page_alloc",
            },
        }],
        "2.6.32",
    )],
    maps: ALLOC_FAILURE_MAPS,
};

/// Every hook, in the order they are attached and reported. Hooks that
/// need another come after it.
pub static HOOKS: [&Hook; 11] = [
    &MARK_VICTIM,
    &MARK_VICTIM_TASK,
    &OOM_KILL_PROCESS,
    &OOM_KILL_VICTIM,
    &EXEC,
    &FORK,
    &EXIT,
    &MMAP,
    &MREMAP,
    &BRK,
    &PAGE_ALLOC,
];

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
            } => Some(name),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_probes_and_metrics_have_always_used() {
        let auto = LoadOptions::default();
        let names: Vec<String> = HOOKS.iter().map(|hook| hook.name(&auto)).collect();
        assert_eq!(
            names,
            [
                "tracepoint/oom/mark_victim",
                "tp_btf/mark_victim",
                "fentry or kprobe/oom_kill_process",
                "fentry or kprobe/__oom_kill_process",
                "tracepoint/sched/sched_process_exec",
                "raw_tracepoint/sched_process_fork",
                "tracepoint/sched/sched_process_exit",
                concat!("fexit/", syscall_entry!("mmap")),
                concat!("fexit/", syscall_entry!("mremap")),
                concat!("fexit/", syscall_entry!("brk")),
                "tracepoint/kmem/mm_page_alloc",
            ]
        );
        let tracepoint = LoadOptions {
            alloc_failures: AllocFailureHooks::Tracepoint,
            ..LoadOptions::default()
        };
        assert_eq!(MMAP.name(&tracepoint), "tracepoint/syscalls/sys_exit_mmap");
        let off = LoadOptions {
            alloc_failures: AllocFailureHooks::Off,
            ..LoadOptions::default()
        };
        assert_eq!(MMAP.name(&off), MMAP.name(&auto));
    }

    #[test]
    fn a_hook_comes_after_the_hook_it_needs() {
        for (at, hook) in HOOKS.iter().enumerate() {
            if let Needs::Attached(needed) | Needs::SameWayAs(needed) = hook.needs {
                let needed_at = HOOKS.iter().position(|h| std::ptr::eq(*h, needed));
                assert!(
                    needed_at.is_some_and(|n| n < at),
                    "{} needs a hook listed after it",
                    hook.name(&LoadOptions::default())
                );
            }
            if let Needs::SameWayAs(needed) = hook.needs {
                assert_eq!(hook.ways.len(), needed.ways.len());
            }
        }
    }

    #[test]
    fn every_program_name_is_unique() {
        let mut names: Vec<&str> = HOOKS
            .iter()
            .flat_map(|hook| hook.programs())
            .map(|p| p.name)
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "two entries name one program");
    }

    #[test]
    fn exactly_the_object_s_programs_and_maps_are_in_the_catalogue() {
        let object = aya_obj::Object::parse(super::super::EBPF_OBJECT).expect("the eBPF object");
        let mut in_object: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        let mut in_catalogue: Vec<&str> = HOOKS
            .iter()
            .flat_map(|hook| hook.programs())
            .map(|p| p.name)
            .collect();
        in_object.sort_unstable();
        in_catalogue.sort_unstable();
        assert_eq!(in_catalogue, in_object, "programs");

        let mut maps: Vec<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            // aya-log's buffer and the `.rodata`/`.bss` sections of globals.
            .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .filter(|name| !name.starts_with("AYA_"))
            .collect();
        let mut shared: Vec<&str> = shared_maps().iter().map(|m| m.name).collect();
        maps.sort_unstable();
        shared.sort_unstable();
        assert_eq!(shared, maps, "maps");
    }
}
