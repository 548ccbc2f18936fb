//! The programs the bench runs and watches: the collector with its reader,
//! bpftrace, scratch memory cgroups, and their footprint from `/proc`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{boot_ns, median, now_ns, Tools, BPFTRACE_PROGRAM};
use crate::system::run_checked;

/// How often a starting tool's open files are listed.
const ATTACH_POLL: Duration = Duration::from_millis(1);
/// A tool has attached what it attaches once it said it was ready and
/// opened nothing new for this long.
const ATTACH_SETTLED: Duration = Duration::from_millis(200);

/// A program the bench started: ready once a line of its output contained a
/// marker; killed if dropped still running.
pub struct Watched {
    child: Child,
    /// From spawn to the last of its programs attached (the file
    /// descriptor through which bpftool shows it attached first seen in
    /// `/proc`, listed every millisecond); only when asked for.
    pub attached: Option<Duration>,
    /// The programs bpftool showed attached for it.
    pub attached_programs: usize,
    /// utime + stime once ready: what starting cost it.
    pub startup_ticks: u64,
    /// The last lines of its diagnostics, for error messages.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Watched {
    /// Starts `command`; `ready` hooks up its output and returns the channel
    /// that fires when it says it is ready. With `time_attach`, its open
    /// files are listed every [`ATTACH_POLL`] from the spawn on, and once
    /// it has settled bpftool says which of them attach its programs, so
    /// that start-up is timed to the same event for every tool, whatever
    /// it prints when.
    pub fn spawn(
        name: &str,
        command: &mut Command,
        time_attach: bool,
        ready: impl FnOnce(&mut Child, Arc<Mutex<VecDeque<String>>>) -> mpsc::Receiver<()>,
    ) -> Result<Self> {
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let said_ready = ready(&mut child, Arc::clone(&log));
        let mut watched = Self {
            child,
            attached: None,
            attached_programs: 0,
            startup_ticks: 0,
            log,
        };
        let pid = watched.pid();
        let deadline = spawned + Duration::from_secs(30);
        // Each file descriptor it opened (number and what it is), with
        // when it was first seen.
        let mut opened: HashMap<(String, String), Duration> = HashMap::new();
        let mut last_new = Duration::ZERO;
        let mut ready_at = None;
        loop {
            if time_attach {
                for fd in open_fds(pid) {
                    opened.entry(fd).or_insert_with(|| {
                        last_new = spawned.elapsed();
                        last_new
                    });
                }
            }
            if ready_at.is_none() {
                let wait = if time_attach {
                    ATTACH_POLL
                } else {
                    Duration::from_secs(30)
                };
                match said_ready.recv_timeout(wait) {
                    Ok(()) => ready_at = Some(spawned.elapsed()),
                    Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                    Err(_) => bail!(
                        "{name} ended or did not attach within 30 s; its log ends:\n{}",
                        watched.log_tail()
                    ),
                }
            } else {
                thread::sleep(ATTACH_POLL);
            }
            // Ready, and nothing new opened for a while: what it attaches
            // is attached.
            let settled = ready_at.is_some_and(|ready| {
                !time_attach || spawned.elapsed() > ready.max(last_new) + ATTACH_SETTLED
            });
            if settled {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} kept opening files for 30 s");
            }
        }
        if time_attach {
            let attaching = attaching_fds(pid);
            watched.attached_programs = attaching.len();
            watched.attached = opened
                .iter()
                .filter(|((fd, _), _)| attaching.contains(fd))
                .map(|(_, &since)| since)
                .max();
        }
        watched.startup_ticks = usage(pid)?.cpu_ticks;
        Ok(watched)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGINT, then its exit, which must be clean.
    pub fn interrupt(&mut self, name: &str) -> Result<()> {
        run_checked(Command::new("kill").args(["-INT", &self.pid().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "{name} exited with {status}; its log ends:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The eBPF programs `pid` holds (prog and link fds both name theirs in
/// fdinfo).
pub fn programs_of(pid: u32) -> HashSet<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Runs `bpftool ... --json`; `null` where it fails.
pub fn bpftool(args: &[&str]) -> serde_json::Value {
    Command::new("bpftool")
        .args(args)
        .arg("--json")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `pid`'s open file descriptors: (number, what it refers to).
fn open_fds(pid: u32) -> Vec<(String, String)> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            Some((
                fd.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// The file descriptors through which `pid` has a program attached, as
/// bpftool shows them: the BPF links (`bpftool link`) whose program it
/// holds, and the perf events and raw tracepoints bpftool lists for it
/// (`bpftool perf`, where bpftrace's are). A link is found by its fd's
/// `link_id` among bpftool's links.
fn attaching_fds(pid: u32) -> HashSet<String> {
    let mut fds = HashSet::new();
    let links: HashSet<u64> = bpftool(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| link["id"].as_u64())
        .collect();
    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for entry in entries.filter_map(Result::ok) {
            let info = fs::read_to_string(entry.path()).unwrap_or_default();
            let link = info
                .lines()
                .find_map(|line| line.strip_prefix("link_id:"))
                .and_then(|id| id.trim().parse().ok());
            if link.is_some_and(|id| links.contains(&id)) {
                fds.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    for entry in bpftool(&["perf", "show"]).as_array().into_iter().flatten() {
        if entry["pid"].as_u64() == Some(u64::from(pid)) {
            if let Some(fd) = entry["fd"].as_u64() {
                fds.insert(fd.to_string());
            }
        }
    }
    fds
}

/// Reads `pipe` line by line on a thread, handing each line and its
/// arrival to `each` and keeping the last few in `log`; the returned
/// channel fires at the first line containing `marker`, if given.
pub fn watch_lines(
    pipe: impl Read + Send + 'static,
    marker: Option<&'static str>,
    log: Arc<Mutex<VecDeque<String>>>,
    mut each: impl FnMut(&str, i64) + Send + 'static,
) -> mpsc::Receiver<()> {
    let (ready, attached) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let arrived = now_ns();
            if marker.is_some_and(|marker| line.contains(marker)) {
                let _ = ready.send(());
            }
            each(&line, arrived);
            let mut log = log.lock().expect("log lock");
            if log.len() == 20 {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
    attached
}

/// Where the collector's lines go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// `--output /dev/null`.
    Discard,
    /// stdout, read by `bench_lines`, which stamps their arrival: waiting
    /// on one thread, or on two CPUs at once (`--any-cpu`).
    Read { any_cpu: bool },
}

/// When one kill reached each step in the collector, from its timing log
/// (nanoseconds of CLOCK_BOOTTIME).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub kernel_ns: u64,
    pub woken_ns: u64,
    pub decoded_ns: u64,
    pub enriched_ns: u64,
    pub written_ns: u64,
}

impl Timing {
    /// A `kill timed` line of the collector's log: `key=value` fields.
    fn parse(line: &str) -> Option<(u32, Self)> {
        if !line.contains("kill timed") {
            return None;
        }
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse().ok())
        };
        Some((
            u32::try_from(field("pid")?).ok()?,
            Self {
                kernel_ns: field("kernel_ns")?,
                woken_ns: field("woken_ns")?,
                decoded_ns: field("decoded_ns")?,
                enriched_ns: field("enriched_ns")?,
                written_ns: field("written_ns")?,
            },
        ))
    }
}

/// The collector, running.
pub struct Collector {
    pub watched: Watched,
    reader: Option<(Child, JoinHandle<()>)>,
    lines: Arc<Mutex<Vec<EventLine>>>,
    timings: Arc<Mutex<HashMap<u32, Timing>>>,
}

impl Collector {
    pub fn start(tools: &Tools, args: &[&str], output: Lines) -> Result<Self> {
        Self::start_timed(tools, args, output, false)
    }

    /// With `time_attach`: start-up timed to its programs attached.
    pub fn start_timed(
        tools: &Tools,
        args: &[&str],
        output: Lines,
        time_attach: bool,
    ) -> Result<Self> {
        let mut command = Command::new(&tools.collector);
        command
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        match output {
            Lines::Discard => command
                .args(["--output", "/dev/null"])
                .stdout(Stdio::null()),
            Lines::Read { .. } => command
                .args(["--log-level", "info,oom_collector::latency=debug"])
                .stdout(Stdio::piped()),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let timings = Arc::new(Mutex::new(HashMap::new()));
        let mut reader = None;
        let timed = Arc::clone(&timings);
        let watched = Watched::spawn("the collector", &mut command, time_attach, |child, log| {
            let stderr = child.stderr.take().expect("piped");
            if let Some(stdout) = child.stdout.take() {
                reader = Some(stdout);
            }
            watch_lines(
                stderr,
                Some("collecting OOM events"),
                log,
                move |line, _| {
                    if let Some((pid, timing)) = Timing::parse(line) {
                        timed.lock().expect("timings lock").insert(pid, timing);
                    }
                },
            )
        })?;
        let reader = match (reader, output) {
            (Some(stdout), Lines::Read { any_cpu }) => {
                let mut command = Command::new(&tools.bench_lines);
                if any_cpu {
                    command.arg("--any-cpu");
                }
                let mut child = command
                    .stdin(Stdio::from(stdout))
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("cannot start bench_lines")?;
                let digests = child.stdout.take().expect("piped");
                let sink = Arc::clone(&lines);
                let thread = thread::spawn(move || {
                    for digest in BufReader::new(digests).lines().map_while(Result::ok) {
                        match EventLine::parse(&digest) {
                            Some(line) => sink.lock().expect("lines lock").push(line),
                            None => eprintln!("bench: bench_lines printed {digest:?}"),
                        }
                    }
                });
                Some((child, thread))
            }
            _ => None,
        };
        Ok(Self {
            watched,
            reader,
            lines,
            timings,
        })
    }

    pub fn lines(&self) -> Vec<EventLine> {
        self.lines.lock().expect("lines lock").clone()
    }

    pub fn timing(&self, pid: u32) -> Option<Timing> {
        self.timings
            .lock()
            .expect("timings lock")
            .get(&pid)
            .copied()
    }

    /// Stops it (it drains what the kernel holds) and returns every line.
    pub fn stop(mut self) -> Result<Vec<EventLine>> {
        self.watched.interrupt("the collector")?;
        if let Some((mut child, thread)) = self.reader.take() {
            child.wait()?;
            let _ = thread.join();
        }
        Ok(self.lines())
    }
}

/// One line of the collector, as `bench_lines` digests it.
#[derive(Clone, Debug)]
pub struct EventLine {
    pub action: String,
    pub pid: Option<u32>,
    pub count: Option<u64>,
    pub created_ns: Option<i64>,
    pub arrived_ns: i64,
    /// The arrival on CLOCK_BOOTTIME, the clock of the collector's timing.
    pub arrived_boot_ns: Option<u64>,
    /// The victim's memory cgroup, or why events were lost.
    pub detail: String,
}

impl EventLine {
    fn parse(digest: &str) -> Option<Self> {
        let fields: Vec<&str> = digest.split('\t').collect();
        let [action, pid, count, _timestamp, created, arrived, detail, arrived_boot] = fields[..]
        else {
            return None;
        };
        Some(Self {
            action: action.to_owned(),
            pid: pid.parse().ok(),
            count: count.parse().ok(),
            created_ns: created.parse().ok(),
            arrived_ns: arrived.parse().ok()?,
            arrived_boot_ns: arrived_boot.parse().ok(),
            detail: detail.to_owned(),
        })
    }
}

/// bpftrace running [`BPFTRACE_PROGRAM`]: the victims it printed, with
/// when each line arrived (CLOCK_BOOTTIME).
pub struct Bpftrace {
    pub watched: Watched,
    seen: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl Bpftrace {
    pub fn start(program: &Path, time_attach: bool) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let watched = Watched::spawn(
            "bpftrace",
            Command::new(program)
                .args(["-e", BPFTRACE_PROGRAM])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            time_attach,
            |child, log| {
                let stderr = child.stderr.take().expect("piped");
                let stdout = child.stdout.take().expect("piped");
                watch_lines(stderr, None, Arc::clone(&log), |_, _| {});
                // It prints this before it attaches: bpftool says when.
                watch_lines(stdout, Some("Attaching"), log, move |line, _| {
                    let arrived = boot_ns();
                    if let Ok(pid) = line.trim().parse() {
                        sink.lock().expect("seen lock").push((pid, arrived));
                    }
                })
            },
        )?;
        Ok(Self { watched, seen })
    }

    pub fn seen(&self) -> Vec<(u32, u64)> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn stop(mut self) -> Result<Vec<(u32, u64)>> {
        self.watched.interrupt("bpftrace")?;
        Ok(self.seen())
    }
}

/// A memory cgroup of the bench's own, limited; removed on drop, with
/// whatever of ours is still inside killed first.
pub struct ScratchCgroup {
    pub dir: PathBuf,
    /// As kill lines name it.
    pub path: String,
}

/// The memory hierarchy's root and the name of its limit file.
pub fn memory_root() -> (&'static Path, &'static str) {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("memory.limit_in_bytes").exists() {
        (v1, "memory.limit_in_bytes")
    } else {
        (Path::new("/sys/fs/cgroup"), "memory.max")
    }
}

impl ScratchCgroup {
    /// `oom-bench-<our pid>-<label>`, new.
    pub fn create(label: &str, limit_bytes: u64) -> Result<Self> {
        let (root, limit_file) = memory_root();
        let name = format!("oom-bench-{}-{label}", std::process::id());
        let dir = root.join(&name);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cgroup = Self {
            dir,
            path: format!("/{name}"),
        };
        fs::write(cgroup.dir.join(limit_file), limit_bytes.to_string())
            .with_context(|| format!("cannot limit {}", cgroup.dir.display()))?;
        // Only where swap is accounted; without swap there is nothing to limit.
        let _ = fs::write(
            cgroup.dir.join("memory.memsw.limit_in_bytes"),
            limit_bytes.to_string(),
        );
        let _ = fs::write(cgroup.dir.join("memory.swap.max"), "0");
        Ok(cgroup)
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: could not remove {}", self.dir.display());
    }
}

/// Many empty memory cgroups, as on a busy node: `oom-bench-<pid>-many/N`;
/// removed on drop.
pub struct ManyCgroups {
    parent: PathBuf,
    pub count: usize,
}

impl ManyCgroups {
    pub fn create(count: usize) -> Result<Self> {
        let (root, _) = memory_root();
        let parent = root.join(format!("oom-bench-{}-many", std::process::id()));
        fs::create_dir(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mut many = Self { parent, count: 0 };
        for n in 0..count {
            fs::create_dir(many.parent.join(n.to_string()))
                .with_context(|| format!("cannot create cgroup {n} of {count}"))?;
            many.count += 1;
        }
        Ok(many)
    }

    /// Walks the hierarchy the way a lookup by walking does (every
    /// directory, and the inode of each cgroup); how long it took and how
    /// many cgroups it saw.
    pub fn walk_hierarchy() -> (Duration, usize) {
        let (root, _) = memory_root();
        let started = Instant::now();
        let mut stack = vec![root.to_owned()];
        let mut cgroups = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.metadata().is_ok() {
                    cgroups += 1;
                    stack.push(entry.path());
                }
            }
        }
        (started.elapsed(), cgroups)
    }
}

impl Drop for ManyCgroups {
    fn drop(&mut self) {
        for n in 0..self.count {
            let _ = fs::remove_dir(self.parent.join(n.to_string()));
        }
        if fs::remove_dir(&self.parent).is_err() {
            eprintln!("bench: could not remove {}", self.parent.display());
        }
    }
}

/// A process's resident memory and CPU so far, from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub resident_kib: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn usage(pid: u32) -> Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime and stime the 12th and 13th.
    let after_name = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Ok(Sample {
        resident_kib,
        cpu_ticks: fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0),
    })
}

/// Every process's usage at one moment.
pub struct Mark {
    pub at: Instant,
    /// The same moment on the clock the lines' arrivals are stamped with.
    pub realtime_ns: i64,
    samples: Vec<Sample>,
}

impl Mark {
    pub fn now(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            realtime_ns: now_ns(),
            samples: pids.iter().map(|&pid| usage(pid)).collect::<Result<_>>()?,
        })
    }
}

/// Samples resident memory every 50 ms on a thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, Vec<u64>)>>,
}

impl Sampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let resident = pids
                    .iter()
                    .map(|&pid| usage(pid).map_or(0, |s| s.resident_kib))
                    .collect();
                samples.push((Instant::now(), resident));
                thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Vec<(Instant, Vec<u64>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// One process's footprint over a phase.
pub struct Usage {
    pub elapsed: Duration,
    pub cpu_ticks: u64,
    pub resident_median_kib: u64,
    pub resident_max_kib: u64,
}

impl Usage {
    pub fn between(
        from: &Mark,
        to: &Mark,
        samples: &[(Instant, Vec<u64>)],
        process: usize,
    ) -> Self {
        let resident: Vec<f64> = samples
            .iter()
            .filter(|(at, _)| (from.at..=to.at).contains(at))
            .map(|(_, resident)| resident[process] as f64)
            .collect();
        Self {
            elapsed: to.at - from.at,
            cpu_ticks: to.samples[process].cpu_ticks - from.samples[process].cpu_ticks,
            resident_median_kib: median(&resident) as u64,
            resident_max_kib: resident.iter().copied().fold(0.0, f64::max) as u64,
        }
    }

    pub fn cpu_share(&self, tools: &Tools) -> f64 {
        self.cpu_ticks as f64 * tools.ms_per_tick / 1e3 / self.elapsed.as_secs_f64()
    }

    pub fn cpu(&self, tools: &Tools) -> String {
        format!("{:.0} ms", self.cpu_ticks as f64 * tools.ms_per_tick)
    }

    pub fn share(&self, tools: &Tools) -> String {
        format!(
            "{:.2} % of a CPU over {:.1} s",
            self.cpu_share(tools) * 100.0,
            self.elapsed.as_secs_f64()
        )
    }
}
