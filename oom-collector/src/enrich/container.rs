//! Container id, runtime and Kubernetes pod UID from a cgroup path.
//!
//! Container runtimes name the cgroups they create, and the kubelet names
//! the pod's, in a handful of well-known ways, depending on the cgroup driver:
//!
//! | driver   | runtime    | container cgroup                                           |
//! |----------|------------|------------------------------------------------------------|
//! | systemd  | containerd | `.../kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd  | CRI-O      | `.../kubepods-pod<uid_>.slice/crio-<id>.scope`             |
//! | systemd  | Docker     | `/system.slice/docker-<id>.scope`                          |
//! | systemd  | Podman     | `/machine.slice/libpod-<id>.scope`                         |
//! | cgroupfs | containerd, Docker (dockershim) | `/kubepods/burstable/pod<uid>/<id>` |
//! | cgroupfs | CRI-O      | `/kubepods/besteffort/pod<uid>/crio-<id>`                  |
//! | cgroupfs | Docker     | `/docker/<id>`                                             |
//!
//! The systemd driver writes the pod UID with `_` for `-`. A bare id under
//! `kubepods` does not say which runtime made it, so the runtime is left out
//! there rather than guessed. Runtime helpers that live beside a container
//! (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not the container.

/// What a cgroup path says about the container and pod around a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The full 64-hex-digit container id.
    pub id: Option<String>,
    /// `containerd`, `cri-o`, `docker` or `podman`, when the path says.
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod UID, in its usual dashed form.
    pub pod_uid: Option<String>,
}

impl ContainerInfo {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.pod_uid.is_none()
    }
}

/// Scope prefixes and the runtime each names.
const RUNTIME_PREFIXES: [(&str, &str); 6] = [
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    ("libpod-", "podman"),
    ("nerdctl-", "containerd"),
    ("containerd-", "containerd"),
];

/// Parses a cgroup path (as in `/proc/<pid>/cgroup`).
pub fn parse_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid(component) {
            info.pod_uid = Some(uid);
        } else if let Some((id, runtime)) = container_id(component, parent) {
            info.id = Some(id.to_owned());
            info.runtime = runtime;
        }
        parent = component;
    }
    info
}

fn container_id<'a>(component: &'a str, parent: &str) -> Option<(&'a str, Option<&'static str>)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in RUNTIME_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            // `crio-conmon-<id>`/`libpod-conmon-<id>` fail the hex check.
            return is_container_id(rest).then_some((rest, Some(runtime)));
        }
    }
    if is_container_id(name) {
        let runtime = match parent {
            "docker" => Some("docker"),
            _ => None,
        };
        return Some((name, runtime));
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let start = name.rfind("pod")?;
    let before = &name[..start];
    if !(before.is_empty() || before.starts_with("kubepods") && before.ends_with('-')) {
        return None;
    }
    let uid = name[start + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UUID: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
