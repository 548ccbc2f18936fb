//! What the collector's hooks cost the workloads they fire on, two ways.
//!
//! The ratio: each workload timed with no collector and with it in each
//! configuration, interleaved round by round, so drift on a noisy machine
//! hits all alike; an A/A row (no collector against no collector) shows
//! how much of a ratio is noise.
//!
//! The kernel's own accounting: with `kernel.bpf_stats_enabled=1` the
//! kernel times every run of every program, so each program the collector
//! holds (whatever its object defines, read from its file descriptors, so
//! new hooks show up without a change here) has an exact cost per call;
//! with its calls per operation of each workload, that is its share of the
//! workload's time, precise to well below the ratio's noise. It counts the
//! programs' own run time only: what attaching costs besides (a syscall
//! tracepoint puts every system call on the kernel's slow path) shows in
//! the ratio alone.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{Context, Result};

use super::{
    collector::{Collector, Lines},
    median,
    procs::{bpftool, programs_of},
    range,
    table::Table,
    Tools,
};
use crate::system::output_of;

/// A workload: its name, its argument (sized to run for about half a
/// second), and the operations that argument makes.
const WORKLOADS: [(&str, &str, u64); 4] = [
    ("getppid", "2000000", 2_000_000),
    ("mmap", "100000", 100_000),
    ("fork-exec", "300", 300),
    // 256 MiB of 4 KiB pages.
    ("page-faults", "256", 256 << 8),
];

/// Configurations compared against no collector. The first is no
/// collector again: its ratio is the noise floor of this machine, against
/// which the others are to be read.
const CONFIGS: [(&str, Option<&[&str]>); 4] = [
    ("none (A/A, the noise)", None),
    ("default", Some(&[])),
    (
        "--alloc-failures tracepoint",
        Some(&["--alloc-failures", "tracepoint"]),
    ),
    ("--page-alloc-failures", Some(&["--page-alloc-failures"])),
];

/// Each default hook must cost less than this share of a workload.
const HOOK_SHARE_TARGET: f64 = 0.005;
/// Fewer calls per operation than this are other processes' calls (the
/// machine's other work, other kills), not the workload's.
const MIN_CALLS_PER_OP: f64 = 0.05;
/// Rounds of the kernel's accounting: it is exact per call, so few do.
const STATS_ROUNDS: usize = 3;
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn hooks(
    tools: &Tools,
    rounds: usize,
    table: &mut Table,
    broken: &mut Vec<String>,
) -> Result<()> {
    let baseline = ratios(tools, rounds, table)?;
    accounting(tools, &baseline, table, broken)
}

/// Times each workload in each configuration; returns the median ns per
/// operation with no collector, per workload.
fn ratios(tools: &Tools, rounds: usize, table: &mut Table) -> Result<Vec<f64>> {
    // samples[(config, workload)] = ns/op per round; config 0 is no collector.
    let mut samples: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("bench: hooks, round {}/{rounds}", round + 1);
        for config in 0..=CONFIGS.len() {
            let running = match config.checked_sub(1).and_then(|n| CONFIGS[n].1) {
                None => None,
                Some(args) => Some(Collector::start(tools, args, Lines::Discard)?),
            };
            for (index, &(name, size, _)) in WORKLOADS.iter().enumerate() {
                samples
                    .entry((config, index))
                    .or_default()
                    .push(ns_per_op(tools, name, size)?);
            }
            if let Some(running) = running {
                running.stop()?;
            }
        }
    }
    table.section(format!(
        "hook overhead: median ns/op over {rounds} interleaved rounds; \
         ratio = with collector / without, per round"
    ));
    let mut baseline = Vec::new();
    for (index, (name, _, _)) in WORKLOADS.iter().enumerate() {
        let without = &samples[&(0, index)];
        baseline.push(median(without));
        let (low, high) = range(without);
        table.row(
            format!("{name}, no collector"),
            format!("{:.1} ns", median(without)),
            format!("{low:.1}-{high:.1} ns"),
        );
        for (config, (label, _)) in CONFIGS.iter().enumerate() {
            let with = &samples[&(config + 1, index)];
            let ratios: Vec<f64> = with.iter().zip(without).map(|(w, n)| w / n).collect();
            let (low, high) = range(&ratios);
            table.row(
                format!("{name}, {label}"),
                format!("{:.1} ns x{:.3}", median(with), median(&ratios)),
                format!("x{low:.3}-{high:.3}"),
            );
        }
    }
    Ok(baseline)
}

fn ns_per_op(tools: &Tools, name: &str, size: &str) -> Result<f64> {
    let text = output_of(Command::new(&tools.workload).args([name, size]))?;
    text.trim()
        .parse()
        .with_context(|| format!("workload {name} printed {text:?}"))
}

/// One program's counters, as the kernel keeps them.
#[derive(Clone, Copy, Default)]
pub struct Counters {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// The named programs among `ids`, with their counters now.
pub fn counters(ids: &std::collections::HashSet<u64>) -> BTreeMap<u64, (String, Counters)> {
    let mut found = BTreeMap::new();
    for program in bpftool(&["prog", "show"]).as_array().into_iter().flatten() {
        let Some(id) = program["id"].as_u64().filter(|id| ids.contains(id)) else {
            continue;
        };
        let name = program["name"].as_str().unwrap_or("?").to_owned();
        let counters = Counters {
            run_cnt: program["run_cnt"].as_u64().unwrap_or(0),
            run_time_ns: program["run_time_ns"].as_u64().unwrap_or(0),
        };
        found.insert(id, (name, counters));
    }
    found
}

/// Turns the kernel's program statistics on for as long as it lives.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn on() -> Result<Self> {
        let before = fs::read_to_string(BPF_STATS).with_context(|| format!("read {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
        Ok(Self { before })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.before.trim());
    }
}

/// Per configuration, workload and program: the kernel's run time per
/// call, calls per second and share of the workload's time.
fn accounting(
    tools: &Tools,
    baseline: &[f64],
    table: &mut Table,
    broken: &mut Vec<String>,
) -> Result<()> {
    let _stats = StatsEnabled::on()?;
    table.section(format!(
        "hook cost by the kernel's accounting (kernel.bpf_stats_enabled=1): each program's \
         run time per call, median of {STATS_ROUNDS} runs; % = its run time over the \
         workload's time without the collector"
    ));
    for (label, args) in CONFIGS.iter().skip(1) {
        let args = args.expect("a collector");
        let collector = Collector::start(tools, args, Lines::Discard)?;
        let ids = programs_of(collector.watched.pid());
        // samples[(workload, program id)] = (ns per call, calls per op) per run.
        let mut samples: BTreeMap<(usize, u64), Vec<(f64, f64)>> = BTreeMap::new();
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        for round in 0..STATS_ROUNDS {
            eprintln!(
                "bench: hook accounting, {label}, {}/{STATS_ROUNDS}",
                round + 1
            );
            for (index, &(name, size, operations)) in WORKLOADS.iter().enumerate() {
                let before = counters(&ids);
                ns_per_op(tools, name, size)?;
                let after = counters(&ids);
                for (id, (program, now)) in after {
                    let then = before.get(&id).map(|(_, c)| *c).unwrap_or_default();
                    let calls = now.run_cnt.saturating_sub(then.run_cnt);
                    let nanos = now.run_time_ns.saturating_sub(then.run_time_ns);
                    if calls == 0 {
                        continue;
                    }
                    names.insert(id, program);
                    samples.entry((index, id)).or_default().push((
                        nanos as f64 / calls as f64,
                        calls as f64 / operations as f64,
                    ));
                }
            }
        }
        collector.stop()?;
        let default = *label == "default";
        for (index, &(workload, _, _)) in WORKLOADS.iter().enumerate() {
            // (program, ns per call, calls per operation) of each that ran.
            let mut idle = Vec::new();
            for (id, program) in &names {
                let Some(runs) = samples.get(&(index, *id)) else {
                    idle.push(program.as_str());
                    continue;
                };
                let per_call = median(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
                let per_op = median(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
                // Calls this rare are other processes', not the workload's.
                if per_op < MIN_CALLS_PER_OP {
                    idle.push(program.as_str());
                    continue;
                }
                let share = per_call * per_op / baseline[index];
                let calls_per_second = per_op * 1e9 / baseline[index];
                let what = format!("{workload}, {label}: {program}");
                let value = format!("{per_call:.0} ns/call");
                let detail = format!(
                    "{} calls/s ({per_op:.3}/op); {:.2} % of the workload",
                    super::si(calls_per_second),
                    share * 100.0
                );
                if default {
                    let met = share < HOOK_SHARE_TARGET;
                    if !met {
                        broken.push(format!(
                            "{program} costs {:.2} % of {workload}",
                            share * 100.0
                        ));
                    }
                    table.measured(
                        what,
                        value,
                        detail,
                        format!("< {:.1} %", HOOK_SHARE_TARGET * 100.0),
                        met,
                    );
                } else {
                    table.row(what, value, detail);
                }
            }
            if !idle.is_empty() {
                table.row(
                    format!("{workload}, {label}: not called by it"),
                    "",
                    idle.join(", "),
                );
            }
        }
    }
    Ok(())
}
