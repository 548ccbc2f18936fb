//! Causing OOM kills with the workload, and timing each one from the
//! kernel's timestamp to the line's arrival at the reader, step by step
//! from the collector's timing log, and to bpftrace's line beside it.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use scratch_cgroup::ScratchCgroup;

use super::{
    collector::{Bpftrace, Collector, EventLine},
    ms_of_ns, now_ns, Tools, DELIVERY_TIMEOUT,
};
use crate::system::output_of;

/// Who watches the kills.
pub struct Watching<'a> {
    pub collector: &'a Collector,
    pub bpftrace: Option<&'a Bpftrace>,
}

/// OOM kills the workload caused, and when.
pub struct Kills {
    pub victims: Vec<u32>,
    pub nanos: u64,
    /// CLOCK_REALTIME before the first: earlier lines are not theirs.
    pub started_ns: i64,
    /// CLOCK_BOOTTIME before the first, for bpftrace's lines.
    pub started_boot_ns: u64,
}

/// How long each kill took, in milliseconds.
#[derive(Default)]
pub struct KillTimes {
    /// Per step of [`super::kills::STEPS`].
    pub steps_ms: [Vec<f64>; 4],
    /// From enriched to the collector's write returned.
    pub writing_ms: Vec<f64>,
    pub written_ms: Vec<f64>,
    pub total_ms: Vec<f64>,
    /// The first victim's total: the first kill in its cgroup.
    pub first_total_ms: Option<f64>,
    pub bpftrace_total_ms: Vec<f64>,
    /// The collector's arrival after bpftrace's, kill by kill.
    pub behind_bpftrace_ms: Vec<f64>,
    pub collector_seen: usize,
    pub bpftrace_seen: usize,
}

impl KillTimes {
    /// Adds another phase's kills to these.
    pub fn add(&mut self, other: Self) {
        for (steps, more) in self.steps_ms.iter_mut().zip(other.steps_ms) {
            steps.extend(more);
        }
        self.writing_ms.extend(other.writing_ms);
        self.written_ms.extend(other.written_ms);
        self.total_ms.extend(other.total_ms);
        self.collector_seen += other.collector_seen;
    }
}

impl Kills {
    pub fn cause(tools: &Tools, cgroup: &ScratchCgroup, count: u64, gap_ms: u64) -> Result<Self> {
        let started_ns = now_ns();
        let started_boot_ns = super::boot_ns();
        let text = output_of(Command::new(&tools.workload).args([
            "oom-kills",
            &cgroup.dir.to_string_lossy(),
            &count.to_string(),
            "1",
            &gap_ms.to_string(),
        ]))?;
        let mut kills = Self {
            victims: Vec::new(),
            nanos: 0,
            started_ns,
            started_boot_ns,
        };
        for line in text.lines() {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["victim", pid] => kills.victims.push(pid.parse()?),
                ["done", _, nanos] => kills.nanos = nanos.parse()?,
                _ => bail!("workload oom-kills printed {line:?}"),
            }
        }
        Ok(kills)
    }

    pub fn per_second(&self) -> f64 {
        self.victims.len() as f64 / (self.nanos as f64 / 1e9)
    }

    /// Waits until the collector (with its timing) and bpftrace have both
    /// seen every kill, or [`DELIVERY_TIMEOUT`] passed (what is missing is
    /// counted later).
    pub fn wait_until_seen(&self, watching: &Watching, memcg: &str) {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while Instant::now() < deadline {
            let lines = watching.collector.lines();
            let seen = watching.bpftrace.map(Bpftrace::seen);
            let times = self.times(watching.collector, &lines, seen.as_deref(), memcg);
            let bpftrace_done = seen.is_none() || times.bpftrace_seen == self.victims.len();
            if times.collector_seen == self.victims.len()
                && times.total_ms.len() == self.victims.len()
                && bpftrace_done
            {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn times(
        &self,
        collector: &Collector,
        lines: &[EventLine],
        bpftrace: Option<&[(u32, u64)]>,
        memcg: &str,
    ) -> KillTimes {
        let mut times = KillTimes::default();
        for (index, &victim) in self.victims.iter().enumerate() {
            let line = lines.iter().find(|line| {
                line.action == "oom_kill"
                    && line.pid == Some(victim)
                    && line.detail == memcg
                    && line.arrived_ns >= self.started_ns
            });
            let printed = bpftrace.and_then(|seen| {
                seen.iter()
                    .find(|&&(pid, arrived)| pid == victim && arrived >= self.started_boot_ns)
            });
            times.bpftrace_seen += usize::from(printed.is_some());
            let Some(line) = line else { continue };
            times.collector_seen += 1;
            let (Some(timing), Some(arrived)) = (collector.timing(victim), line.arrived_boot_ns)
            else {
                continue;
            };
            let marks = [
                timing.kernel_ns,
                timing.woken_ns,
                timing.decoded_ns,
                timing.enriched_ns,
                arrived,
            ];
            times
                .writing_ms
                .push(ms_of_ns(timing.enriched_ns, timing.written_ns));
            for (step, pair) in times.steps_ms.iter_mut().zip(marks.windows(2)) {
                step.push(ms_of_ns(pair[0], pair[1]));
            }
            let total = ms_of_ns(timing.kernel_ns, arrived);
            times
                .written_ms
                .push(ms_of_ns(timing.kernel_ns, timing.written_ns));
            times.total_ms.push(total);
            if index == 0 {
                times.first_total_ms = Some(total);
            }
            if let Some(&(_, printed)) = printed {
                times
                    .bpftrace_total_ms
                    .push(ms_of_ns(timing.kernel_ns, printed));
                times.behind_bpftrace_ms.push(ms_of_ns(printed, arrived));
            }
        }
        times
    }
}
