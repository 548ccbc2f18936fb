//! What the container runtimes and the kernel log say about a container and
//! an OOM: an OCI bundle's `config.json` (containerd, CRI-O), Docker's
//! `config.v2.json`, and `/dev/kmsg` records.
//!
//! A container's owner writes much of its runtime's metadata (names,
//! labels, annotations), and any process can write to the kernel log
//! through `/dev/kmsg`. One input is tried as both.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_collector::{
    enrich::runtime::{from_docker_config, from_oci_bundle},
    kmsg::{parse_line, parse_record, OomLine, OomLog},
};

fuzz_target!(|input: &[u8]| {
    // Metadata is copied as its owner wrote it: reading must only not
    // panic, whatever the JSON.
    if let Ok(config) = serde_json::from_slice::<serde_json::Value>(input) {
        let _ = from_oci_bundle(&config, "containerd");
        let _ = from_docker_config(&config);
    }

    let text = String::from_utf8_lossy(input);
    let _ = parse_line(&text);
    let _ = parse_record(&text);

    // As the collector reads the log: one record per line, each line that
    // speaks of an OOM fed into the incident it belongs to.
    let mut log = OomLog::default();
    for record in text.lines() {
        let Some((seq, message)) = parse_record(record) else {
            continue;
        };
        let Some(line) = parse_line(message) else {
            continue;
        };
        let killed = match line {
            OomLine::Killed { pid } => Some(pid),
            _ => None,
        };
        log.feed(seq, line);
        if let Some(pid) = killed {
            assert!(log.context_of(pid).is_some(), "a kill is remembered");
        }
    }
});
