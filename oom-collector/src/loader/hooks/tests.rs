//! The catalogue held to its own rules and to the compiled eBPF object.

use super::*;
use crate::{arch::syscall_entry, loader::EBPF_OBJECT};

#[test]
fn names_are_the_ones_probes_and_metrics_have_always_used() {
    let auto = LoadOptions::default();
    let names: Vec<String> = HOOKS.iter().map(|hook| hook.name(&auto)).collect();
    assert_eq!(
        names,
        [
            "tracepoint/oom/mark_victim",
            "tp_btf/mark_victim",
            "fentry or kprobe/oom_kill_process",
            "fentry or kprobe/__oom_kill_process",
            "tracepoint/sched/sched_process_exec",
            "raw_tracepoint/sched_process_fork",
            "tracepoint/sched/sched_process_exit",
            concat!("fexit/", syscall_entry!("mmap")),
            concat!("fexit/", syscall_entry!("mremap")),
            concat!("fexit/", syscall_entry!("brk")),
            "tracepoint/kmem/mm_page_alloc",
        ]
    );
    let tracepoint = LoadOptions {
        alloc_failures: AllocFailureHooks::Tracepoint,
        ..LoadOptions::default()
    };
    assert_eq!(MMAP.name(&tracepoint), "tracepoint/syscalls/sys_exit_mmap");
    let off = LoadOptions {
        alloc_failures: AllocFailureHooks::Off,
        ..LoadOptions::default()
    };
    assert_eq!(MMAP.name(&off), MMAP.name(&auto));
}

#[test]
fn a_hook_comes_after_the_hook_it_needs() {
    for (at, hook) in HOOKS.iter().enumerate() {
        if let Needs::Attached(needed) | Needs::SameWayAs(needed) = hook.needs {
            let needed_at = HOOKS.iter().position(|h| std::ptr::eq(*h, needed));
            assert!(
                needed_at.is_some_and(|n| n < at),
                "{} needs a hook listed after it",
                hook.name(&LoadOptions::default())
            );
        }
        if let Needs::SameWayAs(needed) = hook.needs {
            assert_eq!(hook.ways.len(), needed.ways.len());
        }
    }
}

#[test]
fn every_program_name_is_unique() {
    let mut names: Vec<&str> = HOOKS
        .iter()
        .flat_map(|hook| hook.programs())
        .map(|p| p.name)
        .collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "two entries name one program");
}

#[test]
fn exactly_the_object_s_programs_and_maps_are_in_the_catalogue() {
    let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the eBPF object");
    let mut in_object: Vec<&str> = object.programs.keys().map(String::as_str).collect();
    let mut in_catalogue: Vec<&str> = HOOKS
        .iter()
        .flat_map(|hook| hook.programs())
        .map(|p| p.name)
        .collect();
    in_object.sort_unstable();
    in_catalogue.sort_unstable();
    assert_eq!(in_catalogue, in_object, "programs");

    let mut maps: Vec<&str> = object
        .maps
        .keys()
        .map(String::as_str)
        // aya-log's buffer and the `.rodata`/`.bss` sections of globals.
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .filter(|name| !name.starts_with("AYA_"))
        .collect();
    let mut shared: Vec<&str> = shared_maps().iter().map(|m| m.name).collect();
    maps.sort_unstable();
    shared.sort_unstable();
    assert_eq!(shared, maps, "maps");
}
