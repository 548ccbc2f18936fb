//! Prometheus metrics (`--metrics-addr`, off by default): counters derived
//! from the documents the collector writes, and a readiness endpoint.
//!
//! - `oom_kills_total{k8s_namespace,k8s_pod,k8s_container,constraint}`
//! - `oom_allocation_failures_total{k8s_namespace,k8s_pod,syscall}` (by
//!   failures, not by lines)
//! - `oom_events_lost_total{reason}`
//! - `oom_hook_active{hook}`: 1 when attached, 0 when not
//! - `oom_output_write_errors_total{output}`: writes an output refused (a
//!   full disk, ...), each retried; `oom_output_lines_dropped_total{output}`:
//!   lines an output could not keep in memory while it failed or stalled
//! - `oom_collector_build_info{version}`: 1
//!
//! The pod's labels are `k8s_*`, not `namespace`, `pod` and `container`:
//! a Prometheus scraping the collector's own pod sets those to the
//! collector's, and would rename the victim's to `exported_*`.
//!
//! - `oom_metric_series_dropped_total{metric,reason}`: label sets of the
//!   first two forgotten, see [`series`]
//!
//! [`server`] serves them: `GET /metrics` in the Prometheus text format;
//! `GET /ready` answers 200 once the required hook
//! (`tracepoint/oom/mark_victim`) is attached and 503 otherwise, for a
//! readiness probe; `GET /healthz` answers 200 while the collector makes
//! progress and 503 with what is stuck otherwise ([`health`]), for a
//! liveness probe.

pub mod health;
pub mod series;
pub mod server;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    OnceLock,
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

pub use self::server::{serve, BindError};
use self::{
    health::Health,
    series::{BoundedCounters, SeriesLimits},
};
use crate::{
    document::{Action, Document, Oom},
    loader::{self, HookStatus},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KillLabels {
    k8s_namespace: String,
    k8s_pod: String,
    k8s_container: String,
    constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocLabels {
    k8s_namespace: String,
    k8s_pod: String,
    syscall: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    output: String,
}

/// Per output: write errors and lines dropped so far.
pub type OutputCounts = Box<dyn Fn() -> Vec<(String, u64, u64)> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
}

/// The counters, shared by the pipeline (which counts) and the server.
pub struct Metrics {
    registry: Registry,
    kills: BoundedCounters<KillLabels>,
    alloc_failures: BoundedCounters<AllocLabels>,
    lost: Family<LostLabels, Counter>,
    hooks: Family<HookLabels, Gauge>,
    ready: AtomicBool,
    health: Health,
    write_errors: Family<OutputLabels, Counter>,
    lines_dropped: Family<OutputLabels, Counter>,
    outputs: OnceLock<OutputCounts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let limits = SeriesLimits::default();
        let mut registry = Registry::with_prefix("oom");
        let kills = Family::<KillLabels, Counter>::default();
        let alloc_failures = Family::<AllocLabels, Counter>::default();
        let lost = Family::<LostLabels, Counter>::default();
        let hooks = Family::<HookLabels, Gauge>::default();
        let dropped = Family::default();
        registry.register(
            "kills",
            "OOM kills, by the victim's namespace, pod, container and the OOM's constraint",
            kills.clone(),
        );
        registry.register(
            "allocation_failures",
            "Memory requests refused with ENOMEM, by namespace, pod and system call",
            alloc_failures.clone(),
        );
        registry.register(
            "events_lost",
            "Kernel events that never reached the collector, by reason",
            lost.clone(),
        );
        registry.register(
            "hook_active",
            "1 when the kernel hook is attached",
            hooks.clone(),
        );
        let write_errors = Family::<OutputLabels, Counter>::default();
        let lines_dropped = Family::<OutputLabels, Counter>::default();
        registry.register(
            "output_write_errors",
            "Writes an output refused (a full disk, ...); each is retried",
            write_errors.clone(),
        );
        registry.register(
            "output_lines_dropped",
            "Lines an output could not keep in memory while it failed or stalled",
            lines_dropped.clone(),
        );
        registry.register(
            "collector_build",
            "The collector's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "metric_series_dropped",
            "Label sets removed from a per-pod counter, idle too long or past the limit",
            dropped.clone(),
        );
        Self {
            registry,
            kills: BoundedCounters::new(kills, "oom_kills_total", dropped.clone(), limits),
            alloc_failures: BoundedCounters::new(
                alloc_failures,
                "oom_allocation_failures_total",
                dropped,
                limits,
            ),
            lost,
            hooks,
            ready: AtomicBool::new(false),
            health: Health::default(),
            write_errors,
            lines_dropped,
            outputs: OnceLock::new(),
        }
    }

    /// Records which hooks are attached; ready when the required one is.
    pub fn set_hooks(&self, hooks: &[HookStatus]) {
        for hook in hooks {
            self.hooks
                .get_or_create(&HookLabels {
                    hook: hook.name.clone(),
                })
                .set(i64::from(hook.state.is_ok()));
        }
        self.ready
            .store(loader::required_active(hooks), Ordering::Relaxed);
    }

    /// Counts what one written document says.
    pub fn observe(&self, document: &Document) {
        let kubernetes = document.kubernetes.as_ref();
        let namespace = kubernetes
            .and_then(|k| k.namespace.clone())
            .unwrap_or_default();
        let pod = kubernetes
            .and_then(|k| k.pod.as_ref())
            .and_then(|p| p.name.clone().or_else(|| p.uid.clone()))
            .unwrap_or_default();
        let oom = document.oom.as_ref();
        match document.kind() {
            // An exiting victim marked to free its memory was not killed.
            Action::OomKill if !oom.is_some_and(Oom::victim_exiting) => {
                let labels = KillLabels {
                    k8s_namespace: namespace,
                    k8s_pod: pod,
                    k8s_container: kubernetes
                        .and_then(|k| k.container.as_ref())
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    constraint: oom
                        .and_then(|o| o.constraint)
                        .unwrap_or_default()
                        .to_owned(),
                };
                self.kills.inc_by(&labels, 1);
            }
            Action::MemoryAllocationFailed => {
                let alloc = oom.and_then(|o| o.alloc.as_ref());
                let labels = AllocLabels {
                    k8s_namespace: namespace,
                    k8s_pod: pod,
                    syscall: alloc
                        .and_then(|a| a.syscall)
                        .unwrap_or("page_alloc")
                        .to_owned(),
                };
                let count = alloc.and_then(|a| a.count).unwrap_or(0);
                self.alloc_failures.inc_by(&labels, count);
            }
            Action::EventsLost => {
                if let Some(lost) = oom.and_then(|o| o.lost.as_ref()) {
                    self.lost
                        .get_or_create(&LostLabels {
                            reason: lost.reason.to_owned(),
                        })
                        .inc_by(lost.count);
                }
            }
            // Marked to free its memory, not killed: counted nowhere.
            Action::OomKill => {}
        }
    }

    /// The metrics in the Prometheus text format.
    /// Where to read the outputs' write errors and dropped lines; set once.
    pub fn watch_output_counts(&self, counts: OutputCounts) {
        let _ = self.outputs.set(counts);
    }

    pub fn render(&self) -> String {
        if let Some(counts) = self.outputs.get() {
            for (output, errors, dropped) in counts() {
                let labels = OutputLabels { output };
                for (family, total) in
                    [(&self.write_errors, errors), (&self.lines_dropped, dropped)]
                {
                    let counter = family.get_or_create(&labels);
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
            }
        }
        self.kills.expire_idle();
        self.alloc_failures.expire_idle();
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }
}
