//! The project's Kubernetes manifests, read as the tests check them: the
//! settings a test runs the collector with come from the files themselves.

use std::fs;

use serde_json::Value;

/// The collector's DaemonSet.
pub const COLLECTOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/oom-collector.yaml"
);
/// The DaemonSet that removes what the collector keeps pinned.
pub const UNPIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/oom-collector-unpin.yaml"
);

/// Every document of the manifest at `path`.
pub fn documents(path: &str) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_multiple(&text).expect("the manifest is YAML")
}

/// The pod template of the manifest's DaemonSet, and its one container.
pub fn daemonset(path: &str) -> (Value, Value) {
    let daemonset = documents(path)
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest");
    let pod = daemonset["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let container = containers[0].clone();
    (pod, container)
}

/// The seccomp profile a pod names as `localhostProfile: NAME`: the
/// kubelet reads it from its seccomp directory, where the README says to
/// copy the project's profiles.
pub fn seccomp_profile(name: &str) -> std::path::PathBuf {
    std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/seccomp"
    ))
    .join(name)
}
