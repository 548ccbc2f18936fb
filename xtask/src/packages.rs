//! The programs the tests and the bench need beyond the toolchain, and
//! their installation: Debian packages with apt, `kubernetes-validate`
//! with pip. `cargo xtask test` (and `bench`) install what is missing
//! themselves when they run as root on a machine with apt, so a fresh
//! machine needs nothing but the README's two commands.
//!
//! What cannot be installed is said once here; each test that needs it
//! then skips with its reason, or fails under `CI=true`.

use std::process::Command;

use anyhow::{bail, Result};

use crate::system::{is_root, run_checked};

/// A Debian package, the program that shows it is there, and why.
struct Package {
    name: &'static str,
    program: &'static str,
    why: &'static str,
}

const TEST_PACKAGES: [Package; 13] = [
    Package {
        name: "util-linux",
        program: "unshare",
        why: "setpriv and unshare for the capability and no-tracefs tests",
    },
    Package {
        name: "mount",
        program: "mount",
        why: "mounting tracefs and bpffs",
    },
    Package {
        name: "qemu-system-x86",
        program: "qemu-system-x86_64",
        why: "the kernel matrix in QEMU guests",
    },
    Package {
        name: "qemu-system-arm",
        program: "qemu-system-aarch64",
        why: "the arm64 kernel matrix in emulated arm64 guests",
    },
    Package {
        name: "busybox-static",
        program: "busybox",
        why: "the QEMU guests' userland and the containerd test's image",
    },
    Package {
        name: "containerd",
        program: "containerd",
        why: "the real container runtime test",
    },
    Package {
        name: "runc",
        program: "runc",
        why: "the real container runtime test",
    },
    Package {
        name: "buildah",
        program: "buildah",
        why: "building the container image",
    },
    Package {
        name: "binutils",
        program: "strip",
        why: "stripping the image's binary",
    },
    Package {
        name: "file",
        program: "file",
        why: "checking the image's binary is static",
    },
    Package {
        name: "g++",
        program: "g++",
        why: "libFuzzer, for the fuzz targets",
    },
    BPFTOOL,
    Package {
        name: "prometheus",
        program: "promtool",
        why: "the alert rules' tests (promtool) and a real Prometheus scraping the collector",
    },
];

/// The tests read a hook's run count with it; the bench, what is attached
/// and what each program costs.
const BPFTOOL: Package = Package {
    name: "bpftool",
    program: "bpftool",
    why: "the kernel's own statistics of the collector's programs",
};

const BENCH_PACKAGES: [Package; 2] = [
    BPFTOOL,
    Package {
        name: "bpftrace",
        program: "bpftrace",
        why: "the tool the collector is compared with",
    },
];

/// `kubernetes-validate`, from PyPI, checks the manifests against the
/// OpenAPI schemas of this Kubernetes release.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Installs what the tests need and is missing, where it can.
pub fn ensure_for_tests() -> Result<()> {
    ensure(&TEST_PACKAGES)?;
    if !on_path("kubernetes-validate") && can_install() {
        eprintln!(
            "xtask: installing {KUBERNETES_VALIDATE} with pip (checks the Kubernetes manifests)"
        );
        let pip = if on_path("pip") { "pip" } else { "pip3" };
        if let Err(error) =
            run_checked(Command::new(pip).args(["install", "--quiet", KUBERNETES_VALIDATE]))
        {
            return unavailable(&format!("cannot install {KUBERNETES_VALIDATE}: {error:#}"));
        }
        // A pyenv Python puts new commands on PATH through its shims.
        if !on_path("kubernetes-validate") && on_path("pyenv") {
            let _ = Command::new("pyenv").arg("rehash").status();
        }
    }
    Ok(())
}

/// Installs what the bench needs and is missing, where it can.
pub fn ensure_for_bench() -> Result<()> {
    ensure(&BENCH_PACKAGES)
}

fn ensure(packages: &[Package]) -> Result<()> {
    let missing: Vec<&Package> = packages.iter().filter(|p| !on_path(p.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    if !can_install() {
        return unavailable(&format!(
            "missing {} (not root, or no apt-get): what needs them is skipped",
            names.join(", ")
        ));
    }
    eprintln!("xtask: installing Debian packages the tests need:");
    for package in &missing {
        eprintln!("  {:<16} {}", package.name, package.why);
    }
    let apt = |args: &[&str]| {
        run_checked(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(args),
        )
    };
    // Without recommends: QEMU's would add a desktop.
    let installed = apt(&["update", "-qq"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&names);
        apt(&args)
    });
    if let Err(error) = installed {
        return unavailable(&format!("cannot install {}: {error:#}", names.join(", ")));
    }
    Ok(())
}

/// As root, with apt: this machine can install Debian packages.
fn can_install() -> bool {
    is_root() && on_path("apt-get")
}

/// Says what cannot be had; under `CI=true` that fails the run.
fn unavailable(why: &str) -> Result<()> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("{why}; CI=true, so nothing may be skipped");
    }
    eprintln!("xtask: {why}");
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|dir| dir.join(program).is_file())
}
