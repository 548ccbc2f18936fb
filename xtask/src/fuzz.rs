//! Fuzzing the parsers that read what the collector does not control:
//! ring-buffer records, tracefs formats, cgroup paths and mountinfo,
//! container runtime metadata, command lines and the kernel log (the
//! `fuzz/` crate, run by cargo-fuzz with libFuzzer on the nightly
//! toolchain).
//!
//! What the fuzzer finds goes to `target/fuzz-corpus/<target>`, so a run
//! never changes the seeds in `fuzz/corpus/<target>`. Inputs that once
//! crashed a target, kept in `fuzz/regressions/<target>`, run with the
//! seeds before any new input.
//! A crash is saved in `fuzz/artifacts/<target>/` and named in the error.

use std::{fs, path::Path, time::SystemTime};

use anyhow::{bail, Context, Result};

use crate::{
    setup::{self, Toolchain},
    system::run_checked,
};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets, as `fuzz/Cargo.toml` names them.
const TARGETS: [&str; 5] = [
    "decode_record",
    "tracefs_format",
    "cgroup_path",
    "runtime_metadata",
    "redact",
];

/// Fuzzes every target for `seconds_per_target`, then fails naming each
/// target that crashed and the input that crashed it.
pub fn run(root: &Path, seconds_per_target: u64) -> Result<()> {
    let toolchain = setup::ensure_toolchain()?;
    ensure_cargo_fuzz(&toolchain)?;
    run_checked(
        toolchain
            .nightly_cargo()
            .current_dir(root)
            .args(["fuzz", "build"]),
    )
    .context("cannot build the fuzz targets")?;
    let mut failures = Vec::new();
    for target in TARGETS {
        if let Err(error) = fuzz_target(&toolchain, root, target, seconds_per_target) {
            eprintln!("xtask: {error:#}");
            failures.push(format!("{error:#}"));
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing found problems:\n{}", failures.join("\n"));
    }
    Ok(())
}

fn ensure_cargo_fuzz(toolchain: &Toolchain) -> Result<()> {
    let installed = toolchain
        .cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 30 s, once)");
    run_checked(
        toolchain
            .cargo()
            .args(["install", "cargo-fuzz", "--locked"])
            .args(["--version", CARGO_FUZZ_VERSION]),
    )
    .context("cannot install cargo-fuzz")
}

fn fuzz_target(toolchain: &Toolchain, root: &Path, target: &str, seconds: u64) -> Result<()> {
    let scratch = root.join("target/fuzz-corpus").join(target);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let artifacts = root.join("fuzz/artifacts").join(target);
    let started = SystemTime::now();

    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let mut cargo = toolchain.nightly_cargo();
    cargo
        .current_dir(root)
        .args(["fuzz", "run", target])
        .arg(&scratch)
        .arg(root.join("fuzz/corpus").join(target));
    let regressions = root.join("fuzz/regressions").join(target);
    if regressions.is_dir() {
        cargo.arg(regressions);
    }
    cargo.arg("--").args([
        format!("-max_total_time={seconds}"),
        "-rss_limit_mb=2048".to_owned(),
        "-timeout=10".to_owned(),
        "-print_final_stats=1".to_owned(),
    ]);
    // libFuzzer prints a line for every new input it keeps (thousands a
    // run): its output goes to a log, and only its summary, or its end
    // when something was found, to the terminal.
    let log_path = root.join("target/fuzz-logs").join(format!("{target}.log"));
    let log = fs::create_dir_all(log_path.parent().expect("a directory"))
        .and_then(|()| fs::File::create(&log_path))
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    cargo.stdout(log.try_clone()?).stderr(log);
    let passed = run_checked(&mut cargo).is_ok();
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    if passed {
        let stat = |name: &str| {
            output
                .lines()
                .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
                .map_or("?", str::trim)
                .to_owned()
        };
        eprintln!(
            "xtask: fuzzed {target}: {} runs, {} a second, nothing found (log: {})",
            stat("number_of_executed_units"),
            stat("average_exec_per_sec"),
            log_path.display()
        );
        return Ok(());
    }
    let lines: Vec<&str> = output.lines().collect();
    eprintln!(
        "xtask: fuzz target {target} failed; the end of its log ({}):\n{}",
        log_path.display(),
        lines[lines.len().saturating_sub(60)..].join("\n")
    );

    // libFuzzer names what it kept after what went wrong (crash-, timeout-,
    // oom- or leak-) by its content, so an input that failed before is
    // written again under the same name.
    let found = written_since(&artifacts, started);
    if found.is_empty() {
        bail!("fuzz target {target} failed without saving an input (see its log above)");
    }
    bail!(
        "fuzz target {target} failed on {}; reproduce with `cargo +nightly fuzz run {target} <file>`",
        found.join(", ")
    )
}

fn written_since(dir: &Path, since: SystemTime) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= since)
        })
        .map(|entry| entry.path().display().to_string())
        .collect();
    found.sort();
    found
}
