//! The kernel's side of the pipe: the `EVENTS` ring buffer, read through
//! tokio's `AsyncFd`, the per-CPU `STATS` counters of what the kernel could
//! not send, and the kernel programs' own log (aya-log).

use std::{io, os::fd::AsRawFd};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya_log::EbpfLogger;
use oom_common::Stat;
use tokio::io::{unix::AsyncFd, Interest};

pub struct KernelSource {
    events: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    /// Per loss counter: how much of it has been reported.
    lost_reported: [u64; LOSSES.len()],
}

/// The kernel counters that mean events were lost, and the reason each
/// gives in `events_lost`.
const LOSSES: [(Stat, &str); 2] = [
    (Stat::RingBufFull, "ring_buffer_full"),
    (Stat::AllocFailureTableFull, "allocation_failure_table_full"),
];

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
    pub fn new(events: RingBuf<MapData>, stats: PerCpuArray<MapData, u64>) -> io::Result<Self> {
        Ok(Self {
            events: register(events)?,
            stats,
            lost_reported: [0; LOSSES.len()],
        })
    }

    /// Waits until the ring buffer has records, then hands each to `each`.
    pub async fn next_batch(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut guard = self.events.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            each(&item);
        }
        guard.clear_ready();
        Ok(())
    }

    /// Hands over what is in the ring buffer now, without waiting.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        let ring = self.events.get_mut();
        while let Some(item) = ring.next() {
            each(&item);
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
