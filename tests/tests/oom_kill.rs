//! Real OOM kills in scratch memory cgroups, seen through the real
//! collector. Root only; see the crate's doc.

use std::time::Duration;

use oom_e2e::{distance, require_root, resident_kib, scratch_cgroup, timestamp, Collector, Hog};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn an_oom_kill_in_a_memory_cgroup_is_one_accurate_line() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&[]);
    let cgroup = scratch_cgroup("single", 48 * MIB);
    let mut hog = Hog::start(&cgroup);
    let pid = hog.pid();
    let (status, died_at) = hog.wait(KILL_TIMEOUT);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the hog dies of SIGKILL: {status}"
    );

    let line = collector.kill_of(pid, EVENT_TIMEOUT);
    let event = &line.json;
    assert_eq!(event["process"]["pid"], pid);
    assert_eq!(event["process"]["name"], "tail");
    assert_eq!(event["event"]["kind"], "event");
    assert_eq!(event["event"]["module"], "oom");
    assert_eq!(
        event["oom"]["victim"]["memcg"]["path"],
        cgroup.path.as_str()
    );
    assert_eq!(
        event["oom"]["victim"]["memcg"]["limit_bytes"],
        cgroup.limit_bytes
    );
    // Usage as the kernel had it at the kill, not after the kill freed it.
    let usage = event["oom"]["victim"]["memcg"]["usage_bytes"]
        .as_u64()
        .expect("usage_bytes");
    assert!(
        usage > cgroup.limit_bytes * 9 / 10 && usage <= cgroup.limit_bytes,
        "usage {usage} at the kill should be at the {} limit",
        cgroup.limit_bytes
    );
    assert_eq!(
        event["oom"]["trigger"]["pid"], pid,
        "the hog ran itself out of memory"
    );

    let anon = event["oom"]["victim"]["rss"]["anon_bytes"]
        .as_u64()
        .expect("anon_bytes is a number");
    // The kernel's RSS counters are per-CPU and read without summing, so
    // they may stray a little past the limit the cgroup enforces exactly.
    assert!(
        anon > cgroup.limit_bytes * 3 / 4 && anon < cgroup.limit_bytes * 21 / 20,
        "anon rss {anon} should be close to the {} limit",
        cgroup.limit_bytes
    );
    let skew = distance(timestamp(event), died_at);
    assert!(
        skew < Duration::from_secs(1),
        "@timestamp is {skew:?} from the kill"
    );
    assert!(
        event.get("container").is_none(),
        "a scratch cgroup is no container"
    );

    let (status, rest) = collector.stop();
    assert!(
        status.success(),
        "SIGTERM ends the collector with 0: {status}"
    );
    assert!(
        rest.iter().all(|l| l.json["process"]["pid"] != pid),
        "one kill, one line"
    );
}

#[test]
fn two_simultaneous_kills_in_two_cgroups_are_two_lines_each_in_its_cgroup() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&[]);
    let cgroups = [
        scratch_cgroup("pair-a", 32 * MIB),
        scratch_cgroup("pair-b", 40 * MIB),
    ];
    let mut hogs: Vec<Hog> = cgroups.iter().map(Hog::start).collect();
    for hog in &mut hogs {
        hog.wait(KILL_TIMEOUT);
    }
    // Let anything extra arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let (status, lines) = collector.stop();
    assert!(status.success(), "{status}");

    for (hog, cgroup) in hogs.iter().zip(&cgroups) {
        let kills: Vec<_> = lines
            .iter()
            .filter(|l| l.json["event"]["action"] == "oom_kill")
            .filter(|l| l.json["oom"]["victim"]["memcg"]["path"] == cgroup.path.as_str())
            .collect();
        assert_eq!(kills.len(), 1, "exactly one kill line for {}", cgroup.path);
        assert_eq!(kills[0].json["process"]["pid"], hog.pid());
        assert_eq!(
            kills[0].json["oom"]["victim"]["memcg"]["limit_bytes"],
            cgroup.limit_bytes
        );
    }
}

/// Measures what the closing figures quote: kernel timestamp to line read,
/// and the collector's resident memory idle and after 20 kills. Run with
/// `cargo xtask test -- --nocapture twenty` to see them.
#[test]
fn twenty_kills_in_a_row_arrive_quickly_with_bounded_memory() {
    if !require_root!() {
        return;
    }
    const KILLS: usize = 20;
    let collector = Collector::start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = resident_kib(collector.pid());
    let mut latencies = Vec::with_capacity(KILLS);
    for round in 0..KILLS {
        let cgroup = scratch_cgroup(&format!("series-{round}"), 32 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(KILL_TIMEOUT);
        let line = collector.kill_of(hog.pid(), EVENT_TIMEOUT);
        let latency = line
            .read_at
            .duration_since(timestamp(&line.json))
            .unwrap_or_else(|early| {
                panic!(
                    "the kill of pid {} was read {:?} before its @timestamp: \
                     the timestamp is not the kernel's time of the kill",
                    hog.pid(),
                    early.duration()
                )
            });
        latencies.push(latency);
    }
    let after_kib = resident_kib(collector.pid());
    latencies.sort();
    let median = latencies[KILLS / 2];
    let max = latencies[KILLS - 1];
    eprintln!(
        "figures: {KILLS} kills; kernel timestamp -> line read: median {median:?}, max {max:?}; \
         collector RSS idle {idle_kib} KiB, after {KILLS} kills {after_kib} KiB"
    );
    assert!(
        max < Duration::from_secs(1),
        "every kill within a second, max {max:?}"
    );
    assert!(
        after_kib < idle_kib + 16 * 1024,
        "resident memory grew from {idle_kib} KiB to {after_kib} KiB over {KILLS} kills"
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_full_ring_buffer_is_reported_with_the_exact_count_lost() {
    if !require_root!() {
        return;
    }
    const KILLS: usize = 24;
    // One page holds about a dozen kill records.
    let collector = Collector::start(&["--ring-buffer-bytes", "4096"]);
    collector.signal(rustix::process::Signal::STOP);
    let mut pids = Vec::new();
    for round in 0..KILLS {
        let cgroup = scratch_cgroup(&format!("flood-{round}"), 16 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(KILL_TIMEOUT);
        pids.push(hog.pid());
    }
    collector.signal(rustix::process::Signal::CONT);
    let mut lines = collector.lines_until(Duration::from_secs(5), |json| {
        json["event"]["action"] == "events_lost"
    });
    std::thread::sleep(Duration::from_millis(500));
    let stderr = collector.stderr();
    let (status, rest) = collector.stop();
    assert!(status.success(), "{status}");
    lines.extend(rest);
    assert!(
        stderr.contains("oom_ebpf::programs") && stderr.contains("record not sent"),
        "the kernel side's own warnings reach the collector's log:\n{stderr}"
    );

    let delivered = lines
        .iter()
        .filter(|l| l.json["event"]["action"] == "oom_kill")
        .filter(|l| {
            l.json["process"]["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .count() as u64;
    let lost: u64 = lines
        .iter()
        .filter(|l| l.json["event"]["action"] == "events_lost")
        .map(|l| l.json["oom"]["lost"]["count"].as_u64().expect("count"))
        .sum();
    eprintln!(
        "{KILLS} kills with a one-page ring buffer: {delivered} delivered, {lost} counted lost"
    );
    assert!(lost > 0, "a one-page buffer cannot hold {KILLS} kills");
    assert_eq!(
        delivered + lost,
        KILLS as u64,
        "every kill is either delivered or counted as lost ({delivered} + {lost})"
    );
}

#[test]
fn output_file_gets_the_kill_and_is_complete_after_sigterm() {
    if !require_root!() {
        return;
    }
    let file = std::env::temp_dir().join(format!("oom-e2e-output-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&file);
    std::fs::write(&file, "{\"existing\":true}\n").expect("seed the file");
    let collector = Collector::start(&["--output", file.to_str().expect("utf-8 path")]);
    let cgroup = scratch_cgroup("output", 32 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    let (status, stdout_lines) = collector.stop();
    assert!(status.success(), "{status}");
    assert!(
        stdout_lines.is_empty(),
        "with --output nothing goes to stdout"
    );

    let text = std::fs::read_to_string(&file).expect("read the output file");
    let _ = std::fs::remove_file(&file);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert_eq!(
        lines[0]["existing"], true,
        "the file is appended to, not truncated"
    );
    let kills: Vec<_> = lines
        .iter()
        .filter(|l| l["process"]["pid"] == hog.pid())
        .collect();
    assert_eq!(kills.len(), 1, "{text}");
    assert_eq!(
        kills[0]["oom"]["victim"]["memcg"]["path"],
        cgroup.path.as_str()
    );
}

#[test]
fn sigterm_delivers_what_the_kernel_already_holds() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&[]);
    // Stopped, the collector cannot read: the kill waits in the ring buffer,
    // and SIGTERM is pending when it wakes up.
    collector.signal(rustix::process::Signal::STOP);
    let cgroup = scratch_cgroup("drain", 32 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    collector.signal(rustix::process::Signal::TERM);
    collector.signal(rustix::process::Signal::CONT);
    let (status, lines) = collector.stop();
    assert!(status.success(), "{status}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.json["process"]["pid"] == hog.pid())
            .count(),
        1,
        "the kill that reached the ring buffer before SIGTERM is written"
    );
}

#[test]
fn stdout_and_a_file_both_get_every_line() {
    if !require_root!() {
        return;
    }
    let file = std::env::temp_dir().join(format!("oom-e2e-both-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let collector = Collector::start(&["--output", "-", "--output", file.to_str().expect("utf-8")]);
    let cgroup = scratch_cgroup("both", 32 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    let on_stdout = collector.kill_of(hog.pid(), EVENT_TIMEOUT);
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&file).expect("the file output");
    let _ = std::fs::remove_file(&file);
    let in_file: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|l| l["process"]["pid"] == hog.pid())
        .expect("the kill is in the file too");
    assert_eq!(in_file, on_stdout.json, "the same document in both");
}

/// In a pod without host networking, `uname` names the pod, not the node:
/// with `NODE_NAME` set (the DaemonSet sets it from the downward API) every
/// event names the node, also the kill of a process in no pod at all
/// (kubelet, containerd, a global OOM's victim).
#[test]
fn with_node_name_set_a_kill_outside_any_pod_names_the_node() {
    if !require_root!() {
        return;
    }
    let node = format!("node-under-test-{}", std::process::id());
    let collector = Collector::spawn({
        let mut command = std::process::Command::new(oom_e2e::collector_bin());
        command.env("NODE_NAME", &node);
        command
    });
    let cgroup = scratch_cgroup("node-name", 16 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(hog.pid(), EVENT_TIMEOUT);
    assert_eq!(line.json["host"]["name"], node.as_str(), "{}", line.text);
    assert_eq!(
        line.json["kubernetes"]["node"]["name"],
        node.as_str(),
        "{}",
        line.text
    );
    assert!(
        line.json["kubernetes"].get("pod").is_none(),
        "a scratch cgroup is no pod: {}",
        line.text
    );
}
