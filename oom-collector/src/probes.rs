//! `oom-collector probes`: which hooks this kernel supports, and why not.

use std::fmt::Write as _;

use crate::loader::{HookStatus, KernelSupport};

/// The report `probes` prints, one hook a line.
pub fn report(hooks: &[HookStatus]) -> String {
    let mut text = String::new();
    for hook in hooks {
        let state = match &hook.state {
            Ok(()) => "active".to_owned(),
            Err(reason) => format!("unavailable: {reason}"),
        };
        let _ = writeln!(text, "{:<30} {state}", hook.hook);
        let _ = writeln!(text, "{:<30} provides {}", "", hook.provides);
    }
    text
}

/// Checks this kernel without loading anything.
pub fn probe_kernel() -> Vec<HookStatus> {
    KernelSupport::probe().hook_statuses()
}
