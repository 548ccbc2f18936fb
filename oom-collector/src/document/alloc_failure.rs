//! The `memory_allocation_failed` document: one process's memory requests
//! refused with ENOMEM over one window, or the kernel's page allocations
//! that failed.

use std::time::SystemTime;

use oom_common::AllocSyscall;

use super::{
    container::{container_fields, container_of},
    one_line, rfc3339, Action, Document, Ecs, ErrorFields, Event, Oom, OomAlloc, Process,
};
use crate::{
    alloc_failures::AllocFailures,
    enrich::runtime::ContainerMetadata,
    host::{page_size, HostInfo},
};

/// What enrichment found out about one window of allocation failures,
/// beyond the kernel's tally.
#[derive(Clone, Debug)]
pub struct AllocFailureContext {
    /// How long the window the failures were folded over lasted: the
    /// configured window, or less when a kill or shutdown ended it.
    pub window_ms: u64,
    /// Wall-clock time of the window's first failure (`@timestamp`,
    /// `event.start`).
    pub timestamp: SystemTime,
    /// Wall-clock time of its last failure (`event.end`).
    pub last: SystemTime,
    /// When the document is made.
    pub created: SystemTime,
    /// The failing process's memory cgroup.
    pub memcg_path: Option<String>,
    /// The failing process's cgroup on the unified (v2) hierarchy.
    pub cgroup_path: Option<String>,
    /// What the container runtime recorded about the process's container.
    pub container_metadata: Option<ContainerMetadata>,
    /// This node's name, for `kubernetes.node.name`.
    pub node_name: Option<String>,
}

/// Shapes the `memory_allocation_failed` document; no I/O.
pub fn alloc_failure_document(
    failures: &AllocFailures,
    host: &HostInfo,
    context: AllocFailureContext,
) -> Document {
    let window_ms = context.window_ms;
    let syscall = failures.syscall.name();
    let page_alloc = failures.syscall == AllocSyscall::PageAlloc;
    // Page allocations in interrupt context belong to no process, nor
    // does the sum of a cgroup's other processes.
    let in_process = failures.pid != 0;
    let who = match (in_process, failures.other_processes) {
        (true, _) => format!(
            "{}[{}]",
            failures.comm.as_deref().unwrap_or("?"),
            failures.pid
        ),
        (false, Some(0)) => "processes of its cgroup".to_owned(),
        (false, Some(told)) => format!("other processes of its cgroup (at least {told})"),
        (false, None) => "interrupt context".to_owned(),
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
    let container = container_of([
        context.memcg_path.as_deref(),
        context.cgroup_path.as_deref(),
    ]);
    let (container, kubernetes) = container_fields(
        container,
        context.container_metadata.as_ref(),
        context.node_name.as_deref(),
        host,
    );
    let who_id = match failures.other_processes {
        Some(_) => format!("memcg{}", failures.memcg_id.unwrap_or(0)),
        None => failures.pid.to_string(),
    };
    let mut event = Event::new(
        format!(
            "{}-{}-{who_id}-{syscall}",
            host.boot_id, failures.first_boot_ns
        ),
        Action::MemoryAllocationFailed,
        "process",
        "info",
        context.created,
    );
    event.outcome = Some("failure");
    event.start = Some(rfc3339(context.timestamp));
    event.end = Some(rfc3339(context.last));
    Document {
        timestamp: rfc3339(context.timestamp),
        message: one_line(&message),
        event,
        host: host.into(),
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
                other_processes: failures.other_processes,
                ..OomAlloc::default()
            }),
            ..Oom::default()
        }),
        error: Some(ErrorFields { code: "ENOMEM" }),
    }
}
