//! `cargo xtask image`: the collector's container image, built from
//! `deploy/Containerfile` with buildah (no daemon, no registry), for amd64
//! and arm64 under one image index.
//!
//! Each binary is linked statically (glibc with `crt-static`) so the image
//! needs no base, and stripped; arm64's is cross-built (see `arch`).
//! buildah keeps its storage under `target/image/` rather than the
//! machine's, and the result is written as an OCI archive of the index,
//! `target/image/oom-collector.oci.tar`, ready for `skopeo copy --all` or
//! `ctr images import`.

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
    let work = crate::target_dir(root).join("image");
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
    // A fresh index each time: `--manifest` adds to one that exists, and
    // refuses a plain image of that name.
    let _ = buildah(&["manifest", "rm", tag]).output();
    let _ = buildah(&["rmi", "--force", tag]).output();
    for arch in Arch::ALL {
        let binary = arch::build_static(root, toolchain, arch, "release")?;
        let context = work.join("context").join(arch.oci());
        let _ = fs::remove_dir_all(&context);
        fs::create_dir_all(&context)?;
        fs::copy(&binary, context.join("oom-collector"))
            .with_context(|| format!("cannot copy {}", binary.display()))?;
        run_checked(Command::new(arch.strip()).arg(context.join("oom-collector")))
            .context("strip (binutils) is needed to build the image")?;
        // FROM scratch and COPY: nothing runs, so no emulation is needed.
        run_checked(
            buildah(&[
                "build",
                "--quiet",
                "--os",
                "linux",
                "--arch",
                arch.oci(),
                "--tag",
                &format!("{tag}-{}", arch.oci()),
                "--manifest",
                tag,
                "--file",
            ])
            .arg(root.join("deploy/Containerfile"))
            .arg(&context),
        )
        .context("buildah (Debian package buildah) builds the image")?;
    }
    let archive = work.join("oom-collector.oci.tar");
    let _ = fs::remove_file(&archive);
    run_checked(
        buildah(&["manifest", "push", "--all", "--quiet", tag])
            .arg(format!("oci-archive:{}", archive.display())),
    )?;
    let index = output_of(&mut buildah(&["manifest", "inspect", tag]))?;
    for arch in Arch::ALL {
        if !index.contains(&format!("\"architecture\": \"{}\"", arch.oci())) {
            bail!("the image index has no {} image: {index}", arch.oci());
        }
    }
    let mut sizes = Vec::new();
    for arch in Arch::ALL {
        let image = format!("{tag}-{}", arch.oci());
        let size = output_of(&mut buildah(&["images", "--format", "{{.Size}}", &image]))?;
        let entrypoint = output_of(&mut buildah(&[
            "inspect",
            "--format",
            "{{.OCIv1.Config.Entrypoint}}",
            &image,
        ]))?;
        if !entrypoint.contains("/oom-collector") {
            bail!("the {} image's entrypoint is {entrypoint}", arch.oci());
        }
        sizes.push(format!("{} {}", arch.oci(), size.trim()));
    }
    println!(
        "image {tag}: {} ({} as an OCI archive of the index at {})",
        sizes.join(", "),
        human(fs::metadata(&archive)?.len()),
        archive.display()
    );
    Ok(archive)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
