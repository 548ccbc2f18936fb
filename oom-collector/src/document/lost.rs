//! The `events_lost` document: kernel events that never reached the
//! collector, so a gap shows instead of passing silently.

use std::time::SystemTime;

use super::{rfc3339, Action, Document, Ecs, Event, Kubernetes, KubernetesName, Oom, OomLost};
use crate::host::HostInfo;

/// What one `events_lost` document reports.
#[derive(Clone, Debug)]
pub struct LostContext {
    /// Events the kernel could not deliver.
    pub count: u64,
    /// Why, as `oom.lost.reason` (`ring_buffer_full`, ...).
    pub reason: &'static str,
    /// CLOCK_BOOTTIME when the loss was noticed, in nanoseconds.
    pub boot_ns: u64,
    /// Wall-clock time of `boot_ns`.
    pub timestamp: SystemTime,
    /// When the document is made.
    pub created: SystemTime,
}

/// Shapes the `events_lost` document; no I/O.
pub fn lost_document(host: &HostInfo, context: LostContext) -> Document {
    let LostContext {
        count,
        reason,
        boot_ns,
        timestamp,
        created,
    } = context;
    Document {
        timestamp: rfc3339(timestamp),
        message: format!(
            "{count} OOM event(s) lost in the kernel ({reason}); \
             consider a larger --ring-buffer-bytes"
        ),
        event: Event::new(
            format!("{}-{}-lost", host.boot_id, boot_ns),
            Action::EventsLost,
            "host",
            "info",
            created,
        ),
        host: host.into(),
        ecs: Ecs::default(),
        process: None,
        container: None,
        kubernetes: host.kubernetes_node.as_ref().map(|name| Kubernetes {
            node: Some(KubernetesName { name: name.clone() }),
            ..Kubernetes::default()
        }),
        oom: Some(Oom {
            lost: Some(OomLost { count, reason }),
            ..Oom::default()
        }),
        error: None,
    }
}
