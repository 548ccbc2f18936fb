//! `--pin-dir`: a collector restarted (a rolling update) or killed loses no
//! kill that happened meanwhile, and reports none twice. Root only; see the
//! crate's doc.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Command,
    thread,
    time::Duration,
};

use oom_e2e::{
    collector_bin, full_pipe, require_root, scratch_cgroup, Collector, Ending, Hog, Line,
    ScratchCgroup,
};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pin directory of this test's own on bpffs, removed (with `--unpin`,
/// which detaches what it keeps) when dropped.
struct PinDir(PathBuf);

impl PinDir {
    fn new(label: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/oom-e2e-{label}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }

    /// The kept sets (one per build and options).
    fn sets(&self) -> Vec<String> {
        fs::read_dir(&self.0)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unpin(&self) -> std::process::Output {
        Command::new(collector_bin())
            .args(["--pin-dir", self.arg(), "--unpin"])
            .output()
            .expect("run oom-collector --unpin")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = self.unpin();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Kills one hog in `cgroup`; its pid.
fn kill_one(cgroup: &ScratchCgroup) -> u32 {
    let mut hog = Hog::start(cgroup);
    let (status, _) = hog.wait(KILL_TIMEOUT);
    assert_eq!(status.signal(), Some(9), "the hog must be OOM-killed");
    hog.pid()
}

/// The kill lines among `lines` by victim pid, counting repeats.
fn kills_by_pid(lines: &[Line]) -> BTreeMap<u32, usize> {
    let mut kills = BTreeMap::new();
    for line in lines {
        if line.json["event"]["action"] == "oom_kill" {
            let pid = line.json["process"]["pid"].as_u64().expect("pid") as u32;
            *kills.entry(pid).or_default() += 1;
        }
    }
    kills
}

#[test]
fn kills_while_the_collector_is_stopped_are_delivered_once_on_restart() {
    if !require_root!() {
        return;
    }
    let pins = PinDir::new("restart");
    let cgroup = scratch_cgroup("restart", 16 * MIB);

    let first = Collector::start(&["--pin-dir", pins.arg()]);
    let before = kill_one(&cgroup);
    first.kill_of(before, EVENT_TIMEOUT);
    let (status, _) = first.stop();
    assert!(status.success(), "{status}");
    assert_eq!(pins.sets().len(), 1, "one kept set: {:?}", pins.sets());

    // Down: the kept hooks still see these.
    let while_down = [kill_one(&cgroup), kill_one(&cgroup)];

    let second = Collector::start(&["--pin-dir", pins.arg()]);
    assert!(
        second.stderr().contains("took up the hooks kept"),
        "{}",
        second.stderr()
    );
    for pid in while_down {
        second.kill_of(pid, EVENT_TIMEOUT);
    }
    let after = kill_one(&cgroup);
    second.kill_of(after, EVENT_TIMEOUT);
    thread::sleep(Duration::from_millis(500));
    let mut delivered = second.lines_read();
    let (status, rest) = second.stop();
    assert!(status.success(), "{status}");
    // Every line the second collector printed, the ones skipped while
    // waiting included: a duplicate may come before or after the original.
    delivered.extend(rest);
    let kills = kills_by_pid(&delivered);
    assert!(
        !kills.contains_key(&before),
        "the kill before the restart was delivered by the first collector, and again: {kills:?}"
    );
    for pid in while_down.into_iter().chain([after]) {
        assert_eq!(
            kills.get(&pid),
            Some(&1),
            "the kill of pid {pid} is delivered exactly once: {kills:?}"
        );
    }

    let output = pins.unpin();
    assert!(output.status.success(), "{output:?}");
    assert!(
        pins.sets().is_empty(),
        "--unpin leaves nothing: {:?}",
        pins.sets()
    );
    // `probes` attaches and detaches again, whatever its options say.
    let probes = Command::new(collector_bin())
        .args(["probes", "--pin-dir", pins.arg()])
        .output()
        .expect("run oom-collector probes");
    assert!(probes.status.success(), "{probes:?}");
    assert!(
        pins.sets().is_empty(),
        "probes pins nothing: {:?}",
        pins.sets()
    );
    // Without the kept hooks, a kill now reaches nobody, and a start
    // without --pin-dir attaches afresh.
    let fresh = Collector::start(&[]);
    let last = kill_one(&cgroup);
    fresh.kill_of(last, EVENT_TIMEOUT);
    let (status, _) = fresh.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn sigkill_in_a_storm_loses_nothing_that_fitted_in_the_buffer() {
    if !require_root!() {
        return;
    }
    const CGROUPS: usize = 8;
    const KILLS_EACH: usize = 6;
    const KILLS: usize = CGROUPS * KILLS_EACH;
    let pins = PinDir::new("sigkill");
    let cgroups: Vec<ScratchCgroup> = (0..CGROUPS)
        .map(|i| scratch_cgroup(&format!("sigkill-{i}"), 8 * MIB))
        .collect();

    let first = Collector::start(&["--pin-dir", pins.arg()]);
    let (victims, mut seen) = thread::scope(|scope| {
        let storm: Vec<_> = cgroups
            .iter()
            .map(|cgroup| {
                scope.spawn(move || {
                    (0..KILLS_EACH)
                        .map(|_| kill_one(cgroup))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Killed mid-storm, as a node under pressure might do to it. The
        // storm's first kill may take as long as any kill on a loaded host.
        let seen = first.lines_until(KILL_TIMEOUT, |json| json["event"]["action"] == "oom_kill");
        first.signal(rustix::process::Signal::KILL);
        let victims: BTreeSet<u32> = storm
            .into_iter()
            .flat_map(|w| w.join().expect("a storm worker"))
            .collect();
        (victims, seen)
    });
    assert_eq!(victims.len(), KILLS);
    let (_, rest) = first.stop();
    seen.extend(rest);

    let second = Collector::start(&["--pin-dir", pins.arg()]);
    let storm_kill = |json: &serde_json::Value| {
        json["event"]["action"] == "oom_kill"
            && json["process"]["pid"]
                .as_u64()
                .is_some_and(|p| victims.contains(&(p as u32)))
    };
    let before_restart = kills_by_pid(&seen)
        .keys()
        .filter(|p| victims.contains(p))
        .count();
    let wanted = KILLS - before_restart;
    let count = std::cell::Cell::new(0);
    let mut after = if wanted == 0 {
        Vec::new()
    } else {
        second.lines_until(Duration::from_secs(20), |json| {
            if storm_kill(json) || json["event"]["action"] == "events_lost" {
                count.set(count.get() + 1);
            }
            count.get() >= wanted
        })
    };
    thread::sleep(Duration::from_millis(500));
    let (status, rest) = second.stop();
    assert!(status.success(), "{status}");
    after.extend(rest);

    let all: Vec<Line> = seen.into_iter().chain(after).collect();
    let kills = kills_by_pid(&all);
    // A line written as the SIGKILL lands, before its record was released,
    // is written again after the restart: the one kill in flight, under
    // the same `event.id`, which the ingest pipeline makes the document's
    // id, so Elasticsearch stores it once.
    let twice: Vec<_> = kills.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
        "only the kill in flight at the SIGKILL may come twice: {twice:?}"
    );
    for (pid, _) in &twice {
        let ids: BTreeSet<&str> = all
            .iter()
            .filter(|l| l.json["process"]["pid"].as_u64() == Some(u64::from(**pid)))
            .map(|l| l.json["event"]["id"].as_str().expect("event.id"))
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "a kill written again keeps its event.id: {ids:?}"
        );
    }
    let delivered = kills.keys().filter(|p| victims.contains(p)).count();
    let lost: u64 = all
        .iter()
        .filter(|l| l.json["event"]["action"] == "events_lost")
        .map(|l| l.json["oom"]["lost"]["count"].as_u64().expect("count"))
        .sum();
    eprintln!(
        "figures: {KILLS} kills, collector SIGKILLed after {before_restart} lines; \
         after the restart {delivered} delivered in all, {lost} counted lost, \
         {} written twice under one event.id",
        twice.len()
    );
    assert_eq!(
        delivered as u64 + lost,
        KILLS as u64,
        "each kill delivered once or counted lost"
    );
    assert_eq!(lost, 0, "the default buffer holds {KILLS} kills");
}

#[test]
fn allocation_failures_while_stopped_are_counted_once_on_restart() {
    if !require_root!() {
        return;
    }
    const FAILURES: u64 = 1000;
    let pins = PinDir::new("enomem");
    let options = [
        "--pin-dir",
        pins.arg(),
        "--alloc-failures",
        "tracepoint",
        "--enomem-window",
        "200ms",
    ];
    let first = Collector::start(&options);
    let (status, _) = first.stop();
    assert!(status.success(), "{status}");

    // Down: the kept hooks count these in the kernel.
    let helper = Command::new(env!("CARGO_BIN_EXE_enomem"))
        .args(["mmap", &FAILURES.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the enomem helper");
    let pid = helper.id();
    let output = helper
        .wait_with_output()
        .expect("wait for the enomem helper");
    assert!(output.status.success(), "{output:?}");

    let second = Collector::start(&options);
    let mine = |json: &serde_json::Value| {
        json["event"]["action"] == "memory_allocation_failed" && json["process"]["pid"] == pid
    };
    let counted = std::cell::Cell::new(0);
    let mut lines = second.lines_until(Duration::from_secs(5), |json| {
        if mine(json) {
            counted.set(counted.get() + json["oom"]["alloc"]["count"].as_u64().unwrap_or(0));
        }
        counted.get() >= FAILURES
    });
    thread::sleep(Duration::from_millis(600));
    let (status, rest) = second.stop();
    assert!(status.success(), "{status}");
    lines.extend(rest);
    let total: u64 = lines
        .iter()
        .filter(|l| mine(&l.json))
        .map(|l| l.json["oom"]["alloc"]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, FAILURES, "counted while stopped, reported once");
}

/// Runs `oom-collector ARGS`, which must end by itself (refused) within
/// 20 s; its exit status and stderr.
fn refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    Ending::start(args).wait(
        Duration::from_secs(20),
        &format!("oom-collector {args:?} should have been refused"),
    )
}

#[test]
fn what_other_tools_keep_in_the_pin_dir_survives_a_start_with_other_options() {
    if !require_root!() {
        return;
    }
    let pins = PinDir::new("others");
    fs::create_dir_all(&pins.0).expect("make the pin directory");
    // Another tool's pins, beside the collector's (bpffs holds only
    // directories and pinned objects); one is named almost like a set.
    let others = ["other-tool", "set-not-a-hash", "tc"];
    for other in others {
        fs::create_dir(pins.0.join(other)).expect("another tool's directory");
    }

    let first = Collector::start(&["--pin-dir", pins.arg()]);
    let (status, _) = first.stop();
    assert!(status.success(), "{status}");
    let first_sets: BTreeSet<String> = pins.sets().into_iter().collect();

    // Other options: the kept set cannot be taken up, so it is replaced.
    let second = Collector::start(&["--pin-dir", pins.arg(), "--cmdline", "off"]);
    let (status, _) = second.stop();
    assert!(status.success(), "{status}");
    let second_sets: BTreeSet<String> = pins.sets().into_iter().collect();
    for other in others {
        assert!(
            second_sets.contains(other),
            "{other} was removed: {second_sets:?}"
        );
    }
    let replaced: Vec<&String> = first_sets.difference(&second_sets).collect();
    assert_eq!(
        replaced.len(),
        1,
        "the first start's set goes: {first_sets:?} -> {second_sets:?}"
    );

    let output = pins.unpin();
    assert!(output.status.success(), "{output:?}");
    let left: BTreeSet<String> = pins.sets().into_iter().collect();
    assert_eq!(
        left,
        others.iter().map(|o| o.to_string()).collect(),
        "--unpin removes the collector's sets alone"
    );
}

#[test]
fn a_second_collector_on_one_pin_dir_is_refused_and_the_first_goes_on() {
    if !require_root!() {
        return;
    }
    let pins = PinDir::new("second");
    let cgroup = scratch_cgroup("pin-second", 16 * MIB);
    let first = Collector::start(&["--pin-dir", pins.arg()]);

    let (status, stderr) = refused(&["--pin-dir", pins.arg()]);
    assert!(
        !status.success(),
        "a second collector must not start: {stderr}"
    );
    assert!(
        stderr.contains("in use by another oom-collector"),
        "it says why: {stderr}"
    );
    let (status, stderr) = refused(&["--pin-dir", pins.arg(), "--unpin"]);
    assert!(
        !status.success(),
        "--unpin must not pull the hooks from under it: {stderr}"
    );
    assert!(
        stderr.contains("in use by another oom-collector"),
        "{stderr}"
    );

    let pid = kill_one(&cgroup);
    first.kill_of(pid, EVENT_TIMEOUT);
    let (status, _) = first.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_pin_dir_off_bpffs_is_refused_with_the_reason() {
    if !require_root!() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("oom-e2e-not-bpffs-{}", std::process::id()));
    let (status, stderr) = refused(&["--pin-dir", dir.to_str().expect("UTF-8")]);
    let _ = fs::remove_dir_all(&dir);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("is not on a bpf filesystem") && stderr.contains("/sys/fs/bpf"),
        "it says why and what to use: {stderr}"
    );
}

#[test]
fn the_kept_maps_which_hold_raw_command_lines_are_the_owners_alone() {
    if !require_root!() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pins = PinDir::new("modes");
    let collector = Collector::start(&["--pin-dir", pins.arg()]);
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
    let sets = pins.sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let set = pins.0.join(&sets[0]);
    let mut checked = 0;
    for entry in walk(&set) {
        let mode = fs::metadata(&entry)
            .expect("stat a kept file")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is open to others: {mode:o}",
            entry.display()
        );
        checked += 1;
    }
    assert!(
        set.join("maps/CMDLINES").exists(),
        "the command lines are among the kept maps"
    );
    assert!(
        checked > 10,
        "the set, its folders, maps and links: {checked}"
    );
}

/// `dir` and everything under it.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    for entry in fs::read_dir(dir).expect("list a kept folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A kill whose line no output has written yet (the only output, stdout,
/// is a pipe nobody reads) stays in the kept ring buffer: the collector
/// killed (SIGKILL) or stopped (SIGTERM) then, the next start delivers it.
#[test]
fn a_kill_no_output_could_write_is_delivered_after_a_restart() {
    if !require_root!() {
        return;
    }
    let cgroup = scratch_cgroup("unwritten-kill", 16 * MIB);
    for signal in [rustix::process::Signal::KILL, rustix::process::Signal::TERM] {
        let pins = PinDir::new("unwritten-kill");
        let (unread, stdout) = full_pipe();
        let mut stalled = Ending::spawn({
            let mut command = Command::new(collector_bin());
            command.args(["--pin-dir", pins.arg()]).stdout(stdout);
            command
        });
        stalled.wait_until_attached();
        let pid = kill_one(&cgroup);
        oom_e2e::poll_until(
            EVENT_TIMEOUT,
            || {
                format!(
                    "the kill of {pid} handed to stdout; log:\n{}",
                    stalled.stderr()
                )
            },
            || {
                stalled
                    .stderr()
                    .lines()
                    .any(|line| line.contains("OOM kill") && line.contains(&format!("pid={pid}")))
                    .then_some(())
            },
        );
        let collector = rustix::process::Pid::from_raw(stalled.child.id() as i32).expect("a pid");
        rustix::process::kill_process(collector, signal).expect("signal the collector");
        let (status, log) = stalled.wait(Duration::from_secs(15), "it should end");
        drop(unread);

        let next = Collector::start(&["--pin-dir", pins.arg()]);
        next.kill_of(pid, EVENT_TIMEOUT);
        let mut lines = next.lines_read();
        let (_, rest) = next.stop();
        lines.extend(rest);
        assert_eq!(
            kills_by_pid(&lines).get(&pid),
            Some(&1),
            "after {signal:?} ({status}) the next start delivers the kill once; the first \
             collector's log:\n{log}"
        );
    }
}
