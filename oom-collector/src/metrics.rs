//! Prometheus metrics (`--metrics-addr`, off by default): counters derived
//! from the documents the collector writes, and a readiness endpoint.
//!
//! - `oom_kills_total{namespace,pod,container,constraint}`
//! - `oom_allocation_failures_total{namespace,pod,syscall}` (by failures,
//!   not by lines)
//! - `oom_events_lost_total{reason}`
//! - `oom_hook_active{hook}`: 1 when attached, 0 when not
//!
//! `GET /metrics` serves them in the Prometheus text format; `GET /ready`
//! answers 200 once the required hook (`tracepoint/oom/mark_victim`) is
//! attached and 503 otherwise, for a readiness probe.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    document::{Action, Document, Oom},
    loader::{self, HookStatus},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KillLabels {
    namespace: String,
    pod: String,
    container: String,
    constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocLabels {
    namespace: String,
    pod: String,
    syscall: String,
}

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
    kills: Family<KillLabels, Counter>,
    alloc_failures: Family<AllocLabels, Counter>,
    lost: Family<LostLabels, Counter>,
    hooks: Family<HookLabels, Gauge>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oom");
        let kills = Family::<KillLabels, Counter>::default();
        let alloc_failures = Family::<AllocLabels, Counter>::default();
        let lost = Family::<LostLabels, Counter>::default();
        let hooks = Family::<HookLabels, Gauge>::default();
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
        Self {
            registry,
            kills,
            alloc_failures,
            lost,
            hooks,
            ready: AtomicBool::new(false),
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
                    namespace,
                    pod,
                    container: kubernetes
                        .and_then(|k| k.container.as_ref())
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    constraint: oom
                        .and_then(|o| o.constraint)
                        .unwrap_or_default()
                        .to_owned(),
                };
                self.kills.get_or_create(&labels).inc();
            }
            Action::MemoryAllocationFailed => {
                let alloc = oom.and_then(|o| o.alloc.as_ref());
                let labels = AllocLabels {
                    namespace,
                    pod,
                    syscall: alloc
                        .and_then(|a| a.syscall)
                        .unwrap_or("page_alloc")
                        .to_owned(),
                };
                let count = alloc.and_then(|a| a.count).unwrap_or(0);
                self.alloc_failures.get_or_create(&labels).inc_by(count);
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
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on --metrics-addr {addr}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `addr` now (so a bad address fails at start-up) and serves
/// `/metrics` and `/ready` on the runtime from then on.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    info!(%addr, "serving /metrics and /ready");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "metrics: cannot accept a connection");
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn respond<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/ready" if metrics.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the OOM tracepoint is not attached\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /ready\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
