//! Stopping: a SIGTERM at any moment of the collector's start-up ends it
//! the way one while running does (it finishes starting, drains, exits 0),
//! never by the signal's default action; and no kill its hooks saw is
//! dropped unsaid while it stops. Root only; see the crate's doc.

use std::{
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use oom_e2e::{
    collector_bin, full_pipe, poll_until, require_program, require_root, scratch_cgroup, Ending,
    Hog, ScratchDir,
};
use serde_json::Value;

#[test]
fn a_sigterm_during_start_up_ends_the_collector_cleanly() {
    if !require_root!() {
        return;
    }
    // Start-up (loading the programs, reading /proc) takes 150-400 ms
    // here; counted from the exec, these land in it and near its end.
    for delay_ms in [30, 60, 100, 140, 200] {
        let mut collector = Ending::start(&["--output", "/dev/null"]);
        let comm = format!("/proc/{}/comm", collector.child.id());
        poll_until(
            Duration::from_secs(5),
            || "the collector's exec".into(),
            || {
                std::fs::read_to_string(&comm)
                    .is_ok_and(|c| c.trim() == "oom-collector")
                    .then_some(())
            },
        );
        thread::sleep(Duration::from_millis(delay_ms));
        let running = collector.stderr().contains("collecting OOM events");
        let pid = rustix::process::Pid::from_raw(collector.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        let sent = Instant::now();
        let (status, log) = collector.wait(Duration::from_secs(15), "it should stop on SIGTERM");
        assert_eq!(
            status.signal(),
            None,
            "SIGTERM {delay_ms} ms after its exec (running: {running}) killed it \
             instead of stopping it:\n{log}"
        );
        assert!(
            status.success(),
            "SIGTERM {delay_ms} ms after its exec: {status}\n{log}"
        );
        eprintln!(
            "figures: SIGTERM {delay_ms} ms after its exec (running: {running}): exit 0 \
             {:?} later",
            sent.elapsed()
        );
    }
}

/// Every kill the collector's `mark_victim` hook saw is written or counted
/// lost, including those while it flushes its outputs at exit: SIGTERM in
/// a steady stream of kills, with stdout a pipe nobody reads, so the exit
/// waits out stdout's grace (seconds) while kills go on. The truth is the
/// kernel's own count of the hook's runs (`run_cnt`, with BPF statistics
/// on while the test runs), read from the program after the collector has
/// gone: the test pins it.
#[test]
fn every_kill_the_hook_saw_is_written_or_counted_even_at_exit() {
    if !require_root!() {
        return;
    }
    let Some(bpftool) = require_program!("bpftool") else {
        return;
    };
    let _stats = BpfStats::enable();
    let dir = ScratchDir::new("kills-at-exit");
    let file = dir.0.join("events.ndjson");
    let (unread, stdout) = full_pipe();
    let mut collector = Ending::spawn({
        let mut command = Command::new(collector_bin());
        command
            .args(["--output", "-", "--output"])
            .arg(&file)
            .stdout(stdout);
        command
    });
    collector.wait_until_attached();
    let hook = PinnedProgram::of(&bpftool, collector.child.id(), "mark_victim");

    let cgroup = scratch_cgroup("kills-at-exit", 16 * MIB);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                Hog::start(&cgroup).wait(Duration::from_secs(30));
                kills += 1;
            }
            kills
        })
    };
    poll_until(
        Duration::from_secs(30),
        || format!("three kills in {}", file.display()),
        || (kills_in(&file) >= 3).then_some(()),
    );
    let pid = rustix::process::Pid::from_raw(collector.child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    let sent = Instant::now();
    let (status, log) = collector.wait(Duration::from_secs(20), "it should stop on SIGTERM");
    let to_exit = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().expect("the kill loop");
    drop(unread);

    let runs = hook.run_count();
    let written = kills_in(&file);
    let lost = kernel_losses_in(&file);
    eprintln!(
        "figures: {kills} kills caused, SIGTERM to exit {to_exit:.2?} ({status}); the hook ran \
         {runs} times; {written} kill lines in the file, {lost} counted lost"
    );
    assert!(
        to_exit > Duration::from_secs(1),
        "the exit waited on the stalled stdout, with kills going on meanwhile"
    );
    assert_eq!(
        written + lost,
        runs,
        "every run of the mark_victim hook is a kill line or a counted loss; log:\n{log}"
    );
}

const MIB: u64 = 1024 * 1024;

fn documents(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn kills_in(path: &Path) -> u64 {
    documents(path)
        .iter()
        .filter(|json| json["event"]["action"] == "oom_kill")
        .count() as u64
}

/// What the kernel side counted lost (not what an output failed to take).
fn kernel_losses_in(path: &Path) -> u64 {
    documents(path)
        .iter()
        .filter(|json| {
            json["event"]["action"] == "events_lost"
                && json["oom"]["lost"]["reason"] != "output_failed"
        })
        .filter_map(|json| json["oom"]["lost"]["count"].as_u64())
        .sum()
}

/// The kernel's run statistics of BPF programs, on while this lives
/// (`BPF_ENABLE_STATS`: off again when its descriptor closes, whatever
/// the sysctl says).
struct BpfStats {
    /// Held, not read: closing it turns the statistics off.
    _on: OwnedFd,
}

impl BpfStats {
    fn enable() -> Self {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        let attr = [BPF_STATS_RUN_TIME];
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of `attr`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        assert!(
            fd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel gave this new descriptor to us alone.
        Self {
            _on: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        }
    }
}

/// One of the collector's programs, pinned by the test so that it outlives
/// the collector and its statistics can be read after; unpinned on drop.
struct PinnedProgram {
    bpftool: PathBuf,
    path: PathBuf,
}

impl PinnedProgram {
    /// The program named `name` among those process `pid` holds.
    fn of(bpftool: &Path, pid: u32, name: &str) -> Self {
        let id = poll_until(
            Duration::from_secs(20),
            || format!("process {pid} to hold a program named {name}"),
            || {
                let fdinfo = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
                fdinfo
                    .filter_map(Result::ok)
                    .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                    .filter_map(|info| {
                        info.lines()
                            .find_map(|line| line.strip_prefix("prog_id:"))
                            .map(|id| id.trim().to_owned())
                    })
                    .find(|id| bpftool_json(bpftool, &["prog", "show", "id", id])["name"] == name)
            },
        );
        let path = PathBuf::from(format!("/sys/fs/bpf/oom-e2e-{}-{name}", std::process::id()));
        let pinned = Command::new(bpftool)
            .args(["prog", "pin", "id", &id])
            .arg(&path)
            .status()
            .expect("run bpftool");
        assert!(pinned.success(), "bpftool prog pin id {id}: {pinned}");
        Self {
            bpftool: bpftool.to_owned(),
            path,
        }
    }

    /// How many times the kernel ran it while statistics were on.
    fn run_count(&self) -> u64 {
        let path = self.path.to_str().expect("a UTF-8 path");
        let info = bpftool_json(&self.bpftool, &["prog", "show", "pinned", path]);
        info["run_cnt"].as_u64().unwrap_or(0)
    }
}

impl Drop for PinnedProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bpftool_json(bpftool: &Path, args: &[&str]) -> Value {
    let output = Command::new(bpftool)
        .arg("--json")
        .args(args)
        .output()
        .expect("run bpftool");
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}
