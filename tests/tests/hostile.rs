//! Names and paths the collector does not control: a process name with a
//! newline and bytes that are not UTF-8, a command line longer than what
//! is kept, a cgroup directory with spaces. Each kill is still one valid
//! JSON line (the `Collector` helper parses every line it reads, and fails
//! on one that is not). Root only; see the crate's doc.

use std::time::Duration;

use oom_e2e::{child_cgroup, require_root, scratch_cgroup, Collector, Hog};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_hostile_name_in_a_cgroup_with_spaces_is_one_valid_line() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&[]);
    let cgroup = scratch_cgroup("with spaces", 16 * MIB);
    assert!(cgroup.path.contains(' '));
    // The shell renames itself (a newline, then 0xff, which is not UTF-8)
    // and then grows by reading `yes` into a variable until killed.
    let script = format!(
        "echo $$ > '{}' && printf 'ev\\nil\\377name' > /proc/$$/comm && x=$(yes)",
        cgroup.procs_file().display()
    );
    let mut hog = Hog::exec(&cgroup, &["sh".into(), "-c".into(), script]);
    hog.wait(KILL_TIMEOUT);
    let line = collector.next_line(EVENT_TIMEOUT, |json| {
        json["event"]["action"] == "oom_kill"
            && json["oom"]["victim"]["memcg"]["path"] == cgroup.path.as_str()
    });
    let json = &line.json;
    assert_eq!(
        json["process"]["name"], "ev\nil\u{fffd}name",
        "the kernel's comm, kept lossily: {json}"
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.contains('\n')),
        "the message stays on one line: {json}"
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_command_line_longer_than_kept_is_cut_and_flagged() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&["--cmdline", "full"]);
    let cgroup = scratch_cgroup("long-args", 16 * MIB);
    // `tail /dev/zero` never gets past its first file; the other 4 KiB of
    // arguments are there to be seen.
    let long: Vec<String> = (0..64)
        .map(|i| format!("{i:02}{}", "x".repeat(62)))
        .collect();
    let mut argv = vec!["tail".to_owned(), "/dev/zero".to_owned()];
    argv.extend(long);
    let mut hog = Hog::exec(&cgroup, &argv);
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(hog.pid(), EVENT_TIMEOUT);
    let json = &line.json;
    let args: Vec<&str> = json["process"]["args"]
        .as_array()
        .unwrap_or_else(|| panic!("process.args: {json}"))
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    assert_eq!(args[..2], ["tail", "/dev/zero"], "{json}");
    assert!(
        args.len() < 66,
        "the arguments are cut at what the kernel side keeps: {json}"
    );
    // What is kept is the start of what was given: whole arguments, then
    // the last one either whole or masked (it may be half a secret).
    let (last, whole) = args.split_last().expect("arguments");
    assert_eq!(
        whole,
        &argv[..whole.len()],
        "a prefix of the arguments: {json}"
    );
    let given = &argv[whole.len()];
    assert!(
        given.starts_with(last) || *last == "<redacted>",
        "the last kept argument {last:?} is the start of {given:?} or masked"
    );
    assert!(
        json["process"].get("args_count").is_none(),
        "a count of cut arguments would be wrong, so there is none: {json}"
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_tenant_naming_its_cgroups_like_another_pods_cannot_credit_its_kills_to_it() {
    if !require_root!() {
        return;
    }
    const POD: &str = "6b3c2a1e-4f5d-4c2b-9a8e-1f2e3d4c5b6a";
    const CONTAINER: &str = "3f1a9c0e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a";
    const OTHER_POD: &str = "11111111-2222-3333-4444-555555555555";
    const OTHER_CONTAINER: &str =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let collector = Collector::start(&[]);
    // The kubelet's and containerd's cgroups, with the systemd driver; below
    // the container's own, cgroups the tenant made, named like another pod's.
    let top = scratch_cgroup("tenant", 32 * MIB);
    let pod = child_cgroup(
        &top,
        &format!("kubepods-burstable-pod{}.slice", POD.replace('-', "_")),
    );
    let container = child_cgroup(&pod, &format!("cri-containerd-{CONTAINER}.scope"));
    let other_pod = child_cgroup(
        &container,
        &format!(
            "kubepods-besteffort-pod{}.slice",
            OTHER_POD.replace('-', "_")
        ),
    );
    let other_container = child_cgroup(
        &other_pod,
        &format!("cri-containerd-{OTHER_CONTAINER}.scope"),
    );
    let mut hog = Hog::start(&other_container);
    hog.wait(KILL_TIMEOUT);
    let json = collector.kill_of(hog.pid(), EVENT_TIMEOUT).json;
    assert_eq!(
        json["oom"]["victim"]["memcg"]["path"],
        other_container.path.as_str(),
        "{json}"
    );
    assert_eq!(
        json["kubernetes"]["pod"]["uid"], POD,
        "the pod whose cgroup holds the tenant's: {json}"
    );
    assert_eq!(json["container"]["id"], CONTAINER, "{json}");
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}
