//! `cargo xtask`: set up the toolchain, build, run and test oom-collector.
//!
//! - `cargo xtask build [--release] [--arch amd64|arm64]`: build; with
//!   `--arch`, a static binary for that architecture, cross-built where
//!   it is not this machine's.
//! - `cargo xtask run [--release] [-- ARGS]`: build, then run
//!   `oom-collector ARGS` as root (through sudo when not root).
//! - `cargo xtask test`: lint, build, run every test (unit and root-only
//!   end-to-end tests that cause real OOM kills in scratch cgroups).
//! - `cargo xtask bench`: what the collector costs and how fast it
//!   delivers, side by side in one run: hook overhead, kill latency,
//!   allocation-failure throughput, footprint, and bpftrace beside it.
//! - `cargo xtask bless`: rewrite the JSON golden files after an intended
//!   format change, for review with `git diff`.
//! - `cargo xtask fuzz [--seconds N]`: fuzz the parsers of untrusted input,
//!   each target for N seconds (`test` does 20).
//! - `cargo xtask vm-test [--kernel 5.10|5.10-release|6.1|6.12|all]`: the QEMU guest
//!   tests alone, on one of Debian's kernels or all of them.
//! - `cargo xtask setup`: only the set-up both of them do first: the
//!   toolchain, and (as root, with apt) the programs the tests need.
//!
//! Set-up is idempotent and takes well under a second when done already.

mod arch;
mod bench;
mod bless;
mod deploy;
mod fuzz;
mod image;
mod packages;
mod setup;
mod system;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::system::{is_root, run_checked, workspace_root};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test oom-collector")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs needs (rust-src for the
    /// nightly toolchain, bpf-linker built against nightly's LLVM) and, as
    /// root with apt, the programs the tests need (QEMU, busybox-static,
    /// containerd, runc, buildah, kubernetes-validate, ...).
    Setup,
    /// Build oom-collector (the eBPF programs are built and embedded).
    /// With --arch, a static binary for that architecture, cross-built
    /// where it is not this machine's (the cross toolchain is installed
    /// on first use), in target/<rust target>/.
    Build {
        #[arg(long)]
        release: bool,
        /// `amd64` or `arm64`.
        #[arg(long, value_enum)]
        arch: Option<arch::Arch>,
    },
    /// Build, then run oom-collector as root with the given arguments.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for oom-collector, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure, as root, what the collector costs and how fast it delivers,
    /// printed as one table: hook overhead (with and without it,
    /// interleaved), latency from kill to line over real OOM kills,
    /// allocation-failure throughput, resident memory and CPU idle and in
    /// storms, and the same kills watched by bpftrace. Parts can be chosen
    /// with OOM_BENCH_PARTS=hooks,kills,failures.
    Bench {
        /// Interleaved rounds; medians are taken over them.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Build the collector's container image (static binary, buildah).
    Image,
    /// Rewrite the JSON golden files (oom-collector/tests/golden) from the
    /// documents the tests build, after an intended format change; then
    /// review them with `git diff`.
    Bless,
    /// Fuzz the parsers that read untrusted input (ring-buffer records,
    /// tracefs formats, cgroup paths and mountinfo, runtime metadata, the
    /// kernel log) with cargo-fuzz, 60 seconds a target unless told.
    Fuzz {
        /// Seconds to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Boot Debian's kernels in QEMU with the release collector and run
    /// the guest scenarios (the `qemu` test binary of `tests/`).
    VmTest {
        /// `5.10`, `5.10-release` (bullseye's kernel as released, whose
        /// `mark_victim` has only the pid; amd64 only), `6.1`, `6.12` or
        /// `all`.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// `amd64`, or `arm64`: Debian's arm64 kernels on an emulated
        /// arm64 machine, with the collector cross-built.
        #[arg(long, value_enum, default_value = "amd64")]
        arch: arch::Arch,
    },
    /// Lint, build and run every test, the amd64 and arm64 QEMU matrices
    /// included (the arm64 guests run the image's arm64 binary). Root-only
    /// tests fail under CI=true when they cannot run, and are skipped with
    /// a reason otherwise. Then fuzz each fuzz target for 20 seconds.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (a test name filter, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::Setup => {
            setup::ensure_toolchain()?;
            packages::ensure_for_tests()
        }
        Task::Build {
            release,
            arch: None,
        } => build(&root, release).map(drop),
        Task::Build {
            release,
            arch: Some(arch),
        } => {
            let toolchain = setup::ensure_toolchain()?;
            let profile = if release { "release" } else { "debug" };
            let binary = arch::build_static(&root, &toolchain, arch, profile)?;
            eprintln!("xtask: built {}", binary.display());
            Ok(())
        }
        Task::Run { release, args } => {
            let binary = build(&root, release)?;
            system::mount_kernel_filesystems()?;
            let mut command = if is_root() {
                Command::new(&binary)
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("--preserve-env=RUST_LOG").arg(&binary);
                sudo
            };
            let status = command
                .args(&args)
                .status()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { no_lint, args } => test(&root, no_lint, &args),
        Task::Image => {
            let toolchain = setup::ensure_toolchain()?;
            image::image(&root, &toolchain).map(drop)
        }
        Task::VmTest { kernel, arch } => {
            packages::ensure_for_tests()?;
            vm_test(&root, &kernel, arch)
        }
        Task::Fuzz { seconds } => fuzz::run(&root, seconds),
        Task::Bless => bless::bless(&root),
        Task::Bench { rounds } => {
            packages::ensure_for_bench()?;
            let binary = build(&root, true)?;
            system::mount_kernel_filesystems()?;
            bench::bench(&root, &binary, rounds.max(1))
        }
    }
}

/// Builds the collector and returns its path.
fn build(root: &std::path::Path, release: bool) -> Result<PathBuf> {
    let toolchain = setup::ensure_toolchain()?;
    let mut cargo = toolchain.cargo();
    cargo
        .current_dir(root)
        .args(["build", "--package", "oom-collector"]);
    if release {
        cargo.arg("--release");
    }
    run_checked(&mut cargo)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir(root).join(profile).join("oom-collector"))
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set, else
/// `target/` in the workspace.
pub fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn test(root: &std::path::Path, no_lint: bool, args: &[String]) -> Result<()> {
    let toolchain = setup::ensure_toolchain()?;
    packages::ensure_for_tests()?;
    if !no_lint {
        run_checked(
            toolchain
                .cargo()
                .current_dir(root)
                .args(["fmt", "--all", "--", "--check"]),
        )?;
        run_checked(toolchain.cargo().current_dir(root).args([
            "clippy",
            "--workspace",
            "--exclude",
            "oom-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        setup::clippy_ebpf(&toolchain, root)?;
    }
    deploy::validate_manifests(root)?;
    let image = if deploy::require_tool("buildah", "apt-get install buildah")? {
        Some(image::image(root, &toolchain)?)
    } else {
        None
    };
    let binary = build(root, true)?;
    // The arm64 guests run the image's arm64 collector (the cross-built
    // one without buildah) and this arm64 helper.
    let enomem_arm64 = arch::build_static_binary(
        root,
        &toolchain,
        arch::Arch::Arm64,
        "release",
        "oom-e2e",
        "enomem",
    )?;
    let collector_arm64 = match image {
        None => Some(arch::build_static(
            root,
            &toolchain,
            arch::Arch::Arm64,
            "release",
        )?),
        Some(_) => None,
    };
    if is_root() {
        system::mount_kernel_filesystems()?;
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("CI=true but not root: the end-to-end tests need root to load eBPF programs");
    }
    let mut cargo = toolchain.cargo();
    cargo
        .current_dir(root)
        .env("OOM_COLLECTOR_BIN", &binary)
        .env("OOM_E2E_ENOMEM_ARM64", enomem_arm64)
        .envs(collector_arm64.map(|binary| ("OOM_COLLECTOR_BIN_ARM64", binary)))
        // The DaemonSet test runs the image itself.
        .envs(image.map(|archive| ("OOM_COLLECTOR_IMAGE", archive)))
        // The end-to-end tests time real kills on a small machine: one at a time.
        .env("RUST_TEST_THREADS", "1")
        .args(["test", "--workspace", "--exclude", "oom-ebpf", "--release"])
        .args(args);
    run_checked(&mut cargo)?;
    fuzz::run(root, 20)
}

/// The QEMU guest tests, filtered to one kernel's module (`guest_6_1::`).
fn vm_test(root: &std::path::Path, kernel: &str, arch: arch::Arch) -> Result<()> {
    let filters: &[&str] = match (arch, kernel) {
        (arch::Arch::Amd64, "all") => &["guest_5_10", "guest_6_"],
        (arch::Arch::Amd64, "5.10") => &["guest_5_10::"],
        (arch::Arch::Amd64, "5.10-release") => &["guest_5_10_release::"],
        (arch::Arch::Amd64, "6.1") => &["guest_6_1::"],
        (arch::Arch::Amd64, "6.12") => &["guest_6_12::"],
        (arch::Arch::Arm64, "all") => &["guest_arm64_"],
        (arch::Arch::Arm64, "5.10") => &["guest_arm64_5_10::"],
        (arch::Arch::Arm64, "6.1") => &["guest_arm64_6_1::"],
        (arch::Arch::Arm64, "6.12") => &["guest_arm64_6_12::"],
        (arch, other) => bail!(
            "--kernel {other} --arch {arch:?}: want 5.10, 5.10-release (amd64), 6.1, 6.12 or all"
        ),
    };
    let binary = build(root, true)?;
    let toolchain = setup::ensure_toolchain()?;
    let mut cargo = toolchain.cargo();
    if arch == arch::Arch::Arm64 {
        let collector = arch::build_static(root, &toolchain, arch, "release")?;
        let enomem =
            arch::build_static_binary(root, &toolchain, arch, "release", "oom-e2e", "enomem")?;
        cargo
            .env("OOM_COLLECTOR_BIN_ARM64", collector)
            .env("OOM_E2E_ENOMEM_ARM64", enomem);
    }
    run_checked(
        cargo
            .current_dir(root)
            .env("OOM_COLLECTOR_BIN", &binary)
            .args(["test", "--release", "-p", "oom-e2e", "--test", "qemu", "--"])
            .args(filters),
    )
}
