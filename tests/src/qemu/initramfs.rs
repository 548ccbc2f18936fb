//! The guest's root file system: an initramfs in the kernel's `newc` cpio
//! format, written here rather than by `cpio(1)` so that owners, modes,
//! device nodes and timestamps are exactly what the guest needs (root, no
//! host uids, no staging directory to clean up) and the archive is the same
//! for the same input.
//!
//! Format: `Documentation/driver-api/early-userspace/buffer-format.rst` in
//! the kernel: per entry a 110-byte ASCII header, the NUL-terminated name
//! and the data, each padded to 4 bytes; `TRAILER!!!` ends the archive.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::{Path, PathBuf},
    process::Command,
};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// Files by their path in the guest (without the leading `/`).
#[derive(Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn dir(&mut self, path: &str) {
        let path = relative(path);
        self.parents(&path);
        self.entries.entry(path).or_insert(Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let path = relative(path);
        self.parents(&path);
        self.entries.insert(path, Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = relative(path);
        self.parents(&path);
        self.entries.insert(path, Entry::Symlink(target.to_owned()));
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        let path = relative(path);
        self.parents(&path);
        self.entries
            .insert(path, Entry::CharDevice { major, minor });
    }

    fn parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            self.entries
                .entry(path[..end].to_owned())
                .or_insert(Entry::Dir);
            end += 1;
        }
    }

    /// Writes the archive. A parent sorts before its children, so every
    /// directory exists before anything is unpacked into it.
    pub fn write(&self, mut out: impl Write) -> io::Result<()> {
        for (inode, (path, entry)) in (1..).zip(&self.entries) {
            let (mode, nlink, data, (major, minor)) = match entry {
                Entry::Dir => (S_IFDIR | 0o755, 2, &[][..], (0, 0)),
                Entry::File { data, mode } => (S_IFREG | mode, 1, &data[..], (0, 0)),
                Entry::Symlink(target) => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Entry::CharDevice { major, minor } => {
                    (S_IFCHR | 0o600, 1, &[][..], (*major, *minor))
                }
            };
            write_entry(&mut out, path, inode, mode, nlink, data, major, minor)?;
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, &[], 0, 0)?;
        out.flush()
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field the guest needs"
)]
fn write_entry(
    out: &mut impl Write,
    name: &str,
    inode: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    rdev_major: u32,
    rdev_minor: u32,
) -> io::Result<()> {
    let name_size = name.len() + 1;
    // Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
    // devminor, rdevmajor, rdevminor, namesize, check.
    let header = format!(
        "070701{inode:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{rdev_major:08x}{rdev_minor:08x}{name_size:08x}{:08x}",
        0, 0, 0, data.len(), 0, 0, 0,
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(padding(header.len() + name_size))?;
    out.write_all(data)?;
    out.write_all(padding(data.len()))
}

fn padding(len: usize) -> &'static [u8] {
    &[0; 3][..(4 - len % 4) % 4]
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

/// The shared libraries `ldd` says `program` loads, the dynamic loader
/// included; empty for a static program.
pub fn shared_libraries(program: &Path) -> io::Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(program).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(io::Error::other(format!(
            "ldd failed ({}): {}{}",
            output.status,
            text.trim(),
            stderr.trim()
        )));
    }
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the
        // loader alone: `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO
        // (`linux-vdso.so.1 (0x...)`) comes from the kernel.
        let path = match line.split_once(" => ") {
            Some((name, "not found")) => {
                return Err(io::Error::other(format!("ldd: {name} not found")))
            }
            Some((_, rest)) => rest.split(" (").next().unwrap_or(rest),
            None => line.split(" (").next().unwrap_or(line),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_newc_entries_padded_to_four_bytes() {
        let mut archive = Initramfs::default();
        archive.file("/bin/x", b"hello".to_vec(), 0o755);
        let mut bytes = Vec::new();
        archive.write(&mut bytes).expect("write to memory");
        let text = String::from_utf8(bytes).expect("ASCII");
        let entries: Vec<&str> = text.split("070701").filter(|e| !e.is_empty()).collect();
        assert_eq!(entries.len(), 3, "bin, bin/x, trailer: {text:?}");
        // bin/x: mode 0100755, size 5, name "bin/x\0" (6 bytes): 110 + 6
        // = 116, no padding; data 5 bytes + 3 padding.
        let file = entries[1];
        assert_eq!(&file[8..16], "000081ed");
        assert_eq!(&file[48..56], "00000005");
        assert_eq!(&file[104..], "bin/x\0hello\0\0\0");
        assert!(text.len().is_multiple_of(4));
        assert!(entries[2].contains("TRAILER!!!"));
    }
}
