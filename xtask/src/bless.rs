//! `cargo xtask bless`: accept an intended change of the JSON wire format
//! by rewriting the golden files of `oom-collector/tests/golden/`, then
//! show what changed for review. The golden tests themselves only compare.

use std::path::Path;

use anyhow::Result;

use crate::{setup, system::run_checked};

/// What the `bless` test of `oom-collector/tests/json.rs` checks before it
/// writes anything.
const BLESS_VARIABLE: &str = "OOM_COLLECTOR_BLESS";

pub fn bless(root: &Path) -> Result<()> {
    // The collector's build compiles the eBPF programs: the toolchain first.
    let toolchain = setup::ensure_toolchain()?;
    run_checked(
        toolchain
            .cargo()
            .current_dir(root)
            .env(BLESS_VARIABLE, "1")
            // The profile `cargo xtask test` uses, so its build is reused.
            .args(["test", "--release", "--package", "oom-collector"])
            .args(["--test", "json"])
            .args(["--", "--ignored", "--exact", "bless"]),
    )?;
    eprintln!("golden files rewritten; review them (git diff) before committing. Changed or new:");
    // Status, not diff: it shows a new golden file too.
    run_checked(std::process::Command::new("git").current_dir(root).args([
        "status",
        "--short",
        "--",
        "oom-collector/tests/golden",
    ]))
}
