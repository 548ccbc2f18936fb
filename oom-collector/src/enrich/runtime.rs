//! Pod and container names from the metadata the container runtime keeps
//! on the node, so no Kubernetes API access is needed.
//!
//! The cgroup path gives a container id (see `container.rs`); the runtime
//! that started it wrote down what the kubelet asked for:
//!
//! | runtime | file | keys |
//! |---|---|---|
//! | containerd (k3s and RKE2 too) | `<state>/io.containerd.runtime.v2.task/<ns>/<id>/config.json` (OCI bundle) | `io.kubernetes.cri.sandbox-name`, `…sandbox-namespace`, `…sandbox-uid`, `…container-name`, `…image-name` |
//! | CRI-O | `<storage>/overlay-containers/<id>/userdata/config.json` (OCI bundle) | `io.kubernetes.pod.name`, `…pod.namespace`, `…pod.uid`, `io.kubernetes.container.name`, `io.kubernetes.cri-o.ImageName` |
//! | Docker (dockershim) | `<root>/containers/<id>/config.v2.json` | `Config.Labels` `io.kubernetes.pod.name`, … ; `Config.Image`; `Name` |
//!
//! Lookups are cached by container id. A bundle that is already gone (the
//! runtime cleans up after a container exits) is said so in the log; the
//! fields are then left out, never guessed.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;
use tracing::{debug, info};

/// What the runtime knows about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMetadata {
    pub runtime: Option<&'static str>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// The Kubernetes container name (`container.name` for Kubernetes).
    pub kubernetes_container: Option<String>,
}

/// Where containerd keeps its state unless told otherwise: containerd's
/// own default, then k3s and RKE2's (`/run/k3s/containerd`).
pub const CONTAINERD_STATE_DIRS: [&str; 2] = ["/run/containerd", "/run/k3s/containerd"];

/// Where the runtimes keep their state on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeDirs {
    /// containerd's state directories (`--state`), holding task bundles:
    /// containerd's own, and k3s and RKE2's, which run it with theirs.
    pub containerd_state: Vec<PathBuf>,
    /// CRI-O's (containers/storage) run root.
    pub crio_storage: PathBuf,
    /// Docker's data root.
    pub docker_root: PathBuf,
}

impl Default for RuntimeDirs {
    fn default() -> Self {
        Self {
            containerd_state: CONTAINERD_STATE_DIRS.iter().map(PathBuf::from).collect(),
            crio_storage: PathBuf::from("/run/containers/storage"),
            docker_root: PathBuf::from("/var/lib/docker"),
        }
    }
}

/// Containers remembered; a node runs a few hundred at most.
const CACHE_LIMIT: usize = 4096;

pub struct RuntimeMetadata {
    dirs: RuntimeDirs,
    cache: HashMap<String, ContainerMetadata>,
}

impl RuntimeMetadata {
    pub fn new(dirs: RuntimeDirs) -> Self {
        Self {
            dirs,
            cache: HashMap::new(),
        }
    }

    /// The metadata of container `id`, from the cache or the runtimes'
    /// files; `None` when no runtime has (or still has) it.
    pub fn lookup(&mut self, id: &str) -> Option<ContainerMetadata> {
        if let Some(found) = self.cache.get(id) {
            return Some(found.clone());
        }
        let started = std::time::Instant::now();
        let found = self.read(id);
        debug!(
            container = id,
            found = found.is_some(),
            micros = started.elapsed().as_micros() as u64,
            "container runtime metadata read"
        );
        match &found {
            Some(metadata) => {
                if self.cache.len() >= CACHE_LIMIT {
                    self.cache.clear();
                }
                self.cache.insert(id.to_owned(), metadata.clone());
            }
            None => info!(
                container = id,
                "no container runtime on this node has metadata for this container \
                 (already removed?); pod and container names are left out"
            ),
        }
        found
    }

    fn read(&self, id: &str) -> Option<ContainerMetadata> {
        let containerd: Vec<PathBuf> = self
            .dirs
            .containerd_state
            .iter()
            .flat_map(|state| containerd_bundles(state, id))
            .collect();
        let crio = self
            .dirs
            .crio_storage
            .join("overlay-containers")
            .join(id)
            .join("userdata/config.json");
        let docker = self
            .dirs
            .docker_root
            .join("containers")
            .join(id)
            .join("config.v2.json");
        for path in containerd {
            if let Some(metadata) = read_json(&path).map(|v| from_oci_bundle(&v, "containerd")) {
                return Some(metadata);
            }
        }
        if let Some(metadata) = read_json(&crio).map(|v| from_oci_bundle(&v, "cri-o")) {
            return Some(metadata);
        }
        read_json(&docker).map(|v| from_docker_config(&v))
    }
}

/// The bundles containerd may have for `id`: one per namespace
/// (`k8s.io` for the kubelet's), runtime v2 and the legacy v1 layout.
fn containerd_bundles(state: &Path, id: &str) -> Vec<PathBuf> {
    [
        "io.containerd.runtime.v2.task",
        "io.containerd.runtime.v1.linux",
    ]
    .iter()
    .filter_map(|runtime| fs::read_dir(state.join(runtime)).ok())
    .flat_map(|namespaces| namespaces.filter_map(Result::ok))
    .map(|namespace| namespace.path().join(id).join("config.json"))
    .collect()
}

fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            debug!(path = %path.display(), %error, "unreadable runtime metadata");
            None
        }
    }
}

fn string(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An OCI bundle's `annotations`, as containerd's CRI plugin or CRI-O
/// writes them.
pub fn from_oci_bundle(config: &Value, runtime: &'static str) -> ContainerMetadata {
    let annotations = config.get("annotations").cloned().unwrap_or(Value::Null);
    let get = |keys: &[&str]| keys.iter().find_map(|key| string(&annotations, key));
    let kubernetes_container = get(&[
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ]);
    ContainerMetadata {
        runtime: Some(runtime),
        name: kubernetes_container
            .clone()
            .or_else(|| get(&["io.kubernetes.cri-o.ContainerName"])),
        image: get(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
            "io.kubernetes.container.image",
        ]),
        pod_name: get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        pod_namespace: get(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ]),
        pod_uid: get(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]),
        kubernetes_container,
    }
}

/// Docker's `config.v2.json`: the kubelet's labels (dockershim) and the
/// container's own name and image.
pub fn from_docker_config(config: &Value) -> ContainerMetadata {
    let inner = config.get("Config").cloned().unwrap_or(Value::Null);
    let labels = inner.get("Labels").cloned().unwrap_or(Value::Null);
    let kubernetes_container = string(&labels, "io.kubernetes.container.name");
    ContainerMetadata {
        runtime: Some("docker"),
        name: kubernetes_container.clone().or_else(|| {
            string(config, "Name")
                .map(|n| n.trim_start_matches('/').to_owned())
                .filter(|n| !n.is_empty())
        }),
        image: string(&inner, "Image"),
        pod_name: string(&labels, "io.kubernetes.pod.name"),
        pod_namespace: string(&labels, "io.kubernetes.pod.namespace"),
        pod_uid: string(&labels, "io.kubernetes.pod.uid"),
        kubernetes_container,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Annotations as containerd 1.6's CRI plugin writes them for a
    /// container (not the sandbox) of a Deployment's pod.
    fn containerd_bundle() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {"args": ["python3", "worker.py"]},
            "annotations": {
                "io.kubernetes.cri.container-name": "worker",
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.image-name": "registry.example.com/shop/worker:1.4.2",
                "io.kubernetes.cri.sandbox-id": "5d2c1a9e8f7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
                "io.kubernetes.cri.sandbox-name": "worker-7c9d8f6b5-x2x9q",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-uid": "6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a"
            }
        })
    }

    #[test]
    fn reads_containerd_cri_annotations() {
        assert_eq!(
            from_oci_bundle(&containerd_bundle(), "containerd"),
            ContainerMetadata {
                runtime: Some("containerd"),
                name: Some("worker".into()),
                image: Some("registry.example.com/shop/worker:1.4.2".into()),
                pod_name: Some("worker-7c9d8f6b5-x2x9q".into()),
                pod_namespace: Some("shop".into()),
                pod_uid: Some("6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a".into()),
                kubernetes_container: Some("worker".into()),
            }
        );
    }

    #[test]
    fn reads_cri_o_annotations() {
        let bundle = json!({
            "annotations": {
                "io.kubernetes.container.name": "api",
                "io.kubernetes.cri-o.ContainerName": "k8s_api_api-0_prod_0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b_0",
                "io.kubernetes.cri-o.ImageName": "quay.io/acme/api:2.0",
                "io.kubernetes.pod.name": "api-0",
                "io.kubernetes.pod.namespace": "prod",
                "io.kubernetes.pod.uid": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
            }
        });
        let metadata = from_oci_bundle(&bundle, "cri-o");
        assert_eq!(
            metadata.name.as_deref(),
            Some("api"),
            "the Kubernetes name first"
        );
        assert_eq!(metadata.image.as_deref(), Some("quay.io/acme/api:2.0"));
        assert_eq!(metadata.pod_name.as_deref(), Some("api-0"));
        assert_eq!(metadata.pod_namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn reads_docker_config_with_and_without_kubernetes() {
        let dockershim = json!({
            "Name": "/k8s_web_web-1_default_11111111-2222-3333-4444-555555555555_0",
            "Config": {
                "Image": "nginx:1.25",
                "Labels": {
                    "io.kubernetes.container.name": "web",
                    "io.kubernetes.pod.name": "web-1",
                    "io.kubernetes.pod.namespace": "default",
                    "io.kubernetes.pod.uid": "11111111-2222-3333-4444-555555555555"
                }
            }
        });
        let metadata = from_docker_config(&dockershim);
        assert_eq!(metadata.name.as_deref(), Some("web"));
        assert_eq!(metadata.pod_namespace.as_deref(), Some("default"));
        let plain = json!({"Name": "/redis", "Config": {"Image": "redis:7", "Labels": {}}});
        let metadata = from_docker_config(&plain);
        assert_eq!(metadata.name.as_deref(), Some("redis"));
        assert_eq!(metadata.image.as_deref(), Some("redis:7"));
        assert_eq!(metadata.pod_name, None, "no pod outside Kubernetes");
        let unnamed = from_docker_config(&json!({"Name": "/"}));
        assert_eq!(unnamed.name, None, "a name that is only the slash is none");
    }

    #[test]
    fn finds_bundles_on_disk_caches_them_and_says_when_gone() {
        let root = std::env::temp_dir().join(format!("oom-runtime-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let id = "3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a";
        let bundle = root
            .join("containerd/io.containerd.runtime.v2.task/k8s.io")
            .join(id);
        fs::create_dir_all(&bundle).expect("scratch bundle");
        fs::write(bundle.join("config.json"), containerd_bundle().to_string()).expect("write");
        // As on a k3s node: containerd's own directory is not there, the
        // bundle is under the second.
        let mut runtime = RuntimeMetadata::new(RuntimeDirs {
            containerd_state: vec![root.join("absent"), root.join("containerd")],
            crio_storage: root.join("crio"),
            docker_root: root.join("docker"),
        });
        let found = runtime.lookup(id).expect("found on disk");
        assert_eq!(found.pod_name.as_deref(), Some("worker-7c9d8f6b5-x2x9q"));
        fs::remove_dir_all(&root).expect("clean up");
        assert_eq!(
            runtime.lookup(id),
            Some(found),
            "cached after the bundle went"
        );
        assert_eq!(runtime.lookup(&"0".repeat(64)), None);
    }
}
