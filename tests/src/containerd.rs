//! A containerd of our own (private root, state and socket) for the tests
//! that run containers the way the kubelet's CRI plugin does, and the
//! busybox image they run as a memory hog.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::poll_until;

/// The hog's image, built by [`build_image`] (no registry).
pub const HOG_IMAGE: &str = "docker.io/oom-e2e/hog:1";
/// The pod [`Containerd::run_pod_hog`] runs the hog in.
pub const POD_UID: &str = "8f14e45f-ceea-4e7a-9b2c-1d3e5f7a9b0c";
pub const NAMESPACE: &str = "shop";
pub const POD: &str = "checkout-5d8f7c6b9-k2x7p";
pub const CONTAINER: &str = "worker";
/// The hog container's memory limit.
pub const HOG_LIMIT_BYTES: u64 = 32 << 20;

/// A containerd of our own, in a scratch directory; stopped and removed
/// on drop.
pub struct Containerd {
    pub dir: PathBuf,
    child: Child,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("oom-e2e-containerd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            dir.display()
        );
        fs::write(dir.join("config.toml"), config).expect("config");
        let log = fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        let containerd = Self { dir, child };
        poll_until(
            Duration::from_secs(20),
            || {
                let log = fs::read_to_string(containerd.dir.join("containerd.log"));
                format!(
                    "containerd to come up; its log:\n{}",
                    log.unwrap_or_default()
                )
            },
            || {
                let status = containerd.ctr(&["version"]).status();
                status.is_ok_and(|s| s.success()).then_some(())
            },
        );
        containerd
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `ctr` against this containerd, in the kubelet's namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut ctr = Command::new("ctr");
        ctr.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ctr
    }

    /// Runs the hog (`tail /dev/zero`, [`HOG_IMAGE`] imported first) as
    /// container `id` of pod [`POD`] the way the kubelet's CRI plugin
    /// would: its annotations, a memory limit, the cgroup `cgroup`.
    pub fn run_pod_hog(&self, id: &str, cgroup: &str) {
        let annotations = [
            "io.kubernetes.cri.container-type=container".to_owned(),
            format!("io.kubernetes.cri.sandbox-name={POD}"),
            format!("io.kubernetes.cri.sandbox-namespace={NAMESPACE}"),
            format!("io.kubernetes.cri.sandbox-uid={POD_UID}"),
            format!("io.kubernetes.cri.container-name={CONTAINER}"),
            format!("io.kubernetes.cri.image-name={HOG_IMAGE}"),
        ];
        let limit = HOG_LIMIT_BYTES.to_string();
        let mut args = vec!["run", "-d", "--memory-limit", &limit, "--cgroup", cgroup];
        for annotation in &annotations {
            args.extend(["--annotation", annotation.as_str()]);
        }
        args.extend([HOG_IMAGE, id, "/bin/busybox", "tail", "/dev/zero"]);
        self.run(&args);
    }

    /// What `ctr ARGS` prints, or why it failed.
    pub fn output(&self, args: &[&str]) -> String {
        match self
            .ctr(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
            Ok(output) => format!(
                "ctr {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("cannot run ctr: {error}"),
        }
    }

    pub fn run(&self, args: &[&str]) {
        let output = self
            .ctr(args)
            .stderr(Stdio::piped())
            .output()
            .expect("run ctr");
        assert!(
            output.status.success(),
            "ctr {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshot mounts, if a container was left behind.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("root"))
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Writes `bytes` as a blob of the OCI layout; returns (digest, size).
fn blob(layout: &Path, source: &Path) -> (String, u64) {
    let digest = sha256(source);
    let size = fs::metadata(source).expect("blob").len();
    fs::copy(source, layout.join("blobs/sha256").join(&digest)).expect("copy blob");
    (digest, size)
}

/// An OCI image archive of busybox-static, named [`HOG_IMAGE`].
pub fn build_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static at /bin/busybox");
    let layout = dir.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    let layer = dir.join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("bin")
        .status()
        .expect("tar");
    assert!(status.success());
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let config = dir.join("config.json");
    fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/busybox"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
        ),
    )
    .expect("config");
    let (config_digest, config_size) = blob(&layout, &config);
    let manifest = dir.join("manifest.json");
    fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#
        ),
    )
    .expect("manifest");
    let (manifest_digest, manifest_size) = blob(&layout, &manifest);
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"{HOG_IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
        ),
    )
    .expect("index");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    let archive = dir.join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    archive
}

/// The kubelet-style cgroup parents this test made, in every hierarchy,
/// removed deepest first.
pub struct CgroupTree {
    pub top: String,
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for hierarchy in hierarchies.filter_map(Result::ok) {
            let top = hierarchy.path().join(&self.top);
            let mut dirs: Vec<PathBuf> = walk(&top);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if dir.is_dir() {
        found.push(dir.to_owned());
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    found.extend(walk(&entry.path()));
                }
            }
        }
    }
    found
}
