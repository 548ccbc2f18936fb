//! Kernel modules a guest loads before its script runs, taken from the
//! kernel's own package: where a kernel builds a driver the guest's output
//! channels need as a module (Debian's arm64 cloud kernels before trixie
//! build `virtio_pci` and `virtio_console` as modules), the initramfs gets
//! the module and the modules it depends on, and `/init` loads them in
//! order.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// `wanted` and what they depend on, from the `.ko` files under `tree`
/// (an unpacked `lib/modules/<release>`), dependencies first. A wanted
/// module with no file is built into the kernel and left out.
pub fn closure(tree: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut files = HashMap::new();
    index(tree, &mut files)?;
    let mut order = Vec::new();
    for name in wanted {
        if files.contains_key(&canonical(name)) {
            visit(&canonical(name), &files, &mut order, &mut Vec::new())?;
        }
    }
    Ok(order)
}

/// Module names treat `-` and `_` alike.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            index(&path, files)?;
        } else if let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            files.insert(canonical(name), path);
        }
    }
    Ok(())
}

fn visit(
    name: &str,
    files: &HashMap<String, PathBuf>,
    order: &mut Vec<PathBuf>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let file = files.get(name).ok_or_else(|| {
        format!(
            "module {name} (needed by {}) is not in the package, or is compressed",
            path.last().map_or("the guest", String::as_str)
        )
    })?;
    if order.contains(file) {
        return Ok(());
    }
    if path.iter().any(|p| p == name) {
        return Err(format!(
            "modules depend on each other in a circle: {path:?}"
        ));
    }
    let data = fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    path.push(name.to_owned());
    for dependency in depends(&data) {
        visit(&canonical(dependency), files, order, path)?;
    }
    path.pop();
    order.push(file.clone());
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo`: the modules it needs
/// loaded first.
fn depends(module: &[u8]) -> Vec<&str> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[at + KEY.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    std::str::from_utf8(&value[..end])
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::depends;

    #[test]
    fn depends_reads_the_modinfo_entry() {
        let module = b"\x7fELF...\0license=GPL\0depends=virtio_ring,virtio\0intree=Y\0";
        assert_eq!(depends(module), ["virtio_ring", "virtio"]);
        assert!(depends(b"\0license=GPL\0depends=\0intree=Y\0").is_empty());
        assert!(depends(b"no modinfo at all").is_empty());
    }
}
