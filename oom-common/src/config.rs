//! The `CONFIG` words: what the collector tells the programs after it
//! attached them, and what it keeps across restarts.

/// Index of the expected-parts word in the `CONFIG` array.
pub const CONFIG_EXPECTED_PARTS: u32 = 0;
/// Index of the allocation-failure epoch in the `CONFIG` array: the kernel
/// counts under the current epoch's parity while the collector drains the
/// other (see [`AllocFailureKey`](crate::AllocFailureKey)).
pub const CONFIG_ALLOC_EPOCH: u32 = 1;
/// First of the `CONFIG` words the kernel never reads: how many events
/// counted lost the collector has reported, per loss counter (two words,
/// low then high, each). They outlive a restart with `--pin-dir`, so a loss
/// is reported once.
pub const CONFIG_LOSSES_REPORTED: u32 = 2;
/// Loss counters kept in `CONFIG`: a full ring buffer, a full
/// allocation-failure table, program runs the kernel skipped.
pub const LOSS_COUNTERS: u32 = 3;
/// Number of `CONFIG` words.
pub const CONFIG_COUNT: u32 = CONFIG_LOSSES_REPORTED + 2 * LOSS_COUNTERS;
