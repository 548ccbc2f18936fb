//! The DaemonSet, run for real: the collector's own image (`cargo xtask
//! image`) under a real containerd and runc, with its container settings
//! read from `deploy/kubernetes/oom-collector.yaml` itself, so this test
//! breaks when the manifest changes in a way that no longer works:
//! capabilities (drop ALL, add what it adds), containerd's default seccomp
//! profile where it asks for RuntimeDefault, a read-only root filesystem,
//! the host's PID namespace, its hostPath mounts (read-only where it says
//! so), its arguments, environment and limits. Beside it a container run
//! the kubelet's way is OOM-killed, and the collector container's event
//! file must have the kill with namespace, pod, container, image, memory
//! cgroup and node, once: not on its stdout too. Its probes answer from
//! inside the pod's network namespace, SIGTERM ends it with status 0, its
//! hooks stay pinned, and the unpin DaemonSet removes them. The same runs
//! again under the project's Localhost seccomp profile, and under a copy
//! of it that logs what it would refuse. Root only; see the crate's doc.
//!
//! Two things differ from a node, each for a reason: the hostPaths of the
//! container runtime's state and of the event file point at this test's
//! own containerd and a scratch directory, and a hostPath the node would
//! create empty (`DirectoryOrCreate`) that this machine lacks is an empty
//! scratch directory instead of a new directory on the machine.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use oom_e2e::{
    containerd::{
        build_image, CgroupTree, Containerd, CONTAINER, HOG_IMAGE, HOG_LIMIT_BYTES, NAMESPACE, POD,
        POD_UID,
    },
    image::OciArchive,
    manifest, poll_until, require_program, require_root, ScratchDir,
};
use serde_json::Value;

/// The Localhost seccomp profile's name, as a pod's `localhostProfile`.
const LOCALHOST_PROFILE: &str = "oom-collector.json";
/// What the downward API would give `spec.nodeName`.
const NODE: &str = "oom-e2e-node";
/// Every capability this kernel knows by name, so that "drop ALL" can be
/// said to ctr, which takes names one by one.
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit of capability `name` (`BPF`, ...) in a capability set.
fn cap_bit(name: &str) -> u64 {
    let at = CAPABILITIES
        .iter()
        .position(|known| known.strip_prefix("CAP_") == Some(name))
        .unwrap_or_else(|| panic!("capability {name}"));
    1 << at
}

/// The CPU architectures a pod spec's node affinity admits, sorted: every
/// term must require `kubernetes.io/arch` to be one of them.
fn admitted_architectures(pod: &Value) -> Vec<String> {
    let terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .as_array()
        .expect("required node affinity terms");
    let mut admitted: Vec<String> = Vec::new();
    for term in terms {
        let arch = term["matchExpressions"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["key"] == "kubernetes.io/arch"))
            .unwrap_or_else(|| panic!("a term without kubernetes.io/arch admits any CPU: {term}"));
        assert_eq!(arch["operator"], "In", "{arch}");
        admitted.extend(
            arch["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_str().expect("a name").to_owned()),
        );
    }
    admitted.sort_unstable();
    admitted.dedup();
    admitted
}

/// What a schema cannot say: the manifest runs only where the image can,
/// names an image that updates, takes a priority it is allowed outside
/// kube-system, states its Pod Security levels and lets only scrapers in.
#[test]
fn the_manifest_schedules_updates_and_admits_as_a_cluster_expects() {
    let documents = manifest::documents(manifest::COLLECTOR);
    let template = Template::read(manifest::COLLECTOR);
    assert_eq!(template.pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        admitted_architectures(&template.pod),
        ["amd64", "arm64"],
        "the nodes of the architectures the image holds, and only those"
    );
    assert_eq!(
        admitted_architectures(&Template::read(manifest::UNPIN).pod),
        ["amd64", "arm64"],
        "the unpin DaemonSet goes where the collector went"
    );

    let version = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../oom-collector/Cargo.toml"
    ))
    .expect("the collector's Cargo.toml")
    .lines()
    .find_map(|line| {
        line.strip_prefix("version = \"")?
            .strip_suffix('"')
            .map(str::to_owned)
    })
    .expect("a version");
    assert_eq!(
        template.image(),
        format!("localhost/oom-collector:{version}"),
        "the image is tagged with the crate's version, so a release pulls anew"
    );

    let probe = &template.container["livenessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/healthz", "a stuck collector is restarted");
    assert_eq!(
        template.container["readinessProbe"]["httpGet"]["path"],
        "/ready"
    );

    let priority = template.pod["priorityClassName"]
        .as_str()
        .unwrap_or_default();
    let namespace = documents
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .expect("a Namespace");
    if priority.starts_with("system-") {
        assert_eq!(namespace["metadata"]["name"], "kube-system", "{priority}");
    } else {
        assert!(
            documents
                .iter()
                .any(|d| d["kind"] == "PriorityClass" && d["metadata"]["name"] == priority),
            "the PriorityClass {priority} is shipped"
        );
    }

    let labels = &namespace["metadata"]["labels"];
    for mode in ["enforce", "warn", "audit"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        assert_eq!(labels[key.as_str()], "privileged", "{mode}");
        assert!(
            labels[format!("{key}-version").as_str()].is_string(),
            "{mode}-version"
        );
    }

    let policy = documents
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"][0], "Ingress");
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress rules");
    assert!(
        ingress
            .iter()
            .all(|rule| rule["from"].as_array().is_some_and(|from| !from.is_empty())),
        "every rule names who may connect"
    );
}

/// The DaemonSet's pod template and its one container, from the manifest.
struct Template {
    pod: Value,
    container: Value,
    /// Where a `localhostProfile` is, as the kubelet's seccomp directory.
    seccomp_dir: PathBuf,
}

impl Template {
    fn read(path: &str) -> Self {
        let (pod, container) = manifest::daemonset(path);
        let seccomp_dir = manifest::seccomp_profile("");
        Self {
            pod,
            container,
            seccomp_dir,
        }
    }

    /// The container under the project's Localhost seccomp profile, as
    /// the README says to set it, read from `dir` if given.
    fn use_localhost_profile(&mut self, dir: Option<&Path>) {
        self.container["securityContext"]["seccompProfile"] = serde_json::json!({
            "type": "Localhost",
            "localhostProfile": LOCALHOST_PROFILE,
        });
        if let Some(dir) = dir {
            self.seccomp_dir = dir.to_owned();
        }
    }

    fn image(&self) -> &str {
        self.container["image"].as_str().expect("an image")
    }

    fn strings(value: &Value) -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().expect("a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The capabilities the manifest adds that this machine can grant: a
    /// runtime cannot give a container what is outside its own bounding
    /// set (this CI machine's lacks SYS_RESOURCE, which the manifest adds
    /// for kernels before 5.11; the QEMU guests prove that one).
    fn grantable(&self) -> Vec<String> {
        let status = fs::read_to_string("/proc/self/status").expect("our status");
        let bounding = status
            .lines()
            .find_map(|line| line.strip_prefix("CapBnd:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .expect("CapBnd");
        Self::strings(&self.container["securityContext"]["capabilities"]["add"])
            .into_iter()
            .filter(|cap| {
                let grantable = bounding & cap_bit(cap) != 0;
                if !grantable {
                    eprintln!("this machine cannot grant CAP_{cap} (not in its bounding set)");
                }
                grantable
            })
            .collect()
    }

    /// `ctr run` options for the container's security context, host PID
    /// namespace, environment and limits.
    fn ctr_options(&self) -> Vec<String> {
        let mut options = Vec::new();
        let security = &self.container["securityContext"];
        assert_ne!(
            security["privileged"], true,
            "the collector is not privileged"
        );
        let add: Vec<String> = self
            .grantable()
            .into_iter()
            .map(|cap| format!("CAP_{cap}"))
            .collect();
        let drop = Self::strings(&security["capabilities"]["drop"]);
        let dropped: Vec<&str> = if drop.iter().any(|cap| cap == "ALL") {
            CAPABILITIES.to_vec()
        } else {
            panic!("the manifest drops {drop:?}; this test knows only ALL")
        };
        // ctr adds before it drops: drop every capability not added.
        for cap in dropped
            .into_iter()
            .filter(|cap| !add.iter().any(|a| a == cap))
        {
            options.extend(["--cap-drop".to_owned(), cap.to_owned()]);
        }
        for cap in &add {
            options.extend(["--cap-add".to_owned(), cap.clone()]);
        }
        match security["seccompProfile"]["type"].as_str() {
            Some("RuntimeDefault") => options.push("--seccomp".into()),
            Some("Localhost") => {
                let name = security["seccompProfile"]["localhostProfile"]
                    .as_str()
                    .expect("a localhostProfile");
                let profile = self.seccomp_dir.join(name);
                assert!(profile.is_file(), "{}: no such profile", profile.display());
                options.extend([
                    "--seccomp".into(),
                    "--seccomp-profile".into(),
                    profile.display().to_string(),
                ]);
            }
            Some("Unconfined") | None => {}
            Some(other) => panic!("seccompProfile {other}: this test knows no such type"),
        }
        if security["readOnlyRootFilesystem"] == true {
            options.push("--read-only".into());
        }
        if self.pod["hostPID"] == true {
            // The runtime's own PID namespace, the host's (pid 1's may be
            // unreadable, as on this machine).
            options.extend(["--with-ns".into(), "pid:/proc/self/ns/pid".into()]);
        }
        for env in self.container["env"].as_array().into_iter().flatten() {
            let name = env["name"].as_str().expect("a name");
            let value = match (&env["value"], &env["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(value), _) => value.clone(),
                (_, Value::String(path)) if path == "spec.nodeName" => NODE.to_owned(),
                other => panic!("env {name}: {other:?}"),
            };
            options.extend(["--env".into(), format!("{name}={value}")]);
        }
        let limits = &self.container["resources"]["limits"];
        if let Some(memory) = limits["memory"].as_str() {
            options.extend(["--memory-limit".into(), bytes(memory).to_string()]);
        }
        if let Some(cpu) = limits["cpu"].as_str() {
            options.extend(["--cpus".into(), cpus(cpu)]);
        }
        options
    }

    /// `--mount` options for its volume mounts; `host(path)` says where a
    /// hostPath is on this machine. No hostPath may hand the pod a
    /// runtime's socket: read-only does not stop connecting to one.
    fn mounts(&self, host: &impl Fn(&str) -> PathBuf) -> Vec<String> {
        let volumes = self.pod["volumes"].as_array().expect("volumes");
        for volume in volumes {
            let Some(path) = volume["hostPath"]["path"].as_str() else {
                continue;
            };
            for socket in [
                "/run/containerd/containerd.sock",
                "/run/crio/crio.sock",
                "/run/docker.sock",
                "/var/run/docker.sock",
            ] {
                assert!(
                    !Path::new(socket).starts_with(path),
                    "hostPath {path} hands the pod {socket}"
                );
            }
        }
        let mut options = Vec::new();
        for mount in self.container["volumeMounts"].as_array().expect("mounts") {
            let name = mount["name"].as_str().expect("a volume name");
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let path = volume["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("volume {name} is a hostPath"));
            let access = if mount["readOnly"] == true {
                "ro"
            } else {
                "rw"
            };
            options.extend([
                "--mount".to_owned(),
                format!(
                    "type=bind,src={},dst={},options=rbind:{access}",
                    host(path).display(),
                    mount["mountPath"].as_str().expect("a mountPath")
                ),
            ]);
        }
        options
    }

    /// The running collector (its pid the first of `ctr task ps`) has the
    /// capabilities the manifest grants and no others, and the seccomp
    /// filter where it asks for one: what the kernel says of the process.
    /// Returns its pid.
    fn assert_confined_as_asked(&self, task_ps: &str) -> u32 {
        let pid = task_ps
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse::<u32>().ok())
            .next()
            .unwrap_or_else(|| panic!("the collector's pid in `ctr task ps`: {task_ps}"));
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("{name} in {status}"))
        };
        let effective = u64::from_str_radix(&field("CapEff:"), 16).expect("hex");
        let granted = self
            .grantable()
            .iter()
            .map(|cap| cap_bit(cap))
            .fold(0, |all, bit| all | bit);
        assert_eq!(
            effective, granted,
            "the collector holds exactly the capabilities the manifest adds"
        );
        let wanted = match self.container["securityContext"]["seccompProfile"]["type"].as_str() {
            Some("RuntimeDefault" | "Localhost") => "2",
            _ => "0",
        };
        assert_eq!(field("Seccomp:"), wanted, "seccomp mode (2: filtered)");
        assert_eq!(field("NoNewPrivs:"), "1", "no privilege escalation");
        pid
    }

    /// Runs the container as task `id` of `containerd`, its output in
    /// `log`; killed and removed when the returned task is dropped.
    fn run<'a>(
        &self,
        containerd: &'a Containerd,
        id: &'a str,
        log: &Path,
        host: &impl Fn(&str) -> PathBuf,
    ) -> Task<'a> {
        let mut run = vec![
            "run".to_owned(),
            "-d".to_owned(),
            "--log-uri".to_owned(),
            format!("file://{}", log.display()),
        ];
        run.extend(self.ctr_options());
        run.extend(self.mounts(host));
        run.extend([self.image().to_owned(), id.to_owned()]);
        run.extend(self.command());
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        containerd.run(&run);
        Task { containerd, id }
    }

    /// What the kubelet's probe of `path` on the metrics port gets from the
    /// container of process `pid`, from inside its network namespace: the
    /// status and the body.
    fn probe(&self, pid: u32, path: &str) -> (u16, String) {
        let port = self.container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "metrics"))
            .and_then(|p| p["containerPort"].as_u64())
            .expect("a metrics port");
        let netns = format!("--net=/proc/{pid}/ns/net");
        // A pod's loopback is up; the network namespace ctr makes is bare.
        let up = std::process::Command::new("nsenter")
            .args([netns.as_str(), "ip", "link", "set", "lo", "up"])
            .status()
            .expect("nsenter");
        assert!(up.success(), "loopback up in the pod's network: {up}");
        let output = std::process::Command::new("nsenter")
            .args([netns.as_str(), "busybox", "wget", "-S", "-q", "-O", "-"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .expect("nsenter busybox wget");
        let headers = String::from_utf8_lossy(&output.stderr);
        let status = headers
            .split_whitespace()
            .skip_while(|word| !word.starts_with("HTTP/"))
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The command: the image's entrypoint with the manifest's arguments.
    fn command(&self) -> Vec<String> {
        let mut command = vec!["/oom-collector".to_owned()];
        command.extend(Self::strings(&self.container["args"]));
        command
    }
}

/// `96Mi` and the like, in bytes.
fn bytes(quantity: &str) -> u64 {
    let (number, unit) = quantity.split_at(
        quantity
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(quantity.len()),
    );
    let number: u64 = number.parse().expect("a number");
    number
        * match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            other => panic!("unit {other}"),
        }
}

/// `250m` and the like, as ctr's `--cpus`.
fn cpus(quantity: &str) -> String {
    match quantity.strip_suffix('m') {
        Some(milli) => format!("{}", milli.parse::<f64>().expect("millicores") / 1000.0),
        None => quantity.to_owned(),
    }
}

/// The collector's image archive, which `cargo xtask test` builds first.
fn image_archive() -> Option<PathBuf> {
    let path = std::env::var_os("OOM_COLLECTOR_IMAGE").map(PathBuf::from);
    match path {
        Some(path) if path.is_file() => Some(path),
        _ => {
            let why = "needs the collector's image: run `cargo xtask image` and set \
                       OOM_COLLECTOR_IMAGE to target/image/oom-collector.oci.tar (cargo xtask \
                       test does both)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the DaemonSet test {why}, and CI=true");
            }
            eprintln!("skipping the DaemonSet test: it {why}");
            None
        }
    }
}

/// The image archive holds an index of two images, amd64 and arm64, each
/// a static binary of its own architecture: a node of either kind pulls
/// the one it can run.
#[test]
fn the_image_is_an_index_of_an_amd64_and_an_arm64_image() {
    let Some(archive) = image_archive() else {
        return;
    };
    if require_program!("tar").is_none() {
        return;
    }
    let image = OciArchive::unpack(&archive, "image-index").expect("the archive unpacks");
    let index = image.index().expect("the image index");
    let mut platforms: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    platforms.sort_unstable();
    assert_eq!(platforms, ["amd64", "arm64"], "{index}");

    // ELF machines: EM_X86_64 and EM_AARCH64.
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let manifest = image.manifest(arch).expect("listed above");
        let config = image
            .json(&manifest["config"]["digest"])
            .expect("the config");
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["os"], "linux", "{config}");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/oom-collector"]),
            "{config}"
        );
        let binary = image.binary(arch).unwrap_or_else(|e| panic!("{e}"));
        let binary = fs::read(binary).expect("/oom-collector in the layer");
        assert_eq!(&binary[..4], b"\x7fELF", "{arch}");
        let half = |at: usize| u16::from_le_bytes([binary[at], binary[at + 1]]);
        assert_eq!(half(18), machine, "{arch}: e_machine");
        // Static: no program header asks for an interpreter (PT_INTERP).
        let phoff = u64::from_le_bytes(binary[32..40].try_into().expect("8 bytes")) as usize;
        let (phentsize, phnum) = (usize::from(half(54)), usize::from(half(56)));
        let interpreted = (0..phnum).any(|i| {
            let at = phoff + i * phentsize;
            u32::from_le_bytes(binary[at..at + 4].try_into().expect("4 bytes")) == 3
        });
        assert!(!interpreted, "{arch}: the binary is dynamically linked");
    }
}

#[test]
fn the_collector_s_image_run_as_the_manifest_says_reports_a_pod_s_kill() {
    run_as_the_manifests_say(|_| {});
}

/// Where a runtime's default profile refuses `bpf()` or
/// `perf_event_open()` (older CRI-O and containerd), the manifests name
/// the project's own Localhost profile instead, as the README says: the
/// same run under it, start, kill, probes, SIGTERM and unpin.
#[test]
fn the_collector_runs_under_the_shipped_localhost_seccomp_profile() {
    run_as_the_manifests_say(|template| template.use_localhost_profile(None));
}

/// The Localhost profile lists every system call the collector and the
/// runtime's last steps before it make: the same run under a copy that
/// logs each call outside the list (`SCMP_ACT_LOG`) instead of refusing
/// it, and none of the collector's in the kernel's log. (The log is
/// rate-limited, but never to nothing.)
#[test]
fn the_localhost_seccomp_profile_lists_every_call_the_collector_makes() {
    let dir = ScratchDir::new("seccomp-log");
    let shipped = manifest::seccomp_profile(LOCALHOST_PROFILE);
    let mut profile: Value =
        serde_json::from_str(&fs::read_to_string(&shipped).expect("the profile")).expect("JSON");
    assert_eq!(
        profile["defaultAction"], "SCMP_ACT_ERRNO",
        "it refuses the rest"
    );
    profile["defaultAction"] = "SCMP_ACT_LOG".into();
    fs::write(
        dir.0.join(LOCALHOST_PROFILE),
        serde_json::to_string(&profile).expect("JSON"),
    )
    .expect("the logging copy");
    run_as_the_manifests_say(|template| template.use_localhost_profile(Some(&dir.0)));
}

/// The Localhost profile refuses by default, and allows none of the calls
/// container escapes are made of, which the collector does not need.
#[test]
fn the_localhost_seccomp_profile_refuses_what_escapes_are_made_of() {
    let path = manifest::seccomp_profile(LOCALHOST_PROFILE);
    let profile: Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("the profile")).expect("JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let rules = profile["syscalls"].as_array().expect("syscalls");
    let allowed: Vec<&str> = rules
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW" && rule["args"].is_null())
        .flat_map(|rule| rule["names"].as_array().expect("names"))
        .map(|name| name.as_str().expect("a name"))
        .collect();
    for call in ["bpf", "perf_event_open", "openat", "accept4", "renameat"] {
        assert!(allowed.contains(&call), "{call} is needed");
    }
    for call in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "ptrace",
        "process_vm_readv",
        "init_module",
        "finit_module",
        "kexec_load",
        "keyctl",
        "add_key",
        "open_by_handle_at",
        "userfaultfd",
        "io_uring_setup",
        "pivot_root",
        "chroot",
        "clone3",
    ] {
        assert!(!allowed.contains(&call), "{call} is allowed");
    }
    // Threads, not namespaces: clone only without CLONE_NEW* (masked to
    // 0), and clone3, whose flags a filter cannot see, answered ENOSYS so
    // the C library falls back to clone.
    const CLONE_NEW: u64 = 0x7e02_0000;
    let clone = rules
        .iter()
        .find(|rule| rule["names"][0] == "clone")
        .expect("a clone rule");
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], CLONE_NEW);
    assert_eq!(clone["args"][0]["valueTwo"], 0);
    let clone3 = rules
        .iter()
        .find(|rule| rule["names"][0] == "clone3")
        .expect("a clone3 rule");
    assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3["errnoRet"], libc::ENOSYS);
    assert!(
        profile["flags"].is_null(),
        "seccomp flags: runc before 1.2 refuses a profile that has them"
    );
}

/// The DaemonSet and the unpin DaemonSet as their manifests say, each
/// first changed by `patch` the way an operator would.
fn run_as_the_manifests_say(patch: impl Fn(&mut Template)) {
    if !require_root!() {
        return;
    }
    for program in [
        "containerd",
        "ctr",
        "runc",
        "busybox",
        "nsenter",
        "ip",
        "dmesg",
    ] {
        if require_program!(program).is_none() {
            return;
        }
    }
    let Some(archive) = image_archive() else {
        return;
    };
    let mut template = Template::read(manifest::COLLECTOR);
    patch(&mut template);
    let containerd = Containerd::start();
    let scratch = ScratchDir::new("daemonset");
    containerd.run(&[
        "images",
        "import",
        "--index-name",
        template.image(),
        archive.to_str().expect("utf-8"),
    ]);
    let hog_archive = build_image(&containerd.dir);
    containerd.run(&["images", "import", hog_archive.to_str().expect("utf-8")]);

    // The node's BPF filesystem: a fresh instance of the test's own, whose
    // pins go with it.
    let bpffs = Bpffs::mount(&scratch.0.join("bpffs"));
    let events = scratch.0.join("events");
    fs::create_dir_all(&events).expect("the event directory");
    let state = containerd.state();
    let host = |path: &str| -> PathBuf {
        if let Some(rest) = path.strip_prefix("/run/containerd") {
            return state.join(rest.trim_start_matches('/'));
        }
        if path == "/var/log/oom-collector" {
            return events.clone();
        }
        if path == "/sys/fs/bpf" {
            return bpffs.0.clone();
        }
        if Path::new(path).exists() {
            return PathBuf::from(path);
        }
        let empty = scratch.0.join("empty").join(path.trim_start_matches('/'));
        fs::create_dir_all(&empty).expect("an empty stand-in directory");
        empty
    };
    // containerd makes its task directory with the first task; the
    // collector's mount of it must exist before.
    fs::create_dir_all(state.join("io.containerd.runtime.v2.task/k8s.io")).expect("task dir");

    let log = scratch.0.join("collector.log");
    let collector_id = format!("oom-collector-{}", std::process::id());
    let started = Instant::now();
    let collector = template.run(&containerd, &collector_id, &log, &host);
    let collector_log = || fs::read_to_string(&log).unwrap_or_default();
    poll_until(
        Duration::from_secs(30),
        || {
            format!(
                "the collector container to attach; its output:\n{}",
                collector_log()
            )
        },
        || {
            collector_log()
                .contains("collecting OOM events")
                .then_some(())
        },
    );
    let attached = started.elapsed();
    let pid = template.assert_confined_as_asked(&containerd.output(&["task", "ps", &collector_id]));
    let since = kernel_log_mark();
    for path in ["/ready", "/healthz"] {
        let (status, body) = template.probe(pid, path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle = containerd.output(&["task", "metrics", &collector_id]);

    let id = format!(
        "{:064x}",
        std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15 + 1
    );
    let top = format!("oom-e2e-daemonset-{}", std::process::id());
    let _tree = CgroupTree { top: top.clone() };
    let cgroup = format!("/{top}/kubepods/burstable/pod{POD_UID}/{id}");
    containerd.run_pod_hog(&id, &cgroup);
    let _hog = Task {
        containerd: &containerd,
        id: &id,
    };
    let event_file = events.join("events.ndjson");
    let kill = poll_until(
        Duration::from_secs(30),
        || {
            format!(
                "the pod's kill in {}; the collector's log:\n{}",
                event_file.display(),
                collector_log()
            )
        },
        || {
            fs::read_to_string(&event_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|json| {
                    json["event"]["action"] == "oom_kill" && json["container"]["id"] == id.as_str()
                })
        },
    );
    let seen = std::time::SystemTime::now();
    // One path: the kill is in the file, and not also on the container's
    // output, which the node's log shipper would ship a second time.
    let on_stdout = collector_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|json| json["event"]["action"] == "oom_kill")
        .count();
    assert_eq!(
        on_stdout,
        0,
        "kills on the container's output too:\n{}",
        collector_log()
    );
    assert_eq!(kill["kubernetes"]["namespace"], NAMESPACE, "{kill}");
    assert_eq!(kill["kubernetes"]["pod"]["name"], POD, "{kill}");
    assert_eq!(kill["kubernetes"]["container"]["name"], CONTAINER, "{kill}");
    assert_eq!(kill["container"]["image"]["name"], HOG_IMAGE, "{kill}");
    assert_eq!(kill["kubernetes"]["node"]["name"], NODE, "{kill}");
    assert_eq!(kill["host"]["name"], NODE, "{kill}");
    assert_eq!(
        kill["oom"]["victim"]["memcg"]["path"],
        cgroup.as_str(),
        "{kill}"
    );
    assert_eq!(
        kill["oom"]["victim"]["memcg"]["limit_bytes"], HOG_LIMIT_BYTES,
        "{kill}"
    );
    // Without the kernel's log in the pod, what filled the limit is read
    // from cgroupfs, and the line says it in a sentence naming the pod.
    assert_eq!(
        kill["oom"]["memcg"]["stats"]["source"], "cgroupfs",
        "{kill}"
    );
    assert!(
        kill["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!(
                "busybox[{}] killed in pod {NAMESPACE}/{POD} (limit 32.0 MiB): busybox anon ",
                kill["process"]["pid"]
            ))),
        "{kill}"
    );
    let in_file = fs::read_to_string(&event_file).unwrap_or_default();
    let killed = kill["@timestamp"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .expect("the kill's @timestamp");
    eprintln!(
        "figures: image {} bytes; started to attached {attached:.2?}; kill to its line in the \
         file {:.2?} (polled every 2 ms); the event file has {} line(s); runtime's metrics of \
         the collector container, idle:\n{idle}\nafter the kill:\n{}",
        fs::metadata(&archive).map(|m| m.len()).unwrap_or(0),
        seen.duration_since(killed).unwrap_or_default(),
        in_file.lines().count(),
        containerd.output(&["task", "metrics", &collector_id])
    );

    let (status, metrics) = template.probe(pid, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains(&format!("k8s_pod=\"{POD}\"")),
        "the kill is counted under its pod:\n{metrics}"
    );

    // A rolling update's SIGTERM ends it cleanly ...
    containerd.run(&["task", "kill", "-s", "SIGTERM", &collector_id]);
    poll_until(
        Duration::from_secs(20),
        || {
            format!(
                "the collector to stop on SIGTERM; its log:\n{}",
                collector_log()
            )
        },
        || {
            containerd
                .output(&["task", "ls"])
                .lines()
                .any(|line| line.starts_with(&collector_id) && line.contains("STOPPED"))
                .then_some(())
        },
    );
    let deleted = containerd
        .ctr(&["task", "delete", &collector_id])
        .status()
        .expect("ctr task delete");
    assert!(
        deleted.success(),
        "the collector's exit status on SIGTERM ({deleted}); its log:\n{}",
        collector_log()
    );
    assert_nothing_refused(pid, &kernel_log_since(&since));
    // ... and its hooks outlive it, pinned on the node's BPF filesystem ...
    drop(collector);
    let kept = bpffs.sets();
    assert_eq!(
        kept.len(),
        1,
        "one kept set after the pod is gone: {kept:?}"
    );
    // ... until the unpin DaemonSet, run as its manifest says, removes them.
    let mut unpin = Template::read(manifest::UNPIN);
    patch(&mut unpin);
    let unpin_log = scratch.0.join("unpin.log");
    let unpin_id = format!("oom-collector-unpin-{}", std::process::id());
    let _unpin = unpin.run(&containerd, &unpin_id, &unpin_log, &host);
    poll_until(
        Duration::from_secs(30),
        || {
            format!(
                "the unpin pod to remove the kept set; its output:\n{}",
                fs::read_to_string(&unpin_log).unwrap_or_default()
            )
        },
        || bpffs.sets().is_empty().then_some(()),
    );
    let unpin_pid = unpin.assert_confined_as_asked(&containerd.output(&["task", "ps", &unpin_id]));
    assert_nothing_refused(unpin_pid, &kernel_log_since(&since));
}

/// Writes a line of its own to the kernel's log and returns it, so that
/// what comes after can be told from what came before.
fn kernel_log_mark() -> String {
    let mark = format!(
        "oom-e2e daemonset {} {:?}",
        std::process::id(),
        Instant::now()
    );
    fs::write("/dev/kmsg", &mark).expect("write to /dev/kmsg");
    mark
}

/// The kernel's log after the line `mark`, as `dmesg` prints it.
fn kernel_log_since(mark: &str) -> String {
    let output = std::process::Command::new("dmesg")
        .output()
        .expect("run dmesg");
    assert!(output.status.success(), "dmesg: {output:?}");
    let log = String::from_utf8_lossy(&output.stdout);
    let at = log
        .find(mark)
        .unwrap_or_else(|| panic!("the kernel's log lost the test's mark {mark:?}"));
    log[at..].to_owned()
}

/// No system call of process `pid` was refused by a seccomp profile that
/// logs what it refuses (audit type 1326, `pid=` the process's).
fn assert_nothing_refused(pid: u32, log: &str) {
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("type=1326") && line.contains(&format!(" pid={pid} ")))
        .collect();
    assert!(
        refused.is_empty(),
        "system calls the seccomp profile refused the collector:\n{}",
        refused.join("\n")
    );
}

/// A fresh BPF filesystem of the test's own, unmounted (its pins released)
/// on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(path: &Path) -> Self {
        fs::create_dir_all(path).expect("a mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t bpf: {status}");
        Self(path.to_owned())
    }

    /// The collector's kept sets under the DaemonSet's pin directory.
    fn sets(&self) -> Vec<String> {
        fs::read_dir(self.0.join("oom-collector"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("set-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A task of the test's containerd, killed and deleted on drop.
struct Task<'a> {
    containerd: &'a Containerd,
    id: &'a str,
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        let _ = self
            .containerd
            .ctr(&["task", "kill", "-s", "SIGKILL", self.id])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self
            .containerd
            .ctr(&["task", "delete", "-f", self.id])
            .status();
        let _ = self
            .containerd
            .ctr(&["containers", "delete", self.id])
            .status();
    }
}
