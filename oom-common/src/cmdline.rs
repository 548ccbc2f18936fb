//! A process's command line, kept per process id so a kill can name it.

/// Bytes of a command line kept per process: the arguments as the process
/// received them, NUL-separated (like `/proc/<pid>/cmdline`). Longer ones
/// are cut and flagged [`Cmdline::TRUNCATED`].
pub const CMDLINE_ARGS_BYTES: usize = 2048;
/// Bytes of the executable's path kept per process.
pub const CMDLINE_PATH_BYTES: usize = 256;

/// A process's command line, captured when it executes a program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Cmdline {
    /// Bytes of `args` in use; 0 when nothing was captured.
    pub args_len: u32,
    /// Bytes of `path` in use, without a NUL.
    pub path_len: u32,
    /// [`Cmdline::TRUNCATED`] and friends.
    pub flags: u32,
    pub _pad0: u32,
    /// The program's path as given to `execve` (from the tracepoint) or,
    /// for processes older than the collector, `/proc/<pid>/exe`.
    pub path: [u8; CMDLINE_PATH_BYTES],
    pub args: [u8; CMDLINE_ARGS_BYTES],
}

const _: () =
    assert!(core::mem::size_of::<Cmdline>() == 16 + CMDLINE_PATH_BYTES + CMDLINE_ARGS_BYTES);

impl Cmdline {
    /// The arguments did not fit in [`CMDLINE_ARGS_BYTES`].
    pub const TRUNCATED: u32 = 1 << 0;

    /// Nothing captured.
    pub const fn empty() -> Self {
        Self {
            args_len: 0,
            path_len: 0,
            flags: 0,
            _pad0: 0,
            path: [0; CMDLINE_PATH_BYTES],
            args: [0; CMDLINE_ARGS_BYTES],
        }
    }
}
