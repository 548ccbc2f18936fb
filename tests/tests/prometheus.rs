//! The Prometheus side, with Debian's own Prometheus: the alert rules in
//! `deploy/prometheus` pass their `promtool` tests and match the
//! PrometheusRule word for word, and a real Prometheus scraping a running
//! collector, with the target labels a Kubernetes scrape gives it (the
//! collector pod's own `namespace`, `pod` and `container`), counts a pod's
//! kill under the victim's names and fires the kill alert. Root only for
//! the last; see the crate's doc.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use oom_e2e::{
    containerd::{CgroupTree, Containerd, NAMESPACE, POD, POD_UID},
    http_get, poll_until, require_program, require_root, Collector, ScratchDir,
};
use serde_json::Value;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus"))
}

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let Some(promtool) = require_program!("promtool") else {
        return;
    };
    for args in [
        vec!["check", "rules", "oom-collector-rules.yaml"],
        vec!["test", "rules", "oom-collector-rules.test.yaml"],
    ] {
        let output = Command::new(&promtool)
            .args(&args)
            .current_dir(prometheus_dir())
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_prometheusrule_carries_the_same_groups() {
    let read = |name: &str| -> Value {
        let text = fs::read_to_string(prometheus_dir().join(name)).expect(name);
        serde_saphyr::from_str(&text).expect("YAML")
    };
    let rules = read("oom-collector-rules.yaml");
    let resource = read("oom-collector-prometheusrule.yaml");
    assert_eq!(resource["kind"], "PrometheusRule");
    assert_eq!(resource["spec"]["groups"], rules["groups"]);
}

/// Debian's Prometheus, scraping one target every second with the labels
/// a Kubernetes pod scrape adds, evaluating the collector's rules every
/// second; stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    fn start(dir: &std::path::Path, target: &str, prometheus: &std::path::Path) -> Self {
        let port = 40_000 + std::process::id() % 10_000;
        let addr = format!("127.0.0.1:{port}");
        let rules = prometheus_dir().join("oom-collector-rules.yaml");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: oom-collector\n    static_configs:\n\
                 \x20     - targets: ['{target}']\n        labels:\n\
                 \x20         namespace: oom-collector\n\
                 \x20         pod: oom-collector-x7k2p\n\
                 \x20         container: oom-collector\n",
                rules.display()
            ),
        )
        .expect("prometheus.yml");
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, addr };
        poll_until(
            Duration::from_secs(30),
            || "Prometheus to answer".into(),
            || {
                std::net::TcpStream::connect(&prometheus.addr).ok()?;
                (http_get(&prometheus.addr, "/-/ready").0 == 200).then_some(())
            },
        );
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(&self.addr, path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_counts_a_pods_kill_under_the_victims_names_and_alerts() {
    if !require_root!() {
        return;
    }
    let Some(prometheus) = require_program!("prometheus") else {
        return;
    };
    for program in ["containerd", "ctr", "runc", "busybox"] {
        if require_program!(program).is_none() {
            return;
        }
    }
    let scratch = ScratchDir::new("prometheus");
    let containerd = Containerd::start();
    let archive = oom_e2e::containerd::build_image(&containerd.dir);
    containerd.run(&["images", "import", archive.to_str().expect("utf-8")]);
    let metrics = format!("127.0.0.1:{}", 50_000 + std::process::id() % 10_000);
    let state = containerd.state();
    let collector = Collector::start(&[
        "--metrics-addr",
        &metrics,
        "--containerd-state",
        state.to_str().expect("utf-8"),
    ]);
    let prometheus = Prometheus::start(&scratch.0, &metrics, &prometheus);

    let id = format!(
        "{:064x}",
        std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15 + 2
    );
    let top = format!("oom-e2e-prometheus-{}", std::process::id());
    let _tree = CgroupTree { top: top.clone() };
    containerd.run_pod_hog(&id, &format!("/{top}/kubepods/burstable/pod{POD_UID}/{id}"));
    collector.next_line(Duration::from_secs(30), |json| {
        json["event"]["action"] == "oom_kill" && json["container"]["id"] == id.as_str()
    });

    let query = format!("/api/v1/query?query=oom_kills_total%7Bk8s_pod%3D%22{POD}%22%7D");
    let series = poll_until(
        Duration::from_secs(30),
        || format!("Prometheus to scrape the kill: {}", prometheus.api(&query)),
        || {
            let answer = prometheus.api(&query);
            answer["data"]["result"]
                .as_array()
                .and_then(|result| result.first().cloned())
        },
    );
    let labels = series["metric"].as_object().expect("labels");
    assert_eq!(series["value"][1], "1", "{series}");
    assert_eq!(labels["k8s_namespace"], NAMESPACE, "{series}");
    // The target's own labels stay the collector pod's, and nothing of the
    // victim is renamed away to exported_*.
    assert_eq!(labels["pod"], "oom-collector-x7k2p", "{series}");
    assert!(
        labels.keys().all(|name| !name.starts_with("exported_")),
        "{series}"
    );

    let alert = poll_until(
        Duration::from_secs(30),
        || format!("the OOMKilled alert: {}", prometheus.api("/api/v1/alerts")),
        || {
            let answer = prometheus.api("/api/v1/alerts");
            answer["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|alert| {
                    alert["labels"]["alertname"] == "OOMKilled"
                        && alert["labels"]["k8s_pod"] == POD
                        && alert["state"] == "firing"
                })
                .cloned()
        },
    );
    eprintln!("figures: alert {}", alert["annotations"]["summary"]);
    let _ = containerd.ctr(&["task", "delete", "-f", &id]).status();
    let _ = containerd.ctr(&["containers", "delete", &id]).status();
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}
