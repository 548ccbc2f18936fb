//! `oom-collector probes`: which hooks this kernel supports, and why not.

use std::fmt::Write as _;

use crate::{
    cli::RunArgs,
    loader::{self, HookStatus, KernelSupport, LoadOptions},
};

/// The report `probes` prints, one hook a line.
pub fn report(hooks: &[HookStatus]) -> String {
    let mut text = String::new();
    for hook in hooks {
        let state = match &hook.state {
            Ok(()) => "active".to_owned(),
            Err(reason) => format!("unavailable: {reason}"),
        };
        let _ = writeln!(text, "{:<36} {state}", hook.hook);
        let _ = writeln!(text, "{:<36} provides {}", "", hook.provides);
    }
    text
}

/// With the privileges to load programs, loads and attaches every hook the
/// way the collector does (and detaches them again): "active" then means
/// it worked. Without them, says what the kernel's files suggest.
pub fn probe_kernel(args: &RunArgs) -> Vec<HookStatus> {
    if loader::check_capabilities().is_err() {
        return KernelSupport::probe().hook_statuses();
    }
    let options = LoadOptions {
        // Only whether the hooks attach matters here; and what `probes`
        // attaches, it detaches again: nothing is pinned.
        kernel_log_level: 0,
        pin_dir: None,
        ..LoadOptions::from(args)
    };
    match loader::load(&options) {
        Ok(loaded) => loaded.hooks,
        Err(error) => {
            let mut hooks = KernelSupport::probe().hook_statuses();
            if let Some(first) = hooks.first_mut() {
                first.state = Err(loader::error_chain(&error));
            }
            hooks
        }
    }
}
