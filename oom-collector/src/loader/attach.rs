//! Loading and attaching each kind of hook. An optional hook that fails
//! says why in one line; only the required tracepoint fails the load.

use aya::{
    programs::{links::FdLink, BtfTracePoint, FEntry, FExit, KProbe, RawTracePoint, TracePoint},
    Ebpf,
};
use tracing::debug;

use super::{error_chain, pin::PinSet, support::*, AllocFailureHooks, HookStatus, LoadError};

/// The kernel's BTF as aya parsed it, once per load, or why it could not.
pub(super) type KernelBtfRef<'a> = Result<&'a aya::Btf, &'a str>;

/// Attaches the allocation-failure hooks the way `mode` says; one status
/// per system call.
pub(super) fn attach_alloc_hooks(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    mode: AllocFailureHooks,
    blockers: Vec<Option<String>>,
    pins: Option<&PinSet>,
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
                        pins,
                    ),
                };
                status(hook, hook.tracepoint_hook, state)
            })
            .collect(),
        AllocFailureHooks::Auto => ALLOC_HOOKS
            .iter()
            .zip(blockers)
            .map(|(hook, blocker)| {
                let state = match (blocker, &btf) {
                    (Some(reason), _) => Err(reason),
                    (None, Err(e)) => Err(e.to_string()),
                    (None, Ok(btf)) => attach_fexit(ebpf, hook, btf, pins),
                };
                let state = state.map_err(|reason| {
                    format!(
                        "{reason}; `--alloc-failures tracepoint` watches it through the \
                             syscall tracepoint instead, at a cost to every system call"
                    )
                });
                status(hook, hook.fexit_hook, state)
            })
            .collect(),
    }
}

pub(super) fn attach_fexit(
    ebpf: &mut Ebpf,
    hook: &AllocHook,
    btf: &aya::Btf,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    let program: &mut FExit = program(ebpf, hook.fexit_program)?;
    program
        .load(hook.fexit_function, btf)
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    let link = program
        .attach()
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    keep(pins, hook.fexit_program, || program.take_link(link))
}

/// How the hooks on the OOM killer's functions attached.
#[derive(Clone, Copy, Debug)]
pub(super) enum FunctionHook {
    Fentry,
    Kprobe,
}

/// fentry/fexit where the kernel allows them (cheapest), else
/// kprobe/kretprobe; both the entry and the return hook, or neither.
pub(super) fn attach_oom_kill_process(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    pins: Option<&PinSet>,
) -> Result<FunctionHook, String> {
    let Err(fentry_error) = attach_fentry_pair(ebpf, btf, pins) else {
        return Ok(FunctionHook::Fentry);
    };
    attach_kprobe_pair(ebpf, pins)
        .map(|()| FunctionHook::Kprobe)
        .map_err(|kprobe_error| format!("fentry: {fentry_error}; kprobe: {kprobe_error}"))
}

/// The hook on `__oom_kill_process`, the way the one on `oom_kill_process`
/// attached: it adds to that hook's stash.
pub(super) fn attach_oom_kill_victim(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    how: FunctionHook,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    const FUNCTION: &str = "__oom_kill_process";
    match how {
        FunctionHook::Fentry => {
            let btf = btf.map_err(str::to_owned)?;
            let name = "oom_kill_victim_fentry";
            let entry: &mut FEntry = program(ebpf, name)?;
            entry.load(FUNCTION, btf).map_err(|e| program_error(&e))?;
            let link = entry.attach().map_err(|e| program_error(&e))?;
            keep(pins, name, || entry.take_link(link))
        }
        FunctionHook::Kprobe => {
            let name = "oom_kill_victim";
            let entry: &mut KProbe = program(ebpf, name)?;
            entry.load().map_err(|e| program_error(&e))?;
            let link = entry.attach(FUNCTION, 0).map_err(|e| program_error(&e))?;
            keep(pins, name, || entry.take_link(link))
        }
    }
}

pub(super) fn attach_fentry_pair(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    let btf = btf.map_err(str::to_owned)?;
    let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
    entry
        .load("oom_kill_process", btf)
        .map_err(|e| program_error(&e))?;
    let link = entry.attach().map_err(|e| program_error(&e))?;
    let exit: &mut FExit = program(ebpf, "oom_kill_process_fexit")?;
    let exit_attached = exit
        .load("oom_kill_process", btf)
        .and_then(|()| exit.attach())
        .map_err(|e| program_error(&e))
        .and_then(|exit_link| keep(pins, "oom_kill_process_fexit", || exit.take_link(exit_link)));
    let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
    if let Err(error) = exit_attached {
        let _ = entry.detach(link);
        return Err(error);
    }
    keep(pins, "oom_kill_process_fentry", || entry.take_link(link))
}

pub(super) fn attach_kprobe_pair(ebpf: &mut Ebpf, pins: Option<&PinSet>) -> Result<(), String> {
    let entry: &mut KProbe = program(ebpf, "oom_kill_process")?;
    entry.load().map_err(|e| program_error(&e))?;
    let link = entry
        .attach("oom_kill_process", 0)
        .map_err(|e| program_error(&e))?;
    let exit: &mut KProbe = program(ebpf, "oom_kill_process_return")?;
    let exit_attached = exit
        .load()
        .and_then(|()| exit.attach("oom_kill_process", 0))
        .map_err(|e| program_error(&e))
        .and_then(|exit_link| {
            keep(pins, "oom_kill_process_return", || {
                exit.take_link(exit_link)
            })
        });
    let entry: &mut KProbe = program(ebpf, "oom_kill_process")?;
    if let Err(error) = exit_attached {
        let _ = entry.detach(link);
        return Err(error);
    }
    keep(pins, "oom_kill_process", || entry.take_link(link))
}

/// With `--pin-dir`, takes the link of a hook just attached out of its
/// program and pins it, so it stays attached when the collector exits.
pub(super) fn keep<L>(
    pins: Option<&PinSet>,
    program: &str,
    take: impl FnOnce() -> Result<L, aya::programs::ProgramError>,
) -> Result<(), String>
where
    L: TryInto<FdLink>,
    L::Error: std::fmt::Display,
{
    let Some(pins) = pins else {
        return Ok(());
    };
    let link = take().map_err(|e| program_error(&e))?;
    pins.keep_link(program, link)
}

/// A program of the object, as its type.
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Takes a map out of the object as its typed handle.
pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

/// Loads and attaches an optional tracepoint program; `Err` says why not.
pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program_name: &str,
    category: &str,
    name: &str,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    let program: &mut TracePoint = program(ebpf, program_name)?;
    program
        .load()
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    let link = program
        .attach(category, name)
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    keep(pins, program_name, || program.take_link(link))
}

/// Loads and attaches an optional raw tracepoint program, named after its
/// tracepoint; `Err` says why not.
pub(super) fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    tracepoint: &str,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    let program: &mut RawTracePoint = program(ebpf, tracepoint)?;
    program
        .load()
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    let link = program
        .attach(tracepoint)
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    keep(pins, tracepoint, || program.take_link(link))
}

pub(super) fn attach_victim_task(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    pins: Option<&PinSet>,
) -> Result<(), String> {
    let btf = btf.map_err(str::to_owned)?;
    let program: &mut BtfTracePoint = program(ebpf, "mark_victim_task")?;
    program
        .load("mark_victim", btf)
        .map_err(|e| format!("cannot load: {}", program_error(&e)))?;
    let link = program
        .attach()
        .map_err(|e| format!("cannot attach: {}", program_error(&e)))?;
    keep(pins, "mark_victim_task", || program.take_link(link))
}

/// Why a program could not be loaded or attached, in one line. A verifier
/// rejection carries the kernel's whole log (hundreds of lines); its last
/// verdict says what matters, and the log goes to the debug log.
pub(super) fn program_error(error: &aya::programs::ProgramError) -> String {
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
