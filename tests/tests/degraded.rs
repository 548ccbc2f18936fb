//! A kernel or host without something the collector uses: it says what is
//! missing and what still works. Each case hides the thing in a private
//! mount namespace (`unshare`), so the host is untouched.

use std::{process::Command, time::Duration};

use oom_e2e::{collector_bin, require_root, scratch_cgroup, Collector, Hog};

/// `oom-collector ARGS` in a private mount namespace, after `setup`.
fn in_private_mounts(setup: &str, args: &str) -> Command {
    let mut command = Command::new("unshare");
    command.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("{setup}; exec '{}' {args}", collector_bin().display()),
    ]);
    command
}

#[test]
fn without_tracefs_it_says_how_to_mount_it() {
    if !require_root!() {
        return;
    }
    let output = in_private_mounts(
        // debugfs too: where it is mounted, tracefs is mounted again
        // automatically below it at the first look.
        "umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         umount /sys/kernel/tracing",
        "",
    )
    .output()
    .expect("run unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tracefs is not mounted"), "{stderr}");
    assert!(
        stderr.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{stderr}"
    );
}

#[test]
fn without_btf_kills_are_still_reported_from_the_tracepoint() {
    if !require_root!() {
        return;
    }
    let hide_btf = "mount --bind /dev/null /sys/kernel/btf/vmlinux";
    let probes = in_private_mounts(hide_btf, "probes")
        .output()
        .expect("run unshare");
    let report = String::from_utf8_lossy(&probes.stdout);
    assert!(probes.status.success(), "{report}");
    let btf_line = report
        .lines()
        .find(|l| l.starts_with("tp_btf/mark_victim"))
        .unwrap_or_else(|| panic!("no tp_btf line:\n{report}"));
    assert!(
        btf_line.contains("unavailable") && btf_line.contains("no BTF"),
        "{btf_line}"
    );

    let collector = Collector::spawn(in_private_mounts(hide_btf, ""));
    let cgroup = scratch_cgroup("no-btf", 32 * 1024 * 1024);
    let mut hog = Hog::start(&cgroup);
    hog.wait(Duration::from_secs(30));
    let line = collector.kill_of(hog.pid(), Duration::from_secs(10));
    assert_eq!(line.json["process"]["name"], "tail");
    assert!(line.json["oom"]["victim"]["rss"]["anon_bytes"]
        .as_u64()
        .is_some());
    assert!(
        line.json["oom"]["victim"].get("memcg").is_none(),
        "without BTF the victim's cgroup is unknown, so it is left out: {}",
        line.json
    );
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}
