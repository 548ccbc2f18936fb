//! Command lines: captured by the kernel at exec (`CMDLINES`), seeded from
//! `/proc` for processes older than the collector, and redacted before they
//! are written.

use std::{fs, io, path::Path};

use aya::maps::{HashMap, MapData};
use oom_common::{Cmdline, CMDLINE_ARGS_BYTES, CMDLINE_PATH_BYTES};

/// How much of a command line goes into events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CmdlineMode {
    /// Every argument as the process received it.
    Full,
    /// Secret values masked (see `--secret-words`).
    Redacted,
    /// No command line at all; it is not even captured.
    Off,
}

/// A command line as the kernel or `/proc` gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedCmdline {
    /// The executable's path, when known.
    pub executable: Option<String>,
    pub args: Vec<String>,
    /// The arguments were longer than the kernel keeps.
    pub truncated: bool,
}

impl CapturedCmdline {
    /// Decodes a `CMDLINES` entry; `None` when it holds nothing.
    pub fn from_entry(entry: &Cmdline) -> Option<Self> {
        let args_len = (entry.args_len as usize).min(CMDLINE_ARGS_BYTES);
        if args_len == 0 {
            return None;
        }
        let path_len = (entry.path_len as usize).min(CMDLINE_PATH_BYTES);
        Some(Self {
            executable: (path_len > 0)
                .then(|| String::from_utf8_lossy(&entry.path[..path_len]).into_owned()),
            args: split_args(&entry.args[..args_len]),
            truncated: entry.flags & Cmdline::TRUNCATED != 0,
        })
    }

    /// `process.command_line`: the arguments joined by spaces.
    pub fn command_line(&self) -> String {
        self.args.join(" ")
    }
}

/// Splits NUL-separated arguments (`/proc/<pid>/cmdline` format); a
/// trailing NUL ends the last argument rather than starting an empty one.
pub fn split_args(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Fills `CMDLINES` from `/proc` for processes that were running before
/// the hooks were attached; entries the hooks already made are kept, and
/// no entry is left for a process that ended meanwhile. A worker forked
/// without exec shows its parent's arguments in `/proc` too, as it does
/// through the fork hook. Returns how many were added.
pub fn seed_from_proc(
    table: &mut HashMap<MapData, u32, Cmdline>,
    proc_root: &Path,
) -> io::Result<usize> {
    let mut added = 0;
    for entry in fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(cmdline) = read_proc_cmdline(&entry.path()) else {
            continue;
        };
        // Refused when the hooks already have a newer entry for it.
        if table.insert(pid, cmdline, BPF_NOEXIST).is_err() {
            continue;
        }
        // A process that ended between the read and the insert has had its
        // exit hook already: its entry would outlive it. Its address space
        // goes before that hook runs, so an empty `cmdline` now says so.
        if fs::read(entry.path().join("cmdline")).map_or(true, |args| args.is_empty()) {
            let _ = table.remove(&pid);
            continue;
        }
        added += 1;
    }
    Ok(added)
}

/// Map update flag: only add, never replace (`include/uapi/linux/bpf.h`).
const BPF_NOEXIST: u64 = 1;

/// A `CMDLINES` entry from `/proc/<pid>`; `None` for kernel threads and
/// processes that went away.
pub fn read_proc_cmdline(dir: &Path) -> Option<Cmdline> {
    let args = fs::read(dir.join("cmdline")).ok()?;
    if args.is_empty() {
        return None;
    }
    let mut entry = Cmdline::empty();
    let len = args.len().min(CMDLINE_ARGS_BYTES);
    entry.args[..len].copy_from_slice(&args[..len]);
    entry.args_len = len as u32;
    if args.len() > CMDLINE_ARGS_BYTES {
        entry.flags |= Cmdline::TRUNCATED;
    }
    if let Ok(exe) = fs::read_link(dir.join("exe")) {
        let exe = exe.as_os_str().as_encoded_bytes();
        let len = exe.len().min(CMDLINE_PATH_BYTES);
        entry.path[..len].copy_from_slice(&exe[..len]);
        entry.path_len = len as u32;
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_proc_style_arguments() {
        assert_eq!(
            split_args(b"java\0-Xmx2g\0-jar\0app.jar\0"),
            args(&["java", "-Xmx2g", "-jar", "app.jar"])
        );
        assert_eq!(
            split_args(b"nginx: worker process"),
            args(&["nginx: worker process"])
        );
        assert_eq!(
            split_args(b"a\0\0b\0"),
            args(&["a", "", "b"]),
            "empty arguments stay"
        );
        assert!(split_args(b"").is_empty());
        assert_eq!(split_args(b"bad\xff\0"), args(&["bad\u{fffd}"]));
    }

    #[test]
    fn decodes_entries_and_marks_truncation() {
        let mut entry = Cmdline::empty();
        assert_eq!(
            CapturedCmdline::from_entry(&entry),
            None,
            "nothing captured"
        );
        let raw = b"tail\0/dev/zero\0";
        entry.args[..raw.len()].copy_from_slice(raw);
        entry.args_len = raw.len() as u32;
        entry.path[..13].copy_from_slice(b"/usr/bin/tail");
        entry.path_len = 13;
        entry.flags = Cmdline::TRUNCATED;
        let captured = CapturedCmdline::from_entry(&entry).expect("captured");
        assert_eq!(captured.executable.as_deref(), Some("/usr/bin/tail"));
        assert_eq!(captured.args, args(&["tail", "/dev/zero"]));
        assert!(captured.truncated);
        assert_eq!(captured.command_line(), "tail /dev/zero");
    }

    #[test]
    fn reads_this_process_from_proc() {
        let entry = read_proc_cmdline(Path::new("/proc/self")).expect("our own cmdline");
        let captured = CapturedCmdline::from_entry(&entry).expect("non-empty");
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(captured.executable.as_deref(), exe.to_str());
        assert_eq!(captured.args.len(), std::env::args().count());
    }
}
