//! Outputs that fail while the collector runs: stdout closed by its reader,
//! a full filesystem, the output file moved or deleted underneath. Real
//! kills, the real binary, real pipes and a real tmpfs. Root only; see the
//! crate's doc.
//!
//! Other tests on the machine may cause kills meanwhile: every assertion is
//! about the pids of this test's own hogs.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

use oom_e2e::{
    collect_text, collector_bin, is_kill_of, poll_until, require_root, scratch_cgroup,
    wait_for_exit, Collector, Hog, ScratchDir,
};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// CPU time a collector with nothing to do may use in [`IDLE_WINDOW`]; a
/// loop retrying a write would use all of it.
const IDLE_CPU: Duration = Duration::from_millis(300);
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// Causes one OOM kill in a scratch cgroup of its own; returns its pid.
fn cause_a_kill(label: &str) -> u32 {
    let cgroup = scratch_cgroup(label, 32 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    hog.pid()
}

/// Every line of `path`, each of which must be a whole JSON document.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a whole line",
        path.display()
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{} holds a line that is not JSON ({e}): {line}",
                    path.display()
                )
            })
        })
        .collect()
}

fn kills_of(path: &Path, pid: u32) -> usize {
    documents(path)
        .iter()
        .filter(|json| is_kill_of(json, pid))
        .count()
}

/// [`poll_until`] for a condition.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    poll_until(timeout, || what.to_owned(), || done().then_some(()));
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after `comm`, which may hold spaces, start after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The process is still there and not a zombie.
fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat[stat.rfind(')').expect("comm") + 2..].starts_with('Z'))
}

fn assert_idle(pid: u32, when: &str) {
    let before = cpu_time(pid);
    thread::sleep(IDLE_WINDOW);
    let used = cpu_time(pid).saturating_sub(before);
    assert!(
        used < IDLE_CPU,
        "{when}, the collector used {used:?} of CPU in {IDLE_WINDOW:?}: it spins"
    );
}

/// A tiny tmpfs, unmounted on drop.
struct Tmpfs {
    dir: ScratchDir,
}

impl Tmpfs {
    fn mount(label: &str, size: &str) -> Self {
        let dir = ScratchDir::new(label);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a {size} tmpfs: {status}");
        Self { dir }
    }

    fn path(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir.0).status();
    }
}

/// The collector with its stdout a pipe this test holds, so the test can
/// close its end; stderr is collected.
struct PipedCollector {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: Arc<Mutex<String>>,
}

impl PipedCollector {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(collector_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oom-collector");
        let stderr = collect_text(child.stderr.take().expect("stderr"));
        let collector = Self {
            stdout: child.stdout.take(),
            child,
            stderr,
        };
        wait_until(Duration::from_secs(20), "oom-collector is attached", || {
            collector.stderr().contains("collecting OOM events")
        });
        collector
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Reads stdout up to the kill line of `pid`, then closes stdout's read
    /// end. A thread reads, so a missing line fails the test instead of
    /// hanging it.
    fn read_kill_then_close_stdout(&mut self, pid: u32) {
        let stdout = self.stdout.take().expect("stdout still open");
        // The reader hands over the kill line, or the first line that is
        // not JSON: a panic on its thread would go unseen.
        let (found, seen) = mpsc::channel();
        thread::spawn(move || {
            for bytes in BufReader::new(stdout).split(b'\n') {
                let Ok(bytes) = bytes else { break };
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(json) if is_kill_of(&json, pid) => {
                        let _ = found.send(Ok(()));
                        break;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let line = String::from_utf8_lossy(&bytes).into_owned();
                        let _ = found.send(Err(format!("not a JSON line ({error}): {line:?}")));
                        break;
                    }
                }
            }
            // Returning drops the read end: the pipe has no reader now.
        });
        let read = seen.recv_timeout(EVENT_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "no kill line for pid {pid} on stdout; log:\n{}",
                self.stderr()
            )
        });
        if let Err(why) = read {
            panic!("oom-collector's stdout: {why}");
        }
        // The reader closes the pipe right after it sends.
        thread::sleep(Duration::from_millis(100));
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let stderr = Arc::clone(&self.stderr);
        wait_for_exit(&mut self.child, timeout, || {
            stderr.lock().expect("stderr lock").clone()
        })
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        self.wait_for_exit(Duration::from_secs(10))
    }
}

impl Drop for PipedCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn stdout_closed_by_its_reader_stops_the_collector_cleanly() {
    if !require_root!() {
        return;
    }
    let mut collector = PipedCollector::start(&[]);
    let first = cause_a_kill("stdout-only-1");
    collector.read_kill_then_close_stdout(first);
    assert_idle(collector.pid(), "with stdout's reader gone");

    cause_a_kill("stdout-only-2");
    let status = collector.wait_for_exit(Duration::from_secs(5));
    let stderr = collector.stderr();
    assert!(
        status.success(),
        "a closed stdout is a clean stop, not a failure: {status}\n{stderr}"
    );
    assert_eq!(
        stderr
            .matches("stdout was closed by its reader; stopping")
            .count(),
        1,
        "one line says why it stopped:\n{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn with_a_file_output_too_stdout_closed_is_dropped_and_the_file_keeps_every_kill() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("stdout-and-file");
    let file = dir.0.join("events.ndjson");
    let mut collector =
        PipedCollector::start(&["--output", "-", "--output", file.to_str().unwrap()]);
    let first = cause_a_kill("stdout-and-file-1");
    collector.read_kill_then_close_stdout(first);

    let second = cause_a_kill("stdout-and-file-2");
    wait_until(EVENT_TIMEOUT, "the second kill reaches the file", || {
        kills_of(&file, second) == 1
    });
    assert!(
        is_running(collector.pid()),
        "the collector goes on with the file:\n{}",
        collector.stderr()
    );
    assert_idle(collector.pid(), "with stdout dropped");
    let third = cause_a_kill("stdout-and-file-3");
    wait_until(EVENT_TIMEOUT, "the third kill reaches the file", || {
        kills_of(&file, third) == 1
    });

    let status = collector.terminate();
    let stderr = collector.stderr();
    assert!(
        status.success(),
        "SIGTERM still ends it with 0: {status}\n{stderr}"
    );
    for pid in [first, second, third] {
        assert_eq!(
            kills_of(&file, pid),
            1,
            "the file has the kill of {pid} once"
        );
    }
    assert_eq!(
        stderr
            .matches("stdout was closed by its reader; writing to the other outputs only")
            .count(),
        1,
        "said once:\n{stderr}"
    );
}

#[test]
fn a_full_filesystem_keeps_kills_in_memory_and_writes_them_once_when_space_returns() {
    if !require_root!() {
        return;
    }
    let tmpfs = Tmpfs::mount("full-disk", "64k");
    let file = tmpfs.path().join("events.ndjson");
    let filler = tmpfs.path().join("filler");
    // Fill it, then free one page: a few kill lines fit, and the first one
    // that does not is cut short by the disk.
    let mut fill = fs::File::create(&filler).expect("create the filler");
    while fill.write_all(&[0xa5; 4096]).is_ok() {}
    let full = fill.metadata().expect("filler size").len();
    fill.set_len(full - 4096).expect("free one page");
    drop(fill);

    let collector = Collector::start(&["--output", file.to_str().unwrap()]);
    let mut pids = Vec::new();
    while !collector.stderr().contains("cannot write to this output") {
        assert!(
            is_running(collector.pid()),
            "a full disk does not end the collector:\n{}",
            collector.stderr()
        );
        assert!(
            pids.len() < 8,
            "no write failed after {} kills on a one-page disk:\n{}",
            pids.len(),
            collector.stderr()
        );
        pids.push(cause_a_kill(&format!("full-disk-{}", pids.len())));
        thread::sleep(Duration::from_millis(500));
    }
    let stderr = collector.stderr();
    assert!(
        stderr.contains("No space left on device"),
        "the failure says why:\n{stderr}"
    );
    assert!(
        is_running(collector.pid()),
        "a full disk does not end it:\n{stderr}"
    );
    // documents() checks the file holds whole lines only: the part of a line
    // the disk took was cut off again.
    documents(&file);
    assert_idle(collector.pid(), "with its output failing");
    let more = cause_a_kill("full-disk-more");
    pids.push(more);
    thread::sleep(Duration::from_millis(500));
    assert!(is_running(collector.pid()), "{}", collector.stderr());
    assert_eq!(kills_of(&file, more), 0, "no room for it yet");
    assert_eq!(
        collector
            .stderr()
            .matches("cannot write to this output")
            .count(),
        1,
        "the failure is logged once, not per event:\n{}",
        collector.stderr()
    );

    fs::remove_file(&filler).expect("free the space");
    // No new event is needed: the collector retries on its own.
    wait_until(EVENT_TIMEOUT, "the kept kills reach the file", || {
        kills_of(&file, more) == 1
    });
    let after = cause_a_kill("full-disk-after");
    pids.push(after);
    wait_until(EVENT_TIMEOUT, "a later kill reaches the file", || {
        kills_of(&file, after) == 1
    });
    let stderr = collector.stderr();
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("the output can be written again"),
        "the recovery is logged:\n{stderr}"
    );

    let documents = documents(&file);
    let order: Vec<u32> = documents
        .iter()
        .filter(|json| json["event"]["action"] == "oom_kill")
        .filter_map(|json| json["process"]["pid"].as_u64().map(|pid| pid as u32))
        .filter(|pid| pids.contains(pid))
        .collect();
    assert_eq!(order, pids, "every kill once, in the order they happened");
}

#[test]
fn an_output_file_moved_or_deleted_away_is_started_again_at_its_path() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("rotated-away");
    let file = dir.0.join("events.ndjson");
    let moved = dir.0.join("events.ndjson.1");
    let collector = Collector::start(&["--output", file.to_str().unwrap()]);

    let first = cause_a_kill("rotated-away-1");
    wait_until(EVENT_TIMEOUT, "the first kill reaches the file", || {
        kills_of(&file, first) == 1
    });
    fs::rename(&file, &moved).expect("mv, as logrotate does");
    let second = cause_a_kill("rotated-away-2");
    wait_until(
        EVENT_TIMEOUT,
        "the kill after the mv reaches a new file",
        || kills_of(&file, second) == 1,
    );
    assert_eq!(
        kills_of(&moved, first),
        1,
        "the moved file keeps what it had"
    );
    assert_eq!(kills_of(&moved, second), 0, "and gets nothing new");

    fs::remove_file(&file).expect("rm");
    let third = cause_a_kill("rotated-away-3");
    wait_until(
        EVENT_TIMEOUT,
        "the kill after the rm reaches a new file",
        || kills_of(&file, third) == 1,
    );
    assert_eq!(
        kills_of(&file, second),
        0,
        "a new file, not the deleted one"
    );

    let stderr = collector.stderr();
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr
            .matches("the file was moved or deleted; writing to a new file at its path")
            .count()
            >= 2,
        "each reopening is logged:\n{stderr}"
    );
}
