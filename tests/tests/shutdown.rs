//! Stopping: a SIGTERM at any moment of the collector's start-up ends it
//! the way one while running does (it finishes starting, drains, exits 0),
//! never by the signal's default action. Root only; see the crate's doc.

use std::{
    os::unix::process::ExitStatusExt,
    thread,
    time::{Duration, Instant},
};

use oom_e2e::{poll_until, require_root, Ending};

#[test]
fn a_sigterm_during_start_up_ends_the_collector_cleanly() {
    if !require_root!() {
        return;
    }
    // Start-up (loading the programs, reading /proc) takes 150-400 ms
    // here; counted from the exec, these land in it and near its end.
    for delay_ms in [30, 60, 100, 140, 200] {
        let mut collector = Ending::start(&["--output", "/dev/null"]);
        let comm = format!("/proc/{}/comm", collector.child.id());
        poll_until(
            Duration::from_secs(5),
            || "the collector's exec".into(),
            || {
                std::fs::read_to_string(&comm)
                    .is_ok_and(|c| c.trim() == "oom-collector")
                    .then_some(())
            },
        );
        thread::sleep(Duration::from_millis(delay_ms));
        let running = collector.stderr().contains("collecting OOM events");
        let pid = rustix::process::Pid::from_raw(collector.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        let sent = Instant::now();
        let (status, log) = collector.wait(Duration::from_secs(15), "it should stop on SIGTERM");
        assert_eq!(
            status.signal(),
            None,
            "SIGTERM {delay_ms} ms after its exec (running: {running}) killed it \
             instead of stopping it:\n{log}"
        );
        assert!(
            status.success(),
            "SIGTERM {delay_ms} ms after its exec: {status}\n{log}"
        );
        eprintln!(
            "figures: SIGTERM {delay_ms} ms after its exec (running: {running}): exit 0 \
             {:?} later",
            sent.elapsed()
        );
    }
}
