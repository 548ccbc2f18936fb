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
///
/// The outermost pod and container win, and nothing below the container's
/// own cgroup counts: a container allowed to make cgroups (systemd inside,
/// a delegated subtree) may name them like another pod's or container's,
/// and its kills must not be credited to that pod, nor given that
/// container's runtime metadata.
pub fn parse_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid(component) {
            info.pod_uid.get_or_insert(uid);
        } else if let Some((id, runtime)) = container_id(component, parent) {
            info.id = Some(id.to_owned());
            info.runtime = runtime;
            break;
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
    // `kubepods-burstable-`, or `kubelet-kubepods-...-` under kind's nesting.
    if !(before.is_empty() || before.contains("kubepods") && before.ends_with('-')) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a";
    const UID: &str = "6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a";
    const UID_SYSTEMD: &str = "6b3c2a1e_4f5d_4c2b_9a8e_1f2e3d4c5b6a";

    fn info(id: Option<&str>, runtime: Option<&'static str>, pod: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            id: id.map(str::to_owned),
            runtime,
            pod_uid: pod.map(str::to_owned),
        }
    }

    #[test]
    fn cgroups_a_container_makes_below_its_own_never_name_another_pod() {
        const OTHER_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        const OTHER_UID: &str = "11111111-2222-3333-4444-555555555555";
        const OTHER_UID_SYSTEMD: &str = "11111111_2222_3333_4444_555555555555";
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/\
                     cri-containerd-{ID}.scope/kubepods-besteffort-pod{OTHER_UID_SYSTEMD}.slice/\
                     cri-containerd-{OTHER_ID}.scope"
                ),
                info(Some(ID), Some("containerd"), Some(UID)),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/pod{OTHER_UID}/{OTHER_ID}"),
                info(Some(ID), None, Some(UID)),
            ),
            (
                format!("/system.slice/docker-{ID}.scope/kubepods/pod{OTHER_UID}/{OTHER_ID}"),
                info(Some(ID), Some("docker"), None),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    #[test]
    fn kubernetes_with_the_systemd_driver() {
        let cases = [
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"),
                Some("cri-o"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"),
                Some("docker"),
            ),
            (
                // kind and other nested kubelets prefix the slices.
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
        ];
        for (path, runtime) in cases {
            assert_eq!(
                parse_cgroup_path(&path),
                info(Some(ID), runtime, Some(UID)),
                "{path}"
            );
        }
    }

    #[test]
    fn kubernetes_with_the_cgroupfs_driver() {
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            info(Some(ID), None, Some(UID)),
            "a bare id does not say which runtime made it"
        );
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}")),
            info(Some(ID), None, Some(UID)),
            "guaranteed pods sit directly under kubepods"
        );
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            info(Some(ID), Some("cri-o"), Some(UID))
        );
    }

    #[test]
    fn pod_level_and_runtime_helper_cgroups_name_no_container() {
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}")),
            info(None, None, Some(UID)),
            "a pod-level limit: the pod, no container"
        );
        assert_eq!(
            parse_cgroup_path(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
            )),
            info(None, None, Some(UID)),
            "conmon is CRI-O's monitor, not the container"
        );
    }

    #[test]
    fn docker_podman_and_nerdctl_outside_kubernetes() {
        assert_eq!(
            parse_cgroup_path(&format!("/system.slice/docker-{ID}.scope")),
            info(Some(ID), Some("docker"), None)
        );
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{ID}")),
            info(Some(ID), Some("docker"), None)
        );
        assert_eq!(
            parse_cgroup_path(&format!("/machine.slice/libpod-{ID}.scope")),
            info(Some(ID), Some("podman"), None)
        );
        assert_eq!(
            parse_cgroup_path(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            )),
            info(Some(ID), Some("podman"), None),
            "rootless podman nests a `container` cgroup"
        );
        assert_eq!(
            parse_cgroup_path(&format!("/system.slice/libpod-conmon-{ID}.scope")),
            info(None, None, None)
        );
        assert_eq!(
            parse_cgroup_path(&format!("/default/nerdctl-{ID}.scope")),
            info(Some(ID), Some("containerd"), None)
        );
    }

    #[test]
    fn host_cgroups_and_near_misses_are_not_containers() {
        for path in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-3.scope",
            "/oom-collector-selftest-4242",
            "/docker/abc123",
            "/kubepods/burstable/podnot-a-uid",
            "/system.slice/docker.service",
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}g", &ID[..63]),
        ] {
            assert!(parse_cgroup_path(path).is_empty(), "{path}");
        }
    }
}
