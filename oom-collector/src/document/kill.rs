//! The `oom_kill` document: one OOM killer victim, what it held, where it
//! lived and what ran out.

use std::time::SystemTime;

use super::{
    container::{container_fields, container_of},
    non_empty, one_line, rfc3339, Action, CgroupRef, Document, Ecs, Event, Memcg, Oom, OomAlloc,
    OomIncident, OomNode, OomTrigger, OomVictim, Parent, Process, Rss, Thread, User,
};
use crate::{
    cmdline::CapturedCmdline,
    decode::KernelKill,
    enrich::runtime::ContainerMetadata,
    host::{page_size, HostInfo},
    kmsg::OomContext,
};

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
    /// On a global OOM, the node's memory and largest cgroups.
    pub node: Option<OomNode>,
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

/// `oom.incident.id`: one per OOM, shared by all its victims; from the
/// `oom_kill_process` hook, else from the kernel's log.
pub fn incident_id(
    host: &HostInfo,
    kill: &KernelKill,
    logged: Option<&OomContext>,
) -> Option<String> {
    match (&kill.oom_control, logged) {
        (Some(c), _) => Some(format!("{}-{}", host.boot_id, c.incident_boot_ns)),
        (None, Some(l)) => Some(format!("{}-oom-{}", host.boot_id, l.incident_seq)),
        (None, None) => None,
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
    let incident = incident_id(host, kill, logged.as_ref());
    let oom = Oom {
        constraint: control
            .and_then(|c| c.constraint)
            .or_else(|| logged.as_ref().and_then(|l| l.constraint)),
        memcg: context.oom_memcg,
        node: context.node,
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
        host,
    );
    let mut document = Document {
        timestamp: rfc3339(context.timestamp),
        message,
        event: Event::new(
            format!("{}-{}-{}", host.boot_id, kill.boot_ns, victim.tid),
            Action::OomKill,
            "process",
            "end",
            context.created,
        ),
        host: host.into(),
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
    };
    if let Some(sentence) = document.explanation() {
        document.message = sentence;
    }
    document
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
    one_line(&message)
}
