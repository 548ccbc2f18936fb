//! Start-up of the collector and of bpftrace: from spawn to their
//! programs attached, as bpftool shows them, and the CPU it took.

use std::time::Duration;

use anyhow::Result;

use super::{
    collector::{Bpftrace, Collector, Lines},
    Tools,
};

/// Start-up of each tool: [collector, bpftrace].
pub struct Startup {
    pub attached_ms: [Vec<f64>; 2],
    pub cpu_ms: [Vec<f64>; 2],
    pub programs: [usize; 2],
}

/// Starts each tool `rounds` times, timed from spawn to its programs
/// attached as bpftool shows them: the same event for both, whatever each
/// prints when.
pub fn startup(tools: &Tools, rounds: usize) -> Result<Startup> {
    eprintln!("bench: kills, start-up x{rounds}");
    let mut startup = Startup {
        attached_ms: Default::default(),
        cpu_ms: Default::default(),
        programs: [0; 2],
    };
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    for _ in 0..rounds {
        let collector = Collector::start_timed(tools, &[], Lines::Discard, true)?;
        startup.attached_ms[0].push(ms(collector.watched.attached));
        startup.cpu_ms[0].push(collector.watched.startup_ticks as f64 * tools.ms_per_tick);
        startup.programs[0] = collector.watched.attached_programs;
        collector.stop()?;
        if let Some(program) = &tools.bpftrace {
            let bpftrace = Bpftrace::start(program, true)?;
            startup.attached_ms[1].push(ms(bpftrace.watched.attached));
            startup.cpu_ms[1].push(bpftrace.watched.startup_ticks as f64 * tools.ms_per_tick);
            startup.programs[1] = bpftrace.watched.attached_programs;
            bpftrace.stop()?;
        }
    }
    Ok(startup)
}
