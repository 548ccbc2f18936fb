//! Compiles the kernel programs (`oom-ebpf`) for the BPF target so the
//! collector can embed them. Needs the nightly toolchain and `bpf-linker`;
//! `cargo xtask` installs both.

use aya_build::{Package, Toolchain};

fn main() -> aya_build::Result<()> {
    let ebpf = Package {
        name: "oom-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../oom-ebpf"),
        ..Default::default()
    };
    // aya-build forwards every line the eBPF build prints as a cargo
    // warning; quiet, that build prints only what went wrong.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf([ebpf], Toolchain::Nightly)?;
    // The shared record types are compiled into both sides.
    println!("cargo:rerun-if-changed=../oom-common/src");
    Ok(())
}
