//! Ring-buffer records, as the kernel side sends them, decoded with the
//! `oom/mark_victim` layouts of real kernels and shaped into the `oom_kill`
//! document the collector writes.
//!
//! A record is whatever bytes the ring buffer hands over: a kernel side of
//! another version, or a read that went wrong, must give an error or a
//! document, never a panic. The document must follow ECS (every ECS field
//! of ECS's type and allowed values, every other one in our own
//! namespaces), and its `--format pretty` line must be one line without
//! control characters, whatever the kernel's strings held. (Its JSON line
//! is one line of valid JSON by serde_json's escaping: nothing to check.)

#![no_main]

use std::{sync::LazyLock, time::SystemTime};

use libfuzzer_sys::fuzz_target;
use oom_collector::{
    cmdline::CmdlineMode,
    decode::{decode, KernelEvent, KernelKill},
    document::{
        kill::{kill_document, KillContext},
        Memcg, MemcgStats,
    },
    enrich::runtime::ContainerMetadata,
    host::{wall_clock_of_boot_ns, HostInfo},
    redact::Redactor,
    tracefs::TracepointFormat,
};
use serde_json::{Map, Value};

#[path = "../../oom-collector/tests/common/mod.rs"]
mod common;

macro_rules! mark_victim {
    ($kernel:literal) => {
        include_str!(concat!(
            "../../oom-collector/tests/fixtures/tracefs/mark_victim-",
            $kernel,
            ".format"
        ))
    };
}

/// The pid-only layout of 5.10 as released, and the nine-field one of
/// 5.10.251 to 6.18.
static FORMATS: LazyLock<Vec<TracepointFormat>> = LazyLock::new(|| {
    [
        mark_victim!("5.10.0-30-cloud-amd64"),
        mark_victim!("6.1.0-57-cloud-amd64"),
        mark_victim!("6.18.44-fc-v669"),
    ]
    .into_iter()
    .map(|text| TracepointFormat::parse(text).expect("a real kernel's format parses"))
    .collect()
});

static HOST: LazyLock<HostInfo> = LazyLock::new(|| HostInfo {
    name: "node-7".into(),
    kubernetes_node: None,
    kernel: "6.18.44-fc-v669".into(),
    boot_id: "f2f81b13-e3d2-4ddd-a3a7-68de18cc2592".into(),
});

/// ECS's fields, from the reference the collector's tests check against.
static ECS_FIELDS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let reference = common::ecs_reference();
    reference["fields"]
        .as_object()
        .expect("the reference has fields")
        .clone()
});

static REDACTOR: LazyLock<Redactor> = LazyLock::new(|| Redactor::new(&[]));

/// Where a victim may live: with each container runtime and driver, and on
/// the host itself.
const CGROUP_PATHS: [&str; 5] = [
    "/kubepods.slice/kubepods-burstable.slice/\
     kubepods-burstable-pod6b3c2a1e_4f5d_4c2b_9a8e_1f2e3d4c5b6a.slice/\
     cri-containerd-3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a.scope",
    "/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/\
     crio-5d2c1a9e8f7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
    "/system.slice/docker-3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a.scope",
    "/kubepods/burstable/pod6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a",
    "/system.slice/postgresql.service",
];

/// What enrichment would have found, made up from the kill's own ids so
/// the fuzzer reaches every shape of document.
fn context(kill: &KernelKill) -> KillContext {
    let path_of = |id: Option<u64>| {
        id.map(|id| CGROUP_PATHS[(id % CGROUP_PATHS.len() as u64) as usize].to_owned())
    };
    let victim_path = path_of(kill.victim.cgroup_id);
    KillContext {
        timestamp: wall_clock_of_boot_ns(kill.boot_ns),
        created: SystemTime::now(),
        victim_memcg: path_of(kill.victim.memcg_id).map(|path| Memcg {
            path,
            limit_bytes: kill.victim.memcg_pages.map(|p| p.max.saturating_mul(4096)),
            usage_bytes: kill
                .victim
                .memcg_pages
                .map(|p| p.usage.saturating_mul(4096)),
            ..Memcg::default()
        }),
        trigger_cgroup_path: path_of(kill.trigger.cgroup_id),
        trigger_memcg_path: path_of(kill.trigger.memcg_id),
        cmdline: REDACTOR.shown(CmdlineMode::Redacted, kill.cmdline.as_ref()),
        oom_log: None,
        // What filled the limit, from the record's own numbers, so that the
        // sentence is made of whatever a record can hold.
        oom_memcg: path_of(kill.victim.memcg_id).map(|path| Memcg {
            path,
            limit_bytes: kill.victim.memcg_pages.map(|p| p.max),
            stats: Some(MemcgStats {
                anon_bytes: kill.victim.total_vm_kib,
                file_bytes: kill.victim.file_rss_kib,
                shmem_bytes: kill.victim.shmem_rss_kib,
                kernel_bytes: kill.victim.pgtables_kib,
                swap_bytes: kill.victim.memcg_pages.map(|p| p.usage),
                source: "cgroupfs",
                ..MemcgStats::default()
            }),
            tasks_count: kill.victim.uid.map(u64::from),
            ..Memcg::default()
        }),
        node: None,
        victim_comm_from_proc: kill.victim.comm.is_none().then(|| "java".to_owned()),
        container_metadata: victim_path
            .as_ref()
            .filter(|_| kill.boot_ns.is_multiple_of(2))
            .map(|_| ContainerMetadata {
                runtime: Some("containerd"),
                name: Some("worker".into()),
                image: Some("registry.example.com/shop/worker:1.4.2".into()),
                pod_name: Some("worker-7c9d8f6b5-x2x9q".into()),
                pod_namespace: Some("shop".into()),
                pod_uid: Some("6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a".into()),
                kubernetes_container: Some("worker".into()),
            }),
        node_name: Some("node-7".into()),
        victim_exiting: kill.oom_control.as_ref().map(|c| !c.kill_sent),
        memcg_oom_group: None,
        victim_cgroup_path: victim_path,
    }
}

fuzz_target!(|record: &[u8]| {
    let mut kills: Vec<KernelKill> = FORMATS
        .iter()
        .filter_map(|format| match decode(record, format) {
            Ok(KernelEvent::OomKill(kill)) => Some(kill),
            _ => None,
        })
        .collect();
    // The 6.1 and 6.18 layouts are the same, and so are their kills.
    kills.dedup();
    for kill in kills {
        let document = kill_document(&kill, &HOST, context(&kill));
        let json = serde_json::to_value(&document).expect("a document serializes");
        let violations = common::ecs_violations(&json, &ECS_FIELDS);
        assert!(
            violations.is_empty(),
            "the document breaks ECS:\n{}\n{json}",
            violations.join("\n")
        );
        let pretty = document.pretty();
        assert!(
            !pretty.chars().any(char::is_control),
            "the pretty line holds a control character (a line break among them): {pretty:?}"
        );
    }
});
