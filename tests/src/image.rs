//! The collector's image archive, as `cargo xtask image` writes it: an OCI
//! image index with one image per architecture, each a single layer that
//! holds `/oom-collector`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::ScratchDir;

/// An image archive unpacked into a scratch directory, removed on drop.
pub struct OciArchive {
    dir: ScratchDir,
}

impl OciArchive {
    /// Unpacks `archive` with `tar`.
    pub fn unpack(archive: &Path, label: &str) -> Result<Self, String> {
        let dir = ScratchDir::new(label);
        untar(archive, &dir.0)?;
        Ok(Self { dir })
    }

    /// The blob `digest` (`sha256:...`), parsed as JSON.
    pub fn json(&self, digest: &Value) -> Result<Value, String> {
        read_json(&self.blob(digest)?)
    }

    fn blob(&self, digest: &Value) -> Result<PathBuf, String> {
        let digest = digest
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or_else(|| format!("not a sha256 digest: {digest}"))?;
        Ok(self.dir.0.join("blobs/sha256").join(digest))
    }

    /// The image index: the one the archive's `index.json` names.
    pub fn index(&self) -> Result<Value, String> {
        let mut index = read_json(&self.dir.0.join("index.json"))?;
        while index["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json" {
            index = self.json(&index["manifests"][0]["digest"])?;
        }
        Ok(index)
    }

    /// The manifest of the image for `arch` (`amd64`, `arm64`).
    pub fn manifest(&self, arch: &str) -> Result<Value, String> {
        let index = self.index()?;
        let entry = index["manifests"]
            .as_array()
            .and_then(|manifests| {
                manifests
                    .iter()
                    .find(|m| m["platform"]["architecture"] == arch)
            })
            .ok_or_else(|| format!("the index has no {arch} image: {index}"))?;
        self.json(&entry["digest"])
    }

    /// Unpacks the `arch` image's single layer and returns the path of its
    /// `/oom-collector`.
    pub fn binary(&self, arch: &str) -> Result<PathBuf, String> {
        let manifest = self.manifest(arch)?;
        let layers = manifest["layers"]
            .as_array()
            .filter(|layers| layers.len() == 1)
            .ok_or_else(|| format!("the {arch} image is not one layer: {manifest}"))?;
        let root = self.dir.0.join(arch);
        untar(&self.blob(&layers[0]["digest"])?, &root)?;
        let binary = root.join("oom-collector");
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!("the {arch} image has no /oom-collector"))
        }
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn untar(archive: &Path, into: &Path) -> Result<(), String> {
    fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("tar -xf {} failed ({status})", archive.display()))
    }
}
