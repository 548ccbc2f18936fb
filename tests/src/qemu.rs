//! The real collector on other kernels, in QEMU guests.
//!
//! The machine the tests run on has one kernel (6.18, cgroup v1 memory, no
//! kprobes); the collector's users run others. This boots Debian's cloud
//! kernels 5.10 (bullseye, as updated and as released), 6.1 (bookworm) and
//! 6.12 (trixie) under QEMU with a busybox
//! initramfs holding the programs a test gives (and the shared libraries
//! they load), runs the test's shell script in the guest as root, and hands
//! back the script's stdout byte for byte with its exit status.
//!
//! - Kernels: [`Series::fetch`] downloads the build of the series that
//!   Debian's meta package `linux-image-cloud-amd64` names (or the newest
//!   older one when that is not on the mirror yet) with `apt-get download` through a private apt set-up under
//!   `target/qemu/apt/` (never the machine's own), and caches its
//!   `vmlinuz` in `target/qemu/kernels/<series>/`. Later calls reuse it
//!   without the network; delete that directory to take a newer build.
//! - QEMU runs with TCG only: KVM on this machine kind is a nested mode
//!   that hangs. Every boot has a deadline, after which QEMU is killed; it
//!   is killed as well if the test process dies.
//! - The guest's serial ports: ttyS0 the kernel console (boot log and the
//!   script's stderr), ttyS1 the script's stdout, in raw mode so no `\r` and
//!   no kernel message can get in, ttyS2 the script's exit status.
//!
//! [`QemuError::is_unavailable`] tells a machine that cannot run guests (no
//! QEMU, no busybox, no kernel download) from a guest that failed: tests skip
//! on the first outside CI, and fail on both under `CI=true`.

mod apt;
mod initramfs;

use std::{
    fmt, fs,
    io::{self, BufWriter},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use initramfs::Initramfs;

/// A Debian kernel series the collector is tested on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Series {
    /// Debian 11 (bullseye)'s `linux-image-cloud-amd64`.
    Linux5_10,
    /// The same from bullseye's last point release alone, without the
    /// security archive: a 5.10 from before `mark_victim` carried more than
    /// the victim's pid (5.10.218), as long-lived images still run.
    Linux5_10Release,
    /// Debian 12 (bookworm)'s `linux-image-cloud-amd64`.
    Linux6_1,
    /// Debian 13 (trixie)'s `linux-image-cloud-amd64`.
    Linux6_12,
}

impl Series {
    pub const ALL: [Self; 4] = [
        Self::Linux5_10,
        Self::Linux5_10Release,
        Self::Linux6_1,
        Self::Linux6_12,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linux5_10 => "5.10",
            Self::Linux5_10Release => "5.10-release",
            Self::Linux6_1 => "6.1",
            Self::Linux6_12 => "6.12",
        }
    }

    fn packages(self) -> apt::KernelPackages {
        let suite = match self {
            Self::Linux5_10 => &apt::BULLSEYE,
            Self::Linux5_10Release => &apt::BULLSEYE_RELEASE,
            Self::Linux6_1 => &apt::BOOKWORM,
            Self::Linux6_12 => &apt::TRIXIE,
        };
        apt::KernelPackages {
            suite,
            meta: "linux-image-cloud-amd64",
            flavour: "-cloud-amd64",
        }
    }

    /// The series' kernel, from the cache or downloaded (the newest build
    /// that downloads) on first use.
    pub fn fetch(self) -> Result<Kernel, QemuError> {
        // One download at a time: two for the same suite would fight over
        // apt's lock.
        static FETCHING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = FETCHING.lock().unwrap_or_else(|e| e.into_inner());

        let dir = cache_dir().join("kernels").join(self.name());
        if let Some(kernel) = self.cached(&dir) {
            return Ok(kernel);
        }
        for tool in [TOOL_APT_GET, TOOL_DPKG_DEB] {
            tool.require()?;
        }
        let unavailable = |detail: String| QemuError::KernelUnavailable {
            series: self.name(),
            detail,
        };
        let scratch = cache_dir().join(format!("download-{}", self.name()));
        let _ = fs::remove_dir_all(&scratch);
        let deb = apt::download_newest(
            &self.packages(),
            cache_dir().join("apt").join(self.packages().suite.name),
            &scratch.join("deb"),
        )
        .map_err(unavailable)?;
        let (release, vmlinuz) =
            apt::extract_vmlinuz(&deb, &scratch.join("root")).map_err(unavailable)?;
        // Assemble the cache entry aside and move it in whole, so an
        // interrupted download never looks cached.
        let staged = scratch.join("kernel");
        let package = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        fs::create_dir_all(&staged)
            .and_then(|()| fs::rename(&vmlinuz, staged.join("vmlinuz")))
            .and_then(|()| fs::write(staged.join("release"), &release))
            .and_then(|()| fs::write(staged.join("package"), package.unwrap_or_default()))
            .and_then(|()| fs::create_dir_all(cache_dir().join("kernels")))
            .and_then(|()| {
                let _ = fs::remove_dir_all(&dir);
                fs::rename(&staged, &dir)
            })
            .map_err(|e| {
                unavailable(format!("cannot store the kernel in {}: {e}", dir.display()))
            })?;
        let _ = fs::remove_dir_all(&scratch);
        self.cached(&dir)
            .ok_or_else(|| unavailable(format!("{} is incomplete", dir.display())))
    }

    fn cached(self, dir: &Path) -> Option<Kernel> {
        let vmlinuz = dir.join("vmlinuz");
        let release = fs::read_to_string(dir.join("release")).ok()?;
        vmlinuz.is_file().then(|| Kernel {
            series: self,
            release: release.trim().to_owned(),
            package: fs::read_to_string(dir.join("package")).unwrap_or_default(),
            vmlinuz,
        })
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    /// Its `uname -r`, e.g. `5.10.0-43-cloud-amd64`.
    pub release: String,
    /// The `.deb` it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// A host program the guests need, and the Debian package that has it.
#[derive(Clone, Copy)]
struct Tool {
    program: &'static str,
    package: &'static str,
}

const TOOL_QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
const TOOL_BUSYBOX: Tool = Tool {
    program: "busybox",
    package: "busybox-static",
};
const TOOL_APT_GET: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
const TOOL_DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
};

impl Tool {
    fn require(self) -> Result<PathBuf, QemuError> {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(self.program))
            .find(|path| path.is_file())
            .ok_or(QemuError::MissingTool {
                program: self.program,
                package: self.package,
            })
    }
}

/// What went wrong on the way to, or in, a guest.
#[derive(Debug)]
pub enum QemuError {
    /// A program the host needs is not installed.
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    /// The kernel could not be downloaded or unpacked.
    KernelUnavailable {
        series: &'static str,
        detail: String,
    },
    /// The host could not prepare or start the guest.
    Host { what: String, source: io::Error },
    /// The guest was still running at its deadline.
    Timeout {
        release: String,
        timeout: Duration,
        run_dir: PathBuf,
        console_tail: String,
    },
    /// QEMU ended without the guest reporting its script's exit status
    /// (kernel panic, no init, QEMU error).
    NoStatus {
        release: String,
        qemu: ExitStatus,
        qemu_stderr: String,
        run_dir: PathBuf,
        console_tail: String,
    },
}

impl QemuError {
    /// Whether this machine cannot run guests at all (a tool missing, no
    /// kernel to be had), rather than a guest having failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::MissingTool { .. } | Self::KernelUnavailable { .. }
        )
    }
}

impl fmt::Display for QemuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTool { program, package } => write!(
                f,
                "{program} is not installed (apt-get install --no-install-recommends {package})"
            ),
            Self::KernelUnavailable { series, detail } => {
                write!(f, "cannot get the Debian {series} kernel: {detail}")
            }
            Self::Host { what, source } => write!(f, "{what}: {source}"),
            Self::Timeout {
                release,
                timeout,
                run_dir,
                console_tail,
            } => write!(
                f,
                "the {release} guest was still running after {timeout:?}; killed it. \
                 Logs in {}. Its console ended with:\n{console_tail}",
                run_dir.display()
            ),
            Self::NoStatus {
                release,
                qemu,
                qemu_stderr,
                run_dir,
                console_tail,
            } => write!(
                f,
                "the {release} guest ended ({qemu}) without reporting its script's exit status. \
                 Logs in {}. QEMU said: {}\nIts console ended with:\n{console_tail}",
                run_dir.display(),
                qemu_stderr.trim()
            ),
        }
    }
}

impl std::error::Error for QemuError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Host { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a guest's script did.
#[derive(Debug)]
pub struct GuestRun {
    /// The script's stdout, byte for byte.
    pub stdout: Vec<u8>,
    /// The script's exit status.
    pub status: i32,
    /// The kernel console: boot log, kernel messages, the script's stderr.
    pub console: String,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
}

/// A guest to boot: the files of its initramfs, its memory and CPUs.
pub struct Guest {
    root: Initramfs,
    library_dirs: Vec<String>,
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
}

impl Guest {
    /// A guest with busybox's shell and tools on `PATH`, 512 MiB of memory,
    /// 2 CPUs and a 5 minute deadline. Fails at once if this machine has no
    /// QEMU or busybox.
    pub fn new() -> Result<Self, QemuError> {
        TOOL_QEMU.require()?;
        let busybox = TOOL_BUSYBOX.require()?;
        let mut guest = Self {
            root: Initramfs::default(),
            library_dirs: Vec::new(),
            memory_mib: 512,
            cpus: 2,
            timeout: Duration::from_secs(300),
        };
        guest = guest.program("/bin/busybox", &busybox)?;
        let applets = Command::new(&busybox)
            .arg("--list")
            .output()
            .map_err(|source| QemuError::Host {
                what: format!("cannot run {} --list", busybox.display()),
                source,
            })?;
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                guest.root.symlink(&format!("/bin/{applet}"), "busybox");
            }
        }
        for dir in ["/dev", "/proc", "/sys", "/tmp", "/root", "/usr/bin"] {
            guest.root.dir(dir);
        }
        // The kernel opens it for /init's stdin, stdout and stderr before
        // anything is mounted.
        guest.root.char_device("/dev/console", 5, 1);
        Ok(guest)
    }

    /// Adds a host program at `guest_path`, with the shared libraries it
    /// loads at the paths `ldd` shows, so a dynamically linked binary runs.
    pub fn program(mut self, guest_path: &str, host_path: &Path) -> Result<Self, QemuError> {
        let host_error = |what: &str, path: &Path| {
            let what = format!("{what} {}", path.display());
            move |source| QemuError::Host { what, source }
        };
        let libraries = initramfs::shared_libraries(host_path)
            .map_err(host_error("cannot list the shared libraries of", host_path))?;
        for library in libraries {
            // Follows symbolic links: the guest gets the file itself.
            let data = fs::read(&library).map_err(host_error("cannot read", &library))?;
            let guest_library = library.to_string_lossy().into_owned();
            if let Some(dir) = library.parent() {
                let dir = dir.to_string_lossy().into_owned();
                if !self.library_dirs.contains(&dir) {
                    self.library_dirs.push(dir);
                }
            }
            self.root.file(&guest_library, data, 0o755);
        }
        let data = fs::read(host_path).map_err(host_error("cannot read", host_path))?;
        self.root.file(guest_path, data, 0o755);
        Ok(self)
    }

    pub fn memory_mib(mut self, memory_mib: u32) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// How long the whole boot may take before QEMU is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Boots `kernel` with this guest's files, runs `script` with busybox
    /// `sh` as root (cwd `/root`, stdin empty) and powers off.
    pub fn run(&self, kernel: &Kernel, script: &str) -> Result<GuestRun, QemuError> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run_dir = cache_dir().join("runs").join(format!(
            "{}-{}-{}",
            kernel.series.name(),
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let host_error = |what: &str, path: &Path| {
            let what = format!("{what} {}", path.display());
            move |source| QemuError::Host { what, source }
        };
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir).map_err(host_error("cannot create", &run_dir))?;

        let mut root = self.root.clone();
        root.file("/init", self.init_script().into_bytes(), 0o755);
        root.file("/guest.sh", script.as_bytes().to_vec(), 0o755);
        let initramfs = run_dir.join("initramfs.cpio");
        fs::File::create(&initramfs)
            .and_then(|file| root.write(BufWriter::new(file)))
            .map_err(host_error("cannot write", &initramfs))?;

        let console = run_dir.join("console.log");
        let stdout = run_dir.join("stdout.bin");
        let status = run_dir.join("status.txt");
        let qemu_stderr = run_dir.join("qemu.stderr");
        let mut qemu = Command::new(TOOL_QEMU.program);
        qemu.args(["-accel", "tcg", "-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-no-reboot", "-display", "none", "-nodefaults"])
            .args(["-monitor", "none"])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initramfs)
            // panic=-1: a panicking guest reboots at once, and -no-reboot
            // turns that into QEMU's exit.
            .args(["-append", "console=ttyS0 panic=-1 rdinit=/init psi=1"]);
        for port in [&console, &stdout, &status] {
            qemu.arg("-serial").arg(format!("file:{}", port.display()));
        }
        let stderr_file =
            fs::File::create(&qemu_stderr).map_err(host_error("cannot create", &qemu_stderr))?;
        qemu.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // Should this process die, the kernel kills QEMU too.
        unsafe {
            qemu.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }

        let started = Instant::now();
        let mut child = qemu.spawn().map_err(|source| QemuError::Host {
            what: format!("cannot start {}", TOOL_QEMU.program),
            source,
        })?;
        let exit = loop {
            if let Some(exit) = child.try_wait().map_err(|source| QemuError::Host {
                what: "cannot wait for QEMU".into(),
                source,
            })? {
                break Some(exit);
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let elapsed = started.elapsed();
        let _ = fs::remove_file(&initramfs);

        let console =
            String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).replace('\r', "");
        let console_tail = tail(&console, 60);
        let Some(exit) = exit else {
            return Err(QemuError::Timeout {
                release: kernel.release.clone(),
                timeout: self.timeout,
                run_dir,
                console_tail,
            });
        };
        let reported = fs::read_to_string(&status).unwrap_or_default();
        let Some(script_status) = reported
            .lines()
            .find_map(|line| line.strip_prefix("exit="))
            .and_then(|code| code.trim().parse().ok())
        else {
            return Err(QemuError::NoStatus {
                release: kernel.release.clone(),
                qemu: exit,
                qemu_stderr: fs::read_to_string(&qemu_stderr).unwrap_or_default(),
                run_dir,
                console_tail,
            });
        };
        let stdout = fs::read(&stdout).map_err(host_error("cannot read", &stdout))?;
        let _ = fs::remove_dir_all(&run_dir);
        Ok(GuestRun {
            stdout,
            status: script_status,
            console,
            elapsed,
        })
    }

    fn init_script(&self) -> String {
        format!(
            r#"#!/bin/sh
# /init of the test guest: mount what every script needs, run /guest.sh with
# its stdout on ttyS1 and its stderr on the console, report its exit status
# on ttyS2, power off.
export PATH=/usr/bin:/bin
{libraries}mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Raw: no \n -> \r\n, no echo. Held open so the settings last; the last
# close (below) waits until the UART has sent everything.
exec 3<>/dev/ttyS1 4<>/dev/ttyS2
stty -F /dev/ttyS1 raw -echo -onlcr -opost
stty -F /dev/ttyS2 raw -echo -onlcr -opost
cd /root
/bin/sh /guest.sh >/dev/ttyS1 2>/dev/console </dev/null
echo "exit=$?" >/dev/ttyS2
exec 3>&- 4>&-
poweroff -f
"#,
            // ld.so finds the libraries where the host has them; this says
            // so should the guest's loader not search those directories.
            libraries = if self.library_dirs.is_empty() {
                String::new()
            } else {
                format!("export LD_LIBRARY_PATH={}\n", self.library_dirs.join(":"))
            },
        )
    }
}

/// `target/qemu`: downloads, kernels, and the logs of failed boots.
fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(tests).join("target")
        });
    target.join("qemu")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
