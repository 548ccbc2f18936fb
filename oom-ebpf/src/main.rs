//! Kernel side of oom-collector: programs on the kernel's OOM path that turn
//! each kill into one record on the `EVENTS` ring buffer.
//!
//! One file per hook under `programs/`; maps in `maps.rs`; reads of kernel
//! structs through offsets the collector resolved from BTF in `task.rs`.
#![no_std]
#![no_main]

mod maps;
mod programs;
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
