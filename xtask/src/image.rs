//! `cargo xtask image`: the collector's container image, built from
//! `deploy/Containerfile` with buildah (no daemon, no registry).
//!
//! The binary is linked statically (glibc with `crt-static`) so the image
//! needs no base, and stripped. buildah keeps its storage under
//! `target/image/` rather than the machine's, and the result is written as
//! an OCI archive, `target/image/oom-collector.oci.tar`, ready for
//! `skopeo copy` or `ctr images import`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    arch::{self, Arch},
    setup::Toolchain,
    system::{output_of, run_checked},
};

const REPOSITORY: &str = "localhost/oom-collector";

/// The collector crate's version, which tags the image (and which the
/// DaemonSet's image names).
fn collector_version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("oom-collector/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .context("oom-collector/Cargo.toml has no version")
}

/// Builds the image; the path of its OCI archive.
pub fn image(root: &Path, toolchain: &Toolchain) -> Result<PathBuf> {
    let tag = format!("{REPOSITORY}:{}", collector_version(root)?);
    let tag = tag.as_str();
    let binary = arch::build_static(root, toolchain, Arch::host(), "release")?;

    let work = crate::target_dir(root).join("image");
    let context = work.join("context");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context)?;
    fs::copy(&binary, context.join("oom-collector"))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    run_checked(Command::new("strip").arg(context.join("oom-collector")))
        .context("strip (binutils) is needed to build the image")?;

    let buildah = |args: &[&str]| {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(work.join("storage"))
            .arg("--runroot")
            .arg(work.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        command
    };
    run_checked(
        buildah(&["build", "--quiet", "--tag", tag, "--file"])
            .arg(root.join("deploy/Containerfile"))
            .arg(&context),
    )
    .context("buildah (Debian package buildah) builds the image")?;
    let archive = work.join("oom-collector.oci.tar");
    let _ = fs::remove_file(&archive);
    run_checked(
        buildah(&["push", "--quiet", tag]).arg(format!("oci-archive:{}", archive.display())),
    )?;
    let size = output_of(&mut buildah(&["images", "--format", "{{.Size}}", tag]))?;
    let entrypoint = output_of(&mut buildah(&[
        "inspect",
        "--format",
        "{{.OCIv1.Config.Entrypoint}}",
        tag,
    ]))?;
    if !entrypoint.contains("/oom-collector") {
        bail!("the image's entrypoint is {entrypoint}");
    }
    println!(
        "image {tag}: {} ({} as an OCI archive at {})",
        size.trim(),
        human(fs::metadata(&archive)?.len()),
        archive.display()
    );
    Ok(archive)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
