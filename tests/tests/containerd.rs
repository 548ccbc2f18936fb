//! A real container runtime: our own containerd (private root, state and
//! socket) runs a container the way the kubelet's CRI plugin does — the
//! `io.kubernetes.cri.*` annotations, a memory limit, a kubelet-style
//! cgroup path — from an image this test builds itself (busybox-static, no
//! registry). The container is OOM-killed; its line must name the
//! namespace, pod, container, image and container id, read from
//! containerd's own bundle without any API, and the kill counter of
//! `--metrics-addr` must carry the same namespace and pod.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use oom_e2e::{http_get, poll_until, require_program, require_root, Collector};

const POD_UID: &str = "8f14e45f-ceea-4e7a-9b2c-1d3e5f7a9b0c";
const NAMESPACE: &str = "shop";
const POD: &str = "checkout-5d8f7c6b9-k2x7p";
const CONTAINER: &str = "worker";
const IMAGE: &str = "docker.io/oom-e2e/hog:1";

/// A containerd of our own, in a scratch directory; stopped and removed
/// on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    fn start() -> Self {
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

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `ctr` against this containerd, in the kubelet's namespace.
    fn ctr(&self, args: &[&str]) -> Command {
        let mut ctr = Command::new("ctr");
        ctr.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ctr
    }

    fn run(&self, args: &[&str]) {
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

/// An OCI image archive of busybox-static, named [`IMAGE`].
fn build_image(dir: &Path) -> PathBuf {
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
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
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
struct CgroupTree {
    top: String,
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

/// A pod's container OOM-killed under a collector of its own: what the
/// tests below look at, still running until dropped.
struct PodKill {
    containerd: Containerd,
    _tree: CgroupTree,
    collector: Collector,
    /// The container's id, also its cgroup's last part.
    id: String,
    cgroup: String,
    /// The collector's kill line.
    event: serde_json::Value,
}

impl PodKill {
    /// Runs the container as the kubelet would, with the collector
    /// started with `collector_args` besides the containerd state; `None`
    /// when the test skips (see [`require_program!`]).
    fn cause(collector_args: &[&str]) -> Option<Self> {
        // containerd's `ctr` runs the container with runc; the image is busybox.
        for program in ["containerd", "ctr", "runc", "busybox"] {
            require_program!(program)?;
        }
        let containerd = Containerd::start();
        let archive = build_image(&containerd.dir);
        containerd.run(&["images", "import", archive.to_str().expect("utf-8")]);

        let id = format!(
            "{:064x}",
            std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15
        );
        let top = format!("oom-e2e-kubepods-{}", std::process::id());
        let tree = CgroupTree { top: top.clone() };
        let cgroup = format!("/{top}/kubepods/burstable/pod{POD_UID}/{id}");

        let state = containerd.state();
        let mut args = vec![
            "--containerd-state",
            state.to_str().expect("utf-8"),
            "--log-level",
            "info,oom_collector::enrich::runtime=debug",
        ];
        args.extend(collector_args);
        let collector = Collector::start(&args);
        let annotations = [
            "io.kubernetes.cri.container-type=container".to_owned(),
            format!("io.kubernetes.cri.sandbox-name={POD}"),
            format!("io.kubernetes.cri.sandbox-namespace={NAMESPACE}"),
            format!("io.kubernetes.cri.sandbox-uid={POD_UID}"),
            format!("io.kubernetes.cri.container-name={CONTAINER}"),
            format!("io.kubernetes.cri.image-name={IMAGE}"),
        ];
        let mut args = vec![
            "run",
            "-d",
            "--memory-limit",
            "33554432",
            "--cgroup",
            &cgroup,
        ];
        for annotation in &annotations {
            args.extend(["--annotation", annotation.as_str()]);
        }
        args.extend([IMAGE, &id, "/bin/busybox", "tail", "/dev/zero"]);
        containerd.run(&args);

        let line = collector.next_line(Duration::from_secs(30), |json| {
            json["event"]["action"] == "oom_kill" && json["container"]["id"] == id.as_str()
        });
        Some(Self {
            containerd,
            _tree: tree,
            collector,
            id,
            cgroup,
            event: line.json,
        })
    }

    /// Stops the collector, which must exit cleanly, and removes the
    /// container.
    fn finish(self) {
        let (status, _) = self.collector.stop();
        assert!(status.success(), "the collector exits cleanly: {status}");
        let id = &self.id;
        let _ = self.containerd.ctr(&["task", "delete", "-f", id]).status();
        let _ = self.containerd.ctr(&["containers", "delete", id]).status();
    }
}

#[test]
fn a_kubernetes_container_is_named_from_containerds_own_metadata() {
    if !require_root!() {
        return;
    }
    let Some(kill) = PodKill::cause(&[]) else {
        return;
    };
    let event = &kill.event;
    assert_eq!(event["kubernetes"]["namespace"], NAMESPACE, "{event}");
    assert_eq!(event["kubernetes"]["pod"]["name"], POD);
    assert_eq!(event["kubernetes"]["pod"]["uid"], POD_UID);
    assert_eq!(event["kubernetes"]["container"]["name"], CONTAINER);
    assert_eq!(event["container"]["name"], CONTAINER);
    assert_eq!(event["container"]["image"]["name"], IMAGE);
    assert_eq!(event["container"]["runtime"], "containerd");
    assert!(event["kubernetes"]["node"]["name"].is_string());
    assert_eq!(
        event["oom"]["victim"]["memcg"]["path"],
        kill.cgroup.as_str()
    );
    assert_eq!(event["oom"]["victim"]["memcg"]["limit_bytes"], 33_554_432);

    // The figure the README quotes: what the lookup adds to a kill.
    for line in kill
        .collector
        .stderr()
        .lines()
        .filter(|l| l.contains("metadata read"))
    {
        eprintln!("figures: {line}");
    }
    kill.finish();
}

#[test]
fn the_kill_counter_carries_the_victims_namespace_pod_and_container() {
    if !require_root!() {
        return;
    }
    let addr = format!("127.0.0.1:{}", 30_000 + std::process::id() % 10_000);
    let Some(kill) = PodKill::cause(&["--metrics-addr", &addr]) else {
        return;
    };
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    let labels = [
        format!("namespace=\"{NAMESPACE}\""),
        format!("pod=\"{POD}\""),
        format!("container=\"{CONTAINER}\""),
    ];
    let counter = body
        .lines()
        .filter(|line| line.starts_with("oom_kills_total{"))
        .find(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .unwrap_or_else(|| panic!("no oom_kills_total with {labels:?}:\n{body}"));
    assert_eq!(
        counter.split_whitespace().last(),
        Some("1"),
        "the pod's one kill: {counter}"
    );
    kill.finish();
}
