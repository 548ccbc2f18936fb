//! The collector's pipeline: ring buffer -> decode -> enrich -> deliver.
//!
//! [`Pipeline::start`] loads and attaches the kernel programs and prepares
//! enrichment; [`Pipeline::run`] moves records along until told to stop,
//! then drains what the kernel still holds, so a SIGTERM loses nothing that
//! reached the ring buffer.

use std::{future::Future, io, time::Duration};

use tracing::{debug, info, warn};

use crate::{
    alloc::AllocFailureTable,
    decode::{decode, Record},
    enrich::{cgroup::CgroupMounts, Enricher},
    host::{boot_ns_now, HostInfo},
    loader::{self, HookStatus, LoadError, LoadOptions},
    record::Document,
    sink::SinkError,
    source::{KernelLog, KernelSource},
    tracefs::TracepointFormat,
};

/// How often the kernel's drop counters are checked.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Load(#[from] LoadError),
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
    /// Owns the programs and the links not pinned: dropping it detaches
    /// them. `None` when the hooks were taken up from a pinned set.
    _ebpf: Option<aya::Ebpf>,
}

impl Pipeline {
    pub fn start(options: &LoadOptions) -> Result<Self, PipelineError> {
        raise_memlock_limit();
        let host = HostInfo::read().map_err(PipelineError::Host)?;
        let mounts = CgroupMounts::discover().unwrap_or_else(|error| {
            warn!(%error, "cannot read /proc/self/mountinfo; cgroup paths will be missing");
            CgroupMounts::default()
        });
        if mounts.memory.is_none() {
            warn!("no memory cgroup hierarchy mounted; memory cgroup paths and limits will be missing");
        }
        let mut loaded = loader::load(options)?;
        let kernel_log = match loaded.ebpf.as_mut().map(aya_log::EbpfLogger::init) {
            Some(Ok(logger)) => Some(logger),
            Some(Err(error)) => {
                warn!(%error, "kernel-side diagnostics are unavailable");
                None
            }
            None => None,
        };
        release_startup_heap();
        let source = KernelSource::new(loaded.events, loaded.stats, loaded.losses_reported)
            .map_err(PipelineError::Poll)?;
        let kernel_log = KernelLog::new(kernel_log).map_err(PipelineError::Poll)?;
        Ok(Self {
            source,
            alloc_failures: AllocFailureTable::new(loaded.alloc_failures, loaded.config),
            alloc_window: options.alloc_window,
            kernel_log,
            enricher: Enricher::new(host, mounts, &options.cmdline, options.runtime_dirs.clone()),
            mark_victim: loaded.mark_victim,
            hooks: loaded.hooks,
            _ebpf: loaded.ebpf,
        })
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    pub fn host(&self) -> &HostInfo {
        self.enricher.host()
    }

    /// Delivers documents until `stop` completes or `deliver` says
    /// [`Flow::Stop`], then drains the ring buffer (delivering what is
    /// there) and reports lost events one last time.
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
        loop {
            tokio::select! {
                () = &mut stop => break,
                polled = self.source.readable() => {
                    polled.map_err(PipelineError::Poll)?;
                    if self.deliver_records(&mut deliver).await? == Flow::Stop {
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
                    self.report_lost(&mut deliver)?;
                    read_failures_reported = self.warn_read_failures(read_failures_reported);
                }
            }
        }
        if self.deliver_records(&mut deliver).await? == Flow::Stop {
            return Ok(());
        }
        debug!("drained the ring buffer");
        self.report_lost(&mut deliver)?;
        // Two windows' worth: the one being counted and the one before.
        self.report_alloc_failures(&mut deliver).await?;
        self.report_alloc_failures(&mut deliver).await.map(drop)
    }

    /// Decodes, enriches and delivers the ring buffer's records, each
    /// before it leaves the buffer. Only kills come through the buffer:
    /// the allocation failures counted so far are delivered first, so they
    /// come before the kill they led to, as they happened.
    async fn deliver_records<D>(&mut self, deliver: &mut D) -> Result<Flow, PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        if self.report_alloc_failures(deliver).await? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        let (enricher, mark_victim) = (&mut self.enricher, &self.mark_victim);
        let mut outcome = Ok(Flow::Continue);
        self.source.consume(|bytes| {
            let kill = match decode(bytes, mark_victim) {
                Ok(Record::OomKill(kill)) => kill,
                Err(error) => {
                    warn!(%error, "skipping a ring-buffer record the collector cannot read");
                    return true;
                }
            };
            info!(pid = kill.victim.tid, "OOM kill");
            match deliver(enricher.oom_kill(&kill)) {
                Ok(Flow::Continue) => true,
                other => {
                    outcome = other.map_err(PipelineError::from);
                    false
                }
            }
        });
        outcome
    }

    /// Ends the allocation-failure window and delivers its tallies.
    async fn report_alloc_failures<D>(&mut self, deliver: &mut D) -> Result<Flow, PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        let tallies = match self.alloc_failures.drain().await {
            Ok(tallies) => tallies,
            Err(error) => {
                warn!(%error, "cannot read the kernel's allocation-failure table");
                return Ok(Flow::Continue);
            }
        };
        let window_ms = self.alloc_window.as_millis() as u64;
        for tally in &tallies {
            if deliver(self.enricher.alloc_failures(tally, window_ms))? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    fn report_lost<D>(&mut self, deliver: &mut D) -> Result<(), PipelineError>
    where
        D: FnMut(Document) -> Result<Flow, SinkError>,
    {
        match self.source.newly_lost() {
            Ok(losses) => {
                for (lost, reason) in losses {
                    warn!(lost, reason, "the kernel could not hand over some events");
                    deliver(self.enricher.events_lost(lost, reason, boot_ns_now()))?;
                }
                Ok(())
            }
            Err(error) => {
                warn!(%error, "cannot read the kernel's drop counters");
                Ok(())
            }
        }
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

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones charge
/// the memory cgroup and ignore the limit. Raising it needs
/// CAP_SYS_RESOURCE, which a least-privilege deployment does not grant.
fn raise_memlock_limit() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(error) = setrlimit(Resource::Memlock, unlimited) {
        let needs_it = HostInfo::read()
            .ok()
            .and_then(|host| host.kernel_version())
            .is_some_and(|version| version < (5, 11));
        if needs_it {
            warn!(%error, "cannot raise RLIMIT_MEMLOCK; loading may fail on this kernel (< 5.11)");
        } else {
            debug!(%error, "cannot raise RLIMIT_MEMLOCK (not needed on kernels >= 5.11)");
        }
    }
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
