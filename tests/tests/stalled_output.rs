//! A stdout whose reader stopped reading (a log agent restarting, a full
//! container log pipe) must hold up neither the other outputs nor the
//! collector: real kills, the real binary, stdout a one-page pipe that is
//! full from the start and never read. Root only; see the crate's doc.
//!
//! Other tests on the machine may cause kills meanwhile: every assertion is
//! about the pids of this test's own hogs.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use oom_e2e::{
    collect_text, collector_bin, full_pipe, is_kill_of, poll_until, require_root, scratch_cgroup,
    wait_for_exit, Hog, ScratchDir,
};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const KILLS: usize = 8;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each kill may take to reach the file.
const TO_THE_FILE: Duration = Duration::from_secs(5);
/// How long SIGTERM may take to end the collector: its time to give up on
/// stdout at exit, and some.
const TO_EXIT: Duration = Duration::from_secs(10);

/// The collector, its stdout the write end of a full one-page pipe whose
/// read end the test holds and never reads.
struct StalledCollector {
    child: Child,
    _unread: std::io::PipeReader,
    stderr: Arc<Mutex<String>>,
}

impl StalledCollector {
    fn start(args: &[&str]) -> Self {
        let (unread, stdout) = full_pipe();
        let mut child = Command::new(collector_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oom-collector");
        let stderr = collect_text(child.stderr.take().expect("stderr"));
        let collector = Self {
            child,
            _unread: unread,
            stderr,
        };
        poll_until(
            Duration::from_secs(20),
            || format!("oom-collector to attach; its log:\n{}", collector.stderr()),
            || {
                collector
                    .stderr()
                    .contains("collecting OOM events")
                    .then_some(())
            },
        );
        collector
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for StalledCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every whole line of `path` that is JSON.
fn documents(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn has_kill_of(path: &Path, pid: u32) -> bool {
    documents(path).iter().any(|json| is_kill_of(json, pid))
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` with every step bounded; the status line, or why not.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(2);
    let address = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("no answer within {timeout:?}: {e}"))?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn a_stdout_nobody_reads_holds_up_neither_the_file_nor_readiness_nor_sigterm() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("stalled-stdout");
    let file = dir.0.join("events.ndjson");
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut collector = StalledCollector::start(&[
        "--output",
        "-",
        "--output",
        file.to_str().expect("a UTF-8 path"),
        "--metrics-addr",
        &metrics_addr,
    ]);

    let mut per_kill = Vec::new();
    for n in 0..KILLS {
        let cgroup = scratch_cgroup(&format!("stalled-stdout-{n}"), 32 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(KILL_TIMEOUT);
        let died = Instant::now();
        let pid = hog.pid();
        poll_until(
            TO_THE_FILE,
            || {
                format!(
                    "kill {} of {KILLS} (pid {pid}) to reach {} while stdout is stalled; \
                     {} of the test's kills got there; log:\n{}",
                    n + 1,
                    file.display(),
                    per_kill.len(),
                    collector.stderr()
                )
            },
            || has_kill_of(&file, pid).then_some(()),
        );
        per_kill.push(died.elapsed());
        let ready = http_get(port, "/ready");
        assert!(
            ready
                .as_deref()
                .is_ok_and(|status| status.contains(" 200 ")),
            "/ready answers while stdout is stalled: {ready:?}; log:\n{}",
            collector.stderr()
        );
    }
    poll_until(
        Duration::from_secs(5),
        || format!("the stall to be logged; log:\n{}", collector.stderr()),
        || {
            let stderr = collector.stderr();
            stderr
                .contains("this output has taken no line for a while")
                .then_some(())
        },
    );

    let resident = fs::read_to_string(format!("/proc/{}/status", collector.child.id()))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            Some(line.trim_start_matches("VmRSS:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let pid = rustix::process::Pid::from_raw(collector.child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let sent = Instant::now();
    let log = Arc::clone(&collector.stderr);
    let status = wait_for_exit(&mut collector.child, TO_EXIT, || {
        log.lock().expect("stderr lock").clone()
    });
    let to_exit = sent.elapsed();
    let stderr = collector.stderr();
    // The lines stdout never took are lost, said so in the log, and make
    // the exit status 1, as any output's lines left at exit do.
    let unwritten = stderr
        .lines()
        .find(|line| line.contains("kept in memory for stdout could not be written before exit"))
        .unwrap_or_else(|| panic!("the lines lost to stdout are counted:\n{stderr}"));
    assert_eq!(
        status.code(),
        Some(1),
        "SIGTERM ends it on its own, exit status 1 for the lost lines: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("SIGTERM: draining and stopping"),
        "it stopped for the SIGTERM:\n{stderr}"
    );

    // And on record where the events are: an events_lost document in the
    // file, counting the same lines.
    let lost: Vec<u64> = documents(&file)
        .iter()
        .filter(|json| {
            json["event"]["action"] == "events_lost"
                && json["oom"]["lost"]["reason"] == "output_failed"
        })
        .filter_map(|json| json["oom"]["lost"]["count"].as_u64())
        .collect();
    let [lost] = lost[..] else {
        panic!("one output_failed events_lost document in the file, not {lost:?}:\n{stderr}");
    };
    assert!(
        unwritten.contains(&format!(" {lost} event(s) kept in memory for stdout")),
        "the document counts the lines the log names ({lost}): {unwritten}"
    );

    let times: Vec<String> = per_kill.iter().map(|t| format!("{t:.2?}")).collect();
    eprintln!(
        "kills delivered to the file: {}/{KILLS}; hog seen dead to kill in the file: [{}]; \
         SIGTERM to exit: {to_exit:.2?}; lost to stdout: {lost}; resident before \
         SIGTERM: {resident}",
        per_kill.len(),
        times.join(", ")
    );
}

#[test]
fn a_stderr_nobody_reads_holds_up_neither_the_kills_nor_readiness_nor_sigterm() {
    if !require_root!() {
        return;
    }
    // In a pod, stdout and stderr share the log pipe the runtime reads:
    // when it stalls, the collector's own log lines block too.
    let dir = ScratchDir::new("stalled-stderr");
    let file = dir.0.join("events.ndjson");
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let (_unread, stderr) = full_pipe();
    let mut child = Command::new(collector_bin())
        .args([
            "--output",
            file.to_str().expect("a UTF-8 path"),
            "--metrics-addr",
            &metrics_addr,
        ])
        // Every kill and every hook is a log line.
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start oom-collector");
    let guard = KillOnDrop(&mut child);
    poll_until(
        Duration::from_secs(20),
        || "/ready with stderr stalled from the start".into(),
        || {
            http_get(port, "/ready")
                .is_ok_and(|status| status.contains(" 200 "))
                .then_some(())
        },
    );
    let mut per_kill = Vec::new();
    for n in 0..KILLS {
        let cgroup = scratch_cgroup(&format!("stalled-stderr-{n}"), 32 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(KILL_TIMEOUT);
        let died = Instant::now();
        let pid = hog.pid();
        poll_until(
            TO_THE_FILE,
            || format!("kill {} of {KILLS} (pid {pid}) to reach the file", n + 1),
            || has_kill_of(&file, pid).then_some(()),
        );
        per_kill.push(died.elapsed());
    }
    let pid = rustix::process::Pid::from_raw(guard.0.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let sent = Instant::now();
    let status = wait_for_exit(guard.0, TO_EXIT, || "(stderr is stalled)".into());
    let to_exit = sent.elapsed();
    assert!(status.success(), "SIGTERM ends it: {status}");
    let times: Vec<String> = per_kill.iter().map(|t| format!("{t:.2?}")).collect();
    eprintln!(
        "figures: stderr stalled: kills delivered to the file {}/{KILLS}, hog seen dead to \
         kill in the file [{}]; SIGTERM to exit {to_exit:.2?}",
        per_kill.len(),
        times.join(", ")
    );
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `/healthz` (the DaemonSet's liveness probe) fails once every output has
/// been blocked in one write for `--healthz-output-stall`, so a collector
/// whose only output hangs is restarted; with a file output still writing
/// beside the stalled stdout it stays healthy.
#[test]
fn healthz_fails_when_every_output_is_blocked_and_only_then() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("healthz");
    let file = dir.0.join("events.ndjson");
    let file = file.to_str().expect("a UTF-8 path");
    for (outputs, blocked) in [
        (vec!["--output", "-"], true),
        (vec!["--output", "-", "--output", file], false),
    ] {
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut args = outputs.clone();
        args.extend([
            "--metrics-addr",
            &metrics_addr,
            "--healthz-output-stall",
            "2s",
        ]);
        let collector = StalledCollector::start(&args);
        let healthz = || http_get(port, "/healthz").unwrap_or_else(|e| e);
        assert!(
            healthz().contains(" 200 "),
            "healthy at start: {}",
            healthz()
        );
        let cgroup = scratch_cgroup("healthz", 32 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(KILL_TIMEOUT);
        if blocked {
            poll_until(
                Duration::from_secs(15),
                || {
                    format!(
                        "/healthz to fail with stdout, the only output, blocked: {}",
                        healthz()
                    )
                },
                || healthz().contains(" 503 ").then_some(()),
            );
        } else {
            std::thread::sleep(Duration::from_secs(4));
            assert!(
                healthz().contains(" 200 "),
                "a file still writes beside the stalled stdout: {}; log:\n{}",
                healthz(),
                collector.stderr()
            );
        }
    }
}
