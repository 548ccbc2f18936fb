//! The reader of the collector's output for `cargo xtask bench`: reads its
//! JSON lines on stdin, notes when each arrived (taken as the line is
//! read), and prints one tab-separated line per event with what the bench
//! checks:
//!
//! ```text
//! ACTION  PID  COUNT  TIMESTAMP_NS  CREATED_NS  ARRIVED_NS  DETAIL  ARRIVED_BOOT_NS
//! ```
//!
//! Times are nanoseconds since the Unix epoch: `@timestamp` (the kernel's
//! time of the event), `event.created` (when the collector made the
//! document) and the arrival; ARRIVED_BOOT_NS is the arrival again on
//! CLOCK_BOOTTIME, the clock of the kernel's own timestamps and of the
//! collector's timing log. COUNT is `oom.alloc.count` or `oom.lost.count`;
//! DETAIL is the victim's memory cgroup for a kill and `oom.lost.reason`
//! for lost events. What a line lacks is `-`.
//!
//! The pipe from the collector is widened to 1 MiB first, so that a burst
//! of lines is timed as the collector writes it, not as fast as this
//! reader parses it.
//!
//! `--any-cpu`: wait for lines on two CPUs at once (two threads pinned to
//! the first and the last CPU this reader may use, each polling stdin), and
//! read on whichever runs first. A reader that waits on one thread is
//! queued by the kernel where it chooses, which during an OOM kill may be
//! the CPU the OOM killer holds for milliseconds; a multi-threaded log
//! shipper is not held up that way. The bench reports both readers.

use std::{
    io::Write,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

/// Largest pipe an unprivileged process may ask for by default
/// (`/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1 << 20;

fn main() -> ExitCode {
    // SAFETY: fcntl on our own stdin; failing leaves the pipe as it was.
    if unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_SETPIPE_SZ, PIPE_BYTES) } < 0 {
        eprintln!(
            "bench_lines: cannot widen the pipe: {}",
            std::io::Error::last_os_error()
        );
    }
    let any_cpu = std::env::args().any(|arg| arg == "--any-cpu");
    let reader = Arc::new(Mutex::new(Reader::default()));
    let cpus = if any_cpu { two_cpus() } else { Vec::new() };
    if cpus.len() < 2 {
        return read_on(None, &reader);
    }
    // Both threads poll, then read without blocking: the one woken second
    // finds nothing and waits again.
    // SAFETY: fcntl on our own stdin.
    unsafe {
        let flags = libc::fcntl(libc::STDIN_FILENO, libc::F_GETFL);
        libc::fcntl(libc::STDIN_FILENO, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let threads: Vec<_> = cpus
        .into_iter()
        .map(|cpu| {
            let reader = Arc::clone(&reader);
            std::thread::spawn(move || read_on(Some(cpu), &reader))
        })
        .collect();
    let mut code = ExitCode::SUCCESS;
    for thread in threads {
        if thread.join().unwrap_or(ExitCode::FAILURE) != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// The first and last CPU this process may run on.
fn two_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is empty; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: reads one bit of our own set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    match (cpus.first(), cpus.last()) {
        (Some(&first), Some(&last)) if first != last => vec![first, last],
        _ => Vec::new(),
    }
}

/// Stdin's bytes not yet a whole line, shared by the reading threads.
#[derive(Default)]
struct Reader {
    pending: Vec<u8>,
    done: bool,
}

/// Reads stdin until its end, pinned to `cpu` if given; with two threads,
/// each waits in poll() and whichever is woken first reads.
fn read_on(cpu: Option<usize>, reader: &Mutex<Reader>) -> ExitCode {
    if let Some(cpu) = cpu {
        // SAFETY: a zeroed set with one bit below CPU_SETSIZE, for ourselves.
        unsafe {
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &only);
        }
    }
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        if cpu.is_some() {
            let mut ready = libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut ready, 1, -1) } < 0 {
                continue;
            }
        }
        let mut shared = reader.lock().expect("reader lock");
        if shared.done {
            return ExitCode::SUCCESS;
        }
        // SAFETY: reads into our own buffer.
        let read =
            unsafe { libc::read(libc::STDIN_FILENO, buffer.as_mut_ptr().cast(), buffer.len()) };
        let arrived = (SystemTime::now(), boot_ns());
        match read {
            0 => {
                shared.done = true;
                return ExitCode::SUCCESS;
            }
            n if n < 0 => {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || error.kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                shared.done = true;
                return ExitCode::FAILURE;
            }
            n => {
                shared.pending.extend_from_slice(&buffer[..n as usize]);
                while let Some(end) = shared.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = shared.pending.drain(..=end).collect();
                    if !digest(&line[..end], arrived) {
                        shared.done = true;
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
}

/// Prints the digest of one line; false when it is not JSON.
fn digest(line: &[u8], (arrived, arrived_boot_ns): (SystemTime, u64)) -> bool {
    let Ok(json) = serde_json::from_slice::<Value>(line) else {
        eprintln!(
            "bench_lines: not a JSON line: {}",
            String::from_utf8_lossy(line)
        );
        return false;
    };
    let digest = [
        json["event"]["action"].as_str().map(str::to_owned),
        json["process"]["pid"].as_u64().map(|pid| pid.to_string()),
        json["oom"]["alloc"]["count"]
            .as_u64()
            .or_else(|| json["oom"]["lost"]["count"].as_u64())
            .map(|count| count.to_string()),
        epoch_ns(&json["@timestamp"]),
        epoch_ns(&json["event"]["created"]),
        Some(nanos_since_epoch(arrived).to_string()),
        json["oom"]["victim"]["memcg"]["path"]
            .as_str()
            .or_else(|| json["oom"]["lost"]["reason"].as_str())
            .map(str::to_owned),
        Some(arrived_boot_ns.to_string()),
    ]
    .map(|field| field.unwrap_or_else(|| "-".to_owned()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", digest.join("\t")).is_ok() && out.flush().is_ok()
}

fn boot_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn epoch_ns(field: &Value) -> Option<String> {
    let time = humantime::parse_rfc3339(field.as_str()?).ok()?;
    Some(nanos_since_epoch(time).to_string())
}

fn nanos_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}
