//! The CPU architectures the collector is built for, by the names
//! Kubernetes and OCI images give them, and the cross toolchain an
//! architecture other than this machine's needs: the Rust target's standard
//! library (rustup) and a C cross compiler and C library for linking
//! (Debian packages), installed on first use like bpf-linker.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::{
    setup::Toolchain,
    system::{is_root, output_of, run_checked},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// x86_64.
    Amd64,
    /// aarch64 (Graviton, Ampere, Axion, ...).
    Arm64,
}

impl Arch {
    /// Every architecture the image holds.
    pub const ALL: [Self; 2] = [Self::Amd64, Self::Arm64];

    /// The machine `cargo xtask` runs on.
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Arm64
        } else {
            Self::Amd64
        }
    }

    pub fn rust_target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-gnu",
            Self::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// How `file(1)` names the architecture of an ELF binary.
    pub fn elf_machine(self) -> &'static str {
        match self {
            Self::Amd64 => "x86-64",
            Self::Arm64 => "ARM aarch64",
        }
    }

    /// `strip(1)` for this architecture's binaries.
    pub fn strip(self) -> String {
        if self == Self::host() {
            return "strip".into();
        }
        let (compiler, _) = self.cross_compiler();
        compiler.replace("-gcc", "-strip")
    }

    /// The name OCI image platforms and `buildah --arch` give it.
    pub fn oci(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The C compiler that links for this architecture, and the Debian
    /// packages that bring it and its C library (static glibc included).
    fn cross_compiler(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Amd64 => (
                "x86_64-linux-gnu-gcc",
                &["gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"],
            ),
            Self::Arm64 => (
                "aarch64-linux-gnu-gcc",
                &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
            ),
        }
    }

    /// `CARGO_TARGET_<TRIPLE>_...` and `CC_<triple>` spell the target so.
    fn env_name(self, upper: bool) -> String {
        let name = self.rust_target().replace('-', "_");
        if upper {
            name.to_uppercase()
        } else {
            name
        }
    }
}

/// Builds the collector for `arch`, linked statically (glibc with
/// `crt-static`) so that it runs on any node of that architecture, and
/// returns its path. The eBPF programs are built for the same
/// architecture: aya-build takes it from the target cargo builds for.
pub fn build_static(
    root: &Path,
    toolchain: &Toolchain,
    arch: Arch,
    profile: &str,
) -> Result<std::path::PathBuf> {
    build_static_binary(
        root,
        toolchain,
        arch,
        profile,
        "oom-collector",
        "oom-collector",
    )
}

/// [`build_static`] for binary `bin` of workspace package `package`.
pub fn build_static_binary(
    root: &Path,
    toolchain: &Toolchain,
    arch: Arch,
    profile: &str,
    package: &str,
    bin: &str,
) -> Result<std::path::PathBuf> {
    ensure_cross(arch)?;
    let target = arch.rust_target();
    let mut cargo = toolchain.cargo();
    cargo
        .current_dir(root)
        .env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", arch.env_name(true)),
            "-C target-feature=+crt-static",
        )
        .args([
            "build",
            "--package",
            package,
            "--bin",
            bin,
            "--target",
            target,
        ]);
    if arch != Arch::host() {
        let (compiler, _) = arch.cross_compiler();
        cargo
            .env(
                format!("CARGO_TARGET_{}_LINKER", arch.env_name(true)),
                compiler,
            )
            .env(format!("CC_{}", arch.env_name(false)), compiler);
    }
    if profile == "release" {
        cargo.arg("--release");
    }
    run_checked(&mut cargo)?;
    let binary = crate::target_dir(root).join(target).join(profile).join(bin);
    let file = output_of(Command::new("file").arg(&binary)).unwrap_or_default();
    if !file.contains(arch.elf_machine()) || !file.contains("static") {
        bail!(
            "{} is not a static {} binary: {file}",
            binary.display(),
            arch.elf_machine()
        );
    }
    Ok(binary)
}

/// The Rust target and, for another architecture than this machine's, the
/// cross compiler; installed where missing.
fn ensure_cross(arch: Arch) -> Result<()> {
    let target = arch.rust_target();
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if !installed.lines().any(|line| line.trim() == target) {
        eprintln!("xtask: adding the Rust target {target}");
        run_checked(Command::new("rustup").args(["target", "add", target]))?;
    }
    if arch == Arch::host() {
        return Ok(());
    }
    let (compiler, packages) = arch.cross_compiler();
    if Command::new(compiler)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "building for {arch:?} needs {compiler}: run as root to have it installed, or \
             `apt-get install {}`",
            packages.join(" ")
        );
    }
    eprintln!(
        "xtask: installing the {arch:?} cross compiler ({})",
        packages.join(", ")
    );
    let apt = |args: &[&str]| {
        run_checked(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(args),
        )
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(packages);
    apt(&args).with_context(|| format!("cannot install {}", packages.join(", ")))
}
