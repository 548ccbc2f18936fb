//! `oom-collector selftest`: proves the whole pipeline on this host by
//! OOM-killing a hog of our own inside a scratch memory cgroup.
//!
//! The scratch cgroup is made under the memory hierarchy's root (v1 memory
//! controller or v2), limited, and removed afterwards whatever happens; the
//! hog is this binary's hidden `hog` command, which joins that cgroup before
//! it allocates and gives up on its own well past the limit, so a limit that
//! did not take cannot eat the host's memory.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use scratch_cgroup::{MemoryRoot, ScratchCgroup};
use tracing::info;

use crate::{
    cli::SelftestArgs,
    document::{Action, Document},
    enrich::cgroup::{CgroupMounts, CgroupVersion},
    pipeline::{Flow, Pipeline, PipelineError},
    sink::{Format, Sink, SinkError},
};

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("no memory cgroup hierarchy is mounted (neither cgroup v2 with the memory controller nor the v1 memory controller)")]
    NoMemoryCgroup,
    #[error("cannot set up the scratch cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the memory controller is not enabled for children of {0} (cgroup.subtree_control)")]
    MemoryNotDelegated(PathBuf),
    #[error("cannot start the memory hog")]
    Spawn(#[source] io::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("no oom_kill event for the hog (pid {pid}) within {seconds} s{detail}")]
    NoEvent {
        pid: u32,
        seconds: u64,
        detail: String,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The scratch cgroup's failures in this command's terms.
impl From<scratch_cgroup::Error> for SelftestError {
    fn from(error: scratch_cgroup::Error) -> Self {
        match error {
            scratch_cgroup::Error::MemoryNotDelegated(root) => Self::MemoryNotDelegated(root),
            scratch_cgroup::Error::Io { path, source } => Self::Cgroup { path, source },
        }
    }
}

/// Our own hog; killed and reaped on drop if still running.
struct Hog(Child);

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn selftest(args: &SelftestArgs) -> Result<Document, SelftestError> {
    let mounts = CgroupMounts::discover().map_err(|source| SelftestError::Cgroup {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let memory = mounts.memory.ok_or(SelftestError::NoMemoryCgroup)?;
    let mut pipeline = Pipeline::start(&args.pipeline_options())?;

    let limit_bytes = args.limit_mib * 1024 * 1024;
    let root = MemoryRoot {
        dir: memory.root.clone(),
        version: match memory.version {
            CgroupVersion::V1 => scratch_cgroup::Version::V1,
            CgroupVersion::V2 => scratch_cgroup::Version::V2,
        },
    };
    let name = format!("oom-collector-selftest-{}", std::process::id());
    let cgroup = ScratchCgroup::create_in(&root, &name, limit_bytes)?;
    let exe = std::env::current_exe().map_err(SelftestError::Spawn)?;
    let hog = Command::new(exe)
        .arg("hog")
        .arg(cgroup.procs_file())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SelftestError::Spawn)?;
    let mut hog = Hog(hog);
    let pid = hog.0.id();
    info!(pid, cgroup = %cgroup.dir.display(), limit_bytes, "started the memory hog");

    let mut found = None;
    let timeout = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
    pipeline
        .run(timeout, |document| {
            let is_hog = document.kind() == Action::OomKill
                && document.process.as_ref().is_some_and(|p| p.pid == pid);
            if is_hog {
                found = Some(document);
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        })
        .await?;

    let Some(document) = found else {
        let detail = match hog.0.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = hog.0.stderr.take() {
                    let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                format!("; the hog exited with {status}: {}", stderr.trim())
            }
            _ => "; the hog is still running: was the limit applied?".to_owned(),
        };
        return Err(SelftestError::NoEvent {
            pid,
            seconds: args.timeout_secs,
            detail,
        });
    };
    drop(hog);
    drop(cgroup);
    Sink::stdout(Format::Auto)?.write(&document)?;
    Ok(document)
}

/// The hidden `hog` command: join the cgroup, then allocate and touch memory
/// 1 MiB at a time until killed. Gives up at 4 GiB so a limit that did not
/// apply cannot take the host down.
pub fn hog(cgroup_procs: &Path) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    const GIVE_UP_BYTES: usize = 4 << 30;
    fs::write(cgroup_procs, "0")?;
    let mut held: Vec<Vec<u8>> = Vec::new();
    while held.len() * CHUNK < GIVE_UP_BYTES {
        // Non-zero fill: every page is written, so every page is charged.
        held.push(vec![0xa5; CHUNK]);
    }
    Err(io::Error::other(
        "allocated 4 GiB without being OOM-killed: the memory limit did not apply",
    ))
}
