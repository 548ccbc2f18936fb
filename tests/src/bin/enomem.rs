//! Test helper: fails memory requests on purpose, a given number of times.
//!
//! `enomem mmap N` asks `mmap` for 1 GiB N times; `enomem mremap N` asks
//! `mremap` to grow a page to 1 GiB N times; `enomem brk N` asks `brk`
//! to grow the heap by 1 GiB N times. Both run under an address-space limit
//! (RLIMIT_AS) of 256 MiB set first, so every request is refused. It prints
//! how many were refused and exits non-zero if any was granted.
//!
//! `enomem mmap-then-hog N` fails N mmaps like `mmap`, then allocates and
//! touches memory 1 MiB at a time: inside a memory cgroup with a smaller
//! limit than 256 MiB, the OOM killer ends it. The story of a real leak.
//!
//! `enomem hold MIB` allocates and touches MIB MiB, says `held` on stdout,
//! and keeps them until it is killed.
//!
//! `enomem processes N EACH [mmap|brk]` forks N processes one after
//! another, each of which fails EACH mmaps (or brks) and exits: a pod whose
//! many children fail at no cost to themselves.

use std::process::ExitCode;

const REQUEST_BYTES: usize = 1 << 30;
const ADDRESS_SPACE_LIMIT: u64 = 256 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!(
            "usage: enomem mmap|mremap|brk|mmap-then-hog COUNT | enomem hold MIB \
             | enomem processes N EACH [mmap|brk]"
        );
        return ExitCode::from(2);
    };
    if mode == "hold" {
        hold(count);
    }
    let limit = libc::rlimit {
        rlim_cur: ADDRESS_SPACE_LIMIT,
        rlim_max: ADDRESS_SPACE_LIMIT,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        eprintln!("setrlimit(RLIMIT_AS): {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    if mode == "processes" {
        let each = args.get(3).and_then(|n| n.parse::<u64>().ok()).unwrap_or(1);
        let fail: fn() -> bool = match args.get(4).map(String::as_str) {
            None | Some("mmap") => try_mmap,
            Some("brk") => try_brk,
            Some(other) => {
                eprintln!("processes fail mmap or brk, not {other}");
                return ExitCode::from(2);
            }
        };
        return processes(count, each, fail);
    }
    let mut refused = 0u64;
    for _ in 0..count {
        let granted = match mode.as_str() {
            "mmap" | "mmap-then-hog" => try_mmap(),
            "brk" => try_brk(),
            "mremap" => try_mremap(),
            _ => {
                eprintln!("unknown mode {mode}");
                return ExitCode::from(2);
            }
        };
        if granted {
            eprintln!("a {mode} of {REQUEST_BYTES} bytes was granted under RLIMIT_AS");
            return ExitCode::FAILURE;
        }
        refused += 1;
    }
    println!("{refused}");
    if mode == "mmap-then-hog" {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            held.push(vec![0x5a; 1 << 20]);
            if held.len() >= 240 {
                eprintln!("240 MiB allocated without an OOM kill: is the cgroup limited?");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Forks `count` processes in turn, each failing `each` requests with
/// `fail`; prints the failures in all.
fn processes(count: u64, each: u64, fail: fn() -> bool) -> ExitCode {
    for _ in 0..count {
        // SAFETY: the child only calls mmap and _exit.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("fork: {}", std::io::Error::last_os_error());
                return ExitCode::FAILURE;
            }
            0 => {
                let granted = (0..each).any(|_| fail());
                // SAFETY: ends the child without running the parent's
                // destructors or flushing its buffers twice.
                unsafe { libc::_exit(i32::from(granted)) }
            }
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(child, &mut status, 0) };
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    eprintln!("a child's request was granted under RLIMIT_AS");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("{}", count * each);
    ExitCode::SUCCESS
}

fn hold(mib: u64) -> ! {
    use std::io::Write;
    let held: Vec<Vec<u8>> = (0..mib).map(|_| vec![0x5a; 1 << 20]).collect();
    println!("held");
    let _ = std::io::stdout().flush();
    loop {
        std::hint::black_box(&held);
        std::thread::park();
    }
}

fn try_mmap() -> bool {
    // SAFETY: an anonymous private mapping; unmapped at once if granted.
    unsafe {
        let address = libc::mmap(
            std::ptr::null_mut(),
            REQUEST_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if address == libc::MAP_FAILED {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOMEM)
            );
            return false;
        }
        libc::munmap(address, REQUEST_BYTES);
        true
    }
}

fn try_mremap() -> bool {
    const PAGE: usize = 4096;
    // SAFETY: one page mapped, asked to grow, unmapped whatever happened.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED, "a single page must map");
        let grown = libc::mremap(page, PAGE, REQUEST_BYTES, libc::MREMAP_MAYMOVE);
        if grown == libc::MAP_FAILED {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOMEM)
            );
            libc::munmap(page, PAGE);
            return false;
        }
        libc::munmap(grown, REQUEST_BYTES);
        true
    }
}

fn try_brk() -> bool {
    // SAFETY: raw brk: brk(0) reads the break; a refused growth leaves it.
    unsafe {
        let current = libc::syscall(libc::SYS_brk, 0usize) as usize;
        let wanted = current + REQUEST_BYTES;
        let now = libc::syscall(libc::SYS_brk, wanted) as usize;
        if now >= wanted {
            libc::syscall(libc::SYS_brk, current);
            return true;
        }
        false
    }
}
