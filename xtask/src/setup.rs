//! The toolchain the eBPF programs need, installed idempotently:
//!
//! - the `nightly` toolchain's `rust-src` (the BPF target builds `core`
//!   from source with `-Z build-std=core`);
//! - `bpf-linker`, built against the nightly's own libLLVM (no system
//!   LLVM), with the `llvm-<major>` feature matching that nightly, installed
//!   in `$CARGO_HOME/bin` where rustup users already have their PATH. A
//!   stamp beside it records which nightly it was built for, so a nightly
//!   update rebuilds it.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::system::{output_of, run_checked};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What builds need: a PATH that finds bpf-linker.
pub struct Toolchain {
    bin_dir: PathBuf,
}

impl Toolchain {
    /// `cargo` with bpf-linker on its PATH.
    pub fn cargo(&self) -> Command {
        self.with_path(Command::new(
            env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        ))
    }

    /// The nightly toolchain's `cargo`, with bpf-linker on its PATH.
    pub fn nightly_cargo(&self) -> Command {
        let mut command = Command::new("rustup");
        command.args(["run", NIGHTLY, "cargo"]);
        self.with_path(command)
    }

    fn with_path(&self, mut command: Command) -> Command {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin_dir.clone()];
        paths.extend(env::split_paths(&path));
        command.env(
            "PATH",
            env::join_paths(paths).expect("PATH entries are valid"),
        );
        command
    }
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

struct Nightly {
    sysroot: PathBuf,
    /// `rustc -vV` of the nightly: identifies it exactly.
    version: String,
    llvm_major: u32,
}

fn nightly() -> Result<Nightly> {
    let version = output_of(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV")).context(
        "the nightly Rust toolchain is needed to build the eBPF programs \
             (`rustup toolchain install nightly`)",
    )?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .context("`rustc +nightly -vV` does not name its LLVM version")?;
    let llvm_major = llvm
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {llvm:?}"))?;
    let sysroot = output_of(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
    )?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        version,
        llvm_major,
    })
}

pub fn ensure_toolchain() -> Result<Toolchain> {
    let nightly = nightly()?;
    ensure_rust_src(&nightly)?;
    let bin_dir = cargo_home().join("bin");
    ensure_bpf_linker(&nightly, &bin_dir)?;
    Ok(Toolchain { bin_dir })
}

fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    let library = nightly.sysroot.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to the {NIGHTLY} toolchain");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
}

fn ensure_bpf_linker(nightly: &Nightly, bin_dir: &Path) -> Result<()> {
    let binary = bin_dir.join("bpf-linker");
    let stamp = bin_dir.join(".bpf-linker-nightly");
    let wanted_stamp = format!("bpf-linker {BPF_LINKER_VERSION}\n{}", nightly.version);
    let works = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted_stamp) {
        return Ok(());
    }

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} toolchain's LLVM {} \
         (about a minute, once)",
        nightly.llvm_major
    );
    let nightly_lib = nightly.sysroot.join("lib");
    let libllvm = fs::read_dir(&nightly_lib)
        .with_context(|| format!("cannot list {}", nightly_lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM in {}: is the nightly toolchain complete?",
                nightly_lib.display()
            )
        })?;

    // llvm-sys finds LLVM through a prefix whose lib/ has libLLVM.so.
    let prefix = env::temp_dir().join(format!("oom-collector-llvm-{}", nightly.llvm_major));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    symlink(&libllvm, &link)?;

    let root = bin_dir.parent().context("CARGO_HOME/bin has a parent")?;
    let major = nightly.llvm_major;
    let mut install = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    install
        .args(["install", "bpf-linker", "--locked", "--force"])
        .args(["--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(root)
        .env("LLVM_PREFIX", &prefix)
        .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-args=-Wl,-rpath,{}", nightly_lib.display()),
        );
    run_checked(&mut install).context("cannot build bpf-linker")?;
    if !Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        bail!(
            "bpf-linker was installed at {} but does not run",
            binary.display()
        );
    }
    fs::write(&stamp, wanted_stamp)?;
    Ok(())
}

/// clippy for the eBPF crate, on its own target.
pub fn clippy_ebpf(toolchain: &Toolchain, root: &Path) -> Result<()> {
    let mut clippy = toolchain.nightly_cargo();
    clippy
        .current_dir(root)
        .args(["clippy", "--package", "oom-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]);
    run_checked(&mut clippy)
}
