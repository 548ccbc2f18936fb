//! The per-CPU `STATS` counters: what the kernel side could not deliver.

/// Indexes of the per-CPU `STATS` counters: what the kernel side could not
/// deliver. The collector sums them over CPUs and reports every increase.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A record did not fit in the ring buffer: an event was lost.
    RingBufFull = 0,
    /// A kernel memory read failed while building a record.
    ReadFailed = 1,
    /// An allocation failure found the `ALLOC_FAILURES` table full: it is
    /// counted here instead, so the total stays exact.
    AllocFailureTableFull = 2,
}

/// Number of [`Stat`] counters.
pub const STAT_COUNT: u32 = 3;

// The collector reads every counter below `STAT_COUNT`: a new one goes last.
const _: () = assert!(Stat::AllocFailureTableFull as u32 + 1 == STAT_COUNT);
