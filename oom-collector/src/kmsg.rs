//! The kernel's own account of each OOM, from `/dev/kmsg`.
//!
//! Where no hook on `oom_kill_process()` is available (kprobes and fentry
//! are not on every kernel), the kernel still says, in its log, what the
//! tracepoint does not carry. For each OOM, under the global `oom_lock`, so
//! two OOMs' lines never interleave:
//!
//! ```text
//! tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! ...
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=4242,uid=0
//! Memory cgroup out of memory: Killed process 4242 (tail) total-vm:...
//! Tasks in /a/b are going to be killed due to memory.oom.group set
//! Memory cgroup out of memory: Killed process 4243 (tail) total-vm:...
//! ```
//!
//! The first two lines are rate-limited by the kernel (10 per 5 s); the
//! "Killed process" and "Tasks in" lines are not. So every kill can be put
//! in its incident (one OOM: the chosen victim and, with
//! `memory.oom.group`, the rest of its cgroup), and the constraint, the
//! memory cgroup whose limit was hit and the failing allocation are known
//! whenever the kernel printed them, and left out otherwise.
//!
//! Reading `/dev/kmsg` needs CAP_SYSLOG (or root); without it these fields
//! are left out.

use std::{
    collections::{HashMap, VecDeque},
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    sync::Arc,
    time::{Duration, Instant},
};

/// Kills remembered for lookup; the collector asks within milliseconds.
const REMEMBERED_KILLS: usize = 4096;

/// What the kernel logged about the OOM that killed one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomContext {
    /// The kernel log sequence number that opened the incident: the same
    /// for every victim of one OOM.
    pub incident_seq: u64,
    /// `memcg`, `global`, `cpuset` or `memory_policy`.
    pub constraint: Option<&'static str>,
    /// The memory cgroup whose limit was hit (`oom_memcg=`).
    pub oom_memcg: Option<String>,
    /// The failing allocation's GFP flags, by the kernel's names.
    pub gfp_flags: Option<Vec<String>>,
    pub order: Option<u32>,
    /// The cgroup `memory.oom.group` killed whole, when it did.
    pub group: Option<String>,
    /// The kernel's report of a memory cgroup OOM: what filled the cgroup
    /// and its processes, as they were at the OOM. Shared by the victims
    /// of one OOM.
    pub report: Option<Arc<LoggedReport>>,
}

/// What the kernel printed about the limited cgroup before choosing:
///
/// ```text
/// memory: usage 32768kB, limit 32768kB, failcnt 54
/// kmem: usage 308kB, limit 9007199254740988kB, failcnt 0
/// Memory cgroup stats for /a:
/// anon 33239040            (v2 names; on v1 `rss`, `cache`, `total_rss`, ...)
/// ...
/// Tasks state (memory values in pages):
/// [  pid  ]   uid  tgid total_vm      rss ... oom_score_adj name
/// [  30798]     0 30798     8638     8420 ...             1 busybox
/// ```
///
/// Kernels before 6.5 print the stats as one record of many lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggedReport {
    /// The cgroup the stats are of.
    pub stats_path: Option<String>,
    /// `memory.stat` lines as the kernel printed them, in bytes.
    pub stats: Vec<(String, u64)>,
    /// The `memory:` counter's failcnt: charges that hit the limit.
    pub failcnt: Option<u64>,
    pub usage_kib: Option<u64>,
    /// v1's `kmem:` counter, kernel memory.
    pub kmem_kib: Option<u64>,
    /// v2's `swap:` counter.
    pub swap_kib: Option<u64>,
    /// The largest processes of the task dump, largest first.
    pub tasks: Vec<LoggedTask>,
    /// Processes the task dump listed.
    pub task_count: u64,
    /// A global OOM's "Mem-Info:" counters (`active_anon:1234 ...`), in
    /// pages.
    pub node_pages: Vec<(String, u64)>,
    /// The nodes' kernel stacks, summed from the per-node lines.
    pub node_kernel_stack_kib: Option<u64>,
}

/// One row of the kernel's task dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoggedTask {
    pub pid: u32,
    pub name: String,
    pub rss_pages: u64,
    pub oom_score_adj: Option<i16>,
}

/// Rows of the task dump kept per OOM (a global OOM lists every process).
pub const LOGGED_TASKS: usize = 10;

/// One line of the kernel log, as far as OOMs are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomLine {
    /// `<comm> invoked oom-killer: gfp_mask=0x..(FLAGS), order=N, ...`
    Invoked {
        gfp_flags: Vec<String>,
        order: Option<u32>,
    },
    /// `oom-kill:constraint=...,oom_memcg=...,pid=N,...`
    Summary {
        constraint: Option<&'static str>,
        oom_memcg: Option<String>,
        pid: Option<u32>,
    },
    /// `...: Killed process N (comm) ...`
    Killed { pid: u32 },
    /// `Tasks in <cgroup> are going to be killed due to memory.oom.group set`
    GroupKill { cgroup: String },
    /// `memory: usage 32768kB, limit 32768kB, failcnt 54`, and the same
    /// for `swap`, `memory+swap` and `kmem`.
    Counter {
        name: String,
        usage_kib: u64,
        failcnt: Option<u64>,
    },
    /// `Memory cgroup stats for /a/b:`
    StatsFor { path: String },
    /// `name 1234`: a stat line, within a stats block.
    Pair { name: String, value: u64 },
    /// `[  pid  ]   uid  tgid total_vm      rss ... oom_score_adj name`
    TaskColumns { columns: Vec<String> },
    /// `[  30798]     0 30798     8638 ...     1 busybox`: the pid, then
    /// the other columns.
    TaskRow { pid: u32, rest: Vec<String> },
    /// A line of a global OOM's "Mem-Info:", the node's counters in
    /// pages: `active_anon:1234 inactive_anon:5678 isolated_anon:0`.
    MemInfo { pairs: Vec<(String, u64)> },
    /// `Node 0 active_anon:4936kB ... kernel_stack:1872kB ...`: one NUMA
    /// node's counters, in kB.
    NodeMemInfo { pairs: Vec<(String, u64)> },
}

/// Parses one log message (the text after `;` in a `/dev/kmsg` record).
pub fn parse_line(text: &str) -> Option<OomLine> {
    if let Some((_, rest)) = text.split_once(" invoked oom-killer: ") {
        let gfp_flags = rest
            .split_once('(')
            .and_then(|(_, after)| after.split_once(')'))
            .map(|(flags, _)| {
                flags
                    .split('|')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let order = rest
            .split_once("order=")
            .and_then(|(_, after)| after.split(',').next())
            .and_then(|n| n.trim().parse().ok());
        return Some(OomLine::Invoked { gfp_flags, order });
    }
    if let Some(rest) = text.strip_prefix("oom-kill:") {
        let constraint = rest
            .strip_prefix("constraint=")
            .and_then(|c| c.split(',').next())
            .and_then(constraint_name);
        // Paths may hold commas; the fields after them are fixed, so cut
        // from the right.
        let (rest, _uid) = rest.rsplit_once(",uid=").unwrap_or((rest, ""));
        let (rest, pid) = rest.rsplit_once(",pid=").unwrap_or((rest, ""));
        let (rest, _task) = rest.rsplit_once(",task=").unwrap_or((rest, ""));
        let (rest, _task_memcg) = rest.rsplit_once(",task_memcg=").unwrap_or((rest, ""));
        let oom_memcg = rest
            .rsplit_once(",oom_memcg=")
            .map(|(_, path)| path.to_owned());
        return Some(OomLine::Summary {
            constraint,
            oom_memcg,
            pid: pid.parse().ok(),
        });
    }
    if let Some((_, rest)) = text.split_once("Killed process ") {
        let pid = rest.split(' ').next()?.parse().ok()?;
        return Some(OomLine::Killed { pid });
    }
    if let Some(rest) = text.strip_prefix("Tasks in ") {
        let cgroup = rest.strip_suffix(" are going to be killed due to memory.oom.group set")?;
        return Some(OomLine::GroupKill {
            cgroup: cgroup.to_owned(),
        });
    }
    if let Some(path) = text
        .strip_prefix("Memory cgroup stats for ")
        .and_then(|rest| rest.strip_suffix(':'))
    {
        return Some(OomLine::StatsFor {
            path: path.to_owned(),
        });
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (pid, rest) = rest.split_once(']')?;
        let rest: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        if pid.trim() == "pid" {
            return Some(OomLine::TaskColumns { columns: rest });
        }
        return Some(OomLine::TaskRow {
            pid: pid.trim().parse().ok()?,
            rest,
        });
    }
    if let Some((name, rest)) = text.split_once(": usage ") {
        if ["memory", "swap", "memory+swap", "kmem"].contains(&name) {
            let usage_kib = rest.split_once("kB")?.0.parse().ok()?;
            let failcnt = rest
                .rsplit_once("failcnt ")
                .and_then(|(_, n)| n.trim().parse().ok());
            return Some(OomLine::Counter {
                name: name.to_owned(),
                usage_kib,
                failcnt,
            });
        }
    }
    if let Some(rest) = text.strip_prefix("Node ") {
        // `Node 0 active_anon:...kB ...`, not a zone's `Node 0 DMA free:...`.
        // Its words other than counters (`isolated(anon):0kB`,
        // `all_unreclaimable? no`) are left out.
        let (node, rest) = rest.split_once(' ')?;
        node.parse::<u32>().ok()?;
        counter_pair(rest.split_whitespace().next()?, "kB")?;
        let pairs = rest
            .split_whitespace()
            .filter_map(|word| counter_pair(word, "kB"))
            .collect();
        return Some(OomLine::NodeMemInfo { pairs });
    }
    let pairs: Option<Vec<_>> = text
        .split_whitespace()
        .map(|word| counter_pair(word, ""))
        .collect();
    if let Some(pairs) = pairs.filter(|p| !p.is_empty()) {
        return Some(OomLine::MemInfo { pairs });
    }
    if let Some((name, value)) = text.split_once(' ') {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            if let Ok(value) = value.trim().parse() {
                return Some(OomLine::Pair {
                    name: name.to_owned(),
                    value,
                });
            }
        }
    }
    None
}

/// `name:123<unit>`, as the kernel prints its memory counters.
fn counter_pair(word: &str, unit: &str) -> Option<(String, u64)> {
    let (name, value) = word.split_once(':')?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let value = value.strip_suffix(unit)?.parse().ok()?;
    plain.then(|| (name.to_owned(), value))
}

fn constraint_name(kernel: &str) -> Option<&'static str> {
    Some(match kernel {
        "CONSTRAINT_NONE" => "global",
        "CONSTRAINT_CPUSET" => "cpuset",
        "CONSTRAINT_MEMORY_POLICY" => "memory_policy",
        "CONSTRAINT_MEMCG" => "memcg",
        _ => return None,
    })
}

/// Splits a `/dev/kmsg` record, `prio,seq,usec,flags;text\n[ dict...]`,
/// into its sequence number and first text line; `None` for a record that
/// is not the kernel's own.
///
/// Anyone who can write `/dev/kmsg` can log lines that read like the OOM
/// killer's. The kernel gives every line written from user space a
/// facility other than 0 (`LOG_KERN`), forcing `LOG_USER` on one that asks
/// for 0 (`devkmsg_write()`), so the facility in `prio` (`prio >> 3`) tells
/// them apart, and only the kernel's supply OOM context.
pub fn parse_record(record: &str) -> Option<(u64, &str)> {
    let (header, text) = record.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    if prio >> 3 != LOG_KERN {
        return None;
    }
    let seq = fields.next()?.parse().ok()?;
    let text = text.split('\n').next().unwrap_or(text);
    Some((seq, text))
}

/// The kernel's own syslog facility.
const LOG_KERN: u32 = 0;

/// Where in an OOM report the latest line was.
#[derive(Debug, Default)]
enum Block {
    #[default]
    Other,
    /// After `Memory cgroup stats for`: stat lines follow.
    Stats,
    /// After the task dump's column header: where its columns are.
    Tasks {
        rss: usize,
        oom_score_adj: Option<usize>,
        name: usize,
    },
}

/// Groups OOM log lines into incidents and remembers, per killed pid, what
/// the kernel said about its OOM.
#[derive(Debug, Default)]
pub struct OomLog {
    /// The incident the latest lines belong to.
    current: Option<OomContext>,
    /// The block of the report the latest lines are in.
    block: Block,
    /// Whether the current incident already has its chosen victim.
    current_has_victim: bool,
    kills: HashMap<u32, OomContext>,
    order: VecDeque<u32>,
}

impl OomLog {
    /// Feeds one log line with its sequence number.
    pub fn feed(&mut self, seq: u64, line: OomLine) {
        let block = std::mem::take(&mut self.block);
        // The report's lines belong to the incident before its victim.
        let report = self
            .current
            .as_mut()
            .filter(|_| !self.current_has_victim)
            .map(|current| Arc::make_mut(current.report.get_or_insert_with(Arc::default)));
        match line {
            OomLine::Counter {
                name,
                usage_kib,
                failcnt,
            } => {
                if let Some(report) = report {
                    match name.as_str() {
                        "memory" => {
                            report.usage_kib = Some(usage_kib);
                            report.failcnt = failcnt;
                        }
                        "kmem" => report.kmem_kib = Some(usage_kib),
                        "swap" => report.swap_kib = Some(usage_kib),
                        _ => {}
                    }
                }
            }
            OomLine::StatsFor { path } => {
                if let Some(report) = report {
                    report.stats_path = Some(path);
                    report.stats.clear();
                    self.block = Block::Stats;
                }
            }
            OomLine::Pair { name, value } => {
                if let (Block::Stats, Some(report)) = (&block, report) {
                    report.stats.push((name, value));
                    self.block = block;
                }
            }
            OomLine::TaskColumns { columns } => {
                let at = |name: &str| columns.iter().position(|c| c == name);
                if let (Some(rss), Some(name), Some(_)) = (at("rss"), at("name"), report) {
                    self.block = Block::Tasks {
                        rss,
                        oom_score_adj: at("oom_score_adj"),
                        name,
                    };
                }
            }
            OomLine::TaskRow { pid, rest } => {
                if let (
                    Block::Tasks {
                        rss,
                        oom_score_adj,
                        name,
                    },
                    Some(report),
                ) = (&block, report)
                {
                    if let Some(rss_pages) = rest.get(*rss).and_then(|v| v.parse().ok()) {
                        report.task_count += 1;
                        let task = LoggedTask {
                            pid,
                            // A name may hold spaces: the rest of the line.
                            name: rest.get(*name..).map(|n| n.join(" ")).unwrap_or_default(),
                            rss_pages,
                            oom_score_adj: oom_score_adj
                                .and_then(|at| rest.get(at))
                                .and_then(|v| v.parse().ok()),
                        };
                        keep_largest(&mut report.tasks, task);
                    }
                    self.block = block;
                }
            }
            OomLine::MemInfo { pairs } => {
                if let Some(report) = report {
                    report.node_pages.extend(pairs);
                }
            }
            OomLine::NodeMemInfo { pairs } => {
                let stack = pairs.iter().find(|(name, _)| name == "kernel_stack");
                if let (Some(report), Some((_, kib))) = (report, stack) {
                    report.node_kernel_stack_kib =
                        Some(report.node_kernel_stack_kib.unwrap_or(0) + kib);
                }
            }
            OomLine::Invoked { gfp_flags, order } => {
                self.current = Some(OomContext {
                    incident_seq: seq,
                    gfp_flags: Some(gfp_flags).filter(|f| !f.is_empty()),
                    order,
                    ..OomContext::default()
                });
                self.current_has_victim = false;
            }
            OomLine::Summary {
                constraint,
                oom_memcg,
                ..
            } => {
                if let Some(current) = self.current.as_mut().filter(|_| !self.current_has_victim) {
                    current.constraint = constraint;
                    current.oom_memcg = oom_memcg;
                }
            }
            OomLine::Killed { pid } => {
                let in_group = self.current.as_ref().is_some_and(|c| c.group.is_some());
                if self.current_has_victim && !in_group || self.current.is_none() {
                    // A kill with no header of its own: the kernel rate-
                    // limited the header, so only the incident is known.
                    self.current = Some(OomContext {
                        incident_seq: seq,
                        ..OomContext::default()
                    });
                }
                self.current_has_victim = true;
                let context = self.current.clone().expect("set above");
                self.remember(pid, context);
            }
            OomLine::GroupKill { cgroup } => {
                if let Some(current) = self.current.as_mut() {
                    current.group = Some(cgroup.clone());
                    // The chosen victim, killed just before, is in the group.
                    for context in self.kills.values_mut() {
                        if context.incident_seq == current.incident_seq {
                            context.group = Some(cgroup.clone());
                        }
                    }
                }
            }
        }
    }

    fn remember(&mut self, pid: u32, context: OomContext) {
        let context = OomContext {
            // An empty report (a header without the rest) is no report.
            report: context
                .report
                .filter(|r| r.stats_path.is_some() || r.task_count > 0 || !r.node_pages.is_empty()),
            ..context
        };
        if self.kills.insert(pid, context).is_none() {
            self.order.push_back(pid);
        }
        while self.order.len() > REMEMBERED_KILLS {
            if let Some(old) = self.order.pop_front() {
                self.kills.remove(&old);
            }
        }
    }

    /// What the kernel logged about the kill of `pid`.
    pub fn context_of(&self, pid: u32) -> Option<&OomContext> {
        self.kills.get(&pid)
    }
}

/// Adds `task` to `tasks`, the largest [`LOGGED_TASKS`] rows, largest first.
fn keep_largest(tasks: &mut Vec<LoggedTask>, task: LoggedTask) {
    let at = tasks.partition_point(|t| t.rss_pages >= task.rss_pages);
    if at < LOGGED_TASKS {
        tasks.insert(at, task);
        tasks.truncate(LOGGED_TASKS);
    }
}

/// `/dev/kmsg`, read without blocking from where it was when opened.
pub struct Kmsg {
    file: File,
    buffer: Vec<u8>,
    pub log: OomLog,
}

impl Kmsg {
    pub fn open() -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        // Only what happens from now on.
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            // A record is at most 1 KiB of text plus its dictionary.
            buffer: vec![0; 8192],
            log: OomLog::default(),
        })
    }

    /// What the kernel logged about the kill of `pid`. The kernel logs the
    /// kill just after the OOM tracepoint fires, so a kill read at once
    /// from the ring buffer may come before its line does: it is waited
    /// for, briefly.
    pub fn context_of(&mut self, pid: u32) -> Option<OomContext> {
        const PATIENCE: Duration = Duration::from_millis(10);
        const PAUSE: Duration = Duration::from_micros(250);
        let started = Instant::now();
        loop {
            self.poll();
            if let Some(context) = self.log.context_of(pid) {
                return Some(context.clone());
            }
            if started.elapsed() >= PATIENCE {
                return None;
            }
            std::thread::sleep(PAUSE);
        }
    }

    /// Reads every record logged since the last call.
    pub fn poll(&mut self) {
        loop {
            match self.file.read(&mut self.buffer) {
                Ok(0) => return,
                Ok(len) => {
                    let record = String::from_utf8_lossy(&self.buffer[..len]);
                    if let Some((seq, text)) = parse_record(&record) {
                        // A record of many lines (the stats, before 6.5)
                        // has its newlines escaped.
                        for text in text.split("\\x0a").filter(|t| !t.is_empty()) {
                            if let Some(line) = parse_line(text) {
                                self.log.feed(seq, line);
                            }
                        }
                    }
                }
                // EPIPE: records were overwritten before we read them; the
                // next read continues with the oldest one left.
                Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as this project's CI kernel (6.18) printed them.
    const INVOKED: &str =
        "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oom-e2e-series-5-13577,task_memcg=/oom-e2e-series-5-13577,task=tail,pid=13630,uid=0";
    const KILLED: &str = "Memory cgroup out of memory: Killed process 13630 (tail) total-vm:35476kB, anon-rss:32640kB, file-rss:1544kB, shmem-rss:0kB, UID:0 pgtables:108kB oom_score_adj:0";

    #[test]
    fn parses_the_kernels_oom_lines() {
        assert_eq!(
            parse_line(INVOKED),
            Some(OomLine::Invoked {
                gfp_flags: vec!["GFP_KERNEL".into()],
                order: Some(0),
            })
        );
        assert_eq!(
            parse_line(SUMMARY),
            Some(OomLine::Summary {
                constraint: Some("memcg"),
                oom_memcg: Some("/oom-e2e-series-5-13577".into()),
                pid: Some(13630),
            })
        );
        assert_eq!(parse_line(KILLED), Some(OomLine::Killed { pid: 13630 }));
        assert_eq!(
            parse_line("Tasks in /a/b c are going to be killed due to memory.oom.group set"),
            Some(OomLine::GroupKill {
                cgroup: "/a/b c".into()
            })
        );
        assert_eq!(
            parse_line(
                "java invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=2, oom_score_adj=0"
            ),
            Some(OomLine::Invoked {
                gfp_flags: vec!["GFP_HIGHUSER_MOVABLE".into(), "__GFP_COMP".into()],
                order: Some(2),
            })
        );
        assert_eq!(parse_line("eth0: link up"), None);
    }

    #[test]
    fn a_global_oom_has_no_oom_memcg_and_paths_may_hold_commas() {
        let global = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/x.service,task=java,pid=77,uid=1000";
        assert_eq!(
            parse_line(global),
            Some(OomLine::Summary {
                constraint: Some("global"),
                oom_memcg: None,
                pid: Some(77),
            })
        );
        let comma = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,b,task_memcg=/a,b/c,task=x,pid=5,uid=0";
        assert!(matches!(
            parse_line(comma),
            Some(OomLine::Summary { oom_memcg: Some(path), .. }) if path == "/a,b"
        ));
    }

    #[test]
    fn splits_kmsg_records() {
        assert_eq!(
            parse_record("3,1234,2294016047,-;oom-kill:constraint=X\n SUBSYSTEM=memory\n"),
            Some((1234, "oom-kill:constraint=X"))
        );
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn lines_written_from_user_space_are_not_the_kernels() {
        let forged = "Memory cgroup out of memory: Killed process 4242 (x)";
        // `echo '<3>...' > /dev/kmsg` is logged as LOG_USER (prio 11), a
        // daemon's as its own facility; only facility 0 is the kernel.
        for prio in [11, 14, 30, 191] {
            assert_eq!(
                parse_record(&format!("{prio},99,1,-;{forged}")),
                None,
                "prio {prio}"
            );
        }
        assert_eq!(
            parse_record(&format!("3,99,1,-;{forged}")),
            Some((99, forged))
        );
    }

    fn feed_all(log: &mut OomLog, lines: &[&str]) {
        for (seq, text) in lines.iter().enumerate() {
            if let Some(line) = parse_line(text) {
                log.feed(100 + seq as u64, line);
            }
        }
    }

    #[test]
    fn one_oom_is_one_incident_with_its_context() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[INVOKED, "[ pid ] uid tgid ...", SUMMARY, KILLED],
        );
        let context = log.context_of(13630).expect("the kill is known");
        assert_eq!(context.incident_seq, 100);
        assert_eq!(context.constraint, Some("memcg"));
        assert_eq!(
            context.oom_memcg.as_deref(),
            Some("/oom-e2e-series-5-13577")
        );
        assert_eq!(context.gfp_flags, Some(vec!["GFP_KERNEL".to_owned()]));
        assert_eq!(context.order, Some(0));
        assert_eq!(context.group, None);
    }

    #[test]
    fn a_group_kill_shares_one_incident() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[
                INVOKED,
                SUMMARY,
                KILLED,
                "Tasks in /grp are going to be killed due to memory.oom.group set",
                "Memory cgroup out of memory: Killed process 13631 (tail) total-vm:1kB",
                "Memory cgroup out of memory: Killed process 13632 (sh) total-vm:1kB",
            ],
        );
        let incidents: Vec<(u64, Option<String>)> = [13630, 13631, 13632]
            .iter()
            .map(|pid| {
                let c = log.context_of(*pid).expect("known");
                (c.incident_seq, c.group.clone())
            })
            .collect();
        assert!(
            incidents
                .iter()
                .all(|i| *i == (100, Some("/grp".to_owned()))),
            "{incidents:?}"
        );
    }

    /// The report of a v1 memory cgroup OOM as this project's CI kernel
    /// (6.18) printed it, shortened: one line per record.
    const V1_REPORT: [&str; 14] = [
        "memory: usage 32768kB, limit 32768kB, failcnt 54",
        "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
        "kmem: usage 308kB, limit 9007199254740988kB, failcnt 0",
        "Memory cgroup stats for /oom-e2e-series-5-13577:",
        "cache 0",
        "rss 33239040",
        "total_cache 41943040",
        "total_rss 33239040",
        "total_shmem 41943040",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
        "[  13629]     0 13629     2000      120      100       20         0    40960        0             0 sleep",
        "[  13630]     0 13630     8638     8420     8096      324         0   110592        0           500 tail",
        "[  13631]     0 13631     3000      900      800      100         0    40960        0          -998 Web Content",
    ];

    #[test]
    fn the_report_of_a_memcg_oom_is_kept_with_its_victim() {
        let mut log = OomLog::default();
        let mut lines = vec![INVOKED];
        lines.extend(V1_REPORT);
        lines.extend([SUMMARY, KILLED]);
        feed_all(&mut log, &lines);
        let report = log
            .context_of(13630)
            .and_then(|c| c.report.as_deref().cloned())
            .expect("a report");
        assert_eq!(
            report.stats_path.as_deref(),
            Some("/oom-e2e-series-5-13577")
        );
        assert_eq!(report.failcnt, Some(54));
        assert_eq!(report.usage_kib, Some(32_768));
        assert_eq!(report.kmem_kib, Some(308));
        assert_eq!(report.swap_kib, None, "v1 has memory+swap, not swap");
        assert_eq!(report.stats.len(), 5, "{:?}", report.stats);
        assert!(report.stats.contains(&("total_shmem".into(), 41_943_040)));
        assert_eq!(report.task_count, 3);
        let tasks: Vec<(u32, &str, u64, Option<i16>)> = report
            .tasks
            .iter()
            .map(|t| (t.pid, t.name.as_str(), t.rss_pages, t.oom_score_adj))
            .collect();
        assert_eq!(
            tasks,
            [
                (13630, "tail", 8420, Some(500)),
                (13631, "Web Content", 900, Some(-998)),
                (13629, "sleep", 120, Some(0)),
            ]
        );
    }

    #[test]
    fn before_6_5_the_stats_are_one_record_and_the_task_dump_has_fewer_columns() {
        let mut log = OomLog::default();
        let stats = "anon 33239040\\x0afile 41943040\\x0ashmem 41943040\\x0a";
        let record = format!("6,101,1,-;{stats}");
        let (seq, text) = parse_record(&record).expect("a kernel record");
        log.feed(100, parse_line(INVOKED).expect("invoked"));
        log.feed(
            101,
            parse_line("Memory cgroup stats for /a:").expect("header"),
        );
        for part in text.split("\\x0a").filter(|t| !t.is_empty()) {
            log.feed(seq, parse_line(part).expect("a stat"));
        }
        for line in [
            "Tasks state (memory values in pages):",
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "[    777]     0   777     8638     8420   110592        0             0 tail",
            SUMMARY,
            "Memory cgroup out of memory: Killed process 777 (tail) total-vm:1kB",
        ] {
            if let Some(line) = parse_line(line) {
                log.feed(102, line);
            }
        }
        let report = log
            .context_of(777)
            .and_then(|c| c.report.as_deref().cloned())
            .expect("report");
        assert_eq!(
            report.stats,
            [
                ("anon".to_owned(), 33_239_040),
                ("file".to_owned(), 41_943_040),
                ("shmem".to_owned(), 41_943_040)
            ]
        );
        assert_eq!(report.tasks[0].rss_pages, 8420);
        assert_eq!(report.tasks[0].oom_score_adj, Some(0));
    }

    /// A global OOM's "Mem-Info:" (one record of many lines, pages) and
    /// its per-node line (kB, with words that are not counters), in the
    /// kernel's `show_free_areas()` format.
    #[test]
    fn a_global_oom_keeps_the_nodes_counters() {
        let mut log = OomLog::default();
        let mem_info = "active_anon:1792 inactive_anon:97024 isolated_anon:0\\x0a \
             active_file:12 inactive_file:31 isolated_file:0\\x0a \
             unevictable:0 dirty:0 writeback:0\\x0a \
             slab_reclaimable:1468 slab_unreclaimable:3390\\x0a \
             mapped:29 shmem:5145 pagetables:331\\x0a \
             sec_pagetables:0 bounce:0\\x0a \
             kernel_misc_reclaimable:0\\x0a \
             free:1306 free_pcp:62 free_cma:0";
        let record = format!("4,200,1,-;{mem_info}");
        let (seq, text) = parse_record(&record).expect("a kernel record");
        log.feed(199, parse_line("tail invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0").expect("invoked"));
        assert_eq!(parse_line("Mem-Info:"), None);
        for part in text.split("\\x0a").filter(|t| !t.is_empty()) {
            log.feed(seq, parse_line(part).expect("counters"));
        }
        for line in [
            "Node 0 active_anon:7168kB inactive_anon:388096kB active_file:48kB \
             inactive_file:124kB unevictable:0kB isolated(anon):0kB isolated(file):0kB \
             mapped:116kB dirty:0kB writeback:0kB shmem:20580kB shmem_thp:0kB \
             shmem_pmdmapped:0kB anon_thp:0kB writeback_tmp:0kB kernel_stack:1504kB \
             pagetables:1324kB sec_pagetables:0kB all_unreclaimable? yes Balloon:0kB",
            "Node 0 DMA free:3940kB boost:0kB min:60kB low:72kB high:84kB",
            "Node 0 DMA32: 28*4kB (UME) 11*8kB (UME) = 200kB",
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/hog,task=tail,pid=900,uid=0",
            "Out of memory: Killed process 900 (tail) total-vm:1kB",
        ] {
            if let Some(line) = parse_line(line) {
                log.feed(201, line);
            }
        }
        let report = log
            .context_of(900)
            .and_then(|c| c.report.as_deref().cloned())
            .expect("report");
        let page = |name: &str| {
            report
                .node_pages
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
        };
        assert_eq!(page("inactive_anon"), Some(97_024));
        assert_eq!(page("shmem"), Some(5_145));
        assert_eq!(page("free"), Some(1_306));
        assert_eq!(report.node_pages.len(), 20);
        assert_eq!(
            report.node_kernel_stack_kib,
            Some(1_504),
            "the zone line adds none"
        );
    }

    #[test]
    fn only_the_ten_largest_tasks_are_kept_and_all_are_counted() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[INVOKED, "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"],
        );
        for pid in 1..=500u32 {
            let row = format!(
                "[{pid:>7}]     0 {pid:>5}     100 {:>8}   4096        0             0 w{pid}",
                pid * 7 % 503
            );
            log.feed(200, parse_line(&row).expect("row"));
        }
        feed_all(&mut log, &[SUMMARY, KILLED]);
        let report = log
            .context_of(13630)
            .and_then(|c| c.report.as_deref().cloned())
            .expect("report");
        assert_eq!(report.task_count, 500);
        let rss: Vec<u64> = report.tasks.iter().map(|t| t.rss_pages).collect();
        let mut all: Vec<u64> = (1..=500u64).map(|pid| pid * 7 % 503).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(rss, all[..LOGGED_TASKS]);
    }

    #[test]
    fn stat_lines_outside_a_report_are_ignored() {
        let mut log = OomLog::default();
        feed_all(&mut log, &["anon 5", INVOKED, "anon 7", SUMMARY, KILLED]);
        assert_eq!(
            log.context_of(13630)
                .and_then(|c| c.report.as_deref().cloned()),
            None
        );
    }

    #[test]
    fn rate_limited_headers_still_separate_incidents_but_add_nothing() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[
                INVOKED,
                SUMMARY,
                KILLED,
                // The next OOM's header and summary were rate-limited.
                "Memory cgroup out of memory: Killed process 9 (tail) total-vm:1kB",
            ],
        );
        let second = log.context_of(9).expect("known");
        assert_ne!(
            second.incident_seq,
            log.context_of(13630).expect("known").incident_seq
        );
        assert_eq!(second.constraint, None, "never borrowed from another OOM");
        assert_eq!(second.oom_memcg, None);
    }
}
