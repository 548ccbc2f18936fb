//! The allocation-failure tables: one key per process, request kind and
//! epoch parity, counted per CPU; and beside it one key per memory cgroup,
//! which counts every failure of the cgroup's processes, so a cgroup whose
//! processes fill the per-process table cannot make another cgroup's
//! failures go uncounted.

use crate::COMM_LEN;

/// The requests whose failures are counted: three system calls, and the
/// kernel's own page allocator.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AllocSyscall {
    Mmap = 1,
    Mremap = 2,
    Brk = 3,
    /// `__alloc_pages()` returned no page (`kmem/mm_page_alloc`).
    PageAlloc = 4,
}

impl AllocSyscall {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Mmap),
            2 => Some(Self::Mremap),
            3 => Some(Self::Brk),
            4 => Some(Self::PageAlloc),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Mremap => "mremap",
            Self::Brk => "brk",
            Self::PageAlloc => "page_alloc",
        }
    }
}

/// Key of the per-CPU `ALLOC_FAILURES` table: one process, one system call,
/// one epoch parity.
///
/// Exact counts without locks: the kernel only ever adds to keys of the
/// current epoch's parity. To drain, the collector flips the epoch, waits
/// for programs that read the old one to finish (they run for
/// microseconds, without sleeping), then reads and deletes the old parity's
/// keys, which nothing writes any more.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocFailureKey {
    /// The failing process; 0 for an atomic kernel page allocation, which
    /// may have been made in interrupt context and belong to no process.
    pub tgid: u32,
    /// An [`AllocSyscall`].
    pub syscall: u8,
    /// The epoch's parity (0 or 1).
    pub epoch: u8,
    pub _pad0: u16,
}

const _: () = assert!(core::mem::size_of::<AllocFailureKey>() == 8);

/// One CPU's tally of failures for an [`AllocFailureKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFailureCounts {
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and last failure.
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// The largest request that failed (bytes); 0 if unknown.
    pub max_request_bytes: u64,
    pub cgroup_id: u64,
    pub memcg_id: u64,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<AllocFailureCounts>() == 64);

/// Key of the per-CPU `ALLOC_FAILURE_CGROUPS` table: one memory cgroup,
/// one request kind, one epoch parity (as in [`AllocFailureKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocFailureCgroupKey {
    /// The memory cgroup's id (its kernfs inode); 0 outside any, or for
    /// failures that belong to no process.
    pub memcg_id: u64,
    /// An [`AllocSyscall`].
    pub syscall: u8,
    /// The epoch's parity (0 or 1).
    pub epoch: u8,
    pub _pad0: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<AllocFailureCgroupKey>() == 16);

/// One CPU's tally of every failure in a memory cgroup, whether or not the
/// per-process table had room for its process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFailureCgroupCounts {
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the first and last failure.
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// The largest request that failed (bytes); 0 if unknown.
    pub max_request_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<AllocFailureCgroupCounts>() == 32);

/// One more failure in a per-CPU tally, of either table.
pub trait AddFailure {
    /// Counts a failure at `now_boot_ns` that asked for `request_bytes`
    /// (0 if unknown). A slot another CPU's insert created starts zeroed.
    fn add_failure(&mut self, now_boot_ns: u64, request_bytes: u64);
}

macro_rules! add_failure {
    ($($tally:ty),*) => {$(
        impl AddFailure for $tally {
            #[inline(always)]
            fn add_failure(&mut self, now_boot_ns: u64, request_bytes: u64) {
                self.count += 1;
                self.last_boot_ns = now_boot_ns;
                if self.first_boot_ns == 0 {
                    self.first_boot_ns = now_boot_ns;
                }
                if request_bytes > self.max_request_bytes {
                    self.max_request_bytes = request_bytes;
                }
            }
        }
    )*};
}

add_failure!(AllocFailureCounts, AllocFailureCgroupCounts);
