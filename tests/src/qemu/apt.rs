//! Debian kernel packages, fetched with `apt-get download` through a private
//! apt configuration and state directory (`target/qemu/apt/<suite>/`): the
//! machine's own sources, lists and caches are never read or changed, and
//! no package is installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// A Debian release whose archive we read.
pub struct Suite {
    pub name: &'static str,
    /// `sources.list` lines.
    pub sources: &'static str,
}

pub const BULLSEYE: Suite = Suite {
    name: "bullseye",
    sources: "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
",
};

/// Bullseye as its last point release shipped it, without the security
/// archive: its kernel (5.10.218) still has the pid-only `mark_victim`.
pub const BULLSEYE_RELEASE: Suite = Suite {
    name: "bullseye-release",
    sources: "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
",
};

pub const BOOKWORM: Suite = Suite {
    name: "bookworm",
    sources: "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
",
};

pub const TRIXIE: Suite = Suite {
    name: "trixie",
    sources: "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
",
};

/// A suite's kernel, named by its meta package (`linux-image-cloud-amd64`),
/// which depends on the current build (`linux-image-5.10.0-46-cloud-amd64`):
/// the ABI number is read from the archive, never written down here.
pub struct KernelPackages {
    pub suite: &'static Suite,
    pub meta: &'static str,
    /// The flavour the meta package's dependency ends with (`-cloud-amd64`);
    /// the package downloaded is its `-unsigned` build.
    pub flavour: &'static str,
    /// Debian's name for the architecture: `amd64`, `arm64`.
    pub arch: &'static str,
}

/// The build series of a kernel image package: `<prefix><N><suffix>`.
#[derive(Debug, PartialEq)]
struct Builds {
    prefix: String,
    newest: u64,
    suffix: String,
}

impl Builds {
    /// From the package a meta package depends on:
    /// `linux-image-5.10.0-46-cloud-amd64` gives `linux-image-5.10.0-`, 46,
    /// `-cloud-amd64-unsigned`; `linux-image-6.12.57+deb13-cloud-amd64`
    /// gives `linux-image-6.12.`, 57, `+deb13-cloud-amd64-unsigned`.
    fn of(image: &str, flavour: &str) -> Option<Self> {
        let abi = image.strip_prefix("linux-image-")?.strip_suffix(flavour)?;
        let (base, tail) = abi.split_at(abi.find('+').unwrap_or(abi.len()));
        let digits = base.len() - base.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (stem, number) = base.split_at(base.len() - digits);
        Some(Self {
            prefix: format!("linux-image-{stem}"),
            newest: number.parse().ok()?,
            suffix: format!("{tail}{flavour}-unsigned"),
        })
    }
}

/// How many of the newest builds to try: a new build can be in the index a
/// while before its package reaches the mirror (5.10.0-44 to -46 gave 404
/// when -43 downloaded).
const DOWNLOAD_ATTEMPTS: usize = 6;

/// apt with its configuration and state in `dir`, for packages of `arch`.
struct Apt {
    dir: PathBuf,
    arch: &'static str,
    suite: &'static str,
}

impl Apt {
    fn new(suite: &Suite, arch: &'static str, dir: PathBuf) -> Result<Self, String> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("sources.list"), suite.sources)
            .map_err(|e| format!("cannot write {}: {e}", dir.join("sources.list").display()))?;
        Ok(Self {
            dir,
            arch,
            suite: suite.name,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = self.dir.display();
        for option in [
            format!("Dir::Etc::SourceList={dir}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::Cache={dir}/cache"),
            "Dir::State::status=/dev/null".to_owned(),
            // Root's downloads would otherwise be done as `_apt`, which
            // may not be able to write into the target directory.
            "APT::Sandbox::User=root".to_owned(),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
        ] {
            command.args(["-o", &option]);
        }
        command.env("LC_ALL", "C").stdin(Stdio::null());
        command
    }

    /// `apt-get update` of the suite's lists.
    fn update(&self) -> Result<(), String> {
        let mut update = self.command("apt-get");
        update.args(["-q", "update"]);
        self.run(update, &format!("apt-get update ({})", self.suite))
            .map(drop)
    }

    fn run(&self, mut command: Command, what: &str) -> Result<Output, String> {
        let output = command
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{what} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// Downloads the newest package of `packages` that downloads into
/// `download_dir` and returns the `.deb`.
pub fn download_newest(
    packages: &KernelPackages,
    apt_dir: PathBuf,
    download_dir: &Path,
) -> Result<PathBuf, String> {
    let apt = Apt::new(packages.suite, packages.arch, apt_dir)?;
    apt.update()?;

    let mut depends = apt.command("apt-cache");
    depends.args(["depends", packages.meta]);
    let depends = apt.run(depends, &format!("apt-cache depends {}", packages.meta))?;
    let depends = String::from_utf8_lossy(&depends.stdout);
    let builds = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find_map(|image| Builds::of(image.trim(), packages.flavour))
        .ok_or_else(|| {
            format!(
                "{} in {} depends on no linux-image-*{}:\n{depends}",
                packages.meta, packages.suite.name, packages.flavour
            )
        })?;

    // The newest build first, then older ones still in the index.
    let mut names = apt.command("apt-cache");
    names.args(["pkgnames", &builds.prefix]);
    let names = apt.run(names, "apt-cache pkgnames")?;
    let mut candidates: Vec<(u64, String)> = String::from_utf8_lossy(&names.stdout)
        .lines()
        .filter_map(|name| {
            let build = name
                .strip_prefix(&builds.prefix)?
                .strip_suffix(&builds.suffix)?;
            Some((build.parse().ok()?, name.to_owned()))
        })
        .filter(|(build, _)| *build <= builds.newest)
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    if candidates.is_empty() {
        return Err(format!(
            "no package {}<N>{} up to {} in {}",
            builds.prefix, builds.suffix, builds.newest, packages.suite.name
        ));
    }

    let mut failures = Vec::new();
    for (_, package) in candidates.iter().take(DOWNLOAD_ATTEMPTS) {
        empty_dir(download_dir)?;
        let mut download = apt.command("apt-get");
        download
            .current_dir(download_dir)
            .args(["-q", "download", package]);
        match apt.run(download, &format!("apt-get download {package}")) {
            Ok(_) => return find_deb(download_dir),
            Err(e) => failures.push(e),
        }
    }
    Err(failures.join("\n"))
}

/// Downloads packages `names` of `arch` from `suite` into `download_dir`
/// and returns their `.deb`s.
pub fn download(
    suite: &Suite,
    arch: &'static str,
    names: &[&str],
    apt_dir: PathBuf,
    download_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let apt = Apt::new(suite, arch, apt_dir)?;
    apt.update()?;
    empty_dir(download_dir)?;
    let mut download = apt.command("apt-get");
    download
        .current_dir(download_dir)
        .args(["-q", "download"])
        .args(names);
    apt.run(
        download,
        &format!("apt-get download {} ({arch})", names.join(" ")),
    )?;
    let debs: Vec<PathBuf> = fs::read_dir(download_dir)
        .map_err(|e| format!("cannot list {}: {e}", download_dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .collect();
    if debs.len() == names.len() {
        Ok(debs)
    } else {
        Err(format!(
            "apt-get download {} left {} .deb files in {}",
            names.join(" "),
            debs.len(),
            download_dir.display()
        ))
    }
}

/// `dir`, made anew and empty.
fn empty_dir(dir: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn find_deb(dir: &Path) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", dir.display()))
}

/// Unpacks `boot/vmlinuz-<release>` of a kernel image package into `dir`;
/// returns the release (`uname -r`) and the kernel's path.
pub fn extract_vmlinuz(deb: &Path, dir: &Path) -> Result<(String, PathBuf), String> {
    unpack(deb, dir)?;
    let boot = dir.join("boot");
    fs::read_dir(&boot)
        .map_err(|e| format!("{} has no boot/: {e}", deb.display()))?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((release, entry.path()))
        })
        .ok_or_else(|| format!("{} has no boot/vmlinuz-*", deb.display()))
}

/// Unpacks a package's files into `dir`, as `dpkg-deb --extract` does.
pub fn unpack(deb: &Path, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut unpack = Command::new("dpkg-deb");
    unpack.arg("--extract").arg(deb).arg(dir);
    let output = unpack
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dpkg-deb --extract {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Builds;

    #[test]
    fn builds_of_a_meta_package_dependency() {
        assert_eq!(
            Builds::of("linux-image-5.10.0-46-cloud-amd64", "-cloud-amd64"),
            Some(Builds {
                prefix: "linux-image-5.10.0-".into(),
                newest: 46,
                suffix: "-cloud-amd64-unsigned".into(),
            })
        );
        assert_eq!(
            Builds::of("linux-image-6.12.57+deb13-cloud-amd64", "-cloud-amd64"),
            Some(Builds {
                prefix: "linux-image-6.12.".into(),
                newest: 57,
                suffix: "+deb13-cloud-amd64-unsigned".into(),
            })
        );
        assert_eq!(
            Builds::of("linux-image-6.1-cloud-amd64", "-cloud-amd64"),
            Some(Builds {
                prefix: "linux-image-6.".into(),
                newest: 1,
                suffix: "-cloud-amd64-unsigned".into(),
            })
        );
        assert_eq!(
            Builds::of("linux-headers-6.1.0-57-cloud-amd64", "-cloud-amd64"),
            None
        );
    }
}
