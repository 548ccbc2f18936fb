//! Where the kernel wakes the collector for each kill, by the kernel's own
//! clock: a tracefs instance of the bench's own records `oom/mark_victim`
//! and the scheduler's wake-up, migration and switch of the collector's
//! reading thread (CLOCK_BOOTTIME, the kills' clock).
//!
//! The ring buffer wakes its reader from the OOM path itself (an irq_work
//! run as the record is committed, inside the tracepoint), and the
//! scheduler may queue the reader on the CPU of the OOM, which then prints
//! "Killed process ..." to the console before it lets anything else run.
//! These rows show how often that happens and how soon the reader runs
//! anyway (the collector's watchers move it to a free CPU).

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

use super::{median, percentiles, table::Table};

const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracefs instance tracing one thread's wake-ups; removed on drop.
pub struct WakeupTrace {
    dir: PathBuf,
    thread: u32,
}

impl WakeupTrace {
    /// Starts tracing the wake-ups of `thread` and every OOM kill.
    pub fn start(thread: u32) -> Result<Self> {
        let dir = PathBuf::from(TRACEFS)
            .join("instances")
            .join(format!("oom-bench-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let trace = Self { dir, thread };
        let write = |file: &str, value: &str| {
            fs::write(trace.dir.join(file), value)
                .with_context(|| format!("cannot write {value:?} to {file}"))
        };
        write("trace_clock", "boot")?;
        write("buffer_size_kb", "8192")?;
        write("events/oom/mark_victim/enable", "1")?;
        for (event, filter) in [
            ("sched_wakeup", format!("pid == {thread}")),
            ("sched_migrate_task", format!("pid == {thread}")),
            ("sched_switch", format!("next_pid == {thread}")),
        ] {
            write(&format!("events/sched/{event}/filter"), &filter)?;
            write(&format!("events/sched/{event}/enable"), "1")?;
        }
        write("tracing_on", "1")?;
        Ok(trace)
    }

    /// Stops, and reads what happened to each of `victims`' kills.
    pub fn finish(self, victims: &[u32]) -> Result<Wakeups> {
        fs::write(self.dir.join("tracing_on"), "0")?;
        let text = fs::read_to_string(self.dir.join("trace"))?;
        Ok(Wakeups::parse(&text, self.thread, victims))
    }
}

impl Drop for WakeupTrace {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        if fs::remove_dir(&self.dir).is_err() {
            eprintln!("bench: could not remove {}", self.dir.display());
        }
    }
}

/// One line of the trace: CPU, seconds, event, its fields.
struct Event<'a> {
    cpu: u32,
    seconds: f64,
    name: &'a str,
    fields: &'a str,
}

impl<'a> Event<'a> {
    /// `  task-pid  [001] d.h3.  123.456789: name: fields`
    fn parse(line: &'a str) -> Option<Self> {
        let open = line.find(" [")?;
        let close = open + line[open..].find(']')?;
        let cpu = line[open + 2..close].parse().ok()?;
        let rest = &line[close + 1..];
        let (head, after) = rest.split_once(": ")?;
        let seconds = head.split_whitespace().last()?.parse().ok()?;
        let (name, fields) = after.split_once(": ")?;
        Some(Self {
            cpu,
            seconds,
            name,
            fields,
        })
    }

    fn field(&self, key: &str) -> Option<&'a str> {
        self.fields
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
    }
}

/// The wake-ups of the collector by kills.
#[derive(Default)]
pub struct Wakeups {
    kills: usize,
    /// Kills whose record woke the collector from the OOM path.
    woken: usize,
    /// Of those, queued by the kernel on the OOM's own CPU.
    on_oom_cpu: usize,
    /// Of those, moved elsewhere before they ran.
    moved: usize,
    /// Kill to the kernel's wake-up, in milliseconds.
    wake_ms: Vec<f64>,
    /// Wake-up to running, queued on the OOM's CPU and elsewhere.
    to_run_ms: [Vec<f64>; 2],
}

impl Wakeups {
    fn parse(text: &str, thread: u32, victims: &[u32]) -> Self {
        let events: Vec<Event> = text.lines().filter_map(Event::parse).collect();
        let thread = thread.to_string();
        let mut wakeups = Self::default();
        for (index, kill) in events.iter().enumerate() {
            let victim = kill.field("pid").and_then(|pid| pid.parse::<u32>().ok());
            if kill.name != "mark_victim" || !victim.is_some_and(|pid| victims.contains(&pid)) {
                continue;
            }
            wakeups.kills += 1;
            // The wake-up runs inside the tracepoint, just before ftrace's
            // own record of it.
            let window = index.saturating_sub(8)..(index + 8).min(events.len());
            let Some(wake) = events[window].iter().find(|event| {
                event.name == "sched_wakeup"
                    && event.field("pid") == Some(thread.as_str())
                    && (event.seconds - kill.seconds).abs() < 2e-4
            }) else {
                continue;
            };
            wakeups.woken += 1;
            wakeups.wake_ms.push((wake.seconds - kill.seconds) * 1e3);
            let target: Option<u32> = wake.field("target_cpu").and_then(|cpu| cpu.parse().ok());
            let same = target == Some(kill.cpu);
            // Up to the next kill: a reader woken while still on its CPU
            // (about to wait again) is never switched in for this one.
            let later = events[index + 1..]
                .iter()
                .take_while(|event| event.name != "mark_victim");
            let mut moved = false;
            for event in later {
                match event.name {
                    "sched_migrate_task" => moved = true,
                    "sched_switch" if event.field("next_pid") == Some(thread.as_str()) => {
                        wakeups.to_run_ms[usize::from(!same)]
                            .push((event.seconds - wake.seconds) * 1e3);
                        break;
                    }
                    _ => {}
                }
            }
            if same {
                wakeups.on_oom_cpu += 1;
                wakeups.moved += usize::from(moved);
            }
        }
        wakeups
    }

    pub fn rows(&self, table: &mut Table) {
        table.row(
            "kills whose record woke the collector from the OOM path",
            format!("{} of {}", self.woken, self.kills),
            format!(
                "the kernel's wake-up (sched_wakeup) {:.3} ms from the kill, median",
                median(&self.wake_ms)
            ),
        );
        table.row(
            "  queued by the kernel on the OOM's own CPU",
            format!("{} of {}", self.on_oom_cpu, self.woken),
            format!("{} moved to a free CPU by a watcher", self.moved),
        );
        for (what, values) in [
            (
                "  the kernel's wake-up -> running, queued on the OOM's CPU",
                &self.to_run_ms[0],
            ),
            (
                "  the kernel's wake-up -> running, queued elsewhere",
                &self.to_run_ms[1],
            ),
        ] {
            let (p50, spread) = percentiles(values);
            table.row(what, p50, spread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Linux 6.18 traced one kill: the collector (pid 11188) woken on
    /// the OOM's CPU 1 and moved to CPU 0 by a watcher.
    const TRACE: &str = "\
        workload-11242   [001] dNh9.  1607.888583: sched_wakeup: comm=oom-collector pid=11188 prio=120 target_cpu=001
        workload-11242   [001] .N.1.  1607.888586: mark_victim: pid=11242 comm=workload total-vm=11232kB anon-rss=7808kB file-rss:1780kB shmem-rss:0kB uid=0 pgtables=68kB oom_score_adj=0
     oom-watch-0-11193   [000] d..2.  1607.888700: sched_migrate_task: comm=oom-collector pid=11188 prio=120 orig_cpu=1 dest_cpu=0
     oom-watch-0-11193   [000] d..2.  1607.888744: sched_switch: prev_comm=oom-watch-0 prev_pid=11193 prev_prio=120 prev_state=S ==> next_comm=oom-collector next_pid=11188 next_prio=120
";

    #[test]
    fn finds_where_the_kernel_queued_the_collector() {
        let wakeups = Wakeups::parse(TRACE, 11188, &[11242]);
        assert_eq!((wakeups.kills, wakeups.woken), (1, 1));
        assert_eq!((wakeups.on_oom_cpu, wakeups.moved), (1, 1));
        assert!((wakeups.to_run_ms[0][0] - 0.161).abs() < 1e-6);
        assert!(wakeups.to_run_ms[1].is_empty());
        assert_eq!(
            Wakeups::parse(TRACE, 11188, &[1]).kills,
            0,
            "not our victim"
        );
    }
}
