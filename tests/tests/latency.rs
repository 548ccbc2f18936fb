//! Latency that must not grow with the node. Root only; see the crate's doc.

use std::time::Duration;

use oom_e2e::{
    child_cgroup, poll_until, require_root, scratch_cgroup, Collector, Hog, ScratchCgroup,
};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// The first kill in a cgroup the collector has not seen is named without
/// a walk of every cgroup on the host: with 5,000 memory cgroups a walk
/// takes 100 ms and more on this project's CI machine, a lookup by the
/// cgroup's id well under a millisecond.
#[test]
fn a_new_cgroup_among_thousands_is_named_without_walking_them() {
    if !require_root!() {
        return;
    }
    const OTHERS: usize = 5_000;
    const LOOKUP_BUDGET: Duration = Duration::from_millis(20);
    let parent = scratch_cgroup("many", 64 * MIB);
    let others: Vec<ScratchCgroup> = (0..OTHERS)
        .map(|n| child_cgroup(&parent, &n.to_string()))
        .collect();
    let collector = Collector::start(&["--log-level", "info,oom_collector::latency=debug"]);
    // Made after the collector started: new to it.
    let cgroup = scratch_cgroup("new-among-many", 8 * MIB);
    let mut hog = Hog::start(&cgroup);
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(hog.pid(), KILL_TIMEOUT);
    assert_eq!(
        line.json["oom"]["victim"]["memcg"]["path"], cgroup.path,
        "the new cgroup is named"
    );

    // The collector's timing of this kill: decoded, then enriched.
    let needle = format!("kill timed pid={}", hog.pid());
    let timing = poll_until(
        KILL_TIMEOUT,
        || format!("the kill's timing; the log:\n{}", collector.stderr()),
        || {
            let stderr = collector.stderr();
            let line = stderr.lines().find(|line| line.contains(&needle));
            line.map(str::to_owned)
        },
    );
    let field = |name: &str| -> u64 {
        timing
            .split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {timing:?}"))
    };
    let lookup = Duration::from_nanos(field("enriched_ns") - field("decoded_ns"));
    assert!(
        lookup < LOOKUP_BUDGET,
        "enriching the first kill in a new cgroup among {OTHERS} took {lookup:?}: \
         was every cgroup walked?"
    );
    drop(collector);
    drop(others);
}
