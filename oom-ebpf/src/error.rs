//! The one error type of the kernel programs.
//!
//! Each program's entry point is a thin wrapper over `try_<name>`, which
//! returns a [`ProbeResult`]; the wrapper decides, in one place per program,
//! what a failure costs: a `STATS` counter, a log line, or nothing when the
//! record itself already says what is missing. The kernel never sees these
//! errors: every program returns 0.

/// Why a program could not do all of its job.
///
/// One byte, so a `ProbeResult` travels in a register (checked below) and
/// the verifier never sees an error spilled to the stack. The values are
/// what the programs' log lines print as `error N`.
#[repr(u8)]
#[derive(Clone, Copy)]
pub enum ProbeError {
    /// A map entry the program works in was not there: this CPU's entry
    /// of a per-CPU array (never expected), or the stash of an OOM whose
    /// `oom_kill_process` no hook saw.
    NoEntry = 1,
    /// The ring buffer had no room for a record, which is then lost; the
    /// loss is counted in `Stat::RingBufFull` where it happens.
    RingBufFull = 2,
    /// The collector could not resolve an offset this read needs on this
    /// kernel (`oom_common::OFFSET_UNKNOWN`).
    OffsetUnknown = 3,
    /// A probe read failed: a NULL or stale pointer, or a kernel thread's
    /// absent `mm`.
    ReadFailed = 4,
    /// A map refused an update (full, or out of memory).
    MapUpdateFailed = 5,
}

/// What `try_<name>` returns, and what the readers of kernel structs do.
pub type ProbeResult<T = ()> = Result<T, ProbeError>;

const _: () = assert!(size_of::<ProbeResult>() <= size_of::<u64>());
const _: () = assert!(size_of::<ProbeResult<u32>>() <= size_of::<u64>());

impl ProbeError {
    /// The number a log line prints for this error.
    #[inline(always)]
    pub const fn code(self) -> u8 {
        self as u8
    }
}
