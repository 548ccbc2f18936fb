//! The command line: `oom-collector [run] [OPTIONS]`, `probes`, `selftest`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    cmdline::CmdlineMode,
    enrich::{
        runtime::{RuntimeDirs, CONTAINERD_STATE_DIRS},
        EnrichOptions,
    },
    loader::{AllocFailureHooks, LoadOptions, DEFAULT_CMDLINE_CACHE_ENTRIES},
    pipeline::PipelineOptions,
    sink::Format,
};

/// Turns every Linux OOM kill into one structured JSON line (ECS), attributed
/// to its process, cgroup, container and Kubernetes pod.
///
/// With no command, runs the collector: attaches to the kernel's OOM killer
/// and writes one line per kill to stdout (or --output) until SIGINT or
/// SIGTERM, then drains what the kernel still holds and exits 0.
///
/// Needs root, or CAP_BPF and CAP_PERFMON. Try it safely with
/// `oom-collector selftest`, which OOM-kills a hog of its own inside a
/// scratch memory cgroup.
#[derive(Debug, Parser)]
#[command(
    name = "oom-collector",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream OOM kills as JSON lines (the default command).
    Run(RunArgs),
    /// Show which kernel hooks this kernel supports, and why not where not.
    /// As root it attaches each hook the way `run` with the same options
    /// would (then detaches): "active" means it worked.
    Probes(RunArgs),
    /// OOM-kill a memory hog of our own in a scratch memory cgroup and check
    /// that its event comes through. Exits 0 on success, 1 with the reason.
    Selftest(SelftestArgs),
    /// Internal: the memory hog `selftest` runs. Joins the cgroup whose
    /// `cgroup.procs` is given, then allocates until the OOM killer ends it.
    #[command(hide = true)]
    Hog {
        /// The scratch cgroup's `cgroup.procs` file.
        cgroup_procs: PathBuf,
    },
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Append events to this file instead of writing them to stdout. The file
    /// is created if needed (mode 0640), written one line per event and
    /// fsynced on exit; a symbolic link, FIFO, block device or socket at
    /// PATH is refused (a character device such as /dev/null is written
    /// to, never rotated).
    /// Give it more than once to write to several, each at its own pace; `-`
    /// is stdout (a DaemonSet: `--output - --output
    /// /var/log/oom-collector/events.ndjson`).
    #[arg(long, value_name = "PATH")]
    pub output: Vec<PathBuf>,

    /// Rotate a file output once it reaches this many bytes: it becomes
    /// PATH.1 (older ones PATH.2, ...) and a new PATH is started.
    #[arg(long, value_name = "BYTES")]
    pub output_max_bytes: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics, a readiness check
    /// at /ready and a liveness check at /healthz (e.g. `0.0.0.0:9402`).
    /// Off when not given. At most
    /// 64 connections at once, headers within 5 s, each connection closed
    /// after 30 s; per-pod series are forgotten after 24 h without a count.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// With --metrics-addr, GET /healthz (for a liveness probe) fails when
    /// the collector has not polled the kernel's ring buffer for 30 s, or
    /// when every output has been blocked in one write (a log pipe whose
    /// reader hangs, a disk that hangs) for this long. An output that fails
    /// with an error (a full disk) is retried and does not count: a
    /// restart would not mend it.
    #[arg(long, value_name = "DURATION", default_value = "2m",
          value_parser = parse_window)]
    pub healthz_output_stall: Duration,

    /// Rotated files to keep, with --output-max-bytes.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub output_keep: u32,

    /// `json`: one ECS document per line, for log shippers. `pretty`: one
    /// readable line per event, a sentence saying what filled the limit.
    /// `auto`: `pretty` when stdout is a terminal and the only output,
    /// `json` otherwise (pipes, files, a pod's log).
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// Size of the kernel's event ring buffer. A power of two and a multiple
    /// of the page size; events that do not fit are counted and reported as
    /// an `events_lost` event. A kill takes 688 bytes plus its command line
    /// (at most 2 KiB): the default 4 MiB holds every victim of a
    /// memory.oom.group kill of 1,500 processes with the longest command
    /// lines (over 5,000 at 100 bytes), all made before the collector can
    /// read one. It is kernel memory, the same on any number of CPUs.
    #[arg(long, value_name = "BYTES", default_value_t = crate::loader::DEFAULT_RING_BUFFER_BYTES,
          value_parser = parse_ring_buffer_bytes)]
    pub ring_buffer_bytes: u32,

    /// Keep the kernel hooks and the ring buffer pinned in this directory on
    /// bpffs (e.g. /sys/fs/bpf/oom-collector) when the collector exits or
    /// is killed: kills while it is down wait in the buffer and are
    /// delivered, once, when it starts again with the same directory; a
    /// kill leaves the buffer only once an output has written it. A
    /// start with another build or other options replaces what is kept.
    /// Without it, the hooks go with the process. Only the collector's own
    /// sets (`set-<hash>`) are ever removed there; one collector at a time
    /// may use a directory; the kept maps hold command lines before
    /// redaction and are root's alone.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Remove what `--pin-dir` keeps (detaching its hooks) and exit.
    #[arg(long, requires = "pin_dir")]
    pub unpin: bool,

    /// After --unpin, keep running until SIGTERM or SIGINT: what a
    /// DaemonSet that unpins every node runs
    /// (deploy/kubernetes/oom-collector-unpin.yaml), its pods staying up so
    /// that `kubectl rollout status` says when every node is done.
    #[arg(long, requires = "unpin")]
    pub then_wait: bool,

    /// Allocation failures (mmap, mremap, brk returning ENOMEM) are counted in
    /// the kernel and written as one `memory_allocation_failed` event per
    /// process and system call per window of this length, so a storm of a
    /// million failures costs a handful of lines. E.g. `500ms`, `1s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = parse_window)]
    pub enomem_window: Duration,

    /// How to watch mmap, mremap and brk for allocation failures. `auto`
    /// uses fexit hooks where the kernel allows them, which cost only those
    /// calls; `tracepoint` uses the syscall exit tracepoints, which work
    /// everywhere but slow every system call on the host (measured in the
    /// README); `off` does without.
    #[arg(long, value_enum, default_value_t = AllocFailureHooks::Auto)]
    pub alloc_failures: AllocFailureHooks,

    /// Also count kernel page allocations that fail (`kmem/mm_page_alloc`
    /// with no page), per process, like the system calls above. That hook
    /// runs on every page allocation on the host, so it is off by default.
    #[arg(long)]
    pub page_alloc_failures: bool,

    #[command(flatten)]
    pub cmdline: CmdlineArgs,

    #[command(flatten)]
    pub runtimes: RuntimeArgs,

    #[command(flatten)]
    pub kernel_log: KernelLogArgs,
}

/// Where the container runtimes keep what they know about each container
/// (pod, namespace, container and image names), read without any API.
#[derive(Clone, Debug, Args)]
pub struct RuntimeArgs {
    /// containerd's state directory (its task bundles); give it more than
    /// once for several. By default containerd's own and the one k3s and
    /// RKE2 run it with.
    #[arg(long, value_name = "DIR",
          default_values = CONTAINERD_STATE_DIRS)]
    pub containerd_state: Vec<PathBuf>,
    /// CRI-O's container storage run root.
    #[arg(long, value_name = "DIR", default_value = "/run/containers/storage")]
    pub crio_storage: PathBuf,
    /// Docker's data root (dockershim-era nodes).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,
}

impl RunArgs {
    /// What the loader, the enricher and the pipeline are told.
    pub fn pipeline_options(&self) -> PipelineOptions {
        PipelineOptions {
            load: LoadOptions {
                kernel_log_level: self.kernel_log.kernel_log_level.as_aya_level(),
                ring_buffer_bytes: self.ring_buffer_bytes,
                page_alloc_failures: self.page_alloc_failures,
                alloc_failures: self.alloc_failures,
                pin_dir: self.pin_dir.clone(),
                ..self.cmdline.load_options()
            },
            enrich: EnrichOptions {
                runtime_dirs: RuntimeDirs {
                    containerd_state: self.runtimes.containerd_state.clone(),
                    crio_storage: self.runtimes.crio_storage.clone(),
                    docker_root: self.runtimes.docker_root.clone(),
                },
                ..self.cmdline.enrich_options()
            },
            alloc_window: self.enomem_window,
        }
    }
}

impl CmdlineArgs {
    /// What the loader needs of these flags; the rest as by default.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            capture_cmdlines: self.mode != CmdlineMode::Off,
            cmdline_cache_entries: self.cmdline_cache_entries,
            ..LoadOptions::default()
        }
    }

    /// What the enricher needs of these flags; the rest as by default.
    pub fn enrich_options(&self) -> EnrichOptions {
        EnrichOptions {
            cmdline_mode: self.mode,
            secret_words: self.secret_words.clone(),
            ..EnrichOptions::default()
        }
    }
}

impl SelftestArgs {
    /// The pipeline `selftest` runs: the defaults, with these flags and
    /// without the allocation-failure hooks, which it does not test.
    pub fn pipeline_options(&self) -> PipelineOptions {
        PipelineOptions {
            load: LoadOptions {
                kernel_log_level: self.kernel_log.kernel_log_level.as_aya_level(),
                alloc_failures: AllocFailureHooks::Off,
                ..self.cmdline.load_options()
            },
            enrich: self.cmdline.enrich_options(),
            ..PipelineOptions::default()
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct CmdlineArgs {
    /// How much of the victim's command line events carry
    /// (`process.args`, `process.command_line`, `process.executable`).
    /// `full` keeps everything; `off` captures nothing. `redacted` replaces
    /// each secret by `<redacted>` and keeps the rest word for word: the
    /// value of an option, `NAME=value`, header (`Authorization: Bearer
    /// <redacted>`), URL query parameter, `a=1,b=2` pair or JSON key whose
    /// name is secret (see --secret-words), and the argument after such an
    /// option; URL passwords, even holding `/` or `@`; the words of an
    /// argument with whitespace by the same rules (`sh -c` scripts, `"host=db
    /// password=x"`, SQL's `PASSWORD 'x'`); flags that hold passwords for
    /// some programs only, after an argument naming the program (`mysql
    /// -pX`, `sshpass -p`, `redis-cli -a` and `AUTH`, `curl -u user:X`,
    /// `docker login -p`, `vault login X`, `mongosh -p`, `sqlcmd -P`,
    /// `ldapsearch -w`, `smbclient -U user%X`, `htpasswd -b`, `aws
    /// configure set NAME X`, `sqlplus user/X@db`, ...), so `ssh -p 22` and
    /// `docker run -p 8080:80` stay; tokens of well-known shapes anywhere
    /// (AKIA..., eyJ... JWTs, ghp_, github_pat_, xoxb-, sk_live_, glpat-,
    /// PEM private keys, ...); and the last argument of a command line the
    /// kernel cut at 2 KiB, which may be half a secret.
    #[arg(long = "cmdline", value_enum, default_value_t = CmdlineMode::Redacted)]
    pub mode: CmdlineMode,

    /// More secret words for `--cmdline redacted`, comma-separated: a name
    /// that contains one, ignoring case, is secret. Built in: names that
    /// contain password, passwd, passphrase, secret, credential, signature,
    /// cookie, apikey, accesskey, privatekey, authtoken or accesstoken; with
    /// a word (split at `-_./:` and camelCase) pass, pwd, pw, cred, creds,
    /// sig, bearer, psk, or one ending in token or pass (`DB_PASS`, `--pwd`);
    /// whose last word ends in key or auth or is authorization or jwt
    /// (`--api-key`). Not when the last word says where or what the secret
    /// is (file, path, dir, store, url, name, mode, type, stdin, ...:
    /// `--key-file=/etc/x.pem` is kept), nor values such as true, 0, a
    /// `.pem` or `.key` file name or a path such as `~/.ssh/id_rsa`.
    #[arg(long, value_name = "WORDS", value_delimiter = ',')]
    pub secret_words: Vec<String>,

    /// How many processes' command lines the kernel keeps (least recently
    /// executed forgotten first). Each takes about 2.3 KiB of kernel memory.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CMDLINE_CACHE_ENTRIES,
          value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub cmdline_cache_entries: u32,
}

#[derive(Clone, Debug, Args)]
pub struct KernelLogArgs {
    /// The most verbose diagnostics the kernel programs send to the
    /// collector's log (a failed ring-buffer reservation, a kernel read that
    /// failed). They are logged under the target `oom_ebpf`.
    #[arg(long, value_enum, default_value_t = KernelLogLevel::Warn)]
    pub kernel_log_level: KernelLogLevel,
}

#[derive(Clone, Debug, Args)]
pub struct SelftestArgs {
    /// Memory limit of the scratch cgroup, in MiB.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(8..=1024))]
    pub limit_mib: u64,

    /// How long to wait for the kill's event.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,

    #[command(flatten)]
    pub cmdline: CmdlineArgs,

    #[command(flatten)]
    pub kernel_log: KernelLogArgs,
}

#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Format of the collector's own diagnostics on stderr. `json` lets an
    /// ELK stack that keeps only JSON collect them too.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which diagnostics to print: a level (error, warn, info, debug, trace)
    /// or a tracing filter such as `info,oom_ebpf=debug`. `RUST_LOG` is used
    /// when this is not given.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl KernelLogLevel {
    /// aya-log's numbering: error = 1 .. trace = 5; 0 lets nothing through.
    pub fn as_aya_level(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => 1,
            Self::Warn => 2,
            Self::Info => 3,
            Self::Debug => 4,
            Self::Trace => 5,
        }
    }
}

fn parse_ring_buffer_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    let page = rustix::param::page_size() as u32;
    if !bytes.is_power_of_two() || !bytes.is_multiple_of(page) {
        return Err(format!(
            "{bytes} is not a power of two and a multiple of the page size ({page}); \
             try 4194304 (4 MiB) or 16777216 (16 MiB)"
        ));
    }
    Ok(bytes)
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 1s or 1m ({e})"))?;
    if window < Duration::from_millis(10) {
        return Err(format!("{text} is shorter than the 10ms minimum"));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use oom_common::{CMDLINE_ARGS_BYTES, OOM_KILL_RECORD_FIXED_BYTES};

    use crate::loader::DEFAULT_RING_BUFFER_BYTES;

    /// The kernel's header before each ring-buffer record.
    const RING_BUFFER_HEADER_BYTES: usize = 8;

    #[test]
    fn with_no_flags_every_subsystem_gets_its_own_defaults() {
        use clap::Parser;

        use crate::{
            cli::{Cli, Command},
            pipeline::PipelineOptions,
        };
        let cli = Cli::try_parse_from(["oom-collector"]).expect("no flags parse");
        assert_eq!(cli.run.pipeline_options(), PipelineOptions::default());
        let cli = Cli::try_parse_from(["oom-collector", "selftest"]).expect("selftest parses");
        let Some(Command::Selftest(args)) = cli.command else {
            panic!("selftest is a command");
        };
        let selftest = args.pipeline_options();
        assert_eq!(selftest.enrich, PipelineOptions::default().enrich);
        assert_eq!(
            selftest.alloc_window,
            PipelineOptions::default().alloc_window
        );
    }

    #[test]
    fn the_default_ring_buffer_holds_the_group_kill_the_help_promises() {
        let kill = |args: usize| {
            (RING_BUFFER_HEADER_BYTES + OOM_KILL_RECORD_FIXED_BYTES + args).next_multiple_of(8)
        };
        assert_eq!(kill(0), 688, "the size --help gives");
        let buffer = DEFAULT_RING_BUFFER_BYTES as usize;
        assert!(buffer / kill(CMDLINE_ARGS_BYTES) >= 1_500);
        assert!(buffer / kill(100) >= 5_000);
    }
}
