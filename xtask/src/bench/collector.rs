//! The two tools the bench runs side by side: the collector, its lines
//! read and stamped by `bench_lines` and its timing log parsed; and
//! bpftrace on the same tracepoint.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
};

use anyhow::{Context, Result};

use super::{
    boot_ns,
    procs::{watch_lines, Watched},
    Tools, BPFTRACE_PROGRAM,
};

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
