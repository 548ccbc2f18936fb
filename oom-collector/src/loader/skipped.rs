//! Runs of the collector's programs that the kernel skipped.
//!
//! The kernel does not run a BPF program on a CPU where a BPF program is
//! already running when the hook fires (its recursion guard: say a
//! tracepoint inside another tool's program, or an fexit program
//! interrupted by one of ours); it counts each skipped run in the
//! program's `recursion_misses` (Linux 5.12+). A skipped run is a kill
//! part or an allocation failure that was never recorded, so the collector
//! reports them as lost. The count is read from `/proc/self/fdinfo` of a
//! descriptor of each program, which is where the kernel prints it.

use std::{
    fs,
    os::fd::{AsFd, AsRawFd},
};

use aya::programs::{links::PinnedLink, loaded_programs, ProgramFd};
use tracing::debug;

/// Descriptors of the programs in use, loaded or taken up from pins.
#[derive(Default)]
pub struct ProgramRuns {
    programs: Vec<ProgramFd>,
}

impl ProgramRuns {
    /// The programs of a freshly loaded object.
    pub fn of_object(ebpf: &aya::Ebpf) -> Self {
        let programs = ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .filter_map(|fd| fd.try_clone().ok())
            .collect();
        Self { programs }
    }

    /// The programs behind the links a previous start pinned.
    pub fn of_links(links: impl IntoIterator<Item = std::path::PathBuf>) -> Self {
        let ids: Vec<u32> = links
            .into_iter()
            .filter_map(|path| {
                let link: aya::programs::links::FdLink = PinnedLink::from_pin(&path)
                    .inspect_err(
                        |error| debug!(%error, path = %path.display(), "cannot open a kept link"),
                    )
                    .ok()?
                    .into();
                Some(link.info().ok()?.program_id())
            })
            .collect();
        let programs = loaded_programs()
            .filter_map(Result::ok)
            .filter(|info| ids.contains(&info.id()))
            .filter_map(|info| info.fd().ok())
            .collect();
        Self { programs }
    }

    /// Runs the kernel skipped, summed over the programs; 0 on kernels
    /// that do not count them.
    pub fn skipped(&self) -> u64 {
        self.programs
            .iter()
            .filter_map(|fd| {
                let fdinfo =
                    fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
                        .ok()?;
                recursion_misses(&fdinfo)
            })
            .sum()
    }
}

/// The `recursion_misses:` field of a program's fdinfo.
fn recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("recursion_misses:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_s_count_and_none_where_it_has_none() {
        let since_5_12 = "prog_id:\t289\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t17\n\
                          verified_insns:\t5218\n";
        assert_eq!(recursion_misses(since_5_12), Some(17));
        assert_eq!(recursion_misses("prog_id:\t3\nrun_cnt:\t0\n"), None);
    }
}
