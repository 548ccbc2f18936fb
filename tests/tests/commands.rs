//! `selftest`, `probes`, and the errors users hit first.

use std::process::{Command, Output};

use oom_e2e::{collector_bin, http_get, require_program, require_root};

fn run(args: &[&str]) -> Output {
    Command::new(collector_bin())
        .args(args)
        .output()
        .expect("run oom-collector")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn selftest_oom_kills_its_hog_and_exits_zero() {
    if !require_root!() {
        return;
    }
    let output = run(&["selftest"]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "selftest failed: {stderr}");
    let event: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("selftest prints the event as JSON");
    assert_eq!(event["event"]["action"], "oom_kill");
    assert!(
        event["oom"]["victim"]["memcg"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/oom-collector-selftest-")),
        "{event}"
    );
    assert!(stderr.contains("selftest passed"), "{stderr}");
}

/// At a terminal, the default `--format auto` writes the sentence a
/// person reads, not JSON: `selftest` under a pseudo-terminal (`script`).
#[test]
fn at_a_terminal_the_kill_is_a_sentence() {
    if !require_root!() {
        return;
    }
    let Some(script) = require_program!("script") else {
        return;
    };
    let command = format!("{} selftest", collector_bin().display());
    let output = Command::new(script)
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("run script");
    let terminal = text(&output.stdout);
    assert!(output.status.success(), "selftest failed: {terminal}");
    let line = terminal
        .lines()
        .find(|line| line.contains("OOM KILL"))
        .unwrap_or_else(|| panic!("no OOM KILL line at the terminal:\n{terminal}"));
    assert!(
        line.contains("killed in memory cgroup /oom-collector-selftest-")
            && line.contains("(limit 32.0 MiB): oom-collector anon"),
        "{line}"
    );
    assert!(!terminal.contains("\"@timestamp\""), "no JSON: {terminal}");
}

#[test]
fn probes_lists_mark_victim_as_active() {
    if !require_root!() {
        return;
    }
    let output = run(&["probes"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tracepoint/oom/mark_victim"))
        .unwrap_or_else(|| panic!("no mark_victim line in:\n{stdout}"));
    assert!(line.ends_with("active"), "{line}");
}

#[test]
fn bad_flags_get_clap_usage_and_exit_2() {
    let output = run(&["--format", "xml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("invalid value 'xml'"), "{stderr}");
    assert!(
        stderr.contains("possible values: auto, json, pretty"),
        "{stderr}"
    );

    let output = run(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("Usage:"),
        "{}",
        text(&output.stderr)
    );

    let output = run(&["--ring-buffer-bytes", "1000"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("power of two"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_unwritable_output_is_a_clear_error() {
    let output = run(&["--output", "/nonexistent-directory/oom.ndjson"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot open --output /nonexistent-directory/oom.ndjson"),
        "{stderr}"
    );
}

#[test]
fn without_capabilities_it_names_the_missing_ones() {
    if !require_root!() {
        return;
    }
    // Still uid 0, but with no capabilities at all: an empty bounding set
    // leaves root none after exec. (Not a uid change: the binary may sit
    // where another user cannot reach it.)
    let output = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all"])
        .arg(collector_bin())
        .output()
        .expect("run setpriv (util-linux)");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert!(stderr.contains("sudo"), "says what to do: {stderr}");
}

#[test]
fn with_one_capability_short_it_names_that_one() {
    if !require_root!() {
        return;
    }
    for (keep, missing) in [("+bpf", "CAP_PERFMON"), ("+perfmon", "CAP_BPF")] {
        let output = Command::new("setpriv")
            .args([&format!("--bounding-set=-all,{keep}"), "--inh-caps=-all"])
            .arg(collector_bin())
            .output()
            .expect("run setpriv (util-linux)");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("missing capabilities {missing}:")),
            "names {missing}, and only it, as missing: {stderr}"
        );
    }
}

#[test]
fn output_to_a_device_ends_cleanly() {
    if !require_root!() {
        return;
    }
    // /dev/null cannot be fsynced; that is no reason to fail at exit. A
    // device is never rotated: /dev/null stays where it is.
    let collector =
        oom_e2e::Collector::start(&["--output", "/dev/null", "--output-max-bytes", "1"]);
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
    let null = std::fs::symlink_metadata("/dev/null").expect("/dev/null");
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&null.file_type()),
        "/dev/null is still the null device"
    );
}

#[test]
fn the_daemonsets_capabilities_are_enough() {
    if !require_root!() {
        return;
    }
    // What deploy/kubernetes/oom-collector.yaml grants: root's uid, and of
    // all capabilities only BPF and PERFMON.
    let mut command = Command::new("setpriv");
    command
        .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all"])
        .arg(collector_bin());
    let collector = oom_e2e::Collector::spawn(command);
    let cgroup = oom_e2e::scratch_cgroup("caps", 32 * 1024 * 1024);
    let mut hog = oom_e2e::Hog::start(&cgroup);
    hog.wait(std::time::Duration::from_secs(30));
    let line = collector.kill_of(hog.pid(), std::time::Duration::from_secs(10));
    assert_eq!(
        line.json["oom"]["victim"]["memcg"]["path"],
        cgroup.path.as_str()
    );
    assert!(line.json["process"]["args"].is_array(), "{}", line.json);
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn metrics_count_kills_by_pod_and_say_when_ready() {
    if !require_root!() {
        return;
    }
    let addr = format!("127.0.0.1:{}", 20_000 + std::process::id() % 10_000);
    let collector = oom_e2e::Collector::start(&["--metrics-addr", &addr]);
    assert_eq!(
        http_get(&addr, "/ready").0,
        200,
        "the OOM tracepoint is attached"
    );
    let cgroup = oom_e2e::scratch_cgroup("metrics", 32 * 1024 * 1024);
    let mut hog = oom_e2e::Hog::start(&cgroup);
    hog.wait(std::time::Duration::from_secs(30));
    collector.kill_of(hog.pid(), std::time::Duration::from_secs(10));
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let kills = body
        .lines()
        .find(|l| l.starts_with("oom_kills_total{") && l.contains("constraint=\"memcg\""))
        .unwrap_or_else(|| panic!("no memcg kill counted:\n{body}"));
    assert_eq!(
        kills.split_whitespace().last(),
        Some("1"),
        "one kill: {kills}"
    );
    assert!(
        body.contains("oom_hook_active{hook=\"tracepoint/oom/mark_victim\"} 1"),
        "{body}"
    );
    assert_eq!(http_get(&addr, "/nothing").0, 404);
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_bad_metrics_address_is_a_clear_error() {
    let output = run(&["--metrics-addr", "not-an-address"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--metrics-addr"),
        "{}",
        text(&output.stderr)
    );
}
