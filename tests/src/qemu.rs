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
//! - arm64 ([`Series::ARM64`]): the same releases' `linux-image-cloud-arm64`
//!   on `qemu-system-aarch64 -machine virt`. Its one UART is the console;
//!   stdout and status go to two virtio consoles (`hvc0`, `hvc1`), whose
//!   drivers bullseye's and bookworm's kernels build as modules, loaded by
//!   `/init` from the kernel's own package. Programs of the guest come
//!   from bookworm's arm64 packages ([`foreign_root`]) or are cross-built.
//!
//! [`QemuError::is_unavailable`] tells a machine that cannot run guests (no
//! QEMU, no busybox, no kernel download) from a guest that failed: tests skip
//! on the first outside CI, and fail on both under `CI=true`.

mod apt;
mod initramfs;
mod modules;

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
    /// The same three releases' `linux-image-cloud-arm64`, on an emulated
    /// arm64 machine.
    Arm64Linux5_10,
    Arm64Linux6_1,
    Arm64Linux6_12,
}

/// The CPU a guest runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Debian's name for it.
    pub fn debian(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    fn qemu(self) -> Tool {
        match self {
            Self::Amd64 => TOOL_QEMU,
            Self::Arm64 => TOOL_QEMU_ARM64,
        }
    }

    /// The drivers of the guest's output channels: the virtio consoles on
    /// arm64, loaded from the kernel's package where it builds them as
    /// modules. amd64's UARTs are always built in.
    fn console_modules(self) -> &'static [&'static str] {
        match self {
            Self::Amd64 => &[],
            Self::Arm64 => &["virtio_pci", "virtio_console"],
        }
    }
}

impl Series {
    pub const ALL: [Self; 4] = [
        Self::Linux5_10,
        Self::Linux5_10Release,
        Self::Linux6_1,
        Self::Linux6_12,
    ];

    /// The arm64 series.
    pub const ARM64: [Self; 3] = [
        Self::Arm64Linux5_10,
        Self::Arm64Linux6_1,
        Self::Arm64Linux6_12,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linux5_10 => "5.10",
            Self::Linux5_10Release => "5.10-release",
            Self::Linux6_1 => "6.1",
            Self::Linux6_12 => "6.12",
            Self::Arm64Linux5_10 => "arm64-5.10",
            Self::Arm64Linux6_1 => "arm64-6.1",
            Self::Arm64Linux6_12 => "arm64-6.12",
        }
    }

    pub fn arch(self) -> Arch {
        match self {
            Self::Arm64Linux5_10 | Self::Arm64Linux6_1 | Self::Arm64Linux6_12 => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    fn packages(self) -> apt::KernelPackages {
        let suite = match self {
            Self::Linux5_10 | Self::Arm64Linux5_10 => &apt::BULLSEYE,
            Self::Linux5_10Release => &apt::BULLSEYE_RELEASE,
            Self::Linux6_1 | Self::Arm64Linux6_1 => &apt::BOOKWORM,
            Self::Linux6_12 | Self::Arm64Linux6_12 => &apt::TRIXIE,
        };
        match self.arch() {
            Arch::Amd64 => apt::KernelPackages {
                suite,
                meta: "linux-image-cloud-amd64",
                flavour: "-cloud-amd64",
                arch: "amd64",
            },
            Arch::Arm64 => apt::KernelPackages {
                suite,
                meta: "linux-image-cloud-arm64",
                flavour: "-cloud-arm64",
                arch: "arm64",
            },
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
            apt_dir(self.packages().suite, self.arch()),
            &scratch.join("deb"),
        )
        .map_err(unavailable)?;
        let root = scratch.join("root");
        let (release, vmlinuz) = apt::extract_vmlinuz(&deb, &root).map_err(unavailable)?;
        // /usr/lib/modules from trixie on.
        let tree = ["lib/modules", "usr/lib/modules"]
            .map(|dir| root.join(dir).join(&release))
            .into_iter()
            .find(|tree| tree.is_dir())
            .unwrap_or_else(|| root.join("lib/modules").join(&release));
        let modules =
            modules::closure(&tree, self.arch().console_modules()).map_err(unavailable)?;
        // Assemble the cache entry aside and move it in whole, so an
        // interrupted download never looks cached.
        let staged = scratch.join("kernel");
        let package = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut order = String::new();
        fs::create_dir_all(staged.join("modules"))
            .and_then(|()| {
                for module in &modules {
                    let name = module.file_name().unwrap_or_default();
                    fs::rename(module, staged.join("modules").join(name))?;
                    order.push_str(&format!("{}\n", name.to_string_lossy()));
                }
                fs::write(staged.join("modules/order"), &order)
            })
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
        let modules = fs::read_to_string(dir.join("modules/order")).ok()?;
        vmlinuz.is_file().then(|| Kernel {
            series: self,
            release: release.trim().to_owned(),
            package: fs::read_to_string(dir.join("package")).unwrap_or_default(),
            vmlinuz,
            modules: modules
                .lines()
                .map(|name| dir.join("modules").join(name))
                .collect(),
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
    /// Modules `/init` loads, in order, before the script runs.
    pub modules: Vec<PathBuf>,
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
const TOOL_QEMU_ARM64: Tool = Tool {
    program: "qemu-system-aarch64",
    package: "qemu-system-arm",
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
    arch: Arch,
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
        Self::of(Arch::Amd64)
    }

    /// The same on `arch`: an arm64 guest gets Debian's arm64
    /// busybox-static, which makes its applets itself at boot.
    pub fn of(arch: Arch) -> Result<Self, QemuError> {
        arch.qemu().require()?;
        if arch != Arch::Amd64 {
            let busybox = foreign_busybox(arch)?;
            let mut guest = Self::bare(arch);
            guest = guest.program("/bin/busybox", &busybox)?;
            guest.root.symlink("/bin/sh", "busybox");
            return Ok(guest);
        }
        let busybox = TOOL_BUSYBOX.require()?;
        let mut guest = Self::bare(arch);
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
        Ok(guest)
    }

    /// The directories and console every guest has.
    fn bare(arch: Arch) -> Self {
        let mut guest = Self {
            arch,
            root: Initramfs::default(),
            library_dirs: Vec::new(),
            memory_mib: 512,
            cpus: 2,
            timeout: Duration::from_secs(300),
        };
        for dir in ["/dev", "/proc", "/sys", "/tmp", "/root", "/usr/bin"] {
            guest.root.dir(dir);
        }
        // The kernel opens it for /init's stdin, stdout and stderr before
        // anything is mounted.
        guest.root.char_device("/dev/console", 5, 1);
        guest
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
            self.library(&library.to_string_lossy(), data);
        }
        let data = fs::read(host_path).map_err(host_error("cannot read", host_path))?;
        self.root.file(guest_path, data, 0o755);
        Ok(self)
    }

    /// Adds the program at `path` in `root` (see [`foreign_root`]) at
    /// `guest_path`, with its interpreter and the libraries it loads, found
    /// in `root`'s library directories and placed at the same paths in the
    /// guest.
    pub fn foreign_program(
        mut self,
        guest_path: &str,
        root: &Path,
        path: &str,
    ) -> Result<Self, QemuError> {
        let missing = |what: String| QemuError::Host {
            what,
            source: io::ErrorKind::NotFound.into(),
        };
        let read = |path: &str| {
            let host = inside(root, path);
            fs::read(&host).map_err(|source| QemuError::Host {
                what: format!("cannot read {}", host.display()),
                source,
            })
        };
        let data = read(path)?;
        let mut pending = vec![(path.to_owned(), data.clone())];
        let mut added = Vec::new();
        while let Some((needed_by, data)) = pending.pop() {
            let (interpreter, libraries) = elf_needs(&data)
                .map_err(|e| missing(format!("{needed_by} is not an ELF program: {e}")))?;
            let mut paths: Vec<String> = interpreter.into_iter().collect();
            for library in libraries {
                let found = ["lib", "usr/lib"]
                    .iter()
                    .flat_map(|dir| {
                        let mut dirs = vec![format!("/{dir}")];
                        if let Ok(entries) = fs::read_dir(root.join(dir)) {
                            dirs.extend(entries.filter_map(Result::ok).filter_map(|e| {
                                let name = e.file_name().into_string().ok()?;
                                name.ends_with("-linux-gnu")
                                    .then(|| format!("/{dir}/{name}"))
                            }));
                        }
                        dirs
                    })
                    .map(|dir| format!("{dir}/{library}"))
                    .find(|candidate| inside(root, candidate).is_file())
                    .ok_or_else(|| {
                        missing(format!(
                            "{library}, needed by {needed_by}, in {}",
                            root.display()
                        ))
                    })?;
                paths.push(found);
            }
            for library in paths {
                if added.contains(&library) {
                    continue;
                }
                let data = read(&library)?;
                self.library(&library, data.clone());
                added.push(library.clone());
                pending.push((library, data));
            }
        }
        self.root.file(guest_path, data, 0o755);
        Ok(self)
    }

    /// A shared library at `guest_path`, its directory on the guest's
    /// library path.
    fn library(&mut self, guest_path: &str, data: Vec<u8>) {
        if let Some(dir) = Path::new(guest_path).parent() {
            let dir = dir.to_string_lossy().into_owned();
            if !self.library_dirs.contains(&dir) {
                self.library_dirs.push(dir);
            }
        }
        self.root.file(guest_path, data, 0o755);
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
        let mut modules = Vec::new();
        for module in &kernel.modules {
            let name = module.file_name().unwrap_or_default().to_string_lossy();
            let guest_path = format!("/lib/modules/{name}");
            let data = fs::read(module).map_err(host_error("cannot read", module))?;
            root.file(&guest_path, data, 0o644);
            modules.push(guest_path);
        }
        root.file("/init", self.init_script(&modules).into_bytes(), 0o755);
        root.file("/guest.sh", script.as_bytes().to_vec(), 0o755);
        let initramfs = run_dir.join("initramfs.cpio");
        fs::File::create(&initramfs)
            .and_then(|file| root.write(BufWriter::new(file)))
            .map_err(host_error("cannot write", &initramfs))?;

        let console = run_dir.join("console.log");
        let stdout = run_dir.join("stdout.bin");
        let status = run_dir.join("status.txt");
        let qemu_stderr = run_dir.join("qemu.stderr");
        let mut qemu = Command::new(self.arch.qemu().program);
        if self.arch == Arch::Arm64 {
            qemu.args(["-machine", "virt"]);
        }
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
            .arg("-append")
            .arg(format!(
                "console={} panic=-1 rdinit=/init psi=1",
                self.consoles()[0]
            ));
        match self.arch {
            Arch::Amd64 => {
                for port in [&console, &stdout, &status] {
                    qemu.arg("-serial").arg(format!("file:{}", port.display()));
                }
            }
            // One UART (the console); the script's stdout and status on
            // two virtio consoles.
            Arch::Arm64 => {
                qemu.arg("-serial")
                    .arg(format!("file:{}", console.display()))
                    .args(["-device", "virtio-serial-pci"]);
                for (id, port) in [("stdout", &stdout), ("status", &status)] {
                    qemu.arg("-chardev")
                        .arg(format!("file,id={id},path={}", port.display()))
                        .arg("-device")
                        .arg(format!("virtconsole,chardev={id}"));
                }
            }
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

    /// The guest's console, the script's stdout and its status: three
    /// UARTs on amd64, one and two virtio consoles on arm64.
    fn consoles(&self) -> [&'static str; 3] {
        match self.arch {
            Arch::Amd64 => ["ttyS0", "ttyS1", "ttyS2"],
            Arch::Arm64 => ["ttyAMA0", "hvc0", "hvc1"],
        }
    }

    fn init_script(&self, modules: &[String]) -> String {
        let [_, out, status] = self.consoles();
        format!(
            r#"#!/bin/sh
# /init of the test guest: mount what every script needs, run /guest.sh with
# its stdout on {out} and its stderr on the console, report its exit status
# on {status}, power off.
export PATH=/usr/bin:/bin
{applets}{libraries}mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
{modules}# Raw: no \n -> \r\n, no echo. Held open so the settings last; the last
# close (below) waits until the UART has sent everything.
exec 3<>/dev/{out} 4<>/dev/{status}
stty -F /dev/{out} raw -echo -onlcr -opost
stty -F /dev/{status} raw -echo -onlcr -opost
cd /root
/bin/sh /guest.sh >/dev/{out} 2>/dev/console </dev/null
echo "exit=$?" >/dev/{status}
exec 3>&- 4>&-
poweroff -f
"#,
            applets = if self.arch == Arch::Amd64 {
                ""
            } else {
                "/bin/busybox --install -s /bin\n"
            },
            // The consoles' drivers, where modules: the devices appear once
            // they are loaded.
            modules = if modules.is_empty() {
                String::new()
            } else {
                let wait = format!(
                    "for i in $(seq 100); do [ -e /dev/{out} ] && [ -e /dev/{status} ] && break; \
                     sleep 0.1; done\n"
                );
                modules
                    .iter()
                    .map(|module| format!("insmod {module}\n"))
                    .collect::<String>()
                    + &wait
            },
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

/// apt's state for `suite`'s packages of `arch`: amd64's where it always
/// was, the others' beside it.
fn apt_dir(suite: &apt::Suite, arch: Arch) -> PathBuf {
    let name = match arch {
        Arch::Amd64 => suite.name.to_owned(),
        other => format!("{}-{}", suite.name, other.debian()),
    };
    cache_dir().join("apt").join(name)
}

/// busybox-static for `arch` from bookworm: the guest's shell and tools
/// where the host's busybox is of another architecture.
pub fn foreign_busybox(arch: Arch) -> Result<PathBuf, QemuError> {
    let root = foreign_root(arch, &["busybox-static"])?;
    // /bin in bookworm's package, /usr/bin in later ones.
    ["bin/busybox", "usr/bin/busybox"]
        .map(|path| root.join(path))
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| QemuError::KernelUnavailable {
            series: "busybox-static",
            detail: format!("no busybox in {}", root.display()),
        })
}

/// Debian bookworm's `packages` for `arch`, downloaded once and unpacked
/// into `target/qemu/sysroot/<arch>/`: the programs, and the libraries they
/// load, of guests whose architecture is not the host's.
pub fn foreign_root(arch: Arch, packages: &[&str]) -> Result<PathBuf, QemuError> {
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = UNPACKING.lock().unwrap_or_else(|e| e.into_inner());
    let root = cache_dir().join("sysroot").join(arch.debian());
    let list = root.join(".packages");
    let have = fs::read_to_string(&list).unwrap_or_default();
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !have.lines().any(|line| line == *package))
        .collect();
    if missing.is_empty() {
        return Ok(root);
    }
    let unavailable = |detail: String| QemuError::KernelUnavailable {
        series: "bookworm",
        detail: format!("{} for {}: {detail}", missing.join(" "), arch.debian()),
    };
    for tool in [TOOL_APT_GET, TOOL_DPKG_DEB] {
        tool.require()?;
    }
    let scratch = cache_dir().join(format!("download-sysroot-{}", arch.debian()));
    let debs = apt::download(
        &apt::BOOKWORM,
        arch.debian(),
        &missing,
        apt_dir(&apt::BOOKWORM, arch),
        &scratch,
    )
    .map_err(unavailable)?;
    for deb in &debs {
        apt::unpack(deb, &root).map_err(unavailable)?;
    }
    // Listed only once unpacked: an interrupted run unpacks them again.
    let listed = have + &missing.iter().map(|p| format!("{p}\n")).collect::<String>();
    fs::write(&list, listed)
        .map_err(|e| unavailable(format!("cannot write {}: {e}", list.display())))?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(root)
}

/// `path` inside `root`, its symbolic links followed inside `root` too.
fn inside(root: &Path, path: &str) -> PathBuf {
    let mut path = PathBuf::from(path);
    for _ in 0..16 {
        let host = root.join(path.strip_prefix("/").unwrap_or(&path));
        match fs::read_link(&host) {
            Ok(target) if target.is_absolute() => path = target,
            Ok(target) => path = path.parent().unwrap_or(Path::new("/")).join(target),
            Err(_) => return host,
        }
    }
    root.join(path.strip_prefix("/").unwrap_or(&path))
}

/// What a dynamically linked ELF program needs to start: its interpreter
/// (`PT_INTERP`) and the libraries it names (`DT_NEEDED`).
fn elf_needs(data: &[u8]) -> Result<(Option<String>, Vec<String>), String> {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let file = ElfFile64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = file.endian();
    let mut interpreter = None;
    for header in file.elf_program_headers() {
        if let Some(path) = header
            .interpreter(endian, data)
            .map_err(|e| e.to_string())?
        {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let table = file.elf_dynamic_table().map_err(|e| e.to_string())?;
    let needed = table
        .iter()
        .filter(|entry| entry.tag == object::elf::DT_NEEDED)
        .map(|entry| {
            table
                .string(entry)
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok((interpreter, needed))
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
