//! OOM kills: how soon each reaches the reader, step by step, one at a
//! time, in a storm and among thousands of cgroups; what the collector
//! costs meanwhile; and bpftrace beside it.
//!
//! Latency is measured from the kernel's timestamp of the kill to the
//! line's arrival at the reader, both on CLOCK_BOOTTIME. The collector's
//! timing log (`oom_collector::latency`) splits it: the ring buffer's
//! wake-up, decoding, enrichment (cgroup paths, the kernel log, the
//! command line), writing, and the pipe to the reader. Every kill counts,
//! the first in a cgroup new to the collector too; the victims exec'd a
//! worker's command line, which the collector captures and masks.

use std::{collections::BTreeMap, process::Command, thread, time::Duration};

use anyhow::Result;

use super::{
    cgroups::{scratch, ManyCgroups},
    collector::{Bpftrace, Collector, Lines},
    footprint::{Mark, Sampler, Usage},
    hooks::{counters, Counters, StatsEnabled},
    kill_times::{KillTimes, Kills, Watching},
    median, mib, percentile, percentiles,
    procs::programs_of,
    range,
    startup::startup,
    table::Table,
    wakeups::{WakeupTrace, Wakeups},
    Tools, BPFTRACE_PROGRAM, KILL_LIMIT_BYTES, RESIDENT_TARGET_KIB,
};
use crate::system::output_of;

const IDLE: Duration = Duration::from_secs(10);
/// Kills one at a time, this far apart, so that each is timed on its own.
pub const LATENCY_KILLS: u64 = 120;
const LATENCY_GAP_MS: u64 = 20;
/// Kills back to back, as fast as this machine's OOM killer goes.
const STORM_KILLS: u64 = 120;
/// Memory cgroups on the host while the first kill in a new one is timed.
const MANY_CGROUPS: usize = 5_000;
/// New cgroups among them, one kill each.
const FIRST_KILLS: usize = 20;

const P50_TARGET_MS: f64 = 0.5;
const P99_TARGET_MS: f64 = 2.0;
/// "Near zero" idle CPU: under 10 millicores, the smallest CPU request a
/// DaemonSet is commonly given.
const IDLE_CPU_TARGET: f64 = 0.01;

/// The steps of a kill's latency, as the breakdown rows name them. The
/// last ends at the reader: the collector's write wakes it, so it may read
/// the line before the write returns to the collector.
pub const STEPS: [&str; 4] = [
    "kernel -> woken (ring-buffer wake-up)",
    "woken -> decoded",
    "decoded -> enriched (cgroups, kernel log, command line)",
    "enriched -> arrived at the reader (JSON, write, the reader's wake-up)",
];

pub fn kills(
    tools: &Tools,
    rounds: usize,
    table: &mut Table,
    broken: &mut Vec<String>,
) -> Result<()> {
    let startup = startup(tools, rounds)?;

    let collector = Collector::start(tools, &[], Lines::Read { any_cpu: true })?;
    let bpftrace = tools
        .bpftrace
        .as_deref()
        .map(|program| Bpftrace::start(program, false))
        .transpose()?;
    let mut pids = vec![collector.watched.pid()];
    pids.extend(bpftrace.as_ref().map(|b| b.watched.pid()));
    let sampler = Sampler::start(pids.clone());

    eprintln!("bench: kills, idle for {} s", IDLE.as_secs());
    let idle_from = Mark::now(&pids)?;
    thread::sleep(IDLE);
    let idle_to = Mark::now(&pids)?;

    // Made now, so that its first kill is in a cgroup new to the collector.
    let quiet_cgroup = scratch("one-at-a-time", KILL_LIMIT_BYTES)?;
    eprintln!("bench: kills, {LATENCY_KILLS} one at a time");
    // The kernel's accounting of the kill hooks, which no workload of the
    // hooks part fires; it adds two clock reads to each program run.
    let programs = programs_of(collector.watched.pid());
    let stats = StatsEnabled::on()?;
    let before = counters(&programs);
    let one_at_a_time = Kills::cause(tools, &quiet_cgroup, LATENCY_KILLS, LATENCY_GAP_MS)?;
    let per_kill = per_kill_cost(&before, &counters(&programs), one_at_a_time.victims.len());
    drop(stats);
    let watching = Watching {
        collector: &collector,
        bpftrace: bpftrace.as_ref(),
    };
    one_at_a_time.wait_until_seen(&watching, &quiet_cgroup.path);
    let storm_cgroup = scratch("storm", KILL_LIMIT_BYTES)?;
    eprintln!("bench: kills, a storm of {STORM_KILLS}");
    let storm_from = Mark::now(&pids)?;
    let storm = Kills::cause(tools, &storm_cgroup, STORM_KILLS, 0)?;
    storm.wait_until_seen(&watching, &storm_cgroup.path);
    let storm_to = Mark::now(&pids)?;

    let samples = sampler.stop();
    let bpftrace_seen = bpftrace.map(Bpftrace::stop).transpose()?;
    let quiet = one_at_a_time.times(
        &collector,
        &collector.lines(),
        bpftrace_seen.as_deref(),
        &quiet_cgroup.path,
    );
    let busy = storm.times(
        &collector,
        &collector.lines(),
        bpftrace_seen.as_deref(),
        &storm_cgroup.path,
    );
    let lines = collector.stop()?;
    drop((quiet_cgroup, storm_cgroup));

    let plain = plain_reader(tools)?;
    let many = many_cgroups(tools)?;

    let total = one_at_a_time.victims.len() + storm.victims.len();
    let seen = [
        quiet.collector_seen + busy.collector_seen,
        quiet.bpftrace_seen + busy.bpftrace_seen,
    ];
    if seen[0] < total {
        broken.push(format!("the collector wrote {} of {total} kills", seen[0]));
    }
    if bpftrace_seen.is_some() && seen[1] < total {
        broken.push(format!("bpftrace printed {} of {total} kills", seen[1]));
    }

    table.section(format!(
        "kill latency: {LATENCY_KILLS} OOM kills one at a time, {LATENCY_GAP_MS} ms apart, \
         in a {} MiB memory cgroup made after the collector started; victims exec'd a \
         worker's command line; the reader waits on two CPUs (bench_lines --any-cpu)",
        KILL_LIMIT_BYTES >> 20
    ));
    latency_rows(table, broken, "one at a time", &quiet);
    if let Some(first) = quiet.first_total_ms {
        table.measured(
            "first kill in the new cgroup: kernel -> arrived",
            format!("{first:.2} ms"),
            "its cgroup path looked up then",
            format!("< {P99_TARGET_MS} ms"),
            first < P99_TARGET_MS,
        );
    }
    table.section(format!(
        "the kill hooks by the kernel's accounting over the {LATENCY_KILLS} kills one at a time \
         (kernel.bpf_stats_enabled=1)"
    ));
    for (program, per_call, per_kill) in per_kill {
        table.row(
            program,
            format!("{per_call:.0} ns/call"),
            format!("{per_kill:.2} calls per kill"),
        );
    }
    table.section(format!(
        "kill storm: {STORM_KILLS} OOM kills back to back, {:.0} kills/s, in another new cgroup",
        storm.per_second()
    ));
    latency_rows(table, broken, "storm", &busy);
    table.measured(
        "kill lines written",
        format!("{} of {}", busy.collector_seen, storm.victims.len()),
        format!("{:.0} lines/s", storm.per_second()),
        "every kill",
        busy.collector_seen == storm.victims.len(),
    );

    table.section(format!(
        "{LATENCY_KILLS} more kills one at a time, read by a reader waiting on one thread \
         (bench_lines), which the kernel may queue on the CPU the OOM killer holds; \
         the kernel's own trace of the collector's wake-ups meanwhile (tracefs, boot clock)"
    ));
    for (what, values) in [
        ("kernel -> written", &plain.written_ms),
        ("kernel -> arrived at a one-thread reader", &plain.total_ms),
    ] {
        let (p50, spread) = percentiles(values);
        table.row(what, p50, spread);
    }
    if let Some(wakeups) = &plain.wakeups {
        wakeups.rows(table);
    }

    table.section(format!(
        "first kill in a cgroup made after the collector started, among {} memory cgroups, \
         x{FIRST_KILLS}",
        many.cgroups
    ));
    table.row(
        format!(
            "walking the memory hierarchy, {} cgroups (the lookup without CAP_DAC_READ_SEARCH)",
            many.walked_cgroups
        ),
        format!("{:.1} ms", many.walk.as_secs_f64() * 1e3),
        "what one lookup of a new cgroup cost when it walked the tree",
    );
    latency_rows(
        table,
        broken,
        &format!("first kills among {} cgroups", many.cgroups),
        &many.times,
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
        let (low, high) = range(&startup.attached_ms[tool]);
        table.row(
            format!(
                "{name} start-up, spawn to {} program(s) attached (bpftool)",
                startup.programs[tool]
            ),
            format!("{:.0} ms", median(&startup.attached_ms[tool])),
            format!(
                "{low:.0}-{high:.0} ms over {} starts",
                startup.attached_ms[tool].len()
            ),
        );
        let (low, high) = range(&startup.cpu_ms[tool]);
        table.row(
            format!("{name} CPU to start"),
            format!("{:.0} ms", median(&startup.cpu_ms[tool])),
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
            "bpftrace: kernel -> its line read, one at a time",
            &quiet.bpftrace_total_ms,
        ),
        (
            "bpftrace: kernel -> its line read, storm",
            &busy.bpftrace_total_ms,
        ),
        (
            "collector's line read - bpftrace's, one at a time",
            &quiet.behind_bpftrace_ms,
        ),
        (
            "collector's line read - bpftrace's, storm",
            &busy.behind_bpftrace_ms,
        ),
    ] {
        let (p50, spread) = percentiles(values);
        table.row(what, p50, spread);
    }
    Ok(())
}

/// Per program that ran: (name, ns per call, calls per kill).
fn per_kill_cost(
    before: &BTreeMap<u64, (String, Counters)>,
    after: &BTreeMap<u64, (String, Counters)>,
    kills: usize,
) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .filter_map(|(id, (name, now))| {
            let then = before.get(id).map(|(_, c)| *c).unwrap_or_default();
            let calls = now.run_cnt.saturating_sub(then.run_cnt);
            let nanos = now.run_time_ns.saturating_sub(then.run_time_ns);
            (calls > 0).then(|| {
                (
                    name.clone(),
                    nanos as f64 / calls as f64,
                    calls as f64 / kills.max(1) as f64,
                )
            })
        })
        .collect()
}

/// The breakdown rows, then the total against its targets.
fn latency_rows(table: &mut Table, broken: &mut Vec<String>, phase: &str, times: &KillTimes) {
    for (step, values) in STEPS.iter().zip(&times.steps_ms) {
        let (p50, spread) = percentiles(values);
        table.row(*step, p50, spread);
    }
    let (p50, spread) = percentiles(&times.writing_ms);
    table.row(
        "  of which: enriched -> the collector's write returned",
        p50,
        spread,
    );
    let values = &times.total_ms;
    let (p50, spread) = percentiles(values);
    let met = !values.is_empty()
        && percentile(values, 0.5) < P50_TARGET_MS
        && percentile(values, 0.99) < P99_TARGET_MS;
    if !met {
        broken.push(format!("kill latency, {phase}: {p50}, {spread}"));
    }
    table.measured(
        "kernel -> arrived at the reader",
        p50,
        spread,
        format!("p50 < {P50_TARGET_MS} ms, p99 < {P99_TARGET_MS} ms"),
        met,
    );
}

/// What a reader on one thread sees of kills one at a time.
struct Plain {
    written_ms: Vec<f64>,
    total_ms: Vec<f64>,
    /// Where the kernel queued the collector, by its own trace.
    wakeups: Option<Wakeups>,
}

fn plain_reader(tools: &Tools) -> Result<Plain> {
    eprintln!("bench: kills, {LATENCY_KILLS} one at a time, one-thread reader");
    let collector = Collector::start(tools, &[], Lines::Read { any_cpu: false })?;
    let cgroup = scratch("one-thread-reader", KILL_LIMIT_BYTES)?;
    // The collector reads the ring buffer on its main thread.
    let trace = WakeupTrace::start(collector.watched.pid())
        .inspect_err(|error| eprintln!("bench: no kernel-side trace of wake-ups: {error:#}"))
        .ok();
    let kills = Kills::cause(tools, &cgroup, LATENCY_KILLS, LATENCY_GAP_MS)?;
    let watching = Watching {
        collector: &collector,
        bpftrace: None,
    };
    kills.wait_until_seen(&watching, &cgroup.path);
    let times = kills.times(&collector, &collector.lines(), None, &cgroup.path);
    let wakeups = trace
        .map(|trace| trace.finish(&kills.victims))
        .transpose()?;
    collector.stop()?;
    Ok(Plain {
        written_ms: times.written_ms,
        total_ms: times.total_ms,
        wakeups,
    })
}

/// The first kill in each of [`FIRST_KILLS`] cgroups made among
/// [`MANY_CGROUPS`] others, after the collector started.
struct Many {
    cgroups: usize,
    walk: Duration,
    walked_cgroups: usize,
    times: KillTimes,
}

fn many_cgroups(tools: &Tools) -> Result<Many> {
    eprintln!("bench: kills, making {MANY_CGROUPS} memory cgroups");
    let cgroups = ManyCgroups::create(MANY_CGROUPS)?;
    let (walk, walked_cgroups) = ManyCgroups::walk_hierarchy();
    let collector = Collector::start(tools, &[], Lines::Read { any_cpu: true })?;
    let mut many = Many {
        cgroups: cgroups.count,
        walk,
        walked_cgroups,
        times: KillTimes::default(),
    };
    for n in 0..FIRST_KILLS {
        eprintln!(
            "bench: kills, first kill in new cgroup {}/{FIRST_KILLS}",
            n + 1
        );
        let cgroup = scratch(&format!("new-{n}"), KILL_LIMIT_BYTES)?;
        let kill = Kills::cause(tools, &cgroup, 1, 0)?;
        let watching = Watching {
            collector: &collector,
            bpftrace: None,
        };
        kill.wait_until_seen(&watching, &cgroup.path);
        many.times
            .add(kill.times(&collector, &collector.lines(), None, &cgroup.path));
    }
    collector.stop()?;
    drop(cgroups);
    Ok(many)
}
