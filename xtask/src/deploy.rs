//! Checks of the deployment assets under `deploy/`.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::system::run_checked;

/// The Kubernetes release whose OpenAPI schemas the manifests must meet
/// (the newest `kubernetes-validate` ships).
const KUBERNETES_VERSION: &str = "1.37.0";

/// Whether a tool the checks need is missing: an error under CI, a
/// printed skip otherwise.
pub fn require_tool(tool: &str, install: &str) -> Result<bool> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("{tool} is missing and CI=true: install it ({install})");
    }
    eprintln!("xtask: skipping what needs {tool} ({install})");
    Ok(false)
}

/// Validates every manifest under `deploy/kubernetes/` against the
/// Kubernetes schemas, strictly (unknown fields are errors).
pub fn validate_manifests(root: &Path) -> Result<()> {
    if !require_tool("kubernetes-validate", "pip install kubernetes-validate")? {
        return Ok(());
    }
    let dir = root.join("deploy/kubernetes");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        bail!("no manifests in {}", dir.display());
    }
    run_checked(
        Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .args(&manifests),
    )
}
