//! The collector's pipeline: ring buffer -> decode -> enrich -> deliver.
//!
//! [`Pipeline::start`] loads and attaches the kernel programs and prepares
//! enrichment; [`Pipeline::run`] moves records along until told to stop,
//! then drains what the kernel still holds, so a SIGTERM loses nothing that
//! reached the ring buffer.
//!
//! What the sink could neither write nor keep is counted and reported like
//! the kernel's own losses: an `events_lost` document with the reason
//! `output_failed`, at most once per [`STATS_INTERVAL`], and once more
//! for the lines an output still held at exit. When the last
//! output is closed by its reader the collector stops: nothing is left to
//! write to.

use std::{future::Future, io, pin::Pin, time::Duration};

use tracing::{debug, info, warn};

use crate::{
    alloc_failures::AllocFailureTable,
    decode::{decode, KernelEvent},
    document::Document,
    enrich::{cgroup::CgroupMounts, EnrichOptions, Enricher},
    host::{boot_ns_now, HostInfo},
    loader::{self, HookStatus, LoadError, LoadOptions, ProgramBarrier},
    sink::{Receipt, Receipts, SinkError},
    source::{KernelLog, KernelSource},
    tracefs::TracepointFormat,
};

/// How often the kernel's drop counters, and the outputs', are checked.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `oom.lost.reason` of events an output could neither take nor keep.
pub const OUTPUT_FAILED: &str = "output_failed";

/// The log target of each kill's timing, at debug level: the kernel's time
/// of the kill and when the collector was woken, had read and decoded the
/// record, had enriched it and had written the line, all in nanoseconds of
/// CLOCK_BOOTTIME (the kernel's clock for the kill). `cargo xtask bench`
/// asks for it with `--log-level info,oom_collector::latency=debug` to
/// break a kill's latency down by step; the lines written are unchanged.
pub const LATENCY_LOG: &str = "oom_collector::latency";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "this kernel (before 5.11) charges eBPF maps to RLIMIT_MEMLOCK, which is {limit_kib} KiB \
         here and could not be raised: grant CAP_SYS_RESOURCE (the DaemonSet adds it for these \
         kernels) or raise the limit where the collector starts (`ulimit -l unlimited`, \
         LimitMEMLOCK=infinity for a systemd unit or the container runtime's)"
    )]
    MemlockTooLow {
        limit_kib: u64,
        #[source]
        source: LoadError,
    },
    #[error("cannot read host facts ({0})")]
    Host(#[source] io::Error),
    #[error("cannot watch the kernel's ring buffer")]
    Poll(#[source] io::Error),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Whether delivery wants more events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

pub struct Pipeline {
    source: KernelSource,
    alloc_failures: AllocFailureTable,
    alloc_window: Duration,
    kernel_log: KernelLog,
    enricher: Enricher,
    mark_victim: TracepointFormat,
    hooks: Vec<HookStatus>,
    output_losses: OutputLosses,
    /// With `--pin-dir`: the sink's receipts, so that a record leaves
    /// the kept buffer only once its line is written.
    receipts: Option<Receipts>,
    /// The receipt of the first record in the buffer, whose line is out
    /// but was not written when the wait for it ended.
    unwritten: Option<Receipt>,
    /// The stop signal has come (while waiting for a receipt).
    stopping: bool,
    /// Told each time round the loop, and each second while a kill waits
    /// for its line to be written (liveness).
    progress: Option<Box<dyn Fn()>>,
    /// The links of the hooks not pinned: dropping them detaches them.
    links: loader::Links,
    barrier: ProgramBarrier,
    /// With `--pin-dir`, the lock that keeps a second collector off it.
    _pin_root: Option<loader::pin::PinRoot>,
    /// Owns the programs; `None` when the hooks were taken up from a
    /// pinned set.
    _ebpf: Option<aya::Ebpf>,
}

/// Everything a pipeline is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    pub load: LoadOptions,
    pub enrich: EnrichOptions,
    /// Allocation failures are folded into one event per process and
    /// system call per window of this length.
    pub alloc_window: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            load: LoadOptions::default(),
            enrich: EnrichOptions::default(),
            alloc_window: DEFAULT_ALLOC_WINDOW,
        }
    }
}

/// How long, at stop, the final drain waits for the outputs to write the
/// lines of kept records (`--pin-dir`); records not written by then stay
/// kept for the next start.
const WRITTEN_AT_STOP: Duration = Duration::from_secs(1);

/// See `--enomem-window`.
pub const DEFAULT_ALLOC_WINDOW: Duration = Duration::from_secs(1);

impl Pipeline {
    pub fn start(options: &PipelineOptions) -> Result<Self, PipelineError> {
        let memlock_kib = raise_memlock_limit();
        let host = HostInfo::read().map_err(PipelineError::Host)?;
        let mounts = CgroupMounts::discover().unwrap_or_else(|error| {
            warn!(%error, "cannot read /proc/self/mountinfo; cgroup paths will be missing");
            CgroupMounts::default()
        });
        if mounts.memory.is_none() {
            warn!("no memory cgroup hierarchy mounted; memory cgroup paths and limits will be missing");
        }
        let mut loaded =
            loader::load(&options.load).map_err(|error| match (error, memlock_kib) {
                (error @ LoadError::Load(_), Some(limit_kib)) => PipelineError::MemlockTooLow {
                    limit_kib,
                    source: error,
                },
                (error, _) => error.into(),
            })?;
        let kernel_log = match loaded.ebpf.as_mut().map(aya_log::EbpfLogger::init) {
            Some(Ok(logger)) => Some(logger),
            Some(Err(error)) => {
                warn!(%error, "kernel-side diagnostics are unavailable");
                None
            }
            None => None,
        };
        release_startup_heap();
        let source = KernelSource::new(
            loaded.events,
            loaded.stats,
            loaded.program_runs,
            loaded.losses_reported,
        )
        .map_err(PipelineError::Poll)?;
        let kernel_log = KernelLog::new(kernel_log).map_err(PipelineError::Poll)?;
        Ok(Self {
            source,
            alloc_failures: AllocFailureTable::new(
                loaded.alloc_failures,
                loaded.alloc_failure_cgroups,
                loaded.config,
                loaded.barrier.clone(),
            ),
            alloc_window: options.alloc_window,
            kernel_log,
            enricher: Enricher::new(
                host,
                mounts,
                &options.enrich,
                loader::kill_hooks_active(&loaded.hooks),
            ),
            mark_victim: loaded.mark_victim,
            hooks: loaded.hooks,
            output_losses: OutputLosses::default(),
            _ebpf: loaded.ebpf,
            receipts: None,
            unwritten: None,
            stopping: false,
            progress: None,
            links: loaded.links,
            barrier: loaded.barrier,
            _pin_root: loaded.pin_root,
        })
    }

    /// With a kept ring buffer (`--pin-dir`): each record leaves it only
    /// once some output has written its line, so a collector killed while
    /// every output is stalled or failing loses no kill; the next start
    /// delivers it (a line an output wrote in the very last moment may
    /// then come twice). Without, a record leaves once its line is handed
    /// to the outputs, whose backlogs are bounded and counted.
    pub fn hold_records_until_written(&mut self, receipts: Receipts) {
        if self._pin_root.is_some() {
            self.receipts = Some(receipts);
        }
    }

    /// `beat` is called each time the pipeline comes round its loop (at
    /// least once a second while it runs).
    pub fn on_progress(&mut self, beat: impl Fn() + 'static) {
        self.progress = Some(Box::new(beat));
    }

    fn progressed(&self) {
        if let Some(beat) = &self.progress {
            beat();
        }
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    pub fn host(&self) -> &HostInfo {
        self.enricher.host()
    }

    /// Delivers documents until `stop` completes or `deliver` says
    /// [`Flow::Stop`]; then stops the hooks, drains the ring buffer
    /// (delivering what is there) and reports lost events one last time.
    pub async fn run<D>(
        &mut self,
        stop: impl Future<Output = ()>,
        mut deliver: D,
    ) -> Result<(), PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        let mut alloc_tick = tokio::time::interval(self.alloc_window);
        alloc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut read_failures_reported = 0;
        tokio::pin!(stop);
        while !self.stopping {
            self.progressed();
            tokio::select! {
                () = &mut stop => break,
                polled = self.source.readable() => {
                    polled.map_err(PipelineError::Poll)?;
                    let woken_ns = boot_ns_now();
                    if self.deliver_records(&mut deliver, woken_ns, stop.as_mut()).await?
                        == Flow::Stop
                    {
                        return Ok(());
                    }
                }
                log = self.kernel_log.forward() => log.map_err(PipelineError::Poll)?,
                _ = alloc_tick.tick() => {
                    if self.report_alloc_failures(&mut deliver).await? == Flow::Stop {
                        return Ok(());
                    }
                }
                _ = stats_tick.tick() => {
                    if self.report_lost(&mut deliver)? == Flow::Stop {
                        return Ok(());
                    }
                    read_failures_reported = self.warn_read_failures(read_failures_reported);
                }
            }
        }
        self.stop_hooks().await;
        let written_by = tokio::time::sleep(WRITTEN_AT_STOP);
        tokio::pin!(written_by);
        if self
            .deliver_records(&mut deliver, boot_ns_now(), written_by)
            .await?
            == Flow::Stop
        {
            return Ok(());
        }
        debug!("drained the ring buffer");
        if self.report_lost(&mut deliver)? == Flow::Stop {
            return Ok(());
        }
        // Two windows' worth: the one being counted and the one before.
        self.report_alloc_failures(&mut deliver).await?;
        self.report_alloc_failures(&mut deliver).await.map(drop)
    }

    /// Detaches the hooks this process attached, then waits until every
    /// run of their programs that had begun has returned: the drain that
    /// follows takes every record they wrote, and no kill is recorded into
    /// a buffer nobody will read again (while the outputs are flushed, say).
    /// Kept hooks (`--pin-dir`) stay attached: what they record waits in
    /// the kept buffer for the next start.
    async fn stop_hooks(&mut self) {
        if self.links.is_empty() {
            return;
        }
        drop(std::mem::take(&mut self.links));
        match self.barrier.wait().await {
            Ok(waited) => debug!(?waited, "hooks detached; their last runs have returned"),
            Err(error) => warn!(
                %error,
                "cannot wait for the hooks' last runs: a kill in the last moments may be missed"
            ),
        }
    }

    /// Decodes, enriches and delivers the ring buffer's records, each
    /// before it leaves the buffer. Only kills come through the buffer:
    /// the allocation failures counted so far are delivered first, so they
    /// come before the kill they led to, as they happened. `woken_ns`: when
    /// the ring buffer woke the collector, for [`LATENCY_LOG`].
    ///
    /// With receipts (`--pin-dir`) a record leaves the buffer only once an
    /// output has written its line; waiting for that ends when `until`
    /// does, and the record stays in the buffer, for the final drain or the
    /// next start, its line handed over once only.
    async fn deliver_records<D>(
        &mut self,
        deliver: &mut D,
        woken_ns: u64,
        mut until: Pin<&mut (dyn Future<Output = ()> + '_)>,
    ) -> Result<Flow, PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        if self.report_alloc_failures(deliver).await? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        let outcome = loop {
            let Some(record) = self.source.next_record() else {
                break Ok(Flow::Continue);
            };
            // The line of the record first in the buffer may be out already,
            // waiting to be written.
            let receipt = match self.unwritten.take() {
                Some(receipt) => Some(receipt),
                None => {
                    let kill = match decode(&record, &self.mark_victim) {
                        Ok(KernelEvent::OomKill(kill)) => kill,
                        Ok(KernelEvent::MemcgStats(stats)) => {
                            self.enricher.stats_at_oom(stats);
                            continue;
                        }
                        Err(error) => {
                            warn!(%error, "skipping a ring-buffer record the collector cannot read");
                            continue;
                        }
                    };
                    let decoded_ns = boot_ns_now();
                    let document = self.enricher.oom_kill(&kill);
                    let enriched_ns = boot_ns_now();
                    let delivered = deliver(document);
                    let written_ns = boot_ns_now();
                    info!(pid = kill.victim.tid, "OOM kill");
                    debug!(
                        target: LATENCY_LOG,
                        pid = kill.victim.tid,
                        kernel_ns = kill.boot_ns,
                        woken_ns,
                        decoded_ns,
                        enriched_ns,
                        written_ns,
                        "kill timed"
                    );
                    match self.output_losses.settle(delivered) {
                        Ok(Flow::Continue) => {}
                        other => break other,
                    }
                    self.receipts.as_ref().and_then(Receipts::take)
                }
            };
            let Some(mut receipt) = receipt else {
                continue;
            };
            let settled = loop {
                tokio::select! {
                    // A written line wins over a stop that came meanwhile.
                    biased;
                    () = receipt.settled() => break true,
                    () = until.as_mut() => break false,
                    () = tokio::time::sleep(STATS_INTERVAL) => {
                        if let Some(beat) = &self.progress {
                            beat();
                        }
                    }
                }
            };
            if !settled {
                // Unwritten yet: the record stays first in the buffer.
                std::mem::forget(record);
                self.unwritten = Some(receipt);
                self.stopping = true;
                break Ok(Flow::Continue);
            }
        };
        self.source.records_taken();
        outcome
    }

    /// Ends the allocation-failure window and delivers its tallies.
    async fn report_alloc_failures<D>(&mut self, deliver: &mut D) -> Result<Flow, PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        let window = match self.alloc_failures.drain().await {
            Ok(window) => window,
            Err(error) => {
                warn!(%error, "cannot read the kernel's allocation-failure table");
                return Ok(Flow::Continue);
            }
        };
        for tally in &window.tallies {
            let delivered = deliver(self.enricher.alloc_failures(tally, window.duration_ms()));
            if self.output_losses.settle(delivered)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Reports what the kernel, then the outputs, lost since last time.
    fn report_lost<D>(&mut self, deliver: &mut D) -> Result<Flow, PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        match self.source.newly_lost() {
            Ok(losses) => {
                for (lost, reason) in losses {
                    warn!(lost, reason, "the kernel could not hand over some events");
                    let delivered = deliver(self.enricher.events_lost(lost, reason, boot_ns_now()));
                    if self.output_losses.settle(delivered)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
            }
            Err(error) => warn!(%error, "cannot read the kernel's drop counters"),
        }
        let OutputLosses { count, outputs } = std::mem::take(&mut self.output_losses);
        if count == 0 {
            return Ok(Flow::Continue);
        }
        let outputs = outputs.join(", ");
        warn!(
            lost = count,
            reason = OUTPUT_FAILED,
            %outputs,
            "some events could neither be written to an output nor kept for it"
        );
        match deliver(self.output_failed_report(count, &outputs)) {
            // Where this report is dropped too, its count is in the log and
            // the metrics already; counting it again would report forever.
            Err(SinkError::Dropped { .. }) => Ok(Flow::Continue),
            delivered => self.output_losses.settle(delivered),
        }
    }

    /// The `events_lost` document for `count` events `outputs` could
    /// neither take nor keep: while running, and those still waiting at
    /// exit.
    pub fn output_failed_report(&self, count: u64, outputs: &str) -> Document {
        let mut document = self
            .enricher
            .events_lost(count, OUTPUT_FAILED, boot_ns_now());
        document.message = format!(
            "{count} OOM event(s) could not be written to {outputs} and were dropped \
             ({OUTPUT_FAILED}); the collector's log says why"
        );
        document
    }

    fn warn_read_failures(&self, reported: u64) -> u64 {
        match self.source.read_failures() {
            Ok(failures) if failures > reported => {
                warn!(
                    failures = failures - reported,
                    "the kernel could not read some victims' task fields; those events lack them"
                );
                failures
            }
            _ => reported,
        }
    }
}

/// Events some output could neither take nor keep since the last report,
/// and which outputs.
#[derive(Debug, Default)]
struct OutputLosses {
    count: u64,
    outputs: Vec<String>,
}

impl OutputLosses {
    /// What the pipeline does after the sink's answer: a line some output
    /// dropped is counted; the last output closed by its reader stops it.
    fn settle(&mut self, delivered: Result<Flow, SinkError>) -> Result<Flow, PipelineError> {
        match delivered {
            Err(SinkError::Dropped { outputs }) => {
                self.count += 1;
                for output in outputs {
                    if !self.outputs.contains(&output) {
                        self.outputs.push(output);
                    }
                }
                Ok(Flow::Continue)
            }
            Err(SinkError::Closed { output }) => {
                info!("{output} was closed by its reader; stopping");
                Ok(Flow::Stop)
            }
            delivered => Ok(delivered?),
        }
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones charge
/// the memory cgroup and ignore the limit. Raising it needs
/// CAP_SYS_RESOURCE, which a least-privilege deployment does not grant.
///
/// Returns the limit, in KiB, when it could not be raised on such a kernel.
fn raise_memlock_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    let error = setrlimit(Resource::Memlock, unlimited).err()?;
    let needs_it = HostInfo::read()
        .ok()
        .and_then(|host| host.kernel_version())
        .is_some_and(|version| version < (5, 11));
    if !needs_it {
        debug!(%error, "cannot raise RLIMIT_MEMLOCK (not needed on kernels >= 5.11)");
        return None;
    }
    let limit_kib = getrlimit(Resource::Memlock).current.unwrap_or(u64::MAX) / 1024;
    warn!(%error, limit_kib, "cannot raise RLIMIT_MEMLOCK; loading may fail on this kernel (< 5.11)");
    Some(limit_kib)
}

/// Parsing the kernel's BTF (twice: for offsets, and by aya for the BTF
/// tracepoint) takes some 25 MiB of short-lived heap. glibc keeps freed heap
/// pages mapped, which would leave a node agent idling at 32 MiB resident
/// instead of 6; hand them back once loading is done.
fn release_startup_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_outputs_dropped_are_counted_once_each_and_the_last_output_closed_stops() {
        let mut losses = OutputLosses::default();
        assert_eq!(losses.settle(Ok(Flow::Continue)).ok(), Some(Flow::Continue));
        for outputs in [
            vec!["/a".to_owned()],
            vec!["/a".to_owned(), "/b".to_owned()],
        ] {
            let dropped = Err(SinkError::Dropped { outputs });
            assert_eq!(losses.settle(dropped).ok(), Some(Flow::Continue));
        }
        assert_eq!(losses.count, 2, "one per event, however many outputs");
        assert_eq!(losses.outputs, ["/a", "/b"]);
        let closed = Err(SinkError::Closed {
            output: "stdout".into(),
        });
        assert_eq!(losses.settle(closed).ok(), Some(Flow::Stop));
    }
}
