//! Attaching the hooks of the catalogue, whatever their kind, through one
//! function. An optional hook that fails says why in one line; only a
//! required hook fails the load.

use aya::{
    programs::{
        links::FdLink, BtfTracePoint, FEntry, FExit, KProbe, ProgramError, RawTracePoint,
        TracePoint,
    },
    sys::SyscallError,
    Ebpf,
};
use tracing::debug;

use super::{
    hooks::{Attach, Hook, HookStatus, Needs, Program, Way},
    pin::PinSet,
    support::KernelSupport,
    LoadOptions,
};
use crate::error_chain;

/// The kernel's BTF as aya parsed it, once per load, or why it could not.
pub(super) type KernelBtfRef<'a> = Result<&'a aya::Btf, &'a str>;

/// A link the collector holds: dropping it detaches its program.
pub(super) trait HeldLink {
    /// The link as a file descriptor, to pin it.
    fn into_fd_link(self: Box<Self>) -> Result<FdLink, String>;
}

impl<L> HeldLink for L
where
    L: TryInto<FdLink>,
    L::Error: std::fmt::Display,
{
    fn into_fd_link(self: Box<Self>) -> Result<FdLink, String> {
        (*self).try_into().map_err(|e| e.to_string())
    }
}

/// The links of the hooks attached without a pin directory: they stay
/// attached as long as this lives.
#[derive(Default)]
pub struct Links(Vec<Box<dyn HeldLink>>);

impl Links {
    /// Whether this process holds any hook attached (none when they are
    /// kept pinned).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why `hook` cannot be tried on this kernel with these options, from the
/// kernel's files alone; `None` when it can.
pub(super) fn blocker(
    hook: &Hook,
    support: &KernelSupport,
    options: &LoadOptions,
) -> Option<String> {
    if let Some(off) = hook.switched_off(options) {
        return Some(off.to_owned());
    }
    (hook.kernel_lacks)(support)
}

/// What `probes` says of a hook whose ways only attaching can test.
const NOT_TRIED: &str = "not tried: run `probes` as root to attach and see";

/// What `probes` says of each hook without the privileges to attach it.
pub fn statuses_without_loading(support: &KernelSupport, options: &LoadOptions) -> Vec<HookStatus> {
    let mut statuses: Vec<HookStatus> = Vec::new();
    for hook in super::hooks::HOOKS {
        let needed = match hook.needs {
            Needs::Nothing => None,
            Needs::Attached(needed) | Needs::SameWayAs(needed) => Some(needed),
        };
        let needed_state = needed.and_then(|n| {
            statuses
                .iter()
                .find(|s| s.is(n))
                .map(|s| (n, s.state.as_ref()))
        });
        let state = match (blocker(hook, support, options), needed_state) {
            (Some(reason), _) => Err(with_otherwise(hook, options, reason)),
            (None, Some((needed, Err(reason)))) if reason != NOT_TRIED => Err(needed.needed_text()),
            (None, Some((_, Err(_)))) => Err(NOT_TRIED.to_owned()),
            (None, _) if hook.known_by_trying_only(options) => Err(NOT_TRIED.to_owned()),
            (None, _) => Ok(()),
        };
        statuses.push(HookStatus {
            hook,
            name: hook.name(options),
            state,
        });
    }
    statuses
}

/// Attaches the hooks of the catalogue in turn, each the first way that
/// works given those attached before it.
pub(super) struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    btf: KernelBtfRef<'a>,
    options: &'a LoadOptions,
    pins: Option<&'a PinSet>,
    links: Links,
    /// Each hook tried so far, and which of its ways attached.
    attached: Vec<(&'static Hook, Result<usize, String>)>,
}

impl<'a> Attacher<'a> {
    pub(super) fn new(
        ebpf: &'a mut Ebpf,
        btf: KernelBtfRef<'a>,
        options: &'a LoadOptions,
        pins: Option<&'a PinSet>,
    ) -> Self {
        Self {
            ebpf,
            btf,
            options,
            pins,
            links: Links::default(),
            attached: Vec::new(),
        }
    }

    /// Attaches `hook` unless `blocked` says why not; `Err` says why it
    /// is not attached.
    pub(super) fn attach(
        &mut self,
        hook: &'static Hook,
        blocked: Option<String>,
    ) -> Result<(), String> {
        let way_of = |needed: &Hook| {
            self.attached
                .iter()
                .find(|(h, _)| std::ptr::eq(*h, needed))
                .and_then(|(_, way)| way.as_ref().ok().copied())
        };
        let ways = match (blocked, hook.needs) {
            (Some(reason), _) => Err(reason),
            (None, Needs::Nothing) => Ok(None),
            (None, Needs::Attached(needed)) => way_of(needed)
                .map(|_| None)
                .ok_or_else(|| needed.needed_text()),
            (None, Needs::SameWayAs(needed)) => {
                way_of(needed).map(Some).ok_or_else(|| needed.needed_text())
            }
        };
        let state = ways
            .and_then(|only| {
                let ways = hook
                    .ways(self.options)
                    .filter(|(index, _)| only.is_none_or(|only| only == *index));
                attach_first(self.ebpf, self.btf, ways, self.pins, &mut self.links)
            })
            .map_err(|reason| with_otherwise(hook, self.options, reason));
        let result = state.as_ref().map(drop).map_err(Clone::clone);
        self.attached.push((hook, state));
        result
    }

    /// The links to hold, and each hook tried with whether it attached.
    pub(super) fn finish(self) -> (Links, Vec<HookStatus>) {
        let options = self.options;
        let statuses = self
            .attached
            .into_iter()
            .map(|(hook, state)| HookStatus {
                hook,
                name: hook.name(options),
                state: state.map(drop),
            })
            .collect();
        (self.links, statuses)
    }
}

/// Adds what the user can do instead, where the hook's way says.
fn with_otherwise(hook: &Hook, options: &LoadOptions, reason: String) -> String {
    if hook.switched_off(options).is_some() {
        return reason;
    }
    match hook.ways(options).find_map(|(_, way)| way.otherwise) {
        Some(otherwise) => format!("{reason}; {otherwise}"),
        None => reason,
    }
}

/// Tries each way in turn; the first that attaches wins. When none does,
/// says why each failed (`fentry: ...; kprobe: ...`).
fn attach_first(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    ways: impl Iterator<Item = (usize, &'static Way)>,
    pins: Option<&PinSet>,
    links: &mut Links,
) -> Result<usize, String> {
    let mut failures = Vec::new();
    for (index, way) in ways {
        match attach_way(ebpf, btf, way, pins) {
            Ok(held) => {
                links.0.extend(held);
                return Ok(index);
            }
            Err(reason) => failures.push((way.programs[0].attach.kind(), reason)),
        }
    }
    Err(match failures.as_slice() {
        [(_, reason)] => reason.clone(),
        _ => failures
            .iter()
            .map(|(kind, reason)| format!("{kind}: {reason}"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Attaches every program of `way`, or none: a program that fails detaches
/// those before it. With `pins`, each link is pinned (and the collector
/// holds nothing); else the links are returned to be held.
fn attach_way(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    way: &Way,
    pins: Option<&PinSet>,
) -> Result<Vec<Box<dyn HeldLink>>, String> {
    let mut held = Vec::with_capacity(way.programs.len());
    for program in way.programs {
        // On an error, `held` drops, detaching what this way attached.
        held.push((program.name, attach_program(ebpf, btf, program)?));
    }
    let Some(pins) = pins else {
        return Ok(held.into_iter().map(|(_, link)| link).collect());
    };
    for (name, link) in held {
        pins.keep_link(name, link.into_fd_link()?)?;
    }
    Ok(Vec::new())
}

/// Loads and attaches one program as its kind says.
fn attach_program(
    ebpf: &mut Ebpf,
    btf: KernelBtfRef,
    program: &Program,
) -> Result<Box<dyn HeldLink>, String> {
    let name = program.name;
    let btf = || btf.map_err(str::to_owned);
    let loaded = |result: Result<(), ProgramError>| {
        result.map_err(|e| format!("cannot load: {}", program_error(&e)))
    };
    let attached = |e: ProgramError| format!("cannot attach: {}", program_error(&e));
    // An architecture without BPF trampolines to kernel functions.
    let trampoline = |e: ProgramError| {
        let unsupported = matches!(
            &e,
            ProgramError::SyscallError(SyscallError { io_error, .. })
                if io_error.raw_os_error() == Some(ENOTSUPP)
        );
        let why = attached(e);
        if unsupported {
            format!(
                "{why}: this kernel cannot attach fentry or fexit programs to its functions \
                 (arm64 kernels can from 6.4 on)"
            )
        } else {
            why
        }
    };
    let taken = |e: ProgramError| program_error(&e);
    Ok(match program.attach {
        Attach::Tracepoint { category, name: tp } => {
            let p: &mut TracePoint = program_of(ebpf, name)?;
            loaded(p.load())?;
            let link = p.attach(category, tp).map_err(attached)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
        Attach::RawTracepoint(tp) => {
            let p: &mut RawTracePoint = program_of(ebpf, name)?;
            loaded(p.load())?;
            let link = p.attach(tp).map_err(attached)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
        Attach::BtfTracepoint(tp) => {
            let btf = btf()?;
            let p: &mut BtfTracePoint = program_of(ebpf, name)?;
            loaded(p.load(tp, btf))?;
            let link = p.attach().map_err(attached)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
        Attach::Fentry(function) => {
            let btf = btf()?;
            let p: &mut FEntry = program_of(ebpf, name)?;
            loaded(p.load(function, btf))?;
            let link = p.attach().map_err(trampoline)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
        Attach::Fexit(function) => {
            let btf = btf()?;
            let p: &mut FExit = program_of(ebpf, name)?;
            loaded(p.load(function, btf))?;
            let link = p.attach().map_err(trampoline)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
        Attach::Kprobe(function) | Attach::Kretprobe(function) => {
            let p: &mut KProbe = program_of(ebpf, name)?;
            loaded(p.load())?;
            let link = p.attach(function, 0).map_err(attached)?;
            Box::new(p.take_link(link).map_err(taken)?)
        }
    })
}

/// The kernel's own "not supported" (`ENOTSUPP`), outside the errno
/// values userspace names.
const ENOTSUPP: i32 = 524;

/// A program of the object, as its type.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

/// Why a program could not be loaded or attached, in one line. A verifier
/// rejection carries the kernel's whole log (hundreds of lines); its last
/// verdict says what matters, and the log goes to the debug log.
fn program_error(error: &ProgramError) -> String {
    let ProgramError::LoadError {
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
