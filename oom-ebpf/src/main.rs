//! Kernel side of oom-collector: programs on the kernel's OOM path that turn
//! each kill into one record on the `EVENTS` ring buffer.
//!
//! One file per hook under `programs/`; maps in `maps.rs`; the programs'
//! one error type in `error.rs`. Kernel structs are read at offsets the
//! collector resolved from BTF (`read.rs`), one file per struct family:
//! `task.rs` for `task_struct`, `cgroup.rs` for the cgroups behind it.
#![no_std]
#![no_main]

mod cgroup;
mod error;
mod maps;
mod programs;
mod read;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
