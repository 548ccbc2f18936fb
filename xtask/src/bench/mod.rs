//! `cargo xtask bench`: what the collector costs the host and how fast it
//! delivers, measured side by side in one run and printed as one table with
//! the machine, the date and the command.
//!
//! Three parts, all by default; `OOM_BENCH_PARTS=kills,failures` runs some:
//!
//! - `hooks` ([`hooks`]): the workloads of `tests/src/bin/workload.rs` with
//!   no collector and with it in each configuration, interleaved round by
//!   round (the ratio, whose noise an A/A row shows), and the kernel's own
//!   accounting of each program (`kernel.bpf_stats_enabled`): its run time
//!   per call and calls per operation, hence each hook's cost in percent of
//!   the workload it fires on, well below the ratio's noise.
//! - `kills` ([`kills`]): real OOM kills of processes that exec'd a
//!   worker's command line, in scratch memory cgroups made after the
//!   collector started (the first kill in each is counted), watched at once
//!   by the collector and by bpftrace on the same tracepoint. The latency of
//!   each kill from the kernel's timestamp to the line's arrival at the
//!   reader, broken down by step from the collector's timing log; one kill
//!   at a time and in a storm; the first kill in a cgroup made among 5,000
//!   others; start-up of both tools to their programs attached, as bpftool
//!   shows them; memory and CPU idle and under kills.
//! - `failures` ([`failures`]): allocation failures (`--alloc-failures
//!   tracepoint`), which the kernel counts per process and window: how fast
//!   it counts them exactly, and how many processes failing within one
//!   window become lines, up to and past the kernel table's size, where the
//!   loss must show in `events_lost` lines.
//!
//! The collector's lines go through `tests/src/bin/bench_lines.rs`, which
//! stamps their arrival; bpftrace's are stamped here.

mod cgroups;
mod collector;
mod failures;
mod footprint;
mod hooks;
mod kill_times;
mod kills;
mod procs;
mod startup;
mod table;
mod wakeups;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use table::Table;

use crate::system::{output_of, run_checked};

/// Names the parts to run, comma-separated; all when unset.
const PARTS_VARIABLE: &str = "OOM_BENCH_PARTS";
const PARTS: [&str; 3] = ["hooks", "kills", "failures"];

/// The program bpftrace runs beside the collector.
const BPFTRACE_PROGRAM: &str = r#"tracepoint:oom:mark_victim { printf("%d\n", args->pid); }"#;

/// Small enough that a hog is killed within a millisecond or two.
const KILL_LIMIT_BYTES: u64 = 8 << 20;
/// How long every kill, or every counted failure, has to reach the lines.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const RESIDENT_TARGET_KIB: u64 = 16 << 10;

pub fn bench(root: &Path, collector: &Path, rounds: usize) -> Result<()> {
    let parts = parts_wanted()?;
    let tools = Tools::build(root, collector)?;
    let mut table = Table::default();
    let mut broken = Vec::new();
    if parts.contains(&"hooks") {
        hooks::hooks(&tools, rounds, &mut table, &mut broken)?;
    }
    if parts.contains(&"kills") {
        kills::kills(&tools, rounds, &mut table, &mut broken)?;
    }
    if parts.contains(&"failures") {
        failures::failures(&tools, &mut table, &mut broken)?;
    }
    print_header(&tools)?;
    table.print();
    if let Some(copies) = tools.collector.parent() {
        let _ = fs::remove_dir_all(copies);
    }
    if !broken.is_empty() {
        bail!(
            "the bench found broken promises:\n  {}",
            broken.join("\n  ")
        );
    }
    Ok(())
}

fn parts_wanted() -> Result<Vec<&'static str>> {
    let Ok(list) = std::env::var(PARTS_VARIABLE) else {
        return Ok(PARTS.to_vec());
    };
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            PARTS
                .into_iter()
                .find(|part| *part == name)
                .with_context(|| {
                    format!("{PARTS_VARIABLE}: no part {name:?}; the parts are {PARTS:?}")
                })
        })
        .collect()
}

/// The programs the bench runs.
pub struct Tools {
    collector: PathBuf,
    workload: PathBuf,
    bench_lines: PathBuf,
    bpftrace: Option<PathBuf>,
    ms_per_tick: f64,
    load_at_start: String,
}

impl Tools {
    fn build(root: &Path, collector: &Path) -> Result<Self> {
        run_checked(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .current_dir(root)
                .args(["build", "--release", "--package", "oom-e2e"])
                .args(["--bin", "workload", "--bin", "bench_lines"]),
        )?;
        let ticks_per_second: f64 = output_of(Command::new("getconf").arg("CLK_TCK"))?
            .trim()
            .parse()
            .context("getconf CLK_TCK")?;
        let bpftrace = on_path("bpftrace");
        if bpftrace.is_none() {
            eprintln!("bench: bpftrace is not installed (apt-get install -y bpftrace); comparing without it");
        }
        if on_path("bpftool").is_none() {
            bail!("the bench asks bpftool what is attached and what each program costs: apt-get install -y bpftool");
        }
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        Ok(Self {
            collector: collector.to_owned(),
            workload: target.join("release/workload"),
            bench_lines: target.join("release/bench_lines"),
            bpftrace,
            ms_per_tick: 1000.0 / ticks_per_second,
            load_at_start: load_average(),
        })
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn print_header(tools: &Tools) -> Result<()> {
    let date = output_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let parts = std::env::var(PARTS_VARIABLE)
        .map(|parts| format!("{PARTS_VARIABLE}={parts} "))
        .unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "oom-collector bench, {}: {parts}cargo xtask {}",
        date.trim(),
        args.join(" ")
    );
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB, Linux {}; collector {}",
        memory_kib as f64 / (1 << 20) as f64,
        kernel.trim(),
        tools.collector.display()
    );
    // Latencies taken while something else keeps the CPUs busy are that
    // load's, not the collector's: say how busy the machine was.
    println!(
        "load average (1, 5, 15 min) at the start: {}; at the end: {}",
        tools.load_at_start,
        load_average()
    );
    Ok(())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// Nearest-rank percentile, `fraction` in (0, 1].
fn percentile(values: &[f64], fraction: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

/// "p50 x ms" and "p99 y ms, max z ms" of latencies in milliseconds.
fn percentiles(values: &[f64]) -> (String, String) {
    if values.is_empty() {
        return ("none".to_owned(), String::new());
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    (
        format!("p50 {:.2} ms", percentile(values, 0.5)),
        format!(
            "p99 {:.2} ms, max {max:.2} ms, n={}",
            percentile(values, 0.99),
            values.len()
        ),
    )
}

fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(low, high), &v| {
        (low.min(v), high.max(v))
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// 1234567 as "1.23 M", 205123 as "205 k", 45600 as "45.6 k".
fn si(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e5 => format!("{:.0} k", v / 1e3),
        v if v >= 1e3 => format!("{:.1} k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i64)
}

/// CLOCK_BOOTTIME in nanoseconds: the kernel's clock for kills, and the
/// collector's timing log's.
fn boot_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn ms_of_ns(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}
