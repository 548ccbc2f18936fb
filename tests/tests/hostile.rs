//! Names and paths the collector does not control: a process name with a
//! newline and bytes that are not UTF-8, a command line longer than what
//! is kept, a cgroup directory with spaces. Each kill is still one valid
//! JSON line (the `Collector` helper parses every line it reads, and fails
//! on one that is not). Root only; see the crate's doc.

use std::time::Duration;

use oom_e2e::{require_root, Collector, Hog, ScratchCgroup};

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_hostile_name_in_a_cgroup_with_spaces_is_one_valid_line() {
    if !require_root("a_hostile_name_in_a_cgroup_with_spaces_is_one_valid_line") {
        return;
    }
    let collector = Collector::start(&[]);
    let cgroup = ScratchCgroup::new("with spaces", 16 * MIB);
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
    if !require_root("a_command_line_longer_than_kept_is_cut_and_flagged") {
        return;
    }
    let collector = Collector::start(&["--cmdline", "full"]);
    let cgroup = ScratchCgroup::new("long-args", 16 * MIB);
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
    assert!(
        json["process"].get("args_count").is_none(),
        "a count of cut arguments would be wrong, so there is none: {json}"
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}
