//! The HTTP server behind `--metrics-addr`, built to stay up when any pod
//! that can reach the port floods it (the DaemonSet listens on every
//! address of the node).
//!
//! - At most 64 connections are open at once (a quarter of the open-file
//!   limit, if that is less). At the limit the server stops accepting:
//!   further connections wait in the kernel's listen queue, costing the
//!   collector neither a file descriptor nor CPU.
//! - A request's headers must arrive within 5 seconds, which also bounds
//!   how long an idle keep-alive connection is kept; a connection is
//!   closed after 30 seconds whatever it is doing, so a client that
//!   trickles bytes or never reads the response holds its slot no longer.
//! - An `accept` that fails for want of resources (file descriptors,
//!   memory) is retried after a growing pause, logged once per run of
//!   failures, rather than at once in a loop that would take a whole CPU.
//!
//! Keeping the connections well under the open-file limit, and raising the
//! soft open-file limit to the hard one when the server starts, leaves the
//! collector's own files (outputs, cgroupfs, runtime metadata) room to open
//! while the port is full.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, info, warn};

use super::Metrics;

/// What one client may take of the server.
#[derive(Clone, Copy, Debug)]
struct ServerLimits {
    /// Connections open at once: a Prometheus server or two and a few
    /// probes need a handful.
    connections: usize,
    /// For a request's headers, and for the next request on a kept-alive
    /// connection.
    header_timeout: Duration,
    /// For everything one connection does.
    deadline: Duration,
}

impl ServerLimits {
    /// The limits for a process allowed `open_files` file descriptors.
    fn for_open_files(open_files: u64) -> Self {
        let quarter = usize::try_from(open_files / 4).unwrap_or(usize::MAX);
        Self {
            connections: quarter.clamp(1, 64),
            header_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }
}

/// The first pause after an `accept` failed, doubled at each failure in a
/// row up to [`ACCEPT_PAUSE_MAX`].
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on --metrics-addr {addr}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: io::Error,
}

/// Binds `addr` now (so a bad address fails at start-up) and serves
/// `/metrics` and `/ready` on the runtime from then on.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), BindError> {
    let open_files = raise_open_file_limit();
    let limits = ServerLimits::for_open_files(open_files);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    info!(
        %addr,
        connections = limits.connections,
        open_files,
        "serving /metrics, /ready and /healthz"
    );
    tokio::spawn(accept_loop(listener, metrics, limits));
    Ok(())
}

/// Raises the soft open-file limit to the hard one (often 1,024 against
/// 524,288 under systemd) and returns the limit now in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(error) => debug!(%error, "cannot raise the open-file limit"),
        }
    }
    // No limit at all: as good as plenty.
    limit.current.unwrap_or(u64::MAX)
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, limits: ServerLimits) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut failures = AcceptFailures::default();
    loop {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures.recovered();
                stream
            }
            Err(error) => {
                if let Some(pause) = failures.pause_after(&error) {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            serve_connection(stream, metrics, limits).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, metrics: Arc<Metrics>, limits: ServerLimits) {
    let service = service_fn(move |request| {
        let metrics = Arc::clone(&metrics);
        async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    // Dropping the connection at the deadline closes it.
    let _ = tokio::time::timeout(limits.deadline, connection).await;
}

/// A run of failed `accept`s: how long to pause, and what was logged.
#[derive(Debug, Default)]
struct AcceptFailures {
    in_a_row: u64,
    pause: Duration,
}

impl AcceptFailures {
    /// The pause before accepting again, if any. A connection that failed
    /// on its own (reset before it was accepted) says nothing about the
    /// server and is skipped at once; anything else (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM) lasts until something is freed, so the pause
    /// grows with each failure in a row.
    fn pause_after(&mut self, error: &io::Error) -> Option<Duration> {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionReset | Interrupted
        ) {
            return None;
        }
        if self.in_a_row == 0 {
            warn!(
                %error,
                "metrics: cannot accept connections; pausing until resources are freed"
            );
        }
        self.in_a_row += 1;
        self.pause = (self.pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
        Some(self.pause)
    }

    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            info!(
                failures = self.in_a_row,
                "metrics: accepting connections again"
            );
        }
        *self = Self::default();
    }
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
        "/healthz" => match metrics.health().check() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(stuck) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{stuck}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /ready or /healthz\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_for_want_of_descriptors_pause_longer_each_time_up_to_a_second() {
        let mut failures = AcceptFailures::default();
        let out_of_files = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..9)
            .map(|_| failures.pause_after(&out_of_files).expect("a pause"))
            .collect();
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN, "{pauses:?}");
        assert!(
            pauses.windows(2).all(|pair| pair[1] >= pair[0]),
            "{pauses:?}"
        );
        assert_eq!(pauses[8], ACCEPT_PAUSE_MAX, "{pauses:?}");

        failures.recovered();
        assert_eq!(
            failures.pause_after(&out_of_files),
            Some(ACCEPT_PAUSE_MIN),
            "an accept that worked starts the pauses again"
        );
    }

    #[test]
    fn a_connection_reset_before_it_was_accepted_is_skipped_without_a_pause() {
        let mut failures = AcceptFailures::default();
        let reset = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(failures.pause_after(&reset), None);
    }

    #[test]
    fn the_connection_limit_stays_a_quarter_of_the_open_files_or_64() {
        assert_eq!(ServerLimits::for_open_files(1_024).connections, 64);
        assert_eq!(ServerLimits::for_open_files(100).connections, 25);
        assert_eq!(ServerLimits::for_open_files(2).connections, 1);
        assert_eq!(ServerLimits::for_open_files(u64::MAX).connections, 64);
    }
}
