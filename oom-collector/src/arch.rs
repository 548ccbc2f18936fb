//! What differs between the CPU architectures the collector runs on,
//! x86_64 and aarch64, in one place:
//!
//! - the kernel's names for system-call entry points, which the fexit
//!   allocation-failure hooks attach to (`__x64_sys_mmap`,
//!   `__arm64_sys_mmap`);
//! - where a task's saved user registers (`struct pt_regs`) keep the first
//!   three system-call arguments, which those hooks read.
//!
//! Struct layouts come from the running kernel's BTF, not from here; the
//! eBPF programs are built for the same architecture as the collector
//! (aya-build passes the target's `bpf_target_arch`).

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("oom-collector runs on x86_64 and aarch64 only");

/// One system-call argument's register in `struct pt_regs`: a member by
/// its BTF name, and the element within it where the member is an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgRegister {
    pub member: &'static str,
    pub index: u32,
}

/// The first three system-call arguments as the user passed them, still
/// intact when the call returns: x86_64's rdi, rsi, rdx.
#[cfg(target_arch = "x86_64")]
pub const SYSCALL_ARGS: [ArgRegister; 3] = [
    ArgRegister {
        member: "di",
        index: 0,
    },
    ArgRegister {
        member: "si",
        index: 0,
    },
    ArgRegister {
        member: "dx",
        index: 0,
    },
];

/// The same on aarch64: x0 is overwritten by the return value, and its
/// original kept in `orig_x0`; x1 and x2 stay in `regs[]`.
#[cfg(target_arch = "aarch64")]
pub const SYSCALL_ARGS: [ArgRegister; 3] = [
    ArgRegister {
        member: "orig_x0",
        index: 0,
    },
    ArgRegister {
        member: "regs",
        index: 1,
    },
    ArgRegister {
        member: "regs",
        index: 2,
    },
];

/// The architecture's name for a system call's kernel entry point.
#[cfg(target_arch = "x86_64")]
macro_rules! syscall_entry {
    ($name:literal) => {
        concat!("__x64_sys_", $name)
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! syscall_entry {
    ($name:literal) => {
        concat!("__arm64_sys_", $name)
    };
}
pub(crate) use syscall_entry;
