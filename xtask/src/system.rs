//! Small helpers for commands, privileges and kernel filesystems.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

pub fn is_root() -> bool {
    // The effective uid, second of the four on the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, failing with its command line if it fails.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Output of a command that must succeed.
pub fn output_of(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn is_mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|mounts| mounts.lines().any(|l| l.split(' ').nth(1) == Some(path)))
}

/// tracefs (for tracepoints) and bpffs are not mounted at boot on every
/// machine; mount them where absent. Needs root.
pub fn mount_kernel_filesystems() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    for (fs_type, path) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !is_mounted(path) {
            run_checked(Command::new("mount").args(["-t", fs_type, fs_type, path]))
                .with_context(|| format!("cannot mount {fs_type} at {path}"))?;
        }
    }
    Ok(())
}
