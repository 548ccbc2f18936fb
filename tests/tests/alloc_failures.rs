//! Allocation failures: real `ENOMEM`s under RLIMIT_AS, folded per window,
//! counted exactly. This machine's kernel allows no fexit, so the tests
//! ask for the syscall tracepoints (`--alloc-failures tracepoint`).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use oom_e2e::{require_root, resident_kib, scratch_cgroup, timestamp, Collector, Hog, Line};

const FAILURES: u64 = 100_000;

fn enomem_helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_enomem"))
}

/// Runs the helper; returns its pid and how long it ran.
fn fail_on_purpose(mode: &str, count: u64) -> (u32, Duration) {
    let started = Instant::now();
    let mut child = Command::new(enomem_helper())
        .args([mode, &count.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the enomem helper");
    let pid = child.id();
    let status = child.wait().expect("wait for the helper");
    assert!(
        status.success(),
        "the helper could not fail {count} {mode}s: {status}"
    );
    (pid, started.elapsed())
}

fn failure_lines<'a>(lines: &'a [Line], pid: u32, syscall: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| l.json["event"]["action"] == "memory_allocation_failed")
        .filter(|l| l.json["process"]["pid"] == pid && l.json["oom"]["alloc"]["syscall"] == syscall)
        .collect()
}

#[test]
fn a_storm_of_mmap_failures_is_a_few_lines_that_add_up_exactly() {
    if !require_root!() {
        return;
    }
    // Short windows, so the storm spans several and every epoch flip is
    // crossed while the kernel is counting.
    let window = Duration::from_millis(25);
    let collector =
        Collector::start(&["--alloc-failures", "tracepoint", "--enomem-window", "25ms"]);
    let idle_kib = resident_kib(collector.pid());
    let (pid, ran_for) = fail_on_purpose("mmap", FAILURES);
    std::thread::sleep(Duration::from_millis(500));
    let after_kib = resident_kib(collector.pid());
    let (status, lines) = collector.stop();
    assert!(status.success(), "{status}");

    let failures = failure_lines(&lines, pid, "mmap");
    let total: u64 = failures
        .iter()
        .map(|l| l.json["oom"]["alloc"]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        total, FAILURES,
        "the counts add up to the failures that happened"
    );
    let windows = (ran_for.as_millis() / window.as_millis()) as usize + 2;
    assert!(
        failures.len() <= windows,
        "{} lines for {ran_for:?} of failures: at most one per {window:?} window ({windows})",
        failures.len()
    );
    let first = &failures[0].json;
    assert_eq!(first["error"]["code"], "ENOMEM");
    assert_eq!(first["event"]["outcome"], "failure");
    assert_eq!(first["event"]["type"][0], "info");
    assert_eq!(first["process"]["name"], "enomem");
    assert_eq!(first["oom"]["alloc"]["request_bytes"], 1u64 << 30);
    // The configured window, or less where the last one was cut by the
    // collector's stop; never more than a window and its scheduling slack.
    let window_ms = first["oom"]["alloc"]["window_ms"]
        .as_u64()
        .expect("window_ms");
    assert!((1..=250).contains(&window_ms), "window_ms {window_ms}");
    assert!(
        after_kib < idle_kib + 8 * 1024,
        "resident memory grew from {idle_kib} KiB to {after_kib} KiB"
    );
    eprintln!(
        "figures: {FAILURES} mmap failures in {ran_for:?} -> {} lines; collector RSS {idle_kib} -> {after_kib} KiB",
        failures.len()
    );
}

/// Fails `count` requests of `mode` on purpose and checks they are counted
/// exactly, with the 1 GiB asked for as the request.
fn check_counted(mode: &str, count: u64) {
    let collector =
        Collector::start(&["--alloc-failures", "tracepoint", "--enomem-window", "100ms"]);
    let (pid, _) = fail_on_purpose(mode, count);
    std::thread::sleep(Duration::from_millis(400));
    let (status, lines) = collector.stop();
    assert!(status.success(), "{status}");
    let failures = failure_lines(&lines, pid, mode);
    let total: u64 = failures
        .iter()
        .map(|l| l.json["oom"]["alloc"]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        total,
        count,
        "{:?}",
        failures.iter().map(|l| &l.json).collect::<Vec<_>>()
    );
    // brk: the growth beyond the break; mremap: the new size.
    assert_eq!(
        failures[0].json["oom"]["alloc"]["request_bytes"],
        1u64 << 30
    );
}

#[test]
fn refused_heap_growth_through_brk_is_counted_too() {
    if require_root!() {
        check_counted("brk", 1_000);
    }
}

#[test]
fn refused_mremap_growth_is_counted_too() {
    if require_root!() {
        check_counted("mremap", 500);
    }
}

#[test]
fn failures_come_before_the_kill_they_led_to() {
    if !require_root!() {
        return;
    }
    // A window far longer than the test: only the kill can end it.
    let collector_started = std::time::SystemTime::now();
    let collector = Collector::start(&["--alloc-failures", "tracepoint", "--enomem-window", "60s"]);
    let cgroup = scratch_cgroup("story", 32 * 1024 * 1024);
    let argv = [
        enomem_helper().display().to_string(),
        "mmap-then-hog".to_owned(),
        "1000".to_owned(),
    ];
    let mut hog = Hog::exec(&cgroup, &argv);
    hog.wait(Duration::from_secs(30));
    let pid = hog.pid();
    let story = collector.lines_until(Duration::from_secs(10), |json| {
        json["event"]["action"] == "oom_kill" && json["process"]["pid"] == pid
    });
    let failures = failure_lines(&story, pid, "mmap");
    assert_eq!(failures.len(), 1, "the failures, folded, before the kill");
    let failed = &failures[0].json;
    assert_eq!(failed["oom"]["alloc"]["count"], 1000);
    // The kill cut the 60 s window short: it says how long it really was,
    // and when the first and last failure were.
    let window_ms = failed["oom"]["alloc"]["window_ms"]
        .as_u64()
        .expect("window_ms");
    let kill = story.last().expect("the kill's line");
    let lived = timestamp(&kill.json)
        .duration_since(collector_started)
        .expect("the kill came after the start");
    assert!(
        window_ms <= lived.as_millis() as u64 + 50,
        "a window of {window_ms} ms, in a collector that had run {lived:?} at the kill"
    );
    let start = rfc3339_time(&failed["event"]["start"]);
    let end = rfc3339_time(&failed["event"]["end"]);
    assert_eq!(
        start,
        timestamp(failed),
        "event.start is the first failure, @timestamp"
    );
    assert!(
        start <= end && end <= timestamp(&kill.json),
        "first failure {start:?}, last {end:?}, then the kill {:?}",
        timestamp(&kill.json)
    );
    eprintln!("figures: the window cut by the kill: window_ms {window_ms} (configured 60000)");
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

/// A date field of a document, as a time.
fn rfc3339_time(value: &serde_json::Value) -> std::time::SystemTime {
    timestamp(&serde_json::json!({ "@timestamp": value }))
}

#[test]
fn a_pod_of_thousands_of_failing_processes_drowns_no_other_pods_failures() {
    if !require_root!() {
        return;
    }
    const HOSTILE_PROCESSES: u64 = 5_000;
    const EACH: u64 = 20;
    const QUIET_PROCESSES: u64 = 3;
    const QUIET_EACH: u64 = 7;
    // One window for the whole test: the hostile cgroup's processes fill
    // the kernel's per-process table before the quiet one's fail. The
    // hostile ones fail mmap, the quiet ones brk, which tells their lines
    // apart (the sum of a cgroup's other processes names no process).
    let collector = Collector::start(&["--alloc-failures", "tracepoint", "--enomem-window", "60s"]);
    let hostile = scratch_cgroup("hostile", 256 * 1024 * 1024);
    let quiet = scratch_cgroup("quiet", 256 * 1024 * 1024);
    let helper = enomem_helper().display().to_string();
    let run = |cgroup: &oom_e2e::ScratchCgroup, processes: u64, each: u64, kind: &str| {
        let argv = [
            helper.clone(),
            "processes".to_owned(),
            processes.to_string(),
            each.to_string(),
            kind.to_owned(),
        ];
        let mut forks = Hog::exec(cgroup, &argv);
        let (status, _) = forks.wait(Duration::from_secs(120));
        assert!(status.success(), "the helper's processes: {status}");
    };
    let started = std::time::Instant::now();
    run(&hostile, HOSTILE_PROCESSES, EACH, "mmap");
    run(&quiet, QUIET_PROCESSES, QUIET_EACH, "brk");
    let ran_for = started.elapsed();
    let resident = resident_kib(collector.pid());
    let (status, lines) = collector.stop();
    assert!(status.success(), "{status}");

    let of = |syscall: &str| -> Vec<&Line> {
        lines
            .iter()
            .filter(|l| l.json["event"]["action"] == "memory_allocation_failed")
            .filter(|l| l.json["oom"]["alloc"]["syscall"] == syscall)
            .collect()
    };
    let total = |found: &[&Line]| -> u64 {
        found
            .iter()
            .map(|l| l.json["oom"]["alloc"]["count"].as_u64().expect("count"))
            .sum()
    };
    let hostile_lines = of("mmap");
    let quiet_lines = of("brk");
    let lost: u64 = lines
        .iter()
        .filter(|l| l.json["event"]["action"] == "events_lost")
        .map(|l| l.json["oom"]["lost"]["count"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "figures: {HOSTILE_PROCESSES} hostile processes x {EACH} mmap and {QUIET_PROCESSES} \
         quiet x {QUIET_EACH} brk failures in {ran_for:?}, one window: hostile {} in {} lines, \
         quiet {} in {} lines, {lost} counted lost; collector RSS {resident} KiB",
        total(&hostile_lines),
        hostile_lines.len(),
        total(&quiet_lines),
        quiet_lines.len()
    );
    assert_eq!(
        total(&quiet_lines),
        QUIET_PROCESSES * QUIET_EACH,
        "the quiet cgroup's failures, exactly"
    );
    assert_eq!(
        total(&hostile_lines) + lost,
        HOSTILE_PROCESSES * EACH,
        "the hostile cgroup's failures, counted or reported lost"
    );
    assert!(
        hostile_lines.len() <= 11,
        "at most ten processes named and their others summed, per window: {} lines",
        hostile_lines.len()
    );
}
