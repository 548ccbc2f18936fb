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
    lost_reported: u64,
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
    pub fn new(events: RingBuf<MapData>, stats: PerCpuArray<MapData, u64>) -> io::Result<Self> {
        Ok(Self {
            events: register(events)?,
            stats,
            lost_reported: 0,
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

    /// Events the kernel dropped since the last call (ring buffer full).
    pub fn newly_lost(&mut self) -> Result<u64, aya::maps::MapError> {
        let lost = self.stat(Stat::RingBufFull)?;
        let new = lost.saturating_sub(self.lost_reported);
        self.lost_reported = lost;
        Ok(new)
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
