//! The kernel's side of the pipe: the `EVENTS` ring buffer, read through
//! tokio's `AsyncFd`, the per-CPU `STATS` counters of what the kernel could
//! not send, and the kernel programs' own log (aya-log).

use std::{io, os::fd::AsRawFd};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya_log::EbpfLogger;
use oom_common::{Stat, CONFIG_LOSSES_REPORTED};
use tokio::io::{unix::AsyncFd, Interest};

pub struct KernelSource {
    events: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    /// Per loss counter: how much of it has been reported.
    lost_reported: [u64; LOSSES.len()],
    /// Where `lost_reported` is kept across restarts (`--pin-dir`).
    kept: Option<Array<MapData, u32>>,
}

/// The kernel counters that mean events were lost, and the reason each
/// gives in `events_lost`.
const LOSSES: [(Stat, &str); 2] = [
    (Stat::RingBufFull, "ring_buffer_full"),
    (Stat::AllocFailureTableFull, "allocation_failure_table_full"),
];

/// The first `CONFIG` word of loss counter `index` (low, then high).
fn loss_word(index: usize) -> u32 {
    CONFIG_LOSSES_REPORTED + 2 * index as u32
}

/// The kernel programs' diagnostics, forwarded to the collector's log.
pub struct KernelLog {
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
}

/// Registers `inner` with tokio's reactor for readability.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its file descriptor (a BPF map fd held by aya)
    // and keeps it open, unchanged, for as long as the AsyncFd owns `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

impl KernelSource {
    /// `kept`: the pinned `CONFIG` map, whose loss words say what an
    /// earlier start already reported.
    pub fn new(
        events: RingBuf<MapData>,
        stats: PerCpuArray<MapData, u64>,
        kept: Option<Array<MapData, u32>>,
    ) -> io::Result<Self> {
        let mut lost_reported = [0; LOSSES.len()];
        if let Some(config) = &kept {
            for (index, reported) in lost_reported.iter_mut().enumerate() {
                let word = |offset| config.get(&(loss_word(index) + offset), 0).unwrap_or(0);
                *reported = u64::from(word(0)) | (u64::from(word(1)) << 32);
            }
        }
        Ok(Self {
            events: register(events)?,
            stats,
            lost_reported,
            kept,
        })
    }

    /// Waits until the ring buffer has records (or may have: a wake-up
    /// can find it empty); [`KernelSource::consume`] takes them.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.events.readable_mut().await?;
        // Cleared before the records are taken: one that arrives meanwhile
        // wakes the next call.
        guard.clear_ready();
        Ok(())
    }

    /// Hands each record in the ring buffer now to `each`, in order, until
    /// it returns `false`. A record leaves the buffer only once `each` has
    /// returned: should the collector be killed while handling it, a kept
    /// buffer (`--pin-dir`) still has it for the next start.
    pub fn consume(&mut self, mut each: impl FnMut(&[u8]) -> bool) {
        let ring = self.events.get_mut();
        while let Some(item) = ring.next() {
            if !each(&item) {
                break;
            }
        }
    }

    /// Sum over CPUs of one kernel counter.
    fn stat(&self, stat: Stat) -> Result<u64, aya::maps::MapError> {
        Ok(self.stats.get(&(stat as u32), 0)?.iter().sum())
    }

    /// Events the kernel dropped since the last call, by reason.
    pub fn newly_lost(&mut self) -> Result<Vec<(u64, &'static str)>, aya::maps::MapError> {
        let mut lost = Vec::new();
        for ((stat, reason), reported) in LOSSES.iter().zip(&mut self.lost_reported) {
            let total = self.stats.get(&(*stat as u32), 0)?.iter().sum::<u64>();
            if total > *reported {
                lost.push((total - *reported, *reason));
                *reported = total;
            }
        }
        if let (Some(config), false) = (&mut self.kept, lost.is_empty()) {
            for (index, reported) in self.lost_reported.iter().enumerate() {
                config.set(loss_word(index), *reported as u32, 0)?;
                config.set(loss_word(index) + 1, (*reported >> 32) as u32, 0)?;
            }
        }
        Ok(lost)
    }

    /// Kernel reads that failed while building records (partial events).
    pub fn read_failures(&self) -> Result<u64, aya::maps::MapError> {
        self.stat(Stat::ReadFailed)
    }
}

impl KernelLog {
    pub fn new(logger: Option<EbpfLogger<&'static dyn log::Log>>) -> io::Result<Self> {
        Ok(Self {
            logger: logger.map(register).transpose()?,
        })
    }

    /// Waits for kernel log records and forwards them to the log. Never
    /// returns when the kernel log is off.
    pub async fn forward(&mut self) -> io::Result<()> {
        let Some(log) = self.logger.as_mut() else {
            return std::future::pending().await;
        };
        let mut guard = log.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
        Ok(())
    }
}
