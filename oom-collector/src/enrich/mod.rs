//! Enrichment: a kernel kill becomes a document that names the victim's
//! cgroups, memory limit, container and pod, and carries the host's facts.
//!
//! Everything here reads the host's own files (cgroupfs, `/proc`), cached
//! where the answer does not change; nothing asks a network service.

pub mod cgroup;
pub mod container;
pub mod runtime;

use std::time::SystemTime;

use cgroup::{memcg_usage, oom_group_set, CgroupMounts, CgroupPaths, CgroupVersion};
use container::{parse_cgroup_path, ContainerInfo};
use oom_common::AllocSyscall;
use runtime::{ContainerMetadata, RuntimeDirs, RuntimeMetadata};
use tracing::warn;

use crate::{
    alloc::AllocFailures,
    cmdline::{CapturedCmdline, CmdlineMode},
    decode::{KernelKill, MemcgPages},
    host::{wall_clock_of_boot_ns, HostInfo},
    kmsg::{Kmsg, OomContext},
    record::{
        non_empty, rfc3339, Action, CgroupRef, Container, ContainerImage, Document, Ecs,
        ErrorFields, Event, Host, HostBoot, HostOs, Kubernetes, KubernetesName, KubernetesPod,
        Memcg, Oom, OomAlloc, OomIncident, OomLost, OomTrigger, OomVictim, Parent, Process, Rss,
        Thread, User, EVENT_DATASET, EVENT_MODULE,
    },
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
    /// `NODE_NAME` (the downward API) or the host name.
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
}

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
        let node_name = std::env::var("NODE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| host.name.clone());
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
        }
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
        }
    }

    /// Looks up what the kernel's ids refer to and shapes the document.
    pub fn oom_kill(&mut self, kill: &KernelKill) -> Document {
        let victim_memcg = self
            .memory_path(kill.victim.memcg_id)
            .map(|path| self.memcg_at_oom(path, kill.victim.memcg_pages));
        let oom_log = self.kmsg.as_mut().and_then(|kmsg| {
            kmsg.poll();
            kmsg.log.context_of(kill.victim.tid).cloned()
        });
        // The limited cgroup: exact from the oom_kill_process hook, else as
        // the kernel logged it.
        let (oom_memcg_path, oom_memcg_pages) = match &kill.oom_control {
            Some(control) => (self.memory_path(control.memcg_id), control.memcg_pages),
            None => (oom_log.as_ref().and_then(|l| l.oom_memcg.clone()), None),
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
            oom_memcg: oom_memcg_path.map(|path| self.memcg_at_oom(path, oom_memcg_pages)),
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
        let paths = [memcg_path.as_deref(), cgroup_path.as_deref()];
        let metadata = container_of(paths)
            .id
            .and_then(|id| self.runtime.lookup(&id));
        alloc_document(
            failures,
            window_ms,
            &self.host,
            paths,
            metadata.as_ref(),
            Some(&self.node_name),
            wall_clock_of_boot_ns(failures.first_boot_ns),
            SystemTime::now(),
        )
    }

    /// A document saying `count` kernel events never reached the collector.
    pub fn events_lost(&self, count: u64, reason: &'static str, boot_ns: u64) -> Document {
        lost_document(
            &self.host,
            count,
            reason,
            boot_ns,
            wall_clock_of_boot_ns(boot_ns),
            SystemTime::now(),
        )
    }
}

/// Shapes the `events_lost` document for `count` events the kernel could
/// not deliver, noticed at `boot_ns`; no I/O.
pub fn lost_document(
    host: &HostInfo,
    count: u64,
    reason: &'static str,
    boot_ns: u64,
    timestamp: SystemTime,
    created: SystemTime,
) -> Document {
    Document {
        timestamp: rfc3339(timestamp),
        message: format!(
            "{count} OOM event(s) lost in the kernel ({reason}); \
             consider a larger --ring-buffer-bytes"
        ),
        event: event(
            format!("{}-{}-lost", host.boot_id, boot_ns),
            Action::EventsLost,
            "host",
            "info",
            created,
        ),
        host: host_fields(host),
        ecs: Ecs::default(),
        process: None,
        container: None,
        kubernetes: None,
        oom: Some(Oom {
            lost: Some(OomLost { count, reason }),
            ..Oom::default()
        }),
        error: None,
    }
}

/// The container a process is in, from the first of its cgroup paths
/// that names one (the memory cgroup first: a runtime always makes it).
fn container_of(paths: [Option<&str>; 2]) -> ContainerInfo {
    paths
        .into_iter()
        .flatten()
        .map(parse_cgroup_path)
        .find(|info| !info.is_empty())
        .unwrap_or_default()
}

/// The `container.*` and `kubernetes.*` fields, from the cgroup path and,
/// where the runtime kept it, the container's metadata (which wins).
fn container_fields(
    container: ContainerInfo,
    metadata: Option<&ContainerMetadata>,
    node_name: Option<&str>,
) -> (Option<Container>, Option<Kubernetes>) {
    let meta = metadata.cloned().unwrap_or_default();
    let pod_uid = meta.pod_uid.or(container.pod_uid);
    let in_pod = pod_uid.is_some() || meta.pod_name.is_some();
    let kubernetes = non_empty(Kubernetes {
        namespace: meta.pod_namespace,
        pod: non_empty(KubernetesPod {
            name: meta.pod_name,
            uid: pod_uid,
        }),
        container: meta
            .kubernetes_container
            .map(|name| KubernetesName { name }),
        node: node_name.filter(|_| in_pod).map(|name| KubernetesName {
            name: name.to_owned(),
        }),
    });
    let container = container.id.map(|id| Container {
        id,
        runtime: meta.runtime.or(container.runtime),
        name: meta.name,
        image: meta.image.map(|name| ContainerImage { name }),
    });
    (container, kubernetes)
}

/// Shapes the `memory_allocation_failed` document; no I/O.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one input of the document"
)]
pub fn alloc_document(
    failures: &AllocFailures,
    window_ms: u64,
    host: &HostInfo,
    cgroup_paths: [Option<&str>; 2],
    metadata: Option<&ContainerMetadata>,
    node_name: Option<&str>,
    timestamp: SystemTime,
    created: SystemTime,
) -> Document {
    let syscall = failures.syscall.name();
    let page_alloc = failures.syscall == AllocSyscall::PageAlloc;
    // Page allocations in interrupt context belong to no process.
    let in_process = failures.pid != 0;
    let who = if in_process {
        format!(
            "{}[{}]",
            failures.comm.as_deref().unwrap_or("?"),
            failures.pid
        )
    } else {
        "interrupt context".to_owned()
    };
    let what = if page_alloc {
        "kernel page allocation"
    } else {
        syscall
    };
    let mut message = format!(
        "{what} failed with ENOMEM {} time(s) in {who} within {window_ms} ms",
        failures.count
    );
    if let Some(bytes) = failures.max_request_bytes {
        message.push_str(&format!(" (largest request {bytes} bytes)"));
    }
    // The page allocator's request is a power of two pages: its order.
    let order = failures
        .max_request_bytes
        .filter(|_| page_alloc)
        .map(|bytes| (bytes / page_size()).max(1).ilog2());
    let (container, kubernetes) = container_fields(container_of(cgroup_paths), metadata, node_name);
    let mut event = event(
        format!(
            "{}-{}-{}-{syscall}",
            host.boot_id, failures.first_boot_ns, failures.pid
        ),
        Action::MemoryAllocationFailed,
        "process",
        "info",
        created,
    );
    event.outcome = Some("failure");
    Document {
        timestamp: rfc3339(timestamp),
        message: crate::record::one_line(&message),
        event,
        host: host_fields(host),
        ecs: Ecs::default(),
        process: in_process.then(|| Process {
            pid: failures.pid,
            name: failures.comm.clone(),
            ..Process::default()
        }),
        container,
        kubernetes,
        oom: Some(Oom {
            alloc: Some(OomAlloc {
                syscall: Some(syscall).filter(|_| !page_alloc),
                order,
                count: Some(failures.count),
                window_ms: Some(window_ms),
                request_bytes: failures.max_request_bytes,
                ..OomAlloc::default()
            }),
            ..Oom::default()
        }),
        error: Some(ErrorFields { code: "ENOMEM" }),
    }
}

/// What enrichment found out about one kill, beyond the kernel's record.
#[derive(Clone, Debug)]
pub struct KillContext {
    /// Wall-clock time of the kernel's timestamp.
    pub timestamp: SystemTime,
    /// When the document is made.
    pub created: SystemTime,
    pub victim_cgroup_path: Option<String>,
    pub victim_memcg: Option<Memcg>,
    pub trigger_cgroup_path: Option<String>,
    pub trigger_memcg_path: Option<String>,
    /// The victim's command line, redacted as configured.
    pub cmdline: Option<CapturedCmdline>,
    /// What the kernel's log said about this OOM.
    pub oom_log: Option<OomContext>,
    /// The memory cgroup whose limit was hit, with its limit and usage.
    pub oom_memcg: Option<Memcg>,
    /// The victim's comm from `/proc` when the kernel's record has none.
    pub victim_comm_from_proc: Option<String>,
    /// What the container runtime recorded about the victim's container.
    pub container_metadata: Option<ContainerMetadata>,
    /// This node's name, for `kubernetes.node.name`.
    pub node_name: Option<String>,
    /// `memory.oom.group` is set between the victim's memory cgroup and
    /// the one whose limit was hit (see `cgroup::oom_group_set`); `None`
    /// when not looked up or unknown.
    pub memcg_oom_group: Option<bool>,
    /// The victim was already exiting and was sent no kill (see
    /// `Enricher::victim_exiting`); `None` when unknown.
    pub victim_exiting: Option<bool>,
}

fn event(
    id: String,
    action: Action,
    category: &'static str,
    event_type: &'static str,
    created: SystemTime,
) -> Event {
    Event {
        id,
        kind: "event",
        category: vec![category],
        event_type: vec![event_type],
        action,
        module: EVENT_MODULE,
        dataset: EVENT_DATASET,
        created: rfc3339(created),
        outcome: None,
    }
}

fn host_fields(host: &HostInfo) -> Host {
    Host {
        name: host.name.clone(),
        boot: HostBoot {
            id: host.boot_id.clone(),
        },
        os: HostOs {
            kernel: host.kernel.clone(),
        },
    }
}

/// Shapes the `oom_kill` document; no I/O.
pub fn kill_document(kill: &KernelKill, host: &HostInfo, context: KillContext) -> Document {
    let victim = &kill.victim;
    let kib = |v: Option<u64>| v.map(|kib| kib.saturating_mul(1024));
    let container = container_of([
        context.victim_memcg.as_ref().map(|m| m.path.as_str()),
        context.victim_cgroup_path.as_deref(),
    ]);

    let pid = victim.pid.unwrap_or(victim.tid);
    let logged = context.oom_log;
    let control = kill.oom_control.as_ref();
    let chosen = control.map(|c| c.chosen_tid == victim.tid);
    let incident = match (control, &logged) {
        (Some(c), _) => Some(format!("{}-{}", host.boot_id, c.incident_boot_ns)),
        (None, Some(l)) => Some(format!("{}-oom-{}", host.boot_id, l.incident_seq)),
        (None, None) => None,
    };
    let oom = Oom {
        constraint: control
            .and_then(|c| c.constraint)
            .or_else(|| logged.as_ref().and_then(|l| l.constraint)),
        memcg: context.oom_memcg,
        incident: incident.map(|id| OomIncident { id }),
        group_kill: match (chosen, &logged) {
            // A victim the OOM did not choose can only have died with the
            // chosen one's group.
            (Some(false), _) => Some(true),
            (_, Some(l)) if l.group.is_some() => Some(true),
            // The chosen victim is killed, and logged, before its group is:
            // the cgroup's own setting says whether one follows.
            _ => context.memcg_oom_group.or(logged.as_ref().map(|_| false)),
        },
        domain_bytes: control.map(|c| c.domain_pages.saturating_mul(page_size())),
        alloc: non_empty(OomAlloc {
            order: control
                .map(|c| c.order)
                .or_else(|| logged.as_ref().and_then(|l| l.order)),
            gfp_flags: logged.as_ref().and_then(|l| l.gfp_flags.clone()),
            ..OomAlloc::default()
        }),
        victim: non_empty(OomVictim {
            rss: non_empty(Rss {
                anon_bytes: kib(victim.anon_rss_kib),
                file_bytes: kib(victim.file_rss_kib),
                shmem_bytes: kib(victim.shmem_rss_kib),
            }),
            total_vm_bytes: kib(victim.total_vm_kib),
            pgtables_bytes: kib(victim.pgtables_kib),
            oom_score_adj: victim.oom_score_adj,
            points: control
                .filter(|_| chosen == Some(true))
                .map(|c| c.chosen_points),
            cgroup: context.victim_cgroup_path.map(|path| CgroupRef { path }),
            memcg: context.victim_memcg,
            exiting: context.victim_exiting,
        }),
        trigger: Some(OomTrigger {
            pid: kill.trigger.pid,
            name: kill.trigger.comm.clone(),
            cgroup: context.trigger_cgroup_path.map(|path| CgroupRef { path }),
            memcg: context.trigger_memcg_path.map(|path| CgroupRef { path }),
        }),
        lost: None,
    };

    let name = victim.comm.clone().or(context.victim_comm_from_proc);
    let message = kill_message(pid, name.as_deref(), kill, &oom, container.id.as_deref());
    let (container, kubernetes) = container_fields(
        container,
        context.container_metadata.as_ref(),
        context.node_name.as_deref(),
    );
    Document {
        timestamp: rfc3339(context.timestamp),
        message,
        event: event(
            format!("{}-{}-{}", host.boot_id, kill.boot_ns, victim.tid),
            Action::OomKill,
            "process",
            "end",
            context.created,
        ),
        host: host_fields(host),
        ecs: Ecs::default(),
        process: Some(Process {
            pid,
            executable: context.cmdline.as_ref().and_then(|c| c.executable.clone()),
            args_count: context
                .cmdline
                .as_ref()
                .filter(|c| !c.truncated)
                .map(|c| c.args.len() as u64),
            command_line: context.cmdline.as_ref().map(CapturedCmdline::command_line),
            args: context.cmdline.map(|c| c.args),
            thread: Some(Thread { id: victim.tid }),
            name,
            user: victim.uid.map(|uid| User {
                id: uid.to_string(),
            }),
            parent: victim.parent_pid.map(|pid| Parent { pid }),
        }),
        container,
        kubernetes,
        oom: Some(oom),
        error: None,
    }
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The victim's name where the kernel's record lacks it (5.10): the process
/// is being killed but its `/proc` entry lasts until its parent reaps it.
fn proc_comm(pid: u32) -> Option<String> {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    Some(String::from_utf8_lossy(comm).into_owned())
}

/// Like the kernel's own line, plus where the victim lived.
fn kill_message(
    pid: u32,
    name: Option<&str>,
    kill: &KernelKill,
    oom: &Oom,
    container_id: Option<&str>,
) -> String {
    let victim = &kill.victim;
    let mut message = if oom.victim_exiting() {
        format!(
            "Out of memory: process {pid} ({}) was already exiting: marked as the OOM \
             victim to free its memory, no kill sent;",
            name.unwrap_or("?")
        )
    } else {
        format!(
            "Out of memory: Killed process {pid} ({})",
            name.unwrap_or("?")
        )
    };
    let fields = [
        ("total-vm", victim.total_vm_kib),
        ("anon-rss", victim.anon_rss_kib),
        ("file-rss", victim.file_rss_kib),
        ("shmem-rss", victim.shmem_rss_kib),
    ];
    let sizes: Vec<String> = fields
        .iter()
        .filter_map(|(label, kib)| kib.map(|kib| format!("{label}:{kib}kB")))
        .collect();
    if !sizes.is_empty() {
        message.push(' ');
        message.push_str(&sizes.join(", "));
    }
    if let Some(uid) = victim.uid {
        message.push_str(&format!(", UID:{uid}"));
    }
    if let Some(adj) = victim.oom_score_adj {
        message.push_str(&format!(" oom_score_adj:{adj}"));
    }
    if let Some(memcg) = oom.victim.as_ref().and_then(|v| v.memcg.as_ref()) {
        message.push_str(&format!(" in memory cgroup {}", memcg.path));
        if let Some(limit) = memcg.limit_bytes {
            message.push_str(&format!(" (limit {}kB)", limit / 1024));
        }
    }
    if let Some(hit) = oom.memcg.as_ref() {
        let own = oom.victim.as_ref().and_then(|v| v.memcg.as_ref());
        if own.is_none_or(|own| own.path != hit.path) {
            message.push_str(&format!(", limit of {} hit", hit.path));
        }
    }
    if let Some(id) = container_id {
        message.push_str(&format!(", container {}", &id[..12.min(id.len())]));
    }
    crate::record::one_line(&message)
}
