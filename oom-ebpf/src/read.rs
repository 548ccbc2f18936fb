//! Reads of kernel memory at offsets the collector resolved.
//!
//! Rust eBPF has no CO-RE relocations, so the collector resolves each field's
//! offset from `/sys/kernel/btf/vmlinux` and passes them in [`OFFSETS`] (and
//! in each hook's own offsets global). An offset it could not resolve is
//! [`OFFSET_UNKNOWN`]. Every read goes through `bpf_probe_read_kernel`,
//! which fails cleanly on a bad pointer instead of faulting. Kernel
//! addresses are plain `u64`s: they are never dereferenced, only probe-read.
//!
//! Two ways to read, one per need:
//! - [`field`] when the program cannot go on without the value: it returns
//!   a [`ProbeResult`], so `?` ends the program's work.
//! - [`load`] and [`pointer`] for a group of reads each of which stands
//!   alone: straight-line, no branch on a read's result. A failed read
//!   leaves 0, and a read through a 0 pointer fails in turn, so a chain
//!   gives 0 (which no id is) wherever a link is missing. The 5.10 verifier
//!   walks each path through a program on its own; with a branch on each
//!   read's result, the reads of `oom_kill_process` made thousands of paths,
//!   and loading took minutes.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated},
    Global,
};
use oom_common::{KernelOffsets, OFFSET_UNKNOWN};

use crate::error::{ProbeError, ProbeResult};

#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::unknown());

/// The offsets the collector resolved for this kernel.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    OFFSETS.load()
}

/// The `T` at `base + offset`.
#[inline(always)]
pub fn field<T>(base: u64, offset: u32) -> ProbeResult<T> {
    if offset == OFFSET_UNKNOWN {
        return Err(ProbeError::OffsetUnknown);
    }
    if base == 0 {
        return Err(ProbeError::ReadFailed);
    }
    // SAFETY: a probe read of kernel memory; it returns an error rather than
    // faulting when the address is bad.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(u64::from(offset)) as *const T) }
        .map_err(|_| ProbeError::ReadFailed)
}

/// Reads the `T` at `base + offset` into `dst`, and says whether it could:
/// 1 if so, else 0 (the kernel then zeroes `dst`; an unknown offset leaves
/// it as it was).
#[inline(always)]
pub fn load<T>(dst: &mut T, base: u64, offset: u32) -> u32 {
    // The offsets are read-only globals: the verifier knows them, and
    // keeps only one side of this branch.
    if offset == OFFSET_UNKNOWN {
        return 0;
    }
    // SAFETY: a probe read; a bad address gives an error, not a fault.
    let result = unsafe {
        generated::bpf_probe_read_kernel(
            (dst as *mut T).cast::<c_void>(),
            size_of::<T>() as u32,
            base.wrapping_add(u64::from(offset)) as *const c_void,
        )
    };
    u32::from(result == 0)
}

/// The pointer at `base + offset`, 0 if it could not be read.
#[inline(always)]
pub fn pointer(base: u64, offset: u32) -> u64 {
    let mut value = 0u64;
    load(&mut value, base, offset);
    value
}
