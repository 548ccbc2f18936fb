//! Helpers for the end-to-end tests: they run the real `oom-collector`
//! binary against the real kernel, cause real OOM kills inside scratch
//! memory cgroups, and read the JSON lines it prints.
//!
//! These tests need root. Outside CI they skip with a printed reason; under
//! `CI=true` a test that cannot run fails, so CI never passes by skipping.

pub mod containerd;
pub mod image;
pub mod manifest;
pub mod qemu;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

pub use scratch_cgroup::ScratchCgroup;
use serde_json::Value;

/// The name of the function this is written in: inside a `#[test]`, the
/// test's name, which the skip and failure messages give.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        fn name_of<T>(_: T) -> &'static str {
            std::any::type_name::<T>()
        }
        let path = name_of(here).trim_end_matches("::here");
        path.rsplit("::").next().unwrap_or(path)
    }};
}

/// Whether the enclosing root-only test can run: true as root; otherwise
/// prints why it skips, or panics under `CI=true`. Written
/// `if !require_root!() { return; }`.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root_for($crate::test_name!())
    };
}

/// The absolute path of `program` when the enclosing test can use it;
/// otherwise prints why the test skips, or panics under `CI=true`, and
/// gives `None`.
#[macro_export]
macro_rules! require_program {
    ($program:expr) => {
        $crate::require_program_for($crate::test_name!(), $program)
    };
}

/// What [`require_root!`] does for the test named `test`.
#[track_caller]
pub fn require_root_for(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test} needs root (it loads eBPF programs and makes cgroups), and CI=true");
    }
    eprintln!("skipping {test}: needs root (run `cargo xtask test` as root)");
    false
}

/// What [`require_program!`] does for the test named `test`.
#[track_caller]
pub fn require_program_for(test: &str, program: &str) -> Option<PathBuf> {
    if let Some(path) = find_program(program) {
        return Some(path);
    }
    if in_ci() {
        panic!("{test} needs {program}, which is not on PATH, and CI=true");
    }
    eprintln!("skipping {test}: needs {program}, which is not on PATH");
    None
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// How often [`poll_until`] asks again: fine enough to time an exit to a
/// few milliseconds, coarse enough not to busy a CPU.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Asks `ready` again and again until it gives a value, and returns it;
/// after `timeout`, fails the test naming `what` was awaited (a closure,
/// so that it can say what was seen meanwhile).
pub fn poll_until<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {}",
            what()
        );
        thread::sleep(POLL_EVERY);
    }
}

/// The collector under test: `OOM_COLLECTOR_BIN` (set by `cargo xtask
/// test`), else the workspace's release or debug build.
pub fn collector_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("OOM_COLLECTOR_BIN") {
        return PathBuf::from(path);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("oom-collector"))
        .find(|path| path.exists())
        .expect(
            "no oom-collector binary: build it with `cargo xtask build` or run `cargo xtask test`",
        )
}

/// A directory of our own under the temporary directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oom-e2e-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `oom-e2e-<label>-<our pid>`, limited to `limit_bytes`, at the memory
/// hierarchy's usual mount point; the test fails if it cannot be made.
pub fn scratch_cgroup(label: &str, limit_bytes: u64) -> ScratchCgroup {
    let name = format!("oom-e2e-{label}-{}", std::process::id());
    ScratchCgroup::create(&name, limit_bytes)
        .unwrap_or_else(|e| panic!("no scratch memory cgroup to test with: {e} ({e:?})"))
}

/// A child of `parent` without a limit of its own; drop it before `parent`.
pub fn child_cgroup(parent: &ScratchCgroup, name: &str) -> ScratchCgroup {
    parent
        .child(name)
        .unwrap_or_else(|e| panic!("cannot make the child cgroup {name}: {e} ({e:?})"))
}

/// `tail /dev/zero` inside a cgroup: it buffers an endless line, so its
/// memory grows until the OOM killer ends it. It joins the cgroup before it
/// starts (the shell writes its own pid, then execs), so its pid is the
/// shell's and all its memory is charged to the cgroup.
pub struct Hog {
    child: Child,
}

impl Hog {
    pub fn start(cgroup: &ScratchCgroup) -> Self {
        let script = format!(
            "echo $$ > '{}' && exec tail /dev/zero",
            cgroup.procs_file().display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the hog");
        Self { child }
    }

    /// Runs `argv` inside `cgroup` instead: the shell joins the cgroup, then
    /// executes `argv[0]` with `argv` as its arguments.
    pub fn exec(cgroup: &ScratchCgroup, argv: &[String]) -> Self {
        let script = format!(
            "echo $$ > '{}' && exec \"$@\"",
            cgroup.procs_file().display()
        );
        let child = Command::new("sh")
            .args(["-c", &script, "sh"])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the hog");
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the hog to end; returns how it ended and when.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, SystemTime) {
        let pid = self.pid();
        poll_until(
            timeout,
            || format!("the OOM kill of the hog (pid {pid})"),
            || {
                let status = self.child.try_wait().expect("wait for the hog")?;
                Some((status, SystemTime::now()))
            },
        )
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pipe`'s text, line by line as it comes, read on a thread; bytes that
/// are not UTF-8 are replaced, not an end.
pub fn collect_text(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            let mut text = sink.lock().expect("text lock");
            text.push_str(&String::from_utf8_lossy(&line));
            text.push('\n');
        }
    });
    text
}

/// A one-page pipe, full from the start: its read end, which nobody is to
/// read, and its write end, for a collector's stdout or stderr that has
/// stalled (a log agent restarting, a container's full log pipe).
pub fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    const PAGE: usize = 4096;
    let (unread, mut write_end) = std::io::pipe().expect("pipe");
    // SAFETY: F_SETPIPE_SZ only resizes the pipe behind a valid descriptor.
    let size = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PAGE) };
    assert_eq!(
        size,
        PAGE as i32,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    write_end.write_all(&[b'\n'; PAGE]).expect("fill the pipe");
    (unread, write_end)
}

/// Waits for `child` to exit; after `timeout`, fails the test with `log()`.
pub fn wait_for_exit(child: &mut Child, timeout: Duration, log: impl Fn() -> String) -> ExitStatus {
    let pid = child.id();
    poll_until(
        timeout,
        || format!("pid {pid} to exit; its log:\n{}", log()),
        || child.try_wait().expect("try_wait"),
    )
}

/// One line the collector printed, and when the test read it.
#[derive(Clone, Debug)]
pub struct Line {
    /// As printed; bytes that are not UTF-8 replaced (lossy).
    pub text: String,
    /// The line parsed, or `Value::Null` when it is not JSON: see
    /// [`Line::expect_json`].
    pub json: Value,
    pub read_at: SystemTime,
}

impl Line {
    fn read(bytes: &[u8]) -> Self {
        let read_at = SystemTime::now();
        let text = String::from_utf8_lossy(bytes).into_owned();
        let json = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        Self {
            text,
            json,
            read_at,
        }
    }

    /// Fails the test unless this line was a JSON document: the collector
    /// prints nothing else on stdout with the default `--format json`.
    pub fn expect_json(&self) -> &Self {
        if let Err(error) = serde_json::from_str::<Value>(&self.text) {
            panic!(
                "oom-collector printed a line that is not a JSON document ({error}): {:?}",
                self.text
            );
        }
        self
    }
}

/// The real collector binary, started for a test that expects it to end by
/// itself (refused, or stopped by a signal), its stderr collected; killed
/// on drop if it is still running.
pub struct Ending {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Ending {
    /// Starts `oom-collector ARGS` with stdout discarded.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(collector_bin());
        command.args(args).stdout(Stdio::null());
        Self::spawn(command)
    }

    /// Starts the collector through `command`, whose stdout the caller
    /// chose.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oom-collector");
        let stderr = collect_text(child.stderr.take().expect("stderr"));
        Self { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits until it says it is collecting (its hooks are attached).
    pub fn wait_until_attached(&self) {
        poll_until(
            Duration::from_secs(20),
            || format!("the collector to attach; its log:\n{}", self.stderr()),
            || {
                self.stderr()
                    .contains("collecting OOM events")
                    .then_some(())
            },
        );
    }

    /// Waits for its exit; past `timeout` the test fails, saying what it
    /// should have done. Its stderr, read to the end, comes with the status.
    pub fn wait(&mut self, timeout: Duration, should: &str) -> (ExitStatus, String) {
        let stderr = Arc::clone(&self.stderr);
        let status = wait_for_exit(&mut self.child, timeout, || {
            format!("({should}) {}", stderr.lock().expect("stderr lock"))
        });
        // The reader thread may lag the exit a little.
        thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The real collector binary, running, its stdout parsed line by line.
pub struct Collector {
    child: Child,
    lines: Receiver<Line>,
    /// Every line read from `lines` so far, for [`Collector::kills_of`].
    read: Mutex<Vec<Line>>,
    stderr: Arc<Mutex<String>>,
}

impl Collector {
    /// Starts `oom-collector ARGS` and waits until it is attached.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(collector_bin());
        command.args(args);
        Self::spawn(command)
    }

    /// Starts the collector through `command` (which runs the binary
    /// somehow, e.g. inside `unshare`) and waits until it is attached.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oom-collector");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        // Bytes, not text: a line that is not UTF-8 or not JSON is kept as
        // it is for the test to see, rather than ending the reading here.
        thread::spawn(move || {
            for bytes in BufReader::new(stdout).split(b'\n') {
                let Ok(bytes) = bytes else { break };
                if sender.send(Line::read(&bytes)).is_err() {
                    break;
                }
            }
        });
        let stderr = collect_text(child.stderr.take().expect("stderr"));
        let mut collector = Self {
            child,
            lines,
            read: Mutex::new(Vec::new()),
            stderr,
        };
        collector.wait_for_stderr("collecting OOM events", Duration::from_secs(20));
        collector
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the collector a signal (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal the collector");
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let stderr = Arc::clone(&self.stderr);
        let log = move || stderr.lock().expect("stderr lock").clone();
        poll_until(
            timeout,
            || format!("{needle:?} from oom-collector; its log:\n{}", log()),
            || {
                if self.stderr().contains(needle) {
                    return Some(());
                }
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "oom-collector exited with {status} before {needle:?}:\n{}",
                        self.stderr()
                    );
                }
                None
            },
        );
    }

    /// The next line for which `matches` holds, skipping others.
    pub fn next_line(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Line {
        self.lines_until(timeout, matches)
            .pop()
            .expect("lines_until ends with the match")
    }

    /// Every line up to and including the first for which `matches` holds;
    /// each must be a JSON document.
    pub fn lines_until(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    line.expect_json();
                    self.read.lock().expect("read lock").push(line.clone());
                    let done = matches(&line.json);
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no matching line from oom-collector within {timeout:?}; its log:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// The next OOM kill line of `pid`.
    pub fn kill_of(&self, pid: u32, timeout: Duration) -> Line {
        self.next_line(timeout, |json| is_kill_of(json, pid))
    }

    /// Every line read so far, awaited or skipped over.
    pub fn lines_read(&self) -> Vec<Line> {
        self.read.lock().expect("read lock").clone()
    }

    /// Every OOM kill line of `pid` read so far, awaited or skipped over:
    /// what "delivered once" counts.
    pub fn kills_of(&self, pid: u32) -> Vec<Line> {
        let read = self.read.lock().expect("read lock");
        kills_of(&read, pid)
    }

    /// Sends SIGTERM, waits for the exit, and returns its status with every
    /// line not yet read; each must be a JSON document.
    pub fn stop(mut self) -> (ExitStatus, Vec<Line>) {
        self.signal(rustix::process::Signal::TERM);
        let stderr = Arc::clone(&self.stderr);
        let status = wait_for_exit(&mut self.child, Duration::from_secs(10), || {
            stderr.lock().expect("stderr lock").clone()
        });
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            line.expect_json();
            rest.push(line);
        }
        (status, rest)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `addr` (the collector's `--metrics-addr`); the status
/// code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to --metrics-addr");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Whether `json` is the OOM kill line of `pid`.
pub fn is_kill_of(json: &Value, pid: u32) -> bool {
    json["event"]["action"] == "oom_kill" && json["process"]["pid"] == pid
}

/// The OOM kill lines of `pid` among `lines`.
pub fn kills_of(lines: &[Line], pid: u32) -> Vec<Line> {
    lines
        .iter()
        .filter(|line| is_kill_of(&line.json, pid))
        .cloned()
        .collect()
}

/// `@timestamp` of a document.
pub fn timestamp(json: &Value) -> SystemTime {
    let text = json["@timestamp"].as_str().expect("@timestamp is a string");
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("@timestamp {text}: {e}"))
}

/// The absolute path of a program on `PATH`, as a shell would find it.
pub fn which(program: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| panic!("{program} is not on PATH"))
}

fn find_program(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Resident memory of a process, from `/proc/<pid>/status`.
pub fn resident_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in status")
}

/// Absolute difference of two times.
pub fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_name_is_the_enclosing_functions() {
        assert_eq!(crate::test_name!(), "test_name_is_the_enclosing_functions");
    }
}
