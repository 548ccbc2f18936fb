//! `oom-collector probes`: which hooks this kernel supports, and why not.

use std::fmt::Write as _;

use crate::{
    error_chain,
    loader::{self, HookStatus, LoadOptions},
};

/// The report `probes` prints, one hook a line.
pub fn report(hooks: &[HookStatus]) -> String {
    let mut text = String::new();
    for hook in hooks {
        let state = match &hook.state {
            Ok(()) => "active".to_owned(),
            Err(reason) => format!("unavailable: {reason}"),
        };
        let _ = writeln!(text, "{:<36} {state}", hook.name);
        let _ = writeln!(text, "{:<36} provides {}", "", hook.hook.provides);
    }
    text
}

/// With the privileges to load programs, loads and attaches every hook the
/// way the collector does (and detaches them again): "active" then means
/// it worked. Without them, says what the kernel's files suggest.
pub fn probe_kernel(options: &LoadOptions) -> Vec<HookStatus> {
    if loader::check_capabilities().is_err() {
        return loader::statuses_without_loading(&loader::kernel_support(), options);
    }
    let options = LoadOptions {
        // Only whether the hooks attach matters here; and what `probes`
        // attaches, it detaches again: nothing is pinned.
        kernel_log_level: 0,
        pin_dir: None,
        ..options.clone()
    };
    match loader::load(&options) {
        Ok(loaded) => loaded.hooks,
        Err(error) => {
            // The load stops at a required hook: it carries the reason.
            let mut hooks = loader::statuses_without_loading(&loader::kernel_support(), &options);
            let reason = error_chain(&error);
            for hook in hooks.iter_mut().filter(|h| h.hook.required) {
                hook.state = Err(reason.clone());
            }
            hooks
        }
    }
}
