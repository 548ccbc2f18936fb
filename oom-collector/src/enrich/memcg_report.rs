//! What filled a memory cgroup, who held it and how often it met its
//! limit, read from cgroupfs and `/proc` right after a kill.
//!
//! Read after the kill, the cgroup may no longer hold what the kill
//! freed: the victim's anonymous memory (its file pages and its tmpfs
//! files stay charged). So the cgroup's anonymous memory is taken as the
//! larger of what is charged now and the victim's own at the kill (its
//! record) plus what the other processes hold now; the report does not
//! wait for the victim to exit. The rest of the cgroup may have moved
//! meanwhile: that is why the counters read in the kernel at the OOM
//! ([`stats_at_oom`]) and the kernel's own report, where the collector can
//! read the kernel log ([`report_from_log`]), are preferred.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use oom_common::MEMCG_STAT_ITEMS;
use walkdir::WalkDir;

use super::cgroup::CgroupVersion;
use crate::{
    decode::MemcgStatsAtOom,
    document::{
        MemcgEvents, MemcgPressure, MemcgStats, MemcgTask, NodeMemcg, NodeMemcgPod, NodeStats,
        OomNode, PressureAverages,
    },
    kmsg::LoggedReport,
};

/// Processes named in `oom.memcg.tasks`.
pub const LISTED_TASKS: usize = 10;

/// `memory.stat` as name -> bytes.
fn stat_lines(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (name, value) = line.split_once(' ')?;
        Some((name, value.trim().parse().ok()?))
    })
}

/// The cgroup's stats by this project's names, from `memory.stat` (and,
/// on v1, `memory.kmem.usage_in_bytes` for kernel memory; on v2
/// `memory.swap.current` for swap), hierarchical: the limited cgroup's
/// children included.
pub fn parse_stats(
    version: CgroupVersion,
    memory_stat: &str,
    kernel_bytes: Option<u64>,
    swap_bytes: Option<u64>,
) -> MemcgStats {
    let mut stats = MemcgStats {
        source: "cgroupfs",
        ..MemcgStats::default()
    };
    match version {
        CgroupVersion::V1 => {
            for (name, value) in stat_lines(memory_stat) {
                let field = match name {
                    // The hierarchical totals: a limit on a parent covers
                    // its children's pages.
                    "total_rss" => &mut stats.anon_bytes,
                    "total_cache" => &mut stats.file_bytes,
                    "total_shmem" => &mut stats.shmem_bytes,
                    "total_mapped_file" => &mut stats.file_mapped_bytes,
                    "total_dirty" => &mut stats.file_dirty_bytes,
                    "total_writeback" => &mut stats.file_writeback_bytes,
                    "total_swap" => &mut stats.swap_bytes,
                    _ => continue,
                };
                *field = Some(value);
            }
            stats.kernel_bytes = kernel_bytes;
        }
        CgroupVersion::V2 => {
            let mut kernel_parts: Option<u64> = None;
            for (name, value) in stat_lines(memory_stat) {
                let field = match name {
                    "anon" => &mut stats.anon_bytes,
                    "file" => &mut stats.file_bytes,
                    "shmem" => &mut stats.shmem_bytes,
                    "kernel" => &mut stats.kernel_bytes,
                    "slab_reclaimable" => &mut stats.slab_reclaimable_bytes,
                    "slab_unreclaimable" => &mut stats.slab_unreclaimable_bytes,
                    "kernel_stack" => &mut stats.kernel_stack_bytes,
                    "pagetables" => &mut stats.pagetables_bytes,
                    "sock" => &mut stats.sock_bytes,
                    "file_mapped" => &mut stats.file_mapped_bytes,
                    "file_dirty" => &mut stats.file_dirty_bytes,
                    "file_writeback" => &mut stats.file_writeback_bytes,
                    // Kernels before 5.18 have no `kernel` line: its parts.
                    "sec_pagetables" | "percpu" | "vmalloc" => {
                        kernel_parts = Some(kernel_parts.unwrap_or(0) + value);
                        continue;
                    }
                    _ => continue,
                };
                *field = Some(value);
            }
            if stats.kernel_bytes.is_none() {
                stats.kernel_bytes = [
                    stats.slab_reclaimable_bytes,
                    stats.slab_unreclaimable_bytes,
                    stats.kernel_stack_bytes,
                    stats.pagetables_bytes,
                    kernel_parts,
                ]
                .into_iter()
                .flatten()
                .reduce(u64::saturating_add);
            }
            stats.swap_bytes = swap_bytes;
        }
    }
    stats
}

/// `memory.events` (v2) or `memory.oom_control` (v1) as counters.
pub fn parse_events(text: &str) -> Option<MemcgEvents> {
    let mut events = MemcgEvents::default();
    let mut any = false;
    for (name, value) in stat_lines(text) {
        let field = match name {
            "high" => &mut events.high,
            "max" => &mut events.max,
            "oom" => &mut events.oom,
            "oom_kill" => &mut events.oom_kill,
            "oom_group_kill" => &mut events.oom_group_kill,
            _ => continue,
        };
        *field = Some(value);
        any = true;
    }
    any.then_some(events)
}

/// `memory.pressure`: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`
/// and the same for `full`.
pub fn parse_pressure(text: &str) -> Option<MemcgPressure> {
    let averages = |kind: &str| -> Option<PressureAverages> {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(kind)?.strip_prefix(' '))?;
        let value = |key: &str| {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        };
        Some(PressureAverages {
            avg10: value("avg10")?.parse().ok()?,
            avg60: value("avg60")?.parse().ok()?,
            total_us: value("total")?.parse().ok()?,
        })
    };
    Some(MemcgPressure {
        some: averages("some")?,
        full: averages("full")?,
    })
}

/// The victim as the kernel recorded it at the kill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VictimAtKill {
    pub pid: u32,
    pub name: String,
    pub anon_bytes: u64,
    pub rss_bytes: u64,
    pub oom_score_adj: Option<i16>,
}

/// What cgroupfs and `/proc` say of the cgroup in `dir` now, put back to
/// how it was at the kill of `victim`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemcgReport {
    pub stats: Option<MemcgStats>,
    pub tasks: Vec<MemcgTask>,
    pub task_count: u64,
    pub events: Option<MemcgEvents>,
    pub pressure: Option<MemcgPressure>,
}

/// The stats the hooks on `oom_kill_process()` read in the kernel at the
/// OOM, before the kill: by this project's names, in bytes.
pub fn stats_at_oom(at_oom: &MemcgStatsAtOom, page_size: u64) -> MemcgStats {
    let mut text = String::new();
    let mut swap_bytes = None;
    for (item, value) in MEMCG_STAT_ITEMS.iter().zip(at_oom.values) {
        let Some(value) = value else {
            continue;
        };
        // The unit is in the kernel's name for the counter.
        let bytes = if item.ends_with("_B") {
            value
        } else if item.ends_with("_KB") {
            value.saturating_mul(1024)
        } else {
            value.saturating_mul(page_size)
        };
        let name = match *item {
            "NR_ANON_MAPPED" => "anon",
            "NR_FILE_PAGES" => "file",
            "NR_SHMEM" => "shmem",
            "MEMCG_KMEM" => "kernel",
            "NR_SLAB_RECLAIMABLE_B" => "slab_reclaimable",
            "NR_SLAB_UNRECLAIMABLE_B" => "slab_unreclaimable",
            "NR_KERNEL_STACK_KB" => "kernel_stack",
            "NR_PAGETABLE" => "pagetables",
            "MEMCG_PERCPU_B" => "percpu",
            "MEMCG_SOCK" => "sock",
            "NR_FILE_MAPPED" => "file_mapped",
            "NR_FILE_DIRTY" => "file_dirty",
            "NR_WRITEBACK" => "file_writeback",
            "MEMCG_SWAP" => {
                swap_bytes = Some(bytes);
                continue;
            }
            other => unreachable!("{other} is not one of MEMCG_STAT_ITEMS"),
        };
        text.push_str(&format!("{name} {bytes}\n"));
    }
    // The counters `memory.stat` prints on v2, which computes what v1
    // prints from the same ones.
    MemcgStats {
        source: "kernel",
        ..parse_stats(CgroupVersion::V2, &text, None, swap_bytes)
    }
}

/// The report from the kernel's own account of the OOM, exact: what
/// filled the cgroup and its processes before the victim was chosen. The
/// counters come from cgroupfs (they count this OOM too).
pub fn report_from_log(
    logged: &LoggedReport,
    dir: &Path,
    version: CgroupVersion,
    page_size: u64,
) -> MemcgReport {
    let text: String = logged
        .stats
        .iter()
        .map(|(name, value)| format!("{name} {value}\n"))
        .collect();
    // Kernels before 6.5 print v2's names for a v1 cgroup too.
    let names = if logged
        .stats
        .iter()
        .any(|(name, _)| name.starts_with("total_"))
    {
        CgroupVersion::V1
    } else {
        CgroupVersion::V2
    };
    let kib = |v: Option<u64>| v.map(|kib| kib.saturating_mul(1024));
    let stats = (!logged.stats.is_empty()).then(|| MemcgStats {
        source: "kernel_log",
        ..parse_stats(names, &text, kib(logged.kmem_kib), kib(logged.swap_kib))
    });
    let tasks = logged
        .tasks
        .iter()
        .map(|task| MemcgTask {
            pid: task.pid,
            name: task.name.clone(),
            rss_bytes: task.rss_pages.saturating_mul(page_size),
            oom_score_adj: task.oom_score_adj,
        })
        .collect();
    let (mut events, pressure) = read_counters(dir, version);
    if version == CgroupVersion::V1 {
        let events = events.get_or_insert_with(MemcgEvents::default);
        events.failcnt = events.failcnt.or(logged.failcnt);
    }
    MemcgReport {
        stats,
        tasks,
        task_count: logged.task_count,
        events,
        pressure,
    }
}

/// `memory.events` (v2) or `memory.oom_control` and `memory.failcnt`
/// (v1), and `memory.pressure`, of the cgroup in `dir`.
fn read_counters(
    dir: &Path,
    version: CgroupVersion,
) -> (Option<MemcgEvents>, Option<MemcgPressure>) {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let events = match version {
        CgroupVersion::V1 => {
            let failcnt = read("memory.failcnt").and_then(|t| t.trim().parse().ok());
            let mut events = read("memory.oom_control").and_then(|t| parse_events(&t));
            if failcnt.is_some() {
                events.get_or_insert_with(MemcgEvents::default).failcnt = failcnt;
            }
            events
        }
        CgroupVersion::V2 => read("memory.events").and_then(|t| parse_events(&t)),
    };
    let pressure = read("memory.pressure").and_then(|t| parse_pressure(&t));
    (events, pressure)
}

/// Reads the report of the memory cgroup in `dir` (and its descendants)
/// after the kill of `victim`; its stats only if `read_stats` (not where
/// the kernel side read them at the OOM).
pub fn read_report(
    dir: &Path,
    version: CgroupVersion,
    victim: &VictimAtKill,
    read_stats: bool,
) -> MemcgReport {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let number = |name: &str| read(name).and_then(|t| t.trim().parse::<u64>().ok());
    // Read at once, without waiting for the victim to exit: the kernel
    // may or may not have uncharged its memory yet, and /proc shows none
    // before it has. Either way the cgroup's anonymous memory at the kill
    // was at least what is charged now, and at least the victim's (as the
    // kernel recorded it) plus what the others hold.
    let stats = read_stats
        .then(|| read("memory.stat"))
        .flatten()
        .map(|text| {
            let (kernel, swap) = match version {
                CgroupVersion::V1 => (number("memory.kmem.usage_in_bytes"), None),
                CgroupVersion::V2 => (None, number("memory.swap.current")),
            };
            parse_stats(version, &text, kernel, swap)
        });

    let mut tasks: Vec<MemcgTask> = Vec::new();
    let mut others_anon: u64 = 0;
    for pid in cgroup_pids(dir) {
        if pid == victim.pid {
            continue;
        }
        if let Some(now) = ProcessNow::read(pid) {
            others_anon = others_anon.saturating_add(now.anon_bytes);
            tasks.push(MemcgTask {
                pid,
                name: now.name,
                rss_bytes: now.rss_bytes,
                oom_score_adj: now.oom_score_adj,
            });
        }
    }
    tasks.push(MemcgTask {
        pid: victim.pid,
        name: victim.name.clone(),
        rss_bytes: victim.rss_bytes,
        oom_score_adj: victim.oom_score_adj,
    });
    let stats = stats.map(|mut stats| {
        let at_kill = victim.anon_bytes.saturating_add(others_anon);
        stats.anon_bytes = stats.anon_bytes.map(|now| now.max(at_kill));
        stats
    });
    let task_count = tasks.len() as u64;
    tasks.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    tasks.truncate(LISTED_TASKS);

    let (events, pressure) = read_counters(dir, version);
    MemcgReport {
        stats,
        tasks,
        task_count,
        events,
        pressure,
    }
}

/// The node's memory by kind from `/proc/meminfo` (kB values).
pub fn parse_meminfo(meminfo: &str) -> NodeStats {
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1024)
    };
    NodeStats {
        source: "procfs",
        anon_bytes: kib("AnonPages"),
        // Cached includes shmem; Buffers is page cache of block devices.
        file_bytes: kib("Cached") + kib("Buffers"),
        shmem_bytes: kib("Shmem"),
        kernel_bytes: kib("Slab") + kib("KernelStack") + kib("PageTables"),
        free_bytes: kib("MemFree"),
    }
}

/// The node's memory by kind from the kernel's report of a global OOM
/// (its "Mem-Info:", in pages), as it was before the kill; `None` where
/// the report has none.
pub fn node_stats_from_log(logged: &LoggedReport, page_size: u64) -> Option<NodeStats> {
    if logged.node_pages.is_empty() {
        return None;
    }
    let pages = |name: &str| {
        logged
            .node_pages
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, value)| *value)
    };
    let bytes = |pages: u64| pages.saturating_mul(page_size);
    let shmem = pages("shmem");
    // Shared memory is on the anonymous LRU lists, and is page cache.
    let anon_lru = pages("active_anon") + pages("inactive_anon") + pages("isolated_anon");
    let file_lru = pages("active_file") + pages("inactive_file") + pages("isolated_file");
    let kernel = pages("slab_reclaimable") + pages("slab_unreclaimable") + pages("pagetables");
    Some(NodeStats {
        source: "kernel_log",
        anon_bytes: bytes(anon_lru.saturating_sub(shmem)),
        file_bytes: bytes(file_lru + shmem),
        shmem_bytes: bytes(shmem),
        kernel_bytes: bytes(kernel).saturating_add(
            logged
                .node_kernel_stack_kib
                .unwrap_or(0)
                .saturating_mul(1024),
        ),
        free_bytes: bytes(pages("free")),
    })
}

/// The node at the kill of `victim` in a global OOM: its memory by kind,
/// `logged` by the kernel at the OOM, else read after the kill with the
/// victim's anonymous memory, freed by the kill, counted as anon again
/// instead of free; and its largest memory cgroups that hold processes,
/// under the hierarchy at `root` (the root itself left out: it holds
/// everything). `pod_of` names a cgroup's pod.
pub fn read_node_report(
    root: &Path,
    version: CgroupVersion,
    victim: &VictimAtKill,
    logged: Option<NodeStats>,
    mut pod_of: impl FnMut(&str) -> Option<NodeMemcgPod>,
) -> OomNode {
    let stats = logged.unwrap_or_else(|| {
        let exited = wait_for_exit(victim.pid, EXIT_PATIENCE);
        let mut stats = parse_meminfo(&fs::read_to_string("/proc/meminfo").unwrap_or_default());
        if exited {
            stats.anon_bytes = stats.anon_bytes.saturating_add(victim.anon_bytes);
            stats.free_bytes = stats.free_bytes.saturating_sub(victim.anon_bytes);
        }
        stats
    });
    let usage_file = match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    let mut memcgs: Vec<NodeMemcg> = WalkDir::new(root)
        .min_depth(1)
        .same_file_system(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_dir())
        .filter(|entry| {
            fs::read_to_string(entry.path().join("cgroup.procs"))
                .is_ok_and(|procs| !procs.trim().is_empty())
        })
        .filter_map(|entry| {
            let usage = fs::read_to_string(entry.path().join(usage_file))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let relative = entry.path().strip_prefix(root).ok()?;
            Some(NodeMemcg {
                path: format!("/{}", relative.to_string_lossy()),
                usage_bytes: usage,
                kubernetes: None,
            })
        })
        .collect();
    memcgs.sort_by_key(|memcg| std::cmp::Reverse(memcg.usage_bytes));
    memcgs.truncate(LISTED_TASKS);
    for memcg in &mut memcgs {
        memcg.kubernetes = pod_of(&memcg.path);
    }
    OomNode { stats, memcgs }
}

/// How long the report waits for a victim to exit: a victim stuck in the
/// kernel (uninterruptible I/O) is not waited for longer.
const EXIT_PATIENCE: Duration = Duration::from_millis(100);

/// Whether process `pid` has exited, every thread of it (a zombie, or
/// reaped), within `patience`.
fn wait_for_exit(pid: u32, patience: Duration) -> bool {
    let started = Instant::now();
    loop {
        let exited = match fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => true,
            Ok(status) => {
                let field = |key: &str| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix(key))
                        .map(str::trim)
                };
                let zombie =
                    field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
                let threads = field("Threads:").and_then(|n| n.parse::<u32>().ok());
                zombie && threads.is_none_or(|n| n <= 1)
            }
        };
        if exited {
            return true;
        }
        if started.elapsed() >= patience {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Every process in the cgroup at `dir` and its descendants.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = WalkDir::new(dir)
        .same_file_system(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_dir())
        .filter_map(|entry| fs::read_to_string(entry.path().join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A process as `/proc` shows it now.
struct ProcessNow {
    name: String,
    rss_bytes: u64,
    anon_bytes: u64,
    oom_score_adj: Option<i16>,
}

impl ProcessNow {
    fn read(pid: u32) -> Option<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib * 1024)
        };
        let name = status
            .lines()
            .find_map(|line| line.strip_prefix("Name:"))
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        let oom_score_adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Some(Self {
            name,
            rss_bytes: kib("VmRSS:"),
            anon_bytes: kib("RssAnon:"),
            oom_score_adj,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `memory.stat` of a v1 cgroup on this project's CI kernel (6.18),
    /// shortened: local values and hierarchical `total_` ones.
    const V1_STAT: &str = "\
cache 0
rss 33239040
shmem 0
mapped_file 0
total_cache 44040192
total_rss 33239040
total_rss_huge 0
total_shmem 41943040
total_mapped_file 4096
total_dirty 8192
total_writeback 0
total_swap 0
";

    /// `memory.stat` of a v2 cgroup on a 6.1 kernel (no `kernel` line
    /// before 5.18 would look the same minus it), shortened.
    const V2_STAT: &str = "\
anon 167772160
file 322961408
kernel 13041664
kernel_stack 98304
pagetables 1187840
sec_pagetables 0
percpu 2400
sock 4096
vmalloc 0
shmem 315621376
file_mapped 1048576
file_dirty 0
file_writeback 0
slab_reclaimable 6291456
slab_unreclaimable 5242880
pgfault 123
";

    #[test]
    fn v1_totals_take_this_projects_names() {
        let stats = parse_stats(CgroupVersion::V1, V1_STAT, Some(315_392), None);
        assert_eq!(stats.anon_bytes, Some(33_239_040));
        assert_eq!(stats.file_bytes, Some(44_040_192));
        assert_eq!(stats.shmem_bytes, Some(41_943_040));
        assert_eq!(stats.file_mapped_bytes, Some(4096));
        assert_eq!(stats.file_dirty_bytes, Some(8192));
        assert_eq!(stats.swap_bytes, Some(0));
        assert_eq!(stats.kernel_bytes, Some(315_392));
        assert_eq!(stats.source, "cgroupfs");
    }

    #[test]
    fn v2_stats_and_the_kernel_sum_where_no_kernel_line() {
        let stats = parse_stats(CgroupVersion::V2, V2_STAT, None, Some(0));
        assert_eq!(stats.anon_bytes, Some(167_772_160));
        assert_eq!(stats.shmem_bytes, Some(315_621_376));
        assert_eq!(stats.kernel_bytes, Some(13_041_664));
        assert_eq!(stats.slab_unreclaimable_bytes, Some(5_242_880));
        assert_eq!(stats.sock_bytes, Some(4096));
        assert_eq!(stats.swap_bytes, Some(0));
        let old: String = V2_STAT
            .lines()
            .filter(|l| !l.starts_with("kernel "))
            .map(|l| format!("{l}\n"))
            .collect();
        let stats = parse_stats(CgroupVersion::V2, &old, None, None);
        assert_eq!(
            stats.kernel_bytes,
            Some(6_291_456 + 5_242_880 + 98_304 + 1_187_840 + 2400)
        );
    }

    /// Each counter in the unit its kernel name gives, and `kernel` summed
    /// from its parts where the kernel keeps no `MEMCG_KMEM` (5.10).
    #[test]
    fn stats_read_in_the_kernel_by_their_units() {
        let value = |name: &str, at_oom: &mut MemcgStatsAtOom, v: u64| {
            let at = MEMCG_STAT_ITEMS
                .iter()
                .position(|i| *i == name)
                .expect(name);
            at_oom.values[at] = Some(v);
        };
        let mut at_oom = MemcgStatsAtOom::default();
        value("NR_ANON_MAPPED", &mut at_oom, 100);
        value("NR_SHMEM", &mut at_oom, 10_240);
        value("NR_SLAB_RECLAIMABLE_B", &mut at_oom, 4_000);
        value("NR_SLAB_UNRECLAIMABLE_B", &mut at_oom, 6_000);
        value("NR_KERNEL_STACK_KB", &mut at_oom, 32);
        value("NR_PAGETABLE", &mut at_oom, 2);
        value("MEMCG_PERCPU_B", &mut at_oom, 1_000);
        value("MEMCG_SWAP", &mut at_oom, 3);
        let stats = stats_at_oom(&at_oom, 4096);
        assert_eq!(stats.source, "kernel");
        assert_eq!(stats.anon_bytes, Some(409_600));
        assert_eq!(stats.shmem_bytes, Some(41_943_040));
        assert_eq!(stats.kernel_stack_bytes, Some(32_768));
        assert_eq!(stats.swap_bytes, Some(12_288));
        assert_eq!(stats.file_bytes, None, "not read");
        assert_eq!(
            stats.kernel_bytes,
            Some(4_000 + 6_000 + 32_768 + 8_192 + 1_000)
        );
        value("MEMCG_KMEM", &mut at_oom, 20);
        assert_eq!(stats_at_oom(&at_oom, 4096).kernel_bytes, Some(81_920));
    }

    /// Shared memory sits on the anonymous LRU lists: it is moved to the
    /// page cache, where `/proc/meminfo` counts it too.
    #[test]
    fn the_nodes_memory_by_kind_from_the_kernels_report() {
        let pairs = [
            ("active_anon", 1_000),
            ("inactive_anon", 9_000),
            ("isolated_anon", 24),
            ("active_file", 10),
            ("inactive_file", 30),
            ("slab_reclaimable", 100),
            ("slab_unreclaimable", 200),
            ("shmem", 2_000),
            ("pagetables", 50),
            ("free", 300),
        ];
        let logged = LoggedReport {
            node_pages: pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            node_kernel_stack_kib: Some(64),
            ..LoggedReport::default()
        };
        let stats = node_stats_from_log(&logged, 4096).expect("counters");
        assert_eq!(stats.source, "kernel_log");
        assert_eq!(stats.anon_bytes, 8_024 * 4096);
        assert_eq!(stats.file_bytes, 2_040 * 4096);
        assert_eq!(stats.shmem_bytes, 2_000 * 4096);
        assert_eq!(stats.kernel_bytes, 350 * 4096 + 64 * 1024);
        assert_eq!(stats.free_bytes, 300 * 4096);
        assert_eq!(node_stats_from_log(&LoggedReport::default(), 4096), None);
    }

    #[test]
    fn the_nodes_memory_by_kind_from_meminfo() {
        let stats = parse_meminfo(
            "MemTotal:        2000000 kB\nMemFree:           65536 kB\nBuffers:            1024 kB\n\
             Cached:           204800 kB\nAnonPages:       1500000 kB\nShmem:            102400 kB\n\
             Slab:              40000 kB\nKernelStack:        4000 kB\nPageTables:         6000 kB\n",
        );
        assert_eq!(stats.free_bytes, 65_536 * 1024);
        assert_eq!(stats.file_bytes, (204_800 + 1024) * 1024);
        assert_eq!(stats.shmem_bytes, 102_400 * 1024);
        assert_eq!(stats.anon_bytes, 1_500_000 * 1024);
        assert_eq!(stats.kernel_bytes, 50_000 * 1024);
    }

    #[test]
    fn events_and_pressure() {
        let events =
            parse_events("low 0\nhigh 12\nmax 40211\noom 3\noom_kill 2\noom_group_kill 0\n")
                .expect("events");
        assert_eq!(events.max, Some(40_211));
        assert_eq!(events.oom_kill, Some(2));
        assert_eq!(events.oom_group_kill, Some(0));
        let v1 = parse_events("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n").expect("v1");
        assert_eq!(v1.oom_kill, Some(7));
        assert_eq!(v1.max, None);
        assert_eq!(parse_events(""), None);
        let pressure = parse_pressure(
            "some avg10=12.50 avg60=3.21 avg300=0.70 total=123456\n\
             full avg10=10.00 avg60=2.00 avg300=0.50 total=99999\n",
        )
        .expect("pressure");
        assert_eq!(pressure.some.avg10, 12.5);
        assert_eq!(pressure.full.avg60, 2.0);
        assert_eq!(pressure.some.total_us, 123_456);
        assert_eq!(parse_pressure("garbage"), None);
    }
}
