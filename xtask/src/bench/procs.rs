//! Watching a program the bench started: its output line by line, when it
//! said it was ready, and when its eBPF programs were attached, as
//! `/proc` and bpftool show them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{footprint::usage, now_ns};
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
