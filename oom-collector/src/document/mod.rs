//! The event documents the collector writes: one JSON object per line,
//! with Elastic Common Schema (ECS) names, dotted names nested as objects.
//!
//! Every document has `@timestamp` (the kernel's time of the event, RFC 3339
//! UTC with microseconds), `event.{id,kind,category,type,action,module,
//! dataset,created}`, `host.{name,boot.id,os.kernel}`, `ecs.version` and a
//! readable `message`. A field the kernel or the host could not supply is
//! left out, never written as zero or empty.
//!
//! `event.action: "oom_kill"` — one OOM killer victim:
//!
//! ```json
//! {"@timestamp":"2026-11-29T19:25:10.123456Z",
//!  "message":"Out of memory: Killed process 4242 (python3) ...",
//!  "event":{"id":"<boot id>-<boot ns>-<tid>","kind":"event","category":["process"],
//!           "type":["end"],"action":"oom_kill","module":"oom","dataset":"oom.events",
//!           "created":"..."},
//!  "host":{"name":"node-1","boot":{"id":"..."},"os":{"kernel":"6.18.44"}},
//!  "ecs":{"version":"9.4.0"},
//!  "process":{"pid":4242,"thread":{"id":4242},"name":"python3","user":{"id":"1000"},
//!             "parent":{"pid":4200}},
//!  "container":{"id":"<64 hex>","runtime":"containerd"},
//!  "kubernetes":{"pod":{"uid":"..."}},
//!  "oom":{"victim":{"rss":{"anon_bytes":50331648,"file_bytes":0,"shmem_bytes":0},
//!                   "total_vm_bytes":...,"pgtables_bytes":...,"oom_score_adj":0,
//!                   "cgroup":{"path":"/..."},
//!                   "memcg":{"path":"/...","limit_bytes":50331648,"usage_bytes":...}},
//!         "trigger":{"pid":4242,"name":"python3","cgroup":{"path":"/..."},
//!                    "memcg":{"path":"/..."}}}}
//! ```
//!
//! `event.action: "memory_allocation_failed"` — a process's `mmap`,
//! `mremap` or `brk` was refused (`ENOMEM`) `oom.alloc.count` times within
//! one window of `oom.alloc.window_ms` (`@timestamp` is the first failure):
//! `event.type: ["info"]`, `event.outcome: "failure"`, `error.code:
//! "ENOMEM"`, `oom.alloc.syscall`, `oom.alloc.request_bytes` (the largest
//! request refused), and the same process and container fields as a kill.
//!
//! `event.action: "events_lost"` — the kernel could not hand over
//! `oom.lost.count` events (`oom.lost.reason`, e.g. `ring_buffer_full`), so
//! a gap shows in Kibana instead of passing silently.
//!
//! The golden test in `tests/json.rs` holds this format.
//!
//! Each kind is shaped, without I/O, in a module of its own from what the
//! kernel reported and one context struct of what enrichment found:
//! [`kill`], [`alloc_failure`], [`lost`]. [`Document::pretty`] writes any
//! of them as one readable line.

pub mod alloc_failure;
pub(crate) mod container;
mod explain;
pub mod kill;
pub mod lost;
mod pretty;

use std::time::SystemTime;

use serde::Serialize;

use crate::host::HostInfo;

/// The ECS release whose field names and types the documents follow.
pub const ECS_VERSION: &str = "9.4.0";
pub const EVENT_MODULE: &str = "oom";
pub const EVENT_DATASET: &str = "oom.events";

/// What a document tells of, written as its `event.action`. Metrics,
/// `--format pretty` and `selftest` match on this, read through
/// [`Document::kind`], never on the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An OOM killer victim: `oom_kill`.
    OomKill,
    /// Memory requests refused with ENOMEM: `memory_allocation_failed`.
    MemoryAllocationFailed,
    /// Events that never reached an output: `events_lost`.
    EventsLost,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub message: String,
    pub event: Event,
    pub host: Host,
    pub ecs: Ecs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<Oom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFields>,
}

impl Document {
    /// What the document tells of: the one way to tell kinds apart.
    pub fn kind(&self) -> Action {
        self.event.action
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorFields {
    pub code: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub kind: &'static str,
    pub category: Vec<&'static str>,
    #[serde(rename = "type")]
    pub event_type: Vec<&'static str>,
    pub action: Action,
    pub module: &'static str,
    pub dataset: &'static str,
    /// When the collector wrote the document.
    pub created: String,
    /// The first of the failures a document counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The last of the failures a document counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
}

impl Event {
    /// The `event.*` fields of a document of this project's module and
    /// dataset, made at `created`, with no outcome.
    fn new(
        id: String,
        action: Action,
        category: &'static str,
        event_type: &'static str,
        created: SystemTime,
    ) -> Self {
        Self {
            id,
            kind: "event",
            category: vec![category],
            event_type: vec![event_type],
            action,
            module: EVENT_MODULE,
            dataset: EVENT_DATASET,
            created: rfc3339(created),
            start: None,
            end: None,
            outcome: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Host {
    pub name: String,
    pub boot: HostBoot,
    pub os: HostOs,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostBoot {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostOs {
    pub kernel: String,
}

impl From<&HostInfo> for Host {
    fn from(host: &HostInfo) -> Self {
        Self {
            name: host.name.clone(),
            boot: HostBoot {
                id: host.boot_id.clone(),
            },
            os: HostOs {
                kernel: host.kernel.clone(),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ecs {
    pub version: &'static str,
}

impl Default for Ecs {
    fn default() -> Self {
        Self {
            version: ECS_VERSION,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Process {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Known only when the arguments were captured whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Thread {
    pub id: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct User {
    /// ECS keeps user ids as strings.
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Parent {
    pub pid: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Container {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ContainerImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ContainerImage {
    pub name: String,
}

/// The names Filebeat's Kubernetes metadata gives application logs, so a
/// kill shows up beside the pod's own logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kubernetes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<KubernetesPod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<KubernetesName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<KubernetesName>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KubernetesPod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KubernetesName {
    pub name: String,
}

/// Fields of this project's own `oom` namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Oom {
    /// `memcg`, `global`, `cpuset` or `memory_policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<&'static str>,
    /// The memory cgroup whose limit was hit: the victim's own or an
    /// ancestor's (a pod-level limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<Memcg>,
    /// On a global OOM: what filled the node, and its largest cgroups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<OomNode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<OomIncident>,
    /// Whether `memory.oom.group` killed the victim's whole cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_kill: Option<bool>,
    /// The size of the OOM domain (`oc->totalpages`): the limited cgroup's
    /// limit, or all of RAM and swap for a global OOM. Not the victim's
    /// size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim: Option<OomVictim>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<OomTrigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<OomLost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc: Option<OomAlloc>,
}

impl Oom {
    /// The OOM killer marked a victim that was already exiting and sent it
    /// no kill (`oom.victim.exiting: true`).
    pub fn victim_exiting(&self) -> bool {
        self.victim.as_ref().and_then(|v| v.exiting) == Some(true)
    }
}

/// A failing allocation: on `memory_allocation_failed`, one process's
/// refused system calls folded over a window; on `oom_kill`, the kernel
/// allocation that ran out of memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomAlloc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<&'static str>,
    /// Failures folded into this document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// The largest request that failed, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_bytes: Option<u64>,
    /// log2 of the pages the kernel allocation asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Its GFP flags, by the kernel's names (`GFP_KERNEL`, `__GFP_COMP`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gfp_flags: Option<Vec<String>>,
    /// On the sum of a cgroup's other processes (no `process.*`): how many
    /// of them were told apart; more failed where the kernel's
    /// per-process table had no room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_processes: Option<u64>,
}

/// One OOM: every victim it made shares the id.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomIncident {
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomVictim {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<Rss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_vm_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgtables_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i16>,
    /// The badness score that made the OOM killer choose this victim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
    /// The victim's cgroup on the unified (v2) hierarchy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupRef>,
    /// The victim's own memory cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<Memcg>,
    /// `true`: the victim was already exiting, so the OOM killer marked it
    /// to free its memory and sent no kill; `false`: it was sent SIGKILL.
    /// Absent where the kernel does not let the collector see which (no
    /// hook on the OOM killer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exiting: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rss {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CgroupRef {
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memcg {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// On the cgroup whose limit was hit: what filled it at the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<MemcgStats>,
    /// On the cgroup whose limit was hit: its largest processes at the
    /// kill, the victim included, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<MemcgTask>>,
    /// How many processes the cgroup and its descendants held at the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_count: Option<u64>,
    /// How often the cgroup met its limits: `memory.events` (v2);
    /// `memory.failcnt` and the OOM kill count of `memory.oom_control` (v1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<MemcgEvents>,
    /// `memory.pressure` (v2, with PSI): the share of time tasks stalled
    /// on memory, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure: Option<MemcgPressure>,
}

/// What filled a memory cgroup, by the same names on cgroup v1 and v2.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemcgStats {
    /// Anonymous memory: heaps, stacks, private mappings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_bytes: Option<u64>,
    /// The page cache, shmem included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// tmpfs, `emptyDir: {medium: Memory}`, System V and POSIX shared
    /// memory: part of `file_bytes`, and not freed by killing a process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_bytes: Option<u64>,
    /// Kernel memory charged to the cgroup: slab, kernel stacks, page
    /// tables, per-CPU and vmalloc memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab_reclaimable_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab_unreclaimable_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_stack_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagetables_bytes: Option<u64>,
    /// Network socket buffers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sock_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_mapped_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_dirty_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_writeback_bytes: Option<u64>,
    /// Where the values come from: `kernel_log` (the kernel's own report
    /// at the OOM, exact) or `cgroupfs` (read after the kill, with what
    /// the kill freed of the victim's anonymous memory added back).
    pub source: &'static str,
}

/// The node at a global OOM.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomNode {
    /// The node's memory by kind, from `/proc/meminfo` after the kill with
    /// the victim's freed anonymous memory moved back from free to anon.
    pub stats: NodeStats,
    /// The memory cgroups that hold processes, largest first (at most 10):
    /// containers, services, pods' own processes.
    pub memcgs: Vec<NodeMemcg>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeStats {
    /// Where the figures come from: `kernel_log`, the kernel's own report
    /// at the OOM; or `procfs`, `/proc/meminfo` right after the kill, with
    /// the victim's anonymous memory counted again.
    pub source: &'static str,
    pub anon_bytes: u64,
    /// The page cache, shmem included.
    pub file_bytes: u64,
    pub shmem_bytes: u64,
    /// Slab, kernel stacks and page tables.
    pub kernel_bytes: u64,
    pub free_bytes: u64,
}

/// One of the node's largest memory cgroups at a global OOM.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeMemcg {
    pub path: String,
    pub usage_bytes: u64,
    /// The pod whose container it is, where known: `kubernetes.namespace`
    /// and `kubernetes.pod.name`, as on the document itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<NodeMemcgPod>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeMemcgPod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub pod: PodName,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PodName {
    pub name: String,
}

/// One process of the limited cgroup at the kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemcgTask {
    pub pid: u32,
    pub name: String,
    /// Resident memory: anonymous, file and shmem pages.
    pub rss_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i16>,
}

/// Counts of `memory.events` (v2) and `memory.oom_control` (v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemcgEvents {
    /// Times usage went over `memory.high` (throttled, reclaimed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<u64>,
    /// Times usage was about to go over `memory.max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Times the limit was hit and reclaim failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<u64>,
    /// Processes the OOM killer killed in the cgroup, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_group_kill: Option<u64>,
    /// v1's `memory.failcnt`: charges that hit the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failcnt: Option<u64>,
}

/// `memory.pressure`: `some` (at least one task stalled) and `full` (all
/// stalled), averaged over 10 s and 60 s.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemcgPressure {
    pub some: PressureAverages,
    pub full: PressureAverages,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PressureAverages {
    /// The share of the last 10 s and 60 s spent stalled, in percent.
    pub avg10: f64,
    pub avg60: f64,
    /// Time stalled since the cgroup was made, in microseconds: grows with
    /// every stall, however short, where the averages may round to 0.
    pub total_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomTrigger {
    pub pid: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<CgroupRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomLost {
    pub count: u64,
    pub reason: &'static str,
}

/// RFC 3339, UTC, microseconds: what Elasticsearch's `date` type parses.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// `Some(value)` unless it is the type's empty default.
pub fn non_empty<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

/// `text` with control characters (a newline in a process name, say)
/// written as escapes, so a human-readable line stays one line.
pub fn one_line(text: &str) -> String {
    if !text.contains(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod one_line_tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::one_line("ev\nil\u{fffd}name\t"),
            "ev\\nil\u{fffd}name\\t"
        );
        assert_eq!(super::one_line("plain ü"), "plain ü");
    }
}
