//! The kernel's side of the pipe: the `EVENTS` ring buffer, read through
//! tokio's `AsyncFd`, the per-CPU `STATS` counters of what the kernel could
//! not send, and the kernel programs' own log (aya-log).
//!
//! The kernel wakes the reader of the ring buffer from the OOM path itself
//! (an irq_work raised as the kill's record is committed), and the scheduler
//! may queue the woken reader on that very CPU. That CPU is not free for
//! milliseconds: the OOM killer goes on to print "Killed process ..." at
//! error level, and with a serial console that line is written out with
//! interrupts off, some 4 ms on a Firecracker VM; a kernel built without
//! preemption does not give up the CPU before. So the collector keeps
//! [`Steering`] watchers, threads pinned to distinct CPUs that are woken
//! with it: the first to run moves the collector's thread to its own CPU,
//! which is therefore one that is running, and the collector takes its
//! whole CPU set back once it has read the records.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use aya::maps::{ring_buf::RingBufItem, Array, MapData, PerCpuArray, RingBuf};
use aya_log::EbpfLogger;
use oom_common::{Stat, CONFIG_LOSSES_REPORTED, LOSS_COUNTERS};
use tokio::io::{unix::AsyncFd, Interest};

use crate::loader::ProgramRuns;

pub struct KernelSource {
    events: AsyncFd<RingBuf<MapData>>,
    steering: Option<Steering>,
    stats: PerCpuArray<MapData, u64>,
    programs: ProgramRuns,
    /// Per loss counter: how much of it has been reported.
    lost_reported: [u64; LOSSES.len()],
    /// Where `lost_reported` is kept across restarts (`--pin-dir`).
    kept: Option<Array<MapData, u32>>,
}

/// What the kernel counts that means events were lost.
#[derive(Clone, Copy)]
enum Loss {
    /// A counter the programs keep in `STATS`.
    Counted(Stat),
    /// Runs of the programs the kernel skipped ([`ProgramRuns`]).
    Skipped,
}

/// The kernel's loss counters, and the reason each gives in `events_lost`.
const LOSSES: [(Loss, &str); 3] = [
    (Loss::Counted(Stat::RingBufFull), "ring_buffer_full"),
    (
        Loss::Counted(Stat::AllocFailureTableFull),
        "allocation_failure_table_full",
    ),
    (Loss::Skipped, "hook_run_skipped"),
];

const _: () = assert!(LOSSES.len() == LOSS_COUNTERS as usize);

/// The first `CONFIG` word of loss counter `index` (low, then high).
fn loss_word(index: usize) -> u32 {
    CONFIG_LOSSES_REPORTED + 2 * index as u32
}

/// The kernel programs' diagnostics, forwarded to the collector's log.
pub struct KernelLog {
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
}

/// Registers `inner` with tokio's reactor for readability.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its file descriptor (a BPF map fd held by aya)
    // and keeps it open, unchanged, for as long as the AsyncFd owns `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

impl KernelSource {
    /// `kept`: the pinned `CONFIG` map, whose loss words say what an
    /// earlier start already reported.
    pub fn new(
        events: RingBuf<MapData>,
        stats: PerCpuArray<MapData, u64>,
        programs: ProgramRuns,
        kept: Option<Array<MapData, u32>>,
    ) -> io::Result<Self> {
        let mut lost_reported = [0; LOSSES.len()];
        if let Some(config) = &kept {
            for (index, reported) in lost_reported.iter_mut().enumerate() {
                let word = |offset| config.get(&(loss_word(index) + offset), 0).unwrap_or(0);
                *reported = u64::from(word(0)) | (u64::from(word(1)) << 32);
            }
        }
        let steering = Steering::start(&events)
            .inspect_err(|error| {
                tracing::debug!(%error, "reading kills on whichever CPU is free first is unavailable");
            })
            .ok()
            .flatten();
        Ok(Self {
            events: register(events)?,
            steering,
            stats,
            programs,
            lost_reported,
            kept,
        })
    }

    /// Waits until the ring buffer has records (or may have: a wake-up
    /// can find it empty); [`KernelSource::consume`] takes them.
    pub async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.events.readable_mut().await?;
        // Cleared before the records are taken: one that arrives meanwhile
        // wakes the next call.
        guard.clear_ready();
        if let Some(steering) = &self.steering {
            steering.reading();
        }
        Ok(())
    }

    /// The oldest record in the ring buffer. It leaves the buffer when the
    /// item is dropped, not before: should the collector be killed while
    /// handling it, a kept buffer (`--pin-dir`) still has it for the next
    /// start; and an item forgotten (`std::mem::forget`) stays there.
    pub fn next_record(&mut self) -> Option<RingBufItem<'_>> {
        self.events.get_mut().next()
    }

    /// Says the records are taken, for now: the collector's thread gets its
    /// CPUs back.
    pub fn records_taken(&self) {
        if let Some(steering) = &self.steering {
            steering.release();
        }
    }

    /// Sum over CPUs of one kernel counter.
    fn stat(&self, stat: Stat) -> Result<u64, aya::maps::MapError> {
        Ok(self.stats.get(&(stat as u32), 0)?.iter().sum())
    }

    /// Events the kernel dropped since the last call, by reason.
    pub fn newly_lost(&mut self) -> Result<Vec<(u64, &'static str)>, aya::maps::MapError> {
        let mut lost = Vec::new();
        for ((loss, reason), reported) in LOSSES.iter().zip(&mut self.lost_reported) {
            let total = match loss {
                Loss::Counted(stat) => self.stats.get(&(*stat as u32), 0)?.iter().sum::<u64>(),
                Loss::Skipped => self.programs.skipped(),
            };
            if total > *reported {
                lost.push((total - *reported, *reason));
                *reported = total;
            }
        }
        if let (Some(config), false) = (&mut self.kept, lost.is_empty()) {
            for (index, reported) in self.lost_reported.iter().enumerate() {
                config.set(loss_word(index), *reported as u32, 0)?;
                config.set(loss_word(index) + 1, (*reported >> 32) as u32, 0)?;
            }
        }
        Ok(lost)
    }

    /// Kernel reads that failed while building records (partial events).
    pub fn read_failures(&self) -> Result<u64, aya::maps::MapError> {
        self.stat(Stat::ReadFailed)
    }
}

/// Watchers pinned to two CPUs, woken by the ring buffer together with the
/// collector's thread. The first to run pins the collector's thread to its
/// own CPU (moving it off a run queue where it may wait behind the OOM
/// killer); [`Steering::release`] gives the thread its CPUs back.
///
/// Two watchers on two CPUs are enough: the OOM path holds one CPU, so at
/// least one watcher is elsewhere. Neither raises any priority.
struct Steering {
    /// The collector's thread (the one reading the ring buffer).
    reader: libc::pid_t,
    /// The CPUs it may run on when not steered.
    cpus: libc::cpu_set_t,
    state: Arc<SteeringState>,
}

#[derive(Default)]
struct SteeringState {
    /// The reader is taking records: a watcher that runs late (on the CPU
    /// the OOM killer held) must not move it then.
    reading: AtomicBool,
    /// A watcher pinned the reader; [`Steering::release`] unpins it.
    steered: AtomicBool,
}

impl Steering {
    /// `None` where the collector may run on a single CPU only.
    fn start(events: &RingBuf<MapData>) -> io::Result<Option<Self>> {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity
        // fills it for the calling thread.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut cpus) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: reads a bit of our own set, within CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &cpus) })
            .collect();
        let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
            return Ok(None);
        };
        if first == last {
            return Ok(None);
        }
        let steering = Self {
            // SAFETY: gettid has no preconditions.
            reader: unsafe { libc::gettid() },
            cpus,
            state: Arc::default(),
        };
        for cpu in [first, last] {
            let ring = events.as_fd().try_clone_to_owned()?;
            let (reader, state) = (steering.reader, Arc::clone(&steering.state));
            std::thread::Builder::new()
                .name(format!("oom-watch-{cpu}"))
                .stack_size(64 << 10)
                .spawn(move || watch(&ring, cpu, reader, &state))?;
        }
        Ok(Some(steering))
    }

    /// The reader was woken and takes records now.
    fn reading(&self) {
        self.state.reading.store(true, Ordering::Release);
    }

    /// Gives the reader its CPUs back once it has read what woke it.
    fn release(&self) {
        self.state.reading.store(false, Ordering::Release);
        if self.state.steered.swap(false, Ordering::AcqRel) {
            // SAFETY: sets our own thread's affinity from a valid set.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.cpus) };
        }
    }
}

/// One watcher: pinned to `cpu`, waits for each wake-up of the ring buffer
/// and, while records wait for a reader that has not started on them, pins
/// `reader` to `cpu`.
fn watch(ring: &OwnedFd, cpu: usize, reader: libc::pid_t, state: &SteeringState) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET sets one bit below
    // CPU_SETSIZE; the calls below take valid pointers and our own fds.
    unsafe {
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &only) != 0 {
            return;
        }
        let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if epoll < 0 {
            return;
        }
        // Edge-triggered: one wake-up per notification, not one per
        // record still unread.
        let mut interest = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        if libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut interest) != 0 {
            libc::close(epoll);
            return;
        }
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        loop {
            if libc::epoll_wait(epoll, &mut event, 1, -1) < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if state.reading.load(Ordering::Acquire) {
                continue;
            }
            // Records still there: the reader has not run yet.
            let mut pending = libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pending, 1, 0) == 1 {
                state.steered.store(true, Ordering::Release);
                libc::sched_setaffinity(reader, size_of::<libc::cpu_set_t>(), &only);
            }
        }
    }
}

impl KernelLog {
    pub fn new(logger: Option<EbpfLogger<&'static dyn log::Log>>) -> io::Result<Self> {
        Ok(Self {
            logger: logger.map(register).transpose()?,
        })
    }

    /// Waits for kernel log records and forwards them to the log. Never
    /// returns when the kernel log is off.
    pub async fn forward(&mut self) -> io::Result<()> {
        let Some(log) = self.logger.as_mut() else {
            return std::future::pending().await;
        };
        let mut guard = log.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
        Ok(())
    }
}
