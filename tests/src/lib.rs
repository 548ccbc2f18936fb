//! Helpers for the end-to-end tests: they run the real `oom-collector`
//! binary against the real kernel, cause real OOM kills inside scratch
//! memory cgroups, and read the JSON lines it prints.
//!
//! These tests need root. Outside CI they skip with a printed reason; under
//! `CI=true` a test that cannot run fails, so CI never passes by skipping.

pub mod qemu;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

/// Whether a root-only test can run: true as root; otherwise prints why it
/// skips, or panics under `CI=true`.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root (it loads eBPF programs and makes cgroups), and CI=true");
    }
    eprintln!("skipping {test}: needs root (run `cargo xtask test` as root)");
    false
}

/// The absolute path of `program` when a test can use it; otherwise prints
/// why the test skips, or panics under `CI=true`, and gives `None`.
pub fn require_program(test: &str, program: &str) -> Option<PathBuf> {
    if let Some(path) = find_program(program) {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs {program}, which is not on PATH, and CI=true");
    }
    eprintln!("skipping {test}: needs {program}, which is not on PATH");
    None
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

/// A memory cgroup of our own with a memory limit, under the v1 memory
/// controller or cgroup v2, whichever the host has. Dropping it kills what
/// is still inside (only our own processes ever are) and removes it.
pub struct ScratchCgroup {
    pub dir: PathBuf,
    /// The path the kernel and `/proc/<pid>/cgroup` show: `/<name>`.
    pub path: String,
    pub limit_bytes: u64,
}

const V1_MEMORY: &str = "/sys/fs/cgroup/memory";
const V2_ROOT: &str = "/sys/fs/cgroup";

impl ScratchCgroup {
    pub fn new(label: &str, limit_bytes: u64) -> Self {
        let (root, limit_file) = if Path::new(V1_MEMORY).join("memory.limit_in_bytes").exists() {
            (V1_MEMORY, "memory.limit_in_bytes")
        } else {
            let controllers = fs::read_to_string(Path::new(V2_ROOT).join("cgroup.subtree_control"))
                .unwrap_or_default();
            assert!(
                controllers.split_whitespace().any(|c| c == "memory"),
                "no memory cgroup controller to test with (neither v1 at {V1_MEMORY} nor \
                 v2 at {V2_ROOT} with memory in cgroup.subtree_control)"
            );
            (V2_ROOT, "memory.max")
        };
        let name = format!("oom-e2e-{label}-{}", std::process::id());
        let dir = Path::new(root).join(&name);
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let cgroup = Self {
            dir,
            path: format!("/{name}"),
            limit_bytes,
        };
        fs::write(cgroup.dir.join(limit_file), limit_bytes.to_string())
            .unwrap_or_else(|e| panic!("cannot set {limit_file}: {e}"));
        for (swap_file, value) in [
            ("memory.memsw.limit_in_bytes", limit_bytes.to_string()),
            ("memory.swap.max", "0".to_owned()),
        ] {
            // Only where swap is accounted; without swap there is nothing to limit.
            let _ = fs::write(cgroup.dir.join(swap_file), value);
        }
        cgroup
    }

    /// A child cgroup without a limit of its own; drop it before `self`.
    pub fn child(&self, name: &str) -> Self {
        let dir = self.dir.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Self {
            dir,
            path: format!("{}/{name}", self.path),
            limit_bytes: self.limit_bytes,
        }
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = fs::read_to_string(self.procs_file()).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
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
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the hog") {
                return (status, SystemTime::now());
            }
            assert!(
                Instant::now() < deadline,
                "the hog (pid {}) was not OOM-killed within {timeout:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pipe`'s text, line by line as it comes, read on a thread.
pub fn collect_text(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().expect("text lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// Waits for `child` to exit; after `timeout`, fails the test with `log()`.
pub fn wait_for_exit(child: &mut Child, timeout: Duration, log: impl Fn() -> String) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "pid {} still runs {timeout:?} later; its log:\n{}",
            child.id(),
            log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One line the collector printed, and when the test read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub json: Value,
    pub read_at: SystemTime,
}

/// The real collector binary, running, its stdout parsed line by line.
pub struct Collector {
    child: Child,
    lines: Receiver<Line>,
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
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let read_at = SystemTime::now();
                let json = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if sender.send(Line { json, read_at }).is_err() {
                    break;
                }
            }
        });
        let stderr = collect_text(child.stderr.take().expect("stderr"));
        let mut collector = Self {
            child,
            lines,
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
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "oom-collector exited with {status} before {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from oom-collector within {timeout:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next line for which `matches` holds, skipping others.
    pub fn next_line(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Line {
        self.lines_until(timeout, matches)
            .pop()
            .expect("lines_until ends with the match")
    }

    /// Every line up to and including the first for which `matches` holds.
    pub fn lines_until(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
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

    /// The OOM kill line of `pid`.
    pub fn kill_of(&self, pid: u32, timeout: Duration) -> Line {
        self.next_line(timeout, |json| {
            json["event"]["action"] == "oom_kill" && json["process"]["pid"] == pid
        })
    }

    /// Sends SIGTERM, waits for the exit, and returns its status with every
    /// line not yet read.
    pub fn stop(mut self) -> (ExitStatus, Vec<Line>) {
        self.signal(rustix::process::Signal::TERM);
        let stderr = Arc::clone(&self.stderr);
        let status = wait_for_exit(&mut self.child, Duration::from_secs(10), || {
            stderr.lock().expect("stderr lock").clone()
        });
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
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
