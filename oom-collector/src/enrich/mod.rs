//! Enrichment: what a kernel record's ids refer to (the victim's cgroups,
//! memory limit, container and pod, the kernel log's account of the OOM),
//! looked up and handed with the host's facts to the builders in
//! [`document`](crate::document), which shape the documents.
//!
//! Everything here reads the host's own files (cgroupfs, `/proc`), cached
//! where the answer does not change; nothing asks a network service.

pub mod cgroup;
pub mod container;
pub mod memcg_report;
pub mod runtime;

use std::{collections::VecDeque, time::SystemTime};

use cgroup::{memcg_usage, oom_group_set, CgroupMounts, CgroupPaths, CgroupVersion};
use memcg_report::{
    node_stats_from_log, read_node_report, read_report, report_from_log, stats_at_oom, MemcgReport,
    VictimAtKill,
};
use runtime::{RuntimeDirs, RuntimeMetadata};
use tracing::warn;

use crate::{
    alloc_failures::AllocFailures,
    cmdline::CmdlineMode,
    decode::{KernelKill, MemcgPages, MemcgStatsAtOom},
    document::{
        alloc_failure::{alloc_failure_document, AllocFailureContext},
        container::container_of,
        kill::{incident_id, kill_document, KillContext},
        lost::{lost_document, LostContext},
        Document, Memcg, NodeMemcgPod, OomNode, PodName,
    },
    host::{page_size, wall_clock_of_boot_ns, HostInfo},
    kmsg::{Kmsg, LoggedReport},
    redact::Redactor,
};

/// What the enricher is told, beside what it reads from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichOptions {
    /// How much of a victim's command line its events carry.
    pub cmdline_mode: CmdlineMode,
    /// Secret words beside the built-in ones, for [`CmdlineMode::Redacted`].
    pub secret_words: Vec<String>,
    /// Where the container runtimes keep their metadata.
    pub runtime_dirs: RuntimeDirs,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        Self {
            cmdline_mode: CmdlineMode::Redacted,
            secret_words: Vec::new(),
            runtime_dirs: RuntimeDirs::default(),
        }
    }
}

/// Turns kernel records into documents.
pub struct Enricher {
    host: HostInfo,
    runtime: RuntimeMetadata,
    /// `NODE_NAME` (the downward API) or the host name ([`HostInfo::name`]).
    node_name: String,
    /// The kernel log, for what the OOM tracepoint does not say.
    kmsg: Option<Kmsg>,
    cmdline_mode: CmdlineMode,
    redactor: Redactor,
    unified: Option<CgroupPaths>,
    memory: Option<(CgroupPaths, CgroupVersion)>,
    /// Both hooks on the OOM killer (`oom_kill_process`,
    /// `__oom_kill_process`) are attached, so a kill sent is seen.
    kill_hooks: bool,
    /// The limited cgroup's report of the latest incident, by incident:
    /// every victim of one OOM (a `memory.oom.group` kill of thousands)
    /// shares the report read at the first.
    last_report: Option<(String, MemcgReport)>,
    /// The same for the node at a global OOM.
    last_node: Option<(String, OomNode)>,
    /// The limited cgroups' stats the kernel side read at the latest OOMs,
    /// newest last, until their kills come.
    stats_at_oom: VecDeque<MemcgStatsAtOom>,
}

/// OOMs whose stats are kept for their kills: these come right after them
/// on the same ring buffer.
const KEPT_STATS_AT_OOM: usize = 64;

impl Enricher {
    pub fn new(
        host: HostInfo,
        mounts: CgroupMounts,
        options: &EnrichOptions,
        kill_hooks: bool,
    ) -> Self {
        let kmsg = Kmsg::open()
            .map_err(|error| {
                warn!(
                    %error,
                    "cannot read /dev/kmsg (needs CAP_SYSLOG): OOM constraint, limited cgroup, \
                     failing allocation and incident grouping will be missing"
                );
            })
            .ok();
        let node_name = host.name.clone();
        Self {
            runtime: RuntimeMetadata::new(options.runtime_dirs.clone()),
            node_name,
            host,
            kmsg,
            cmdline_mode: options.cmdline_mode,
            redactor: Redactor::new(&options.secret_words),
            unified: mounts.unified.map(CgroupPaths::new),
            memory: mounts.memory.map(|m| (CgroupPaths::new(m.root), m.version)),
            kill_hooks,
            last_report: None,
            last_node: None,
            stats_at_oom: VecDeque::new(),
        }
    }

    /// Keeps the stats the kernel side read at an OOM for its kills.
    pub fn stats_at_oom(&mut self, stats: MemcgStatsAtOom) {
        if self.stats_at_oom.len() == KEPT_STATS_AT_OOM {
            self.stats_at_oom.pop_front();
        }
        self.stats_at_oom.push_back(stats);
    }

    /// Whether the victim's memory cgroup is killed whole with it, where
    /// neither the log nor the hooks can say yet: the chosen victim is
    /// killed, and logged, before the rest of its group. Read only for
    /// that victim; the others of a group are known by not being chosen.
    fn memcg_oom_group(
        &self,
        kill: &KernelKill,
        victim_memcg: Option<&str>,
        limited: Option<&str>,
        logged_group: bool,
    ) -> Option<bool> {
        let not_chosen = kill
            .oom_control
            .as_ref()
            .is_some_and(|c| c.chosen_tid != kill.victim.tid);
        if logged_group || not_chosen {
            return None;
        }
        let (paths, version) = self.memory.as_ref()?;
        oom_group_set(
            &paths.directory("/"),
            victim_memcg?,
            limited.unwrap_or("/"),
            *version,
        )
    }

    /// Whether the victim was already exiting, so the OOM killer marked it
    /// to free its memory and sent no kill: `mark_oom_victim()` is reached
    /// from `__oom_kill_process()` after SIGKILL, but also for a chosen
    /// victim already exiting (`oom_kill_process()`) and for an exiting
    /// allocating task, which marks itself before anyone is chosen
    /// (`out_of_memory()`). Only the OOM killer's hooks tell them apart;
    /// without them, unknown.
    fn victim_exiting(&self, kill: &KernelKill) -> Option<bool> {
        if !self.kill_hooks {
            return None;
        }
        match &kill.oom_control {
            Some(control) => Some(!control.kill_sent),
            None => (kill.victim.tid == kill.trigger.tid).then_some(true),
        }
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    fn unified_path(&mut self, id: Option<u64>) -> Option<String> {
        self.unified.as_mut()?.path_of(id?)
    }

    fn memory_path(&mut self, id: Option<u64>) -> Option<String> {
        self.memory.as_mut()?.0.path_of(id?)
    }

    /// A memory cgroup with its limit and usage at the OOM, as the kernel
    /// had them. Without them, the limit as cgroupfs shows it now and no
    /// usage: read now, usage would leave out what the kill freed.
    fn memcg_at_oom(&self, path: String, pages: Option<MemcgPages>) -> Memcg {
        if let Some(pages) = pages {
            let page = page_size();
            let unlimited = pages.max >= i64::MAX as u64 / page;
            return Memcg {
                path,
                limit_bytes: (!unlimited).then(|| pages.max.saturating_mul(page)),
                usage_bytes: Some(pages.usage.saturating_mul(page)),
                ..Memcg::default()
            };
        }
        let now = self
            .memory
            .as_ref()
            .map(|(paths, version)| memcg_usage(&paths.directory(&path), *version))
            .unwrap_or_default();
        Memcg {
            path,
            limit_bytes: now.limit_bytes,
            usage_bytes: None,
            ..Memcg::default()
        }
    }

    /// The limited cgroup as it was at the kill: what filled it, who held
    /// it, how often it met its limit (see [`memcg_report`]). Read once
    /// per incident.
    fn with_report(
        &mut self,
        mut memcg: Memcg,
        kill: &KernelKill,
        incident: Option<String>,
        logged: Option<&LoggedReport>,
    ) -> Memcg {
        let cached = self
            .last_report
            .as_ref()
            .filter(|(id, _)| incident.as_ref() == Some(id))
            .map(|(_, report)| report.clone());
        let report = match cached {
            Some(report) => report,
            None => {
                let Some((paths, version)) = self.memory.as_ref() else {
                    return memcg;
                };
                let at_kill = victim_at_kill(kill);
                let dir = paths.directory(&memcg.path);
                // Best of all, the counters read in the kernel at the OOM.
                let control = kill.oom_control.as_ref();
                let at_oom = self
                    .stats_at_oom
                    .iter()
                    .rev()
                    .find(|s| {
                        control.is_some_and(|c| {
                            c.incident_boot_ns == s.incident_boot_ns
                                && c.memcg_id == Some(s.memcg_id)
                        })
                    })
                    .map(|s| stats_at_oom(s, page_size()));
                let mut report = match logged.filter(|l| l.stats_path.as_ref() == Some(&memcg.path))
                {
                    Some(logged) => report_from_log(logged, &dir, *version, page_size()),
                    None => read_report(&dir, *version, &at_kill, at_oom.is_none()),
                };
                if at_oom.is_some() {
                    report.stats = at_oom;
                }
                if let Some(id) = incident {
                    self.last_report = Some((id, report.clone()));
                }
                report
            }
        };
        memcg.stats = report.stats;
        memcg.tasks = Some(report.tasks).filter(|t| !t.is_empty());
        memcg.tasks_count = Some(report.task_count);
        memcg.events = report.events;
        memcg.pressure = report.pressure;
        memcg
    }

    /// The memory cgroup whose limit was hit, where neither the OOM
    /// killer's hook nor the kernel's log says: the victim's own when its
    /// usage at the kill had reached its limit (within what one charge
    /// may ask, a huge page), else the nearest cgroup above it that has a
    /// limit; none when no cgroup up to the root has one (a global OOM).
    fn limited_memcg(&self, victim: &Memcg) -> Option<String> {
        const ONE_CHARGE: u64 = 2 << 20;
        let (paths, version) = self.memory.as_ref()?;
        let reached = match (victim.usage_bytes, victim.limit_bytes) {
            (Some(usage), Some(limit)) => usage.saturating_add(ONE_CHARGE) >= limit,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if reached {
            return Some(victim.path.clone());
        }
        let mut path = victim.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            path = parent;
            if path.is_empty() {
                return None;
            }
            if memcg_usage(&paths.directory(path), *version)
                .limit_bytes
                .is_some()
            {
                return Some(path.to_owned());
            }
        }
        None
    }

    /// The node at a global OOM: its memory by kind and its largest
    /// cgroups (see [`read_node_report`]). Read once per incident.
    fn node_report(
        &mut self,
        kill: &KernelKill,
        incident: Option<String>,
        logged: Option<&LoggedReport>,
    ) -> Option<OomNode> {
        if let Some((_, node)) = self
            .last_node
            .as_ref()
            .filter(|(id, _)| incident.as_ref() == Some(id))
        {
            return Some(node.clone());
        }
        let (paths, version) = self.memory.as_ref()?;
        let root = paths.directory("/");
        let runtime = &mut self.runtime;
        let logged = logged.and_then(|l| node_stats_from_log(l, page_size()));
        let node = read_node_report(&root, *version, &victim_at_kill(kill), logged, |path| {
            let metadata = runtime.lookup(&container_of([Some(path), None]).id?)?;
            Some(NodeMemcgPod {
                namespace: metadata.pod_namespace,
                pod: PodName {
                    name: metadata.pod_name?,
                },
            })
        });
        if let Some(id) = incident {
            self.last_node = Some((id, node.clone()));
        }
        Some(node)
    }

    /// Looks up what the kernel's ids refer to and shapes the document.
    pub fn oom_kill(&mut self, kill: &KernelKill) -> Document {
        let victim_memcg = self
            .memory_path(kill.victim.memcg_id)
            .map(|path| self.memcg_at_oom(path, kill.victim.memcg_pages));
        let oom_log = self
            .kmsg
            .as_mut()
            .and_then(|kmsg| kmsg.context_of(kill.victim.tid));
        // The limited cgroup: exact from the oom_kill_process hook, else as
        // the kernel logged it.
        let (oom_memcg_path, oom_memcg_pages) = match &kill.oom_control {
            Some(control) => (self.memory_path(control.memcg_id), control.memcg_pages),
            None => match oom_log.as_ref().and_then(|l| l.oom_memcg.clone()) {
                Some(path) => (Some(path), None),
                None if oom_log.as_ref().and_then(|l| l.constraint) == Some("global") => {
                    (None, None)
                }
                // Neither hook nor log: the limit the victim's usage reached.
                None => match victim_memcg.as_ref().and_then(|m| self.limited_memcg(m)) {
                    Some(path) if Some(&path) == victim_memcg.as_ref().map(|m| &m.path) => {
                        (Some(path), kill.victim.memcg_pages)
                    }
                    other => (other, None),
                },
            },
        };
        let victim_cgroup_path = self.unified_path(kill.victim.cgroup_id);
        // The same container `kill_document` will name.
        let container_metadata = container_of([
            victim_memcg.as_ref().map(|m| m.path.as_str()),
            victim_cgroup_path.as_deref(),
        ])
        .id
        .and_then(|id| self.runtime.lookup(&id));
        let memcg_oom_group = self.memcg_oom_group(
            kill,
            victim_memcg.as_ref().map(|m| m.path.as_str()),
            oom_memcg_path.as_deref(),
            oom_log.as_ref().is_some_and(|l| l.group.is_some()),
        );
        let incident = incident_id(&self.host, kill, oom_log.as_ref());
        let constraint = kill
            .oom_control
            .as_ref()
            .and_then(|c| c.constraint)
            .or_else(|| oom_log.as_ref().and_then(|l| l.constraint));
        // Global: said so, or no limit up from the victim's cgroup.
        let global = constraint == Some("global")
            || constraint.is_none() && oom_memcg_path.is_none() && victim_memcg.is_some();
        let node = if global {
            let logged = oom_log.as_ref().and_then(|l| l.report.as_deref());
            self.node_report(kill, incident.clone(), logged)
        } else {
            None
        };
        let oom_memcg = oom_memcg_path
            .map(|path| self.memcg_at_oom(path, oom_memcg_pages))
            .map(|memcg| {
                let logged = oom_log.as_ref().and_then(|l| l.report.as_deref());
                self.with_report(memcg, kill, incident, logged)
            });
        let context = KillContext {
            container_metadata,
            victim_exiting: self.victim_exiting(kill),
            memcg_oom_group,
            node_name: Some(self.node_name.clone()),
            timestamp: wall_clock_of_boot_ns(kill.boot_ns),
            created: SystemTime::now(),
            victim_cgroup_path,
            victim_memcg,
            trigger_cgroup_path: self.unified_path(kill.trigger.cgroup_id),
            trigger_memcg_path: self.memory_path(kill.trigger.memcg_id),
            cmdline: self
                .redactor
                .shown(self.cmdline_mode, kill.cmdline.as_ref()),
            oom_memcg,
            node,
            oom_log,
            victim_comm_from_proc: match &kill.victim.comm {
                Some(_) => None,
                None => proc_comm(kill.victim.pid.unwrap_or(kill.victim.tid)),
            },
        };
        kill_document(kill, &self.host, context)
    }

    /// Looks up the failing process's cgroups and shapes the document.
    pub fn alloc_failures(&mut self, failures: &AllocFailures, window_ms: u64) -> Document {
        let memcg_path = self.memory_path(failures.memcg_id);
        let cgroup_path = self.unified_path(failures.cgroup_id);
        // The same container `alloc_failure_document` will name.
        let container_metadata = container_of([memcg_path.as_deref(), cgroup_path.as_deref()])
            .id
            .and_then(|id| self.runtime.lookup(&id));
        let context = AllocFailureContext {
            window_ms,
            timestamp: wall_clock_of_boot_ns(failures.first_boot_ns),
            last: wall_clock_of_boot_ns(failures.last_boot_ns.max(failures.first_boot_ns)),
            created: SystemTime::now(),
            memcg_path,
            cgroup_path,
            container_metadata,
            node_name: Some(self.node_name.clone()),
        };
        alloc_failure_document(failures, &self.host, context)
    }

    /// A document saying `count` kernel events never reached the collector.
    pub fn events_lost(&self, count: u64, reason: &'static str, boot_ns: u64) -> Document {
        let context = LostContext {
            count,
            reason,
            boot_ns,
            timestamp: wall_clock_of_boot_ns(boot_ns),
            created: SystemTime::now(),
        };
        lost_document(&self.host, context)
    }
}

/// The victim as the kernel's record has it at the kill.
fn victim_at_kill(kill: &KernelKill) -> VictimAtKill {
    let victim = &kill.victim;
    let kib = |v: Option<u64>| v.unwrap_or(0).saturating_mul(1024);
    VictimAtKill {
        pid: victim.pid.unwrap_or(victim.tid),
        name: victim
            .comm
            .clone()
            .or_else(|| proc_comm(victim.pid.unwrap_or(victim.tid)))
            .unwrap_or_default(),
        anon_bytes: kib(victim.anon_rss_kib),
        rss_bytes: kib(victim.anon_rss_kib) + kib(victim.file_rss_kib) + kib(victim.shmem_rss_kib),
        oom_score_adj: victim.oom_score_adj,
    }
}

/// The victim's name where the kernel's record lacks it (5.10): the process
/// is being killed but its `/proc` entry lasts until its parent reaps it.
fn proc_comm(pid: u32) -> Option<String> {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    Some(String::from_utf8_lossy(comm).into_owned())
}
