//! The victim's whole command line: captured at exec in the kernel (or
//! from `/proc` for processes older than the collector), redacted by
//! default.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use oom_e2e::{
    require_program, require_root, scratch_cgroup, which, Collector, Hog, ScratchCgroup,
};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `tail -- /dev/zero --password=hunter2 --opt-00=value-00 ...`: tail reads
/// its files in order and never gets past /dev/zero, so the rest are just
/// arguments, over a kilobyte of them.
fn long_tail_argv() -> Vec<String> {
    let mut argv = vec![
        which("tail").display().to_string(),
        "--".to_owned(),
        "/dev/zero".to_owned(),
        "--password=hunter2".to_owned(),
    ];
    argv.extend((0..60).map(|i| format!("--opt-{i:02}=value-{i:02}")));
    argv
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn the_password_is_masked_by_default_kept_with_full_and_absent_with_off() {
    if !require_root!() {
        return;
    }
    // Three collectors see the same kill, each with its own --cmdline.
    let redacted = Collector::start(&[]);
    let full = Collector::start(&["--cmdline", "full"]);
    let off = Collector::start(&["--cmdline", "off"]);
    let cgroup = scratch_cgroup("cmdline", 32 * MIB);
    let argv = long_tail_argv();
    assert!(argv.join(" ").len() > 1024, "a long command line");
    let mut hog = Hog::exec(&cgroup, &argv);
    hog.wait(KILL_TIMEOUT);
    let pid = hog.pid();

    let full_event = full.kill_of(pid, EVENT_TIMEOUT).json;
    assert_eq!(strings(&full_event["process"]["args"]), argv);
    assert_eq!(full_event["process"]["executable"], argv[0].as_str());
    assert_eq!(
        full_event["process"]["command_line"],
        argv.join(" ").as_str()
    );
    assert_eq!(full_event["process"]["args_count"], argv.len());

    let redacted_event = redacted.kill_of(pid, EVENT_TIMEOUT).json;
    let mut expected = argv.clone();
    expected[3] = "--password=<redacted>".to_owned();
    assert_eq!(strings(&redacted_event["process"]["args"]), expected);
    let command_line = redacted_event["process"]["command_line"]
        .as_str()
        .expect("command_line");
    assert!(!command_line.contains("hunter2"), "{command_line}");
    assert!(
        command_line.contains("--opt-59=value-59"),
        "the rest is intact"
    );

    let off_event = off.kill_of(pid, EVENT_TIMEOUT).json;
    for field in ["args", "command_line", "executable", "args_count"] {
        assert!(
            off_event["process"].get(field).is_none(),
            "--cmdline off: no process.{field}"
        );
    }
    assert_eq!(off_event["process"]["name"], "tail", "the name stays");
}

#[test]
fn a_victim_gone_before_the_collector_looks_still_has_its_command_line() {
    if !require_root!() {
        return;
    }
    let collector = Collector::start(&["--cmdline", "full"]);
    // Stopped, the collector can read nothing: the hog execs, is killed and
    // reaped, and its /proc entry is gone when the collector wakes up.
    collector.signal(rustix::process::Signal::STOP);
    let cgroup = scratch_cgroup("gone", 32 * MIB);
    let argv = vec![
        which("tail").display().to_string(),
        "-n".to_owned(),
        "1".to_owned(),
        "/dev/zero".to_owned(),
    ];
    let mut hog = Hog::exec(&cgroup, &argv);
    hog.wait(KILL_TIMEOUT);
    let pid = hog.pid();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the victim is reaped before the collector runs again"
    );
    collector.signal(rustix::process::Signal::CONT);
    let event = collector.kill_of(pid, EVENT_TIMEOUT).json;
    assert_eq!(strings(&event["process"]["args"]), argv);
}

#[test]
fn a_process_older_than_the_collector_has_its_command_line_from_proc() {
    if !require_root!() {
        return;
    }
    let cgroup = scratch_cgroup("seeded", 32 * MIB);
    let fifo = std::env::temp_dir().join(format!("oom-e2e-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    // tail executes now, before the collector runs, and blocks on the FIFO.
    let argv = vec![
        which("tail").display().to_string(),
        fifo.display().to_string(),
    ];
    let mut hog = Hog::exec(&cgroup, &argv);
    std::thread::sleep(Duration::from_millis(200));

    let collector = Collector::start(&["--cmdline", "full"]);
    // Feed it an endless line from outside its cgroup.
    let mut feeder = Command::new("sh")
        .args(["-c", &format!("exec cat /dev/zero > '{}'", fifo.display())])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the feeder");
    hog.wait(KILL_TIMEOUT);
    let _ = feeder.kill();
    let _ = feeder.wait();
    let _ = std::fs::remove_file(&fifo);

    let event = collector.kill_of(hog.pid(), EVENT_TIMEOUT).json;
    assert_eq!(strings(&event["process"]["args"]), argv);
    assert_eq!(
        event["process"]["executable"],
        std::fs::canonicalize(&argv[0])
            .expect("tail's real path")
            .display()
            .to_string(),
        "from /proc/<pid>/exe, which resolves links"
    );
}

/// A Python master that forks a worker without exec, the way
/// multiprocessing, celery, gunicorn or php-fpm do; the worker allocates
/// until its memory cgroup's limit kills it, and the master prints its pid.
/// `argv[1]`: the pid the worker must get (0: any), reached by setting
/// `ns_last_pid` just before each fork, and retried while other processes
/// on the host take it first.
const FORKING_MASTER: &str = r#"
import os, sys
want = int(sys.argv[1])
for attempt in range(5000):
    if want:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(want - 1))
    pid = os.fork()
    if pid == 0:
        if want and os.getpid() != want:
            os._exit(0)
        hoard, chunk = [], 1 << 20
        while True:
            hoard.append(b"x" * chunk)
    if want and pid != want:
        os.waitpid(pid, 0)
        continue
    print(pid, flush=True)
    os.waitpid(pid, 0)
    sys.exit(0)
sys.exit("the worker never got pid %d" % want)
"#;

/// The master, running inside `cgroup`, and its worker's pid.
struct ForkingMaster {
    master: std::process::Child,
    worker: u32,
    /// The master's arguments as the kernel has them.
    args: Vec<String>,
}

impl ForkingMaster {
    fn start(
        cgroup: &ScratchCgroup,
        python: &std::path::Path,
        want_pid: u32,
        marker: &str,
    ) -> Self {
        use std::io::BufRead;
        let script = format!(
            "echo $$ > '{}' && exec \"$@\"",
            cgroup.procs_file().display()
        );
        let mut master = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(python)
            .args(["-c", FORKING_MASTER, &want_pid.to_string(), marker])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python master");
        let mut line = String::new();
        std::io::BufReader::new(master.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the worker's pid");
        let worker = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the master printed no worker pid: {line:?}"));
        let raw = std::fs::read(format!("/proc/{}/cmdline", master.id()))
            .expect("the master's /proc/<pid>/cmdline");
        let args: Vec<String> = raw
            .strip_suffix(&[0])
            .unwrap_or(&raw)
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        assert!(
            args.iter().any(|arg| arg == marker),
            "the master runs with its marker: {args:?}"
        );
        Self {
            master,
            worker,
            args,
        }
    }
}

impl Drop for ForkingMaster {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

#[test]
fn a_worker_forked_without_exec_has_its_masters_command_line() {
    if !require_root!() {
        return;
    }
    let Some(python) = require_program!("python3") else {
        return;
    };
    let collector = Collector::start(&["--cmdline", "full"]);
    let cgroup = scratch_cgroup("forked", 48 * MIB);
    let master = ForkingMaster::start(&cgroup, &python, 0, "--queue=forked-worker-marker");

    let event = collector.kill_of(master.worker, KILL_TIMEOUT).json;
    assert_eq!(
        strings(&event["process"]["args"]),
        master.args,
        "the worker is the master's program with the master's arguments"
    );
    assert_eq!(
        event["process"]["command_line"],
        master.args.join(" ").as_str()
    );
    assert_eq!(event["process"]["parent"]["pid"], master.master.id());
}

#[test]
fn a_reused_pid_never_shows_the_earlier_processs_arguments() {
    if !require_root!() {
        return;
    }
    let Some(python) = require_program!("python3") else {
        return;
    };
    let collector = Collector::start(&["--cmdline", "full"]);
    // The earlier process executes after the collector attached, so the
    // collector knows its arguments; then it ends and its pid is free.
    let marker = format!("earlier-argv-{}", std::process::id());
    // `cat - MARKER` reads its stdin first, which stays open and empty.
    let mut earlier = Command::new(which("cat"))
        .args(["-", &marker])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start cat");
    let reused = earlier.id();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        earlier.try_wait().expect("cat's state").is_none(),
        "cat still runs with its arguments"
    );
    earlier.kill().expect("end cat");
    earlier.wait().expect("reap cat");

    let cgroup = scratch_cgroup("reused", 48 * MIB);
    let master = ForkingMaster::start(&cgroup, &python, reused, "--queue=reusing-worker-marker");
    assert_eq!(master.worker, reused, "the worker took the earlier pid");

    let event = collector.kill_of(reused, KILL_TIMEOUT).json;
    let command_line = event["process"]["command_line"].as_str().unwrap_or("");
    assert!(
        !command_line.contains(&marker),
        "pid {reused} now belongs to a forked worker, not to cat: {command_line}"
    );
    assert_eq!(strings(&event["process"]["args"]), master.args);
}

#[test]
fn a_real_victims_secrets_never_reach_its_line_by_default() {
    if !require_root!() {
        return;
    }
    // tail reads /dev/zero first and never gets to the rest, which are
    // there to be seen: the command lines of the tools that carry them.
    let secrets = [
        "S3cretPw",
        "hunter2x",
        "B0bPass",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "p/ss@word",
        "AKIAIOSFODNN7EXAMPLE",
        "glpat-abcdefghij0123456789",
        "Tok3nValue",
    ];
    let argv: Vec<String> = [
        which("tail").display().to_string().as_str(),
        "--",
        "/dev/zero",
        "mysql",
        "-uroot",
        "-pS3cretPw",
        ";",
        "sshpass",
        "-p",
        "hunter2x",
        "ssh",
        "-p",
        "22",
        "db1",
        ";",
        "curl",
        "-u",
        "bob:B0bPass",
        "-H",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "amqp://app:p/ss@word@rabbit:5672/vhost",
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "glpat-abcdefghij0123456789",
        "https://example.com/hook?token=Tok3nValue&page=2",
    ]
    .map(str::to_owned)
    .to_vec();
    let redacted = Collector::start(&[]);
    let full = Collector::start(&["--cmdline", "full"]);
    let cgroup = scratch_cgroup("secrets", 32 * MIB);
    let mut hog = Hog::exec(&cgroup, &argv);
    hog.wait(KILL_TIMEOUT);

    let full_event = full.kill_of(hog.pid(), EVENT_TIMEOUT).json;
    assert_eq!(strings(&full_event["process"]["args"]), argv, "kept whole");
    let event = redacted.kill_of(hog.pid(), EVENT_TIMEOUT).json;
    let line = event.to_string();
    for secret in secrets {
        assert!(
            !line.contains(secret),
            "{secret:?} reached the line: {line}"
        );
    }
    let command_line = event["process"]["command_line"]
        .as_str()
        .expect("command_line");
    for readable in [
        "mysql -uroot",
        "ssh -p 22 db1",
        "curl -u bob:",
        "rabbit:5672/vhost",
        "page=2",
    ] {
        assert!(
            command_line.contains(readable),
            "{readable:?} stays readable: {command_line}"
        );
    }
}
