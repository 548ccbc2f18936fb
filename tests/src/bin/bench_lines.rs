//! The reader of the collector's output for `cargo xtask bench`: reads its
//! JSON lines on stdin, notes when each arrived (CLOCK_REALTIME, taken as
//! the line is read), and prints one tab-separated line per event with
//! what the bench checks:
//!
//! ```text
//! ACTION  PID  COUNT  TIMESTAMP_NS  CREATED_NS  ARRIVED_NS  DETAIL
//! ```
//!
//! Times are nanoseconds since the Unix epoch: `@timestamp` (the kernel's
//! time of the event), `event.created` (when the collector made the
//! document) and the arrival. COUNT is `oom.alloc.count` or
//! `oom.lost.count`; DETAIL is the victim's memory cgroup for a kill and
//! `oom.lost.reason` for lost events. What a line lacks is `-`.
//!
//! The pipe from the collector is widened to 1 MiB first, so that a burst
//! of lines is timed as the collector writes it, not as fast as this
//! reader parses it.

use std::{
    io::{BufRead, Write},
    process::ExitCode,
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
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let arrived = SystemTime::now();
        let Ok(json) = serde_json::from_str::<Value>(&line) else {
            eprintln!("bench_lines: not a JSON line: {line}");
            return ExitCode::FAILURE;
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
        ]
        .map(|field| field.unwrap_or_else(|| "-".to_owned()));
        if writeln!(out, "{}", digest.join("\t")).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn epoch_ns(field: &Value) -> Option<String> {
    let time = humantime::parse_rfc3339(field.as_str()?).ok()?;
    Some(nanos_since_epoch(time).to_string())
}

fn nanos_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}
