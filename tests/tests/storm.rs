//! A node in trouble: hundreds of OOM kills at once, each reported once and
//! attributed to its own cgroup. Root only; see the crate's doc.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    os::unix::process::ExitStatusExt,
    thread,
    time::{Duration, Instant},
};

use oom_e2e::{require_root, scratch_cgroup, Collector, Hog, ScratchCgroup};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn two_hundred_kills_in_twenty_cgroups_are_two_hundred_lines() {
    if !require_root!() {
        return;
    }
    const CGROUPS: usize = 20;
    const KILLS_EACH: usize = 10;
    const KILLS: usize = CGROUPS * KILLS_EACH;
    let collector = Collector::start(&[]);
    let cgroups: Vec<ScratchCgroup> = (0..CGROUPS)
        .map(|i| scratch_cgroup(&format!("storm-{i}"), 8 * MIB))
        .collect();

    // Every cgroup kills one hog after another, all cgroups at once.
    let started = Instant::now();
    let victims: BTreeMap<u32, String> = thread::scope(|scope| {
        let workers: Vec<_> = cgroups
            .iter()
            .map(|cgroup| {
                scope.spawn(move || {
                    (0..KILLS_EACH)
                        .map(|_| {
                            let mut hog = Hog::start(cgroup);
                            let (status, _) = hog.wait(KILL_TIMEOUT);
                            assert_eq!(
                                status.signal(),
                                Some(9),
                                "the hog in {} must be OOM-killed: {status}",
                                cgroup.path
                            );
                            (hog.pid(), cgroup.path.clone())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a storm worker"))
            .collect()
    });
    let storm = started.elapsed();
    assert_eq!(victims.len(), KILLS, "{KILLS} distinct victims");
    assert!(
        storm < Duration::from_secs(30),
        "the storm took {storm:?}; this test wants {KILLS} kills within 30 s"
    );

    let paths: BTreeSet<&str> = cgroups.iter().map(|c| c.path.as_str()).collect();
    let in_storm = |json: &serde_json::Value| {
        json["event"]["action"] == "oom_kill"
            && json["oom"]["victim"]["memcg"]["path"]
                .as_str()
                .is_some_and(|p| paths.contains(p))
    };
    let seen = Cell::new(0);
    let mut lines = collector.lines_until(Duration::from_secs(20), |json| {
        if in_storm(json) {
            seen.set(seen.get() + 1);
        }
        seen.get() == KILLS
    });
    // Anything more (a duplicate) would arrive right behind.
    thread::sleep(Duration::from_millis(500));
    let (status, rest) = collector.stop();
    assert!(status.success(), "{status}");
    lines.extend(rest);

    let kills: Vec<&serde_json::Value> = lines
        .iter()
        .map(|l| &l.json)
        .filter(|json| in_storm(json))
        .collect();
    eprintln!(
        "figures: {KILLS} kills in {CGROUPS} cgroups in {storm:.1?}, {} lines",
        kills.len()
    );
    assert_eq!(kills.len(), KILLS, "one line per kill, no more, no less");
    let ids: BTreeSet<&str> = kills
        .iter()
        .map(|k| k["event"]["id"].as_str().expect("event.id"))
        .collect();
    assert_eq!(ids.len(), KILLS, "no event.id twice");
    for kill in kills {
        let pid = kill["process"]["pid"].as_u64().expect("process.pid") as u32;
        let expected = victims
            .get(&pid)
            .unwrap_or_else(|| panic!("a kill of a process the storm did not start: {kill}"));
        assert_eq!(
            kill["oom"]["victim"]["memcg"]["path"], *expected,
            "each kill in its own cgroup: {kill}"
        );
    }
}
