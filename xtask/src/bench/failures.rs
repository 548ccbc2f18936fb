//! Allocation failures: how fast the kernel counts them exactly, and how
//! many processes failing within one window become lines.

use std::{
    collections::HashSet,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    collector::{Collector, EventLine, Lines},
    footprint::{Mark, Sampler, Usage},
    median, mib, now_ns, range, si,
    table::Table,
    Tools, DELIVERY_TIMEOUT, RESIDENT_TARGET_KIB,
};
use crate::system::output_of;

/// Processes and failures each: one process per CPU failing flat out.
const FLOOD: (u64, u64) = (2, 1_000_000);
const FLOODS: usize = 3;
/// Processes failing together, each this many times; the kernel's table
/// holds 1024 process and system call pairs.
const BURSTS: [u64; 4] = [250, 500, 1000, 2000];
const BURST_FAILURES: u64 = 10;
const BURST_REPEATS: usize = 3;
/// Lines written further apart than this come from different windows.
const WINDOW_GAP_NS: i64 = 100_000_000;
const THROUGHPUT_TARGET: f64 = 50_000.0;

pub fn failures(tools: &Tools, table: &mut Table, broken: &mut Vec<String>) -> Result<()> {
    let collector = Collector::start(
        tools,
        &["--alloc-failures", "tracepoint"],
        Lines::Read { any_cpu: false },
    )?;
    let pids = [collector.watched.pid()];
    let sampler = Sampler::start(pids.to_vec());
    let from = Mark::now(&pids)?;
    let (processes, each) = FLOOD;
    let mut floods = Vec::new();
    for flood in 0..FLOODS {
        eprintln!("bench: failures, flood {}/{FLOODS}", flood + 1);
        let caused = Failures::cause(tools, processes, each)?;
        let tally = caused.wait_until_counted(&collector);
        floods.push((caused, tally));
    }
    let mut bursts = Vec::new();
    for processes in BURSTS {
        let mut runs = Vec::new();
        for run in 0..BURST_REPEATS {
            eprintln!(
                "bench: failures, {processes} processes at once, {}/{BURST_REPEATS}",
                run + 1
            );
            let caused = Failures::cause(tools, processes, BURST_FAILURES)?;
            let tally = caused.wait_until_counted(&collector);
            runs.push((caused, tally));
        }
        bursts.push((processes, runs));
    }
    let to = Mark::now(&pids)?;
    let samples = sampler.stop();
    collector.stop()?;

    table.section(
        "allocation failures (--alloc-failures tracepoint, --enomem-window 1s): \
         counted in the kernel per process and window",
    );
    let rates: Vec<f64> = floods
        .iter()
        .map(|(caused, _)| caused.per_second())
        .collect();
    let exact = floods
        .iter()
        .all(|(caused, tally)| tally.counted == caused.total);
    let (counted, caused): (u64, u64) = floods
        .iter()
        .map(|(caused, tally)| (tally.counted, caused.total))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let (low, high) = range(&rates);
    table.measured(
        format!("counting, {processes} processes x {each} failed mmaps flat out, x{FLOODS}"),
        format!("{}/s", si(median(&rates))),
        format!("{}-{}/s; {counted} of {caused} counted", si(low), si(high)),
        format!(">= {}/s, exact", si(THROUGHPUT_TARGET)),
        exact && median(&rates) >= THROUGHPUT_TARGET,
    );
    if !exact {
        broken.push(format!("the lines count {counted} of {caused} failures"));
    }
    let mut write_rates = Vec::new();
    for (processes, runs) in &bursts {
        let sum = |of: fn(&(Failures, Tally)) -> u64| runs.iter().map(of).sum::<u64>();
        let (caused, counted, lost) = (
            sum(|(caused, _)| caused.total),
            sum(|(_, tally)| tally.counted),
            sum(|(_, tally)| tally.lost),
        );
        let median_of = |of: fn(&Tally) -> usize| {
            median(&runs.iter().map(|(_, t)| of(t) as f64).collect::<Vec<_>>())
        };
        let rates: Vec<f64> = runs
            .iter()
            .filter_map(|(_, t)| t.lines_per_second)
            .collect();
        write_rates.extend(&rates);
        let (low, high) = range(&rates);
        let accounted = runs
            .iter()
            .all(|(caused, tally)| tally.counted + tally.lost == caused.total);
        table.measured(
            format!("{processes} processes x {BURST_FAILURES} at once, x{BURST_REPEATS}"),
            format!(
                "{:.0} lines, {:.0} processes",
                median_of(|t| t.lines),
                median_of(|t| t.processes)
            ),
            format!(
                "{}-{} lines/s; {counted}/{caused} counted, {lost} in events_lost",
                si(low),
                si(high)
            ),
            "exact, or loss shown",
            accounted,
        );
        if !accounted {
            broken.push(format!(
                "{processes} processes failing: {counted} counted + {lost} lost != {caused} caused"
            ));
        }
    }
    let (low, high) = range(&write_rates);
    table.measured(
        "lines written per second, draining a window",
        format!("{}/s", si(median(&write_rates))),
        format!(
            "{}-{}/s over {} windows",
            si(low),
            si(high),
            write_rates.len()
        ),
        format!(">= {}/s", si(THROUGHPUT_TARGET)),
        median(&write_rates) >= THROUGHPUT_TARGET,
    );
    let storm = Usage::between(&from, &to, &samples, 0);
    table.section("footprint during the allocation failures above");
    table.measured(
        "collector resident",
        mib(storm.resident_median_kib),
        format!("max {}", mib(storm.resident_max_kib)),
        "< 16 MiB",
        storm.resident_max_kib < RESIDENT_TARGET_KIB,
    );
    table.row("collector CPU", storm.cpu(tools), storm.share(tools));
    Ok(())
}

/// Allocation failures the workload caused.
struct Failures {
    pids: HashSet<u32>,
    total: u64,
    nanos: u64,
    started_ns: i64,
}

/// What the collector's lines say of them.
struct Tally {
    lines: usize,
    processes: usize,
    counted: u64,
    /// `events_lost` for a full table, reported since they were caused.
    lost: u64,
    /// Lines written per second within the window that wrote the most.
    lines_per_second: Option<f64>,
}

impl Failures {
    fn cause(tools: &Tools, processes: u64, each: u64) -> Result<Self> {
        let started_ns = now_ns();
        let text = output_of(Command::new(&tools.workload).args([
            "enomem",
            &processes.to_string(),
            &each.to_string(),
        ]))?;
        let mut failures = Self {
            pids: HashSet::new(),
            total: 0,
            nanos: 0,
            started_ns,
        };
        for line in text.lines() {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["pid", pid] => {
                    failures.pids.insert(pid.parse()?);
                }
                ["done", total, nanos] => {
                    failures.total = total.parse()?;
                    failures.nanos = nanos.parse()?;
                }
                _ => bail!("workload enomem printed {line:?}"),
            }
        }
        Ok(failures)
    }

    fn per_second(&self) -> f64 {
        self.total as f64 / (self.nanos as f64 / 1e9)
    }

    /// Waits until every failure is counted in a line or reported lost, or
    /// [`DELIVERY_TIMEOUT`] passed.
    fn wait_until_counted(&self, collector: &Collector) -> Tally {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let tally = self.tally(&collector.lines());
            if tally.counted + tally.lost >= self.total || Instant::now() > deadline {
                return tally;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn tally(&self, lines: &[EventLine]) -> Tally {
        let ours: Vec<&EventLine> = lines
            .iter()
            .filter(|line| {
                line.action == "memory_allocation_failed"
                    && line.arrived_ns >= self.started_ns
                    && line.pid.is_some_and(|pid| self.pids.contains(&pid))
            })
            .collect();
        let lost = lines
            .iter()
            .filter(|line| {
                line.action == "events_lost"
                    && line.detail == "allocation_failure_table_full"
                    && line.arrived_ns >= self.started_ns
            })
            .filter_map(|line| line.count)
            .sum();
        let mut created: Vec<i64> = ours.iter().filter_map(|line| line.created_ns).collect();
        created.sort_unstable();
        Tally {
            lines: ours.len(),
            processes: ours
                .iter()
                .filter_map(|line| line.pid)
                .collect::<HashSet<_>>()
                .len(),
            counted: ours.iter().filter_map(|line| line.count).sum(),
            lost,
            lines_per_second: busiest_window_rate(&created),
        }
    }
}

/// Lines per second within the window that wrote the most, from the
/// times the collector made them.
fn busiest_window_rate(created: &[i64]) -> Option<f64> {
    let windows = created.chunk_by(|a, b| b - a < WINDOW_GAP_NS);
    let busiest = windows.max_by_key(|window| window.len())?;
    let span_ns = busiest.last()? - busiest.first()?;
    (busiest.len() > 1 && span_ns > 0).then(|| (busiest.len() - 1) as f64 / (span_ns as f64 / 1e9))
}
