//! `cargo xtask bench`: what each hook costs the workloads it fires on.
//!
//! Runs each workload of `tests/src/bin/workload.rs` with no collector and
//! with the collector in each configuration, interleaved round by round
//! (so drift in a noisy machine hits all alike), and prints the median
//! time per operation and its ratio to the run without the collector.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::system::{output_of, run_checked};

/// A workload: its name and arguments, sized to run for about half a second.
const WORKLOADS: [(&str, &str); 4] = [
    ("getppid", "2000000"),
    ("mmap", "100000"),
    ("fork-exec", "300"),
    ("page-faults", "256"),
];

/// Configurations compared against no collector. The first is no
/// collector again: its ratio is the noise floor of this machine, against
/// which the others are to be read.
const CONFIGS: [(&str, Option<&[&str]>); 4] = [
    ("none (A/A, the noise)", None),
    ("default", Some(&[])),
    (
        "--alloc-failures tracepoint",
        Some(&["--alloc-failures", "tracepoint"]),
    ),
    ("--page-alloc-failures", Some(&["--page-alloc-failures"])),
];

pub fn bench(root: &Path, collector: &Path, rounds: usize) -> Result<()> {
    let workload = build_workload(root)?;
    // samples[(config, workload)] = ns/op per round
    let mut samples: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("bench: round {}/{rounds}", round + 1);
        // Index 0 is no collector; then CONFIGS in order.
        for config in 0..=CONFIGS.len() {
            let running = match config.checked_sub(1).and_then(|n| CONFIGS[n].1) {
                None => None,
                Some(args) => Some(Running::start(collector, args)?),
            };
            for (index, (name, size)) in WORKLOADS.iter().enumerate() {
                let text = output_of(Command::new(&workload).args([name, size]))?;
                let nanos: f64 = text
                    .trim()
                    .parse()
                    .with_context(|| format!("workload {name} printed {text:?}"))?;
                samples.entry((config, index)).or_default().push(nanos);
            }
            if let Some(running) = running {
                running.stop()?;
            }
        }
    }
    print_table(&samples, rounds);
    Ok(())
}

fn build_workload(root: &Path) -> Result<PathBuf> {
    run_checked(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--release",
                "--package",
                "oom-e2e",
                "--bin",
                "workload",
            ]),
    )?;
    Ok(root.join("target/release/workload"))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

fn print_table(samples: &BTreeMap<(usize, usize), Vec<f64>>, rounds: usize) {
    println!("median ns/op over {rounds} interleaved rounds; ratio = with collector / without");
    println!(
        "{:<14} {:>12} {:>30} {:>12} {:>8}",
        "workload", "no collector", "collector", "ns/op", "ratio"
    );
    for (index, (name, _)) in WORKLOADS.iter().enumerate() {
        let baseline = median(&samples[&(0, index)]);
        for (config, (label, _)) in CONFIGS.iter().enumerate() {
            let with = median(&samples[&(config + 1, index)]);
            println!(
                "{name:<14} {baseline:>12.1} {label:>30} {with:>12.1} {:>8.3}",
                with / baseline
            );
        }
    }
}

/// A collector running for one round, its events thrown away.
struct Running {
    child: Child,
}

impl Running {
    fn start(collector: &Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(collector)
            .args(["--output", "/dev/null"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", collector.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (ready, attached) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("collecting OOM events") {
                    let _ = ready.send(());
                }
            }
        });
        if attached.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            bail!("the collector did not attach within 30 s");
        }
        Ok(Self { child })
    }

    fn stop(mut self) -> Result<()> {
        run_checked(Command::new("kill").args(["-INT", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the collector exited with {status}");
        }
        Ok(())
    }
}
