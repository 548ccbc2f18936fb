//! Each kill line explains itself: what filled the limited cgroup at the
//! kill (`oom.memcg.stats`), who else held memory (`oom.memcg.tasks`),
//! how often the cgroup met its limit, and one sentence naming the
//! largest share. With real tmpfs files, real sibling processes and a
//! real nested limit, each run twice: with the kernel's own report from
//! `/dev/kmsg` (`kernel_log`), and with `/dev/kmsg` hidden, as in the
//! DaemonSet, from cgroupfs after the kill (`cgroupfs`). Root only; see
//! the crate's doc.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use oom_e2e::{
    child_cgroup, collector_bin, require_root, scratch_cgroup, Collector, Hog, ScratchCgroup,
    ScratchDir,
};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the collector is to take the report from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The kernel's own report, from `/dev/kmsg`.
    KernelLog,
    /// cgroupfs after the kill: the collector runs in a mount namespace
    /// whose `/dev/kmsg` is `/dev/null`, as a pod without it.
    Cgroupfs,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::KernelLog => "kernel_log",
            Source::Cgroupfs => "cgroupfs",
        }
    }

    fn collector(self) -> Collector {
        match self {
            Source::KernelLog => Collector::start(&[]),
            Source::Cgroupfs => {
                let mut command = Command::new("unshare");
                command.args([
                    "--mount",
                    "sh",
                    "-c",
                    "mount --bind /dev/null /dev/kmsg && exec \"$@\"",
                    "sh",
                ]);
                command.arg(collector_bin());
                Collector::spawn(command)
            }
        }
    }
}

/// Two tests of scenario `$scenario`, as root: from the kernel log, and
/// from cgroupfs.
macro_rules! from_both_sources {
    ($scenario:ident, $kernel_log:ident, $cgroupfs:ident) => {
        #[test]
        fn $kernel_log() {
            if require_root!() {
                $scenario(Source::KernelLog);
            }
        }

        #[test]
        fn $cgroupfs() {
            if require_root!() {
                $scenario(Source::Cgroupfs);
            }
        }
    };
}

/// A tmpfs of the test's own in a scratch directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _scratch: ScratchDir,
}

impl Tmpfs {
    /// Mounts one and writes a `mib` MiB file into it from inside
    /// `cgroup`, so that its pages are charged there.
    fn filled_from(cgroup: &ScratchCgroup, label: &str, mib: u64) -> Self {
        let scratch = ScratchDir::new(label);
        let dir = scratch.0.join("tmpfs");
        std::fs::create_dir_all(&dir).expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=128m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs: {status}");
        let tmpfs = Self {
            dir,
            _scratch: scratch,
        };
        let argv: Vec<String> = [
            "dd".to_owned(),
            "if=/dev/zero".to_owned(),
            format!("of={}", tmpfs.dir.join("data").display()),
            "bs=1M".to_owned(),
            format!("count={mib}"),
            "status=none".to_owned(),
        ]
        .to_vec();
        let (status, _) = Hog::exec(cgroup, &argv).wait(KILL_TIMEOUT);
        assert!(status.success(), "{argv:?} in {}: {status}", cgroup.path);
        tmpfs
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `enomem hold MIB` in `cgroup`, once it holds them.
struct Holder(Child);

impl Holder {
    fn start(cgroup: &ScratchCgroup, mib: u64) -> Self {
        let script = format!(
            "echo $$ > '{}' && exec \"$@\"",
            cgroup.procs_file().display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, "sh", env!("CARGO_BIN_EXE_enomem"), "hold"])
            .arg(mib.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("its word");
        assert_eq!(line.trim(), "held", "the holder holds {mib} MiB");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its resident memory now, in bytes.
    fn resident(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("its status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn number(event: &Value, pointer: &str) -> u64 {
    event
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {event}"))
}

/// A 64 MiB cgroup, 40 MiB of it a tmpfs file, and a process that
/// allocates until it is killed: the line blames the tmpfs, not the
/// victim, whose own memory is far below the limit.
fn tmpfs_fills_the_limit(source: Source) {
    let collector = source.collector();
    let cgroup = scratch_cgroup(&format!("tmpfs-{}", source.name()), 64 * MIB);
    let tmpfs = Tmpfs::filled_from(&cgroup, &format!("tmpfs-{}", source.name()), 40);
    let mut hog = Hog::start(&cgroup);
    let pid = hog.pid();
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(pid, EVENT_TIMEOUT);
    let event = &line.json;
    eprintln!("{}: {}", source.name(), line.text);

    assert_eq!(event["oom"]["memcg"]["path"], cgroup.path.as_str());
    assert_eq!(event["oom"]["memcg"]["stats"]["source"], source.name());
    let shmem = number(event, "/oom/memcg/stats/shmem_bytes");
    assert!(shmem >= 38 * MIB, "shmem {shmem} holds the 40 MiB file");
    let own = number(event, "/oom/victim/rss/anon_bytes");
    assert!(
        own < 30 * MIB,
        "the victim's own anon {own} is far under the limit"
    );
    let anon = number(event, "/oom/memcg/stats/anon_bytes");
    assert!(
        anon >= own * 9 / 10,
        "the cgroup's anon {anon} has the victim's {own} in it"
    );
    let message = event["message"].as_str().expect("a message");
    let start = format!(
        "tail[{pid}] killed in memory cgroup {} (limit 64.0 MiB): tmpfs/shmem ",
        cgroup.path
    );
    assert!(message.starts_with(&start), "{message}");
    // How the pressure built up (v1: the limit's fail count, which the
    // kernel may leave at 0 for charges it fails before counting, and the
    // kills, this one included).
    number(event, "/oom/memcg/events/failcnt");
    assert!(number(event, "/oom/memcg/events/oom_kill") >= 1, "{event}");
    assert_eq!(number(event, "/oom/memcg/tasks_count"), 1, "{event}");
    drop(tmpfs);
}

from_both_sources!(
    tmpfs_fills_the_limit,
    tmpfs_that_filled_the_limit_is_named_from_the_kernel_log,
    tmpfs_that_filled_the_limit_is_named_from_cgroupfs
);

/// Three processes in one cgroup: two hold 20 MiB each, one grows until
/// it is killed. All three are listed with what they held.
fn siblings_are_listed(source: Source) {
    let collector = source.collector();
    let cgroup = scratch_cgroup(&format!("siblings-{}", source.name()), 112 * MIB);
    let holders = [Holder::start(&cgroup, 20), Holder::start(&cgroup, 20)];
    let held: Vec<(u32, u64)> = holders.iter().map(|h| (h.pid(), h.resident())).collect();
    let mut hog = Hog::start(&cgroup);
    let pid = hog.pid();
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(pid, EVENT_TIMEOUT);
    let event = &line.json;
    eprintln!("{}: {}", source.name(), line.text);

    let tasks = event["oom"]["memcg"]["tasks"].as_array().expect("tasks");
    assert_eq!(number(event, "/oom/memcg/tasks_count"), 3, "{event}");
    assert_eq!(tasks.len(), 3, "{event}");
    assert_eq!(tasks[0]["pid"], pid, "the victim is the largest: {event}");
    let sizes: Vec<u64> = tasks
        .iter()
        .map(|t| t["rss_bytes"].as_u64().expect("rss"))
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {sizes:?}"
    );
    for (holder, resident) in held {
        let listed = tasks
            .iter()
            .find(|t| t["pid"] == holder)
            .unwrap_or_else(|| panic!("holder {holder} is not listed: {event}"));
        let rss = listed["rss_bytes"].as_u64().expect("rss");
        assert!(
            rss.abs_diff(resident) <= resident / 10,
            "holder {holder}: listed {rss}, held {resident}"
        );
        assert_eq!(listed["name"], "enomem");
    }
    let message = event["message"].as_str().expect("a message");
    assert!(message.contains(", 2 other processes "), "{message}");
    drop(holders);
}

from_both_sources!(
    siblings_are_listed,
    siblings_are_listed_from_the_kernel_log,
    siblings_are_listed_from_cgroupfs
);

/// A limit on the pod's cgroup, none on the container's: the stats are
/// the pod's, which holds a tmpfs file of another container, and the
/// victim's own cgroup is named as its own.
fn a_nested_limit_reports_the_limited_parent(source: Source) {
    let collector = source.collector();
    let pod = scratch_cgroup(&format!("nested-{}", source.name()), 64 * MIB);
    let writer = child_cgroup(&pod, "writer");
    let container = child_cgroup(&pod, "container");
    let tmpfs = Tmpfs::filled_from(&writer, &format!("nested-{}", source.name()), 24);
    let mut hog = Hog::start(&container);
    let pid = hog.pid();
    hog.wait(KILL_TIMEOUT);
    let line = collector.kill_of(pid, EVENT_TIMEOUT);
    let event = &line.json;
    eprintln!("{}: {}", source.name(), line.text);

    assert_eq!(event["oom"]["memcg"]["path"], pod.path.as_str());
    assert_eq!(
        event["oom"]["victim"]["memcg"]["path"],
        container.path.as_str()
    );
    assert_eq!(event["oom"]["memcg"]["stats"]["source"], source.name());
    let shmem = number(event, "/oom/memcg/stats/shmem_bytes");
    assert!(
        shmem >= 22 * MIB,
        "the sibling's tmpfs {shmem} is the pod's"
    );
    let message = event["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!("memory cgroup {} (limit 64.0 MiB)", pod.path)),
        "{message}"
    );
    drop(tmpfs);
    drop(container);
    drop(writer);
}

from_both_sources!(
    a_nested_limit_reports_the_limited_parent,
    a_nested_limit_reports_the_limited_parent_from_the_kernel_log,
    a_nested_limit_reports_the_limited_parent_from_cgroupfs
);
