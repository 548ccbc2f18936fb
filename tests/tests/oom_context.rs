//! What the kernel says about an OOM beyond its tracepoint: the constraint,
//! the cgroup whose limit was hit, the failing allocation, the incident.
//! Read from the kernel log where no `oom_kill_process` hook exists.

use std::time::Duration;

use oom_e2e::{require_root, Collector, Hog, ScratchCgroup};

const MIB: u64 = 1024 * 1024;

/// The kernel prints an OOM's header and summary at most 10 times per 5 s;
/// wait out whatever earlier tests spent so this kill's lines are printed.
fn let_the_kernel_log_budget_recover() {
    std::thread::sleep(Duration::from_millis(5_100));
}

#[test]
fn a_limit_on_the_parent_is_named_as_the_oom_memcg() {
    if !require_root("a_limit_on_the_parent_is_named_as_the_oom_memcg") {
        return;
    }
    let parent = ScratchCgroup::new("nested", 48 * MIB);
    let _idle = parent.child("idle");
    let busy = parent.child("busy");
    let collector = Collector::start(&[]);
    let_the_kernel_log_budget_recover();
    let mut hog = Hog::start(&busy);
    hog.wait(Duration::from_secs(30));
    let event = collector.kill_of(hog.pid(), Duration::from_secs(10)).json;

    assert_eq!(event["oom"]["victim"]["memcg"]["path"], busy.path.as_str());
    assert_eq!(
        event["oom"]["memcg"]["path"],
        parent.path.as_str(),
        "the parent's limit was hit: {event}"
    );
    assert_eq!(event["oom"]["memcg"]["limit_bytes"], parent.limit_bytes);
    assert_eq!(event["oom"]["constraint"], "memcg");
    assert_eq!(event["oom"]["group_kill"], false);
    assert!(
        event["oom"]["incident"]["id"]
            .as_str()
            .is_some_and(|id| id.contains("-oom-")),
        "{event}"
    );
    let flags = event["oom"]["alloc"]["gfp_flags"]
        .as_array()
        .unwrap_or_else(|| panic!("gfp_flags: {event}"));
    assert!(
        flags.iter().all(|f| f
            .as_str()
            .is_some_and(|f| f.starts_with("GFP_") || f.starts_with("__GFP_"))),
        "kernel flag names: {flags:?}"
    );
    assert!(event["oom"]["alloc"]["order"].is_u64());
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("limit of {} hit", parent.path))),
        "{}",
        event["message"]
    );
    drop(hog);
    let (status, _) = collector.stop();
    assert!(status.success());
}
