//! Allocation failures: the kernel's per-CPU `ALLOC_FAILURES` table, drained
//! once per window into one tally per process and system call.
//!
//! The kernel counts under the parity of the current epoch; draining flips
//! the epoch, waits until every program that may have read the old one has
//! returned ([`ProgramBarrier`]: an RCU grace period, not a guess at how
//! long they take), then reads and deletes the old parity's keys, which
//! nothing writes any more. Counts are therefore exact: every failure lands
//! in exactly one tally, or in the `AllocFailureTableFull` counter when the
//! table is full.
//!
//! Beside it the kernel counts every failure per memory cgroup
//! (`ALLOC_FAILURE_CGROUPS`), room or not in the per-process table. A
//! window names at most [`PROCESSES_PER_CGROUP`] processes per cgroup and
//! request kind, the ones that failed most; the rest of the cgroup's
//! failures, those of processes the table had no room for included, are
//! one tally of "other processes". So a pod whose thousands of children
//! fail costs a bounded number of lines, its total stays exact, and it
//! cannot make another pod's failures go uncounted.
//!
//! A window is the time between two drains: `--enomem-window` when the
//! timer ends it, shorter when a kill or shutdown does. Each drain says
//! when its window really began and ended.

use std::collections::BTreeMap;

use aya::maps::{Array, MapData, MapError, PerCpuHashMap};
use oom_common::{
    AllocFailureCgroupCounts, AllocFailureCgroupKey, AllocFailureCounts, AllocFailureKey,
    AllocSyscall, COMM_LEN, CONFIG_ALLOC_EPOCH,
};

use crate::{decode::comm_string, host::boot_ns_now, loader::ProgramBarrier};

/// Processes of one memory cgroup a window names one by one, per request
/// kind; the others are summed.
pub const PROCESSES_PER_CGROUP: usize = 10;

/// Failures of one process's system call over one window, or of the other
/// processes of one memory cgroup ([`AllocFailures::other_processes`]).
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
    /// For the sum of a cgroup's other processes: how many of them the
    /// per-process table told apart (those it had no room for are counted
    /// but not told apart). `None` for one process's tally.
    pub other_processes: Option<u64>,
}

/// Folds the per-CPU tallies of one key into one.
pub fn merge(key: &AllocFailureKey, per_cpu: &[AllocFailureCounts]) -> Option<AllocFailures> {
    let syscall = AllocSyscall::from_u8(key.syscall)?;
    let span = CgroupTally::of(per_cpu.iter().map(|c| {
        [
            c.count,
            c.first_boot_ns,
            c.last_boot_ns,
            c.max_request_bytes,
        ]
    }));
    if span.count == 0 {
        return None;
    }
    let nonzero = |f: fn(&AllocFailureCounts) -> u64| per_cpu.iter().map(f).find(|&v| v != 0);
    Some(AllocFailures {
        pid: key.tgid,
        syscall,
        count: span.count,
        first_boot_ns: span.first_boot_ns,
        last_boot_ns: span.last_boot_ns,
        max_request_bytes: Some(span.max_request_bytes).filter(|&b| b != 0),
        comm: per_cpu
            .iter()
            .map(|c| c.comm)
            .find(|comm| comm[0] != 0)
            .map(|comm: [u8; COMM_LEN]| comm_string(&comm)),
        cgroup_id: nonzero(|c| c.cgroup_id),
        memcg_id: nonzero(|c| c.memcg_id),
        other_processes: None,
    })
}

/// Every failure of one memory cgroup's processes of one kind, in one
/// window; also what any per-CPU tally sums to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupTally {
    pub count: u64,
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    pub max_request_bytes: u64,
}

impl CgroupTally {
    /// Sums per-CPU `[count, first, last, largest request]`: a CPU that
    /// counted nothing has no first time.
    fn of(per_cpu: impl Iterator<Item = [u64; 4]>) -> Self {
        per_cpu.fold(
            Self {
                count: 0,
                first_boot_ns: 0,
                last_boot_ns: 0,
                max_request_bytes: 0,
            },
            |sum, [count, first, last, request]| Self {
                count: sum.count + count,
                first_boot_ns: match (sum.first_boot_ns, first) {
                    (0, first) | (first, 0) => first,
                    (a, b) => a.min(b),
                },
                last_boot_ns: sum.last_boot_ns.max(last),
                max_request_bytes: sum.max_request_bytes.max(request),
            },
        )
    }
}

/// Folds the per-CPU tallies of one cgroup key into one.
pub fn merge_cgroup(per_cpu: &[AllocFailureCgroupCounts]) -> CgroupTally {
    CgroupTally::of(per_cpu.iter().map(|c| {
        [
            c.count,
            c.first_boot_ns,
            c.last_boot_ns,
            c.max_request_bytes,
        ]
    }))
}

/// Names at most `per_cgroup` processes per memory cgroup and kind, those
/// with the most failures, and sums the rest, with the failures `cgroups`
/// counted that no process's tally holds, into one tally of the cgroup's
/// other processes. Every failure counted is in exactly one tally.
pub fn fold(
    tallies: Vec<AllocFailures>,
    cgroups: &BTreeMap<(u64, AllocSyscall), CgroupTally>,
    per_cgroup: usize,
) -> Vec<AllocFailures> {
    let mut groups: BTreeMap<(u64, AllocSyscall), Vec<AllocFailures>> = BTreeMap::new();
    for tally in tallies {
        groups
            .entry((tally.memcg_id.unwrap_or(0), tally.syscall))
            .or_default()
            .push(tally);
    }
    for key in cgroups.keys() {
        groups.entry(*key).or_default();
    }
    let mut out = Vec::new();
    for ((memcg_id, syscall), mut members) in groups {
        members.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        let rest = members.split_off(members.len().min(per_cgroup));
        let named: u64 = members.iter().map(|t| t.count).sum();
        out.extend(members);
        let mut others = AllocFailures {
            pid: 0,
            syscall,
            count: 0,
            first_boot_ns: 0,
            last_boot_ns: 0,
            max_request_bytes: None,
            comm: None,
            cgroup_id: None,
            memcg_id: Some(memcg_id).filter(|&id| id != 0),
            other_processes: Some(rest.len() as u64),
        };
        let mut widen = |count: u64, first: u64, last: u64, request: Option<u64>| {
            others.count += count;
            if first != 0 && (others.first_boot_ns == 0 || first < others.first_boot_ns) {
                others.first_boot_ns = first;
            }
            others.last_boot_ns = others.last_boot_ns.max(last);
            others.max_request_bytes = others.max_request_bytes.max(request);
        };
        let told: u64 = rest.iter().map(|t| t.count).sum();
        for tally in &rest {
            widen(
                tally.count,
                tally.first_boot_ns,
                tally.last_boot_ns,
                tally.max_request_bytes,
            );
        }
        if let Some(cgroup) = cgroups.get(&(memcg_id, syscall)) {
            let untold = cgroup.count.saturating_sub(named + told);
            if untold > 0 {
                widen(
                    untold,
                    cgroup.first_boot_ns,
                    cgroup.last_boot_ns,
                    Some(cgroup.max_request_bytes).filter(|&b| b != 0),
                );
            }
        }
        if others.count > 0 {
            out.push(others);
        }
    }
    out.sort_by_key(|t| t.first_boot_ns);
    out
}

pub struct AllocFailureTable {
    table: PerCpuHashMap<MapData, AllocFailureKey, AllocFailureCounts>,
    cgroups: PerCpuHashMap<MapData, AllocFailureCgroupKey, AllocFailureCgroupCounts>,
    config: Array<MapData, u32>,
    barrier: ProgramBarrier,
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
        cgroups: PerCpuHashMap<MapData, AllocFailureCgroupKey, AllocFailureCgroupCounts>,
        config: Array<MapData, u32>,
        barrier: ProgramBarrier,
    ) -> Self {
        // The epoch the kernel counts under now: 0 for fresh maps, or where
        // an earlier start left it in maps kept with `--pin-dir`, so the
        // first drain takes what was counted while the collector was down.
        let epoch = config.get(&CONFIG_ALLOC_EPOCH, 0).unwrap_or(0);
        Self {
            table,
            cgroups,
            config,
            barrier,
            epoch,
            window_start_ns: boot_ns_now(),
        }
    }

    /// Ends the current window: returns its tallies (and any left over from
    /// earlier ones) with its real span, and starts counting the next.
    pub async fn drain(&mut self) -> Result<Window, MapError> {
        let start_boot_ns = self.window_start_ns;
        // Nothing counted, nothing to end: the wait below would only delay
        // the kill waiting behind this call (a failure counted from
        // now on belongs to the next window anyway).
        if self.table.keys().next().is_none() && self.cgroups.keys().next().is_none() {
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
        let waited = self.barrier.wait().await?;
        tracing::trace!(?waited, "programs counting under the old epoch finished");
        let tallies = self.take(|key| key.epoch == old)?;
        let cgroups = self.take_cgroups(|key| key.epoch == old)?;
        let tallies = fold(tallies, &cgroups, PROCESSES_PER_CGROUP);
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

    fn take_cgroups(
        &mut self,
        wanted: impl Fn(&AllocFailureCgroupKey) -> bool,
    ) -> Result<BTreeMap<(u64, AllocSyscall), CgroupTally>, MapError> {
        let keys: Vec<AllocFailureCgroupKey> = self
            .cgroups
            .keys()
            .filter_map(Result::ok)
            .filter(|key| wanted(key))
            .collect();
        let mut tallies = BTreeMap::new();
        for key in keys {
            let per_cpu = match self.cgroups.get(&key, 0) {
                Ok(values) => values,
                Err(MapError::KeyNotFound) => continue,
                Err(error) => return Err(error),
            };
            if let Some(syscall) = AllocSyscall::from_u8(key.syscall) {
                tallies.insert((key.memcg_id, syscall), merge_cgroup(&per_cpu));
            }
            self.cgroups.remove(&key)?;
        }
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
                other_processes: None,
            })
        );
    }

    fn tally(pid: u32, memcg_id: u64, count: u64) -> AllocFailures {
        AllocFailures {
            pid,
            syscall: AllocSyscall::Mmap,
            count,
            first_boot_ns: u64::from(pid),
            last_boot_ns: u64::from(pid) + 10,
            max_request_bytes: Some(4096),
            comm: Some("w".into()),
            cgroup_id: Some(memcg_id),
            memcg_id: Some(memcg_id),
            other_processes: None,
        }
    }

    #[test]
    fn a_crowded_cgroup_names_its_largest_processes_and_sums_the_rest_exactly() {
        // Cgroup 7: 25 processes in the table and 500 failures of
        // processes it had no room for; cgroup 9: 3 processes.
        let mut tallies: Vec<AllocFailures> =
            (1..=25).map(|pid| tally(pid, 7, u64::from(pid))).collect();
        tallies.extend((101..=103).map(|pid| tally(pid, 9, 2)));
        let in_table_7: u64 = (1..=25).sum();
        let cgroups = BTreeMap::from([
            (
                (7, AllocSyscall::Mmap),
                CgroupTally {
                    count: in_table_7 + 500,
                    first_boot_ns: 1,
                    last_boot_ns: 99,
                    max_request_bytes: 8192,
                },
            ),
            (
                (9, AllocSyscall::Mmap),
                CgroupTally {
                    count: 6,
                    first_boot_ns: 101,
                    last_boot_ns: 113,
                    max_request_bytes: 4096,
                },
            ),
        ]);
        let folded = fold(tallies, &cgroups, 10);
        let of = |memcg: u64| folded.iter().filter(move |t| t.memcg_id == Some(memcg));
        assert_eq!(of(7).count(), 11, "ten named and one of the others");
        assert_eq!(of(7).map(|t| t.count).sum::<u64>(), in_table_7 + 500);
        let named: Vec<u32> = of(7)
            .filter(|t| t.other_processes.is_none())
            .map(|t| t.pid)
            .collect();
        assert!(named.iter().all(|&pid| pid >= 16), "the largest: {named:?}");
        let others = of(7)
            .find(|t| t.other_processes.is_some())
            .expect("the others");
        assert_eq!(others.other_processes, Some(15));
        assert_eq!(others.count, (1..=15).sum::<u64>() + 500);
        assert_eq!((others.first_boot_ns, others.last_boot_ns), (1, 99));
        assert_eq!(others.max_request_bytes, Some(8192));
        assert_eq!(others.pid, 0);
        assert_eq!(of(9).count(), 3, "a quiet cgroup keeps its processes");
        assert_eq!(of(9).map(|t| t.count).sum::<u64>(), 6);
    }

    #[test]
    fn failures_only_the_cgroup_table_held_are_the_cgroups_other_processes() {
        let cgroups = BTreeMap::from([(
            (9, AllocSyscall::Brk),
            CgroupTally {
                count: 21,
                first_boot_ns: 5,
                last_boot_ns: 50,
                max_request_bytes: 0,
            },
        )]);
        let folded = fold(Vec::new(), &cgroups, 10);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].count, 21);
        assert_eq!(folded[0].other_processes, Some(0));
        assert_eq!(folded[0].max_request_bytes, None);
        assert_eq!(folded[0].syscall, AllocSyscall::Brk);
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
