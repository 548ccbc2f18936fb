//! Workloads for `cargo xtask bench`.
//!
//! Timed loops, each exercising one kind of kernel path and printing
//! nanoseconds per operation:
//!
//! - `getppid N`: a cheap system call (every syscall hook slows them all);
//! - `mmap N`: map and unmap 64 KiB (the mmap exit hook);
//! - `fork-exec N`: fork and exec `/bin/true` (the exec hook);
//! - `page-faults MIB`: touch every page of a fresh mapping (the page
//!   allocator hook).
//!
//! Event generators, printing what they caused so that the bench can hold
//! the collector's lines against it:
//!
//! - `oom-kills CGROUP_DIR COUNT CONCURRENT GAP_MS`: COUNT OOM kills inside
//!   the memory cgroup at CGROUP_DIR, which the caller made and limited.
//!   Forked children join it, exec this program again as `workload hog`
//!   with a command line of a real worker's shape (so the collector's
//!   command-line capture and masking are part of what is timed), and
//!   touch memory until the OOM killer ends them, CONCURRENT alive at a
//!   time, each started GAP_MS after the last one died. Prints `victim PID`
//!   as each is killed, then `done KILLS NANOSECONDS`.
//! - `enomem PROCESSES FAILURES`: forks PROCESSES children that wait for a
//!   common start, then each asks `mmap` for 1 GiB FAILURES times under a
//!   256 MiB address-space limit (RLIMIT_AS), so every request fails with
//!   ENOMEM, and exits. Prints `pid PID` per child, then
//!   `done FAILURES NANOSECONDS`, from the start to the last exit.

use std::{
    ffi::{CStr, CString},
    io::Write,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

const USAGE: &str = "usage: workload getppid|mmap|fork-exec|page-faults N\n       \
                     workload oom-kills CGROUP_DIR COUNT CONCURRENT GAP_MS\n       \
                     workload enomem PROCESSES FAILURES";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((mode, rest)) => match (mode.as_str(), rest) {
            ("oom-kills", [cgroup, numbers @ ..]) => match numbers_in(numbers).as_deref() {
                Some(&[count, concurrent, gap_ms]) => oom_kills(
                    Path::new(cgroup),
                    count,
                    concurrent.max(1),
                    Duration::from_millis(gap_ms),
                ),
                _ => Err(USAGE.to_owned()),
            },
            ("hog", _) => hog(),
            ("enomem", numbers) => match numbers_in(numbers).as_deref() {
                Some(&[processes, failures]) => enomem(processes, failures),
                _ => Err(USAGE.to_owned()),
            },
            (name, numbers) => match numbers_in(numbers).as_deref() {
                Some(&[n]) => timed(name, n),
                _ => Err(USAGE.to_owned()),
            },
        },
        None => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn numbers_in(args: &[String]) -> Option<Vec<u64>> {
    args.iter().map(|arg| arg.parse().ok()).collect()
}

fn timed(workload: &str, n: u64) -> Result<(), String> {
    let started = Instant::now();
    let operations = match workload {
        "getppid" => getppid(n),
        "mmap" => mmap(n),
        "fork-exec" => fork_exec(n),
        "page-faults" => page_faults(n),
        other => return Err(format!("unknown workload {other}\n{USAGE}")),
    };
    let nanos = started.elapsed().as_nanos() as f64 / operations as f64;
    println!("{nanos:.1}");
    Ok(())
}

fn getppid(n: u64) -> u64 {
    for _ in 0..n {
        // SAFETY: no arguments, no side effects.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    n
}

fn mmap(n: u64) -> u64 {
    const LEN: usize = 64 << 10;
    for _ in 0..n {
        // SAFETY: an anonymous mapping, unmapped at once.
        unsafe {
            let address = libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(address, libc::MAP_FAILED, "mmap failed");
            libc::munmap(address, LEN);
        }
    }
    n
}

fn fork_exec(n: u64) -> u64 {
    for _ in 0..n {
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("run /bin/true");
        assert!(status.success());
    }
    n
}

fn page_faults(mib: u64) -> u64 {
    let len = (mib as usize) << 20;
    let page = 4096;
    // SAFETY: an anonymous mapping touched page by page, then unmapped.
    unsafe {
        let address = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(address, libc::MAP_FAILED, "mmap failed");
        let bytes = address.cast::<u8>();
        for offset in (0..len).step_by(page) {
            bytes.add(offset).write_volatile(1);
        }
        libc::munmap(address, len);
    }
    (len / page) as u64
}

/// Exit statuses of a hog that was not OOM-killed, and what they mean.
const HOG_CANNOT_JOIN: i32 = 3;
const HOG_CANNOT_MAP: i32 = 4;
const HOG_NOT_KILLED: i32 = 5;

fn oom_kills(cgroup: &Path, count: u64, concurrent: u64, gap: Duration) -> Result<(), String> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| format!("{} has a NUL byte", cgroup.display()))?;
    let exe = CString::new(
        std::fs::read_link("/proc/self/exe")
            .map_err(|e| format!("/proc/self/exe: {e}"))?
            .as_os_str()
            .as_bytes(),
    )
    .map_err(|_| "this program's path has a NUL byte".to_owned())?;
    let args: Vec<CString> = HOG_ARGS
        .iter()
        .map(|arg| CString::new(*arg).expect("no NUL"))
        .collect();
    let started = Instant::now();
    let (mut alive, mut spawned, mut killed) = (0, 0, 0);
    while killed < count {
        while alive < concurrent && spawned < count {
            spawn(|| exec_hog(&procs, &exe, &args))?;
            spawned += 1;
            alive += 1;
        }
        let (pid, status) = wait_any()?;
        alive -= 1;
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            println!("victim {pid}");
            killed += 1;
        } else {
            let why = match libc::WEXITSTATUS(status) {
                HOG_CANNOT_JOIN => "could not join the cgroup or exec itself",
                HOG_CANNOT_MAP => "could not map memory",
                HOG_NOT_KILLED => "held 1 GiB without an OOM kill: is the cgroup limited?",
                _ => "ended otherwise",
            };
            return Err(format!("hog {pid} {why} (wait status {status:#x})"));
        }
        std::thread::sleep(gap);
    }
    println!("done {killed} {}", started.elapsed().as_nanos());
    Ok(())
}

/// The command line each victim runs with: a worker's, with an option the
/// collector masks.
const HOG_ARGS: [&str; 6] = [
    "workload",
    "hog",
    "--queue=bench-oom",
    "--concurrency",
    "4",
    "--api-token=not-a-real-secret",
];

/// A forked child: joins the cgroup, then runs `workload hog`. Only system
/// calls after the fork.
fn exec_hog(cgroup_procs: &CStr, exe: &CStr, args: &[CString]) -> ! {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: raw system calls on a file we name and NUL-terminated
    // strings we own; the child execs or exits, never returning into the
    // parent's code.
    unsafe {
        let fd = libc::open(cgroup_procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(HOG_CANNOT_JOIN);
        }
        libc::close(fd);
        libc::execv(exe.as_ptr(), argv.as_ptr());
        libc::_exit(HOG_CANNOT_JOIN)
    }
}

/// `workload hog`: touches memory 1 MiB at a time until the OOM killer
/// ends it.
fn hog() -> Result<(), String> {
    const CHUNK: usize = 1 << 20;
    const GIVE_UP_BYTES: usize = 1 << 30;
    // SAFETY: raw system calls on our own memory; exits, never returns.
    unsafe {
        let mut held = 0;
        while held < GIVE_UP_BYTES {
            let chunk = libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if chunk == libc::MAP_FAILED {
                libc::_exit(HOG_CANNOT_MAP);
            }
            for offset in (0..CHUNK).step_by(4096) {
                chunk.cast::<u8>().add(offset).write_volatile(1);
            }
            held += CHUNK;
        }
        libc::_exit(HOG_NOT_KILLED)
    }
}

fn enomem(processes: u64, failures: u64) -> Result<(), String> {
    let mut ends = [0; 2];
    // SAFETY: pipe() fills the two descriptors.
    if unsafe { libc::pipe(ends.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let [start_read, start_write] = ends;
    let mut children = Vec::new();
    for _ in 0..processes {
        let pid = spawn(|| fail_after_start(start_read, start_write, failures))?;
        children.push(pid);
    }
    let mut stdout = std::io::stdout().lock();
    for pid in &children {
        writeln!(stdout, "pid {pid}").map_err(|e| e.to_string())?;
    }
    stdout.flush().map_err(|e| e.to_string())?;
    // Closing the last write end is the start: every child's read returns.
    let started = Instant::now();
    // SAFETY: our own descriptors.
    unsafe {
        libc::close(start_write);
        libc::close(start_read);
    }
    for _ in &children {
        let (pid, status) = wait_any()?;
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!(
                "child {pid} did not fail every mmap (wait status {status:#x})"
            ));
        }
    }
    let nanos = started.elapsed().as_nanos();
    writeln!(stdout, "done {} {nanos}", processes * failures).map_err(|e| e.to_string())
}

/// A forked child: waits for the start, then fails `failures` mmaps.
fn fail_after_start(start_read: i32, start_write: i32, failures: u64) -> ! {
    const REQUEST_BYTES: usize = 1 << 30;
    const ADDRESS_SPACE_LIMIT: u64 = 256 << 20;
    // SAFETY: raw system calls; a granted mapping is unmapped and reported
    // by the exit status.
    unsafe {
        libc::close(start_write);
        let limit = libc::rlimit {
            rlim_cur: ADDRESS_SPACE_LIMIT,
            rlim_max: ADDRESS_SPACE_LIMIT,
        };
        if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
            libc::_exit(2);
        }
        let mut byte = 0u8;
        libc::read(start_read, (&raw mut byte).cast(), 1);
        for _ in 0..failures {
            let address = libc::mmap(
                std::ptr::null_mut(),
                REQUEST_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if address != libc::MAP_FAILED {
                libc::munmap(address, REQUEST_BYTES);
                libc::_exit(1);
            }
        }
        libc::_exit(0)
    }
}

/// Forks; the child runs `child` and exits, never returning here.
fn spawn(child: impl FnOnce()) -> Result<i32, String> {
    // SAFETY: this program is single-threaded, so the child may run any
    // code; it ends in `_exit`, so it never runs the parent's code after.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            child();
            unsafe { libc::_exit(127) }
        }
        pid => Ok(pid),
    }
}

/// Waits for any child; its pid and wait status.
fn wait_any() -> Result<(i32, i32), String> {
    let mut status = 0;
    // SAFETY: waitpid with a pointer to our own status.
    match unsafe { libc::waitpid(-1, &mut status, 0) } {
        -1 => Err(format!("waitpid: {}", std::io::Error::last_os_error())),
        pid => Ok((pid, status)),
    }
}
