//! What a process costs: resident memory and CPU from `/proc`, sampled
//! over a phase.

use std::{
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{median, now_ns, Tools};

/// A process's resident memory and CPU so far, from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub resident_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn usage(pid: u32) -> Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime and stime the 12th and 13th.
    let after_name = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Ok(Sample {
        resident_kib,
        cpu_ticks: fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0),
    })
}

/// Every process's usage at one moment.
pub struct Mark {
    pub at: Instant,
    /// The same moment on the clock the lines' arrivals are stamped with.
    pub realtime_ns: i64,
    samples: Vec<Sample>,
}

impl Mark {
    pub fn now(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            realtime_ns: now_ns(),
            samples: pids.iter().map(|&pid| usage(pid)).collect::<Result<_>>()?,
        })
    }
}

/// Samples resident memory every 50 ms on a thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Vec<u64>)>>,
}

impl Sampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let resident = pids
                    .iter()
                    .map(|&pid| usage(pid).map_or(0, |s| s.resident_kib))
                    .collect();
                samples.push((Instant::now(), resident));
                thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Vec<(Instant, Vec<u64>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// One process's footprint over a phase.
pub struct Usage {
    pub elapsed: Duration,
    pub cpu_ticks: u64,
    pub resident_median_kib: u64,
    pub resident_max_kib: u64,
}

impl Usage {
    pub fn between(
        from: &Mark,
        to: &Mark,
        samples: &[(Instant, Vec<u64>)],
        process: usize,
    ) -> Self {
        let resident: Vec<f64> = samples
            .iter()
            .filter(|(at, _)| (from.at..=to.at).contains(at))
            .map(|(_, resident)| resident[process] as f64)
            .collect();
        Self {
            elapsed: to.at - from.at,
            cpu_ticks: to.samples[process].cpu_ticks - from.samples[process].cpu_ticks,
            resident_median_kib: median(&resident) as u64,
            resident_max_kib: resident.iter().copied().fold(0.0, f64::max) as u64,
        }
    }

    pub fn cpu_share(&self, tools: &Tools) -> f64 {
        self.cpu_ticks as f64 * tools.ms_per_tick / 1e3 / self.elapsed.as_secs_f64()
    }

    pub fn cpu(&self, tools: &Tools) -> String {
        format!("{:.0} ms", self.cpu_ticks as f64 * tools.ms_per_tick)
    }

    pub fn share(&self, tools: &Tools) -> String {
        format!(
            "{:.2} % of a CPU over {:.1} s",
            self.cpu_share(tools) * 100.0,
            self.elapsed.as_secs_f64()
        )
    }
}
