//! The real collector on Debian's 5.10, 6.1 and 6.12 kernels, in QEMU
//! guests: what this machine's kernel (6.18, cgroup v1 memory, no kprobes)
//! cannot show. The same kernels' arm64 builds run the same scenarios on
//! an emulated arm64 machine with the arm64 collector: the image's, where
//! `OOM_COLLECTOR_IMAGE` names the image archive, else the cross-built one.
//!
//! One boot per kernel runs every scenario (a boot costs seconds under
//! TCG) and prints each one's output as a section; each scenario is its own
//! test on that output, so a failure names the kernel and the scenario:
//!
//! - `probes`: `oom-collector probes`;
//! - `group_kill`: three hogs in one cgroup v2 with `memory.oom.group=1`,
//!   killed in one OOM, as the collector writes them to `--output`;
//! - `alloc_failures`: real `mmap` and `brk` failures counted exactly
//!   through the default (fexit) hooks, or through `--alloc-failures
//!   tracepoint` where the kernel has no fexit for them, and kernel
//!   page-allocation failures while the huge page pool is filled beyond
//!   the guest's memory;
//! - `memcg_kill`: a hog OOM-killed at a 48 MiB `memory.max`;
//! - `manifest_capabilities`: the same with exactly the DaemonSet's
//!   capabilities (read from its manifest) under a container runtime's
//!   RLIMIT_MEMLOCK, and without CAP_SYS_RESOURCE, which kernels before
//!   5.11 need;
//! - `two_kills`: two hogs at once, each in a limited cgroup of its own;
//! - `nested_limit`: a hog in a child of a cgroup limited at 48 MiB;
//! - `no_btf`: a kill seen by a collector without BTF (`/dev/null` mounted
//!   over `/sys/kernel/btf/vmlinux`);
//! - `no_tracefs`: the collector's words when tracefs is not mounted;
//! - `explain`: what filled the limit: a 64 MiB cgroup 40 MiB of it a
//!   tmpfs file, and a cgroup where two processes hold 20 MiB each beside
//!   a hog, with `memory.events` and `memory.pressure` (booted `psi=1`);
//! - `global_oom`: a hog in the root cgroup running the guest out of
//!   memory beside two cgroups holding 150 and 60 MiB, with the collector
//!   shielded (`oom_score_adj` -1000): the node's largest cgroups listed;
//! - `selftest`: `oom-collector selftest` (on cgroup v2 there).
//!
//! Without QEMU, busybox or the kernels (no network), the tests skip with
//! the reason outside CI and fail under `CI=true`.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use oom_e2e::{
    collector_bin,
    image::OciArchive,
    qemu::{foreign_root, Arch, Guest, QemuError, Series},
};
use serde_json::Value;

/// Runs in the guest, as root. Prints one section per step:
/// `=== <name> status=<exit status> bytes=<n> ===\n<n bytes>\n`.
const GUEST_SCRIPT: &str = include_str!("qemu_guest.sh");

/// The guest's timeout: a boot with every scenario takes 50-75 s here.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

struct Section {
    status: i32,
    body: String,
}

struct Boot {
    release: String,
    sections: HashMap<String, Section>,
}

impl Boot {
    fn section(&self, name: &str) -> &Section {
        self.sections.get(name).unwrap_or_else(|| {
            panic!(
                "the {} guest printed no {name:?} section (it has {:?})",
                self.release,
                self.sections.keys().collect::<BTreeSet<_>>()
            )
        })
    }

    /// The kernel's OOM lines, for failure messages.
    fn oom_log(&self) -> String {
        self.section("dmesg")
            .body
            .lines()
            .filter(|l| {
                ["oom", "Killed process", "Tasks in", "Memory cgroup"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

enum Outcome {
    Booted(Boot),
    /// QEMU, busybox or the kernel cannot be had here.
    Unavailable(String),
    Failed(String),
}

/// The boot of `series`, shared by its tests; `None` when the test should
/// skip.
fn guest(series: Series, test: &str) -> Option<&'static Boot> {
    const EVERY: usize = Series::ALL.len() + Series::ARM64.len();
    static BOOTS: [OnceLock<Outcome>; EVERY] = [const { OnceLock::new() }; EVERY];
    let index = Series::ALL
        .iter()
        .chain(&Series::ARM64)
        .position(|s| *s == series)
        .expect("a known series");
    match BOOTS[index].get_or_init(|| boot(series)) {
        Outcome::Booted(boot) => Some(boot),
        Outcome::Unavailable(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {why}; CI=true, so this fails instead of skipping");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
        Outcome::Failed(why) => panic!("{test}: {why}"),
    }
}

fn boot(series: Series) -> Outcome {
    let failure = |e: QemuError| {
        if e.is_unavailable() {
            Outcome::Unavailable(e.to_string())
        } else {
            Outcome::Failed(e.to_string())
        }
    };
    // QEMU and busybox first: no download for a machine that cannot boot.
    let arch = series.arch();
    // The image's own arm64 binary where the test has the image: what an
    // arm64 node pulls.
    let image = match std::env::var_os("OOM_COLLECTOR_IMAGE") {
        Some(archive) if arch == Arch::Arm64 => {
            match OciArchive::unpack(Path::new(&archive), &format!("qemu-{}", series.name())) {
                Ok(image) => Some(image),
                Err(e) => return Outcome::Failed(format!("the image archive: {e}")),
            }
        }
        _ => None,
    };
    let (collector, enomem) = match (arch, &image) {
        (Arch::Amd64, _) => (collector_bin(), PathBuf::from(env!("CARGO_BIN_EXE_enomem"))),
        (Arch::Arm64, image) => {
            let collector = match image {
                Some(image) => match image.binary(arch.debian()) {
                    Ok(binary) => Some(binary),
                    Err(e) => return Outcome::Failed(format!("the image archive: {e}")),
                },
                None => foreign_bin("OOM_COLLECTOR_BIN_ARM64", "oom-collector"),
            };
            match (collector, foreign_bin("OOM_E2E_ENOMEM_ARM64", "enomem")) {
                (Some(collector), Some(enomem)) => (collector, enomem),
                _ => {
                    return Outcome::Unavailable(
                        "no arm64 build of oom-collector and enomem: `cargo xtask vm-test \
                         --arch arm64` builds them"
                            .into(),
                    )
                }
            }
        }
    };
    let guest = match Guest::of(arch)
        .and_then(|g| g.program("/usr/bin/oom-collector", &collector))
        .and_then(|g| g.program("/usr/bin/enomem", &enomem))
        .and_then(|g| match arch {
            Arch::Amd64 => g.program("/usr/bin/setpriv", &oom_e2e::which("setpriv")),
            // util-linux's, as on amd64, with its libraries.
            Arch::Arm64 => foreign_root(arch, &["util-linux", "libcap-ng0", "libc6"])
                .and_then(|root| g.foreign_program("/usr/bin/setpriv", &root, "/usr/bin/setpriv")),
        }) {
        // One vCPU: with two, a 5.10 guest under TCG was seen to lock up in
        // kernel code being live-patched by the other CPU (soft lockups in
        // kfree at boot).
        // An emulated arm64 CPU runs the same scenarios some 60% slower.
        Ok(guest) => guest.memory_mib(512).cpus(1).timeout(match arch {
            Arch::Amd64 => GUEST_TIMEOUT,
            Arch::Arm64 => GUEST_TIMEOUT * 2,
        }),
        Err(e) => return failure(e),
    };
    let fetching = Instant::now();
    let kernel = match series.fetch() {
        Ok(kernel) => kernel,
        Err(e) => return failure(e),
    };
    let fetched = fetching.elapsed();
    let script = format!("MANIFEST_CAPS={}\n{GUEST_SCRIPT}", manifest_capabilities());
    let run = match guest.run(&kernel, &script) {
        Ok(run) => run,
        Err(e) => return failure(e),
    };
    eprintln!(
        "{} guest ({}): kernel ready in {fetched:.1?}, boot and scenarios {:.1?}",
        kernel.release, kernel.package, run.elapsed
    );
    if run.status != 0 {
        let lines: Vec<&str> = run.console.lines().collect();
        return Outcome::Failed(format!(
            "the {} guest's script exited {}; its console ended with:\n{}",
            kernel.release,
            run.status,
            lines[lines.len().saturating_sub(100)..].join("\n")
        ));
    }
    match parse_sections(&run.stdout) {
        Ok(sections) => Outcome::Booted(Boot {
            release: kernel.release,
            sections,
        }),
        Err(e) => Outcome::Failed(format!(
            "the {} guest's output does not parse: {e}",
            kernel.release
        )),
    }
}

/// An arm64 build for the guests: `$variable`, else cargo's place for it.
fn foreign_bin(variable: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/aarch64-unknown-linux-gnu/release")
                .join(name)
        });
    path.is_file().then_some(path)
}

fn parse_sections(mut out: &[u8]) -> Result<HashMap<String, Section>, String> {
    let mut sections = HashMap::new();
    while !out.is_empty() {
        let end = out
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("a header without its newline")?;
        let header = String::from_utf8_lossy(&out[..end]).into_owned();
        let fields: Vec<&str> = header
            .strip_prefix("=== ")
            .and_then(|h| h.strip_suffix(" ==="))
            .ok_or_else(|| format!("not a section header: {header:?}"))?
            .split(' ')
            .collect();
        let [name, status, bytes] = fields[..] else {
            return Err(format!("not a section header: {header:?}"));
        };
        let number = |field: &str, key: &str| -> Result<i64, String> {
            field
                .strip_prefix(key)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("no {key} in {header:?}"))
        };
        let status = number(status, "status=")?;
        let bytes = number(bytes, "bytes=")? as usize;
        let body = out
            .get(end + 1..end + 1 + bytes)
            .ok_or_else(|| format!("section {name} is cut short"))?;
        if out.get(end + 1 + bytes) != Some(&b'\n') {
            return Err(format!("section {name} is not followed by its newline"));
        }
        sections.insert(
            name.to_owned(),
            Section {
                status: status as i32,
                body: String::from_utf8_lossy(body).into_owned(),
            },
        );
        out = &out[end + 2 + bytes..];
    }
    Ok(sections)
}

/// `probes` as (hook, state) pairs. Each hook is a line `<hook> <state>`
/// closed by an indented `provides ...` line; a state may span many lines
/// (a verifier log).
fn hooks(probes: &str) -> Vec<(String, Vec<&str>)> {
    let mut hooks = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in probes.lines() {
        if line.starts_with(' ') && line.trim_start().starts_with("provides ") {
            if let Some((first, rest)) = block.split_first() {
                // The hook is padded to 30 columns and may hold spaces
                // ("fentry or kprobe/oom_kill_process").
                let (hook, state) = first
                    .strip_suffix(" active")
                    .map(|hook| (hook, "active"))
                    .or_else(|| first.split_once(" unavailable"))
                    .map(|(hook, _)| (hook.trim(), first[hook.len()..].trim()))
                    .unwrap_or_else(|| first.split_once(' ').unwrap_or((first, "")));
                let mut state = vec![state.trim()];
                state.extend_from_slice(rest);
                hooks.push((hook.to_owned(), state));
            }
            block.clear();
        } else {
            block.push(line);
        }
    }
    hooks
}

/// The state `probes` shows for `hook` (`active`, `unavailable: ...`); of a
/// long one (a verifier log) its first and last lines.
fn hook_state(probes: &str, hook: &str) -> String {
    let Some((_, state)) = hooks(probes).into_iter().find(|(h, _)| h == hook) else {
        return format!("(no line for {hook})");
    };
    const HEAD: usize = 3;
    const TAIL: usize = 8;
    if state.len() <= HEAD + TAIL {
        state.join("\n")
    } else {
        format!(
            "{}\n... ({} lines in all) ...\n{}",
            state[..HEAD].join("\n"),
            state.len(),
            state[state.len() - TAIL..].join("\n")
        )
    }
}

fn check_probes(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let probes = boot.section("probes");
    eprintln!("{} probes:\n{}", boot.release, summary(&probes.body));
    assert_eq!(
        probes.status, 0,
        "`oom-collector probes` exited {} on {}:\n{}",
        probes.status, boot.release, probes.body
    );
    let mark_victim = hook_state(&probes.body, "tracepoint/oom/mark_victim");
    assert!(
        mark_victim == "active",
        "tracepoint/oom/mark_victim on {}: {mark_victim}",
        boot.release
    );

    // What `probes` promises, the collector running on the same kernel
    // must deliver.
    let run_log = plain(&boot.section("collector_log").body);
    for (hook, state) in hooks(&probes.body) {
        if state[0] == "active" {
            assert!(
                run_log.contains(&format!("hook active hook=\"{hook}\"")),
                "`probes` says {hook} is active on {}, but the collector did not attach it:\n{}",
                boot.release,
                warnings(&run_log)
            );
        }
    }

    // Whether the kernel's mark_victim carries the victim's task: the
    // v6.8 change that added comm, rss and the rest to the record also
    // changed the tracepoint's arguments from (int pid) to (struct
    // task_struct *task, uid_t uid), and was backported to 5.10 and 6.1.
    // bpftool on these kernels' BTF: `btf_trace_mark_victim` is
    // `void (*)(void *, struct task_struct *, uid_t)` on 5.10.0-43
    // (5.10.251), 6.1.0-57 and 6.12.117, and `void (*)(void *, int)` on
    // 5.10.0-30 (5.10.218), whose record has only the pid.
    let format = &boot.section("mark_victim_format").body;
    let passes_task = format.contains(" comm;");
    let task_hook = hook_state(&probes.body, "tp_btf/mark_victim");
    if passes_task {
        assert!(
            task_hook == "active",
            "tp_btf/mark_victim on {}: the kernel passes the victim's task_struct, so the \
             program must load and attach; `probes` says:\n{task_hook}",
            boot.release
        );
    } else {
        assert!(
            task_hook.contains("passes only the pid"),
            "tp_btf/mark_victim on {}, whose mark_victim passes only the pid: {task_hook}",
            boot.release
        );
    }
}

/// `probes` with each hook's state cut to its first line.
fn summary(probes: &str) -> String {
    hooks(probes)
        .iter()
        .map(|(hook, state)| format!("  {hook:<36} {}", state[0]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_group_kill(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let hogs = &boot.section("hogs").body;
    let log = &boot.section("collector_log").body;
    let pids: BTreeSet<u64> = hogs
        .lines()
        .filter_map(|line| line.strip_prefix("hog "))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "{}: the three hogs did not run (collector log:\n{log})\n{hogs}",
        boot.release
    );
    assert!(
        hogs.lines()
            .filter(|line| line.starts_with("hog "))
            .all(|line| line.contains(" status=137 ")),
        "{}: every hog must end by SIGKILL (status 137):\n{hogs}\nkernel log:\n{}",
        boot.release,
        boot.oom_log()
    );

    let events = boot.section("events");
    assert_eq!(
        events.status, 0,
        "{}: the collector exited {} on SIGTERM:\n{log}",
        boot.release, events.status
    );
    let documents: Vec<Value> = events
        .body
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", boot.release))
        })
        .collect();
    let kills: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["action"] == "oom_kill")
        .collect();
    let context = || {
        format!(
            "hog pids {pids:?}\nevents:\n{}\ncollector warnings:\n{}\nkernel log:\n{}",
            events.body,
            warnings(log),
            boot.oom_log()
        )
    };
    let killed: BTreeSet<u64> = kills
        .iter()
        .filter_map(|k| k["process"]["pid"].as_u64())
        .collect();
    assert!(
        kills.len() == 3 && killed == pids,
        "{}: want one oom_kill line per hog, got {} for pids {killed:?}\n{}",
        boot.release,
        kills.len(),
        context()
    );
    let incidents = incidents(&kills);
    assert!(
        incidents.len() == 1 && !incidents.contains("null"),
        "{}: one OOM killed the group, so every kill must share one oom.incident.id; \
         got {incidents:?}\n{}",
        boot.release,
        context()
    );
    for kill in &kills {
        let pid = &kill["process"]["pid"];
        assert_eq!(
            kill["oom"]["group_kill"],
            true,
            "{}: oom.group_kill of {pid}\n{}",
            boot.release,
            context()
        );
        assert_eq!(
            kill["oom"]["victim"]["memcg"]["path"],
            "/grp",
            "{}: oom.victim.memcg.path of {pid}\n{}",
            boot.release,
            context()
        );
        assert_eq!(
            kill["oom"]["constraint"],
            "memcg",
            "{}: oom.constraint of {pid}\n{}",
            boot.release,
            context()
        );
        // Each victim named with its memory, the ones the group adds too:
        // on a pid-only kernel from the hook on __oom_kill_process.
        assert_eq!(
            kill["process"]["name"],
            "oom-collector",
            "{}: process.name of {pid}\n{}",
            boot.release,
            context()
        );
        assert!(
            kill["oom"]["victim"]["rss"]["anon_bytes"].is_u64(),
            "{}: oom.victim.rss.anon_bytes of {pid}\n{}",
            boot.release,
            context()
        );
    }

    // Where a hook on oom_kill_process runs, its exact context is there:
    // the domain is the group's 64 MiB limit, and only the victim the OOM
    // chose has a badness score (the others died with its group).
    let probes = &boot.section("probes").body;
    if hook_state(probes, "fentry or kprobe/oom_kill_process") == "active" {
        for kill in &kills {
            assert_eq!(
                kill["oom"]["domain_bytes"],
                64u64 << 20,
                "{}: oom.domain_bytes\n{}",
                boot.release,
                context()
            );
            assert_eq!(kill["oom"]["memcg"]["path"], "/grp", "{}", boot.release);
        }
        let scored = kills
            .iter()
            .filter(|k| k["oom"]["victim"]["points"].is_i64())
            .count();
        assert_eq!(
            scored,
            1,
            "{}: exactly the chosen victim has oom.victim.points\n{}",
            boot.release,
            context()
        );
    }
}

/// The `oom.incident.id`s of `kills`, as JSON text (`null` when absent).
fn incidents(kills: &[&Value]) -> BTreeSet<String> {
    kills
        .iter()
        .map(|k| k["oom"]["incident"]["id"].to_string())
        .collect()
}

/// `(major, minor)` of a kernel release such as `6.1.0-57-cloud-amd64`.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Processes the guest puts in its 1,000-process `memory.oom.group`.
const BIG_GROUP: usize = 1000;

fn check_group_kill_of_a_thousand(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let steps = &boot.section("big_kill").body;
    let log = &boot.section("big_log").body;
    assert!(
        steps.contains(&format!("sleepers {}", BIG_GROUP - 1)),
        "{}: the group did not fill up:\n{steps}\ncollector log:\n{log}",
        boot.release
    );
    let documents = json_lines(boot, "big");
    let lost: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["action"] == "events_lost")
        .collect();
    assert!(
        lost.is_empty(),
        "{}: nothing may be lost with the default ring buffer: {lost:?}",
        boot.release
    );
    let kills: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["action"] == "oom_kill")
        .filter(|d| d["oom"]["victim"]["memcg"]["path"] == "/big")
        .collect();
    let pids: BTreeSet<u64> = kills
        .iter()
        .filter_map(|k| k["process"]["pid"].as_u64())
        .collect();
    assert!(
        kills.len() == BIG_GROUP && pids.len() == BIG_GROUP,
        "{}: want exactly {BIG_GROUP} kill lines for {BIG_GROUP} processes, got {} lines \
         for {} pids\n{steps}\ncollector warnings:\n{}",
        boot.release,
        kills.len(),
        pids.len(),
        warnings(log)
    );
    let incidents = incidents(&kills);
    assert!(
        incidents.len() == 1 && !incidents.contains("null"),
        "{}: one OOM, one oom.incident.id; got {} of them",
        boot.release,
        incidents.len()
    );
    let not_marked: Vec<String> = kills
        .iter()
        .filter(|k| k["oom"]["group_kill"] != true)
        .map(|k| format!("{} ({})", k["process"]["pid"], k["oom"]["group_kill"]))
        .collect();
    assert!(
        not_marked.is_empty(),
        "{}: every victim of memory.oom.group is marked group_kill; not: {not_marked:?}",
        boot.release
    );
    let sleeps = kills
        .iter()
        .filter(|k| k["process"]["args"][0] == "/bin/sleep")
        .collect::<Vec<_>>();
    assert_eq!(
        sleeps.len(),
        BIG_GROUP - 1,
        "{}: every sleep named",
        boot.release
    );
    assert!(
        sleeps.iter().all(|k| {
            k["process"]["command_line"]
                .as_str()
                .is_some_and(|line| line.len() >= 2000 && line.starts_with("/bin/sleep 1000 0 0"))
        }),
        "{}: each sleep's command line as long as the kernel keeps (2 KiB): {}",
        boot.release,
        sleeps[0]["process"]["command_line"]
    );

    // How long the last line took: from the first kill to the moment the
    // guest saw the 1,000th line in the file, both by the kernel's boot
    // clock (the kill's is in its event.id, `<boot id>-<boot ns>-<pid>`).
    let kill_times: Vec<f64> = kills
        .iter()
        .map(|k| {
            let id = k["event"]["id"].as_str().expect("event.id");
            let boot_ns: u64 = id
                .rsplit('-')
                .nth(1)
                .and_then(|ns| ns.parse().ok())
                .unwrap_or_else(|| panic!("no boot time in event.id {id}"));
            boot_ns as f64 / 1e9
        })
        .collect();
    let first_kill = kill_times.iter().copied().fold(f64::INFINITY, f64::min);
    let last_kill = kill_times.iter().copied().fold(0.0, f64::max);
    let written: f64 = steps
        .lines()
        .find_map(|line| line.strip_prefix("lines_written_at "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no time for the last line:\n{steps}", boot.release));
    eprintln!(
        "figures: {}: {BIG_GROUP}-process group kill: {} lines, 0 lost, the kernel killed \
         them in {:.0} ms, the last line was in the file {:.0} ms after the first kill \
         (to the guest's 10 ms clock and polling)",
        boot.release,
        kills.len(),
        (last_kill - first_kill) * 1000.0,
        (written - first_kill) * 1000.0,
    );
}

fn check_exiting_victim(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let steps = &boot.section("exiting_pids").body;
    let pid_of = |what: &str| -> u64 {
        steps
            .lines()
            .find_map(|l| l.strip_prefix(what)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{}: no {what:?} in:\n{steps}", boot.release))
    };
    let (held, hog) = (pid_of("held "), pid_of("hog "));
    let documents = json_lines(boot, "exiting");
    let context = || {
        format!(
            "{steps}\nevents:\n{}\nkernel log:\n{}",
            boot.section("exiting").body,
            boot.oom_log()
        )
    };
    let line_of = |pid: u64| {
        documents
            .iter()
            .find(|d| d["event"]["action"] == "oom_kill" && d["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("{}: no line for pid {pid}\n{}", boot.release, context()))
    };
    let (held_line, hog_line) = (line_of(held), line_of(hog));
    assert!(
        !boot.oom_log().contains(&format!("Killed process {held} ")),
        "{}: the kernel sent the held process no kill of its own\n{}",
        boot.release,
        context()
    );
    if !oom_kill_process_hooked(boot) {
        assert!(held_line["oom"]["victim"].get("exiting").is_none());
        return;
    }
    assert_eq!(
        held_line["oom"]["victim"]["exiting"], true,
        "{}: marked while already exiting: {held_line}",
        boot.release
    );
    let message = held_line["message"].as_str().unwrap_or("");
    assert!(
        message.contains("was already exiting") && !message.contains("Killed"),
        "{}: {message}",
        boot.release
    );
    assert_eq!(
        hog_line["oom"]["victim"]["exiting"], false,
        "{}: the hog was killed: {hog_line}",
        boot.release
    );
}

fn check_alloc_failures(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let pids = &boot.section("alloc_pids").body;
    let events = boot.section("alloc_events");
    let log = &boot.section("alloc_log").body;
    let documents = alloc_documents(boot, "alloc");
    let context = || {
        format!(
            "pids:\n{pids}\nevents:\n{}\nlog:\n{}",
            events.body,
            warnings(log)
        )
    };

    let probes = &boot.section("probes").body;
    let mmap = match series.arch() {
        Arch::Amd64 => "fexit/__x64_sys_mmap",
        Arch::Arm64 => "fexit/__arm64_sys_mmap",
    };
    let fexit = hook_state(probes, mmap);
    // fexit on system calls with the helpers it needs
    // (bpf_task_pt_regs): 5.15 and later; on arm64, whose BPF trampolines
    // reach kernel functions only through ftrace's direct calls, 6.4 and
    // later.
    let since = match series.arch() {
        Arch::Amd64 => (5, 15),
        Arch::Arm64 => (6, 4),
    };
    let fexit_expected = kernel_version(&boot.release) >= since;
    assert!(
        fexit == "active" || !fexit_expected,
        "{}: fexit must work on {}.{} and later, but is {fexit}",
        boot.release,
        since.0,
        since.1
    );
    if fexit == "active" {
        exact_counts(boot, "alloc");
    } else {
        // 5.10 lacks the helpers (bpf_task_pt_regs: 5.15), an arm64 6.1
        // the trampoline: the hook says which.
        assert!(
            fexit.contains("too old") || fexit.contains("arm64 kernels can from 6.4 on"),
            "{}: {mmap} is {fexit}",
            boot.release
        );
        // The counts are exact all the same, through the tracepoint.
        exact_counts(boot, "alloc_tp");
    }

    // Kernel page allocations that failed while filling the huge page pool.
    let filler = helper_pid(pids, "page_alloc").expect("the huge page pool was asked for");
    let page_failures: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["action"] == "memory_allocation_failed")
        .filter(|d| d["process"]["pid"] == filler)
        .collect();
    assert!(
        !page_failures.is_empty(),
        "{}: asking for 8 GiB of huge pages in a 512 MiB guest must fail some page \
         allocations\n{}",
        boot.release,
        context()
    );
    for failure in &page_failures {
        assert!(
            failure["oom"]["alloc"].get("syscall").is_none(),
            "{failure}"
        );
        assert_eq!(
            failure["oom"]["alloc"]["order"], 9,
            "2 MiB pages: {failure}"
        );
    }
    assert!(failures_counted(&documents, filler, None) > 0);
}

/// The pid of helper `what` in a `*_pids` section, whose lines are
/// `<what> <pid> ...`.
fn helper_pid(pids: &str, what: &str) -> Option<u64> {
    pids.lines().find_map(|l| {
        let (name, rest) = l.split_once(' ')?;
        if name != what {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The allocation failures `documents` count for `pid`, of `syscall` if
/// given.
fn failures_counted(documents: &[Value], pid: u64, syscall: Option<&str>) -> u64 {
    documents
        .iter()
        .filter(|d| d["event"]["action"] == "memory_allocation_failed")
        .filter(|d| d["process"]["pid"] == pid)
        .filter(|d| syscall.is_none_or(|s| d["oom"]["alloc"]["syscall"] == s))
        .map(|d| d["oom"]["alloc"]["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The JSON lines of section `<prefix>_events`, after checking that the
/// collector that wrote them (its log in `<prefix>_log`) exited 0.
fn alloc_documents(boot: &Boot, prefix: &str) -> Vec<Value> {
    let events = boot.section(&format!("{prefix}_events"));
    assert_eq!(
        events.status,
        0,
        "{} ({prefix}): the collector exited {}:\n{}",
        boot.release,
        events.status,
        boot.section(&format!("{prefix}_log")).body
    );
    events
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect()
}

/// Every one of the helpers' failed calls is counted: 1,000 `mmap` and 100
/// `brk`, in sections `<prefix>_events`, `<prefix>_log` and
/// `<prefix>_pids`.
fn exact_counts(boot: &Boot, prefix: &str) {
    let pids = &boot.section(&format!("{prefix}_pids")).body;
    let log = &boot.section(&format!("{prefix}_log")).body;
    let documents = alloc_documents(boot, prefix);
    for (syscall, calls) in [("mmap", 1000), ("brk", 100)] {
        let pid = helper_pid(pids, syscall).unwrap_or_else(|| {
            panic!(
                "{}: the {syscall} helper did not run:\n{pids}",
                boot.release
            )
        });
        let counted = failures_counted(&documents, pid, Some(syscall));
        assert_eq!(
            counted,
            calls,
            "{} ({prefix}): {syscall} failures of pid {pid}\nlog:\n{}",
            boot.release,
            warnings(log)
        );
    }
}

/// The limit of the cgroups the guest script kills in.
const LIMIT_BYTES: u64 = 48 << 20;

/// The JSON lines of section `name`, after checking that the collector
/// that wrote them exited 0.
fn json_lines(boot: &Boot, name: &str) -> Vec<Value> {
    let section = boot.section(name);
    assert_eq!(
        section.status,
        0,
        "{}: the collector writing {name} exited {}:\n{}",
        boot.release,
        section.status,
        warnings(&boot.section(&format!("{name}_log")).body)
    );
    section
        .body
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", boot.release))
        })
        .collect()
}

/// The pid of the hog named `hog` in section `pids` (lines
/// `<name> <pid> <status>`), checked to have died by SIGKILL.
fn hog_pid(boot: &Boot, pids: &str, hog: &str) -> u64 {
    let body = &boot.section(pids).body;
    let line = body
        .lines()
        .find(|l| l.split(' ').next() == Some(hog))
        .unwrap_or_else(|| panic!("{}: the {hog} hog did not run:\n{body}", boot.release));
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        fields.get(2),
        Some(&"137"),
        "{}: the {hog} hog must die by SIGKILL: {line}\nkernel log:\n{}",
        boot.release,
        boot.oom_log()
    );
    fields[1].parse().expect("a pid")
}

/// The one oom_kill line of `pid` among `documents`.
fn kill_of<'a>(boot: &Boot, documents: &'a [Value], pid: u64) -> &'a Value {
    let kills: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["action"] == "oom_kill" && d["process"]["pid"] == pid)
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "{}: want one oom_kill line for pid {pid}, got {}:\n{}\nkernel log:\n{}",
        boot.release,
        kills.len(),
        documents
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        boot.oom_log()
    );
    kills[0]
}

/// Whether this kernel's mark_victim record carries more than the pid.
fn tracepoint_has_task(boot: &Boot) -> bool {
    boot.section("mark_victim_format").body.contains(" comm;")
}

/// Whether the collector hooks oom_kill_process on this kernel.
fn oom_kill_process_hooked(boot: &Boot) -> bool {
    hook_state(
        &boot.section("probes").body,
        "fentry or kprobe/oom_kill_process",
    ) == "active"
}

/// The capabilities the DaemonSet adds, as setpriv takes them:
/// `+bpf,+perfmon,...`.
fn manifest_capabilities() -> String {
    let (_, container) = oom_e2e::manifest::daemonset(oom_e2e::manifest::COLLECTOR);
    container["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|cap| format!("+{}", cap.as_str().expect("a name").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// With exactly the manifest's capabilities and a container runtime's
/// RLIMIT_MEMLOCK, the collector reports a kill on every kernel once
/// kernel.perf_event_paranoid is 2 (Debian's kernels boot with 3, which
/// refuses tracepoint perf events without CAP_SYS_ADMIN: the collector
/// says so); without CAP_SYS_RESOURCE it cannot load on kernels before
/// 5.11, and says why.
fn check_manifest_capabilities(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let release = &boot.release;
    let paranoid: i32 = boot
        .section("perf_event_paranoid")
        .body
        .trim()
        .parse()
        .expect("perf_event_paranoid");
    let at_boot = boot.section("caps_paranoid_log");
    if paranoid > 2 {
        assert_ne!(at_boot.status, 0, "{release}: paranoid {paranoid}");
        assert!(
            at_boot.body.contains("kernel.perf_event_paranoid is 3"),
            "{release}: the collector says what refused it:\n{}",
            at_boot.body
        );
    } else {
        assert_eq!(at_boot.status, 0, "{release}:\n{}", at_boot.body);
    }
    let log = boot.section("caps_manifest_log");
    assert_eq!(
        log.status, 0,
        "{release}: with the manifest's capabilities the collector runs:\n{}",
        log.body
    );
    let documents = json_lines(boot, "caps_manifest");
    let pid = hog_pid(boot, "caps_manifest_pids", "caps_manifest");
    let kill = kill_of(boot, &documents, pid);
    assert_eq!(kill["oom"]["constraint"], "memcg", "{release}: {kill}");

    let before_5_11 = {
        let mut parts = release.split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) < (5, 11)
    };
    let log = &boot.section("caps_no_sys_resource_log").body;
    if before_5_11 {
        assert!(
            log.contains("RLIMIT_MEMLOCK") && log.contains("CAP_SYS_RESOURCE"),
            "{release}: without CAP_SYS_RESOURCE the collector says why it cannot load:\n{log}"
        );
        assert_ne!(
            boot.section("caps_no_sys_resource_log").status,
            0,
            "{release}"
        );
    } else {
        let documents = json_lines(boot, "caps_no_sys_resource");
        let pid = hog_pid(boot, "caps_no_sys_resource_pids", "caps_no_sys_resource");
        kill_of(boot, &documents, pid);
    }
}

fn check_memcg_kill(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "kills");
    let pid = hog_pid(boot, "kill_pids", "single");
    let kill = kill_of(boot, &documents, pid);
    let release = &boot.release;
    assert_eq!(
        kill["process"]["name"], "oom-collector",
        "{release}: {kill}"
    );
    assert_eq!(
        kill["oom"]["victim"]["memcg"]["path"], "/single",
        "{release}: {kill}"
    );
    assert_eq!(
        kill["oom"]["victim"]["memcg"]["limit_bytes"], LIMIT_BYTES,
        "{release}: {kill}"
    );
    let anon = kill["oom"]["victim"]["rss"]["anon_bytes"].as_u64();
    assert!(
        // The mm's counters, not the cgroup's charge: the kernel's own
        // report reads anon-rss:49408kB at a 49152kB limit.
        anon.is_some_and(|anon| (LIMIT_BYTES * 3 / 4..=LIMIT_BYTES * 5 / 4).contains(&anon)),
        "{release}: oom.victim.rss.anon_bytes must be near the 48 MiB limit: {kill}"
    );
    assert_eq!(kill["oom"]["constraint"], "memcg", "{release}: {kill}");
    // As complete where the tracepoint has only the pid: there the
    // oom_kill_process hook reads the chosen victim's task_struct. The
    // guest's shell started the hog as root, with the default score.
    let parent: u64 = boot
        .section("kill_pids")
        .body
        .lines()
        .find(|l| l.starts_with("single "))
        .and_then(|l| l.split(' ').nth(3))
        .and_then(|p| p.parse().ok())
        .expect("the shell's pid");
    assert_eq!(
        kill["process"]["parent"]["pid"], parent,
        "{release}: {kill}"
    );
    assert_eq!(kill["process"]["user"]["id"], "0", "{release}: {kill}");
    assert_eq!(
        kill["oom"]["victim"]["oom_score_adj"], 0,
        "{release}: {kill}"
    );
    let victim = &kill["oom"]["victim"];
    for field in [
        &victim["rss"]["file_bytes"],
        &victim["rss"]["shmem_bytes"],
        &victim["pgtables_bytes"],
    ] {
        assert!(field.is_u64(), "{release}: {kill}");
    }
    assert!(
        victim["total_vm_bytes"]
            .as_u64()
            .zip(anon)
            .is_some_and(|(total, anon)| total > anon),
        "{release}: total_vm_bytes covers the anonymous memory: {kill}"
    );
    assert!(
        victim["pgtables_bytes"].as_u64().is_some_and(|b| b > 0),
        "{release}: {kill}"
    );
    // Usage as the kernel had it at the kill (the victim-task hook reads the
    // page counter), not what is left once the kill freed the memory.
    for usage in [
        &kill["oom"]["victim"]["memcg"]["usage_bytes"],
        &kill["oom"]["memcg"]["usage_bytes"],
    ] {
        let usage = usage.as_u64();
        assert!(
            usage.is_some_and(|u| (LIMIT_BYTES * 9 / 10..=LIMIT_BYTES).contains(&u)),
            "{release}: usage at the kill must be at the 48 MiB limit: {kill}"
        );
    }
}

fn check_two_kills(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "kills");
    let in_pair_cgroups = documents
        .iter()
        .filter(|d| d["event"]["action"] == "oom_kill")
        .filter(|d| {
            let path = &d["oom"]["victim"]["memcg"]["path"];
            path == "/pair_a" || path == "/pair_b"
        })
        .count();
    assert_eq!(
        in_pair_cgroups, 2,
        "{}: exactly two kills in the two cgroups",
        boot.release
    );
    for hog in ["pair_a", "pair_b"] {
        let pid = hog_pid(boot, "kill_pids", hog);
        let kill = kill_of(boot, &documents, pid);
        assert_eq!(
            kill["oom"]["victim"]["memcg"]["path"],
            format!("/{hog}"),
            "{}: {kill}",
            boot.release
        );
    }
}

fn check_nested_limit(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "kills");
    let pid = hog_pid(boot, "kill_pids", "nested");
    let kill = kill_of(boot, &documents, pid);
    let release = &boot.release;
    assert_eq!(
        kill["oom"]["victim"]["memcg"]["path"], "/nested/busy",
        "{release}: {kill}"
    );
    if oom_kill_process_hooked(boot) {
        assert_eq!(kill["oom"]["memcg"]["path"], "/nested", "{release}: {kill}");
        assert_eq!(
            kill["oom"]["memcg"]["limit_bytes"], LIMIT_BYTES,
            "{release}: {kill}"
        );
        assert_eq!(kill["oom"]["constraint"], "memcg", "{release}: {kill}");
    }
}

fn check_no_btf(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "nobtf");
    let pid = hog_pid(boot, "nobtf_pids", "nobtf");
    let kill = kill_of(boot, &documents, pid);
    let release = &boot.release;
    assert!(
        kill["oom"]["victim"].get("memcg").is_none(),
        "{release}: without BTF the victim's cgroup is unknown, so it is left out: {kill}"
    );
    if tracepoint_has_task(boot) {
        assert_eq!(
            kill["process"]["name"], "oom-collector",
            "{release}: {kill}"
        );
        assert!(
            kill["oom"]["victim"]["rss"]["anon_bytes"].is_u64(),
            "{release}: the tracepoint's anon-rss: {kill}"
        );
    }
}

fn check_no_tracefs(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let section = boot.section("notracefs");
    assert_eq!(
        section.status, 1,
        "{}: without tracefs the collector must exit 1:\n{}",
        boot.release, section.body
    );
    assert!(
        section.body.contains("tracefs is not mounted"),
        "{}: {}",
        boot.release,
        section.body
    );
}

fn check_global_oom(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "global");
    let pid = hog_pid(boot, "global_pids", "global");
    let kill = kill_of(boot, &documents, pid);
    let release = &boot.release;
    if oom_kill_process_hooked(boot) || kill["oom"].get("constraint").is_some() {
        assert_eq!(kill["oom"]["constraint"], "global", "{release}: {kill}");
    }
    assert_eq!(
        kill["process"]["name"], "oom-collector",
        "{release}: {kill}"
    );
    assert!(
        kill["oom"]["victim"]["rss"]["anon_bytes"].is_u64(),
        "{release}: {kill}"
    );
    assert!(
        kill["oom"].get("memcg").is_none(),
        "{release}: no memory cgroup's limit was hit: {kill}"
    );
    // Which cgroups ate the node: the two holders, the larger first.
    eprintln!("{release}: {}", kill["message"]);
    let memcgs: Vec<&str> = kill["oom"]["node"]["memcgs"]
        .as_array()
        .unwrap_or_else(|| panic!("{release}: no oom.node.memcgs: {kill}"))
        .iter()
        .filter_map(|m| m["path"].as_str())
        .collect();
    assert_eq!(
        memcgs.get(..2),
        Some(&["/hungry_a", "/hungry_b"][..]),
        "{release}: {kill}"
    );
    // The node's memory at the OOM, as the kernel's report gave it: the
    // holders' 210 MiB and the hog's, still in anon.
    assert_eq!(
        kill["oom"]["node"]["stats"]["source"], "kernel_log",
        "{release}: {kill}"
    );
    assert!(
        kill["oom"]["node"]["stats"]["anon_bytes"].as_u64() > Some(200 << 20),
        "{release}: {kill}"
    );
    assert!(
        kill["message"]
            .as_str()
            .is_some_and(|m| m.contains("the node ran out of memory: largest cgroups /hungry_a ")),
        "{release}: {kill}"
    );
}

/// What filled the limit, on cgroup v2: a tmpfs file is blamed for the
/// kill beside it; two holders are listed with what they held; the
/// cgroup's `memory.events` and `memory.pressure` came with the kill.
fn check_explain(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let documents = json_lines(boot, "explain");
    let release = &boot.release;
    let number = |event: &Value, pointer: &str| -> u64 {
        event
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{release}: no {pointer} in {event}"))
    };

    let pid = hog_pid(boot, "explain_pids", "tmpfs");
    let kill = kill_of(boot, &documents, pid);
    eprintln!("{release}: {}", kill["message"]);
    assert_eq!(kill["oom"]["memcg"]["path"], "/tmpfs", "{release}: {kill}");
    let shmem = number(kill, "/oom/memcg/stats/shmem_bytes");
    assert!(shmem >= 38 << 20, "{release}: shmem {shmem}: {kill}");
    let own = number(kill, "/oom/victim/rss/anon_bytes");
    assert!(own < 30 << 20, "{release}: the victim's own anon {own}");
    let start = format!(
        "oom-collector[{pid}] killed in memory cgroup /tmpfs (limit 64.0 MiB): tmpfs/shmem "
    );
    assert!(
        kill["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&start)),
        "{release}: {kill}"
    );
    assert!(
        number(kill, "/oom/memcg/events/max") > 0,
        "{release}: {kill}"
    );
    assert!(
        number(kill, "/oom/memcg/events/oom_kill") >= 1,
        "{release}: {kill}"
    );
    // Where the stats come from: read in the kernel at the OOM where its
    // counters are in the order of its enums (before 6.10), else the
    // kernel's own report in its log.
    let expected_source = if kernel_version(release) >= (6, 10) {
        "kernel_log"
    } else {
        "kernel"
    };
    assert_eq!(
        kill["oom"]["memcg"]["stats"]["source"], expected_source,
        "{release}: {kill}"
    );
    // Either way, they are the kernel's report's figures.
    let logged = logged_stats(&boot.section("explain_dmesg").body, "/tmpfs")
        .unwrap_or_else(|| panic!("{release}: no report of /tmpfs in the kernel log"));
    for (field, line) in [("shmem_bytes", "shmem"), ("anon_bytes", "anon")] {
        let ours = number(kill, &format!("/oom/memcg/stats/{field}"));
        let theirs = logged
            .iter()
            .find(|(name, _)| name == line)
            .map(|(_, value)| *value)
            .unwrap_or_else(|| panic!("{release}: no {line} in the kernel's report"));
        assert!(
            ours.abs_diff(theirs) <= 2 << 20,
            "{release}: {field} {ours}, the kernel's report {theirs}"
        );
    }
    // The hog stalled on memory before it was killed: the averages may
    // round that to 0, the total does not.
    let stalled = kill
        .pointer("/oom/memcg/pressure/some/total_us")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{release}: memory.pressure (booted with psi=1): {kill}"));
    assert!(stalled > 0, "{release}: {kill}");
    assert!(
        kill.pointer("/oom/memcg/pressure/some/avg60")
            .and_then(Value::as_f64)
            .is_some_and(|avg| (0.0..=100.0).contains(&avg)),
        "{release}: {kill}"
    );

    let pid = hog_pid(boot, "explain_pids", "siblings");
    let kill = kill_of(boot, &documents, pid);
    eprintln!("{release}: {}", kill["message"]);
    assert_eq!(
        number(kill, "/oom/memcg/tasks_count"),
        3,
        "{release}: {kill}"
    );
    let tasks = kill["oom"]["memcg"]["tasks"].as_array().expect("tasks");
    for line in boot.section("holders").body.lines() {
        let (holder, kib) = line.split_once(' ').expect("pid kB");
        let held: u64 = kib.trim().parse::<u64>().expect("kB") * 1024;
        let listed = tasks
            .iter()
            .find(|t| t["pid"].as_u64() == holder.parse().ok())
            .unwrap_or_else(|| panic!("{release}: holder {holder} not listed: {kill}"));
        let rss = listed["rss_bytes"].as_u64().expect("rss");
        assert!(
            rss.abs_diff(held) <= held / 10,
            "{release}: holder {holder} listed {rss}, held {held}"
        );
    }
}

/// The stat lines of the kernel's last report on the memory cgroup `path`
/// in `dmesg`, in bytes (`shmem 41943040`); `None` without one.
fn logged_stats(dmesg: &str, path: &str) -> Option<Vec<(String, u64)>> {
    let header = format!("Memory cgroup stats for {path}:");
    // Without the `[ seconds]` prefix; kernels before 6.5 print the stats
    // as one record, its lines without one.
    let text = |line: &str| -> String {
        match line.trim_start().strip_prefix('[') {
            Some(rest) => rest
                .split_once(']')
                .map_or(rest, |(_, t)| t)
                .trim()
                .to_owned(),
            None => line.trim().to_owned(),
        }
    };
    let lines: Vec<String> = dmesg.lines().map(text).collect();
    let start = lines.iter().rposition(|line| line.ends_with(&header))?;
    Some(
        lines[start + 1..]
            .iter()
            .map_while(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// The collector's warnings and errors, each cut to its first line (a
/// verifier log can run to thousands).
fn warnings(log: &str) -> String {
    plain(log)
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .map(|line| line.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without ANSI colour sequences (`ESC [ ... m`): the collector's
/// text log has them even when stderr is a file.
fn plain(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

fn check_selftest(series: Series, test: &str) {
    let Some(boot) = guest(series, test) else {
        return;
    };
    let selftest = boot.section("selftest");
    assert_eq!(
        selftest.status, 0,
        "`oom-collector selftest` exited {} on {}:\n{}",
        selftest.status, boot.release, selftest.body
    );
    assert!(
        selftest.body.contains(r#""action":"oom_kill""#),
        "{}: selftest printed no oom_kill line:\n{}",
        boot.release,
        selftest.body
    );
}

macro_rules! kernel_tests {
    ($module:ident, $series:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn probes() {
                check_probes($series, concat!(stringify!($module), "::probes"));
            }

            #[test]
            fn group_kill() {
                check_group_kill($series, concat!(stringify!($module), "::group_kill"));
            }

            #[test]
            fn group_kill_of_a_thousand() {
                check_group_kill_of_a_thousand(
                    $series,
                    concat!(stringify!($module), "::group_kill_of_a_thousand"),
                );
            }

            #[test]
            fn exiting_victim() {
                check_exiting_victim($series, concat!(stringify!($module), "::exiting_victim"));
            }

            #[test]
            fn alloc_failures() {
                check_alloc_failures($series, concat!(stringify!($module), "::alloc_failures"));
            }

            #[test]
            fn manifest_capabilities() {
                check_manifest_capabilities(
                    $series,
                    concat!(stringify!($module), "::manifest_capabilities"),
                );
            }

            #[test]
            fn memcg_kill() {
                check_memcg_kill($series, concat!(stringify!($module), "::memcg_kill"));
            }

            #[test]
            fn two_kills() {
                check_two_kills($series, concat!(stringify!($module), "::two_kills"));
            }

            #[test]
            fn nested_limit() {
                check_nested_limit($series, concat!(stringify!($module), "::nested_limit"));
            }

            #[test]
            fn no_btf() {
                check_no_btf($series, concat!(stringify!($module), "::no_btf"));
            }

            #[test]
            fn no_tracefs() {
                check_no_tracefs($series, concat!(stringify!($module), "::no_tracefs"));
            }

            #[test]
            fn explain() {
                check_explain($series, concat!(stringify!($module), "::explain"));
            }

            #[test]
            fn global_oom() {
                check_global_oom($series, concat!(stringify!($module), "::global_oom"));
            }

            #[test]
            fn selftest() {
                check_selftest($series, concat!(stringify!($module), "::selftest"));
            }
        }
    };
}

kernel_tests!(guest_5_10, Series::Linux5_10);
kernel_tests!(guest_5_10_release, Series::Linux5_10Release);
kernel_tests!(guest_6_1, Series::Linux6_1);
kernel_tests!(guest_6_12, Series::Linux6_12);
kernel_tests!(guest_arm64_5_10, Series::Arm64Linux5_10);
kernel_tests!(guest_arm64_6_1, Series::Arm64Linux6_1);
kernel_tests!(guest_arm64_6_12, Series::Arm64Linux6_12);
