//! The JSON wire format, held by golden files, and checked against the
//! Elastic Common Schema reference in `tests/fixtures/ecs/ecs_fields.json`:
//! every ECS field written has ECS's type and allowed values, and every
//! other field is in one of this project's own namespaces.
//!
//! The golden tests only compare. To accept an intended format change,
//! `cargo xtask bless` rewrites `tests/golden/` (see `tests/README.md`);
//! then review `git diff` of it.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use oom_collector::{
    alloc_failures::AllocFailures,
    cmdline::CapturedCmdline,
    decode::{KernelKill, OomControlInfo, Trigger, Victim},
    document::{
        alloc_failure::{alloc_failure_document, AllocFailureContext},
        kill::{kill_document, KillContext},
        lost::{lost_document, LostContext},
        Document, Memcg, MemcgEvents, MemcgPressure, MemcgStats, MemcgTask, NodeMemcg,
        NodeMemcgPod, NodeStats, OomNode, PodName, PressureAverages,
    },
    enrich::runtime::ContainerMetadata,
    host::HostInfo,
    kmsg::OomContext,
};
use oom_common::AllocSyscall;
use serde_json::Value;

mod common;
use common::{ecs_reference, ecs_violations, leaves};

fn host() -> HostInfo {
    HostInfo {
        name: "node-7".into(),
        kubernetes_node: None,
        kernel: "6.18.44-fc-v669".into(),
        boot_id: "f2f81b13-e3d2-4ddd-a3a7-68de18cc2592".into(),
    }
}

fn at(seconds: u64, micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
}

/// A containerd container of a burstable pod, killed at its own limit, on a
/// cgroup v2 host with the systemd driver.
fn kubernetes_kill() -> Document {
    let kill = KernelKill {
        boot_ns: 675_923_695_171,
        trigger: Trigger {
            tid: 15_580,
            pid: 15_579,
            comm: "python3".into(),
            cgroup_id: Some(9_001),
            memcg_id: Some(9_001),
        },
        victim: Victim {
            tid: 15_579,
            pid: Some(15_579),
            parent_pid: Some(15_138),
            comm: Some("python3".into()),
            uid: Some(1000),
            cgroup_id: Some(9_001),
            memcg_id: Some(9_001),
            memcg_pages: None,
            total_vm_kib: Some(312_748),
            anon_rss_kib: Some(261_120),
            file_rss_kib: Some(10_548),
            shmem_rss_kib: Some(0),
            pgtables_kib: Some(700),
            oom_score_adj: Some(984),
        },
        cmdline: None,
        // The pod-level limit of 512 MiB was hit, not the container's own.
        oom_control: Some(OomControlInfo {
            incident_boot_ns: 675_923_690_004,
            domain_pages: 131_072,
            chosen_points: 1_965,
            kill_sent: true,
            memcg_id: Some(4_711),
            gfp_mask: 0x140cca,
            order: 0,
            constraint: Some("memcg"),
            chosen_tid: 15_579,
            memcg_pages: None,
        }),
    };
    let pod = "/kubepods.slice/kubepods-burstable.slice/\
               kubepods-burstable-pod6b3c2a1e_4f5d_4c2b_9a8e_1f2e3d4c5b6a.slice";
    let path = "/kubepods.slice/kubepods-burstable.slice/\
                kubepods-burstable-pod6b3c2a1e_4f5d_4c2b_9a8e_1f2e3d4c5b6a.slice/\
                cri-containerd-3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a.scope";
    kill_document(
        &kill,
        &host(),
        KillContext {
            timestamp: at(1_795_980_956, 333_562),
            created: at(1_795_980_956, 334_344),
            victim_cgroup_path: Some(path.into()),
            victim_memcg: Some(Memcg {
                path: path.into(),
                limit_bytes: Some(268_435_456),
                usage_bytes: Some(268_132_352),
                ..Memcg::default()
            }),
            trigger_cgroup_path: Some(path.into()),
            trigger_memcg_path: Some(path.into()),
            cmdline: Some(CapturedCmdline {
                executable: Some("/usr/local/bin/python3".into()),
                args: [
                    "python3",
                    "-m",
                    "celery",
                    "worker",
                    "--broker-password=<redacted>",
                ]
                .map(String::from)
                .to_vec(),
                truncated: false,
            }),
            oom_log: Some(OomContext {
                incident_seq: 88_417,
                constraint: Some("memcg"),
                oom_memcg: Some(pod.into()),
                gfp_flags: Some(vec!["GFP_HIGHUSER_MOVABLE".into(), "__GFP_COMP".into()]),
                order: Some(0),
                group: None,
                report: None,
            }),
            // What filled the pod's limit: the victim's anon, a tmpfs
            // (an emptyDir in memory), page cache, kernel memory and the
            // pod's three other processes.
            oom_memcg: Some(Memcg {
                path: pod.into(),
                limit_bytes: Some(536_870_912),
                usage_bytes: Some(536_608_768),
                stats: Some(MemcgStats {
                    anon_bytes: Some(275_877_888),
                    file_bytes: Some(242_221_056),
                    shmem_bytes: Some(209_715_200),
                    kernel_bytes: Some(13_002_752),
                    slab_reclaimable_bytes: Some(4_194_304),
                    slab_unreclaimable_bytes: Some(6_291_456),
                    kernel_stack_bytes: Some(737_280),
                    pagetables_bytes: Some(1_777_664),
                    sock_bytes: Some(0),
                    swap_bytes: Some(0),
                    file_mapped_bytes: Some(1_048_576),
                    file_dirty_bytes: Some(0),
                    file_writeback_bytes: Some(0),
                    source: "kernel_log",
                }),
                tasks: Some(vec![
                    task(15_579, "python3", 278_188_032, 984),
                    task(15_138, "celery", 9_437_184, 984),
                    task(15_120, "sh", 1_052_672, 984),
                    task(15_001, "pause", 409_600, -998),
                ]),
                tasks_count: Some(4),
                events: Some(MemcgEvents {
                    high: Some(0),
                    max: Some(41_237),
                    oom: Some(1),
                    oom_kill: Some(1),
                    oom_group_kill: Some(0),
                    failcnt: None,
                }),
                pressure: Some(MemcgPressure {
                    some: PressureAverages {
                        avg10: 38.52,
                        avg60: 9.87,
                        total_us: 48_211_907,
                    },
                    full: PressureAverages {
                        avg10: 31.2,
                        avg60: 7.66,
                        total_us: 39_005_114,
                    },
                }),
            }),
            node: None,
            victim_comm_from_proc: None,
            container_metadata: Some(ContainerMetadata {
                runtime: Some("containerd"),
                name: Some("worker".into()),
                image: Some("registry.example.com/shop/worker:1.4.2".into()),
                pod_name: Some("worker-7c9d8f6b5-x2x9q".into()),
                pod_namespace: Some("shop".into()),
                pod_uid: Some("6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a".into()),
                kubernetes_container: Some("worker".into()),
            }),
            node_name: Some("node-7".into()),
            victim_exiting: None,
            memcg_oom_group: None,
        },
    )
}

fn task(pid: u32, name: &str, rss_bytes: u64, oom_score_adj: i16) -> MemcgTask {
    MemcgTask {
        pid,
        name: name.into(),
        rss_bytes,
        oom_score_adj: Some(oom_score_adj),
    }
}

/// A 5.10 kernel without BTF: the tracepoint gives only the pid.
fn bare_kill() -> Document {
    bare_kill_with(None)
}

/// A kill with only the pid known, and whether the victim was exiting.
fn bare_kill_with(victim_exiting: Option<bool>) -> Document {
    let kill = KernelKill {
        boot_ns: 12_000_000_000,
        trigger: Trigger {
            tid: 900,
            pid: 900,
            comm: "java".into(),
            cgroup_id: None,
            memcg_id: None,
        },
        victim: Victim {
            tid: 901,
            ..Victim::default()
        },
        cmdline: None,
        oom_control: None,
    };
    kill_document(&kill, &host(), bare_context(victim_exiting))
}

/// A global OOM: a batch job ran the node out of memory; its largest
/// cgroups and memory by kind come with the kill.
fn global_kill() -> Document {
    let kill = KernelKill {
        boot_ns: 13_000_000_000,
        trigger: Trigger {
            tid: 3_301,
            pid: 3_300,
            comm: "java".into(),
            cgroup_id: Some(77),
            memcg_id: Some(77),
        },
        victim: Victim {
            tid: 3_300,
            pid: Some(3_300),
            comm: Some("java".into()),
            uid: Some(1000),
            memcg_id: Some(77),
            anon_rss_kib: Some(2_969_600),
            file_rss_kib: Some(20_480),
            shmem_rss_kib: Some(0),
            oom_score_adj: Some(0),
            ..Victim::default()
        },
        cmdline: None,
        oom_control: None,
    };
    let gib = |tenths: u64| tenths * (1 << 30) / 10;
    let context = KillContext {
        victim_memcg: Some(Memcg {
            path: "/system.slice/batch.service".into(),
            ..Memcg::default()
        }),
        oom_log: Some(OomContext {
            incident_seq: 4_040,
            constraint: Some("global"),
            ..OomContext::default()
        }),
        node: Some(OomNode {
            stats: NodeStats {
                source: "kernel_log",
                anon_bytes: gib(36),
                file_bytes: gib(3),
                shmem_bytes: gib(1),
                kernel_bytes: gib(2),
                free_bytes: 67_108_864,
            },
            memcgs: vec![
                NodeMemcg {
                    path: "/system.slice/batch.service".into(),
                    usage_bytes: gib(29),
                    kubernetes: None,
                },
                NodeMemcg {
                    path: "/kubepods.slice/kubepods-burstable.slice/\
                           kubepods-burstable-pod6b3c2a1e_4f5d_4c2b_9a8e_1f2e3d4c5b6a.slice/\
                           cri-containerd-3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a.scope"
                        .into(),
                    usage_bytes: gib(6),
                    kubernetes: Some(NodeMemcgPod {
                        namespace: Some("shop".into()),
                        pod: PodName {
                            name: "worker-7c9d8f6b5-x2x9q".into(),
                        },
                    }),
                },
            ],
        }),
        ..bare_context(Some(false))
    };
    kill_document(&kill, &host(), context)
}

/// What the enricher adds to a kill it knows nothing more of.
fn bare_context(victim_exiting: Option<bool>) -> KillContext {
    KillContext {
        timestamp: at(1_795_980_000, 1),
        created: at(1_795_980_000, 2_000),
        victim_cgroup_path: None,
        victim_memcg: None,
        trigger_cgroup_path: None,
        trigger_memcg_path: None,
        cmdline: None,
        oom_log: None,
        oom_memcg: None,
        node: None,
        victim_comm_from_proc: None,
        container_metadata: None,
        node_name: Some("node-7".into()),
        victim_exiting,
        memcg_oom_group: None,
    }
}

fn events_lost() -> Document {
    lost_document(
        &host(),
        LostContext {
            count: 17,
            reason: "ring_buffer_full",
            boot_ns: 700_000_000_000,
            timestamp: at(1_795_981_000, 0),
            created: at(1_795_981_000, 10),
        },
    )
}

/// A JVM in a CRI-O container whose heap growth was refused 1 523 times in
/// one window.
fn alloc_failed() -> Document {
    let failures = AllocFailures {
        pid: 7_001,
        syscall: AllocSyscall::Mmap,
        count: 1_523,
        first_boot_ns: 675_000_000_000,
        last_boot_ns: 675_900_000_000,
        max_request_bytes: Some(67_108_864),
        comm: Some("java".into()),
        cgroup_id: Some(77),
        memcg_id: Some(77),
        other_processes: None,
    };
    let path = "/kubepods.slice/kubepods-besteffort.slice/\
                kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/\
                crio-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b.scope";
    failures_document(
        &failures,
        path,
        at(1_795_980_955, 500_000),
        at(1_795_980_956, 600_000),
    )
}

/// The document of `failures` in one second's window on node-7, the
/// victim's cgroup and memory cgroup both `path`, without runtime metadata.
fn failures_document(
    failures: &AllocFailures,
    path: &str,
    timestamp: SystemTime,
    created: SystemTime,
) -> Document {
    alloc_failure_document(
        failures,
        &host(),
        AllocFailureContext {
            window_ms: 1000,
            timestamp,
            last: timestamp + Duration::from_nanos(failures.last_boot_ns - failures.first_boot_ns),
            created,
            memcg_path: Some(path.into()),
            cgroup_path: Some(path.into()),
            container_metadata: None,
            node_name: Some("node-7".into()),
        },
    )
}

/// A process whose kernel page allocations of order 4 (64 KiB) failed 12
/// times in one window (`--page-alloc-failures`), outside any container.
fn page_alloc_failed() -> Document {
    let failures = AllocFailures {
        pid: 4_242,
        syscall: AllocSyscall::PageAlloc,
        count: 12,
        first_boot_ns: 676_000_000_000,
        last_boot_ns: 676_400_000_000,
        max_request_bytes: Some(65_536),
        comm: Some("nginx".into()),
        cgroup_id: Some(88),
        memcg_id: Some(88),
        other_processes: None,
    };
    failures_document(
        &failures,
        "/system.slice/nginx.service",
        at(1_795_980_957, 0),
        at(1_795_980_957, 400_000),
    )
}

/// The failures of a pod's 4,990 other processes in one window: the
/// kernel's per-process table told 1,014 of them apart.
fn alloc_failed_in_other_processes() -> Document {
    let failures = AllocFailures {
        pid: 0,
        syscall: AllocSyscall::Mmap,
        count: 99_800,
        first_boot_ns: 675_000_000_000,
        last_boot_ns: 675_900_000_000,
        max_request_bytes: Some(1 << 47),
        comm: None,
        cgroup_id: None,
        memcg_id: Some(77),
        other_processes: Some(1_014),
    };
    let path = "/kubepods.slice/kubepods-besteffort.slice/\
                kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/\
                crio-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b.scope";
    failures_document(
        &failures,
        path,
        at(1_795_980_955, 500_000),
        at(1_795_980_956, 600_000),
    )
}

/// Every golden file with the document it holds.
fn golden_documents() -> [(&'static str, Document); 7] {
    [
        ("oom_kill_kubernetes.ndjson", kubernetes_kill()),
        ("oom_kill_global.ndjson", global_kill()),
        ("oom_kill_pid_only.ndjson", bare_kill()),
        ("memory_allocation_failed.ndjson", alloc_failed()),
        (
            "memory_allocation_failed_other_processes.ndjson",
            alloc_failed_in_other_processes(),
        ),
        ("page_allocation_failed.ndjson", page_alloc_failed()),
        ("events_lost.ndjson", events_lost()),
    ]
}

/// Set only by `cargo xtask bless`: the golden files are rewritten by
/// that command alone, never as a side effect of testing.
const BLESS_VARIABLE: &str = "OOM_COLLECTOR_BLESS";

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn line_of(document: &Document) -> String {
    serde_json::to_string(document).expect("serializes") + "\n"
}

fn check_golden(name: &str, document: &Document) {
    let line = line_of(document);
    let path = golden_path(name);
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable: {e}; a new one is written by `cargo xtask bless`",
            path.display()
        )
    });
    if line == golden {
        return;
    }
    panic!(
        "the JSON of {name} differs from {}:\n{}\nIf the change is intended, run \
         `cargo xtask bless` and review `git diff oom-collector/tests/golden`.",
        path.display(),
        difference(&golden, &line)
    );
}

/// Field by field, `-` as the golden file has it and `+` as written now;
/// the whole lines where either is not one JSON document.
fn difference(golden: &str, written: &str) -> String {
    let parse = |text: &str| serde_json::from_str::<Value>(text).map(|json| leaves(&json));
    let (Ok(before), Ok(after)) = (parse(golden), parse(written)) else {
        return format!("- {}\n+ {}", golden.trim_end(), written.trim_end());
    };
    let mut lines = Vec::new();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        match (before.get(name), after.get(name)) {
            (Some(old), Some(new)) if old == new => {}
            (old, new) => {
                if let Some(old) = old {
                    lines.push(format!("- {name}: {old}"));
                }
                if let Some(new) = new {
                    lines.push(format!("+ {name}: {new}"));
                }
            }
        }
    }
    if lines.is_empty() {
        // The same fields and values: the order or spacing changed.
        return format!("- {}\n+ {}", golden.trim_end(), written.trim_end());
    }
    lines.join("\n")
}

#[test]
fn golden_oom_kill_in_a_kubernetes_pod() {
    check_golden("oom_kill_kubernetes.ndjson", &kubernetes_kill());
}

#[test]
fn golden_oom_kill_of_a_global_oom() {
    check_golden("oom_kill_global.ndjson", &global_kill());
}

#[test]
fn golden_oom_kill_with_only_the_pid() {
    check_golden("oom_kill_pid_only.ndjson", &bare_kill());
}

#[test]
fn golden_memory_allocation_failed() {
    check_golden("memory_allocation_failed.ndjson", &alloc_failed());
}

#[test]
fn golden_memory_allocation_failed_in_other_processes() {
    check_golden(
        "memory_allocation_failed_other_processes.ndjson",
        &alloc_failed_in_other_processes(),
    );
}

#[test]
fn golden_page_allocation_failed() {
    check_golden("page_allocation_failed.ndjson", &page_alloc_failed());
}

#[test]
fn golden_events_lost() {
    check_golden("events_lost.ndjson", &events_lost());
}

/// `cargo xtask bless`: writes every golden file from its document. Ignored
/// by `cargo test`, and refuses to run without [`BLESS_VARIABLE`].
#[test]
#[ignore = "rewrites the golden files: run through `cargo xtask bless`"]
fn bless() {
    assert!(
        std::env::var_os(BLESS_VARIABLE).is_some(),
        "the golden files are rewritten only by `cargo xtask bless`"
    );
    for (name, document) in golden_documents() {
        let path = golden_path(name);
        std::fs::write(&path, line_of(&document))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// A collector in a pod without host networking: `uname` gives the pod's
/// own name, `NODE_NAME` the node's. Every event names the node, the kill
/// of a process outside any pod (kubelet, containerd, a global OOM's
/// victim) and an `events_lost` included.
#[test]
fn on_a_kubernetes_node_every_event_names_the_node() {
    let in_pod = HostInfo {
        name: "ip-10-0-3-17.ec2.internal".into(),
        kubernetes_node: Some("ip-10-0-3-17.ec2.internal".into()),
        ..host()
    };
    let kill = KernelKill {
        boot_ns: 12_000_000_000,
        victim: Victim {
            tid: 901,
            ..Victim::default()
        },
        ..KernelKill::default()
    };
    let context = KillContext {
        victim_cgroup_path: Some("/system.slice/kubelet.service".into()),
        node_name: Some(in_pod.name.clone()),
        ..bare_context(None)
    };
    let lost = LostContext {
        count: 1,
        reason: "ring_buffer_full",
        boot_ns: 1,
        timestamp: at(1_795_981_000, 0),
        created: at(1_795_981_000, 10),
    };
    for document in [
        kill_document(&kill, &in_pod, context.clone()),
        lost_document(&in_pod, lost.clone()),
    ] {
        let value = serde_json::to_value(&document).expect("serializes");
        assert_eq!(value["host"]["name"], "ip-10-0-3-17.ec2.internal");
        assert_eq!(
            value["kubernetes"]["node"]["name"], "ip-10-0-3-17.ec2.internal",
            "{value}"
        );
    }
    // Without NODE_NAME, a process outside any pod gets no Kubernetes node.
    let value = serde_json::to_value(kill_document(&kill, &host(), context)).expect("json");
    assert!(value.get("kubernetes").is_none(), "{value}");
    let value = serde_json::to_value(lost_document(&host(), lost)).expect("json");
    assert!(value.get("kubernetes").is_none(), "{value}");
}

#[test]
fn unknown_fields_are_left_out_not_zeroed() {
    let value = serde_json::to_value(bare_kill()).expect("serializes");
    let leaves = leaves(&value);
    for absent in [
        "process.name",
        "process.parent.pid",
        "process.user.id",
        "oom.victim.rss.anon_bytes",
        "oom.victim.memcg.path",
        "container.id",
        "kubernetes.pod.uid",
        "oom.trigger.cgroup.path",
    ] {
        assert!(!leaves.contains_key(absent), "{absent} should be absent");
    }
    assert_eq!(leaves["process.pid"], Value::from(901));
    assert!(!leaves.values().any(Value::is_null), "no nulls: {leaves:?}");
}

#[test]
fn every_field_follows_ecs_or_is_our_own() {
    let reference = ecs_reference();
    assert_eq!(
        reference["ecs_version"],
        Value::from(oom_collector::document::ECS_VERSION)
    );
    let fields = reference["fields"].as_object().expect("fields object");
    for (name, document) in golden_documents() {
        let value = serde_json::to_value(&document).expect("serializes");
        let violations = ecs_violations(&value, fields);
        assert!(
            violations.is_empty(),
            "{name} breaks ECS:\n{}",
            violations.join("\n")
        );
    }
}

#[test]
fn sizes_are_bytes_and_the_cgroup_names_container_and_pod() {
    let leaves = leaves(&serde_json::to_value(kubernetes_kill()).expect("serializes"));
    assert_eq!(
        leaves["oom.victim.rss.anon_bytes"],
        Value::from(261_120u64 * 1024)
    );
    assert_eq!(
        leaves["oom.victim.total_vm_bytes"],
        Value::from(312_748u64 * 1024)
    );
    assert_eq!(leaves["oom.victim.oom_score_adj"], Value::from(984));
    assert_eq!(leaves["oom.victim.points"], Value::from(1_965));
    assert_eq!(
        leaves["oom.domain_bytes"],
        Value::from(131_072u64 * rustix::param::page_size() as u64),
        "the domain is the limited cgroup's size in bytes, not the victim's"
    );
    assert_eq!(
        leaves["oom.incident.id"],
        Value::from("f2f81b13-e3d2-4ddd-a3a7-68de18cc2592-675923690004"),
        "the hook's incident wins over the log's"
    );
    assert_eq!(leaves["oom.group_kill"], Value::from(false));
    assert_eq!(
        leaves["container.id"],
        Value::from("3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a")
    );
    assert_eq!(leaves["container.runtime"], Value::from("containerd"));
    assert_eq!(
        leaves["kubernetes.pod.uid"],
        Value::from("6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a")
    );
    assert_eq!(
        leaves["process.user.id"],
        Value::from("1000"),
        "ECS user ids are strings"
    );
    assert_eq!(
        leaves["@timestamp"],
        Value::from("2026-11-29T19:35:56.333562Z")
    );
}

#[test]
fn a_victim_already_exiting_is_not_reported_as_killed() {
    let document = bare_kill_with(Some(true));
    let json = serde_json::to_value(&document).expect("serializes");
    assert_eq!(json["oom"]["victim"]["exiting"], true, "{json}");
    let message = json["message"].as_str().expect("message");
    assert!(
        message.contains("process 901 (?) was already exiting") && !message.contains("Killed"),
        "{message}"
    );
    let pretty = document.pretty();
    assert!(
        pretty.contains("OOM EXIT") && pretty.contains("no kill sent"),
        "{pretty}"
    );

    let killed = serde_json::to_value(bare_kill_with(Some(false))).expect("serializes");
    assert_eq!(killed["oom"]["victim"]["exiting"], false, "{killed}");
    assert!(killed["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Out of memory: Killed process 901")));
    let unknown = serde_json::to_value(bare_kill()).expect("serializes");
    assert!(
        unknown["oom"]["victim"].get("exiting").is_none(),
        "unknown without the OOM killer's hooks: {unknown}"
    );
}

#[test]
fn pretty_lines_tell_what_happened_where() {
    let kill = kubernetes_kill().pretty();
    for part in [
        "2026-11-29T19:35:56.333562Z OOM KILL",
        // What filled the pod's limit, largest first: the stats' anon less
        // the victim's is the other processes' (275 877 888 - 267 386 880
        // bytes), the page cache is file less shmem.
        "python3[15579] killed in pod shop/worker-7c9d8f6b5-x2x9q (limit 512.0 MiB): \
         python3 anon 255.0 MiB, tmpfs/shmem 200.0 MiB, page cache 31.0 MiB, kernel 12.4 MiB, \
         3 other processes 8.1 MiB",
        "container 3f1a9c0e5b7d",
        "cmd python3 -m celery worker --broker-password=<redacted>",
        "by python3[15579]",
    ] {
        assert!(kill.contains(part), "{part:?} missing from {kill}");
    }
    assert!(!kill.contains('\n'), "one line");
    // Without what filled the limit, the victim's own size and the limit.
    let bare = serde_json::to_value(bare_kill()).expect("serializes");
    assert!(bare["oom"]["memcg"].get("stats").is_none(), "{bare}");
    let message = serde_json::to_value(kubernetes_kill()).expect("serializes")["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| kill.contains(m)),
        "the message is the sentence: {message}"
    );

    let failed = alloc_failed().pretty();
    assert!(
        failed.contains("ENOMEM   java[7001] mmap refused 1523x in 1000 ms, largest 64.0 MiB"),
        "{failed}"
    );
    let lost = events_lost().pretty();
    assert!(lost.contains("LOST     17 OOM event(s) lost"), "{lost}");
    let page = page_alloc_failed().pretty();
    assert!(!page.contains('\n'), "one line: {page}");
    let others = alloc_failed_in_other_processes().pretty();
    assert!(
        others.contains("ENOMEM   1014+ other processes of its cgroup mmap refused 99800x"),
        "{others}"
    );
}
