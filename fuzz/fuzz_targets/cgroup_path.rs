//! Cgroup paths, as the kernel names a victim's cgroups, and
//! `/proc/self/mountinfo`, as the host's mounts describe them.
//!
//! Any process can name its cgroups and mount points, so both are the
//! host's users' words: what is read from them is either well formed or
//! left out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_collector::enrich::{
    cgroup::{CgroupMounts, CgroupVersion},
    container::parse_cgroup_path,
};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);

    let info = parse_cgroup_path(&text);
    if let Some(id) = &info.id {
        // Documents show the first 12 characters of an id.
        assert_eq!(id.len(), 64, "a container id is 64 hex digits: {id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    }
    assert!(
        info.runtime.is_none() || info.id.is_some(),
        "a runtime comes with the container it made"
    );
    if let Some(uid) = &info.pod_uid {
        let groups: Vec<usize> = uid.split('-').map(str::len).collect();
        assert_eq!(
            groups,
            [8, 4, 4, 4, 12],
            "a pod UID is a dashed UUID: {uid:?}"
        );
    }

    let mounts = CgroupMounts::from_mountinfo(&text);
    if let Some(memory) = &mounts.memory {
        if memory.version == CgroupVersion::V2 {
            assert_eq!(
                Some(&memory.root),
                mounts.unified.as_ref(),
                "on v2 the memory controller is in the unified hierarchy"
            );
        }
    }
});
