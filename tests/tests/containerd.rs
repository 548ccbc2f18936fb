//! A real container runtime: our own containerd (private root, state and
//! socket) runs a container the way the kubelet's CRI plugin does — the
//! `io.kubernetes.cri.*` annotations, a memory limit, a kubelet-style
//! cgroup path — from an image this test builds itself (busybox-static, no
//! registry). The container is OOM-killed; its line must name the
//! namespace, pod, container, image and container id, read from
//! containerd's own bundle without any API, and the kill counter of
//! `--metrics-addr` must carry the same namespace and pod.

use std::time::Duration;

use oom_e2e::{
    containerd::{
        build_image, CgroupTree, Containerd, CONTAINER, HOG_IMAGE as IMAGE, NAMESPACE, POD, POD_UID,
    },
    http_get, require_program, require_root, Collector,
};

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
        containerd.run_pod_hog(&id, &cgroup);

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
        format!("k8s_namespace=\"{NAMESPACE}\""),
        format!("k8s_pod=\"{POD}\""),
        format!("k8s_container=\"{CONTAINER}\""),
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
