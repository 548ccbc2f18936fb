//! Allocation failures: the kernel's per-CPU `ALLOC_FAILURES` table, drained
//! once per window into one tally per process and system call.
//!
//! The kernel counts under the parity of the current epoch; draining flips
//! the epoch, waits out programs that may still be counting under the old
//! one, then reads and deletes the old parity's keys, which nothing writes
//! any more. Counts are therefore exact: every failure lands in exactly one
//! tally, or in the `AllocFailureTableFull` counter when the table is full.
//!
//! A window is the time between two drains: `--enomem-window` when the
//! timer ends it, shorter when a kill or shutdown does. Each drain says
//! when its window really began and ended.

use std::time::Duration;

use aya::maps::{Array, MapData, MapError, PerCpuHashMap};
use oom_common::{AllocFailureCounts, AllocFailureKey, AllocSyscall, COMM_LEN, CONFIG_ALLOC_EPOCH};

use crate::{decode::comm_string, host::boot_ns_now};

/// How long a kernel program can still be counting under the old epoch
/// after the flip: they run for microseconds without sleeping.
const EPOCH_GRACE: Duration = Duration::from_millis(5);

/// Failures of one process's system call over one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocFailures {
    pub pid: u32,
    pub syscall: AllocSyscall,
    pub count: u64,
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// The largest request that failed, when the kernel could read it.
    pub max_request_bytes: Option<u64>,
    pub comm: Option<String>,
    pub cgroup_id: Option<u64>,
    pub memcg_id: Option<u64>,
}

/// Folds the per-CPU tallies of one key into one.
pub fn merge(key: &AllocFailureKey, per_cpu: &[AllocFailureCounts]) -> Option<AllocFailures> {
    let syscall = AllocSyscall::from_u8(key.syscall)?;
    let count: u64 = per_cpu.iter().map(|c| c.count).sum();
    if count == 0 {
        return None;
    }
    let nonzero = |f: fn(&AllocFailureCounts) -> u64| per_cpu.iter().map(f).find(|&v| v != 0);
    Some(AllocFailures {
        pid: key.tgid,
        syscall,
        count,
        first_boot_ns: per_cpu
            .iter()
            .map(|c| c.first_boot_ns)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0),
        last_boot_ns: per_cpu.iter().map(|c| c.last_boot_ns).max().unwrap_or(0),
        max_request_bytes: Some(
            per_cpu
                .iter()
                .map(|c| c.max_request_bytes)
                .max()
                .unwrap_or(0),
        )
        .filter(|&b| b != 0),
        comm: per_cpu
            .iter()
            .map(|c| c.comm)
            .find(|comm| comm[0] != 0)
            .map(|comm: [u8; COMM_LEN]| comm_string(&comm)),
        cgroup_id: nonzero(|c| c.cgroup_id),
        memcg_id: nonzero(|c| c.memcg_id),
    })
}

pub struct AllocFailureTable {
    table: PerCpuHashMap<MapData, AllocFailureKey, AllocFailureCounts>,
    config: Array<MapData, u32>,
    epoch: u32,
    /// When the window being counted began (CLOCK_BOOTTIME).
    window_start_ns: u64,
}

/// One window's tallies, and when the window began and ended.
#[derive(Debug, Default)]
pub struct Window {
    pub start_boot_ns: u64,
    pub end_boot_ns: u64,
    pub tallies: Vec<AllocFailures>,
}

impl Window {
    /// How long the window lasted, in whole milliseconds (at least 1).
    pub fn duration_ms(&self) -> u64 {
        (self.end_boot_ns.saturating_sub(self.start_boot_ns) / 1_000_000).max(1)
    }
}

impl AllocFailureTable {
    pub fn new(
        table: PerCpuHashMap<MapData, AllocFailureKey, AllocFailureCounts>,
        config: Array<MapData, u32>,
    ) -> Self {
        // The epoch the kernel counts under now: 0 for fresh maps, or where
        // an earlier start left it in maps kept with `--pin-dir`, so the
        // first drain takes what was counted while the collector was down.
        let epoch = config.get(&CONFIG_ALLOC_EPOCH, 0).unwrap_or(0);
        Self {
            table,
            config,
            epoch,
            window_start_ns: boot_ns_now(),
        }
    }

    /// Ends the current window: returns its tallies (and any left over from
    /// earlier ones) with its real span, and starts counting the next.
    pub async fn drain(&mut self) -> Result<Window, MapError> {
        let start_boot_ns = self.window_start_ns;
        // Nothing counted, nothing to end: the grace period below would only
        // delay the kill waiting behind this call (a failure counted from
        // now on belongs to the next window anyway).
        if self.table.keys().next().is_none() {
            self.window_start_ns = boot_ns_now();
            return Ok(Window::default());
        }
        let old = (self.epoch & 1) as u8;
        self.epoch = self.epoch.wrapping_add(1);
        self.config.set(CONFIG_ALLOC_EPOCH, self.epoch, 0)?;
        // Failures from here on are counted under the new epoch: the next
        // window's.
        let end_boot_ns = boot_ns_now();
        self.window_start_ns = end_boot_ns;
        tokio::time::sleep(EPOCH_GRACE).await;
        let tallies = self.take(|key| key.epoch == old)?;
        Ok(Window {
            // Kept maps (`--pin-dir`) may hold failures from before this
            // process started counting.
            start_boot_ns: tallies
                .iter()
                .map(|t| t.first_boot_ns)
                .filter(|&t| t != 0)
                .fold(start_boot_ns, u64::min),
            end_boot_ns,
            tallies,
        })
    }

    fn take(
        &mut self,
        wanted: impl Fn(&AllocFailureKey) -> bool,
    ) -> Result<Vec<AllocFailures>, MapError> {
        let keys: Vec<AllocFailureKey> = self
            .table
            .keys()
            .filter_map(Result::ok)
            .filter(|key| wanted(key))
            .collect();
        let mut tallies = Vec::with_capacity(keys.len());
        for key in keys {
            let per_cpu = match self.table.get(&key, 0) {
                Ok(values) => values,
                Err(MapError::KeyNotFound) => continue,
                Err(error) => return Err(error),
            };
            tallies.extend(merge(&key, &per_cpu));
            self.table.remove(&key)?;
        }
        tallies.sort_by_key(|t| t.first_boot_ns);
        Ok(tallies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AllocFailureKey {
        AllocFailureKey {
            tgid: 4242,
            syscall: AllocSyscall::Mmap as u8,
            epoch: 1,
            _pad0: 0,
        }
    }

    #[test]
    fn merges_cpus_into_one_tally() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"java");
        let cpus = [
            AllocFailureCounts {
                count: 70,
                first_boot_ns: 2_000,
                last_boot_ns: 9_000,
                max_request_bytes: 1 << 30,
                cgroup_id: 11,
                memcg_id: 12,
                comm,
            },
            // Slot of a CPU that found the key made by another: zeroed
            // but for what it counted.
            AllocFailureCounts {
                count: 30,
                first_boot_ns: 1_500,
                last_boot_ns: 9_500,
                max_request_bytes: 4096,
                ..AllocFailureCounts::default()
            },
            AllocFailureCounts::default(),
        ];
        assert_eq!(
            merge(&key(), &cpus),
            Some(AllocFailures {
                pid: 4242,
                syscall: AllocSyscall::Mmap,
                count: 100,
                first_boot_ns: 1_500,
                last_boot_ns: 9_500,
                max_request_bytes: Some(1 << 30),
                comm: Some("java".into()),
                cgroup_id: Some(11),
                memcg_id: Some(12),
            })
        );
    }

    #[test]
    fn nothing_counted_or_an_unknown_syscall_is_no_tally() {
        assert_eq!(merge(&key(), &[AllocFailureCounts::default(); 2]), None);
        let unknown = AllocFailureKey {
            syscall: 99,
            ..key()
        };
        let one = AllocFailureCounts {
            count: 1,
            ..AllocFailureCounts::default()
        };
        assert_eq!(merge(&unknown, &[one]), None);
    }

    #[test]
    fn a_window_lasts_from_its_start_to_its_end_and_at_least_a_millisecond() {
        let window = |start_boot_ns, end_boot_ns| Window {
            start_boot_ns,
            end_boot_ns,
            tallies: Vec::new(),
        };
        assert_eq!(window(1_000_000_000, 1_250_000_000).duration_ms(), 250);
        assert_eq!(window(1_000_000_000, 1_000_100_000).duration_ms(), 1);
        assert_eq!(window(2, 1).duration_ms(), 1);
    }

    #[test]
    fn an_unread_request_size_is_unknown_not_zero() {
        let one = AllocFailureCounts {
            count: 1,
            first_boot_ns: 5,
            last_boot_ns: 5,
            ..AllocFailureCounts::default()
        };
        let tally = merge(&key(), &[one]).expect("one failure");
        assert_eq!(tally.max_request_bytes, None);
        assert_eq!(tally.comm, None);
    }
}
