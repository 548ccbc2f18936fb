//! What the collector's output files may be: regular files it reaches
//! without following a symbolic link at the path, created readable by
//! owner and group only, also when rotation starts a new one. The real
//! binary against a real symlink, FIFO and files. Root only; see the
//! crate's doc.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use oom_e2e::{
    is_kill_of, poll_until, require_root, scratch_cgroup, Collector, Ending, Hog, ScratchDir,
};

const MIB: u64 = 1024 * 1024;
/// How long a refused output may take to end the collector: it is checked
/// before the kernel programs load.
const REFUSED_WITHIN: Duration = Duration::from_secs(10);

/// Runs the collector with `--output path` and returns its log once it
/// has exited, which it must do, unsuccessfully, within [`REFUSED_WITHIN`].
fn refused(path: &Path) -> String {
    let path_arg = path.to_str().expect("a UTF-8 path");
    let (status, stderr) = Ending::start(&["--output", path_arg]).wait(
        REFUSED_WITHIN,
        &format!("it should refuse --output {}", path.display()),
    );
    assert!(
        !status.success(),
        "refusing is a failure: {status}\n{stderr}"
    );
    stderr
}

/// Group may read, others nothing: 0640 or tighter.
fn assert_private(path: &Path) {
    let mode = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o027,
        0,
        "{} is {mode:o}: the group may read it at most",
        path.display()
    );
}

#[test]
fn a_symlink_at_the_output_path_is_refused_and_its_target_left_alone() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("output-symlink");
    let elsewhere = dir.0.join("elsewhere");
    fs::write(&elsewhere, "not the collector's\n").expect("create the target");
    let link = dir.0.join("events.ndjson");
    symlink(&elsewhere, &link).expect("symlink");
    let stderr = refused(&link);
    assert!(
        stderr.contains("is a symbolic link"),
        "the error says why:\n{stderr}"
    );
    assert_eq!(
        fs::read_to_string(&elsewhere).expect("read the target"),
        "not the collector's\n",
        "nothing written through the link"
    );
}

#[test]
fn a_fifo_at_the_output_path_is_refused_at_once_rather_than_waited_on() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("output-fifo");
    let fifo = dir.0.join("events.ndjson");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo: {made}");
    let stderr = refused(&fifo);
    assert!(
        stderr.contains("is a FIFO"),
        "the error says why:\n{stderr}"
    );
}

#[test]
fn output_files_and_those_rotation_starts_are_readable_by_owner_and_group_only() {
    if !require_root!() {
        return;
    }
    let dir = ScratchDir::new("output-mode");
    let file = dir.0.join("events.ndjson");
    // A byte a file: every line starts a new one.
    let collector = Collector::start(&[
        "--output",
        file.to_str().expect("a UTF-8 path"),
        "--output-max-bytes",
        "1",
        "--output-keep",
        "2",
    ]);
    assert_private(&file);
    let mut pids = Vec::new();
    for n in 0..2 {
        let cgroup = scratch_cgroup(&format!("output-mode-{n}"), 32 * MIB);
        let mut hog = Hog::start(&cgroup);
        hog.wait(Duration::from_secs(30));
        pids.push(hog.pid());
    }
    let files = || -> Vec<PathBuf> {
        fs::read_dir(&dir.0)
            .expect("list the directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect()
    };
    let holds = |path: &Path, pid: u32| {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .any(|json| is_kill_of(&json, pid))
    };
    let written_to = |pid: u32| files().into_iter().find(|path| holds(path, pid));
    let second = poll_until(
        Duration::from_secs(10),
        || {
            format!(
                "the second kill to be written; log:\n{}",
                collector.stderr()
            )
        },
        || written_to(pids[1]),
    );
    assert_ne!(
        written_to(pids[0]),
        Some(second),
        "each kill in a file of its own: rotation started a new one"
    );
    for path in files() {
        assert_private(&path);
    }
    let (status, _) = collector.stop();
    assert!(status.success(), "{status}");
}
