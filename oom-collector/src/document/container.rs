//! The `container.*` and `kubernetes.*` fields of a process's document,
//! from its cgroup paths and what its container runtime recorded.

use super::{non_empty, Container, ContainerImage, Kubernetes, KubernetesName, KubernetesPod};
use crate::{
    enrich::{
        container::{parse_cgroup_path, ContainerInfo},
        runtime::ContainerMetadata,
    },
    host::HostInfo,
};

/// The container a process is in, from the first of its cgroup paths
/// that names one (the memory cgroup first: a runtime always makes it).
pub(crate) fn container_of(paths: [Option<&str>; 2]) -> ContainerInfo {
    paths
        .into_iter()
        .flatten()
        .map(parse_cgroup_path)
        .find(|info| !info.is_empty())
        .unwrap_or_default()
}

/// The `container.*` and `kubernetes.*` fields, from the cgroup path and,
/// where the runtime kept it, the container's metadata (which wins).
pub(super) fn container_fields(
    container: ContainerInfo,
    metadata: Option<&ContainerMetadata>,
    node_name: Option<&str>,
    host: &HostInfo,
) -> (Option<Container>, Option<Kubernetes>) {
    let meta = metadata.cloned().unwrap_or_default();
    let pod_uid = meta.pod_uid.or(container.pod_uid);
    let in_pod = pod_uid.is_some() || meta.pod_name.is_some();
    let kubernetes = non_empty(Kubernetes {
        namespace: meta.pod_namespace,
        pod: non_empty(KubernetesPod {
            name: meta.pod_name,
            uid: pod_uid,
        }),
        container: meta
            .kubernetes_container
            .map(|name| KubernetesName { name }),
        // Every event on a Kubernetes node says which node; elsewhere only
        // a pod's victims have one.
        node: host
            .kubernetes_node
            .as_deref()
            .or(node_name.filter(|_| in_pod))
            .map(|name| KubernetesName {
                name: name.to_owned(),
            }),
    });
    let container = container.id.map(|id| Container {
        id,
        runtime: meta.runtime.or(container.runtime),
        name: meta.name,
        image: meta.image.map(|name| ContainerImage { name }),
    });
    (container, kubernetes)
}
