//! The hooks and the maps their programs share, one entry each: what the
//! rest of the loader, `probes`, metrics and pinning read. A new hook is a
//! new entry here, in [`HOOKS`], after any hook it needs.

use oom_common::AllocSyscall;

use super::{Attach, Hook, MapKind, MapSpec, Needs, Program, Switch, Way};
use crate::{
    arch::syscall_entry,
    loader::{AllocFailureHooks, KernelSupport},
};

pub const EVENTS: MapSpec = map("EVENTS", MapKind::RingBuf);
pub const STATS: MapSpec = map("STATS", MapKind::PerCpuArray);
pub const CONFIG: MapSpec = map("CONFIG", MapKind::Array);
pub const PENDING_KILL: MapSpec = map("PENDING_KILL", MapKind::PerCpuArray);
pub const OOM_CONTROLS: MapSpec = map("OOM_CONTROLS", MapKind::HashMap);
pub const OOM_CONTROL_SCRATCH: MapSpec = map("OOM_CONTROL_SCRATCH", MapKind::PerCpuArray);
pub const ALLOC_FAILURES: MapSpec = map("ALLOC_FAILURES", MapKind::PerCpuHashMap);
pub const ALLOC_FAILURE_CGROUPS: MapSpec = map("ALLOC_FAILURE_CGROUPS", MapKind::PerCpuHashMap);
pub const SYSCALL_REQUESTS: MapSpec = map("SYSCALL_REQUESTS", MapKind::LruHashMap);
pub const CMDLINES: MapSpec = map("CMDLINES", MapKind::LruHashMap);
pub const CMDLINE_SCRATCH: MapSpec = map("CMDLINE_SCRATCH", MapKind::PerCpuArray);
pub const BARRIER: MapSpec = map("BARRIER", MapKind::ArrayOfMaps);

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
    &BARRIER,
];
const OOM_CONTROL_MAPS: &[&MapSpec] = &[&OOM_CONTROLS, &OOM_CONTROL_SCRATCH, &STATS];
const CMDLINE_MAPS: &[&MapSpec] = &[&CMDLINES, &CMDLINE_SCRATCH, &STATS];
const ALLOC_FAILURE_MAPS: &[&MapSpec] = &[
    &ALLOC_FAILURES,
    &ALLOC_FAILURE_CGROUPS,
    &SYSCALL_REQUESTS,
    &CONFIG,
    &STATS,
    &BARRIER,
];

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
     victim's points, failing allocation and incident, without reading the kernel log; \
     before 6.10, what filled the limited cgroup, read at the OOM",
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
                    since: "5.15 (trampolines on system calls from 5.5, bpf_task_pt_regs \
                            from 5.15); 6.4 on arm64 (trampolines to kernel functions)",
                    alloc_failures: Some(AllocFailureHooks::Auto),
                    otherwise: Some(
                        "`--alloc-failures tracepoint` watches it through the syscall \
                         tracepoint instead, at a cost to every system call",
                    ),
                },
                // The exit's result, and the size asked for kept from the
                // entry.
                Way {
                    programs: &[
                        Program {
                            name: concat!("sys_exit_", $name),
                            attach: Attach::Tracepoint {
                                category: "syscalls",
                                name: concat!("sys_exit_", $name),
                            },
                        },
                        Program {
                            name: concat!("sys_enter_", $name),
                            attach: Attach::Tracepoint {
                                category: "syscalls",
                                name: concat!("sys_enter_", $name),
                            },
                        },
                    ],
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
