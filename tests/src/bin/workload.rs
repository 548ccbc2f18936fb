//! Benchmark workloads for `cargo xtask bench`: each runs a loop that
//! exercises one kind of kernel path and prints nanoseconds per operation.
//!
//! - `getppid N`: a cheap system call (every syscall hook slows them all);
//! - `mmap N`: map and unmap 64 KiB (the mmap exit hook);
//! - `fork-exec N`: fork and exec `/bin/true` (the exec hook);
//! - `page-faults MIB`: touch every page of a fresh mapping (the page
//!   allocator hook).

use std::{process::ExitCode, time::Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(workload), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: workload getppid|mmap|fork-exec|page-faults N");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let operations = match workload.as_str() {
        "getppid" => getppid(n),
        "mmap" => mmap(n),
        "fork-exec" => fork_exec(n),
        "page-faults" => page_faults(n),
        other => {
            eprintln!("unknown workload {other}");
            return ExitCode::from(2);
        }
    };
    let nanos = started.elapsed().as_nanos() as f64 / operations as f64;
    println!("{nanos:.1}");
    ExitCode::SUCCESS
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
