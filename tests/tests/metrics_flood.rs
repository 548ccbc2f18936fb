//! The metrics port flooded by a hostile pod: thousands of connections
//! that send half a request and wait, and some that trickle a byte a
//! second. The collector must go on writing kills on time, at little CPU,
//! and answer `/metrics` once the flood stops. Root only; see the crate's
//! doc.
//!
//! The collector runs with 1,024 open files, soft and hard (systemd's
//! default soft limit; the hard one too, so raising the soft limit cannot
//! hide a server that would exhaust it). It also writes to a file rotated
//! after every line, so that writing the kill during the flood means
//! opening a file.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use oom_e2e::{
    collector_bin, is_kill_of, require_root, resident_kib, scratch_cgroup, timestamp, Collector,
    Hog,
};

const MIB: u64 = 1024 * 1024;
const COLLECTOR_OPEN_FILES: u64 = 1_024;
const HALF_OPEN: usize = 3_000;
const SLOW: usize = 20;
/// What the flood sends on a half-open connection, and never finishes.
const HALF_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
/// What a slow connection sends after `HALF_REQUEST`, both a byte a
/// second, over and over.
const SLOW_HEADER: &[u8] = b"X-Slow: 1\r\n";
/// How long the collector's CPU is measured under the flood.
const MEASURED: Duration = Duration::from_secs(6);
const KILL_LATENCY_BUDGET: Duration = Duration::from_secs(1);
const CPU_BUDGET_PERCENT: f64 = 5.0;
const METRICS_BUDGET: Duration = Duration::from_secs(1);

#[test]
fn a_flooded_metrics_port_delays_no_kill_and_costs_little_cpu() {
    if !require_root!() {
        return;
    }
    raise_own_open_file_limit(HALF_OPEN as u64 + SLOW as u64 + 256);
    let addr = free_local_addr();
    let dir = std::env::temp_dir().join(format!("oom-e2e-metrics-flood-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    let file = dir.join("events.ndjson");
    let mut command = Command::new(collector_bin());
    command
        .args([
            "--metrics-addr",
            &addr.to_string(),
            "--output",
            "-",
            "--output",
        ])
        .arg(&file)
        .args(["--output-max-bytes", "1", "--output-keep", "100"]);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the
    // parent.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: COLLECTOR_OPEN_FILES,
                rlim_max: COLLECTOR_OPEN_FILES,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let collector = Collector::spawn(command);
    let pid = collector.pid();
    // A first line, so that the file is rotated and the next line must
    // open a new one.
    let cgroup = scratch_cgroup("metrics-flood", 32 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(Duration::from_secs(30));
    collector.kill_of(hog.pid(), Duration::from_secs(10));

    let flood = Flood::start(addr);
    // Let the flood reach its size before measuring.
    thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_seconds(pid);
    let measured_from = Instant::now();

    let mut hog = Hog::start(&cgroup);
    hog.wait(Duration::from_secs(30));
    let line = collector.kill_of(hog.pid(), Duration::from_secs(10));
    let kill_latency = line
        .read_at
        .duration_since(timestamp(&line.json))
        .unwrap_or_default();
    let in_file_after = wait_for_kill_in_files(&file, hog.pid(), Duration::from_secs(2));

    thread::sleep(MEASURED.saturating_sub(measured_from.elapsed()));
    let cpu_percent =
        100.0 * (cpu_seconds(pid) - cpu_before) / measured_from.elapsed().as_secs_f64();
    let resident = resident_kib(pid);
    let flood = flood.stop();

    let asked_at = Instant::now();
    let metrics = get_metrics(addr, Duration::from_secs(10));
    let metrics_time = asked_at.elapsed();
    eprintln!(
        "figures: flood of {HALF_OPEN} half-open and {SLOW} slow connections ({} opened in \
         all, {} closed by the collector); collector CPU {cpu_percent:.1}% over {:?}; kill \
         latency {kill_latency:?} (in the rotated file {in_file_after:?} after stdout); /metrics \
         after the flood in {metrics_time:?}; resident memory {resident} KiB",
        flood.opened,
        flood.closed_by_server,
        measured_from.elapsed(),
    );

    assert_eq!(
        line.json["oom"]["victim"]["memcg"]["path"], cgroup.path,
        "the kill during the flood names its cgroup (found under cgroupfs)"
    );
    assert!(
        kill_latency < KILL_LATENCY_BUDGET,
        "the kill during the flood was written {kill_latency:?} after it happened"
    );
    assert!(
        in_file_after.is_some_and(|after| kill_latency + after < KILL_LATENCY_BUDGET),
        "the kill during the flood reached the file output {in_file_after:?} after stdout: \
         could the collector open the file? Its log ends:\n{}",
        log_tail(&collector.stderr())
    );
    assert!(
        cpu_percent < CPU_BUDGET_PERCENT,
        "the collector used {cpu_percent:.1}% of a CPU under the flood; its log ends:\n{}",
        log_tail(&collector.stderr())
    );
    let body = metrics.unwrap_or_else(|error| panic!("GET /metrics after the flood: {error}"));
    assert!(
        body.contains("oom_kills_total{"),
        "/metrics counts the kill:\n{body}"
    );
    assert!(
        metrics_time < METRICS_BUDGET,
        "/metrics answered {metrics_time:?} after the flood stopped"
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
    let _ = fs::remove_dir_all(&dir);
}

/// How long after now the kill of `pid` shows in `file` or its rotated
/// copies; `None` when not within `timeout`.
fn wait_for_kill_in_files(file: &Path, pid: u32, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let dir = file.parent().expect("the file is in a directory");
    while started.elapsed() < timeout {
        let found = fs::read_dir(dir)
            .expect("read the scratch dir")
            .any(|entry| {
                let path = entry.expect("a directory entry").path();
                fs::read_to_string(&path).is_ok_and(|text| {
                    text.lines()
                        .filter_map(|line| serde_json::from_str(line).ok())
                        .any(|json| is_kill_of(&json, pid))
                })
            });
        if found {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The flood, on a thread of its own: it keeps its connections open and
/// opens a new one for each the collector closes, as an attacker would.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<FloodCounts>,
}

struct FloodCounts {
    opened: u64,
    closed_by_server: u64,
}

struct FloodConnection {
    stream: TcpStream,
    slow: bool,
    connected: bool,
    sent: usize,
    next_byte_at: Instant,
}

impl Flood {
    fn start(addr: SocketAddrV4) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || flood(addr, &stopped));
        Self { stop, thread }
    }

    /// Ends the flood; every connection is closed when this returns.
    fn stop(self) -> FloodCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the flood thread panicked")
    }
}

fn flood(addr: SocketAddrV4, stop: &AtomicBool) -> FloodCounts {
    let mut counts = FloodCounts {
        opened: 0,
        closed_by_server: 0,
    };
    let mut connections: Vec<FloodConnection> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut slow_count = connections.iter().filter(|c| c.slow).count();
        while connections.len() < HALF_OPEN + SLOW {
            let slow = slow_count < SLOW;
            slow_count += usize::from(slow);
            connections.push(FloodConnection {
                stream: connect_without_waiting(addr),
                slow,
                connected: false,
                sent: 0,
                next_byte_at: Instant::now(),
            });
            counts.opened += 1;
        }
        let mut polled: Vec<libc::pollfd> = connections
            .iter()
            .map(|c| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if c.connected {
                    libc::POLLIN | libc::POLLRDHUP
                } else {
                    libc::POLLOUT
                },
                revents: 0,
            })
            .collect();
        // SAFETY: `polled` is a live array of that many pollfds.
        unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 100) };
        let now = Instant::now();
        let mut index = 0;
        connections.retain_mut(|connection| {
            let revents = polled[index].revents;
            index += 1;
            if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP | libc::POLLIN) != 0 {
                // Closed by the collector (or refused): open another.
                if connection.connected {
                    counts.closed_by_server += 1;
                }
                return false;
            }
            if !connection.connected && revents & libc::POLLOUT != 0 {
                connection.connected = true;
                if !connection.slow {
                    let _ = connection.stream.write(HALF_REQUEST);
                }
            }
            if connection.connected && connection.slow && now >= connection.next_byte_at {
                let sent = connection.sent;
                let byte = match HALF_REQUEST.get(sent) {
                    Some(&byte) => byte,
                    None => SLOW_HEADER[(sent - HALF_REQUEST.len()) % SLOW_HEADER.len()],
                };
                if connection.stream.write(&[byte]).is_ok_and(|n| n == 1) {
                    connection.sent += 1;
                }
                connection.next_byte_at = now + Duration::from_secs(1);
            }
            true
        });
    }
    counts
}

/// A TCP connection to `addr` begun but not awaited: at the collector's
/// limit the kernel queues it, and a blocking connect would wait for it.
fn connect_without_waiting(addr: SocketAddrV4) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; the descriptor is owned by the stream
    // made from it and by nothing else.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let result = libc::connect(
            fd,
            std::ptr::from_ref(&sockaddr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let error = std::io::Error::last_os_error();
        assert!(
            result == 0 || error.raw_os_error() == Some(libc::EINPROGRESS),
            "connect to {addr}: {error}"
        );
        stream
    }
}

/// `GET /metrics` with every wait bounded, so a collector that never
/// answers fails the test rather than hanging it.
fn get_metrics(addr: SocketAddrV4, timeout: Duration) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A port on the loopback address nobody listens on now.
fn free_local_addr() -> SocketAddrV4 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    match listener.local_addr().expect("local address") {
        std::net::SocketAddr::V4(addr) => addr,
        other => panic!("an IPv4 listener gave {other}"),
    }
}

/// The flood needs a descriptor per connection.
fn raise_own_open_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill and then read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= needed,
            "the flood needs {needed} open files; the hard limit is {}",
            limit.rlim_max
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// CPU time (user and system, all threads) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th of the line, the 12th and 13th here.
    let after_name = stat.rsplit_once(')').expect("stat has a name").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// The last lines of a log: a flooded old collector logs an error per
/// failed accept.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
