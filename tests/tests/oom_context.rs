//! What the kernel says about an OOM beyond its tracepoint: the constraint,
//! the cgroup whose limit was hit, the failing allocation, the incident.
//! Read from the kernel log where no `oom_kill_process` hook exists.

use std::time::Duration;

use oom_e2e::{child_cgroup, require_root, scratch_cgroup, Collector, Hog};

const MIB: u64 = 1024 * 1024;

/// The kernel prints an OOM's header and summary at most 10 times per 5 s;
/// wait out whatever earlier tests spent so this kill's lines are printed.
fn let_the_kernel_log_budget_recover() {
    std::thread::sleep(Duration::from_millis(5_100));
}

#[test]
fn a_limit_on_the_parent_is_named_as_the_oom_memcg() {
    if !require_root!() {
        return;
    }
    let parent = scratch_cgroup("nested", 48 * MIB);
    let _idle = child_cgroup(&parent, "idle");
    let busy = child_cgroup(&parent, "busy");
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
        !flags.is_empty()
            && flags.iter().all(|f| f
                .as_str()
                .is_some_and(|f| f.starts_with("GFP_") || f.starts_with("__GFP_"))),
        "kernel flag names: {flags:?}"
    );
    assert!(event["oom"]["alloc"]["order"].is_u64());
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("in memory cgroup {} (limit ", parent.path))),
        "{}",
        event["message"]
    );
    drop(hog);
    let (status, _) = collector.stop();
    assert!(status.success());
}

/// Logs `line` in the kernel log the way any root process can: as user
/// space, whatever priority it asks for.
fn forge_kernel_log_line(line: &str) {
    use std::io::Write;
    let mut kmsg = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing");
    // With its newline: the kernel holds a line without one open for a
    // continuation, and readers see it only once something follows.
    kmsg.write_all(format!("<3>{line}\n").as_bytes())
        .expect("write to /dev/kmsg");
}

#[test]
fn lines_forged_into_the_kernel_log_never_supply_a_kills_context() {
    if !require_root!() {
        return;
    }
    const FORGED_MEMCG: &str = "/forged-by-a-tenant";
    let forge_header = || {
        forge_kernel_log_line(
            "tail invoked oom-killer: gfp_mask=0x0(GFP_FORGED), order=9, oom_score_adj=0",
        );
        forge_kernel_log_line(&format!(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,\
             oom_memcg={FORGED_MEMCG},task_memcg={FORGED_MEMCG},task=tail,pid=1,uid=0"
        ));
    };
    let cgroup = scratch_cgroup("forged", 32 * MIB);
    let collector = Collector::start(&[]);
    let_the_kernel_log_budget_recover();
    // Stopped, the collector reads the log only after every line is in:
    // forged lines just before the kill, and after it, claiming it.
    collector.signal(rustix::process::Signal::STOP);
    forge_header();
    let mut hog = Hog::start(&cgroup);
    hog.wait(Duration::from_secs(30));
    let pid = hog.pid();
    forge_header();
    forge_kernel_log_line(&format!(
        "Memory cgroup out of memory: Killed process {pid} (tail) total-vm:1kB, anon-rss:1kB"
    ));
    collector.signal(rustix::process::Signal::CONT);
    let event = collector.kill_of(pid, Duration::from_secs(10)).json;

    assert_eq!(
        event["oom"]["memcg"]["path"],
        cgroup.path.as_str(),
        "the limit the kernel says was hit: {event}"
    );
    assert_eq!(event["oom"]["constraint"], "memcg", "{event}");
    let flags = event["oom"]["alloc"]["gfp_flags"].to_string();
    assert!(!flags.contains("GFP_FORGED"), "{event}");
    assert_ne!(event["oom"]["alloc"]["order"], 9, "{event}");
    drop(hog);
    let (status, _) = collector.stop();
    assert!(status.success());
}
