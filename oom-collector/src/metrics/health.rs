//! Liveness (`GET /healthz`): whether the collector is still doing its job,
//! so that a stuck one is restarted rather than left silent.
//!
//! Healthy while both hold:
//! - the pipeline has come round its loop within [`PIPELINE_BOUND`]: it
//!   polls the ring buffer, ends allocation-failure windows and reports
//!   losses at least once a second, so a gap that long means it is stuck;
//! - not every output has been blocked in one write for longer than
//!   `--healthz-output-stall` (a log pipe whose reader hangs, a disk that hangs). An
//!   output that fails with an error (a full disk) is retried and does not
//!   count: a restart would not fix it and would lose what waits in memory.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// How long the pipeline may go without coming round its loop.
pub const PIPELINE_BOUND: Duration = Duration::from_secs(30);

/// How long every output has been blocked in its current write; `None`
/// when some output is not blocked.
pub type OutputsBlocked = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to the pipeline's last round.
    pipeline_ms: AtomicU64,
    /// How long every output may be blocked in a write, and how to ask.
    outputs: OnceLock<(Duration, OutputsBlocked)>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            pipeline_ms: AtomicU64::new(0),
            outputs: OnceLock::new(),
        }
    }
}

impl Health {
    /// The pipeline came round its loop.
    pub fn pipeline_progressed(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.pipeline_ms.store(now, Ordering::Relaxed);
    }

    /// Where to ask how long the outputs have been blocked, and how long
    /// they may be; set once.
    pub fn watch_outputs(&self, bound: Duration, blocked: OutputsBlocked) {
        let _ = self.outputs.set((bound, blocked));
    }

    /// `Err` says what is stuck.
    pub fn check(&self) -> Result<(), String> {
        let since_round = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.pipeline_ms.load(Ordering::Relaxed),
        ));
        if since_round > PIPELINE_BOUND {
            return Err(format!(
                "the pipeline has not polled the ring buffer for {} s",
                since_round.as_secs()
            ));
        }
        let Some((bound, blocked)) = self.outputs.get() else {
            return Ok(());
        };
        match blocked() {
            Some(blocked) if blocked > *bound => Err(format!(
                "every output has been blocked in a write for {} s",
                blocked.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_outputs_make_it_unhealthy_but_not_one_that_still_writes() {
        let health = Health::default();
        health.pipeline_progressed();
        assert_eq!(health.check(), Ok(()));
        let bound = Duration::from_secs(120);
        health.watch_outputs(
            bound,
            Box::new(move || Some(bound + Duration::from_secs(1))),
        );
        assert!(health.check().is_err_and(|why| why.contains("blocked")));

        let health = Health::default();
        health.pipeline_progressed();
        health.watch_outputs(Duration::from_secs(120), Box::new(|| None));
        assert_eq!(health.check(), Ok(()));
    }
}
