//! `cargo xtask bench`: what the collector costs the host and how fast it
//! delivers, measured side by side in one run and printed as one table with
//! the machine, the date and the command.
//!
//! Three parts, all by default; `OOM_BENCH_PARTS=kills,failures` runs some:
//!
//! - `hooks`: the workloads of `tests/src/bin/workload.rs` with no collector
//!   and with it in each configuration, interleaved round by round (so
//!   drift in a noisy machine hits all alike): the median time per operation,
//!   and the median and range of each round's ratio to no collector.
//! - `kills`: real OOM kills in a scratch memory cgroup, watched at once by
//!   the collector and by bpftrace on the same tracepoint. Start-up time of
//!   each; memory and CPU idle and under kills; the latency of each kill from
//!   the kernel's timestamp (`@timestamp`) to the document (`event.created`)
//!   and to its arrival at the reader, one kill at a time and in a storm.
//!   Both must see every kill.
//! - `failures`: allocation failures (`--alloc-failures tracepoint`), which
//!   the kernel counts per process and window: how fast it counts them
//!   exactly, and how many processes failing within one window become lines,
//!   up to and past the kernel table's size, where the loss must show in
//!   `events_lost` lines.
//!
//! The collector's lines go through `tests/src/bin/bench_lines.rs`, which
//! stamps their arrival; bpftrace's are stamped here.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::system::{output_of, run_checked};

/// Names the parts to run, comma-separated; all when unset.
const PARTS_VARIABLE: &str = "OOM_BENCH_PARTS";
const PARTS: [&str; 3] = ["hooks", "kills", "failures"];

/// A workload: its name and arguments, sized to run for about half a second.
const WORKLOADS: [(&str, &str); 4] = [
    ("getppid", "2000000"),
    ("mmap", "100000"),
    ("fork-exec", "300"),
    ("page-faults", "256"),
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

/// The program bpftrace runs beside the collector.
const BPFTRACE_PROGRAM: &str = r#"tracepoint:oom:mark_victim { printf("%d\n", args->pid); }"#;

/// Small enough that a hog is killed within a millisecond or two.
const KILL_LIMIT_BYTES: u64 = 8 << 20;
const IDLE: Duration = Duration::from_secs(10);
/// Kills one at a time, this far apart, so that each is timed on its own.
const LATENCY_KILLS: u64 = 120;
const LATENCY_GAP_MS: u64 = 20;
/// Kills back to back, as fast as this machine's OOM killer goes.
const STORM_KILLS: u64 = 300;
/// How long every kill, or every counted failure, has to reach the lines.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

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
const LATENCY_TARGET_MS: f64 = 5.0;
const RESIDENT_TARGET_KIB: u64 = 16 << 10;
/// "Near zero" idle CPU: under 10 millicores, the smallest CPU request a
/// DaemonSet is commonly given.
const IDLE_CPU_TARGET: f64 = 0.01;

pub fn bench(root: &Path, collector: &Path, rounds: usize) -> Result<()> {
    let parts = parts_wanted()?;
    let tools = Tools::build(root, collector)?;
    let mut table = Table::default();
    let mut broken = Vec::new();
    if parts.contains(&"hooks") {
        hooks(&tools, rounds, &mut table)?;
    }
    if parts.contains(&"kills") {
        kills(&tools, rounds, &mut table, &mut broken)?;
    }
    if parts.contains(&"failures") {
        failures(&tools, &mut table, &mut broken)?;
    }
    print_header(&tools)?;
    table.print();
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
struct Tools {
    collector: PathBuf,
    workload: PathBuf,
    bench_lines: PathBuf,
    bpftrace: Option<PathBuf>,
    ms_per_tick: f64,
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
        Ok(Self {
            collector: collector.to_owned(),
            workload: root.join("target/release/workload"),
            bench_lines: root.join("target/release/bench_lines"),
            bpftrace,
            ms_per_tick: 1000.0 / ticks_per_second,
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

// ---------------------------------------------------------------- hooks

fn hooks(tools: &Tools, rounds: usize, table: &mut Table) -> Result<()> {
    // samples[(config, workload)] = ns/op per round; config 0 is no collector.
    let mut samples: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("bench: hooks, round {}/{rounds}", round + 1);
        for config in 0..=CONFIGS.len() {
            let running = match config.checked_sub(1).and_then(|n| CONFIGS[n].1) {
                None => None,
                Some(args) => Some(Collector::start(tools, args, Lines::Discard)?),
            };
            for (index, (name, size)) in WORKLOADS.iter().enumerate() {
                let text = output_of(Command::new(&tools.workload).args([name, size]))?;
                let nanos: f64 = text
                    .trim()
                    .parse()
                    .with_context(|| format!("workload {name} printed {text:?}"))?;
                samples.entry((config, index)).or_default().push(nanos);
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
    for (index, (name, _)) in WORKLOADS.iter().enumerate() {
        let without = &samples[&(0, index)];
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
    Ok(())
}

// ---------------------------------------------------------------- kills

fn kills(tools: &Tools, rounds: usize, table: &mut Table, broken: &mut Vec<String>) -> Result<()> {
    eprintln!("bench: kills, start-up x{rounds}");
    // Start-up times and CPU: [collector, bpftrace].
    let mut startup: [Vec<f64>; 2] = Default::default();
    let mut startup_cpu: [Vec<f64>; 2] = Default::default();
    for _ in 0..rounds {
        let collector = Collector::start(tools, &[], Lines::Discard)?;
        startup[0].push(collector.watched.startup.as_secs_f64() * 1e3);
        startup_cpu[0].push(collector.watched.startup_ticks as f64 * tools.ms_per_tick);
        collector.stop()?;
        if let Some(program) = &tools.bpftrace {
            let bpftrace = Bpftrace::start(program)?;
            startup[1].push(bpftrace.watched.startup.as_secs_f64() * 1e3);
            startup_cpu[1].push(bpftrace.watched.startup_ticks as f64 * tools.ms_per_tick);
            bpftrace.stop()?;
        }
    }

    let cgroup = ScratchCgroup::create(KILL_LIMIT_BYTES)?;
    let collector = Collector::start(tools, &[], Lines::Read)?;
    let bpftrace = tools.bpftrace.as_deref().map(Bpftrace::start).transpose()?;
    let mut pids = vec![collector.watched.pid()];
    pids.extend(bpftrace.as_ref().map(|b| b.watched.pid()));
    let sampler = Sampler::start(pids.clone());

    eprintln!("bench: kills, idle for {} s", IDLE.as_secs());
    let idle_from = Mark::now(&pids)?;
    thread::sleep(IDLE);
    let idle_to = Mark::now(&pids)?;

    let watching = Watching {
        collector: &collector,
        bpftrace: bpftrace.as_ref(),
        memcg: &cgroup.path,
    };
    // One kill first, so that a tool still settling is not timed.
    let warm_up = Kills::cause(tools, &cgroup, 1, 0)?;
    warm_up.wait_until_seen(&watching);
    eprintln!("bench: kills, {LATENCY_KILLS} one at a time");
    let one_at_a_time = Kills::cause(tools, &cgroup, LATENCY_KILLS, LATENCY_GAP_MS)?;
    one_at_a_time.wait_until_seen(&watching);
    eprintln!("bench: kills, a storm of {STORM_KILLS}");
    let storm_from = Mark::now(&pids)?;
    let storm = Kills::cause(tools, &cgroup, STORM_KILLS, 0)?;
    storm.wait_until_seen(&watching);
    let storm_to = Mark::now(&pids)?;

    let samples = sampler.stop();
    let bpftrace_seen = bpftrace.map(Bpftrace::stop).transpose()?;
    let lines = collector.stop()?;
    let times = |kills: &Kills| kills.times(&lines, bpftrace_seen.as_deref(), &cgroup.path);
    let (warm, quiet, busy) = (times(&warm_up), times(&one_at_a_time), times(&storm));
    drop(cgroup);
    // Kills caused, and seen by [the collector, bpftrace].
    let total = warm_up.victims.len() + one_at_a_time.victims.len() + storm.victims.len();
    let seen = [&warm, &quiet, &busy]
        .iter()
        .fold([0, 0], |[collector, bpftrace], times| {
            [
                collector + times.collector_seen,
                bpftrace + times.bpftrace_seen,
            ]
        });
    if seen[0] < total {
        broken.push(format!("the collector wrote {} of {total} kills", seen[0]));
    }
    if bpftrace_seen.is_some() && seen[1] < total {
        broken.push(format!("bpftrace printed {} of {total} kills", seen[1]));
    }

    table.section(format!(
        "kill latency: {LATENCY_KILLS} OOM kills one at a time, {LATENCY_GAP_MS} ms apart, \
         in an {} MiB memory cgroup",
        KILL_LIMIT_BYTES >> 20
    ));
    latency_rows(table, &quiet);
    table.section(format!(
        "kill storm: {STORM_KILLS} OOM kills back to back, {:.0} kills/s",
        storm.per_second()
    ));
    latency_rows(table, &busy);
    table.measured(
        "kill lines written",
        format!("{} of {}", busy.collector_seen, storm.victims.len()),
        format!("{:.0} lines/s", storm.per_second()),
        "every kill",
        busy.collector_seen == storm.victims.len(),
    );

    let (collector_idle, collector_storm) = (
        Usage::between(&idle_from, &idle_to, &samples, 0),
        Usage::between(&storm_from, &storm_to, &samples, 0),
    );
    table.section(format!(
        "footprint: idle {} s, and during the kill storm",
        IDLE.as_secs()
    ));
    table.measured(
        "collector resident, idle",
        mib(collector_idle.resident_median_kib),
        format!("max {}", mib(collector_idle.resident_max_kib)),
        "< 16 MiB",
        collector_idle.resident_max_kib < RESIDENT_TARGET_KIB,
    );
    let others_during_idle = lines
        .iter()
        .filter(|line| (idle_from.realtime_ns..=idle_to.realtime_ns).contains(&line.arrived_ns))
        .count();
    table.measured(
        "collector CPU, idle",
        collector_idle.cpu(tools),
        format!(
            "{}; {others_during_idle} events of others meanwhile",
            collector_idle.share(tools)
        ),
        "near zero: < 10m CPU",
        collector_idle.cpu_share(tools) < IDLE_CPU_TARGET,
    );
    table.measured(
        "collector resident, kill storm",
        mib(collector_storm.resident_median_kib),
        format!("max {}", mib(collector_storm.resident_max_kib)),
        "< 16 MiB",
        collector_storm.resident_max_kib < RESIDENT_TARGET_KIB,
    );
    table.row(
        "collector CPU, kill storm",
        collector_storm.cpu(tools),
        collector_storm.share(tools),
    );

    let Some(program) = &tools.bpftrace else {
        table.section("side by side with bpftrace: not installed (apt-get install -y bpftrace)");
        return Ok(());
    };
    let version = output_of(Command::new(program).arg("--version"))?;
    table.section(format!(
        "side by side with {}, watching the same kills: {BPFTRACE_PROGRAM}",
        version.trim()
    ));
    let whole_run = |tool| Usage::between(&idle_from, &storm_to, &samples, tool);
    let idle = |tool| Usage::between(&idle_from, &idle_to, &samples, tool);
    for (tool, name) in ["collector", "bpftrace"].into_iter().enumerate() {
        let (low, high) = range(&startup[tool]);
        table.row(
            format!("{name} start-up, spawn to attached"),
            format!("{:.0} ms", median(&startup[tool])),
            format!("{low:.0}-{high:.0} ms over {rounds} starts"),
        );
        let (low, high) = range(&startup_cpu[tool]);
        table.row(
            format!("{name} CPU to start"),
            format!("{:.0} ms", median(&startup_cpu[tool])),
            format!("{low:.0}-{high:.0} ms"),
        );
        table.row(
            format!("{name} resident, idle"),
            mib(idle(tool).resident_median_kib),
            format!("max {} over the run", mib(whole_run(tool).resident_max_kib)),
        );
        table.row(
            format!("{name} CPU, whole run"),
            whole_run(tool).cpu(tools),
            format!(
                "over {:.1} s: {} s idle, then {total} kills",
                whole_run(tool).elapsed.as_secs_f64(),
                IDLE.as_secs()
            ),
        );
        table.measured(
            format!("{name} kills seen"),
            format!("{} of {total}", seen[tool]),
            "",
            "every kill",
            seen[tool] == total,
        );
    }
    for (what, values) in [
        (
            "bpftrace arrival - @timestamp, one at a time",
            &quiet.bpftrace_arrived_ms,
        ),
        (
            "bpftrace arrival - @timestamp, storm",
            &busy.bpftrace_arrived_ms,
        ),
        (
            "collector arrival - bpftrace's, one at a time",
            &quiet.behind_bpftrace_ms,
        ),
        (
            "collector arrival - bpftrace's, storm",
            &busy.behind_bpftrace_ms,
        ),
    ] {
        let (p50, spread) = percentiles(values);
        table.row(what, p50, spread);
    }
    Ok(())
}

fn latency_rows(table: &mut Table, times: &KillTimes) {
    for (what, values) in [
        ("event.created - @timestamp", &times.created_ms),
        ("arrival at the reader - @timestamp", &times.arrived_ms),
    ] {
        let (p50, spread) = percentiles(values);
        table.measured(
            what,
            p50,
            spread,
            format!("p99 < {LATENCY_TARGET_MS} ms"),
            !values.is_empty() && percentile(values, 0.99) < LATENCY_TARGET_MS,
        );
    }
}

/// Who watches the kills in the bench's memory cgroup.
struct Watching<'a> {
    collector: &'a Collector,
    bpftrace: Option<&'a Bpftrace>,
    /// The cgroup as kill lines name it.
    memcg: &'a str,
}

/// OOM kills the workload caused, and when.
struct Kills {
    victims: Vec<u32>,
    nanos: u64,
    /// CLOCK_REALTIME before the first: earlier lines are not theirs.
    started_ns: i64,
}

/// How long each kill took to reach the lines, in milliseconds.
#[derive(Default)]
struct KillTimes {
    created_ms: Vec<f64>,
    arrived_ms: Vec<f64>,
    bpftrace_arrived_ms: Vec<f64>,
    /// The collector's arrival after bpftrace's, kill by kill.
    behind_bpftrace_ms: Vec<f64>,
    collector_seen: usize,
    bpftrace_seen: usize,
}

impl Kills {
    fn cause(tools: &Tools, cgroup: &ScratchCgroup, count: u64, gap_ms: u64) -> Result<Self> {
        let started_ns = now_ns();
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

    fn per_second(&self) -> f64 {
        self.victims.len() as f64 / (self.nanos as f64 / 1e9)
    }

    /// Waits until the collector and bpftrace have both seen every kill,
    /// or [`DELIVERY_TIMEOUT`] passed (what is missing is counted later).
    fn wait_until_seen(&self, watching: &Watching) {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while Instant::now() < deadline {
            let lines = watching.collector.lines();
            let seen = watching.bpftrace.map(Bpftrace::seen);
            let times = self.times(&lines, seen.as_deref(), watching.memcg);
            let bpftrace_done = seen.is_none() || times.bpftrace_seen == self.victims.len();
            if times.collector_seen == self.victims.len() && bpftrace_done {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn times(
        &self,
        lines: &[EventLine],
        bpftrace: Option<&[(u32, i64)]>,
        memcg: &str,
    ) -> KillTimes {
        let mut times = KillTimes::default();
        for &victim in &self.victims {
            let line = lines.iter().find(|line| {
                line.action == "oom_kill"
                    && line.pid == Some(victim)
                    && line.detail == memcg
                    && line.arrived_ns >= self.started_ns
            });
            let printed = bpftrace.and_then(|seen| {
                seen.iter()
                    .find(|&&(pid, arrived)| pid == victim && arrived >= self.started_ns)
            });
            times.bpftrace_seen += usize::from(printed.is_some());
            let Some(line) = line else { continue };
            times.collector_seen += 1;
            let Some(kernel) = line.timestamp_ns else {
                continue;
            };
            if let Some(created) = line.created_ns {
                times.created_ms.push(ms_between(kernel, created));
            }
            times.arrived_ms.push(ms_between(kernel, line.arrived_ns));
            if let Some(&(_, arrived)) = printed {
                times.bpftrace_arrived_ms.push(ms_between(kernel, arrived));
                times
                    .behind_bpftrace_ms
                    .push(ms_between(arrived, line.arrived_ns));
            }
        }
        times
    }
}

// ---------------------------------------------------------------- failures

fn failures(tools: &Tools, table: &mut Table, broken: &mut Vec<String>) -> Result<()> {
    let collector = Collector::start(tools, &["--alloc-failures", "tracepoint"], Lines::Read)?;
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

// ---------------------------------------------------------------- processes

/// A program the bench started: ready once a line of its output contained a
/// marker; killed if dropped still running.
struct Watched {
    child: Child,
    startup: Duration,
    /// utime + stime once ready: what starting cost it.
    startup_ticks: u64,
    /// The last lines of its diagnostics, for error messages.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Watched {
    fn spawn(
        name: &str,
        command: &mut Command,
        ready: impl FnOnce(&mut Child, Arc<Mutex<VecDeque<String>>>) -> mpsc::Receiver<()>,
    ) -> Result<Self> {
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let attached = ready(&mut child, Arc::clone(&log));
        let mut watched = Self {
            child,
            startup: Duration::ZERO,
            startup_ticks: 0,
            log,
        };
        if attached.recv_timeout(Duration::from_secs(30)).is_err() {
            bail!(
                "{name} ended or did not attach within 30 s; its log ends:\n{}",
                watched.log_tail()
            );
        }
        watched.startup = spawned.elapsed();
        watched.startup_ticks = usage(watched.pid())?.cpu_ticks;
        Ok(watched)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGINT, then its exit, which must be clean.
    fn interrupt(&mut self, name: &str) -> Result<()> {
        run_checked(Command::new("kill").args(["-INT", &self.pid().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "{name} exited with {status}; its log ends:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `pipe` line by line on a thread, handing each line and its
/// arrival to `each` and keeping the last few in `log`; the returned
/// channel fires at the first line containing `marker`, if given.
fn watch_lines(
    pipe: impl Read + Send + 'static,
    marker: Option<&'static str>,
    log: Arc<Mutex<VecDeque<String>>>,
    mut each: impl FnMut(&str, i64) + Send + 'static,
) -> mpsc::Receiver<()> {
    let (ready, attached) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let arrived = now_ns();
            if marker.is_some_and(|marker| line.contains(marker)) {
                let _ = ready.send(());
            }
            each(&line, arrived);
            let mut log = log.lock().expect("log lock");
            if log.len() == 20 {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
    attached
}

/// Where the collector's lines go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// `--output /dev/null`.
    Discard,
    /// stdout, read through `bench_lines`, which stamps their arrival.
    Read,
}

/// The collector, running.
struct Collector {
    watched: Watched,
    reader: Option<(Child, JoinHandle<()>)>,
    lines: Arc<Mutex<Vec<EventLine>>>,
}

impl Collector {
    fn start(tools: &Tools, args: &[&str], output: Lines) -> Result<Self> {
        let mut command = Command::new(&tools.collector);
        command
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        match output {
            Lines::Discard => command
                .args(["--output", "/dev/null"])
                .stdout(Stdio::null()),
            Lines::Read => command.stdout(Stdio::piped()),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut reader = None;
        let watched = Watched::spawn("the collector", &mut command, |child, log| {
            let stderr = child.stderr.take().expect("piped");
            if let Some(stdout) = child.stdout.take() {
                reader = Some(stdout);
            }
            watch_lines(stderr, Some("collecting OOM events"), log, |_, _| {})
        })?;
        let reader = match reader {
            None => None,
            Some(stdout) => {
                let mut child = Command::new(&tools.bench_lines)
                    .stdin(Stdio::from(stdout))
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("cannot start bench_lines")?;
                let digests = child.stdout.take().expect("piped");
                let sink = Arc::clone(&lines);
                let thread = thread::spawn(move || {
                    for digest in BufReader::new(digests).lines().map_while(Result::ok) {
                        match EventLine::parse(&digest) {
                            Some(line) => sink.lock().expect("lines lock").push(line),
                            None => eprintln!("bench: bench_lines printed {digest:?}"),
                        }
                    }
                });
                Some((child, thread))
            }
        };
        Ok(Self {
            watched,
            reader,
            lines,
        })
    }

    fn lines(&self) -> Vec<EventLine> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Stops it (it drains what the kernel holds) and returns every line.
    fn stop(mut self) -> Result<Vec<EventLine>> {
        self.watched.interrupt("the collector")?;
        if let Some((mut child, thread)) = self.reader.take() {
            child.wait()?;
            let _ = thread.join();
        }
        Ok(self.lines())
    }
}

/// One line of the collector, as `bench_lines` digests it.
#[derive(Clone, Debug)]
struct EventLine {
    action: String,
    pid: Option<u32>,
    count: Option<u64>,
    timestamp_ns: Option<i64>,
    created_ns: Option<i64>,
    arrived_ns: i64,
    /// The victim's memory cgroup, or why events were lost.
    detail: String,
}

impl EventLine {
    fn parse(digest: &str) -> Option<Self> {
        let fields: Vec<&str> = digest.split('\t').collect();
        let [action, pid, count, timestamp, created, arrived, detail] = fields[..] else {
            return None;
        };
        Some(Self {
            action: action.to_owned(),
            pid: pid.parse().ok(),
            count: count.parse().ok(),
            timestamp_ns: timestamp.parse().ok(),
            created_ns: created.parse().ok(),
            arrived_ns: arrived.parse().ok()?,
            detail: detail.to_owned(),
        })
    }
}

/// bpftrace running [`BPFTRACE_PROGRAM`]: the victims it printed, with
/// when each line arrived.
struct Bpftrace {
    watched: Watched,
    seen: Arc<Mutex<Vec<(u32, i64)>>>,
}

impl Bpftrace {
    fn start(program: &Path) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let watched = Watched::spawn(
            "bpftrace",
            Command::new(program)
                .args(["-e", BPFTRACE_PROGRAM])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            |child, log| {
                let stderr = child.stderr.take().expect("piped");
                let stdout = child.stdout.take().expect("piped");
                watch_lines(stderr, None, Arc::clone(&log), |_, _| {});
                watch_lines(stdout, Some("Attaching"), log, move |line, arrived| {
                    if let Ok(pid) = line.trim().parse() {
                        sink.lock().expect("seen lock").push((pid, arrived));
                    }
                })
            },
        )?;
        Ok(Self { watched, seen })
    }

    fn seen(&self) -> Vec<(u32, i64)> {
        self.seen.lock().expect("seen lock").clone()
    }

    fn stop(mut self) -> Result<Vec<(u32, i64)>> {
        self.watched.interrupt("bpftrace")?;
        Ok(self.seen())
    }
}

/// A memory cgroup of the bench's own, limited; removed on drop, with
/// whatever of ours is still inside killed first.
struct ScratchCgroup {
    dir: PathBuf,
    path: String,
}

impl ScratchCgroup {
    fn name() -> String {
        format!("oom-bench-{}", std::process::id())
    }

    fn create(limit_bytes: u64) -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (root, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1, "memory.limit_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup"), "memory.max")
        };
        let dir = root.join(Self::name());
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cgroup = Self {
            dir,
            path: format!("/{}", Self::name()),
        };
        fs::write(cgroup.dir.join(limit_file), limit_bytes.to_string())
            .with_context(|| format!("cannot limit {}", cgroup.dir.display()))?;
        // Only where swap is accounted; without swap there is nothing to limit.
        let _ = fs::write(
            cgroup.dir.join("memory.memsw.limit_in_bytes"),
            limit_bytes.to_string(),
        );
        let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        Ok(cgroup)
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: could not remove {}", self.dir.display());
    }
}

// ---------------------------------------------------------------- footprint

/// A process's resident memory and CPU so far, from `/proc`.
#[derive(Clone, Copy, Debug)]
struct Sample {
    resident_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn usage(pid: u32) -> Result<Sample> {
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
struct Mark {
    at: Instant,
    /// The same moment on the clock the lines' arrivals are stamped with.
    realtime_ns: i64,
    samples: Vec<Sample>,
}

impl Mark {
    fn now(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            realtime_ns: now_ns(),
            samples: pids.iter().map(|&pid| usage(pid)).collect::<Result<_>>()?,
        })
    }
}

/// Samples resident memory every 50 ms on a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Vec<u64>)>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Self {
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

    fn stop(self) -> Vec<(Instant, Vec<u64>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// One process's footprint over a phase.
struct Usage {
    elapsed: Duration,
    cpu_ticks: u64,
    resident_median_kib: u64,
    resident_max_kib: u64,
}

impl Usage {
    fn between(from: &Mark, to: &Mark, samples: &[(Instant, Vec<u64>)], process: usize) -> Self {
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

    fn cpu_share(&self, tools: &Tools) -> f64 {
        self.cpu_ticks as f64 * tools.ms_per_tick / 1e3 / self.elapsed.as_secs_f64()
    }

    fn cpu(&self, tools: &Tools) -> String {
        format!("{:.0} ms", self.cpu_ticks as f64 * tools.ms_per_tick)
    }

    fn share(&self, tools: &Tools) -> String {
        format!(
            "{:.2} % of a CPU over {:.1} s",
            self.cpu_share(tools) * 100.0,
            self.elapsed.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------- the table

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

enum Row {
    Section(String),
    Measure {
        what: String,
        result: String,
        spread: String,
        target: String,
        met: Option<bool>,
    },
}

impl Table {
    fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    fn row(
        &mut self,
        what: impl Into<String>,
        result: impl Into<String>,
        spread: impl Into<String>,
    ) {
        self.rows.push(Row::Measure {
            what: what.into(),
            result: result.into(),
            spread: spread.into(),
            target: String::new(),
            met: None,
        });
    }

    fn measured(
        &mut self,
        what: impl Into<String>,
        result: impl Into<String>,
        spread: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.rows.push(Row::Measure {
            what: what.into(),
            result: result.into(),
            spread: spread.into(),
            target: target.into(),
            met: Some(met),
        });
    }

    fn print(&self) {
        let header = ["measure", "median", "spread, detail", "target", "met"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .filter_map(|row| match row {
                Row::Section(_) => None,
                Row::Measure {
                    what,
                    result,
                    spread,
                    target,
                    met,
                } => Some([
                    what.clone(),
                    result.clone(),
                    spread.clone(),
                    target.clone(),
                    match met {
                        None => String::new(),
                        Some(true) => "yes".to_owned(),
                        Some(false) => "NO".to_owned(),
                    },
                ]),
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let [what, result, spread, target, met] = cells;
            let [w0, w1, w2, w3, _] = widths;
            println!("{what:<w0$}  {result:>w1$}  {spread:<w2$}  {target:<w3$}  {met}")
        };
        line(header);
        let mut measures = cells.iter();
        for row in &self.rows {
            match row {
                Row::Section(title) => println!("-- {title}"),
                Row::Measure { .. } => {
                    let cells = measures.next().expect("one per measure");
                    line(cells.each_ref().map(String::as_str));
                }
            }
        }
    }
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
    Ok(())
}

// ---------------------------------------------------------------- numbers

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

fn ms_between(from_ns: i64, to_ns: i64) -> f64 {
    (to_ns - from_ns) as f64 / 1e6
}
